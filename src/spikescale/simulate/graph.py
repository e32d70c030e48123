"""The model graph: a converted SNN checked layer by layer and flattened into a list of
operations with their shapes, the one description both fast paths (dense torch and
event-driven) start from. Also the convolution and pooling geometry they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sinabs
import torch
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from torch import nn

from spikescale.errors import InputError

SPIKE_MULTI, SPIKE_SINGLE = 0, 1
RESET_SUBTRACT, RESET_TO_VALUE = 0, 1


@dataclass
class Op:
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


def pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    """Zero padding before the first row and column (``"same"``: torch pads total // 2)."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0, 0
        kh, kw = pair(m.kernel_size)
        dh, dw = pair(m.dilation)
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return pair(m.padding)


def conv_out_hw(m: nn.Conv2d, hw: tuple[int, ...]) -> tuple[int, int]:
    kh, kw = pair(m.kernel_size)
    sh, sw = pair(m.stride)
    dh, dw = pair(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "same":
            return int(hw[0]), int(hw[1])
        tot_h = tot_w = 0
    else:
        tot_h, tot_w = 2 * pair(m.padding)[0], 2 * pair(m.padding)[1]
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


def parse_model(model: nn.Module, input_shape: tuple[int, ...]) -> list[Op]:
    """Check every layer of ``model`` and return its operations with their shapes.

    Raises ``ValueError`` naming the first layer the fast backend cannot simulate.
    """
    ops: list[Op] = []
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
            op = Op("iaf", m, shape, shape, layout, threshold=thr, spike_mode=spike_mode)
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
            out = (m.out_channels, *conv_out_hw(m, shape[1:]))
            if min(out) < 1:
                raise _unsupported(name, m, f"input of shape {shape} is too small")
            ops.append(Op("conv", m, shape, out, shape))
            shape = layout = out
        elif isinstance(m, nn.AvgPool2d):
            if len(shape) != 3:
                raise _unsupported(name, m, f"input of shape {shape}")
            if m.ceil_mode:
                raise _unsupported(name, m, "ceil_mode is not supported")
            (ph, pw) = pair(m.padding)
            if (ph, pw) != (0, 0) and not m.count_include_pad and not m.divisor_override:
                # the divisor would change from window to window at the borders
                raise _unsupported(name, m, "padding with count_include_pad=False")
            (kh, kw), (sh, sw) = pair(m.kernel_size), pair(m.stride or m.kernel_size)
            out = (
                shape[0],
                (shape[1] + 2 * ph - kh) // sh + 1,
                (shape[2] + 2 * pw - kw) // sw + 1,
            )
            if min(out) < 1:
                raise _unsupported(name, m, f"input of shape {shape} is too small")
            ops.append(Op("pool", m, shape, out, shape))
            shape = layout = out
        elif isinstance(m, nn.Linear):
            if len(shape) != 1 or shape[0] != m.in_features:
                raise _unsupported(name, m, f"input of shape {shape}; flatten first")
            ops.append(Op("linear", m, shape, (m.out_features,), layout))
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
