"""The numba flavours of the event-driven kernels.

Compiled code is cached on disk, except when the kernels are built for checking: with
bounds checks (``NUMBA_BOUNDSCHECK=1``) or with the plain-loop twin of the SIMD helper
(``SPIKESCALE_PLAIN_ACCUMULATE=1``, see :mod:`.simd`). numba's cache does not key on
either, so a checked build would otherwise load, or leave behind, the other build's code.
"""

from __future__ import annotations

import os

import numba

#: use the plain-loop twin of the SIMD helper (read once, at import)
PLAIN_ACCUMULATE = os.environ.get("SPIKESCALE_PLAIN_ACCUMULATE", "") not in ("", "0")
CACHE = not (PLAIN_ACCUMULATE or numba.config.BOUNDSCHECK)

#: the entry point called from Python: allocates a thread's work arrays. Releases the GIL;
#: float errors give inf / nan as in numpy, no exceptions
entry = numba.njit(cache=CACHE, nogil=True, error_model="numpy")
#: the sample loop, with every kernel inlined into it. It allocates nothing and keeps no
#: array beyond the call (the entry point owns them all), so it is compiled without numba's
#: reference counting (``_nrt=False``, a numba option named as private): with it, taking an
#: array out of a NamedTuple costs an atomic increment and decrement. Measured against the
#: flat-argument kernels of 723e33d: kernels as separate functions taking the NamedTuples
#: were 20-35 % slower with reference counting and 5-10 % without (each call copies the
#: tuples' 18 array structs); inlined, they are as fast, and the cold compile is no longer.
#: The exception is the convolution scatter (see :func:`.kernels.scatter_conv`), whose work
#: per call is large: it is a function of this flavour, called from the sample loop.
loop = numba.njit(cache=CACHE, nogil=True, error_model="numpy", _nrt=False)
#: a kernel or a helper of the hot loops: inlined into the sample loop
inline = numba.njit(cache=CACHE, nogil=True, error_model="numpy", inline="always")
