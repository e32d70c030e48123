"""The fast backend off the CPU (e.g. CUDA): the model's own torch operators on whole
chunks of time steps (bounded memory) and the IAF update written out as sinabs writes it,
without autograd machinery. On the CPU its results are identical to sinabs's."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spikescale.simulate.graph import RESET_SUBTRACT, SPIKE_MULTI, Op, parse_model
from spikescale.simulate.result import SimulationResult, check_raster, checkpoint_steps


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
    check_raster(raster)
    dev = torch.device(device) if device is not None else raster.device
    batch, steps = int(raster.shape[0]), int(raster.shape[1])
    ops = parse_model(model, tuple(raster.shape[2:]))
    ck = torch.as_tensor(checkpoint_steps(checkpoints, steps), dtype=torch.long, device=dev)
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


def _iaf_chunk(op: Op, x: torch.Tensor, state: list, k: int, consts) -> torch.Tensor:
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
