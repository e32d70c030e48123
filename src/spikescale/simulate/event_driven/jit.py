"""The numba flavours of the event-driven kernels.

Compiled code is cached on disk, except when the kernels are built for checking: with
bounds checks (``NUMBA_BOUNDSCHECK=1``) or with the plain-loop twin of the SIMD helper
(``SPIKESCALE_PLAIN_ACCUMULATE=1``, see :mod:`.simd`). numba's cache does not key on
either, so a checked build would otherwise load, or leave behind, the other build's code.

numba keys a cached function on its own source file only, but the sample loop inlines the
kernels of the other modules: an edit to ``kernels.py`` alone would leave the loop's cached
code in use, unchanged (seen: a kernel edited so that no neuron could spike still gave the
old spikes). So every cached function here is also keyed on a hash of all this package's
sources (:data:`SOURCES`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

#: use the plain-loop twin of the SIMD helper (read once, at import)
PLAIN_ACCUMULATE = os.environ.get("SPIKESCALE_PLAIN_ACCUMULATE", "") not in ("", "0")
CACHE = not (PLAIN_ACCUMULATE or numba.config.BOUNDSCHECK)

#: sha256 of this package's sources, part of every cached function's key
SOURCES = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))
).hexdigest()


def _flavour(**options):
    """``numba.njit(**options)``, its cache (if any) keyed on :data:`SOURCES` too."""
    njit = numba.njit(cache=CACHE, nogil=True, error_model="numpy", **options)

    def decorate(function):
        dispatcher = njit(function)
        if CACHE:  # numba's index of the cached overloads keeps its file's stamp here
            index = dispatcher._cache._cache_file
            index._source_stamp = (index._source_stamp, SOURCES)
        return dispatcher

    return decorate


#: the entry point called from Python: allocates a thread's work arrays. Releases the GIL;
#: float errors give inf / nan as in numpy, no exceptions
entry = _flavour()
#: the sample loop, with every kernel inlined into it. It allocates nothing and keeps no
#: array beyond the call (the entry point owns them all), so it is compiled without numba's
#: reference counting (``_nrt=False``, a numba option named as private): with it, taking an
#: array out of a NamedTuple costs an atomic increment and decrement. Measured against the
#: flat-argument kernels of 723e33d: kernels as separate functions taking the NamedTuples
#: were 20-35 % slower with reference counting and 5-10 % without (each call copies the
#: tuples' 18 array structs); inlined, they are as fast, and the cold compile is no longer.
#: The exception is the convolution scatter (see :func:`.kernels.scatter_conv`), whose work
#: per call is large: it is a function of this flavour, called from the sample loop.
loop = _flavour(_nrt=False)
#: a kernel or a helper of the hot loops: inlined into the sample loop
inline = _flavour(inline="always")
