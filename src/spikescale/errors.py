"""The one exception type for bad input, so the command line can tell it from a bug, and
the checks of inputs that every command shares.

An :class:`InputError` is something the user can fix: a parameter out of range, a missing
or unreadable input file, a dataset that is not where it was looked for. ``spikescale``
prints its message as one line and exits with status 2. Every other exception is a bug
(ours or a library's) and keeps its traceback. It subclasses ``ValueError`` so that code
and tests that expect a ``ValueError`` for bad values keep working.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: a parameter, a file or a dataset; the message names it and what was expected."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist; the message says which stage writes it."""


def require(*paths: str | Path) -> None:
    """Fail with one clear line if an input file is missing (before any long work)."""
    for path in paths:
        if not Path(path).exists():
            raise MissingInputError(
                f"input {path} does not exist (run the stage that writes it first)"
            )


def check_device(device: str) -> None:
    """``device: cuda`` on a machine where torch sees no GPU is a parameter error."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError(
                "device: cuda was asked for, but torch sees no CUDA GPU here; set device: cpu"
            )
