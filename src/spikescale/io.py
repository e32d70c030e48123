"""Small I/O helpers shared by the stages: atomic writes and stable JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` only on :meth:`commit`.

    For writers whose life is not one ``with`` block (a file written batch by batch, or
    several files committed together once all are complete); :func:`atomic_path` is the
    ``with`` form. A process killed while writing (SIGKILL runs no cleanup) leaves its
    temporary file; every output has one writer, so earlier leftovers for this path are
    removed on creation. The committed file gets the permissions an ordinary
    ``open(path, "w")`` would (0644 under umask 022), not the temporary file's 0600, so that
    others on a shared project folder can read it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        """Move the temporary file into place, with the umask's permissions."""
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Drop the temporary file (nothing to do once committed)."""
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    A crash or an exception leaves no half-written file at ``path`` (see :class:`AtomicFile`).
    """
    file = AtomicFile(path)
    try:
        yield file.tmp
        file.commit()
    finally:
        file.discard()


def write_json(obj, path: str | Path) -> None:
    """Write JSON atomically with sorted keys, so equal content gives equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
