"""The kernels of the event-driven path, one per kind of operation.

Each takes its operation's record ``op`` (:data:`~.program.OP`), the shared program
``net`` (:class:`~.program.Net`), the thread's work arrays ``work``
(:class:`~.run.Work`), the number of active input positions and the step's stamp ``cur``,
and returns the number of active output positions it listed. Activity between operations,
per sample and step, is a list of the active positions (those with a non-zero value) and
the channel vectors of those positions (channel-last; entries of positions not listed are
stale). Each operation reads its input positions and writes its output positions, a
position's channels at once, so the bookkeeping (stamps, lists, bounds) is paid per
position and the arithmetic runs over contiguous channels, in float32 throughout. All are
inlined into the sample loop (:func:`~.run.simulate_samples`), see :mod:`.jit` for why,
except :func:`scatter_conv`, a function of its own (see there).

Indices: a kernel first takes views of its operation's blocks (:func:`~.blocks.block`:
its lists, stamps, tables) and of each position's channel vector, and indexes those from
zero; no index is cast. The index types are those :mod:`.program` declares. numba tests a
signed index for negative values (Python's wraparound), and LLVM drops that test where it
can see the index is a loop counter from zero, which it is in every channel loop and in
the scan's pixel loops: those run in SIMD lanes (with the test on an offset computed in
the loop they ran in single lanes, 2x slower, and the scan made the simulation 40 %
slower at scale factor 1).
"""

from __future__ import annotations

import numpy as np

from spikescale.simulate.event_driven.blocks import block
from spikescale.simulate.event_driven.jit import inline, loop
from spikescale.simulate.event_driven.neuron import iaf_position, neuron_of
from spikescale.simulate.event_driven.simd import accumulate

# ---------------------------------------------------------------------------------------
# bookkeeping


@inline
def clear(vec):
    for j in range(vec.shape[0]):
        vec[j] = 0.0


@inline
def append(lst, n, q, flag):
    """Append ``q`` to the list ``lst`` of ``n`` entries if ``flag``: written always,
    counted only if ``flag``, so no branch to mispredict. Returns the new length."""
    lst[n] = q
    return n + flag


@inline
def touch(stamps, touched, q, cur, n):
    """Mark position ``q`` touched in step ``cur`` (``stamps``), listing it in ``touched``
    (of ``n`` positions so far) if this is its first touch. Returns the new length of the
    list."""
    if stamps[q] != cur:
        stamps[q] = cur
        touched[n] = q
        n += 1
    return n


@inline
def pending_lists(op, work):
    """The pending list read this step and the one written for the next."""
    sel = work.pending_sel[op.index]
    old = block(work.pending, op.pending + sel * op.positions, op.positions)
    new = block(work.pending, op.pending + (1 - sel) * op.positions, op.positions)
    return old, new


@inline
def swap_pending(op, work, n_new):
    """The list written this step is the one read at the next."""
    work.pending_n[op.index] = n_new
    work.pending_sel[op.index] = 1 - work.pending_sel[op.index]


@inline
def nonzero_channels(vec, channels):
    """List the non-zero channels of the vector ``vec`` in ``channels`` (without
    branches); return how many there are."""
    nnz = 0
    for c in range(vec.shape[0]):
        channels[nnz] = c
        nnz += vec[c] != 0
    return nnz


@inline
def nonzero_terms(vec, base, stride, term_x, term_w, n):
    """Append the non-zero entries of ``vec`` to the ``n`` terms of
    :func:`~.simd.accumulate` listed so far: the values to ``term_x``, channel ``c``'s
    weight offset ``base + c * stride`` to ``term_w`` (without branches). Returns the new
    number of terms."""
    for c in range(vec.shape[0]):
        x = vec[c]
        term_x[n] = x
        term_w[n] = base + c * stride
        n += x != 0
    return n


# ---------------------------------------------------------------------------------------
# the input


