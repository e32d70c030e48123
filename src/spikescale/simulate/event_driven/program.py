"""Building the event-driven kernel's program: the model's operations packed into arrays.

The program is one row per operation, a numpy structured array whose fields numba reads by
name (:data:`OP`), and four shared read-only arrays: weights, biases, index tables and the
rows themselves travel together as :class:`Net`. Every offset into a per-thread work array
(:class:`~spikescale.simulate.event_driven.run.Work`) is fixed here, and so are the sizes of those
arrays (:class:`Sizes`). Row 0 is the raster's frame (:data:`OP_INPUT`), so that every
other operation finds its input where its ``in_values`` / ``in_active`` say.

Index types are fixed here, once: the record's integer fields (offsets, sizes) are int64;
positions in lists and tables are :data:`POSITION` (int32, signed: -1 marks "none" in the
tables), half the memory traffic of int64 (measured: int64 lists and tables made the
simulation 5-8 % slower); numba widens them to int64 in any arithmetic with a field, so no
index mixes signedness. No kernel casts an index: they index views of these blocks from zero
(see :mod:`.kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from spikescale.simulate.graph import (
    RESET_TO_VALUE,
    SPIKE_MULTI,
    SPIKE_SINGLE,
    Op,
    conv_padding,
    pair,
)

OP_INPUT, OP_CONV, OP_CONV_IAF, OP_POOL, OP_LINEAR, OP_IAF = 0, 1, 2, 3, 4, 5

_I, _F, _B = np.int64, np.float32, np.bool_
#: the type of positions in the work lists and of index-table entries
POSITION = np.int32

#: One operation of the program. Offsets point into the per-thread work arrays (named in
#: brackets) or into the shared arrays of :class:`Net`. Spatial data are channel-last:
#: value ``(y * W + x) * C + c``.
OP = np.dtype(
    [
        ("kind", _I),  # OP_*
        ("index", _I),  # this row's number: the operation's slot in per-operation state
        # its input: the output of the row before
        ("in_values", _I),  # [values] the input's channel vectors
        ("in_active", _I),  # [active] the list of the input's active positions
        ("in_channels", _I),  # channels per input position
        # its output: `positions` positions of `channels` values each
        ("positions", _I),
        ("channels", _I),
        (
            "values",
            _I,
        ),  # [values] the output's channel vectors (stale where not active)
        ("active", _I),  # [active] the list of active output positions
        # [stamps] per output position, the step that last touched it, and [touched] the
        # list of output positions touched in this step
        ("touched", _I),
        ("acc", _I),  # [acc] float32 sums, per output value (conv, linear, pool)
        # weighted layers
        ("weights", _I),  # Net.weights
        ("bias", _I),  # Net.biases (a shared block of zeros when has_bias is false)
        ("has_bias", _B),
        # spatial geometry (conv, pool): input and output rows and columns, kernel
        ("hi", _I),
        ("wi", _I),
        ("ho", _I),
        ("wo", _I),
        ("kh", _I),
        ("kw", _I),
        ("group_in", _I),  # channels per group, input and output (conv)
        ("group_out", _I),
        # conv with stride 1, dilation 1 and one group: the weights of a kernel row are
        # stored with their columns reversed, so that an input reaches a run of output
        # columns with consecutive weights; pad_left is its left zero padding
        ("row_scatter", _B),
        ("pad_left", _I),
        # Net.tables: each input position's row and column, and per input row (column) and
        # kernel row (column) the output row (column) reached, -1 for none (conv), or the
        # first and last output row (column) whose window holds it (pool)
        ("tab_y", _I),
        ("tab_x", _I),
        ("tab_rows", _I),
        ("tab_cols", _I),
        # neurons (iaf, conv_iaf)
        ("v", _I),  # [v] membranes, and [counts] spike counts of the sample
        (
            "pending",
            _I,
        ),  # [pending] two lists of `positions` entries, read / written in turn
        ("multi", _B),  # MultiSpike, else SingleSpike
        ("to_value", _B),  # MembraneReset, else MembraneSubtract
        ("has_min", _B),
        ("threshold", _F),
        ("first_spiking_v", _F),  # the smallest membrane that spikes
        ("subtract", _F),
        ("reset_value", _F),
        ("min_v_mem", _F),
        # conv_iaf followed by a tiling pooling: its spikes are added straight into the
        # pooling's window sums. tab_window: Net.tables, each output position's window,
        # -1 for none
        ("pooled", _B),
        ("tab_window", _I),
        # pool
        ("divisor", _F),
        # a pooling fed by a pooled conv_iaf: its sums ([acc]) and touched windows
        # ([touched]) are filled by that operation, so it only divides and lists them
        ("fed", _B),
        # fed pooling: the window after the last, whose sums collect the spikes of the
        # positions that no window holds (never read)
        ("spill", _I),
    ],
    align=True,
)


class Net(NamedTuple):
    """The program, shared read-only by all threads."""

    ops: np.ndarray  # OP records
    weights: np.ndarray  # float32
    biases: np.ndarray  # float32
    tables: np.ndarray  # POSITION


class Sizes(NamedTuple):
    """Lengths of the per-thread work arrays."""

    values: int
    active: int
    acc: int
    touched: int
    v: int
    pending: int
    widest: int  # channels of the widest position
    terms: int  # terms of the longest sum (a position's channels, or a linear layer's inputs)


@dataclass
class Program:
    net: Net
    sizes: Sizes
    spiking: list[tuple[int, int, Op]]  # (offset into counts, neurons, op) per spiking layer


def first_spiking_v(thr: np.float32, spike_mode: int) -> np.float32:
    """The smallest float32 membrane potential that emits a spike.

    SingleSpike: ``v - thr >= 0`` holds exactly when ``v >= thr`` (IEEE subtraction is
    exact in sign). MultiSpike: ``trunc(v / thr) >= 1``, and the rounded quotient is
    monotonic in ``v``, so step down from ``thr`` while the quotient still rounds to 1.
    """
    thr = np.float32(thr)
    if spike_mode == SPIKE_SINGLE:
        return thr
    v = thr
    while True:
        below = np.nextafter(v, np.float32(-np.inf), dtype=np.float32)
        if not (below > 0 and np.floor(below / thr) >= 1):
            return v
        v = below


def is_spatial(layout: tuple[int, ...]) -> bool:
    return len(layout) == 3


def to_torch_order(a: np.ndarray, layout: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """(..., N) in the kernel's order (channel-last for spatial layouts) -> (..., *shape)."""
    lead = a.shape[:-1]
    if is_spatial(layout):
        c, h, w = layout
        a = np.moveaxis(a.reshape(*lead, h, w, c), -1, -3)
    return np.ascontiguousarray(a).reshape(*lead, *shape)


