"""Which code a result came from: package versions, a content hash of the package source and
the git commit it was checked out from.

``code_hash`` hashes every ``*.py`` file of the installed ``spikescale`` package (relative
path and bytes, sorted by path), so equal code gives the same hash wherever it lies.
``git_commit`` looks at the repository that holds the package source (derived from the
package's location, not the working directory: the pipeline may run in another folder):
the commit when the package source is unchanged against it, the commit with ``-dirty``
appended when a package file is modified or untracked, and ``None`` when the package is
not a git checkout (an installed wheel, no git).
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import spikescale

PACKAGES = ("spikescale", "torch", "sinabs", "tonic", "numpy", "pyarrow")
PACKAGE_DIR = Path(spikescale.__file__).resolve().parent


def package_versions() -> dict[str, str]:
    """Python's and the main packages' versions, by name."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        out[name] = version(name)
    return out


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package's Python source files, sorted by their path inside the package."""
    return sorted(package_dir.rglob("*.py"), key=lambda f: f.relative_to(package_dir).as_posix())


@functools.cache
def code_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits of SHA-256 over every source file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in source_files(package_dir):
        rel = path.relative_to(package_dir).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
        digest.update(data)
    return digest.hexdigest()[:16]


def _git(package_dir: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(package_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.cache
def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """The commit the package source was checked out from; ``<commit>-dirty`` if a package
    file differs from it; ``None`` if the package files are not tracked by git."""
    # the package must itself be tracked: a wheel inside a project's ignored .venv is not
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    commit = _git(package_dir, "rev-parse", "--verify", "HEAD")
    if not commit:
        return None
    changes = _git(package_dir, "status", "--porcelain", "--untracked-files=all", "--", ".")
    if changes is None:
        return None
    return f"{commit}-dirty" if changes else commit


def code_provenance() -> dict[str, str | None]:
    """The columns every result row carries about the code: content hash and git commit."""
    return {"code_hash": code_hash(), "git_commit": git_commit()}


def version_line() -> str:
    """What ``spikescale --version`` prints."""
    commit = git_commit() or "none (not a git checkout)"
    return (
        f"spikescale {spikescale.__version__} (code hash {code_hash()}, git commit {commit}, "
        f"source {PACKAGE_DIR})"
    )
