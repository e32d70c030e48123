"""Simulating a converted SNN on binned event rasters.

``simulate`` takes the spiking ``nn.Sequential`` that :mod:`spikescale.convert` builds
(weighted layers, pooling and flatten, each weighted layer followed by a sinabs
``IAFSqueeze``) and a raster of shape ``(batch, time, channels, height, width)``, and
returns spike counts per sample and neuron for every spiking layer, and the output
layer's cumulative counts at chosen time steps (:class:`SimulationResult`).

Two backends:

``"sinabs"``
    The reference: sinabs's own layers, dense over every time step (:mod:`.reference`).
``"fast"``
    The same arithmetic, event-driven on the CPU (:mod:`.event_driven`, a numba kernel);
    elsewhere, e.g. CUDA, dense torch operators on chunks of time steps (:mod:`.dense`).
    Both start from the model graph of :mod:`.graph`: the layers checked and flattened
    into operations with their shapes.

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
with ``count_include_pad=False`` and ``ceil_mode`` are refused). No multiply-add is fused,
so the results do not depend on whether the CPU has FMA.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikescale.simulate.dense import simulate_fast_torch
from spikescale.simulate.event_driven import simulate_fast_cpu
from spikescale.simulate.graph import parse_model
from spikescale.simulate.reference import simulate_sinabs, spiking_layers
from spikescale.simulate.result import SimulationResult

__all__ = [
    "BACKENDS",
    "SimulationResult",
    "parse_model",
    "simulate",
    "simulate_fast_cpu",
    "simulate_fast_torch",
    "simulate_sinabs",
    "spiking_layers",
]

BACKENDS = ("sinabs", "fast")


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
