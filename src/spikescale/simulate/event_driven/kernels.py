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

Indices: positions and offsets are signed (see :mod:`.program`); the loops over a
position's channels, the per-pixel loop of the scan, the list reads of :func:`conv_iaf`
and the list writers (:func:`append`, :func:`touch`) make their index unsigned where it
is formed (``np.uint64``): numba then skips the negative-index wraparound test, which
otherwise keeps LLVM from vectorising the channel loops (measured: the IAF update ran in
single lanes, 2x slower), and costs a compare and select per read in the position loops
(measured on conv_iaf's reads: 1.5 % of the time at scale factor 64).
"""

from __future__ import annotations

import numpy as np

from spikescale.simulate.event_driven.jit import inline, loop
from spikescale.simulate.event_driven.neuron import iaf_position, neuron_of
from spikescale.simulate.event_driven.simd import accumulate

# ---------------------------------------------------------------------------------------
# bookkeeping


@inline
def zero(a, start, count):
    start = np.uint64(start)
    for j in range(np.uint64(count)):
        a[start + j] = 0.0


@inline
def append(lst, at, n, q, flag):
    """Append ``q`` to the list of ``n`` entries at ``lst[at:]`` if ``flag``: written
    always, counted only if ``flag``, so no branch to mispredict. Returns the new length."""
    lst[np.uint64(at + n)] = q
    return n + flag


@inline
def touch(stamps, touched, at, q, cur, n):
    """Mark output position ``q`` touched in step ``cur`` (``stamps``, and the list of
    ``n`` positions touched so far, both at ``at``), listing it if this is its first touch.
    Returns the new length of the list."""
    i = np.uint64(at + q)
    if stamps[i] != cur:
        stamps[i] = cur
        touched[np.uint64(at + n)] = q
        n += 1
    return n


@inline
def pending_lists(op, pending_sel):
    """Start of the pending list read this step and of the one written for the next."""
    sel = pending_sel[op.index]
    return op.pending + sel * op.positions, op.pending + (1 - sel) * op.positions


@inline
def swap_pending(op, pending_n, pending_sel, n_new):
    """The list written this step is the one read at the next."""
    pending_n[op.index] = n_new
    pending_sel[op.index] = 1 - pending_sel[op.index]


@inline
def nonzero_channels(values, vb, chans, channels):
    """List the non-zero channels of the vector ``values[vb:vb + chans]`` in ``channels``
    (without branches); return how many there are."""
    vb = np.uint64(vb)
    nnz = 0
    for c in range(chans):
        channels[nnz] = c
        nnz += values[vb + np.uint64(c)] != 0
    return nnz


@inline
def nonzero_terms(values, vb, chans, base, stride, term_x, term_w, n):
    """Append the non-zero entries of ``values[vb:vb + chans]`` to the ``n`` terms of
    :func:`~.simd.accumulate` listed so far: the values to ``term_x``, channel ``c``'s
    weight offset ``base + c * stride`` to ``term_w`` (without branches). Returns the new
    number of terms."""
    vb = np.uint64(vb)
    for c in range(chans):
        x = values[vb + np.uint64(c)]
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
    # record fields read in the loops are copied to locals once: LLVM cannot tell the
    # record's memory from the arrays the loops write, and would reload them
    v0, a0, s0 = op.values, op.active, op.touched
    values, active, stamps = work.values, work.active, work.stamps
    if positions == 1:
        vo = np.uint64(v0)
        nz = 0
        for i in range(np.uint64(chans)):
            x = frame[i]
            values[vo + i] = x
            nz += x != 0
        if nz == 0:
            return 0
        active[a0] = 0
        return 1
    bits = frame.view(np.uint32)
    # the pixel loops run over uint64 indices: no wraparound test per pixel
    u_chans, u_pos = np.uint64(chans), np.uint64(positions)
    u_s0, u_v0 = np.uint64(s0), np.uint64(v0)
    n = 0
    for c in range(u_chans):
        base = c * u_pos
        for start in range(0, positions, 16):
            stop = min(positions, start + 16)
            any_bits = np.uint32(0)
            for r in range(np.uint64(start), np.uint64(stop)):
                any_bits |= bits[base + r]
            if any_bits:
                for r in range(np.uint64(start), np.uint64(stop)):
                    x = frame[base + r]
                    if x != 0:
                        if stamps[u_s0 + r] != cur:
                            stamps[u_s0 + r] = cur
                            active[a0 + n] = r
                            n += 1
                            zero(values, u_v0 + r * u_chans, u_chans)
                        values[u_v0 + r * u_chans + c] = x
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
    in_a, in_v, s0, acc0, w0 = op.in_active, op.in_values, op.touched, op.acc, op.weights
    t_y, t_x, t_rows, t_cols = op.tab_y, op.tab_x, op.tab_rows, op.tab_cols
    rows, pad = op.row_scatter, op.pad_left
    tab, w = net.tables, net.weights
    values, active, acc, stamps, touched = (
        work.values,
        work.active,
        work.acc,
        work.stamps,
        work.touched,
    )
    channels, term_x, term_w = work.channels, work.term_x, work.term_w
    w_chan = kh * kw * cog  # weights per input channel
    npos = 0
    for e in range(n_in):
        r = active[in_a + e]
        vb = in_v + r * ci
        y, x = tab[t_y + r], tab[t_x + r]
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
            nnz = nonzero_terms(values, vb, ci, 0, w_chan, term_x, term_w, 0)
            for ky in range(kh):
                oy = tab[t_rows + y * kh + ky]
                if oy < 0:
                    continue
                q0 = oy * wo
                for ox in range(lo, hi + 1):
                    npos = touch(stamps, touched, s0, q0 + ox, cur, npos)
                ab = acc0 + (q0 + lo) * co
                wb = w0 + (ky * kw + lo - first) * co
                accumulate(acc, ab, span, term_x, term_w, nnz, w, wb)
        else:
            nnz = nonzero_channels(values, vb, ci, channels)
            for ky in range(kh):
                oy = tab[t_rows + y * kh + ky]
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tab[t_cols + x * kw + kx]
                    if ox < 0:
                        continue
                    q = oy * wo + ox
                    a = acc0 + q * co
                    npos = touch(stamps, touched, s0, q, cur, npos)
                    for j in range(nnz):
                        c = channels[j]
                        p = values[vb + c]
                        ab = np.uint64(a + (c // cig) * cog)
                        wb = np.uint64(w0 + c * w_chan + (ky * kw + kx) * cog)
                        for i in range(np.uint64(cog)):
                            acc[ab + i] += p * w[wb + i]
    return npos


@inline
def emit_conv(op, net, work, npos):
    """A convolution's output (not followed by IAF): the touched positions, every position
    when there is a bias."""
    co = op.channels
    positions, has_bias, s0, acc0, v0 = op.positions, op.has_bias, op.touched, op.acc, op.values
    b0, a0 = op.bias, op.active
    acc, values, active, touched, biases = (
        work.acc,
        work.values,
        work.active,
        work.touched,
        net.biases,
    )
    n = 0
    for e in range(positions if has_bias else npos):
        q = e if has_bias else touched[s0 + e]
        a, ob, bo = np.uint64(acc0 + q * co), np.uint64(v0 + q * co), np.uint64(b0)
        nz = 0
        for o in range(np.uint64(co)):
            x = acc[a + o] + biases[bo + o]
            acc[a + o] = 0.0
            values[ob + o] = x
            nz += x != 0
        n = append(active, a0, n, q, nz != 0)
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
    co = op.channels
    has_bias, positions, s0, acc0, b0, v0 = (
        op.has_bias,
        op.positions,
        op.touched,
        op.acc,
        op.bias,
        op.v,
    )
    out0, a0, pooled, t_win = op.values, op.active, op.pooled, op.tab_window
    spill, pool_acc, pool_s0 = pool.spill, pool.acc, pool.touched
    acc, biases, tab = work.acc, net.biases, net.tables
    values, active, stamps, touched = work.values, work.active, work.stamps, work.touched
    v, counts, pending, pending_n, pending_sel = (
        work.v,
        work.counts,
        work.pending,
        work.pending_n,
        work.pending_sel,
    )
    old, new = pending_lists(op, pending_sel)
    n_old = 0 if has_bias else pending_n[op.index]
    n_in = positions if has_bias else npos
    n = 0
    n_new = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = e if has_bias else touched[np.uint64(s0 + e)]
        else:  # pending: updated once, unless it got input (then it was updated above)
            q = pending[np.uint64(old + e - n_in)]
            sq = np.uint64(s0 + q)
            if stamps[sq] == cur:
                continue
            stamps[sq] = cur
        a = acc0 + q * co
        if has_bias:
            au, bo = np.uint64(a), np.uint64(b0)
            for o in range(np.uint64(co)):
                acc[au + o] += biases[bo + o]
        vo = v0 + q * co
        if pooled:  # (two calls, so that each inlined update knows whether it adds)
            win = tab[np.uint64(t_win + q)]
            slot = win if win >= 0 else spill
            out = pool_acc + slot * co
            spiked, moves = iaf_position(nrn, v, counts, vo, co, acc, a, True, acc, out, True)
            if spiked and win >= 0:
                n = touch(stamps, touched, pool_s0, win, cur, n)
        else:
            out = out0 + q * co
            spiked, moves = iaf_position(nrn, v, counts, vo, co, acc, a, True, values, out, False)
            n = append(active, a0, n, q, spiked)
        n_new = append(pending, new, n_new, q, moves and not has_bias)
    swap_pending(op, pending_n, pending_sel, n_new)
    return n


# ---------------------------------------------------------------------------------------
# neurons fed by another operation, pooling, linear


@inline
def iaf(op, work, n_in, cur):
    """IAF layer fed by another operation: update the positions that got input or were
    pending; list those that spiked."""
    nrn = neuron_of(op, op.multi, op.to_value)
    chans = op.channels
    in_a, in_v, s0, v0, out0, a0 = (
        op.in_active,
        op.in_values,
        op.touched,
        op.v,
        op.values,
        op.active,
    )
    values, active, stamps, zeros = work.values, work.active, work.stamps, work.zeros
    v, counts, pending, pending_n, pending_sel = (
        work.v,
        work.counts,
        work.pending,
        work.pending_n,
        work.pending_sel,
    )
    old, new = pending_lists(op, pending_sel)
    n_old = pending_n[op.index]
    n_new = 0
    n = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = active[in_a + e]
            if n_old:
                stamps[s0 + q] = cur
            x, xo = values, in_v + q * chans
        else:
            q = pending[old + e - n_in]
            if n_in and stamps[s0 + q] == cur:
                continue
            x, xo = zeros, 0
        vo, out = v0 + q * chans, out0 + q * chans
        spiked, moves = iaf_position(nrn, v, counts, vo, chans, x, xo, False, values, out, False)
        n = append(active, a0, n, q, spiked)
        n_new = append(pending, new, n_new, q, moves)
    swap_pending(op, pending_n, pending_sel, n_new)
    return n


@inline
def pool_sums(op, net, work, n_in, cur):
    """Average pooling, first half: sum the active input positions into the windows that
    hold them; return the number of windows touched (then :func:`pool_emit`)."""
    wo, chans = op.wo, op.channels
    in_a, in_v, s0, acc0 = op.in_active, op.in_values, op.touched, op.acc
    t_y, t_x, t_rows, t_cols = op.tab_y, op.tab_x, op.tab_rows, op.tab_cols
    tab = net.tables
    values, active, acc, stamps, touched = (
        work.values,
        work.active,
        work.acc,
        work.stamps,
        work.touched,
    )
    npos = 0
    for e in range(n_in):
        r = active[in_a + e]
        y, x = tab[t_y + r], tab[t_x + r]
        vb = in_v + r * chans
        for oy in range(tab[t_rows + 2 * y], tab[t_rows + 2 * y + 1] + 1):
            for ox in range(tab[t_cols + 2 * x], tab[t_cols + 2 * x + 1] + 1):
                q = oy * wo + ox
                npos = touch(stamps, touched, s0, q, cur, npos)
                a, vu = np.uint64(acc0 + q * chans), np.uint64(vb)
                for c in range(np.uint64(chans)):
                    acc[a + c] += values[vu + c]
    return npos


@inline
def pool_emit(op, work, npos):
    """Divide the sums of the ``npos`` touched windows (``work.touched[op.touched:]``),
    set them back to zero, and list the windows with a non-zero output."""
    chans = op.channels
    s0, acc0, v0, div, a0 = op.touched, op.acc, op.values, op.divisor, op.active
    acc, values, active, touched = work.acc, work.values, work.active, work.touched
    n = 0
    for e in range(npos):
        q = touched[s0 + e]
        a, ob = np.uint64(acc0 + q * chans), np.uint64(v0 + q * chans)
        nz = 0
        for c in range(np.uint64(chans)):
            x = acc[a + c] / div
            acc[a + c] = 0.0
            values[ob + c] = x
            nz += x != 0
        n = append(active, a0, n, q, nz != 0)
    return n


@inline
def linear(op, net, work, n_in):
    """A linear layer: one sum over the non-zero inputs of all active positions, in their
    order; its output is one position."""
    nout, ci = op.channels, op.in_channels
    in_a, in_v = op.in_active, op.in_values
    values, active, acc, term_x, term_w = (
        work.values,
        work.active,
        work.acc,
        work.term_x,
        work.term_w,
    )
    biases = net.biases
    if n_in == 0 and not op.has_bias:
        return 0
    n = 0
    for e in range(n_in):
        r = active[in_a + e]  # input r * ci + c: channel-last for spatial input
        n = nonzero_terms(values, in_v + r * ci, ci, r * ci * nout, nout, term_x, term_w, n)
    zero(acc, op.acc, nout)
    accumulate(acc, op.acc, nout, term_x, term_w, n, net.weights, op.weights)
    a, bo, ob = np.uint64(op.acc), np.uint64(op.bias), np.uint64(op.values)
    nz = 0
    for o in range(np.uint64(nout)):
        x = acc[a + o] + biases[bo + o]
        values[ob + o] = x
        nz += x != 0
    if nz == 0:
        return 0
    active[op.active] = 0
    return 1
