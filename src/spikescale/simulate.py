"""Simulating a converted SNN on binned event rasters.

``simulate`` takes the spiking ``nn.Sequential`` that :mod:`spikescale.convert` builds
(weighted layers, pooling and flatten, each weighted layer followed by a sinabs
``IAFSqueeze``) and a raster of shape ``(batch, time, channels, height, width)``, and
returns spike counts per sample and neuron for every spiking layer, and the output
layer's cumulative counts at chosen time steps.

Two backends:

``"sinabs"``
    The reference: sinabs's own layers, dense over every time step.
``"fast"``
    The same arithmetic, event-driven (on the CPU; elsewhere, e.g. CUDA, a dense torch
    path, see below). A numba kernel walks each sample step by step and does only the
    work that activity asks for: activity between layers is the list of active positions
    with their channel vectors (channel-last), each active position is scattered through
    the next pooling and weighted layer into float32 accumulators of the positions it
    reaches (cost: synaptic operations, not multiply-accumulates of every neuron at every
    step), and only positions that received input, or whose state would still change
    without input (a SingleSpike backlog, a reset value, a clip at ``min_v_mem``), are
    updated, their channels at once in SIMD lanes. A convolution and its IAF layer run as
    one operation.
    Samples are split over ``torch.get_num_threads()`` threads (the kernel releases the
    GIL). Memory: a few arrays of the network's size per thread, nothing over time.

    Off the CPU, ``simulate_fast_torch`` runs the model's own torch operators on whole
    chunks of time steps (bounded memory) and the IAF update written out as sinabs
    writes it, without autograd machinery.

Exactness of the fast CPU path. The integrate-and-fire update repeats sinabs's float32
operations in sinabs's order (``v + x``; ``trunc(v / thr)`` or ``v - thr >= 0``; the reset;
``relu(v - min_v_mem) + min_v_mem``, which is not always ``max(v, min_v_mem)`` in float32),
so given the same synaptic input it reaches the same state bit for bit. The synaptic input
is summed in float32, as torch sums it, but in an order of its own: one input position
and channel after another (torch blocks the sum for SIMD in oneDNN / MKL), the bias last.
The two currents can differ by an ulp or a few; when that moves a membrane across a
threshold a spike moves, and the difference can propagate. That is rare (about one neuron
in 10^5 in ``benchmarks/evaluate.py``); where all sums are exact in float32, e.g. with
dyadic weights, the backends agree exactly, which ``tests/test_simulate.py`` checks on
random networks (strided, padded, dilated and grouped convolutions, pooling windows that
tile, overlap, leave gaps or are padded, biases, wide and narrow layers) and on the
example network of ``examples/strided_bn.py``. Pooling sums its window in float32 and
divides, as torch does (padding counts as zeros in the divisor, torch's default; padding
with ``count_include_pad=False`` and ``ceil_mode`` are refused). No
multiply-add is fused, so the results do not depend on whether the CPU has FMA.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import sinabs
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from sinabs.layers.reshape import SqueezeMixin
from torch import nn
from torch.nn import functional as F

from spikescale.errors import InputError

BACKENDS = ("sinabs", "fast")


@dataclass
class SimulationResult:
    """Spike counts of one batch.

    ``layer_counts[i]`` has shape ``(batch, *neurons)``: spikes of each neuron of the
    i-th spiking layer summed over time. ``output_over_time`` has shape
    ``(batch, len(checkpoints), classes)``: output spikes counted up to and including
    each checkpoint step.
    """

    layer_counts: list[np.ndarray]
    output_over_time: np.ndarray

    @property
    def output_counts(self) -> np.ndarray:
        return self.layer_counts[-1]


def spiking_layers(model: nn.Sequential) -> list[nn.Module]:
    return [m for m in model if isinstance(m, sinabs.layers.StatefulLayer)]


def simulate(
    model: nn.Sequential,
    raster: torch.Tensor,
    checkpoints: np.ndarray,
    backend: str = "sinabs",
    device: str | torch.device | None = None,
) -> SimulationResult:
    """Run ``model`` on ``raster`` (B, T, C, H, W) and count spikes.

    ``checkpoints`` are time-step indices in ``[0, T)`` at which the output layer's
    cumulative spike counts are read out. ``device`` (default: the raster's) chooses
    where the fast backend runs: the numba kernel on ``cpu``, the torch path otherwise.
    """
    if backend == "sinabs":
        if device is not None:
            raster = raster.to(device)
        return simulate_sinabs(model, raster, checkpoints)
    if backend == "fast":
        dev = torch.device(device) if device is not None else raster.device
        if dev.type == "cpu":
            return simulate_fast_cpu(model, raster, checkpoints)
        return simulate_fast_torch(model, raster, checkpoints, device=dev)
    raise ValueError(f"evaluation.backend: unknown backend {backend!r}, expected one of {BACKENDS}")


@torch.no_grad()
def simulate_sinabs(
    model: nn.Sequential, raster: torch.Tensor, checkpoints: np.ndarray
) -> SimulationResult:
    """Reference simulation: sinabs's own layers, dense over every time step."""
    batch, steps = raster.shape[:2]
    for layer in model.modules():
        if isinstance(layer, SqueezeMixin):
            layer.batch_size, layer.num_timesteps = -1, steps
    sinabs.reset_states(model)
    counts: list[np.ndarray] = []
    over_time: list[np.ndarray] = []
    index = torch.as_tensor(checkpoints, dtype=torch.long)
    layers = spiking_layers(model)

    def reduce(module, _i, out: torch.Tensor) -> None:
        # keep only the counts: holding every layer's (batch x time) output costs gigabytes
        per_step = out.reshape(batch, steps, *out.shape[1:])
        counts.append(per_step.sum(1).round().to(torch.int32).cpu().numpy())
        if module is layers[-1]:
            cumulative = per_step.reshape(batch, steps, -1).cumsum(1)[:, index]
            over_time.append(cumulative.round().to(torch.int32).cpu().numpy())

    hooks = [layer.register_forward_hook(reduce) for layer in layers]
    try:
        model(raster.flatten(0, 1))
    finally:
        for h in hooks:
            h.remove()
    sinabs.reset_states(model)
    return SimulationResult(counts, over_time[-1])


# --------------------------------------------------------------------------------------
# Model -> a flat list of operations with their shapes (shared by both fast paths)
# --------------------------------------------------------------------------------------

SPIKE_MULTI, SPIKE_SINGLE = 0, 1
RESET_SUBTRACT, RESET_TO_VALUE = 0, 1


@dataclass
class _Op:
    kind: str  # "conv", "pool", "linear", "iaf"
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    # (C, H, W) when the input is spatial or a flattened spatial tensor, else in_shape: the
    # CPU kernel keeps spatial activity channel-last, so it needs to know
    layout: tuple[int, ...] = ()
    # iaf only
    threshold: np.float32 = np.float32(1.0)
    spike_mode: int = SPIKE_MULTI
    reset_mode: int = RESET_SUBTRACT
    subtract: np.float32 = np.float32(1.0)
    reset_value: np.float32 = np.float32(0.0)
    min_v_mem: np.float32 | None = None

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    """Zero padding before the first row and column (``"same"``: torch pads total // 2)."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0, 0
        kh, kw = _pair(m.kernel_size)
        dh, dw = _pair(m.dilation)
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return _pair(m.padding)


def _conv_out_hw(m: nn.Conv2d, hw: tuple[int, ...]) -> tuple[int, int]:
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride)
    dh, dw = _pair(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "same":
            return int(hw[0]), int(hw[1])
        tot_h = tot_w = 0
    else:
        tot_h, tot_w = 2 * _pair(m.padding)[0], 2 * _pair(m.padding)[1]
    return (
        (hw[0] + tot_h - dh * (kh - 1) - 1) // sh + 1,
        (hw[1] + tot_w - dw * (kw - 1) - 1) // sw + 1,
    )


def _scalar_float32(value, what: str, name: str) -> np.float32:
    t = torch.as_tensor(value).detach()
    if t.numel() != 1:
        raise ValueError(
            f"simulate(backend='fast'): layer {name}: {what} must be one number for the "
            f"whole layer, got a tensor of shape {tuple(t.shape)}"
        )
    # sinabs casts the 0-dim parameter to the membrane's float32 in every operation
    return np.float32(t.to(torch.float32).cpu().item())


def _flat_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(model, sinabs.network.Network):
        model = model.spiking_model
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"simulate(backend='fast'): expected an nn.Sequential spiking model, got "
            f"{type(model).__name__}"
        )
    out = []
    for name, m in model.named_children():
        if isinstance(m, nn.Sequential):
            out += [(f"{name}.{n}", c) for n, c in _flat_modules(m)]
        else:
            out.append((name, m))
    return out


SUPPORTED = (
    "Conv2d (zero padding), Linear, AvgPool2d (no ceil_mode; padding only with "
    "count_include_pad=True or a divisor_override), Flatten, "
    "Identity, Dropout in eval mode, and sinabs IAF / IAFSqueeze with MultiSpike or "
    "SingleSpike, MembraneSubtract or MembraneReset and no synaptic time constant"
)


def _unsupported(name: str, m: nn.Module, why: str = "") -> InputError:
    """A layer of the user's network that the fast backend cannot simulate exactly."""
    why = f" ({why})" if why else ""
    return InputError(
        f"simulate(backend='fast'): unsupported layer {name!r}: {m!r}{why}. Supported: {SUPPORTED}."
    )


def parse_model(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Op]:
    """Check every layer of ``model`` and return its operations with their shapes.

    Raises ``ValueError`` naming the first layer the fast backend cannot simulate.
    """
    ops: list[_Op] = []
    shape = tuple(int(s) for s in input_shape)
    layout = shape
    for name, m in _flat_modules(model):
        if isinstance(m, sinabs.layers.StatefulLayer):
            if not isinstance(m, sinabs.layers.IAF) or isinstance(m, sinabs.layers.IAFRecurrent):
                raise _unsupported(name, m, "only non-recurrent IAF neurons are supported")
            if getattr(m, "tau_syn", None) is not None or getattr(m, "norm_input", False):
                raise _unsupported(name, m, "synaptic dynamics are not supported")
            if m.spike_fn is MultiSpike:
                spike_mode = SPIKE_MULTI
            elif m.spike_fn is SingleSpike:
                spike_mode = SPIKE_SINGLE
            else:
                raise _unsupported(name, m, f"spike_fn {m.spike_fn!r}")
            thr = _scalar_float32(m.spike_threshold, "spike_threshold", name)
            if not thr > 0:
                raise _unsupported(name, m, f"spike_threshold must be > 0, got {thr}")
            op = _Op("iaf", m, shape, shape, layout, threshold=thr, spike_mode=spike_mode)
            if isinstance(m.reset_fn, MembraneSubtract):
                op.reset_mode = RESET_SUBTRACT
                sub = m.reset_fn.subtract_value
                op.subtract = thr if sub is None else _scalar_float32(sub, "subtract_value", name)
            elif isinstance(m.reset_fn, MembraneReset):
                op.reset_mode = RESET_TO_VALUE
                op.reset_value = _scalar_float32(m.reset_fn.reset_value, "reset_value", name)
            else:
                raise _unsupported(name, m, f"reset_fn {m.reset_fn!r}")
            if m.min_v_mem is not None:
                op.min_v_mem = _scalar_float32(m.min_v_mem, "min_v_mem", name)
            ops.append(op)
        elif isinstance(m, nn.Conv2d):
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise _unsupported(name, m, f"input of shape {shape}")
            if m.padding_mode != "zeros":
                raise _unsupported(name, m, f"padding_mode {m.padding_mode!r}")
            out = (m.out_channels, *_conv_out_hw(m, shape[1:]))
            if min(out) < 1:
                raise _unsupported(name, m, f"input of shape {shape} is too small")
            ops.append(_Op("conv", m, shape, out, shape))
            shape = layout = out
        elif isinstance(m, nn.AvgPool2d):
            if len(shape) != 3:
                raise _unsupported(name, m, f"input of shape {shape}")
            if m.ceil_mode:
                raise _unsupported(name, m, "ceil_mode is not supported")
            (ph, pw) = _pair(m.padding)
            if (ph, pw) != (0, 0) and not m.count_include_pad and not m.divisor_override:
                # the divisor would change from window to window at the borders
                raise _unsupported(name, m, "padding with count_include_pad=False")
            (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            out = (shape[0], (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1)
            if min(out) < 1:
                raise _unsupported(name, m, f"input of shape {shape} is too small")
            ops.append(_Op("pool", m, shape, out, shape))
            shape = layout = out
        elif isinstance(m, nn.Linear):
            if len(shape) != 1 or shape[0] != m.in_features:
                raise _unsupported(name, m, f"input of shape {shape}; flatten first")
            ops.append(_Op("linear", m, shape, (m.out_features,), layout))
            shape = layout = (m.out_features,)
        elif isinstance(m, nn.Flatten):
            start = m.start_dim if m.start_dim >= 0 else m.start_dim + len(shape) + 1
            end = m.end_dim if m.end_dim >= 0 else m.end_dim + len(shape) + 1
            if start != 1 or end != len(shape):
                raise _unsupported(name, m, "only Flatten over all but the batch dimension")
            shape = (int(np.prod(shape)),)  # the layout stays that of the spatial tensor
        elif isinstance(m, nn.Identity) or (
            isinstance(m, nn.modules.dropout._DropoutNd) and (not m.training or m.p == 0)
        ):
            continue
        else:
            raise _unsupported(name, m)
    if not any(op.kind == "iaf" for op in ops):
        raise ValueError("simulate(backend='fast'): the model has no spiking layer")
    while ops[-1].kind != "iaf":  # layers after the last spiking layer are not recorded
        ops.pop()
    return ops


def _checkpoint_steps(checkpoints: np.ndarray, steps: int) -> np.ndarray:
    ck = np.asarray(checkpoints, dtype=np.int64).reshape(-1)
    if ck.size and (ck.min() < -steps or ck.max() >= steps):
        raise ValueError(
            f"checkpoints must be time-step indices in [0, {steps}), got {ck.min()}..{ck.max()}"
        )
    return np.where(ck < 0, ck + steps, ck)


def _check_raster(raster: torch.Tensor) -> None:
    if raster.dim() < 3:
        raise ValueError(f"raster must have shape (batch, time, *input), got {tuple(raster.shape)}")


# --------------------------------------------------------------------------------------
# Fast path on the CPU: event-driven numba kernel
# --------------------------------------------------------------------------------------

OP_CONV, OP_POOL, OP_LINEAR, OP_IAF, OP_CONV_IAF = 0, 1, 2, 3, 4
_NI, _NF = 34, 8  # integer and float parameter slots per operation
# Integer slots (ip): 0 type, 1 input size, 2 output size, 3 output value offset,
# 4 accumulator offset, 5 stamp / touched-list offset (per output position), 6 weight
# offset, 7 bias offset (a shared block of zeros without bias), 8 has bias, 9-14 hi wi ho
# wo kh kw, 15-17 channels per group in / out and groups, 18-19 channels per input / output
# position, 20 table offset, 21 spike function, 22 reset, 23 has min_v_mem, 24 membrane
# offset (also of the neurons' spike counts), 25 pooled (a convolution + IAF that adds
# its spikes straight into the window sums of the pooling that follows, and that pooling,
# which then only divides and lists the sums), 26 pending-list offset, 27 pending-list
# capacity (positions), 28 row scatter (convolution with stride 1, dilation 1, one group:
# weights stored with the kernel columns reversed), 29 left padding, 30 output
# position-list offset, 32 offset of the table of each output position's pooling window
# and 33 the pooling's stamp / touched-list offset (pooled convolution + IAF).
# Float slots (fp): 0 threshold, 1 subtract value, 2 reset value, 3 min_v_mem,
# 4 pooling divisor, 5 first spiking membrane value.


def _first_spiking_v(thr: np.float32, spike_mode: int) -> np.float32:
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


def _is_spatial(layout: tuple[int, ...]) -> bool:
    return len(layout) == 3


def _to_torch_order(a: np.ndarray, layout: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """(..., N) in the kernel's order (channel-last for spatial layouts) -> (..., *shape)."""
    lead = a.shape[:-1]
    if _is_spatial(layout):
        c, h, w = layout
        a = np.moveaxis(a.reshape(*lead, h, w, c), -1, -3)
    return np.ascontiguousarray(a).reshape(*lead, *shape)


@dataclass
class _Program:
    ip: np.ndarray
    fp: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    tables: np.ndarray
    sizes: np.ndarray
    spiking: list[tuple[int, int, _Op]]  # (offset into counts, neurons, op) per spiking layer


def _geometry_tables(op: _Op) -> np.ndarray:
    """Index tables that spare the kernel integer divisions: row and column of each input
    position, and for each input row (column) and kernel row (column) the output row
    (column) it reaches, -1 for none (convolution) or the range of output rows (columns)
    whose window holds it (pooling)."""
    m = op.module
    _, hi, wi = op.in_shape
    _, ho, wo = op.out_shape
    kh, kw = _pair(m.kernel_size)
    if op.kind == "conv":
        sh, sw = _pair(m.stride)
        dh, dw = _pair(m.dilation)
        ph, pw = _conv_padding(m)

        def reach(n_in, n_out, k, s, d, p):
            yy = np.arange(n_in)[:, None] + p - np.arange(k)[None, :] * d
            out = np.where(yy % s == 0, yy // s, -1)
            return np.where((yy >= 0) & (out < n_out), out, -1).reshape(-1)

        rows, cols = reach(hi, ho, kh, sh, dh, ph), reach(wi, wo, kw, sw, dw, pw)
    else:
        sh, sw = _pair(m.stride or m.kernel_size)
        ph, pw = _pair(m.padding)

        def window(n_in, n_out, k, s, p):
            # window o covers the padded rows o * s .. o * s + k - 1, input row y is y + p
            y = np.arange(n_in) + p
            lo = np.maximum(0, (y - k) // s + 1)
            hi_ = np.minimum(n_out - 1, y // s)
            return np.stack([lo, hi_], 1).reshape(-1)

        rows, cols = window(hi, ho, kh, sh, ph), window(wi, wo, kw, sw, pw)
    pos = np.arange(hi * wi)
    return np.concatenate([pos // wi, pos % wi, rows, cols]).astype(np.int32)


def _tiles(op: _Op) -> bool:
    """Pooling whose windows tile the input (stride = kernel, no padding): each input
    position lies in at most one window."""
    m = op.module
    return _pair(m.stride or m.kernel_size) == _pair(m.kernel_size) and _pair(m.padding) == (0, 0)


def _window_table(op: _Op) -> np.ndarray:
    """For each input position of a tiling pooling, its window (output position), -1 for
    the rows and columns that no window covers."""
    _, hi, wi = op.in_shape
    _, ho, wo = op.out_shape
    kh, kw = _pair(op.module.kernel_size)
    y, x = np.divmod(np.arange(hi * wi), wi)
    oy, ox = y // kh, x // kw
    return np.where((oy < ho) & (ox < wo), oy * wo + ox, -1).astype(np.int32)


def _grid(layout: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int]:
    """Positions and channels per position of a tensor in the kernel's order: a spatial
    tensor (also one flattened from a spatial layout) is ``H * W`` positions of ``C``
    channels; any other tensor is one position holding all its values."""
    if _is_spatial(layout):
        return layout[1] * layout[2], layout[0]
    return 1, int(np.prod(shape))


def _compile_program(ops: list[_Op]) -> _Program:
    """Pack ``ops`` into arrays for the numba kernel.

    A convolution directly followed by its IAF layer becomes one operation, so that the
    membrane update runs over a position's channels straight from the accumulator; when a
    tiling pooling follows, that operation also adds the spikes into the pooling's sums.
    Spatial activity is indexed channel-last (``(y * W + x) * C + c``), so a position's
    channels are contiguous in the accumulators, the membranes, the weights and the
    activity passed between operations.
    """
    rows: list[np.ndarray] = []
    frows: list[np.ndarray] = []
    row_ops: list[_Op] = []
    widest = max(
        max(_grid(op.layout, op.in_shape)[1], _grid(op.out_shape, op.out_shape)[1]) for op in ops
    )
    weights: list[np.ndarray] = []
    # a zero bias shared by the layers without one
    biases: list[np.ndarray] = [np.zeros(widest, np.float32)]
    tables: list[np.ndarray] = []
    spiking = []
    n_w, n_b, n_tab = 0, widest, 0
    n_val = n_list = n_acc = n_stamp = n_v = n_pend = 0
    k = 0
    while k < len(ops):
        op = ops[k]
        fused = op.kind == "conv" and k + 1 < len(ops) and ops[k + 1].kind == "iaf"
        iaf = ops[k + 1] if fused else op if op.kind == "iaf" else None
        ip = np.zeros(_NI, np.int64)
        fp = np.zeros(_NF, np.float32)
        p_in, c_in = _grid(op.layout, op.in_shape)
        p_out, c_out = (p_in, c_in) if op.kind == "iaf" else _grid(op.out_shape, op.out_shape)
        n = p_out * c_out
        ip[1], ip[2] = p_in * c_in, n
        ip[3], ip[30] = n_val, n_list
        ip[18], ip[19] = c_in, c_out
        ip[5] = n_stamp
        n_val += n
        n_list += p_out
        n_stamp += p_out
        m = op.module
        if op.kind in ("conv", "linear", "pool"):
            ip[4] = n_acc
            n_acc += n
        if op.kind in ("conv", "linear"):
            w = m.weight.detach().to("cpu", torch.float32)
            if op.kind == "conv":
                co, cig, kh, kw = w.shape
                g = m.groups
                # (G, cog, cig, kh, kw) -> (G, cig, kh, kw, cog): a row of output channels
                # per (input channel, kernel offset), contiguous for the scatter
                w = w.reshape(g, co // g, cig, kh, kw).permute(0, 2, 3, 4, 1)
                if _pair(m.stride) == (1, 1) and _pair(m.dilation) == (1, 1) and g == 1:
                    # kernel columns reversed: the neighbouring output positions an input
                    # reaches in one kernel row then use consecutive weights
                    w = w.flip(3)
                    ip[28], ip[29] = 1, _conv_padding(m)[1]
            else:
                if _is_spatial(op.layout):  # input flattened from (C, H, W): reorder columns
                    c, h, wd = op.layout
                    w = w.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
                w = w.t()
            w = np.ascontiguousarray(w.numpy()).reshape(-1)
            ip[6] = n_w
            n_w += w.size
            weights.append(w)
            if m.bias is not None:
                b = m.bias.detach().to("cpu", torch.float32).numpy().reshape(-1)
                ip[7], ip[8] = n_b, 1
                n_b += b.size
                biases.append(b)
        if op.kind in ("conv", "pool"):
            _, hi, wi = op.in_shape
            _, ho, wo = op.out_shape
            kh, kw = _pair(m.kernel_size)
            ip[9:15] = (hi, wi, ho, wo, kh, kw)
            tab = _geometry_tables(op)
            ip[20] = n_tab
            n_tab += tab.size
            tables.append(tab)
        if op.kind == "conv":
            ip[0] = OP_CONV_IAF if fused else OP_CONV
            g = m.groups
            ip[15:18] = (c_in // g, c_out // g, g)
        elif op.kind == "pool":
            ip[0] = OP_POOL
            fp[4] = np.float32(m.divisor_override if m.divisor_override else kh * kw)
        elif op.kind == "linear":
            ip[0] = OP_LINEAR
        else:
            ip[0] = OP_IAF
        if iaf is not None:
            ip[21] = iaf.spike_mode
            ip[22] = iaf.reset_mode
            ip[23] = iaf.min_v_mem is not None
            ip[24] = n_v
            ip[26] = n_pend
            ip[27] = p_out
            spiking.append((n_v, n, iaf))
            n_v += n
            n_pend += 2 * p_out
            fp[0] = iaf.threshold
            fp[1] = iaf.subtract
            fp[2] = iaf.reset_value
            fp[3] = iaf.min_v_mem if iaf.min_v_mem is not None else 0.0
            fp[5] = _first_spiking_v(iaf.threshold, iaf.spike_mode)
        rows.append(ip)
        frows.append(fp)
        row_ops.append(op)
        k += 2 if fused else 1
    for conv, pool, pool_op in zip(rows, rows[1:], row_ops[1:]):
        if conv[0] == OP_CONV_IAF and pool[0] == OP_POOL and _tiles(pool_op):
            tab = _window_table(pool_op)
            conv[25], conv[32], conv[33] = 1, n_tab, pool[5]
            pool[25] = 1
            n_tab += tab.size
            tables.append(tab)
    # terms of one sum: a position's channels (convolution), all inputs (linear)
    n_terms = max([widest] + [int(ip[1]) for ip in rows if ip[0] == OP_LINEAR])
    sizes = np.array(
        [
            n_val,
            max(n_acc, 1),
            max(n_stamp, 1),
            max(n_v, 1),
            n_v,
            max(n_pend, 1),
            widest,
            n_list,
            n_terms,
        ],
        np.int64,
    )
    return _Program(
        np.stack(rows),
        np.stack(frows),
        np.concatenate(weights) if weights else np.zeros(1, np.float32),
        np.concatenate(biases),
        np.concatenate(tables) if tables else np.zeros(1, np.int32),
        sizes,
        spiking,
    )


@torch.no_grad()
def simulate_fast_cpu(
    model: nn.Module,
    raster: torch.Tensor,
    checkpoints: np.ndarray,
    n_threads: int | None = None,
) -> SimulationResult:
    """Event-driven simulation on the CPU (numba); same results as :func:`simulate_sinabs`.

    Samples are split over ``n_threads`` threads (default: ``torch.get_num_threads()``, so
    that ``torch.set_num_threads`` governs both backends).
    """
    _check_raster(raster)
    batch, steps = int(raster.shape[0]), int(raster.shape[1])
    in_shape = tuple(int(s) for s in raster.shape[2:])
    ops = parse_model(model, in_shape)
    ck = _checkpoint_steps(checkpoints, steps)
    prog = _compile_program(ops)
    frames = raster.detach().to("cpu", torch.float32).reshape(batch, steps, -1)
    frames = np.ascontiguousarray(frames.numpy())
    # the kernel indexes spatial input channel-last
    in_c, in_hw = (in_shape[0], in_shape[1] * in_shape[2]) if len(in_shape) == 3 else (0, 0)
    ck_unique, ck_inverse = np.unique(ck, return_inverse=True)
    last_off, last_n, last = prog.spiking[-1]
    counts = np.zeros((batch, prog.sizes[4]), np.int32)
    snaps = np.zeros((batch, len(ck_unique), last_n), np.int32)

    def run(b0: int, b1: int) -> None:
        _run_samples(
            frames,
            b0,
            b1,
            in_c,
            in_hw,
            prog.ip,
            prog.fp,
            prog.weights,
            prog.biases,
            prog.tables,
            prog.sizes,
            ck_unique.astype(np.int64),
            last_off,
            counts,
            snaps,
        )

    threads = max(1, min(batch, torch.get_num_threads() if n_threads is None else n_threads))
    if threads == 1:
        run(0, batch)
    else:  # the kernel releases the GIL; samples differ in cost, so each thread takes
        # the next sample when it is free
        samples = itertools.count()

        def work() -> None:
            while (b := next(samples)) < batch:
                run(b, b + 1)

        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(work) for _ in range(threads)]:
                f.result()
    layer_counts = [
        _to_torch_order(counts[:, off : off + n], op.layout, op.out_shape)
        for off, n, op in prog.spiking
    ]
    over_time = _to_torch_order(snaps, last.layout, (last.n_out,))
    over_time = over_time[:, ck_inverse.reshape(-1)] if ck.size else over_time[:, :0]
    return SimulationResult(layer_counts, np.ascontiguousarray(over_time))


# --------------------------------------------------------------------------------------
# Fast path elsewhere (CUDA): dense torch, time in chunks, no autograd machinery
# --------------------------------------------------------------------------------------


@torch.no_grad()
def simulate_fast_torch(
    model: nn.Module,
    raster: torch.Tensor,
    checkpoints: np.ndarray,
    device: str | torch.device | None = None,
    chunk_elements: int = 1 << 26,
) -> SimulationResult:
    """Dense simulation with torch operators on any device, time processed in chunks.

    Every operation is the one sinabs uses (the model's own convolution / pooling /
    linear layers, the IAF update written out as sinabs writes it), so on the CPU the
    results are identical to :func:`simulate_sinabs`. Memory stays bounded: at most
    about ``chunk_elements`` floats of any layer's activity are alive at once.
    """
    _check_raster(raster)
    dev = torch.device(device) if device is not None else raster.device
    batch, steps = int(raster.shape[0]), int(raster.shape[1])
    ops = parse_model(model, tuple(raster.shape[2:]))
    ck = torch.as_tensor(_checkpoint_steps(checkpoints, steps), dtype=torch.long, device=dev)
    widest = max(max(int(np.prod(op.in_shape)), op.n_out) for op in ops)
    chunk = max(1, min(steps, chunk_elements // max(1, batch * widest)))

    params = []
    for op in ops:
        m = op.module
        if op.kind in ("conv", "linear"):
            params.append(
                (
                    m.weight.detach().to(dev, torch.float32),
                    None if m.bias is None else m.bias.detach().to(dev, torch.float32),
                )
            )
        else:
            params.append(None)
    state = [
        torch.zeros((batch, *op.out_shape), device=dev) if op.kind == "iaf" else None for op in ops
    ]
    counts = [
        torch.zeros((batch, *op.out_shape), device=dev) if op.kind == "iaf" else None for op in ops
    ]
    consts = [
        None
        if op.kind != "iaf"
        else (
            torch.tensor(op.threshold, device=dev),
            torch.tensor(op.subtract, device=dev),
            torch.tensor(op.reset_value, device=dev),
            None if op.min_v_mem is None else torch.tensor(op.min_v_mem, device=dev),
        )
        for op in ops
    ]
    out_running = torch.zeros((batch, ops[-1].n_out), device=dev)
    snaps = torch.zeros((batch, len(ck), ops[-1].n_out), device=dev)
    for t0 in range(0, steps, chunk):
        t1 = min(steps, t0 + chunk)
        x = raster[:, t0:t1].to(dev, torch.float32).flatten(0, 1)
        for k, op in enumerate(ops):
            m = op.module
            x = x.reshape(x.shape[0], *op.in_shape)
            if op.kind == "conv":
                wt, bs = params[k]
                x = F.conv2d(x, wt, bs, m.stride, m.padding, m.dilation, m.groups)
            elif op.kind == "linear":
                wt, bs = params[k]
                x = F.linear(x, wt, bs)
            elif op.kind == "pool":
                x = m(x)
            else:
                x = _iaf_chunk(op, x.reshape(batch, t1 - t0, *op.out_shape), state, k, consts[k])
                counts[k] += x.sum(1)
                if k == len(ops) - 1:
                    cum = out_running[:, None] + x.reshape(batch, t1 - t0, -1).cumsum(1)
                    out_running = cum[:, -1]
                    sel = (ck >= t0) & (ck < t1)
                    if sel.any():
                        snaps[:, sel] = cum[:, ck[sel] - t0]
                x = x.flatten(0, 1)
    layer_counts = [c.round().to(torch.int32).cpu().numpy() for c in counts if c is not None]
    return SimulationResult(layer_counts, snaps.round().to(torch.int32).cpu().numpy())


def _iaf_chunk(op: _Op, x: torch.Tensor, state: list, k: int, consts) -> torch.Tensor:
    """The sinabs IAF update (lif_forward_single with alpha=1), step by step over a chunk."""
    thr, sub, rv, vmin = consts
    v = state[k]
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        v = v + x[:, t]
        if op.spike_mode == SPIKE_MULTI:
            s = (v > 0) * torch.div(v, thr, rounding_mode="trunc")
        else:
            s = (v - thr >= 0).float()
        if op.reset_mode == RESET_SUBTRACT:
            v = v - s * sub
        else:
            v = v * (s == 0).float() + rv
        if vmin is not None:
            v = F.relu(v - vmin) + vmin
        out[:, t] = s
    state[k] = v
    return out


# --------------------------------------------------------------------------------------
# The numba kernel. Activity between operations, per sample and step, is a list of the
# active positions (those with a non-zero value) and, in one float32 buffer per operation,
# the channel vectors of those positions (channel-last; entries of positions not listed
# are stale). Each operation reads its input positions and writes its output positions,
# a position's channels at once, so the bookkeeping (stamps, lists, bounds) is paid per
# position and the arithmetic runs over contiguous channels, in float32 throughout.
# --------------------------------------------------------------------------------------

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# small helpers of the hot loops: inlined, so that no call or array bookkeeping remains
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
# Indices of the hot loops are unsigned: numba then skips the negative-index wraparound
# test, which otherwise keeps LLVM from vectorising the loops.
_u = np.uint64


@_inline
def _clip(v, has_min, vmin):
    """relu(v - min_v_mem) + min_v_mem, as sinabs writes it (not max(v, min))."""
    d = v - vmin
    return ((np.float32(0.0) if d < 0 else d) + vmin) if has_min else v


@_inline
def _iaf_update(v, x, thr, vfirst, multi, to_value, sub, rv, has_min, vmin):
    """One sinabs IAF step of one neuron: the same float32 operations in the same order.

    ``vfirst`` is the smallest membrane that spikes (see ``_first_spiking_v``). For a
    neuron that does not spike the spike count is (+-)0, so ``v - s * sub`` is ``v`` and
    ``v * (s == 0)`` is ``v``: sinabs's arithmetic, written without branches.
    """
    zero, one = np.float32(0.0), np.float32(1.0)
    v = v + x
    spikes = v >= vfirst
    # MultiSpike: (v > 0) * trunc(v / thr); SingleSpike: (v - thr >= 0)
    s = (np.float32(np.floor(v / thr)) if multi else one) if spikes else zero
    # MembraneReset: v * (spikes == 0) + reset_value; MembraneSubtract: v - spikes * sub
    v = (v * (zero if spikes else one) + rv) if to_value else (v - s * sub)
    return _clip(v, has_min, vmin), s


@_inline
def _moves_at_rest(v, vfirst, to_value, rv, has_min, vmin):
    """Would a step without input change this neuron (spike, reset value, clip)?"""
    w = (v + rv) if to_value else v
    return (v >= vfirst) | (_clip(w, has_min, vmin) != v)


@_inline
def _zero(a, start, count):
    start = _u(start)
    for j in range(_u(count)):
        a[start + j] = 0.0


@_jit
def _scan(frame, in_c, in_hw, val, plist, stamp, cur):
    """The active positions of one input frame and their channel vectors. A spatial
    frame (``in_c`` planes of ``in_hw`` pixels) is read plane by plane, blocks of 16 pixels
    skipped with one test on their bits (a vectorised OR); any other input is one position."""
    if in_c == 0:
        nz = 0
        for i in range(_u(frame.shape[0])):
            x = frame[i]
            val[i] = x
            nz += x != 0
        if nz == 0:
            return 0
        plist[0] = 0
        return 1
    bits = frame.view(np.uint32)
    n = 0
    for c in range(in_c):
        base = _u(c * in_hw)
        for start in range(0, in_hw, 16):
            stop = min(in_hw, start + 16)
            any_bits = np.uint32(0)
            for r in range(_u(start), _u(stop)):
                any_bits |= bits[base + r]
            if any_bits:
                for r in range(start, stop):
                    x = frame[base + _u(r)]
                    if x != 0:
                        if stamp[_u(r)] != cur:
                            stamp[_u(r)] = cur
                            plist[_u(n)] = r
                            n += 1
                            _zero(val, r * in_c, in_c)
                        val[_u(r * in_c + c)] = x
    return n


@_inline
def _nonzero_channels(val, vb, chans, nzc):
    """List the non-zero channels of the vector ``val[vb:vb + chans]`` in ``nzc`` (without
    branches); return how many there are."""
    nnz = 0
    for c in range(chans):
        nzc[nnz] = c
        nnz += val[vb + c] != 0
    return nnz


@_inline
def _nonzero_terms(val, vb, chans, base, stride, xs, offs, n):
    """Append the non-zero entries of ``val[vb:vb + chans]`` to the ``n`` terms of
    :func:`_accumulate` listed so far: the values to ``xs``, channel ``c``'s weight offset
    ``base + c * stride`` to ``offs`` (without branches). Returns the new number of terms."""
    vb = _u(vb)
    for c in range(_u(chans)):
        x = val[vb + c]
        xs[_u(n)] = x
        offs[_u(n)] = base + c * stride
        n += x != 0
    return n


_F32, _I32, _I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_F32, 8)


@intrinsic
def _accumulate(typingctx, acc, ab, span, xs, offs, n, w, wb):
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
                    builder.load(vec(acc_p, builder.add(a0, const(8 * m))), align=4), slot
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
                    builder.load(slot), vec(acc_p, builder.add(a0, const(8 * m))), align=4
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
        with cgutils.for_range_slice(builder, first, span_, const(1), inc=True) as (i, _):
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


@_jit
def _scatter_conv(ip, val, plist, src, psrc, n_in, w, acc, stamp, pos, tab, cur, nzc, xs):
    """Add each active input position's channels to the accumulators of the output
    positions it reaches; return the number of output positions touched (listed in
    ``pos``). The accumulators are zero at the start of a step: whatever reads them
    (:func:`_conv_iaf`, :func:`_emit_conv`) sets them back to zero."""
    hi, wi, wo, kh, kw = ip[9], ip[10], ip[12], ip[13], ip[14]
    cig, cog, ci, co = ip[15], ip[16], ip[18], ip[19]
    aoff, soff, woff, pw = ip[4], ip[5], ip[6], ip[29]
    rows = ip[28] != 0
    t_y, t_x = ip[20], ip[20] + hi * wi
    t_rows = t_x + hi * wi
    t_cols = t_rows + hi * kh
    w_chan = kh * kw * cog  # weights per input channel
    npos = 0
    for e in range(n_in):
        r = plist[_u(psrc + e)]
        vb = src + r * ci
        y, x = tab[_u(t_y + r)], tab[_u(t_x + r)]
        if rows:
            # In one kernel row the input reaches the neighbouring output columns lo..hi_,
            # whose accumulators are contiguous, as are their weights (kernel columns
            # reversed: output column x + pw - kx uses reversed column kw - 1 - kx).
            first = x + pw - (kw - 1)
            lo = max(first, 0)
            hi_ = min(x + pw, wo - 1)
            if lo > hi_:
                continue
            span = _u((hi_ - lo + 1) * co)
            nnz = _nonzero_terms(val, vb, ci, 0, w_chan, xs, nzc, 0)
            for ky in range(kh):
                oy = tab[_u(t_rows + y * kh + ky)]
                if oy < 0:
                    continue
                q0 = oy * wo
                for ox in range(lo, hi_ + 1):
                    q = q0 + ox
                    if stamp[_u(soff + q)] != cur:
                        stamp[_u(soff + q)] = cur
                        pos[_u(soff + npos)] = q
                        npos += 1
                _accumulate(
                    acc,
                    aoff + (q0 + lo) * co,
                    span,
                    xs,
                    nzc,
                    nnz,
                    w,
                    woff + (ky * kw + lo - first) * co,
                )
        else:
            nnz = _nonzero_channels(val, vb, ci, nzc)
            for ky in range(kh):
                oy = tab[t_rows + y * kh + ky]
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tab[t_cols + x * kw + kx]
                    if ox < 0:
                        continue
                    q = oy * wo + ox
                    a = aoff + q * co
                    if stamp[soff + q] != cur:
                        stamp[soff + q] = cur
                        pos[soff + npos] = q
                        npos += 1
                    for j in range(nnz):
                        c = nzc[j]
                        p = val[vb + c]
                        ab = _u(a + (c // cig) * cog)
                        wb = _u(woff + c * w_chan + (ky * kw + kx) * cog)
                        for i in range(_u(cog)):
                            acc[ab + i] += p * w[wb + i]
    return npos


@_jit
def _emit_conv(ip, npos, bias, acc, stamp, pos, cur, val, plist, dst, pdst):
    """A convolution's output (not followed by IAF): the touched positions, every position
    when there is a bias."""
    ho, wo, co = ip[11], ip[12], ip[19]
    aoff, soff, boff, has_bias = ip[4], ip[5], ip[7], ip[8] != 0
    n = 0
    for e in range(ho * wo if has_bias else npos):
        q = e if has_bias else pos[soff + e]
        a = _u(aoff + q * co)
        ob = _u(dst + q * co)
        bo = _u(boff)
        nz = 0
        for o in range(_u(co)):
            x = acc[a + o] + bias[bo + o]
            acc[a + o] = 0.0
            val[ob + o] = x
            nz += x != 0
        n = _list(plist, pdst, n, q, nz != 0)
    return n


@_inline
def _iaf_position(chans, x, xo, clear, fp, multi, to_value, has_min, v, vo, out, oo, add, crow):
    """Update the membranes of a position's channels with the float32 input ``x[xo:]``
    (set back to zero if ``clear``); write its spikes to ``out[oo:]`` (or, if ``add``, add
    them to what is there) and add them to ``crow[vo:]``. Returns whether any channel
    spiked and whether the position must be updated at the next step even without input.
    The loop has no branches and only float32 data, so it runs in 8 SIMD lanes."""
    thr, sub, rv, vmin, vfirst = fp[0], fp[1], fp[2], fp[3], fp[5]
    xo, vo, oo = _u(xo), _u(vo), _u(oo)
    spiked = False
    moving = False
    for o in range(_u(chans)):
        v1, s = _iaf_update(
            v[vo + o], x[xo + o], thr, vfirst, multi, to_value, sub, rv, has_min, vmin
        )
        if clear:
            x[xo + o] = 0.0
        v[vo + o] = v1
        out[oo + o] = (out[oo + o] + s) if add else s
        crow[vo + o] += np.int32(s)
        spiked |= s != 0
        moving |= _moves_at_rest(v1, vfirst, to_value, rv, has_min, vmin)
    return spiked, moving


@_inline
def _pending_lists(ip, pend_sel, k):
    """Start of the pending list read this step and of the one written for the next."""
    cap = ip[27]
    return ip[26] + pend_sel[k] * cap, ip[26] + (1 - pend_sel[k]) * cap


@_inline
def _list(lst, off, n, q, flag):
    """Append ``q`` to the list of ``n`` entries at ``lst[off:]`` if ``flag``: written
    always, counted only if ``flag``, so no branch to mispredict. Returns the new length."""
    lst[_u(off + n)] = q
    return n + flag


@_inline
def _swap_pending(pend_n, pend_sel, k, n_new):
    """The list written this step is the one read at the next."""
    pend_n[k] = n_new
    pend_sel[k] = 1 - pend_sel[k]


@_jit
def _conv_iaf(
    ip,
    fp,
    npos,
    bias,
    acc,
    stamp,
    pos,
    cur,
    v,
    pend,
    pend_n,
    pend_sel,
    k,
    val,
    plist,
    dst,
    pdst,
    crow,
    tab,
):
    """IAF layer fed by a convolution: update the touched and the pending positions (all
    positions when the convolution has a bias); list those that spiked. Pooled (``ip[25]``):
    add the spikes into the window sums of the pooling at ``val[dst:]`` instead, and
    list the windows that got spikes in the pooling's touched list (returns their number).

    The pipeline's neurons (MultiSpike, reset by subtraction) get a copy of the loop with
    both fixed at compile time. As run-time flags in the loop over channels, LLVM merges
    them into the lanes' spike masks and spends more instructions packing masks than
    updating membranes: the copy is 6-14 % faster at factors 1-64. The other choices share
    one copy (a copy each made the cold compile 50 % longer)."""
    multi, to_value = ip[21] == SPIKE_MULTI, ip[22] == RESET_TO_VALUE
    if multi and not to_value:
        return _conv_iaf_loop(
            ip,
            fp,
            npos,
            bias,
            acc,
            stamp,
            pos,
            cur,
            v,
            pend,
            pend_n,
            pend_sel,
            k,
            val,
            plist,
            dst,
            pdst,
            crow,
            tab,
            True,
            False,
        )
    return _conv_iaf_loop(
        ip,
        fp,
        npos,
        bias,
        acc,
        stamp,
        pos,
        cur,
        v,
        pend,
        pend_n,
        pend_sel,
        k,
        val,
        plist,
        dst,
        pdst,
        crow,
        tab,
        multi,
        to_value,
    )


@_inline
def _conv_iaf_loop(
    ip,
    fp,
    npos,
    bias,
    acc,
    stamp,
    pos,
    cur,
    v,
    pend,
    pend_n,
    pend_sel,
    k,
    val,
    plist,
    dst,
    pdst,
    crow,
    tab,
    multi,
    to_value,
):
    ho, wo, co, aoff, soff, boff, has_bias = ip[11], ip[12], ip[19], ip[4], ip[5], ip[7], ip[8] != 0
    voff, pooled, t_win, psoff = ip[24], ip[25] != 0, ip[32], ip[33]
    has_min = ip[23] != 0
    old, new = _pending_lists(ip, pend_sel, k)
    n_old = 0 if has_bias else pend_n[k]
    n_in = ho * wo if has_bias else npos
    n = 0
    n_new = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = e if has_bias else pos[_u(soff + e)]
        else:  # pending: updated once, unless it got input (then it was updated above)
            q = pend[old + e - n_in]
            if stamp[soff + q] == cur:
                continue
            stamp[soff + q] = cur
        a = _u(aoff + q * co)
        if has_bias:
            for o in range(_u(co)):
                acc[a + o] += bias[_u(boff) + o]
        if pooled:  # (two calls, so that each inlined update knows whether it adds)
            win = tab[_u(t_win + q)]
            # positions outside every window write their spikes to a slot no window uses
            slot = win if win >= 0 else ho * wo - 1
            spiked, moves = _iaf_position(
                co,
                acc,
                a,
                True,
                fp,
                multi,
                to_value,
                has_min,
                v,
                voff + q * co,
                val,
                dst + slot * co,
                True,
                crow,
            )
            if spiked and win >= 0 and stamp[_u(psoff + win)] != cur:
                stamp[_u(psoff + win)] = cur
                pos[_u(psoff + n)] = win
                n += 1
        else:
            spiked, moves = _iaf_position(
                co,
                acc,
                a,
                True,
                fp,
                multi,
                to_value,
                has_min,
                v,
                voff + q * co,
                val,
                dst + q * co,
                False,
                crow,
            )
            n = _list(plist, pdst, n, q, spiked)
        n_new = _list(pend, new, n_new, q, moves and not has_bias)
    _swap_pending(pend_n, pend_sel, k, n_new)
    return n


@_jit
def _iaf(
    ip,
    fp,
    val,
    plist,
    src,
    psrc,
    n_in,
    dst,
    pdst,
    v,
    stamp,
    cur,
    pend,
    pend_n,
    pend_sel,
    k,
    crow,
    zeros,
):
    """IAF layer fed by another operation: update the positions that got input or were
    pending; list those that spiked."""
    soff, voff, chans = ip[5], ip[24], ip[19]
    multi, to_value, has_min = ip[21] == SPIKE_MULTI, ip[22] == RESET_TO_VALUE, ip[23] != 0
    old, new = _pending_lists(ip, pend_sel, k)
    n_old = pend_n[k]
    n_new = 0
    n = 0
    for e in range(n_in + n_old):
        if e < n_in:
            q = plist[psrc + e]
            if n_old:
                stamp[soff + q] = cur
            x, xo = val, src + q * chans
        else:
            q = pend[old + e - n_in]
            if n_in and stamp[soff + q] == cur:
                continue
            x, xo = zeros, 0
        spiked, moves = _iaf_position(
            chans,
            x,
            xo,
            False,
            fp,
            multi,
            to_value,
            has_min,
            v,
            voff + q * chans,
            val,
            dst + q * chans,
            False,
            crow,
        )
        n = _list(plist, pdst, n, q, spiked)
        n_new = _list(pend, new, n_new, q, moves)
    _swap_pending(pend_n, pend_sel, k, n_new)
    return n


@_jit
def _pool(ip, div, val, plist, src, psrc, n_in, dst, pdst, acc, stamp, pos, tab, cur):
    """Average pooling: sum the active input positions into the windows that hold them,
    then divide (:func:`_pool_emit`)."""
    hi, wi, wo, chans = ip[9], ip[10], ip[12], ip[18]
    aoff, soff = ip[4], ip[5]
    t_y, t_x = ip[20], ip[20] + hi * wi
    t_rows = t_x + hi * wi
    t_cols = t_rows + 2 * hi
    npos = 0
    for e in range(n_in):
        r = plist[psrc + e]
        y, x = tab[t_y + r], tab[t_x + r]
        vb = _u(src + r * chans)
        for oy in range(tab[t_rows + 2 * y], tab[t_rows + 2 * y + 1] + 1):
            for ox in range(tab[t_cols + 2 * x], tab[t_cols + 2 * x + 1] + 1):
                q = oy * wo + ox
                a = _u(aoff + q * chans)
                if stamp[soff + q] != cur:
                    stamp[soff + q] = cur
                    pos[soff + npos] = q
                    npos += 1
                for c in range(_u(chans)):
                    acc[a + c] += val[vb + c]
    return _pool_emit(ip, div, acc, aoff, npos, pos, val, plist, dst, pdst)


@_jit
def _pool_emit(ip, div, sums, so, npos, pos, val, plist, dst, pdst):
    """Divide the window sums ``sums[so:]`` of the ``npos`` touched windows, set them back
    to zero, and list the windows with a non-zero output."""
    chans, soff = ip[18], ip[5]
    n = 0
    for e in range(npos):
        q = pos[_u(soff + e)]
        a = _u(so + q * chans)
        ob = _u(dst + q * chans)
        nz = 0
        for c in range(_u(chans)):
            x = sums[a + c] / div
            sums[a + c] = 0.0
            val[ob + c] = x
            nz += x != 0
        n = _list(plist, pdst, n, q, nz != 0)
    return n


@_jit
def _linear(ip, val, plist, src, psrc, n_in, dst, pdst, w, bias, acc, nzc, xs):
    nout, ci, aoff, woff, boff, has_bias = ip[2], ip[18], ip[4], ip[6], ip[7], ip[8] != 0
    if n_in == 0 and not has_bias:
        return 0
    # one sum over the non-zero inputs of all active positions, in their order
    n = 0
    for e in range(n_in):
        r = plist[_u(psrc + e)]  # input index r * ci + c: channel-last for spatial input
        n = _nonzero_terms(val, src + r * ci, ci, r * ci * nout, nout, xs, nzc, n)
    _zero(acc, aoff, nout)
    _accumulate(acc, aoff, nout, xs, nzc, n, w, woff)
    a = _u(aoff)
    nz = 0
    for o in range(_u(nout)):
        x = acc[a + o] + bias[_u(boff) + o]
        val[_u(dst) + o] = x
        nz += x != 0
    if nz == 0:
        return 0
    plist[pdst] = 0
    return 1


@_jit
def _run_samples(
    frames, b0, b1, in_c, in_hw, ip, fp, w, bias, tab, sizes, ck, last_off, counts, snaps
):
    """Simulate samples ``b0 .. b1-1``, writing their rows of ``counts`` and ``snaps``.
    Releases the GIL: threads run disjoint ranges of samples."""
    _, steps, d = frames.shape
    nops = ip.shape[0]
    last_n = snaps.shape[2]
    p_in = in_hw if in_c > 0 else 1
    val = np.zeros(d + sizes[0], np.float32)  # the input's channel vectors, then each op's
    plist = np.empty(p_in + sizes[7], np.int32)  # active positions: input, then each op's
    in_stamp = np.zeros(p_in, np.int64)
    acc = np.zeros(sizes[1], np.float32)
    stamp = np.zeros(sizes[2], np.int64)
    pos = np.zeros(sizes[2], np.int32)
    v = np.zeros(sizes[3], np.float32)
    pend = np.zeros(sizes[5], np.int32)
    nzc = np.zeros(sizes[8], np.int64)  # channels, or weight offsets of the terms of a sum
    xs = np.zeros(sizes[8], np.float32)  # the terms' values
    zeros = np.zeros(sizes[6], np.float32)
    pend_n = np.zeros(nops, np.int64)
    pend_sel = np.zeros(nops, np.int64)
    cur = 0
    for b in range(b0, b1):
        crow = counts[b]
        for k in range(nops):
            typ = ip[k, 0]
            if typ == OP_IAF or typ == OP_CONV_IAF:
                v[ip[k, 24] : ip[k, 24] + ip[k, 2]] = 0
                pend_sel[k] = 0
                pend_n[k] = 0
                if _moves_at_rest(
                    np.float32(0.0),
                    fp[k, 5],
                    ip[k, 22] == RESET_TO_VALUE,
                    fp[k, 2],
                    ip[k, 23] != 0,
                    fp[k, 3],
                ):
                    # the initial state is not at rest: update everything once
                    cap = ip[k, 27]
                    for i in range(cap):
                        pend[ip[k, 26] + i] = i
                    pend_n[k] = cap
        ck_ptr = 0
        for t in range(steps):
            cur += 1
            n = _scan(frames[b, t], in_c, in_hw, val, plist, in_stamp, cur)
            src = 0
            psrc = 0
            for k in range(nops):
                typ = ip[k, 0]
                dst = d + ip[k, 3]
                pdst = p_in + ip[k, 30]
                if typ == OP_CONV_IAF:
                    npos = _scatter_conv(
                        ip[k], val, plist, src, psrc, n, w, acc, stamp, pos, tab, cur, nzc, xs
                    )
                    n = _conv_iaf(
                        ip[k],
                        fp[k],
                        npos,
                        bias,
                        acc,
                        stamp,
                        pos,
                        cur,
                        v,
                        pend,
                        pend_n,
                        pend_sel,
                        k,
                        val,
                        plist,
                        dst,
                        pdst,
                        crow,
                        tab,
                    )
                elif typ == OP_CONV:
                    npos = _scatter_conv(
                        ip[k], val, plist, src, psrc, n, w, acc, stamp, pos, tab, cur, nzc, xs
                    )
                    n = _emit_conv(ip[k], npos, bias, acc, stamp, pos, cur, val, plist, dst, pdst)
                elif typ == OP_POOL and ip[k, 25]:  # the sums were added by the op before
                    n = _pool_emit(ip[k], fp[k, 4], val, src, n, pos, val, plist, dst, pdst)
                elif typ == OP_POOL:
                    n = _pool(
                        ip[k],
                        fp[k, 4],
                        val,
                        plist,
                        src,
                        psrc,
                        n,
                        dst,
                        pdst,
                        acc,
                        stamp,
                        pos,
                        tab,
                        cur,
                    )
                elif typ == OP_LINEAR:
                    n = _linear(ip[k], val, plist, src, psrc, n, dst, pdst, w, bias, acc, nzc, xs)
                else:
                    n = _iaf(
                        ip[k],
                        fp[k],
                        val,
                        plist,
                        src,
                        psrc,
                        n,
                        dst,
                        pdst,
                        v,
                        stamp,
                        cur,
                        pend,
                        pend_n,
                        pend_sel,
                        k,
                        crow,
                        zeros,
                    )
                src = dst
                psrc = pdst
            while ck_ptr < ck.shape[0] and ck[ck_ptr] == t:
                for j in range(last_n):
                    snaps[b, ck_ptr, j] = crow[last_off + j]
                ck_ptr += 1
