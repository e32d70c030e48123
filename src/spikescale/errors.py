"""The one exception type for bad input, so the command line can tell it from a bug.

An :class:`InputError` is something the user can fix: a parameter out of range, a missing
or unreadable input file, a dataset that is not where it was looked for. ``spikescale``
prints its message as one line and exits with status 2. Every other exception is a bug
(ours or a library's) and keeps its traceback. It subclasses ``ValueError`` so that code
and tests that expect a ``ValueError`` for bad values keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a parameter, a file or a dataset; the message names it and what was expected."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist; the message says which stage writes it."""
