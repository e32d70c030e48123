"""The `normalise` stage: data-based weight normalisation (Diehl 2015, Rueckauer 2017).

Layer by layer, the chosen percentile of a weighted layer's output activations (after its
ReLU; the read-out layer's raw output) over a sample of training frames is mapped to 1 by
dividing that layer's weights and bias by it. Later layers are measured on the already
normalised earlier layers, as ``sinabs.utils.normalize_weights`` does, so with
``ignore_zeros: false`` and the same sample the two give the same weights. With
``ignore_zeros: true`` the percentile is taken over non-zero activations only, as the SNN
Toolbox does, which stays finite when a layer is sparse. A layer whose percentile is zero,
negative or not finite keeps its weights and is flagged: no weight is ever infinite or NaN.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikescale.io import write_json
from spikescale.model import load_cnn, save_cnn, weighted_layers
from spikescale.params import Params


def output_layer_names(model: nn.Sequential) -> list[tuple[str, str]]:
    """(weighted layer, layer whose output is measured) pairs: the ReLU after it, if any."""
    names = list(dict(model.named_children()))
    children = dict(model.named_children())
    pairs = []
    for name, _ in weighted_layers(model):
        i = names.index(name)
        follow = names[i + 1] if i + 1 < len(names) else None
        pairs.append((name, follow if follow and isinstance(children[follow], nn.ReLU) else name))
    return pairs


Batches = Callable[[], Iterable[torch.Tensor]]  # a fresh pass over the normalisation frames
IN_MEMORY_VALUES = 64 * 2**20  # activations (float32) kept for an exact np.percentile
HISTOGRAM_BINS = 1 << 16


@torch.no_grad()
def _values(
    model: nn.Sequential, layer: str, batches: Batches, ignore_zeros: bool
) -> Iterator[np.ndarray]:
    """The output values of ``layer``, one array per batch (positive ones only if ignore_zeros)."""
    captured: list[np.ndarray] = []

    def hook(_m, _i, out):
        values = out.detach().cpu().numpy().ravel()
        captured.append(values[values > 0] if ignore_zeros else values)

    handle = dict(model.named_children())[layer].register_forward_hook(hook)
    try:
        for batch in batches():
            model(batch)
            yield captured.pop()
    finally:
        handle.remove()


def _bin(v: np.ndarray, low: float, width: float) -> np.ndarray:
    return np.clip(((v.astype(np.float64) - low) / width).astype(np.int64), 0, HISTOGRAM_BINS - 1)


def percentile(
    model: nn.Sequential,
    layer: str,
    batches: Batches,
    q: float,
    ignore_zeros: bool,
    in_memory: int = IN_MEMORY_VALUES,
) -> tuple[float, int, int]:
    """``np.percentile`` of a layer's activations, in bounded memory.

    Returns (percentile, number of values, number of positive values). Up to ``in_memory``
    values it is exactly ``np.percentile`` over all of them (as sinabs computes it). Beyond,
    the two order statistics around the percentile's position are found by histogram
    passes that keep only the values of the bins that hold them, then interpolated as
    numpy does; the result is the same up to the last bit of the interpolation.
    """
    n, positive, low, high, kept = 0, 0, np.inf, -np.inf, []
    for v in _values(model, layer, batches, ignore_zeros):
        n += len(v)
        positive += int(np.count_nonzero(v > 0))
        if len(v):
            low, high = min(low, float(v.min())), max(high, float(v.max()))
        if kept is not None:
            kept.append(v)
            if n > in_memory:
                kept = None  # too many: fall back to histogram passes
    if n == 0:
        return float("nan"), 0, 0
    if kept is not None:
        return float(np.percentile(np.concatenate(kept), q)), n, positive
    position = (n - 1) * q / 100
    k_lo = int(np.floor(position))
    k_hi = min(k_lo + 1, n - 1)
    # each narrowing keeps the bins [b_lo, b_hi] of a histogram over [low, low + bins*width];
    # a value stays in play if it falls in the kept bins of every narrowing so far
    narrowings: list[tuple[float, float, int, int]] = []
    below = 0  # values ranked below those still in play

    def in_play(v: np.ndarray) -> np.ndarray:
        for lo, w, b0, b1 in narrowings:
            b = _bin(v, lo, w)
            v = v[(b >= b0) & (b <= b1)]
        return v

    while True:
        width = (high - low) / HISTOGRAM_BINS
        if width == 0:  # every value still in play is the same
            v_lo = v_hi = low
            break
        counts = np.zeros(HISTOGRAM_BINS, np.int64)
        for v in _values(model, layer, batches, ignore_zeros):
            counts += np.bincount(_bin(in_play(v), low, width), minlength=HISTOGRAM_BINS)
        cum = below + np.cumsum(counts)
        b_lo, b_hi = (
            int(np.searchsorted(cum, k_lo, "right")),
            int(np.searchsorted(cum, k_hi, "right")),
        )
        start = int(cum[b_lo - 1]) if b_lo else below
        narrowings.append((low, width, b_lo, b_hi))
        below = start
        if cum[b_hi] - start <= in_memory:
            window = np.sort(
                np.concatenate([in_play(v) for v in _values(model, layer, batches, ignore_zeros)])
            )
            v_lo, v_hi = window[k_lo - start], window[k_hi - start]
            break
        low, high = low + b_lo * width, low + (b_hi + 1) * width
    gamma = position - k_lo
    return float(np.percentile(np.array([v_lo, v_hi], dtype=np.float32), 100 * gamma)), n, positive


def normalise(
    cnn: nn.Sequential,
    batches: Batches,
    q: float,
    ignore_zeros: bool,
    in_memory: int = IN_MEMORY_VALUES,
) -> tuple[nn.Sequential, list[dict]]:
    """A normalised copy of ``cnn`` and one row per weighted layer describing its scale."""
    model = copy.deepcopy(cnn).eval()
    children = dict(model.named_children())
    table = []
    for position, (param_name, out_name) in enumerate(output_layer_names(model)):
        level, count, positive = percentile(model, out_name, batches, q, ignore_zeros, in_memory)
        usable = bool(np.isfinite(level) and level > 0)
        if usable:
            for p in children[param_name].parameters():
                p.data *= 1 / level
        table.append(
            {
                "layer": param_name,
                "position": position,
                "kind": type(children[param_name]).__name__,
                "activation_percentile": level if np.isfinite(level) else None,
                "scale": 1 / level if usable else 1.0,
                "values": count,
                "positive_fraction": positive / count if count else None,
                "degenerate": not usable,
            }
        )
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise FloatingPointError(f"normalisation produced a non-finite weight in {name}")
    return model, table


def sample_indices(frames: int, samples: int, seed: int) -> np.ndarray:
    """Which of ``frames`` training frames normalise: ``samples`` drawn without replacement
    by a generator seeded with ``seed`` (the same frames every run), in file order."""
    return np.sort(np.random.default_rng(seed).permutation(frames)[:samples])


def frame_batches(frames: np.ndarray, indices: np.ndarray, batch_size: int) -> Batches:
    """Batches of ``frames[indices]`` as float tensors, read lazily (frames may be a memmap)."""

    def passes() -> Iterator[torch.Tensor]:
        for start in range(0, len(indices), batch_size):
            yield torch.from_numpy(
                np.asarray(frames[indices[start : start + batch_size]], dtype=np.float32)
            )

    return passes


def run_normalise(
    params: Params, cnn_path: str | Path, frames_path: str | Path, out: str | Path, table_out
) -> list[dict]:
    """The stage: normalise the trained CNN (prepared for conversion) on a fixed sample of
    what it was trained on (training frames, or images with ``training.input: images``);
    write the normalised model and the per-layer table; return the table."""
    from spikescale.frames import load_arrays
    from spikescale.network import layer_spec, prepare_for_conversion

    p = params.normalisation
    cnn, arch, _ = load_cnn(cnn_path)
    cnn = prepare_for_conversion(cnn, params.conversion.max_pool)
    if params.training.input == "images":
        from spikescale.images import training_images

        frames = training_images(params.dataset)["train"][0]
    else:
        frames = load_arrays(frames_path)["frames"]
    pick = sample_indices(len(frames), p.samples, p.seed)
    model, table = normalise(
        cnn, frame_batches(frames, pick, p.batch_size), p.percentile, p.ignore_zeros
    )
    save_cnn(model, arch, out, layers=layer_spec(model))
    summary = {
        "percentile": p.percentile,
        "ignore_zeros": p.ignore_zeros,
        "samples": len(pick),
        "layers": table,
    }
    write_json(summary, table_out)
    return table
