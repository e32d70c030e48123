"""The `export` stage: the recommended, scaled SNN as a NIR graph for other simulators and chips.

sinabs's ``to_nir`` knows sum pooling but not average pooling, so each ``AvgPool2d`` is
written as a ``SumPool2d`` of the same window, stride and padding, with the weighted layer
it feeds divided by the pool's divisor (the window's area, or its ``divisor_override``):
the same network, since pooling and the weighted layer are both linear. Windows may tile,
overlap or leave gaps; padding counts as zeros, as in NIR's sum pooling and torch's default
(``count_include_pad=False`` would change the divisor at the borders and is refused, as is
``ceil_mode``). A pool between a weighted layer and its neurons is folded into that layer
instead (weights and bias). Division by a power of two is exact in float32; by another
divisor (a 3x3 window) the exported weights are rounded once.

Convolutions keep their stride, dilation, groups and bias; ``"same"`` / ``"valid"`` padding
is written as numbers (NIR has no asymmetric padding: an even kernel with ``"same"`` padding
is refused).

Beside it, :func:`chip_nir_graph` writes the same factor's network as Speck / DYNAP-CNN holds
it (:func:`spikescale.chip.discretised_variant`: sum pooling, 8-bit integer weights and
biases, 16-bit integer thresholds): what would be flashed. Each ``IF`` node's metadata
holds its layer's name, integer threshold, integer lower membrane bound (``min_v_mem``,
the chip's ``threshold_low``, which NIR's ``IF`` has no field for) and discretisation
scale; the graph's metadata the target and the factor.
"""

from __future__ import annotations

import copy

import nir
import numpy as np
import sinabs
import sinabs.layers as sl
import torch
from sinabs.layers import StatefulLayer
from sinabs.layers.reshape import SqueezeMixin
from torch import nn
from torch.nn import functional as F

from spikescale.io import atomic_path


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PaddedSumPool2d(sl.SumPool2d):
    """sinabs's sum pooling with zero padding on both sides (NIR's ``SumPool2d`` has it;
    sinabs's has not)."""

    def __init__(self, kernel_size, stride, padding: tuple[int, int]):
        super().__init__(kernel_size=kernel_size, stride=stride)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        return super().forward(F.pad(x, (pw, pw, ph, ph)))


def _sum_pool(index: int, pool: nn.AvgPool2d) -> tuple[sl.SumPool2d, float]:
    """The sum pool of ``pool``'s windows and the divisor that it leaves out."""
    where = f"export: layer {index} ({pool!r})"
    if pool.ceil_mode:
        raise ValueError(f"{where}: ceil_mode pooling cannot be exported; use ceil_mode=False")
    kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
    stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    if padding != (0, 0) and not pool.count_include_pad and not pool.divisor_override:
        raise ValueError(
            f"{where}: padding with count_include_pad=False divides border windows by "
            "fewer cells, which a sum pool cannot express; use count_include_pad=True"
        )
    divisor = float(pool.divisor_override or kernel[0] * kernel[1])
    if padding == (0, 0):
        return sl.SumPool2d(kernel_size=kernel, stride=stride), divisor
    return PaddedSumPool2d(kernel, stride, padding), divisor


