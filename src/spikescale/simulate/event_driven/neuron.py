"""The integrate-and-fire update of the event-driven kernels: sinabs's float32 operations
in sinabs's order, for one neuron and for the channels of one position."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikescale.simulate.event_driven.jit import inline


class Neuron(NamedTuple):
    """The parameters of a layer's neurons (see :data:`~.program.OP`). ``multi`` and
    ``to_value`` may be compile-time constants: a kernel specialised on them builds this
    with literals."""

    threshold: np.float32
    first_spiking_v: np.float32  # the smallest membrane that spikes
    multi: bool  # MultiSpike, else SingleSpike
    to_value: bool  # MembraneReset, else MembraneSubtract
    subtract: np.float32
    reset_value: np.float32
    has_min: bool
    min_v_mem: np.float32


@inline
def neuron_of(op, multi, to_value):
    """The :class:`Neuron` of operation ``op`` with the given spike and reset choice."""
    return Neuron(
        op.threshold,
        op.first_spiking_v,
        multi,
        to_value,
        op.subtract,
        op.reset_value,
        op.has_min,
        op.min_v_mem,
    )


@inline
def clip(v, nrn):
    """relu(v - min_v_mem) + min_v_mem, as sinabs writes it (not max(v, min))."""
    d = v - nrn.min_v_mem
    return ((np.float32(0.0) if d < 0 else d) + nrn.min_v_mem) if nrn.has_min else v


@inline
def iaf_update(v, x, nrn):
    """One sinabs IAF step of one neuron: the same float32 operations in the same order.

    For a neuron that does not spike the spike count is (+-)0, so ``v - s * sub`` is
    ``v`` and ``v * (s == 0)`` is ``v``: sinabs's arithmetic, written without branches.
    """
    zero, one = np.float32(0.0), np.float32(1.0)
    v = v + x
    spikes = v >= nrn.first_spiking_v
    # MultiSpike: (v > 0) * trunc(v / thr); SingleSpike: (v - thr >= 0)
    s = (np.float32(np.floor(v / nrn.threshold)) if nrn.multi else one) if spikes else zero
    # MembraneReset: v * (spikes == 0) + reset_value; MembraneSubtract: v - spikes * sub
    if nrn.to_value:
        v = v * (zero if spikes else one) + nrn.reset_value
    else:
        v = v - s * nrn.subtract
    return clip(v, nrn), s


@inline
def moves_at_rest(v, nrn):
    """Would a step without input change this neuron (spike, reset value, clip)?"""
    w = (v + nrn.reset_value) if nrn.to_value else v
    return (v >= nrn.first_spiking_v) | (clip(w, nrn) != v)


@inline
def iaf_position(nrn, v, counts, x, clear, out, add):
    """Update the membranes ``v`` of one position's channels with the float32 input ``x``
    (set back to zero if ``clear``); write the spikes to ``out`` (or, if ``add``, add them
    to what is there) and add them to the sample's ``counts``: views of one position's
    channel vector each. Returns whether any channel spiked and whether the position must
    be updated at the next step even without input. The loop has no branches and only
    float32 data, so it runs in 8 SIMD lanes."""
    spiked = False
    moving = False
    for o in range(v.shape[0]):
        v1, s = iaf_update(v[o], x[o], nrn)
        if clear:
            x[o] = 0.0
        v[o] = v1
        out[o] = (out[o] + s) if add else s
        counts[o] += np.int32(s)
        spiked |= s != 0
        moving |= moves_at_rest(v1, nrn)
    return spiked, moving
