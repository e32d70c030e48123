"""The SIMD helper of the scatter and of the linear layer, and its plain-loop twin.

``accumulate(acc, ab, span, xs, offs, n, w, wb)`` adds ``n`` terms into ``span``
accumulators: ``acc[ab + i] += xs[j] * w[wb + offs[j] + i]``, term after term, so each
accumulator's float32 sum is the one a plain loop over ``j`` gives. :func:`accumulate_simd`
is written in LLVM IR (fast, no bounds checks); :func:`accumulate_loop` is that plain loop
(slow, checked when numba checks bounds). The kernels use the twin when
``SPIKESCALE_PLAIN_ACCUMULATE=1`` at import (see :mod:`.jit`): the tests run so once with
``NUMBA_BOUNDSCHECK=1``, and compare the two on every lane width.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from spikescale.simulate.event_driven.jit import PLAIN_ACCUMULATE, inline

_F32, _I32, _I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_F32, 8)


@intrinsic
def accumulate_simd(typingctx, acc, ab, span, xs, offs, n, w, wb):
    """``acc[ab + i] += xs[j] * w[wb + offs[j] + i]`` for ``i < span``, adding the terms
    ``j = 0 .. n-1`` in order: each accumulator's float32 sum is the one a loop over ``j``
    gives, but the accumulators stay in registers over all terms (8 lanes per register, up
    to four registers at once, single lanes for the rest). Written as LLVM IR because
    numba's loops reload and store the accumulators for every term (or every four, when
    unrolled by hand), and set up their aliasing checks at every pass; this spends one
    weight load per 8 multiply-adds. The arrays are assumed not to overlap."""
    f32, i64 = types.Array(types.float32, 1, "C"), types.Array(types.int64, 1, "C")
    if (acc, xs, offs, w) != (f32, f32, i64, f32) or not all(
        isinstance(a, types.Integer) for a in (ab, span, n, wb)
    ):
        return None

    def codegen(context, builder, sig, args):
        acc_p, xs_p, offs_p, w_p = (
            context.make_array(sig.args[k])(context, builder, args[k]).data for k in (0, 3, 4, 6)
        )
        ab_, span_, n_, wb_ = (
            context.cast(builder, args[k], sig.args[k], types.int64) for k in (1, 2, 5, 7)
        )
        const = lambda k: ir.Constant(_I64, k)  # noqa: E731

        undef, lane0 = ir.Constant(_V8, ir.Undefined), ir.Constant(_I32, 0)
        lanes0 = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)

        def vec(base, off):
            return builder.bitcast(builder.gep(base, [off]), _V8.as_pointer())

        def lanes(first, regs):  # accumulators first .. first + 8 * regs - 1
            a0 = builder.add(ab_, first)
            sums = [cgutils.alloca_once(builder, _V8) for _ in range(regs)]
            for m, slot in enumerate(sums):
                builder.store(
                    builder.load(vec(acc_p, builder.add(a0, const(8 * m))), align=4),
                    slot,
                )
            with cgutils.for_range(builder, n_) as loop:
                j = loop.index
                x = builder.insert_element(undef, builder.load(builder.gep(xs_p, [j])), lane0)
                x = builder.shuffle_vector(x, undef, lanes0)  # in all 8 lanes
                wj = builder.add(builder.add(wb_, builder.load(builder.gep(offs_p, [j]))), first)
                for m, slot in enumerate(sums):
                    wv = builder.load(vec(w_p, builder.add(wj, const(8 * m))), align=4)
                    builder.store(builder.fadd(builder.load(slot), builder.fmul(x, wv)), slot)
            for m, slot in enumerate(sums):
                builder.store(
                    builder.load(slot),
                    vec(acc_p, builder.add(a0, const(8 * m))),
                    align=4,
                )

        blocks = builder.udiv(span_, const(32))
        with cgutils.for_range(builder, blocks) as loop:
            lanes(builder.mul(loop.index, const(32)), 4)
        first = builder.mul(blocks, const(32))
        for regs in (2, 1):  # what is left: 16, then 8 lanes
            left = builder.sub(span_, first)
            with builder.if_then(builder.icmp_unsigned(">=", left, const(8 * regs))):
                lanes(first, regs)
            first = builder.add(first, builder.and_(left, const(8 * regs)))
        with cgutils.for_range_slice(builder, first, span_, const(1), inc=True) as (
            i,
            _,
        ):
            pa = builder.gep(acc_p, [builder.add(ab_, i)])
            total = cgutils.alloca_once(builder, _F32)
            builder.store(builder.load(pa), total)
            with cgutils.for_range(builder, n_) as loop:
                j = loop.index
                x = builder.load(builder.gep(xs_p, [j]))
                wj = builder.add(builder.add(wb_, builder.load(builder.gep(offs_p, [j]))), i)
                wx = builder.fmul(x, builder.load(builder.gep(w_p, [wj])))
                builder.store(builder.fadd(builder.load(total), wx), total)
            builder.store(builder.load(total), pa)
        return context.get_dummy_value()

    return types.void(acc, ab, span, xs, offs, n, w, wb), codegen


@inline
def accumulate_loop(acc, ab, span, xs, offs, n, w, wb):
    """:func:`accumulate_simd` as a plain loop: the same sums, in the same order."""
    for i in range(span):
        total = acc[ab + i]
        for j in range(n):
            total += xs[j] * w[wb + offs[j] + i]
        acc[ab + i] = total


accumulate = accumulate_loop if PLAIN_ACCUMULATE else accumulate_simd