def _explicit_padding(index: int, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` with ``"same"`` / ``"valid"`` padding written as numbers."""
    if not isinstance(conv.padding, str):
        return conv
    if conv.padding == "valid":
        conv.padding = (0, 0)
        return conv
    totals = [d * (k - 1) for d, k in zip(_pair(conv.dilation), _pair(conv.kernel_size))]
    if any(t % 2 for t in totals):
        raise ValueError(
            f"export: layer {index} ({conv!r}): padding='same' with an even kernel pads one "
            "side more than the other, which NIR cannot express; pad explicitly"
        )
    conv.padding = (totals[0] // 2, totals[1] // 2)
    conv._reversed_padding_repeated_twice = [p for p in reversed(conv.padding) for _ in (0, 1)]
    return conv


def with_sum_pooling(snn: nn.Sequential) -> nn.Sequential:
    """An equivalent SNN whose average pools are sum pools (weights next to them rescaled)."""
    layers = [copy.deepcopy(m) for m in snn]
    pending, pending_at = 1.0, -1  # divisor still to fold in, and the pool that left it
    last_weighted, neurons_since = None, True  # the weighted layer and whether IAF followed
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.AvgPool2d):
            layers[i], divisor = _sum_pool(i, layer)
            if last_weighted is not None and not neurons_since:
                # pooling of currents, before the neurons: fold into the layer before
                with torch.no_grad():
                    last_weighted.weight.div_(divisor)
                    if last_weighted.bias is not None:
                        last_weighted.bias.div_(divisor)
            else:
                pending, pending_at = pending * divisor, i
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            if isinstance(layer, nn.Conv2d):
                layers[i] = layer = _explicit_padding(i, layer)
            if pending != 1.0:
                with torch.no_grad():
                    layer.weight.div_(pending)
                pending = 1.0
            last_weighted, neurons_since = layer, False
        elif isinstance(layer, StatefulLayer):
            if pending != 1.0:
                raise ValueError(
                    f"export: the average pool at layer {pending_at} feeds the spiking layer "
                    f"{i} before any weighted layer; it cannot be folded into weights"
                )
            neurons_since = True
    if pending != 1.0:
        raise ValueError(
            f"export: the average pool at layer {pending_at} at the end of the network has "
            "no weighted layer to fold into"
        )
    return nn.Sequential(*layers)


def to_nir_graph(snn: nn.Sequential, input_shape: tuple[int, ...]) -> nir.NIRGraph:
    model = with_sum_pooling(snn)
    for layer in model.modules():  # one sample of one step, whatever a simulation left set
        if isinstance(layer, SqueezeMixin):
            layer.batch_size, layer.num_timesteps = -1, 1
    sinabs.reset_states(model)
    graph = sinabs.to_nir(model, torch.zeros((1, *input_shape)))
    # sinabs leaves the input shapes of convolutions and flatten empty, which nir.write
    # cannot store, and writes every sum pool unpadded: fill them in from a forward pass
    x = torch.zeros((1, *input_shape))
    with torch.no_grad():
        for name, layer in model.named_children():
            node = graph.nodes[name]
            if isinstance(node, nir.Conv2d) and node.input_shape is None:
                node.input_shape = np.array(x.shape[-2:])
            if isinstance(layer, PaddedSumPool2d):
                node.padding = np.array(layer.padding)
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


CHIP_TARGET = "speck"


def chip_nir_graph(
    snn: nn.Sequential, input_shape: tuple[int, ...], factor: float, target: str = CHIP_TARGET
) -> nir.NIRGraph:
    """The unscaled ``snn`` at ``factor`` as the chip holds it (the factor first, then
    discretisation), as NIR, each ``IF`` node annotated with what discretisation made of
    its layer. ``sinabs.from_nir`` reads it back; it gives each ``IAF`` the lower bound
    ``-threshold``, which is the chip's where the conversion used ``min_v_mem`` =
    ``-threshold`` (the default: -1 and 1); otherwise take ``min_v_mem`` from the metadata.
    """
    from spikescale import chip

    variant = chip.discretised_variant(snn, factor)
    graph = to_nir_graph(variant.snn, input_shape)
    layers = iter(variant.layers)
    record = None
    for name, module in variant.snn.named_children():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            record = next(layers)
        elif isinstance(module, StatefulLayer) and record is not None:
            graph.nodes[name].metadata = {
                "layer": record.name,
                "threshold": record.threshold,
                "min_v_mem": record.min_v_mem,
                "discretisation_scale": record.scale,
            }
            record = None
    graph.metadata = {
        "target": target,
        "factor": float(factor),
        "weight_bits": chip.WEIGHT_BITS,
        "state_bits": chip.STATE_BITS,
    }
    return graph


def run_export(snn_path, recommendation_path, out, chip_out=None) -> str:
    """Write the SNN, first layer scaled by :func:`export_factor`'s factor, as NIR, and with
    ``chip_out`` the same factor's chip-discretised network (:func:`chip_nir_graph`);
    return what was written, a line a file.

    With ``hardware.target`` set, the recommendation (so the factor) is the chip's: among
    the factors whose discretised network fits the chip within its rate limit. Without
    it the factor is the float SNN's, and its discretised twin was not evaluated: the
    note says so."""
    from spikescale.errors import require
    from spikescale.io import read_json
    from spikescale.model import scale_first_layer
    from spikescale.results import load_snn

    require(snn_path, recommendation_path)
    recommendation = read_json(recommendation_path)
    factor, note = export_factor(recommendation)
    _, arch, snn = load_snn(snn_path)
    write_nir(to_nir_graph(scale_first_layer(snn, factor), arch.input_shape), out)
    note = f"{note}: {out} (NIR)"
    if chip_out is not None:
        target = recommendation.get("variant")
        write_nir(chip_nir_graph(snn, arch.input_shape, factor, target or CHIP_TARGET), chip_out)
        if target is None:
            note += (
                f"\n{chip_out}: its {CHIP_TARGET}-discretised twin, not evaluated as such "
                "(hardware.target: speck evaluates every factor's and recommends among those "
                "that fit)"
            )
        else:
            note += f"\n{chip_out}: the same network discretised for {target}, as evaluated"
    return note
