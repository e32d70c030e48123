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

#: the driver: releases the GIL; float errors give inf / nan as in numpy, no exceptions
driver = numba.njit(cache=CACHE, nogil=True, error_model="numpy")
#: a kernel, called by the driver for each operation and step. Kernels allocate nothing and
#: keep no array beyond the call (the driver owns them all), so they are compiled without
#: numba's reference counting (``_nrt=False``, a numba option named as private): with it,
#: taking an array out of a NamedTuple costs an atomic increment and decrement per array
#: and call, which made the simulation 20-35 % slower.
jit = numba.njit(cache=CACHE, nogil=True, error_model="numpy", _nrt=False)
#: a small helper of the hot loops: inlined, so that no call or array bookkeeping remains
inline = numba.njit(cache=CACHE, nogil=True, error_model="numpy", inline="always")
