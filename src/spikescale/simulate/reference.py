"""The reference backend: sinabs's own layers, dense over every time step."""

from __future__ import annotations

import numpy as np
import sinabs
import torch
from sinabs.layers.reshape import SqueezeMixin
from torch import nn

from spikescale.simulate.result import SimulationResult


def spiking_layers(model: nn.Sequential) -> list[nn.Module]:
    return [m for m in model if isinstance(m, sinabs.layers.StatefulLayer)]


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
