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

import numpy as np
import torch
from torch import nn

from spikescale.model import weighted_layers


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


@torch.no_grad()
def activations(model: nn.Sequential, layer: str, frames: torch.Tensor, batch_size: int, ignore_zeros: bool) -> np.ndarray:
    """All output values of ``layer`` over ``frames`` (only the positive ones if ignore_zeros)."""
    captured: list[np.ndarray] = []

    def hook(_m, _i, out):
        values = out.detach().cpu().numpy().ravel()
        captured.append(values[values > 0] if ignore_zeros else values)

    handle = dict(model.named_children())[layer].register_forward_hook(hook)
    try:
        for start in range(0, len(frames), batch_size):
            model(frames[start : start + batch_size])
    finally:
        handle.remove()
    return np.concatenate(captured) if captured else np.zeros(0, np.float32)


def normalise(
    cnn: nn.Sequential, frames: torch.Tensor, percentile: float, ignore_zeros: bool, batch_size: int
) -> tuple[nn.Sequential, list[dict]]:
    """A normalised copy of ``cnn`` and one row per weighted layer describing its scale."""
    model = copy.deepcopy(cnn).eval()
    children = dict(model.named_children())
    table = []
    for position, (param_name, out_name) in enumerate(output_layer_names(model)):
        values = activations(model, out_name, frames, batch_size, ignore_zeros)
        level = float(np.percentile(values, percentile)) if len(values) else float("nan")
        usable = np.isfinite(level) and level > 0
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
                "nonzero_fraction": float(np.mean(values > 0)) if len(values) and not ignore_zeros else None,
                "degenerate": not usable,
            }
        )
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise FloatingPointError(f"normalisation produced a non-finite weight in {name}")
    return model, table