def grid(layout: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int]:
    """Positions and channels per position of a tensor in the kernel's order: a spatial
    tensor (also one flattened from a spatial layout) is ``H * W`` positions of ``C``
    channels; any other tensor is one position holding all its values."""
    if is_spatial(layout):
        return layout[1] * layout[2], layout[0]
    return 1, int(np.prod(shape))


def _geometry_tables(op: Op) -> tuple[np.ndarray, ...]:
    """Index tables that spare the kernel integer divisions: row and column of each input
    position, and for each input row (column) and kernel row (column) the output row
    (column) it reaches, -1 for none (convolution) or the range of output rows (columns)
    whose window holds it (pooling)."""
    m = op.module
    _, hi, wi = op.in_shape
    _, ho, wo = op.out_shape
    kh, kw = pair(m.kernel_size)
    if op.kind == "conv":
        sh, sw = pair(m.stride)
        dh, dw = pair(m.dilation)
        ph, pw = conv_padding(m)

        def reach(n_in, n_out, k, s, d, p):
            yy = np.arange(n_in)[:, None] + p - np.arange(k)[None, :] * d
            out = np.where(yy % s == 0, yy // s, -1)
            return np.where((yy >= 0) & (out < n_out), out, -1).reshape(-1)

        rows, cols = reach(hi, ho, kh, sh, dh, ph), reach(wi, wo, kw, sw, dw, pw)
    else:
        sh, sw = pair(m.stride or m.kernel_size)
        ph, pw = pair(m.padding)

        def window(n_in, n_out, k, s, p):
            # window o covers the padded rows o * s .. o * s + k - 1, input row y is y + p
            y = np.arange(n_in) + p
            lo = np.maximum(0, (y - k) // s + 1)
            hi_ = np.minimum(n_out - 1, y // s)
            return np.stack([lo, hi_], 1).reshape(-1)

        rows, cols = window(hi, ho, kh, sh, ph), window(wi, wo, kw, sw, pw)
    pos = np.arange(hi * wi)
    return pos // wi, pos % wi, rows, cols


def _tiles(op: Op) -> bool:
    """Pooling whose windows tile the input (stride = kernel, no padding): each input
    position lies in at most one window."""
    m = op.module
    return pair(m.stride or m.kernel_size) == pair(m.kernel_size) and pair(m.padding) == (0, 0)


def _window_table(op: Op) -> np.ndarray:
    """For each input position of a tiling pooling, its window (output position), -1 for
    the rows and columns that no window covers."""
    _, hi, wi = op.in_shape
    _, ho, wo = op.out_shape
    kh, kw = pair(op.module.kernel_size)
    y, x = np.divmod(np.arange(hi * wi), wi)
    oy, ox = y // kh, x // kw
    return np.where((oy < ho) & (ox < wo), oy * wo + ox, -1)


class _Arena:
    """Hands out consecutive blocks of one array and remembers its length."""

    def __init__(self, start: int = 0) -> None:
        self.size = start

    def take(self, n: int) -> int:
        at = self.size
        self.size += int(n)
        return at


def compile_program(ops: list[Op], input_shape: tuple[int, ...]) -> Program:
    """Pack ``ops`` (of a model fed ``input_shape``) into a :class:`Program`.

    A convolution directly followed by its IAF layer becomes one operation, so that the
    membrane update runs over a position's channels straight from the accumulator; when a
    tiling pooling follows, that operation also adds the spikes into the pooling's sums.
    Spatial activity is indexed channel-last (``(y * W + x) * C + c``), so a position's
    channels are contiguous in the accumulators, the membranes, the weights and the
    activity passed between operations.
    """
    widest = max(
        max(grid(op.layout, op.in_shape)[1], grid(op.out_shape, op.out_shape)[1]) for op in ops
    )
    values, active, acc, touched, v, pending = (_Arena() for _ in range(6))
    weights: list[np.ndarray] = []
    biases = _Arena(widest)  # a zero bias shared by the layers without one
    bias_blocks: list[np.ndarray] = [np.zeros(widest, np.float32)]
    tables: list[np.ndarray] = []
    n_tables = 0

    def table(*parts: np.ndarray) -> list[int]:
        nonlocal n_tables
        offsets = []
        for t in parts:
            offsets.append(n_tables)
            n_tables += t.size
            tables.append(np.asarray(t, POSITION).reshape(-1))
        return offsets

    rows: list[np.ndarray] = []
    row_ops: list[Op | None] = []
    spiking = []
    terms = widest  # terms of one sum: a position's channels (convolution)

    first = np.zeros((), OP)
    first["kind"] = OP_INPUT
    p, c = grid(input_shape, input_shape)
    first["positions"], first["channels"] = p, c
    first["values"], first["active"], first["touched"] = (
        values.take(p * c),
        active.take(p),
        touched.take(p),
    )
    rows.append(first)
    row_ops.append(None)

    k = 0
    while k < len(ops):
        op = ops[k]
        fused = op.kind == "conv" and k + 1 < len(ops) and ops[k + 1].kind == "iaf"
        iaf = ops[k + 1] if fused else op if op.kind == "iaf" else None
        r = np.zeros((), OP)
        prev = rows[-1]
        r["index"] = len(rows)
        r["in_values"], r["in_active"] = prev["values"], prev["active"]
        p_in, c_in = grid(op.layout, op.in_shape)
        p_out, c_out = (p_in, c_in) if op.kind == "iaf" else grid(op.out_shape, op.out_shape)
        r["in_channels"] = c_in
        r["positions"], r["channels"] = p_out, c_out
        r["values"], r["active"] = values.take(p_out * c_out), active.take(p_out)
        r["touched"] = touched.take(p_out)
        m = op.module
        # a tiling pooling after a conv_iaf is fed by it
        fed = op.kind == "pool" and prev["kind"] == OP_CONV_IAF and _tiles(op)
        if op.kind in ("conv", "linear", "pool"):
            # a fed pooling's sums have one window more: the spill
            r["acc"] = acc.take((p_out + fed) * c_out)
        if fed:
            prev["pooled"], r["fed"], r["spill"] = True, True, p_out
            (prev["tab_window"],) = table(_window_table(op))
        if op.kind in ("conv", "linear"):
            w = m.weight.detach().to("cpu", torch.float32)
            if op.kind == "conv":
                co, cig, kh, kw = w.shape
                g = m.groups
                # (G, cog, cig, kh, kw) -> (G, cig, kh, kw, cog): a row of output channels
                # per (input channel, kernel offset), contiguous for the scatter
                w = w.reshape(g, co // g, cig, kh, kw).permute(0, 2, 3, 4, 1)
                if pair(m.stride) == (1, 1) and pair(m.dilation) == (1, 1) and g == 1:
                    w = w.flip(3)
                    r["row_scatter"], r["pad_left"] = True, conv_padding(m)[1]
            else:
                if is_spatial(op.layout):  # input flattened from (C, H, W): reorder columns
                    c, h, wd = op.layout
                    w = w.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
                w = w.t()
            w = np.ascontiguousarray(w.numpy()).reshape(-1)
            r["weights"] = sum(a.size for a in weights)
            weights.append(w)
            if m.bias is not None:
                b = m.bias.detach().to("cpu", torch.float32).numpy().reshape(-1)
                r["bias"], r["has_bias"] = biases.take(b.size), True
                bias_blocks.append(b)
        if op.kind in ("conv", "pool"):
            _, r["hi"], r["wi"] = op.in_shape
            _, r["ho"], r["wo"] = op.out_shape
            r["kh"], r["kw"] = pair(m.kernel_size)
            r["tab_y"], r["tab_x"], r["tab_rows"], r["tab_cols"] = table(*_geometry_tables(op))
        if op.kind == "conv":
            r["kind"] = OP_CONV_IAF if fused else OP_CONV
            r["group_in"], r["group_out"] = c_in // m.groups, c_out // m.groups
        elif op.kind == "pool":
            r["kind"] = OP_POOL
            r["divisor"] = m.divisor_override if m.divisor_override else r["kh"] * r["kw"]
        elif op.kind == "linear":
            r["kind"] = OP_LINEAR
            terms = max(terms, p_in * c_in)  # one sum over all inputs
        else:
            r["kind"] = OP_IAF
        if iaf is not None:
            r["multi"] = iaf.spike_mode == SPIKE_MULTI
            r["to_value"] = iaf.reset_mode == RESET_TO_VALUE
            r["has_min"] = iaf.min_v_mem is not None
            r["v"] = v.take(p_out * c_out)
            r["pending"] = pending.take(2 * p_out)
            r["threshold"] = iaf.threshold
            r["subtract"] = iaf.subtract
            r["reset_value"] = iaf.reset_value
            r["min_v_mem"] = iaf.min_v_mem if iaf.min_v_mem is not None else 0.0
            r["first_spiking_v"] = first_spiking_v(iaf.threshold, iaf.spike_mode)
            spiking.append((int(r["v"]), p_out * c_out, iaf))
        rows.append(r)
        row_ops.append(op)
        k += 2 if fused else 1
    sizes = Sizes(
        values=values.size,
        active=active.size,
        acc=max(acc.size, 1),
        touched=touched.size,
        v=max(v.size, 1),
        pending=max(pending.size, 1),
        widest=widest,
        terms=terms,
    )
    net = Net(
        ops=np.stack(rows),
        weights=np.concatenate(weights) if weights else np.zeros(1, np.float32),
        biases=np.concatenate(bias_blocks),
        tables=np.concatenate(tables) if tables else np.zeros(1, POSITION),
    )
    return Program(net, sizes, spiking)
