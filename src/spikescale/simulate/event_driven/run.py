"""The driver of the event-driven path: samples, steps, and the operations in order."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikescale.simulate.event_driven.jit import entry, inline, loop
from spikescale.simulate.event_driven.kernels import (
    conv_iaf,
    emit_conv,
    iaf,
    linear,
    pool_emit,
    pool_sums,
    scan,
    scatter_conv,
)
from spikescale.simulate.event_driven.neuron import moves_at_rest, neuron_of
from spikescale.simulate.event_driven.program import (
    OP_CONV,
    OP_CONV_IAF,
    OP_IAF,
    OP_LINEAR,
    OP_POOL,
    POSITION,
)


class Work(NamedTuple):
    """One thread's working arrays; each operation's blocks lie at the offsets its record
    names (see :data:`~.program.OP`)."""

    values: np.ndarray  # float32: channel vectors of each operation's output
    active: np.ndarray  # POSITION: each operation's list of active output positions
    acc: np.ndarray  # float32: sums (conv, linear, pool)
    stamps: np.ndarray  # int64: per output position, the step that last touched it
    touched: np.ndarray  # POSITION: the positions touched in this step
    v: np.ndarray  # float32: membranes
    counts: np.ndarray  # int32: the sample's spike counts, per neuron (as v)
    pending: np.ndarray  # POSITION: positions to update at the next step without input
    pending_n: np.ndarray  # int64, per operation: entries of its pending list
    pending_sel: np.ndarray  # int64, per operation: which of its two lists is read
    channels: np.ndarray  # int64: the non-zero channels of one position
    term_x: np.ndarray  # float32: the values of the terms of one sum (simd.accumulate)
    term_w: np.ndarray  # int64: and their weight offsets
    zeros: np.ndarray  # float32: the input of a position that got none


@inline
def new_work(sizes, n_ops):
    return Work(
        np.zeros(sizes.values, np.float32),
        np.zeros(sizes.active, POSITION),
        np.zeros(sizes.acc, np.float32),
        np.zeros(sizes.touched, np.int64),
        np.zeros(sizes.touched, POSITION),
        np.zeros(sizes.v, np.float32),
        np.zeros(sizes.v, np.int32),
        np.zeros(sizes.pending, POSITION),
        np.zeros(n_ops, np.int64),
        np.zeros(n_ops, np.int64),
        np.zeros(sizes.terms, np.int64),
        np.zeros(sizes.terms, np.float32),
        np.zeros(sizes.terms, np.int64),
        np.zeros(sizes.widest, np.float32),
    )


@inline
def start_sample(ops, work):
    """Membranes and counts at zero, pending lists empty, unless the neurons' initial
    state is not at rest: then every position is updated at the first step."""
    for j in range(work.counts.shape[0]):
        work.counts[j] = 0
    for k in range(ops.shape[0]):
        op = ops[k]
        if op.kind == OP_IAF or op.kind == OP_CONV_IAF:
            for j in range(op.v, op.v + op.positions * op.channels):
                work.v[j] = 0
            work.pending_sel[k] = 0
            work.pending_n[k] = 0
            if moves_at_rest(np.float32(0.0), neuron_of(op, op.multi, op.to_value)):
                for i in range(op.positions):
                    work.pending[op.pending + i] = i
                work.pending_n[k] = op.positions


@entry
def run_samples(frames, net, sizes, checkpoints, counts, snaps, b0, b1):
    """Simulate samples ``b0 .. b1-1`` of ``frames`` (batch, steps, input values), writing
    their rows of ``counts`` (spikes per neuron) and ``snaps`` (the output layer's
    cumulative counts at each of the sorted ``checkpoints``). Releases the GIL: threads
    run disjoint ranges of samples."""
    work = new_work(sizes, net.ops.shape[0])
    simulate_samples(frames, net, work, checkpoints, counts, snaps, b0, b1)


@loop
def simulate_samples(frames, net, work, checkpoints, counts, snaps, b0, b1):
    """:func:`run_samples` with the thread's ``work`` arrays. Each operation of the
    program, in order, gets the active positions of the one before."""
    ops = net.ops
    n_ops = ops.shape[0]
    steps = frames.shape[1]
    last = ops[n_ops - 1]  # the output layer (a program ends with neurons)
    cur = 0
    for b in range(b0, b1):
        start_sample(ops, work)
        ck = 0
        for t in range(steps):
            cur += 1
            n = scan(frames[b, t], ops[0], work, cur)
            for k in range(1, n_ops):
                op = ops[k]
                if op.kind == OP_CONV_IAF or op.kind == OP_CONV:
                    npos = scatter_conv(op, net, work, np.int64(n), cur)
                    if op.kind == OP_CONV:
                        n = emit_conv(op, net, work, npos)
                    else:
                        pooling = ops[k + 1] if op.pooled else op
                        n = conv_iaf(op, pooling, net, work, npos, cur)
                elif op.kind == OP_POOL:
                    # fed: n is the number of windows conv_iaf touched and summed
                    npos = n if op.fed else pool_sums(op, net, work, n, cur)
                    n = pool_emit(op, work, npos)
                elif op.kind == OP_LINEAR:
                    n = linear(op, net, work, n)
                else:
                    n = iaf(op, work, n, cur)
            while ck < checkpoints.shape[0] and checkpoints[ck] == t:
                for j in range(snaps.shape[2]):
                    snaps[b, ck, j] = work.counts[last.v + j]
                ck += 1
        for j in range(counts.shape[1]):
            counts[b, j] = work.counts[j]