@inline
def scan(frame, op, work, cur):
    """The active positions of one input frame (row 0 of the program) and their channel
    vectors. A spatial frame (``op.channels`` planes of ``op.positions`` pixels) is read
    plane by plane, blocks of 16 pixels skipped with one test on their bits (a vectorised
    OR); a frame of one position is copied whole."""
    chans, positions = op.channels, op.positions
    values = block(work.values, op.values, positions * chans)
    active = block(work.active, op.active, positions)
    if positions == 1:
        nz = 0
        for i in range(chans):
            x = frame[i]
            values[i] = x
            nz += x != 0
        if nz == 0:
            return 0
        active[0] = 0
        return 1
    stamps = block(work.stamps, op.touched, positions)
    frame_bits = frame.view(np.uint32)
    n = 0
    for c in range(chans):
        for start in range(c * positions, (c + 1) * positions, 16):
            # a run of up to 16 pixels, skipped if all are zero
            run = min(16, (c + 1) * positions - start)
            pixels, bits = block(frame, start, run), block(frame_bits, start, run)
            any_bits = np.uint32(0)
            for i in range(run):
                any_bits |= bits[i]
            if any_bits:
                for i in range(run):
                    x = pixels[i]
                    if x != 0:
                        r = start - c * positions + i
                        vec = block(values, r * chans, chans)
                        if stamps[r] != cur:
                            stamps[r] = cur
                            active[n] = r
                            n += 1
                            clear(vec)
                        vec[c] = x
    return n


# ---------------------------------------------------------------------------------------
# convolution


