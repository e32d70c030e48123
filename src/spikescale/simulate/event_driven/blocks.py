"""Blocks of the work arrays: one operation's list, stamps or table, one position's channels.

``block(a, start, n)`` is the view ``a[start:start + n]`` of a one-dimensional contiguous
array. The kernels take such views and index them from zero, so their loop counters are
indices that LLVM knows to be non-negative: numba's wraparound test on signed indices
(Python's ``a[-1]``) then drops out and the channel loops run in SIMD lanes.

A numba slice computes its bounds with Python's rules (negative starts, clipping to the
array); taken per position, plain slices made the simulation 9-12 % slower at scale
factors 1-64 (measured). :func:`block_unchecked` builds the view from the pointer and the
length alone. With ``NUMBA_BOUNDSCHECK=1`` the kernels take the plain slice instead
(:func:`block_checked`), whose indexing numba then checks: a block past the end of its
array is shorter than asked for, and the first index past it raises an IndexError.
"""

from __future__ import annotations

import numba
from numba.core import types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from spikescale.simulate.event_driven.jit import inline


@intrinsic
def block_unchecked(typingctx, a, start, n):
    """``a[start:start + n]`` of a 1-d C-contiguous array, trusting ``0 <= start`` and
    ``start + n <= len(a)``."""
    if not (
        isinstance(a, types.Array)
        and a.ndim == 1
        and a.layout == "C"
        and isinstance(start, types.Integer)
        and isinstance(n, types.Integer)
    ):
        return None

    def codegen(context, builder, sig, args):
        arr = make_array(sig.args[0])(context, builder, args[0])
        first = context.cast(builder, args[1], sig.args[1], types.intp)
        length = context.cast(builder, args[2], sig.args[2], types.intp)
        out = make_array(sig.return_type)(context, builder)
        itemsize = context.get_constant(
            types.intp, context.get_abi_sizeof(context.get_data_type(a.dtype))
        )
        populate_array(
            out,
            data=builder.gep(arr.data, [first]),
            shape=[length],
            strides=[itemsize],
            itemsize=itemsize,
            meminfo=arr.meminfo,
            parent=arr.parent,
        )
        # a view of a: one more reference to a's memory (where numba counts them)
        return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())

    return a(a, start, n), codegen


@inline
def block_checked(a, start, n):
    """``a[start:start + n]``, a plain slice (see the module docstring)."""
    return a[start : start + n]


block = block_checked if numba.config.BOUNDSCHECK else block_unchecked
