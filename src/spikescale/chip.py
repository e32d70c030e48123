"""What a converted SNN becomes on SynSense's Speck / DYNAP-CNN, and whether it fits.

Pure functions over the spiking ``nn.Sequential`` that :func:`spikescale.model.to_snn`
makes (Conv2d / AvgPool2d / Flatten / Linear, each weighted layer followed by a sinabs
``IAFSqueeze``):

* :func:`discretise`: the network as the chip holds it. Average pooling becomes sum
  pooling with the next weights divided (:func:`spikescale.export.with_sum_pooling`), then
  each weighted layer and its neurons get one scale, chosen from the largest weight, bias
  and threshold so that weights and biases fit 8 bits and thresholds 16 bits, and are
  rounded: the arithmetic of sinabs's ``backend/dynapcnn/discretize.py``, which the tests
  hold this equal to. The result has the same module types (sum pooling is an
  ``AvgPool2d`` with ``divisor_override=1``), integer values stored as floats, so both
  simulation backends run it.
* :func:`discretised_variant`: the first-layer factor applied first, then discretisation.
* :func:`chip_mapping`: per layer, the kernel, neuron and bias memory it needs against a
  core's limits, the other rules a core imposes, and whether all layers map onto the nine
  cores at once; each problem names its layer and why.
* :func:`synops_rates`: the mean and peak synaptic operations per second each core would
  have to carry, against a per-core limit.

Nothing here imports ``sinabs.backend.dynapcnn``: that package imports ``samna``, and
PyPI's ``samna`` is a stub whose import runs ``pip install`` against another index. The
chip's numbers are restated below, each with the sinabs 3.1.3 file it comes from.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sinabs.layers as sl
import torch
from torch import nn

from spikescale.export import with_sum_pooling
from spikescale.model import scale_first_layer

# --------------------------------------------------------------------------------------
# The chip's numbers
# --------------------------------------------------------------------------------------

# sinabs/backend/dynapcnn/discretize.py: DYNAPCNN_WEIGHT_PRECISION_BITS, ..._STATE_...
WEIGHT_BITS = 8  # weights and biases
STATE_BITS = 16  # thresholds and membrane potentials


@dataclass(frozen=True)
class CoreLimits:
    """Memory of one core, in entries (kernel: weights, neuron: states, bias: biases)."""

    kernel_memory: int
    neuron_memory: int
    bias_memory: int


_KI = 1024
# sinabs/backend/dynapcnn/chips/dynapcnn.py, DynapcnnConfigBuilder.get_constraints()
# (the same table is in sinabs/validate_memory_speck.py, verify_combined_memories)
SPECK_CORES: tuple[CoreLimits, ...] = tuple(
    CoreLimits(kernel * _KI, neuron * _KI, 1024)
    for kernel, neuron in [
        (16, 64),
        (16, 64),
        (16, 64),
        (32, 32),
        (32, 32),
        (64, 16),
        (64, 16),
        (16, 16),
        (16, 16),
    ]
)

# sinabs/validate_memory_speck.py (ValidateMapping.__init__, check_stride) and sinabs's
# docs/speck/overview.md ("DYNAP-CNN Layer, Feature"), which also states the sizes and the
# padding; the samna Speck 2b / 2e pages list the same figures
MAX_FEATURES = 1024
MAX_KERNEL_SIZE = 16
STRIDES = (1, 2, 4, 8)
POOLING_SIZES = (1, 2, 4)  # sum pooling 1:1, 1:2, 1:4, square
MAX_PADDING = 7
MAX_INPUT_SIZE = 128  # height and width of a core's input
MAX_OUTPUT_SIZE = 64  # height and width of a core's neuron map

# Each core can carry only so many synaptic operations per second; past that "the entire
# chip stalls" (sinabs docs/speck/faqs/tips_for_training.md, "SynOps/s Bandwidth
# Constrains"). Neither the installed sinabs 3.1.3 sources nor its Speck documentation
# state the number, so it is a parameter, hardware.synops_per_second_per_core, whose
# default (1e8) is a placeholder of plausible order of magnitude, NOT a SynSense figure.


# --------------------------------------------------------------------------------------
# Discretisation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerDiscretisation:
    """How one weighted layer and its neurons were discretised.

    ``scale`` multiplies weights, bias, threshold and ``min_v_mem`` before rounding;
    ``threshold`` and ``min_v_mem`` are the integers the chip holds (``min_v_mem`` is the
    chip's ``threshold_low``); ``weight_range`` and ``bias_range`` the integer extremes.
    """

    name: str
    scale: float
    threshold: int
    min_v_mem: int
    weight_range: tuple[int, int]
    bias_range: tuple[int, int]

    @property
    def weight_above_threshold(self) -> bool:
        """One input event can lift a neuron past its threshold more than once over. The
        chip then emits a single spike (sinabs docs/speck/faqs/tips_for_training.md,
        "Weight Clipping": keep the largest weight below the threshold), where a
        simulated ``MultiSpike`` neuron emits several: the simulation overstates the
        chip's spikes. A large first-layer factor brings the first layer here."""
        return self.weight_range[1] > self.threshold


@dataclass(frozen=True)
class DiscretisedSNN:
    """The network as the chip holds it, and what discretisation did to each layer."""

    snn: nn.Sequential
    layers: tuple[LayerDiscretisation, ...]


def _discretisation_scale(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The factor that brings ``values`` to the signed ``bits``-bit range, as sinabs's
    ``determine_discretization_scale`` computes it (float32, the same operations, so the
    same bits): from the largest value, or from the most negative one when that is
    larger in magnitude than the one more integer on the negative side allows."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    smallest, largest = torch.min(values), torch.max(values)
    if abs(smallest) <= abs(largest) * abs(low / high):
        return abs(high / largest)
    return abs(low / smallest)


def _layer_names(snn: nn.Sequential) -> list[str]:
    """conv1, conv2, ..., fc1: the names ``spikescale.evaluate.layer_names`` gives."""
    names, counts = [], {"conv": 0, "fc": 0}
    for layer in snn:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            kind = "conv" if isinstance(layer, nn.Conv2d) else "fc"
            counts[kind] += 1
            names.append(f"{kind}{counts[kind]}")
    return names


def _spiking_layer_after(snn: nn.Sequential, index: int, name: str) -> sl.IAF:
    """The IAF layer right after the weighted layer at ``index`` (Identity/Dropout between
    are allowed), or a clear error."""
    for module in list(snn)[index + 1 :]:
        if isinstance(module, (nn.Identity, nn.Dropout)):
            continue
        if isinstance(module, sl.IAF):
            return module
        break
    raise ValueError(
        f"chip: weighted layer {name} (module {index}) must be followed by a sinabs IAF "
        f"layer, as spikescale.model.to_snn builds it; the chip has no other neuron"
    )


def _as_sum_pooling(snn: nn.Sequential) -> nn.Sequential:
    """The SNN with average pools as sum pools and the weights after them divided.

    ``with_sum_pooling`` writes sinabs ``SumPool2d``; each becomes an ``AvgPool2d`` with
    ``divisor_override=1`` (the same sum), a type that both simulation backends run."""
    summed = with_sum_pooling(snn)
    layers = []
    for module in summed:
        if isinstance(module, sl.SumPool2d):
            module = nn.AvgPool2d(module.kernel_size, stride=module.kernel_size, divisor_override=1)
        layers.append(module)
    return nn.Sequential(*layers)


@torch.no_grad()
def discretise(snn: nn.Sequential) -> DiscretisedSNN:
    """The SNN as Speck / DYNAP-CNN holds it: sum pooling, then 8-bit weights and biases
    and 16-bit thresholds, one scale per weighted layer and its neurons.

    The scale is the smallest of those that bring the weights, the biases and the pair
    (``min_v_mem``, threshold) into range (and the membrane state, when the layer holds
    one), exactly as sinabs's ``discretize_conv_spike_``; a neuron without ``min_v_mem``
    counts as having the chip's -2**15. Beware, as in sinabs: that bound enters the scale
    before rounding, so the scale is at most 1 and weights below 0.5 round to 0 (a network
    converted with ``min_v_mem: null`` goes silent; :func:`chip_mapping` says so).
    ``snn`` is not changed.
    """
    for index, module in enumerate(snn):
        for name, tensor in module.named_parameters(recurse=False):
            if not torch.isfinite(tensor).all():
                raise ValueError(
                    f"chip: module {index} ({type(module).__name__}) has a non-finite "
                    f"{name}; expected finite weights, biases and thresholds"
                )
    held = _as_sum_pooling(snn)  # copies every module
    names = _layer_names(held)
    records: list[LayerDiscretisation] = []
    weighted = [i for i, m in enumerate(held) if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, index in zip(names, weighted):
        layer = held[index]
        neurons = _spiking_layer_after(held, index, name)
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
        min_v_mem = (
            torch.as_tensor(-(2 ** (STATE_BITS - 1)), dtype=torch.float32)
            if neurons.min_v_mem is None
            else neurons.min_v_mem.detach().to(torch.float32).reshape(())
        )
        threshold = neurons.spike_threshold.detach().to(torch.float32).reshape(())
        bounds = torch.stack([min_v_mem, threshold])
        scales = [
            _discretisation_scale(layer.weight, WEIGHT_BITS),
            _discretisation_scale(bias, WEIGHT_BITS),
            _discretisation_scale(bounds, STATE_BITS),
        ]
        has_state = neurons.is_state_initialised()
        if has_state:
            scales.append(_discretisation_scale(neurons.v_mem, STATE_BITS))
        scale = min(scales)
        if has_state:
            neurons.v_mem.data = torch.round(neurons.v_mem * scale).float()
        layer.weight.data = torch.round(layer.weight * scale).float()
        if layer.bias is not None:
            layer.bias.data = torch.round(layer.bias * scale).float()
        low, high = torch.round(bounds * scale)
        neurons.min_v_mem = nn.Parameter(low, requires_grad=False)
        neurons.spike_threshold = nn.Parameter(high, requires_grad=False)
        int_bias = layer.bias if layer.bias is not None else torch.zeros(1)
        records.append(
            LayerDiscretisation(
                name=name,
                scale=float(scale),
                threshold=int(high),
                min_v_mem=int(low),
                weight_range=(int(layer.weight.min()), int(layer.weight.max())),
                bias_range=(int(int_bias.min()), int(int_bias.max())),
            )
        )
    held.eval()
    return DiscretisedSNN(snn=held, layers=tuple(records))


def discretised_variant(snn: nn.Sequential, factor: float) -> DiscretisedSNN:
    """The chip's network for one first-layer factor: the factor first (weights and bias
    of the first weighted layer), then :func:`discretise`. A larger factor raises the
    first layer's largest weight, so its scale, and with it the integer threshold, falls:
    the threshold becomes coarser."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"chip: factor must be a finite number > 0, got {factor!r}")
    return discretise(scale_first_layer(snn, factor))


# --------------------------------------------------------------------------------------
# Does it fit
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerResources:
    """One weighted layer as a chip core sees it (a Linear is a convolution whose kernel
    covers its whole input).

    Memory in entries, by sinabs's formulas (``DynapcnnLayer.memory_summary`` in
    ``backend/dynapcnn/dynapcnn_layer.py``): kernel ``c * 2^(ceil log2(kh*kw) + ceil
    log2 f)``, neuron ``f * 2^(ceil log2 h + ceil log2 w)``, bias ``f`` when the layer has
    one. ``pooling`` is the sum pooling the core applies to its output (1: none).
    ``fitting_cores`` are the cores whose memory holds it; ``problems`` say why it cannot
    run on any core, whatever its memory; ``leak_enabled``: a non-zero bias, which the chip
    adds through its leak, at every leak clock tick rather than once per input.
    """

    name: str
    input_shape: tuple[int, int, int]
    kernel_shape: tuple[int, int, int, int]
    neuron_shape: tuple[int, int, int]
    pooling: int
    kernel_memory: int
    neuron_memory: int
    bias_memory: int
    leak_enabled: bool
    fitting_cores: tuple[int, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ChipMapping:
    """Whether the network maps onto the chip, layer by layer and as a whole.

    ``cores[i]`` is the core of layer i in one valid assignment (None when there is none);
    ``problems`` lists every reason, each naming its layer; ``fits`` when there is none.
    """

    layers: tuple[LayerResources, ...]
    cores: tuple[int | None, ...]
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def leak_enabled(self) -> bool:
        return any(layer.leak_enabled for layer in self.layers)


def _ceil_log2(n: int) -> int:
    return (int(n) - 1).bit_length()


def kernel_memory(in_channels: int, out_channels: int, kernel_hw: tuple[int, int]) -> int:
    """Kernel memory entries of a convolution on a core (sinabs's address encoding)."""
    return in_channels * 2 ** (_ceil_log2(kernel_hw[0] * kernel_hw[1]) + _ceil_log2(out_channels))


def neuron_memory(features: int, height: int, width: int) -> int:
    """Neuron memory entries of a core's neuron map (sinabs's address encoding)."""
    return features * 2 ** (_ceil_log2(height) + _ceil_log2(width))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pooling_size(pools: list[nn.Module], where: str, problems: list[str]) -> int:
    """The sum pooling of consecutive pools (sizes multiply), checked against the chip."""
    total = [1, 1]
    for pool in pools:
        kernel = _pair(pool.kernel_size)
        stride = _pair(pool.stride) if pool.stride is not None else kernel
        if getattr(pool, "padding", 0) not in (0, (0, 0)) or stride != kernel:
            problems.append(
                f"{where}: pooling {kernel} with stride {stride} and padding; the chip "
                "pools without padding, stride equal to the kernel"
            )
        total = [total[0] * kernel[0], total[1] * kernel[1]]
    if total[0] != total[1] or total[0] not in POOLING_SIZES:
        problems.append(
            f"{where}: pooling {total[0]}x{total[1]}; a core pools 1x1, 2x2 or 4x4 only"
        )
    return total[0]


def _core_problems(
    name: str, layer: nn.Conv2d | nn.Linear, in_shape: tuple[int, int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int], list[str]]:
    """Kernel shape, neuron shape and the rules of a core the layer breaks."""
    c, h, w = in_shape
    problems = []
    if isinstance(layer, nn.Linear):
        f, kernel, stride, padding, dilation, groups = (
            layer.out_features,
            (h, w),
            (1, 1),
            (0, 0),
            (1, 1),
            1,
        )
        if layer.in_features != c * h * w:
            raise ValueError(
                f"chip: layer {name} expects {layer.in_features} inputs, gets {in_shape}"
            )
    else:
        f, kernel, stride = layer.out_channels, _pair(layer.kernel_size), _pair(layer.stride)
        dilation, groups = _pair(layer.dilation), layer.groups
        if isinstance(layer.padding, str):
            padding = (0, 0) if layer.padding == "valid" else (kernel[0] // 2, kernel[1] // 2)
        else:
            padding = _pair(layer.padding)
        if layer.padding_mode != "zeros":
            problems.append(f"{name}: padding_mode {layer.padding_mode!r}; the chip pads zeros")
    out_h = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    what = "kernel"
    if isinstance(layer, nn.Linear):
        what = "kernel (a Linear layer's covers its whole input)"
    if kernel[0] != kernel[1]:
        problems.append(f"{name}: {what} {kernel[0]}x{kernel[1]} is not square")
    if max(kernel) > MAX_KERNEL_SIZE:
        problems.append(
            f"{name}: {what} {kernel[0]}x{kernel[1]} exceeds {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE}"
        )
    if any(s not in STRIDES for s in stride):
        problems.append(f"{name}: stride {stride}; a core strides by {STRIDES}")
    if max(padding) > MAX_PADDING:
        problems.append(f"{name}: padding {padding} exceeds {MAX_PADDING}")
    if dilation != (1, 1) or groups != 1:
        problems.append(
            f"{name}: dilation {dilation} / groups {groups}; a core has neither "
            "(chips/dynapcnn.py configures kernel size, stride and padding only)"
        )
    if f > MAX_FEATURES or c > MAX_FEATURES:
        problems.append(f"{name}: {c} input / {f} output features; at most {MAX_FEATURES}")
    if max(h, w) > MAX_INPUT_SIZE:
        problems.append(f"{name}: input {h}x{w} exceeds {MAX_INPUT_SIZE}x{MAX_INPUT_SIZE}")
    if max(out_h, out_w) > MAX_OUTPUT_SIZE:
        problems.append(
            f"{name}: neuron map {out_h}x{out_w} exceeds {MAX_OUTPUT_SIZE}x{MAX_OUTPUT_SIZE}"
        )
    return (f, c, kernel[0], kernel[1]), (f, out_h, out_w), problems


def _assign_cores(candidates: list[tuple[int, ...]], cores: int) -> list[int | None]:
    """One core per layer, each core used once, each layer on a core it fits: a maximum
    bipartite matching by augmenting paths (sinabs finds it with Edmonds-Karp in
    ``backend/dynapcnn/mapping.py``; any maximum matching answers whether one exists)."""
    owner: list[int | None] = [None] * cores

    def place(layer: int, seen: set[int]) -> bool:
        for core in candidates[layer]:  # a free core first: keeps the assignment plain
            if owner[core] is None:
                owner[core] = layer
                return True
        for core in candidates[layer]:
            if core in seen:
                continue
            seen.add(core)
            if owner[core] is None or place(owner[core], seen):
                owner[core] = layer
                return True
        return False

    for layer in range(len(candidates)):
        place(layer, set())
    assigned: list[int | None] = [None] * len(candidates)
    for core, layer in enumerate(owner):
        if layer is not None:
            assigned[layer] = core
    return assigned


@dataclass
class _CoreLayer:
    """A weighted layer with what a core runs beside it: its neurons and the pooling of
    its output (until the next weighted layer)."""

    name: str
    module: nn.Conv2d | nn.Linear
    input_shape: tuple[int, int, int]
    neurons: list[nn.Module]
    pools: list[nn.Module]


def _core_layers(
    snn: nn.Sequential, input_shape: tuple[int, int, int], problems: list[str]
) -> list[_CoreLayer]:
    """The network cut into what each core runs; modules no core has go to ``problems``."""
    names = _layer_names(snn)
    layers: list[_CoreLayer] = []
    input_pools: list[nn.Module] = []
    shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
    flattened_from: tuple[int, ...] | None = None  # the (C, H, W) a Flatten made into F
    with torch.no_grad():
        for index, module in enumerate(snn):
            where = layers[-1].name if layers else "input"
            if isinstance(module, (nn.MaxPool2d, sl.SpikingMaxPooling2dLayer)):
                problems.append(
                    f"{where}: max pooling (module {index}) is refused: max pooling of spikes "
                    "is not max pooling of rates, and a core only sums"
                )
            elif isinstance(module, (nn.AvgPool2d, sl.SumPool2d)):
                (layers[-1].pools if layers else input_pools).append(module)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                if isinstance(module, nn.Conv2d):
                    in_shape = shape
                elif flattened_from is not None and len(flattened_from) == 3:
                    in_shape = flattened_from  # the kernel covers the whole input
                else:
                    in_shape = (shape[0], 1, 1)
                layers.append(_CoreLayer(names[len(layers)], module, in_shape, [], []))
            elif isinstance(module, sl.StatefulLayer) and layers:
                layers[-1].neurons.append(module)
                continue  # neurons keep the shape; running them would change their state
            elif not isinstance(module, (nn.Flatten, nn.Identity, nn.Dropout)):
                problems.append(
                    f"{where}: module {index} ({type(module).__name__}) has no counterpart on "
                    "the chip"
                )
            flattened_from = shape if isinstance(module, nn.Flatten) else None
            shape = tuple(int(s) for s in module(torch.zeros((1, *shape))).shape[1:])
    if input_pools:  # pooling of the input: the chip's input layer pools as a core does
        _pooling_size(input_pools, "input", problems)
    return layers


def _layer_resources(layer: _CoreLayer, cores: tuple[CoreLimits, ...]) -> LayerResources:
    """What one core layer needs, which cores hold it, and which rules it breaks."""
    module = layer.module
    kernel_shape, neuron_shape, problems = _core_problems(layer.name, module, layer.input_shape)
    pooling = _pooling_size(layer.pools, layer.name, problems) if layer.pools else 1
    if not bool((module.weight != 0).any()):
        problems.append(
            f"{layer.name}: every weight is 0, so no input reaches its neurons (sinabs "
            "discretises a neuron without min_v_mem as if its bound were -2**15, which caps "
            "the scale at 1 and rounds weights below 0.5 to 0)"
        )
    for neurons in layer.neurons:
        threshold = getattr(neurons, "spike_threshold", None)
        if threshold is not None and float(threshold) <= 0:
            problems.append(
                f"{layer.name}: threshold {float(threshold):g}: its neurons fire at every "
                "event (a scale this small rounds the threshold to 0)"
            )
    f, c, kh, kw = kernel_shape
    need = {
        "kernel": kernel_memory(c, f, (kh, kw)),
        "neuron": neuron_memory(*neuron_shape),
        "bias": 0 if module.bias is None else int(module.bias.numel()),
    }
    fitting = tuple(
        i
        for i, core in enumerate(cores)
        if need["kernel"] <= core.kernel_memory
        and need["neuron"] <= core.neuron_memory
        and need["bias"] <= core.bias_memory
    )
    if not fitting:
        largest = {
            "kernel": max(core.kernel_memory for core in cores),
            "neuron": max(core.neuron_memory for core in cores),
            "bias": max(core.bias_memory for core in cores),
        }
        over = [f"{k} memory {need[k]} > {largest[k]}" for k in need if need[k] > largest[k]]
        why = ", ".join(over) or "no core has enough of both: " + ", ".join(
            f"core {i} kernel {core.kernel_memory} neuron {core.neuron_memory}"
            for i, core in enumerate(cores)
        )
        problems.append(
            f"{layer.name}: needs kernel memory {need['kernel']}, neuron memory "
            f"{need['neuron']}, bias memory {need['bias']}; {why}"
        )
    return LayerResources(
        name=layer.name,
        input_shape=tuple(int(s) for s in layer.input_shape),
        kernel_shape=kernel_shape,
        neuron_shape=neuron_shape,
        pooling=pooling,
        kernel_memory=need["kernel"],
        neuron_memory=need["neuron"],
        bias_memory=need["bias"],
        leak_enabled=module.bias is not None and bool((module.bias != 0).any()),
        fitting_cores=fitting,
        problems=tuple(problems),
    )


def chip_mapping(
    snn: nn.Sequential,
    input_shape: tuple[int, int, int],
    cores: tuple[CoreLimits, ...] = SPECK_CORES,
) -> ChipMapping:
    """Whether ``snn`` (float or discretised) runs on the chip: each weighted layer with
    its neurons and the pooling after them on one core, every layer on a different core.

    Refuses, naming the layer: max pooling; pooling other than square 1, 2 or 4; a kernel
    that is not square or over 16; strides, padding, dilation or groups a core lacks; more
    than 1024 features; a core's memory exceeded (kernel, neuron, bias); more layers than
    cores; all weights 0 or a threshold 0 (discretisation gone wrong). A non-zero bias is a
    flag (``leak_enabled``), not a refusal.
    """
    if len(input_shape) != 3:
        raise ValueError(f"chip: input_shape must be (channels, height, width), got {input_shape}")
    network_problems: list[str] = []
    layers = [
        _layer_resources(layer, cores)
        for layer in _core_layers(snn, tuple(input_shape), network_problems)
    ]
    problems = [p for layer in layers for p in layer.problems] + network_problems
    if len(layers) > len(cores):
        problems.append(
            f"network: {len(layers)} weighted layers, but the chip has {len(cores)} cores "
            f"(one layer each); {', '.join(lay.name for lay in layers[len(cores) :])} "
            "find no core"
        )
    assigned = _assign_cores([lay.fitting_cores for lay in layers], len(cores))
    if all(lay.fitting_cores for lay in layers) and len(layers) <= len(cores):
        unplaced = [lay.name for lay, core in zip(layers, assigned) if core is None]
        if unplaced:
            problems.append(
                f"network: {', '.join(unplaced)} find no free core: the layers that fit "
                "only the same few cores outnumber them"
            )
    return ChipMapping(layers=tuple(layers), cores=tuple(assigned), problems=tuple(problems))


# --------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------


def _sum_pool(pool: nn.Module) -> nn.AvgPool2d:
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride) if pool.stride is not None else kernel
    return nn.AvgPool2d(kernel, stride=stride, divisor_override=1)


def core_fan_out(snn: nn.Sequential, input_shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per weighted layer, the synaptic operations one spike of each neuron feeding it
    costs on the chip, shaped like those neurons (the input, then each spiking layer).

    A core reads its whole kernel for every event, so every kernel entry the spike reaches
    counts, zero weights included (``spikescale.evaluate.fan_out`` counts only non-zero
    weights, and assumes average pooling: on the discretised network, where small weights
    round to 0 and pools sum, it would count too few and too many). Pooling is the sum
    pooling on the chip: a spike becomes one event at its pooled position. For an inner
    neuron of a stride-1 convolution that is ``C_out * k * k``, the SynOps estimate of
    sinabs's docs/speck/faqs/tips_for_training.md.
    """
    fan_outs: list[np.ndarray] = []
    pending: list[nn.Module] = []
    shape = tuple(int(s) for s in input_shape)
    segment_shape = shape
    with torch.no_grad():
        for module in snn:
            if isinstance(module, sl.StatefulLayer):
                segment_shape = shape
                continue
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                probe = copy.deepcopy(module).double()
                probe.weight.fill_(1.0)
                if probe.bias is not None:
                    probe.bias.zero_()
                segment = nn.Sequential(*pending, probe)
                x = torch.ones((1, *segment_shape), dtype=torch.float64, requires_grad=True)
                with torch.enable_grad():
                    segment(x).sum().backward()
                fan_outs.append(x.grad[0].round().numpy())
                pending = []
            elif isinstance(module, (nn.AvgPool2d, sl.SumPool2d)):
                pending.append(_sum_pool(module))
            elif not isinstance(module, (nn.Identity, nn.Dropout)):
                pending.append(module)
            shape = tuple(module(torch.zeros((1, *shape))).shape[1:])
    return fan_outs


def events_times_fan(counts: np.ndarray, fan: np.ndarray, block: int = 2**22) -> np.ndarray:
    """(batch, steps) synaptic operations that ``counts`` (batch, steps, *neurons): events or
    spikes per neuron and step, cause with ``fan`` (*neurons) operations each. In float64,
    exact for integer counts, a block of about ``block`` cells at a time (no float64 copy
    of the whole array)."""
    batch, steps = counts.shape[:2]
    flat = counts.reshape(batch * steps, -1)
    weights = np.asarray(fan, np.float64).ravel()
    rows = max(1, block // max(1, flat.shape[1]))
    out = np.empty(batch * steps, np.float64)
    for r0 in range(0, len(flat), rows):
        out[r0 : r0 + rows] = flat[r0 : r0 + rows].astype(np.float64) @ weights
    return out.reshape(batch, steps)


def synops_per_step(
    snn: nn.Sequential,
    raster: torch.Tensor,
    fan: list[np.ndarray],
    simulate: Callable,
    max_cells: int = 2**24,
) -> np.ndarray:
    """(batch, steps, layers) synaptic operations into each weighted layer at each time step
    of ``raster`` (batch, steps, *input): the input events of a step times ``fan[0]``, and
    the spikes of spiking layer i-1 in that step times ``fan[i]``.

    ``simulate(model, raster, checkpoints)`` is the stage's simulator
    (:func:`spikescale.simulate.simulate` with its backend). Its result holds each layer's
    spikes summed over time, and only the last layer's over time (``output_over_time``,
    cumulative at the checkpoints). So each inner spiking layer is made the last one: the
    network up to it (a prefix; neurons are causal, so its spikes are the whole network's)
    is simulated again with a checkpoint at every step, and its cumulative counts are
    differenced. ``max_cells`` bounds the samples simulated at once (samples x steps x
    neurons). Costs one more simulation of each prefix."""
    batch, steps = int(raster.shape[0]), int(raster.shape[1])
    grid = raster.detach().cpu().numpy()
    out = np.zeros((batch, steps, len(fan)), np.float64)
    out[:, :, 0] = events_times_fan(grid, fan[0])
    spiking = [i for i, m in enumerate(snn) if isinstance(m, sl.StatefulLayer)]
    every_step = np.arange(steps)
    for layer in range(1, len(fan)):
        prefix = nn.Sequential(*list(snn)[: spiking[layer - 1] + 1])
        chunk = max(1, max_cells // (steps * int(fan[layer].size)))
        for b0 in range(0, batch, chunk):
            cumulative = simulate(prefix, raster[b0 : b0 + chunk], every_step).output_over_time
            spikes = np.diff(cumulative, axis=1, prepend=np.zeros_like(cumulative[:, :1]))
            out[b0 : b0 + chunk, :, layer] = events_times_fan(spikes, fan[layer])
    return out


@dataclass(frozen=True)
class SynopsRates:
    """Synaptic operations per second each core carries (one entry per weighted layer,
    counting the operations its input spikes cause), against the per-core limit.

    ``peak_from`` says, per layer, how its peak was taken: ``"time_bins"`` (the busiest
    time bin of any sample) or ``"samples"`` (the busiest sample's mean over its
    recording: a lower bound of the true peak, since activity bunches within a recording).
    """

    mean_synops_per_second: tuple[float, ...]
    peak_synops_per_second: tuple[float, ...]
    peak_from: tuple[str, ...]
    limit_synops_per_second_per_core: float

    @property
    def over_limit(self) -> tuple[bool, ...]:
        """Per layer: its peak exceeds the core's limit."""
        return tuple(p > self.limit_synops_per_second_per_core for p in self.peak_synops_per_second)

    @property
    def within_limit(self) -> bool:
        return not any(self.over_limit)

    @property
    def busiest(self) -> int:
        """The layer (core) with the highest peak; the first of equals."""
        return int(np.argmax(self.peak_synops_per_second))

    @property
    def peak_fraction_of_limit(self) -> float:
        """The busiest core's peak as a fraction of the limit (above 1: the chip stalls)."""
        return max(self.peak_synops_per_second, default=0.0) / self.limit_synops_per_second_per_core


def synops_rates(
    synops_per_sample: np.ndarray,
    duration_s: float,
    synops_per_bin: np.ndarray | None = None,
    bin_s: float | None = None,
    *,
    limit_synops_per_second_per_core: float,
) -> SynopsRates:
    """Mean and peak synaptic operations per second per layer, for one factor.

    ``synops_per_sample``: (samples, layers) operations into each layer over a recording
    of ``duration_s`` seconds (what the evaluate stage counts). ``synops_per_bin``, if
    given: (samples, bins, k) or (bins, k) operations per time bin of ``bin_s`` seconds
    into the first k layers (k <= layers; the evaluate stage gives every layer's,
    :func:`synops_per_step`). A layer's peak is its busiest bin where it has bins, else its
    busiest sample's mean rate (``peak_from`` says which).
    ``limit_synops_per_second_per_core``: hardware.synops_per_second_per_core.
    """
    per_sample = np.asarray(synops_per_sample, dtype=np.float64)
    if per_sample.ndim == 1:
        per_sample = per_sample[None, :]
    if per_sample.ndim != 2 or per_sample.shape[0] == 0:
        raise ValueError(
            f"synops_per_sample must have shape (samples, layers) with at least one sample, "
            f"got {np.shape(synops_per_sample)}"
        )
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a finite number > 0, got {duration_s!r}")
    limit = limit_synops_per_second_per_core
    if not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0):
        raise ValueError(
            f"limit_synops_per_second_per_core (hardware.synops_per_second_per_core) must be "
            f"a finite number > 0, got {limit!r}"
        )
    if (per_sample < 0).any() or not np.isfinite(per_sample).all():
        raise ValueError("synops_per_sample must hold finite counts >= 0")
    layers = per_sample.shape[1]
    mean = per_sample.mean(0) / duration_s
    peak = per_sample.max(0) / duration_s
    source = ["samples"] * layers
    if synops_per_bin is not None:
        per_bin = np.asarray(synops_per_bin, dtype=np.float64)
        if per_bin.ndim == 2:
            per_bin = per_bin[None]
        if (
            per_bin.ndim != 3
            or not 0 < per_bin.shape[-1] <= layers
            or per_bin.shape[1] == 0
            or per_bin.shape[0] == 0
        ):
            raise ValueError(
                f"synops_per_bin must have shape (samples, bins, k) or (bins, k) with "
                f"1 <= k <= {layers} layers, got {np.shape(synops_per_bin)}"
            )
        if bin_s is None or not (math.isfinite(bin_s) and bin_s > 0):
            raise ValueError(
                f"bin_s must be a finite number > 0 with synops_per_bin, got {bin_s!r}"
            )
        if (per_bin < 0).any() or not np.isfinite(per_bin).all():
            raise ValueError("synops_per_bin must hold finite counts >= 0")
        k = per_bin.shape[-1]
        peak[:k] = per_bin.max(axis=(0, 1)) / bin_s
        source[:k] = ["time_bins"] * k
    return SynopsRates(
        mean_synops_per_second=tuple(float(v) for v in mean),
        peak_synops_per_second=tuple(float(v) for v in peak),
        peak_from=tuple(source),
        limit_synops_per_second_per_core=float(limit),
    )