@loop
def scatter_conv(op, net, work, n_in, cur):
    """Add each active input position's channels to the accumulators of the output
    positions it reaches; return the number of output positions touched (listed in
    ``work.touched[op.touched:]``). The accumulators are zero at the start of a step:
    whatever reads them (:func:`conv_iaf`, :func:`emit_conv`) sets them back to zero.

    Compiled as a function of its own (:data:`~.jit.loop`), not inlined: inlined, the
    sample loop grew too large for LLVM to keep the scatter's and the IAF update's loops
    as tight, and the simulation was 3 % slower at scale factor 64 (where these two
    loops are most of the time), with no gain at factors 1 and 4. The call copies the
    record and the tuples once per convolution and step, which does not show. The caller
    passes ``n_in`` as int64, so that one signature is compiled."""
    wo, kh, kw = op.wo, op.kh, op.kw
    ci, co, cig, cog = op.in_channels, op.channels, op.group_in, op.group_out
    in_positions = op.hi * op.wi
    inputs = block(work.active, op.in_active, n_in)
    in_values = block(work.values, op.in_values, in_positions * ci)
    stamps = block(work.stamps, op.touched, op.positions)
    touched = block(work.touched, op.touched, op.positions)
    acc, acc0 = work.acc, op.acc
    tab = net.tables
    tab_y, tab_x = block(tab, op.tab_y, in_positions), block(tab, op.tab_x, in_positions)
    tab_rows, tab_cols = block(tab, op.tab_rows, op.hi * kh), block(tab, op.tab_cols, op.wi * kw)
    w, w0 = net.weights, op.weights
    rows, pad = op.row_scatter, op.pad_left
    channels, term_x, term_w = work.channels, work.term_x, work.term_w
    w_chan = kh * kw * cog  # weights per input channel
    npos = 0
    for e in range(n_in):
        r = inputs[e]
        vec = block(in_values, r * ci, ci)
        y, x = tab_y[r], tab_x[r]
        if rows:
            # In one kernel row the input reaches the neighbouring output columns lo..hi,
            # whose accumulators are contiguous, as are their weights (kernel columns
            # reversed: output column x + pad - kx uses reversed column kw - 1 - kx).
            first = x + pad - (kw - 1)
            lo = max(first, 0)
            hi = min(x + pad, wo - 1)
            if lo > hi:
                continue
            span = (hi - lo + 1) * co
            nnz = nonzero_terms(vec, 0, w_chan, term_x, term_w, 0)
            for ky in range(kh):
                oy = tab_rows[y * kh + ky]
                if oy < 0:
                    continue
                q0 = oy * wo
                for ox in range(lo, hi + 1):
                    npos = touch(stamps, touched, q0 + ox, cur, npos)
                ab = acc0 + (q0 + lo) * co
                wb = w0 + (ky * kw + lo - first) * co
                accumulate(acc, ab, span, term_x, term_w, nnz, w, wb)
        else:
            nnz = nonzero_channels(vec, channels)
            for ky in range(kh):
                oy = tab_rows[y * kh + ky]
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tab_cols[x * kw + kx]
                    if ox < 0:
                        continue
                    q = oy * wo + ox
                    npos = touch(stamps, touched, q, cur, npos)
                    for j in range(nnz):
                        c = channels[j]
                        p = vec[c]
                        sums = block(acc, acc0 + q * co + (c // cig) * cog, cog)
                        weights = block(w, w0 + c * w_chan + (ky * kw + kx) * cog, cog)
                        for i in range(cog):
                            sums[i] += p * weights[i]
    return npos


@inline
def emit_conv(op, net, work, npos):
    """A convolution's output (not followed by IAF): the touched positions, every position
    when there is a bias."""
    co, positions, has_bias = op.channels, op.positions, op.has_bias
    touched = block(work.touched, op.touched, positions)
    acc = block(work.acc, op.acc, positions * co)
    values = block(work.values, op.values, positions * co)
    active = block(work.active, op.active, positions)
    bias = block(net.biases, op.bias, co)
    n = 0
    for e in range(positions if has_bias else npos):
        q = e if has_bias else touched[e]
        sums, out = block(acc, q * co, co), block(values, q * co, co)
        nz = 0
        for o in range(co):
            x = sums[o] + bias[o]
            sums[o] = 0.0
            out[o] = x
            nz += x != 0
        n = append(active, n, q, nz != 0)
    return n


@inline
def conv_iaf(op, pool, net, work, npos, cur):
    """IAF layer fed by a convolution: update the touched and the pending positions (all
    positions when the convolution has a bias); list those that spiked. Pooled
    (``op.pooled``): add the spikes into the window sums of ``pool``, the tiling pooling
    that follows, instead, and list the windows that got spikes in its touched list;
    return their number (``pool`` is ``op`` itself when not pooled).

    The pipeline's neurons (MultiSpike, reset by subtraction) get a copy of the loop with
    both fixed at compile time. As run-time flags in the loop over channels, LLVM merges
    them into the lanes' spike masks and spends more instructions packing masks than
    updating membranes: the copy is 6-14 % faster at factors 1-64. The other choices share
    one copy (a copy each made the cold compile 50 % longer)."""
    if op.multi and not op.to_value:
        return conv_iaf_loop(op, pool, net, work, npos, cur, True, False)
    return conv_iaf_loop(op, pool, net, work, npos, cur, op.multi, op.to_value)


@inline
def conv_iaf_loop(op, pool, net, work, npos, cur, multi, to_value):
    nrn = neuron_of(op, multi, to_value)
    co, positions, has_bias, pooled = op.channels, op.positions, op.has_bias, op.pooled
    stamps = block(work.stamps, op.touched, positions)
    touched = block(work.touched, op.touched, positions)
    acc = block(work.acc, op.acc, positions * co)
    v = block(work.v, op.v, positions * co)
    counts = block(work.counts, op.v, positions * co)
    bias = block(net.biases, op.bias, co)
    # the output: spikes listed here, or added into the window sums of the pooling
    values = block(work.values, op.values, positions * co)
    active = block(work.active, op.active, positions)
    windows = block(net.tables, op.tab_window, positions)  # read only if pooled
    pool_stamps = block(work.stamps, pool.touched, pool.positions)
    pool_touched = block(work.touched, pool.touched, pool.positions)
    old, new = pending_lists(op, work)
    n_old = 0 if has_bias else work.pending_n[op.index]
    n_in = positions if has_bias else npos
    n = 0
    n_new = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = e if has_bias else touched[e]
        else:  # pending: updated once, unless it got input (then it was updated above)
            q = old[e - n_in]
            if stamps[q] == cur:
                continue
            stamps[q] = cur
        sums = block(acc, q * co, co)
        if has_bias:
            for o in range(co):
                sums[o] += bias[o]
        membranes, spikes = block(v, q * co, co), block(counts, q * co, co)
        if pooled:  # (two calls, so that each inlined update knows whether it adds)
            win = windows[q]
            slot = win if win >= 0 else pool.spill
            out = block(work.acc, pool.acc + slot * co, co)
            spiked, moves = iaf_position(nrn, membranes, spikes, sums, True, out, True)
            if spiked and win >= 0:
                n = touch(pool_stamps, pool_touched, win, cur, n)
        else:
            out = block(values, q * co, co)
            spiked, moves = iaf_position(nrn, membranes, spikes, sums, True, out, False)
            n = append(active, n, q, spiked)
        n_new = append(new, n_new, q, moves and not has_bias)
    swap_pending(op, work, n_new)
    return n


# ---------------------------------------------------------------------------------------
# neurons fed by another operation, pooling, linear


@inline
def iaf(op, work, n_in, cur):
    """IAF layer fed by another operation: update the positions that got input or were
    pending; list those that spiked."""
    nrn = neuron_of(op, op.multi, op.to_value)
    chans, positions = op.channels, op.positions
    inputs = block(work.active, op.in_active, n_in)
    in_values = block(work.values, op.in_values, positions * chans)
    stamps = block(work.stamps, op.touched, positions)
    v = block(work.v, op.v, positions * chans)
    counts = block(work.counts, op.v, positions * chans)
    values = block(work.values, op.values, positions * chans)
    active = block(work.active, op.active, positions)
    zeros = block(work.zeros, 0, chans)
    old, new = pending_lists(op, work)
    n_old = work.pending_n[op.index]
    n_new = 0
    n = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = inputs[e]
            if n_old:
                stamps[q] = cur
            x = block(in_values, q * chans, chans)
        else:
            q = old[e - n_in]
            if n_in and stamps[q] == cur:
                continue
            x = zeros
        membranes, spikes = block(v, q * chans, chans), block(counts, q * chans, chans)
        out = block(values, q * chans, chans)
        spiked, moves = iaf_position(nrn, membranes, spikes, x, False, out, False)
        n = append(active, n, q, spiked)
        n_new = append(new, n_new, q, moves)
    swap_pending(op, work, n_new)
    return n


@inline
def pool_sums(op, net, work, n_in, cur):
    """Average pooling, first half: sum the active input positions into the windows that
    hold them; return the number of windows touched (then :func:`pool_emit`)."""
    wo, chans = op.wo, op.channels
    in_positions = op.hi * op.wi
    inputs = block(work.active, op.in_active, n_in)
    in_values = block(work.values, op.in_values, in_positions * chans)
    stamps = block(work.stamps, op.touched, op.positions)
    touched = block(work.touched, op.touched, op.positions)
    acc = block(work.acc, op.acc, op.positions * chans)
    tab = net.tables
    tab_y, tab_x = block(tab, op.tab_y, in_positions), block(tab, op.tab_x, in_positions)
    # first and last output row (column) whose window holds an input row (column)
    tab_rows, tab_cols = block(tab, op.tab_rows, 2 * op.hi), block(tab, op.tab_cols, 2 * op.wi)
    npos = 0
    for e in range(n_in):
        r = inputs[e]
        y, x = tab_y[r], tab_x[r]
        vec = block(in_values, r * chans, chans)
        for oy in range(tab_rows[2 * y], tab_rows[2 * y + 1] + 1):
            for ox in range(tab_cols[2 * x], tab_cols[2 * x + 1] + 1):
                q = oy * wo + ox
                npos = touch(stamps, touched, q, cur, npos)
                sums = block(acc, q * chans, chans)
                for c in range(chans):
                    sums[c] += vec[c]
    return npos


@inline
def pool_emit(op, work, npos):
    """Divide the sums of the ``npos`` touched windows (``work.touched[op.touched:]``),
    set them back to zero, and list the windows with a non-zero output."""
    chans, positions, div = op.channels, op.positions, op.divisor
    touched = block(work.touched, op.touched, positions)
    acc = block(work.acc, op.acc, positions * chans)
    values = block(work.values, op.values, positions * chans)
    active = block(work.active, op.active, positions)
    n = 0
    for e in range(npos):
        q = touched[e]
        sums, out = block(acc, q * chans, chans), block(values, q * chans, chans)
        nz = 0
        for c in range(chans):
            x = sums[c] / div
            sums[c] = 0.0
            out[c] = x
            nz += x != 0
        n = append(active, n, q, nz != 0)
    return n


@inline
def linear(op, net, work, n_in):
    """A linear layer: one sum over the non-zero inputs of all active positions, in their
    order; its output is one position."""
    nout, ci = op.channels, op.in_channels
    inputs = block(work.active, op.in_active, n_in)
    term_x, term_w = work.term_x, work.term_w
    if n_in == 0 and not op.has_bias:
        return 0
    n = 0
    for e in range(n_in):
        r = inputs[e]  # input r * ci + c: channel-last for spatial input
        vec = block(work.values, op.in_values + r * ci, ci)
        n = nonzero_terms(vec, r * ci * nout, nout, term_x, term_w, n)
    sums = block(work.acc, op.acc, nout)
    clear(sums)
    accumulate(work.acc, op.acc, nout, term_x, term_w, n, net.weights, op.weights)
    bias, out = block(net.biases, op.bias, nout), block(work.values, op.values, nout)
    nz = 0
    for o in range(nout):
        x = sums[o] + bias[o]
        out[o] = x
        nz += x != 0
    if nz == 0:
        return 0
    work.active[op.active] = 0
    return 1
