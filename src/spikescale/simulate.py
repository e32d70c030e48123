"""Simulating a converted SNN on binned event rasters.

``simulate`` takes the spiking ``nn.Sequential`` that :mod:`spikescale.convert` builds
(weighted layers, pooling and flatten, each weighted layer followed by a sinabs
``IAFSqueeze``) and a raster of shape ``(batch, time, channels, height, width)``, and
returns spike counts per sample and neuron for every spiking layer, and the output
layer's cumulative counts at chosen time steps. The sinabs backend is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sinabs
import torch
from torch import nn

from sinabs.layers.reshape import SqueezeMixin


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
) -> SimulationResult:
    """Run ``model`` on ``raster`` (B, T, C, H, W) and count spikes.

    ``checkpoints`` are time-step indices in ``[0, T)`` at which the output layer's
    cumulative spike counts are read out.
    """
    if backend == "sinabs":
        return simulate_sinabs(model, raster, checkpoints)
    raise ValueError(f"evaluation.backend: unknown backend {backend!r}, expected 'sinabs'")


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
    recorded: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: recorded.append(out))
        for layer in spiking_layers(model)
    ]
    try:
        model(raster.flatten(0, 1))
    finally:
        for h in hooks:
            h.remove()
    sinabs.reset_states(model)
    counts = []
    for out in recorded:
        per_step = out.reshape(batch, steps, *out.shape[1:])
        counts.append(per_step.sum(1).round().to(torch.int32).cpu().numpy())
    output = recorded[-1].reshape(batch, steps, -1)
    cumulative = output.cumsum(1)[:, torch.as_tensor(checkpoints, dtype=torch.long)]
    return SimulationResult(counts, cumulative.round().to(torch.int32).cpu().numpy())
