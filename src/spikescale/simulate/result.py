"""What a simulation returns, and the checks of its inputs that every backend shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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


def checkpoint_steps(checkpoints: np.ndarray, steps: int) -> np.ndarray:
    ck = np.asarray(checkpoints, dtype=np.int64).reshape(-1)
    if ck.size and (ck.min() < -steps or ck.max() >= steps):
        raise ValueError(
            f"checkpoints must be time-step indices in [0, {steps}), got {ck.min()}..{ck.max()}"
        )
    return np.where(ck < 0, ck + steps, ck)


def check_raster(raster: torch.Tensor) -> None:
    if raster.dim() < 3:
        raise ValueError(f"raster must have shape (batch, time, *input), got {tuple(raster.shape)}")
