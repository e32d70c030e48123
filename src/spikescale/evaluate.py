"""The `evaluate` stage: the converted SNN, first layer scaled by one factor, on test events.

The test recordings are read in batches, binned on a fixed grid of ``time_bin_us`` steps
from t=0 and simulated. A sample with no output spike has no prediction and counts as
wrong (``argmax`` of zeros would say class 0). Beside the accuracy it measures, per layer,
the spikes, silent and saturated neurons, synaptic operations (spikes times each neuron's
exact fan-out) and how well spike counts follow the CNN activations they stand for; and the
decision read out at points through the recording.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from sinabs.layers import StatefulLayer
from torch import nn
from tqdm import tqdm

from spikescale.binning import raster
from spikescale.errors import InputError
from spikescale.event_store import iter_batches, read_metadata
from spikescale.images import single_channel
from spikescale.model import Architecture
from spikescale.params import EvaluationParams, HardwareParams
from spikescale.simulate import simulate


def flat_layers(model: nn.Module) -> list[nn.Module]:
    """The leaf layers of ``model`` in order, nested ``nn.Sequential`` opened up; dropout and
    identity (no-ops in eval mode) left out."""
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in flat_layers(child)]
    if isinstance(model, (nn.Identity, nn.modules.dropout._DropoutNd)):
        return []
    return [model]


def layer_names(model: nn.Sequential) -> list[str]:
    """Readable names of the weighted layers: conv1, conv2, ..., fc1."""
    names, counts = [], {"conv": 0, "fc": 0}
    for layer in flat_layers(model):
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        kind = "conv" if isinstance(layer, nn.Conv2d) else "fc"
        counts[kind] += 1
        names.append(f"{kind}{counts[kind]}")
    return names


def segments(model: nn.Sequential) -> list[nn.Sequential]:
    """The linear part feeding each spiking layer: [pool/flatten...] + weighted layer."""
    out, current = [], []
    for layer in flat_layers(model):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            out.append(nn.Sequential(*current, layer))
            current = []
        elif not isinstance(layer, (StatefulLayer, nn.ReLU)):
            current.append(layer)
    return out


def fan_out(segment: nn.Sequential, input_shape: tuple[int, ...]) -> np.ndarray:
    """Synapses each input neuron of ``segment`` reaches: one op per spike and target.

    The segment's layers are linear, so the count is the gradient of the summed output of
    a twin whose weights are 1 where a synapse exists (0 elsewhere) and whose average pools
    sum their windows: a neuron in several pooling windows (overlapping windows) reaches
    each window's targets; a strided, dilated or grouped convolution reaches what its
    geometry connects. Exact in float64 (integer counts)."""
    probe = copy.deepcopy(segment).double()
    for layer in probe:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                layer.weight.copy_((layer.weight != 0).double())
                if layer.bias is not None:
                    layer.bias.zero_()
        elif isinstance(layer, nn.AvgPool2d):
            layer.divisor_override = 1  # sum pooling: each window counts once
    x = torch.ones((1, *input_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():  # callers may run under no_grad
        probe(x).sum().backward()
    return x.grad[0].round().numpy()


def macs(segment: nn.Sequential, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the segment's weighted layer for one frame: every output
    neuron times its fan-in (a convolution's output map after stride and padding, its
    input channels per group times the kernel area; a linear layer's inputs)."""
    with torch.no_grad():
        x = torch.zeros((1, *input_shape))
        for layer in segment[:-1]:
            x = layer(x)
        layer = segment[-1]
        out = layer(x)
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return int(out[0].numel() * (layer.in_channels // layer.groups) * k)


def checkpoints(steps: int, points: int) -> np.ndarray:
    """Time-step indices, evenly spread, the last one at the end of the recording."""
    return np.unique(np.round(np.linspace(steps / points, steps, points)).astype(np.int64)) - 1


@dataclass
class Totals:
    """What the batches add up to."""

    labels: list[np.ndarray] = field(default_factory=list)
    output: list[np.ndarray] = field(default_factory=list)
    layer_spikes: list[np.ndarray] = field(default_factory=list)  # (B, layers)
    silent: list[np.ndarray] = field(default_factory=list)  # (B, layers) fraction
    saturated: list[np.ndarray] = field(default_factory=list)
    synops: list[np.ndarray] = field(default_factory=list)  # (B, layers) into each layer
    input_events: list[np.ndarray] = field(default_factory=list)
    over_time: list[np.ndarray] = field(default_factory=list)  # (B, points, classes)
    synops_per_bin: list[np.ndarray] = field(default_factory=list)  # (B, steps, layers)
    corr_sums: np.ndarray | None = None  # per layer: n, sx, sy, sxx, syy, sxy
    dropped: int = 0


def predictions(counts: np.ndarray) -> np.ndarray:
    """argmax of the output counts, -1 where a sample has no output spike."""
    pred = counts.argmax(-1)
    return np.where(counts.sum(-1) > 0, pred, -1)


@torch.no_grad()
def cnn_expectation(cnn: nn.Sequential, mean_input: torch.Tensor, steps: int) -> list[np.ndarray]:
    """Spike counts that rate coding predicts: steps x the scaled CNN's activation on the mean
    input, one array per spiking layer of its SNN (each ReLU, and the read-out when the
    network does not end in a ReLU: sinabs then adds a spiking output layer)."""
    out, x = [], mean_input
    layers = flat_layers(cnn)
    for layer in layers:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            out.append((torch.clamp(x, min=0) * steps).cpu().numpy())
    if layers and not isinstance(layers[-1], nn.ReLU):
        out.append((torch.clamp(x, min=0) * steps).cpu().numpy())
    return out


@dataclass(frozen=True)
class InputFormat:
    """How the test events become the network's input, as its training input was made."""

    downsample: int = 1  # frames.downsample: k x k pixel blocks summed
    polarities: str = "sum"  # training.polarities: a one-channel network's ON and OFF events

    def rasters(self, batch, time_bin_us: int, steps: int, input_shape) -> tuple[np.ndarray, int]:
        """(batch, steps, C, H, W) counts for a network of ``input_shape``, and the events
        dropped; a shape that does not fit the network fails naming the parameters."""
        grid, dropped = raster(batch, time_bin_us, steps, downsample=self.downsample)
        if input_shape[0] == 1 and grid.shape[2] == 2:  # a network trained on images
            grid = single_channel(grid, self.polarities)
        if grid.shape[2:] != tuple(input_shape):
            raise InputError(
                f"frames.downsample={self.downsample} gives inputs of shape {grid.shape[2:]}, "
                f"but the network takes {tuple(input_shape)}: use the frames.downsample and "
                "training.input the network was trained with"
            )
        return grid, dropped


def evaluate_factor(
    snn: nn.Sequential,
    cnn: nn.Sequential,
    arch: Architecture,
    events_path,
    p: EvaluationParams,
    factor: float,
    device: str = "cpu",
    progress: bool = True,
    input_format: InputFormat = InputFormat(),
) -> dict[str, pa.Table]:
    """Evaluate an SNN (first layer already scaled by ``factor``) and its scaled CNN twin,
    on the test events binned as ``input_format`` says.

    Returns the tables ``summary`` (one row), ``layers`` (one row per layer), ``samples``
    (one row per test sample) and ``timecourse`` (one row per read-out point).
    """
    return _evaluate(snn, cnn, arch, events_path, p, factor, device, progress, input_format)[0]


def _evaluate(
    snn: nn.Sequential,
    cnn: nn.Sequential,
    arch: Architecture,
    events_path,
    p: EvaluationParams,
    factor: float,
    device: str = "cpu",
    progress: bool = True,
    input_format: InputFormat = InputFormat(),
    fan: list[np.ndarray] | None = None,
    per_bin: bool = False,
) -> tuple[dict[str, pa.Table], np.ndarray, np.ndarray | None]:
    """:func:`evaluate_factor`'s tables, the synaptic operations into each layer per
    sample (samples, layers) and, with ``per_bin``, per time step (samples, steps, layers;
    None without; :func:`spikescale.chip.synops_per_step`, one more simulation of each
    prefix of the network). ``fan``: each layer's fan-out (default: :func:`fan_out`)."""
    meta = read_metadata(events_path)
    total = (
        len(meta["labels"]) if p.max_samples is None else min(p.max_samples, len(meta["labels"]))
    )
    steps = max(1, math.ceil(meta["duration_us"] / p.time_bin_us))
    points = checkpoints(steps, p.timecourse_points)
    segs = segments(snn)
    names = layer_names(snn)
    shapes = [arch.input_shape]
    with torch.no_grad():
        x = torch.zeros((1, *arch.input_shape))
        for seg in segs:
            x = seg(x)
            shapes.append(tuple(x.shape[1:]))
    if fan is None:
        fan = [fan_out(seg, shape) for seg, shape in zip(segs, shapes[:-1])]
    neurons = [int(np.prod(s)) for s in shapes[1:]]
    snn, cnn = snn.to(device), cnn.to(device)
    t = Totals(corr_sums=np.zeros((len(segs), 6)))
    bar = tqdm(
        total=total, desc=f"factor {factor}", disable=None if progress else True, leave=False
    )
    done = 0
    for _, batch in iter_batches(events_path, p.batch_size):
        if done >= total:
            break
        if len(batch) > total - done:
            batch = batch.subset(np.arange(total - done))
        done += len(batch)
        grid, dropped = input_format.rasters(batch, p.time_bin_us, steps, arch.input_shape)
        t.dropped += dropped
        x = torch.from_numpy(grid).to(device)
        result = simulate(snn, x, points, backend=p.backend)
        expected = cnn_expectation(cnn, x.mean(1), steps)
        inputs = grid.sum(1).reshape(len(batch), -1)
        spikes_in = [inputs] + [c.reshape(len(batch), -1) for c in result.layer_counts[:-1]]
        t.synops.append(np.stack([s @ f.ravel() for s, f in zip(spikes_in, fan)], 1))
        if per_bin:
            from spikescale.chip import synops_per_step

            run = functools.partial(simulate, backend=p.backend)
            t.synops_per_bin.append(synops_per_step(snn, x, fan, run))
        counts = [c.reshape(len(batch), -1) for c in result.layer_counts]
        t.layer_spikes.append(np.stack([c.sum(1) for c in counts], 1))
        t.silent.append(np.stack([(c == 0).mean(1) for c in counts], 1))
        t.saturated.append(np.stack([(c >= steps).mean(1) for c in counts], 1))
        for i, (c, e) in enumerate(zip(counts, expected)):
            a, b = (
                e.reshape(len(batch), -1).astype(np.float64).ravel(),
                c.astype(np.float64).ravel(),
            )
            t.corr_sums[i] += [
                len(a),
                a.sum(),
                b.sum(),
                (a * a).sum(),
                (b * b).sum(),
                (a * b).sum(),
            ]
        t.labels.append(batch.labels)
        t.output.append(result.output_counts)
        t.input_events.append(np.diff(batch.offsets))
        t.over_time.append(result.output_over_time)
        bar.update(len(batch))
    bar.close()
    tables = _tables(t, factor, names, neurons, fan, shapes, segs, points, steps, p)
    bins = np.concatenate(t.synops_per_bin) if per_bin else None
    return tables, np.concatenate(t.synops), bins


def _correlation(s: np.ndarray) -> float | None:
    n, sx, sy, sxx, syy, sxy = s
    vx, vy = n * sxx - sx * sx, n * syy - sy * sy
    if n < 2 or vx <= 0 or vy <= 0:
        return None
    return float((n * sxy - sx * sy) / math.sqrt(vx * vy))


def _tables(
    t: Totals, factor, names, neurons, fan, shapes, segs, points, steps, p
) -> dict[str, pa.Table]:
    labels = np.concatenate(t.labels)
    output = np.concatenate(t.output)
    pred = predictions(output)
    layer_spikes = np.concatenate(t.layer_spikes)
    synops = np.concatenate(t.synops)
    n = len(labels)
    duration_s = steps * p.time_bin_us * 1e-6
    summary = {
        "factor": [float(factor)],
        "samples": [n],
        "snn_accuracy": [float((pred == labels).mean())],
        "silent_fraction": [float((pred < 0).mean())],
        "spikes_per_sample": [float(layer_spikes.sum(1).mean())],
        "output_spikes_per_sample": [float(output.sum(1).mean())],
        "synops_per_sample": [float(synops.sum(1).mean())],
        "input_events_per_sample": [float(np.concatenate(t.input_events).mean())],
        "dropped_events": [int(t.dropped)],
        "time_bin_us": [int(p.time_bin_us)],
        "steps": [int(steps)],
    }
    layers = {
        "factor": [float(factor)] * len(names),
        "layer": names,
        "position": list(range(len(names))),
        "neurons": neurons,
        "spikes_per_sample": layer_spikes.mean(0).tolist(),
        "firing_rate_hz": (layer_spikes.mean(0) / np.array(neurons) / duration_s).tolist(),
        "silent_neuron_fraction": np.concatenate(t.silent).mean(0).tolist(),
        "saturated_neuron_fraction": np.concatenate(t.saturated).mean(0).tolist(),
        "synops_per_sample": synops.mean(0).tolist(),
        "cnn_macs_per_frame": [macs(seg, shape) for seg, shape in zip(segs, shapes[:-1])],
        "activation_spike_correlation": [_correlation(s) for s in t.corr_sums],
    }
    samples = {
        "factor": [float(factor)] * n,
        "sample": np.arange(n, dtype=np.int64),
        "label": labels.astype(np.int64),
        "prediction": pa.array(pred, mask=pred < 0, type=pa.int64()),
        "output_spikes": output.sum(1).astype(np.int64),
        "total_spikes": layer_spikes.sum(1).astype(np.int64),
        "input_events": np.concatenate(t.input_events).astype(np.int64),
    }
    over_time = np.concatenate(t.over_time)  # (n, points, classes)
    pred_t = predictions(over_time)
    timecourse = {
        "factor": [float(factor)] * len(points),
        "time_ms": ((points + 1) * p.time_bin_us / 1000.0).tolist(),
        "snn_accuracy": (pred_t == labels[:, None]).mean(0).tolist(),
        "silent_fraction": (pred_t < 0).mean(0).tolist(),
        "output_spikes_per_sample": over_time.sum(2).mean(0).tolist(),
    }
    return {
        "summary": pa.table(summary),
        "layers": pa.table(layers),
        "samples": pa.table(samples),
        "timecourse": pa.table(timecourse),
    }


VARIANT_FLOAT = "float"


def with_variant(tables: dict[str, pa.Table], variant: str) -> dict[str, pa.Table]:
    """Each table with a ``variant`` column after ``factor``: which network its rows are."""
    return {
        name: table.add_column(1, "variant", pa.array([variant] * table.num_rows))
        for name, table in tables.items()
    }


def _joined(problems) -> str:
    return "; ".join(problems)


def chip_tables(
    snn: nn.Sequential,
    cnn: nn.Sequential,
    arch: Architecture,
    events_path,
    p: EvaluationParams,
    factor: float,
    hardware: HardwareParams,
    device: str = "cpu",
    progress: bool = True,
    input_format: InputFormat = InputFormat(),
) -> dict[str, pa.Table]:
    """The chip's network at ``factor`` (unscaled ``snn``: the factor first, then
    discretisation, :func:`spikescale.chip.discretised_variant`) evaluated like the float
    SNN, its rows marked ``variant`` = ``hardware.target``, with what the chip asks of it.

    Synaptic operations count every kernel entry a spike reaches
    (:func:`spikescale.chip.core_fan_out`), as a core does. Per layer: memory against the
    core it maps to (or the largest core where it maps to none), whether it fits, why
    not, the leak flag, the integer threshold and the mean and peak synops/s against the
    per-core limit ``hardware.synops_per_second_per_core``; the peak is the busiest time
    bin (``evaluation.time_bin_us``) of any test recording
    (:func:`spikescale.chip.synops_per_step`; ``peak_synops_from``: ``time_bins``). Per
    factor: whether the whole network maps onto the cores, the busiest core, its rates and
    every problem, each naming its layer.
    """
    from spikescale import chip
    from spikescale.model import scale_first_layer

    target = hardware.target
    if target is None:
        raise ValueError("chip_tables: hardware.target is null; expected a chip, e.g. speck")
    shape = tuple(int(s) for s in arch.input_shape)
    variant = chip.discretised_variant(snn, factor)
    mapping = chip.chip_mapping(variant.snn, shape)
    fan = chip.core_fan_out(variant.snn, shape)
    tables, synops, synops_per_bin = _evaluate(
        variant.snn,
        scale_first_layer(cnn, factor),
        arch,
        events_path,
        p,
        factor,
        device,
        progress,
        input_format,
        fan=fan,
        per_bin=True,
    )
    summary = tables["summary"].to_pylist()[0]
    bin_s = summary["time_bin_us"] * 1e-6
    rates = chip.synops_rates(
        synops,
        summary["steps"] * bin_s,
        synops_per_bin,
        bin_s,
        limit_synops_per_second_per_core=hardware.synops_per_second_per_core,
    )
    largest = chip.CoreLimits(
        max(c.kernel_memory for c in chip.SPECK_CORES),
        max(c.neuron_memory for c in chip.SPECK_CORES),
        max(c.bias_memory for c in chip.SPECK_CORES),
    )
    limits = [largest if core is None else chip.SPECK_CORES[core] for core in mapping.cores]
    over = rates.over_limit
    layers = {
        "core": pa.array(list(mapping.cores), type=pa.int64()),
        "kernel_memory": [lay.kernel_memory for lay in mapping.layers],
        "core_kernel_memory": [lim.kernel_memory for lim in limits],
        "neuron_memory": [lay.neuron_memory for lay in mapping.layers],
        "core_neuron_memory": [lim.neuron_memory for lim in limits],
        "bias_memory": [lay.bias_memory for lay in mapping.layers],
        "fits_core": [
            core is not None and not lay.problems
            for lay, core in zip(mapping.layers, mapping.cores)
        ],
        "chip_problems": [_joined(lay.problems) for lay in mapping.layers],
        "leak_enabled": [lay.leak_enabled for lay in mapping.layers],
        "chip_threshold": [d.threshold for d in variant.layers],
        "weight_above_threshold": [d.weight_above_threshold for d in variant.layers],
        "mean_synops_per_second": list(rates.mean_synops_per_second),
        "peak_synops_per_second": list(rates.peak_synops_per_second),
        "peak_synops_from": list(rates.peak_from),
        "over_synops_limit": list(over),
    }
    names = [lay.name for lay in mapping.layers]
    if names != tables["layers"].column("layer").to_pylist():
        raise ValueError(f"chip: layers {names} differ from the evaluated layers")
    for name, values in layers.items():
        tables["layers"] = tables["layers"].append_column(name, pa.array(values))
    limit = rates.limit_synops_per_second_per_core
    too_busy = [
        f"{name}: peak {peak:.3g} synops/s > {limit:.3g}"
        for name, peak, o in zip(names, rates.peak_synops_per_second, over)
        if o
    ]
    if too_busy:  # the parameter named once
        too_busy[-1] += " (the limit per core, hardware.synops_per_second_per_core)"
    problems = list(mapping.problems) + too_busy
    row = {
        "chip_fits": mapping.fits,
        "leak_enabled": mapping.leak_enabled,
        "mean_synops_per_second": max(rates.mean_synops_per_second, default=0.0),
        "peak_synops_per_second": max(rates.peak_synops_per_second, default=0.0),
        "peak_synops_layer": names[rates.busiest],
        "peak_synops_from": rates.peak_from[rates.busiest],
        "synops_limit_per_second_per_core": limit,
        "within_synops_limit": rates.within_limit,
        "chip_problems": _joined(problems),
    }
    for name, value in row.items():
        tables["summary"] = tables["summary"].append_column(name, pa.array([value]))
    return with_variant(tables, target)


def _report(factor: float, variant: str, tables: dict[str, pa.Table]) -> None:
    s = tables["summary"].to_pylist()[0]
    print(
        f"factor {factor:g}{'' if variant == VARIANT_FLOAT else f' ({variant})'}: "
        f"accuracy {s['snn_accuracy']:.4f}, "
        f"silent {s['silent_fraction']:.4f}, "
        f"{s['spikes_per_sample']:.1f} spikes per sample"
        + ("" if s.get("chip_fits", True) else f"; does not fit: {s['chip_problems']}"),
        flush=True,
    )


def factor_evaluator(
    snn_path,
    events_path,
    p: EvaluationParams,
    device: str = "cpu",
    progress: bool = True,
    *,
    input_format: InputFormat = InputFormat(),
    hardware: HardwareParams | None = None,
):
    """A function factor -> result tables (:func:`evaluate_factor`) for the SNN stored in
    ``snn_path`` on the events in ``events_path``: what `evaluate` runs for its factor and
    `refine` for each of its own. Inputs are checked and the SNN loaded once, up front.

    With ``hardware.target`` set, the tables also hold the chip's network
    (:func:`chip_tables`): each table gets a ``variant`` column (``float`` | the target),
    the float rows first; the chip's columns are null on float rows. Without it the tables
    are those of :func:`evaluate_factor` alone."""
    from spikescale.errors import check_device, require
    from spikescale.model import scale_first_layer
    from spikescale.results import load_snn

    check_device(device)
    require(snn_path, events_path)
    cnn, arch, snn = load_snn(snn_path)

    def run(factor: float) -> dict[str, pa.Table]:
        tables = evaluate_factor(
            scale_first_layer(snn, factor),
            scale_first_layer(cnn, factor),
            arch,
            events_path,
            p,
            factor,
            device,
            progress=progress,
            input_format=input_format,
        )
        _report(factor, VARIANT_FLOAT, tables)
        target = None if hardware is None else hardware.target
        if target is None:
            return tables
        on_chip = chip_tables(
            snn, cnn, arch, events_path, p, factor, hardware, device, progress, input_format
        )
        _report(factor, target, on_chip)
        tables = with_variant(tables, VARIANT_FLOAT)
        return {
            name: pa.concat_tables([tables[name], on_chip[name]], promote_options="default")
            for name in tables
        }

    return run
