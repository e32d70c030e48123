"""The `export` stage: the recommended, scaled SNN as a NIR graph for other simulators and chips.

sinabs's ``to_nir`` knows sum pooling but not average pooling, so each ``AvgPool2d(k)`` is
written as ``SumPool2d(k)`` with the next weighted layer's weights divided by k*k: the same
network, since pooling and the weighted layer are both linear.
"""

from __future__ import annotations

import copy
import math

import nir
import numpy as np
import sinabs
import sinabs.layers as sl
import torch
from torch import nn

from spikescale.io import atomic_path


def with_sum_pooling(snn: nn.Sequential) -> nn.Sequential:
    """An equivalent SNN whose average pools are sum pools (weights after them rescaled)."""
    layers = [copy.deepcopy(m) for m in snn]
    pending = 1.0
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.AvgPool2d):
            k = (
                layer.kernel_size
                if isinstance(layer.kernel_size, tuple)
                else (layer.kernel_size,) * 2
            )
            stride = layer.stride if layer.stride is not None else k
            if layer.padding not in (0, (0, 0)) or tuple(k) != (
                stride if isinstance(stride, tuple) else (stride,) * 2
            ):
                raise ValueError(
                    f"layer {i}: only non-overlapping AvgPool2d without padding can be exported"
                )
            layers[i] = sl.SumPool2d(kernel_size=tuple(k))
            pending *= math.prod(k)
        elif isinstance(layer, (nn.Conv2d, nn.Linear)) and pending != 1.0:
            with torch.no_grad():
                layer.weight.div_(pending)
            pending = 1.0
    if pending != 1.0:
        raise ValueError(
            "an average pool at the end of the network has no weighted layer to fold into"
        )
    return nn.Sequential(*layers)


def to_nir_graph(snn: nn.Sequential, input_shape: tuple[int, ...]) -> nir.NIRGraph:
    model = with_sum_pooling(snn)
    sinabs.reset_states(model)
    graph = sinabs.to_nir(model, torch.zeros((1, *input_shape)))
    # sinabs leaves the input shapes of convolutions and flatten empty, which nir.write
    # cannot store: fill them in from a forward pass
    x = torch.zeros((1, *input_shape))
    with torch.no_grad():
        for name, layer in model.named_children():
            node = graph.nodes[name]
            if isinstance(node, nir.Conv2d) and node.input_shape is None:
                node.input_shape = np.array(x.shape[-2:])
            x_in = x
            x = layer(x)
            if isinstance(node, nir.Flatten):
                node.input_type = {"input": np.array(x_in.shape[1:])}
                node.output_type = {"output": np.array(x.shape[1:])}
    sinabs.reset_states(model)
    # sinabs collects the edges in a set, whose order changes from one process to the next:
    # list them in the network's order so that equal networks give equal files
    order = {name: i for i, name in enumerate(graph.nodes)}  # input, the layers, output
    graph.edges = sorted(graph.edges, key=lambda edge: (order[edge[0]], order[edge[1]]))
    return graph


def write_nir(graph: nir.NIRGraph, path) -> None:
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)


def export_factor(recommendation: dict) -> tuple[float, str]:
    """The factor to export and why: the recommended one, or the best one where the
    conversion failed (so that the failed network can still be inspected elsewhere)."""
    if recommendation.get("conversion_failed"):
        factor = recommendation["best_factor"]
        return factor, (
            f"no factor is recommended (the conversion failed); exported the best factor "
            f"{factor:g} ({100 * recommendation['best_accuracy']:.1f}%) for inspection"
        )
    factor = recommendation["recommended_factor"]
    return factor, f"exported the recommended factor {factor:g}"


def run_export(snn_path, recommendation_path, out) -> str:
    """Write the SNN, first layer scaled by :func:`export_factor`'s factor, as NIR."""
    from spikescale.errors import require
    from spikescale.io import read_json
    from spikescale.model import scale_first_layer
    from spikescale.results import load_snn

    require(snn_path, recommendation_path)
    factor, note = export_factor(read_json(recommendation_path))
    _, arch, snn = load_snn(snn_path)
    write_nir(to_nir_graph(scale_first_layer(snn, factor), arch.input_shape), out)
    return note
