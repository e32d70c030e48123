"""spikescale.chip: Speck / DYNAP-CNN discretisation, core mapping and synops rates.

The reference for discretisation is sinabs's own ``backend/dynapcnn/discretize.py``,
loaded by path: importing ``sinabs.backend.dynapcnn`` (the package) imports ``samna``,
whose PyPI stub runs ``pip install``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sinabs
import sinabs.layers as sl
import torch
from sinabs.validate_memory_speck import ValidateMapping
from torch import nn

from spikescale import chip
from spikescale.model import Architecture, build_cnn, scale_first_layer, to_snn
from spikescale.params import ConversionParams
from spikescale.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


@cache
def sinabs_discretize():
    """sinabs's discretize.py as a module of its own, without its package's __init__."""
    path = Path(sinabs.__file__).parent / "backend" / "dynapcnn" / "discretize.py"
    spec = importlib.util.spec_from_file_location("sinabs_discretize_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snn(arch: Architecture, seed: int = 0, **conversion) -> nn.Sequential:
    torch.manual_seed(seed)
    cnn = build_cnn(arch)
    if arch.bias:
        with torch.no_grad():
            for m in cnn:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.bias.uniform_(-0.05, 0.05)
    return to_snn(cnn, arch, ConversionParams(**conversion))


def _reference(snn: nn.Sequential, input_shape) -> list[tuple[torch.Tensor, ...]]:
    """(weight, bias, threshold, min_v_mem) of each weighted layer as sinabs's DynapcnnLayer
    makes them: Linear as a whole-input convolution, weights after an average pool times
    1 / (k*k) (its ``rescale_weights``), then ``discretize_conv_spike_``."""
    ref = sinabs_discretize()
    out, rescale = [], 1.0
    modules = list(snn)
    x = torch.zeros((1, *input_shape))
    spatial = tuple(input_shape)  # the last (C, H, W): what a Linear's kernel covers
    for i, m in enumerate(modules):
        if isinstance(m, nn.AvgPool2d):
            rescale *= 1.0 / (m.kernel_size * m.kernel_size)
        if isinstance(m, nn.Linear):
            conv = nn.Conv2d(spatial[0], m.out_features, spatial[1:], bias=m.bias is not None)
            conv.weight.data = m.weight.data.clone().reshape(conv.weight.shape)
            if m.bias is not None:
                conv.bias.data = m.bias.data.clone()
        elif isinstance(m, nn.Conv2d):
            conv = copy.deepcopy(m)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if rescale != 1:
                conv.weight.data = (conv.weight * rescale).clone().detach()
            rescale = 1.0
            conv, spk = ref.discretize_conv_spike(conv, modules[i + 1], to_int=False)
            bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
            out.append((conv.weight, bias, spk.spike_threshold, spk.min_v_mem))
        if not isinstance(m, sl.StatefulLayer):
            if x.dim() == 4:
                spatial = tuple(x.shape[1:])
            x = m(x)
    return out


def _ours(discretised: chip.DiscretisedSNN) -> list[tuple[torch.Tensor, ...]]:
    modules = list(discretised.snn)
    out = []
    for i, m in enumerate(modules):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bias = m.bias if m.bias is not None else torch.zeros(m.weight.shape[0])
            spk = modules[i + 1]
            out.append((m.weight, bias, spk.spike_threshold, spk.min_v_mem))
    return out


CASES = {
    "digits-like": (Architecture(2, 34, 34, 10, (8, 16, 32), 3, False), {}, 1.0),
    "biases": (Architecture(2, 16, 16, 5, (4, 6), 3, True), {}, 4.0),
    "no min_v_mem, threshold 2": (
        Architecture(2, 16, 16, 5, (4,), 5, True),
        {"min_v_mem": None, "threshold": 2.0},
        1.0,
    ),
    "large weights (scale below 1)": (Architecture(1, 8, 8, 3, (4,), 3, False), {}, 600.0),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_discretisation_equals_sinabs(case):
    arch, conversion, factor = CASES[case]
    snn = scale_first_layer(_snn(arch, **conversion), factor)
    ours = _ours(chip.discretise(snn))
    reference = _reference(snn, arch.input_shape)
    assert len(ours) == len(reference) == len(arch.channels) + 1
    for (w, b, t, v), (rw, rb, rt, rv) in zip(ours, reference):
        assert torch.equal(w.detach(), rw.detach().reshape(w.shape))
        assert torch.equal(b.detach(), rb.detach())
        assert torch.equal(t.detach(), rt.detach())
        assert torch.equal(v.detach(), rv.detach())
        assert w.abs().max() <= 128 and (w == w.round()).all()
        assert 0 < t <= 2**15 - 1


def test_discretisation_leaves_the_float_snn_alone_and_says_what_it_did():
    arch = CASES["biases"][0]
    snn = _snn(arch)
    before = {k: v.clone() for k, v in snn.state_dict().items()}
    result = chip.discretise(snn)
    for k, v in snn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [r.name for r in result.layers] == ["conv1", "conv2", "fc1"]
    for record, (_, bias, threshold, low) in zip(result.layers, _ours(result)):
        assert record.threshold == int(threshold) and record.min_v_mem == int(low)
        assert -128 <= record.weight_range[0] <= record.weight_range[1] <= 127
        assert record.bias_range == (int(bias.min()), int(bias.max()))
    pools = [m for m in result.snn if isinstance(m, nn.AvgPool2d)]
    assert pools and all(p.divisor_override == 1 for p in pools)  # sum pooling


def test_non_finite_weights_are_refused_by_name():
    snn = _snn(CASES["biases"][0])
    with torch.no_grad():
        snn[3].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"module 3 \(Conv2d\).*non-finite weight"):
        chip.discretise(snn)
    with pytest.raises(ValueError, match="factor must be a finite number > 0"):
        chip.discretised_variant(_snn(CASES["biases"][0]), 0.0)


def test_larger_factor_makes_first_threshold_coarser_and_backends_agree():
    arch = Architecture(2, 16, 16, 5, (8, 16), 3, False)
    snn = _snn(arch)
    one, four = chip.discretised_variant(snn, 1.0), chip.discretised_variant(snn, 4.0)
    t1, t4 = one.layers[0].threshold, four.layers[0].threshold
    # the first layer's scale comes from its largest weight: 4x the weight, 1/4 the scale
    assert t4 < t1 and abs(t4 - t1 / 4) <= 1
    assert [r.threshold for r in one.layers[1:]] == [r.threshold for r in four.layers[1:]]
    assert not one.layers[0].weight_above_threshold
    many = chip.discretised_variant(snn, 64.0).layers[0]  # threshold about 542 / 64
    assert many.weight_range[1] == 127 and many.threshold < 127 and many.weight_above_threshold
    torch.manual_seed(3)
    raster = torch.poisson(torch.full((4, 40, *arch.input_shape), 0.3))
    steps = np.array([19, 39])
    for variant in (one, four):
        reference = simulate(variant.snn, raster, steps, backend="sinabs")
        fast = simulate(variant.snn, raster, steps, backend="fast")
        for a, b in zip(reference.layer_counts, fast.layer_counts):
            assert np.array_equal(a, b)
        assert np.array_equal(reference.output_over_time, fast.output_over_time)
        assert reference.layer_counts[0].sum() > 0
    assert four_more_spikes(one, four, raster, steps)


def four_more_spikes(one, four, raster, steps) -> bool:
    """A larger factor drives more first-layer spikes on the chip too."""
    a = simulate(one.snn, raster, steps, backend="fast").layer_counts[0].sum()
    b = simulate(four.snn, raster, steps, backend="fast").layer_counts[0].sum()
    return b > a


# --------------------------------------------------------------------------------------
# Does it fit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "c, f, k, stride, pad, size",
    [(2, 8, 3, 1, 1, 34), (16, 32, 3, 1, 1, 64), (8, 10, 5, 2, 0, 17), (32, 10, 4, 1, 0, 4)],
)
def test_memory_equals_sinabs_formulas(c, f, k, stride, pad, size):
    sinabs_view = ValidateMapping(c, f, (k, k), (stride, stride), (pad, pad), [size, size])
    out = (size + 2 * pad - k) // stride + 1
    assert chip.kernel_memory(c, f, (k, k)) == sinabs_view.calculate_kernel_memory()
    assert chip.neuron_memory(f, out, out) == sinabs_view.calculate_neuron_memory()


def test_default_network_fits_and_names_its_cores():
    arch = Architecture(2, 34, 34, 10, (8, 16, 32), 3, False)
    mapping = chip.chip_mapping(chip.discretised_variant(_snn(arch), 8.0).snn, arch.input_shape)
    assert mapping.fits and mapping.problems == ()
    assert [lay.name for lay in mapping.layers] == ["conv1", "conv2", "conv3", "fc1"]
    fc = mapping.layers[-1]
    assert fc.kernel_shape == (10, 32, 4, 4) and fc.neuron_shape == (10, 1, 1)  # whole input
    assert fc.kernel_memory == 32 * 16 * 16
    first = mapping.layers[0]
    assert first.neuron_memory == 8 * 64 * 64 and first.fitting_cores == (0, 1, 2, 3, 4)
    assert [lay.pooling for lay in mapping.layers] == [2, 2, 2, 1]
    assert sorted(mapping.cores) == [0, 1, 2, 3] and not mapping.leak_enabled


def _iaf():
    return sl.IAFSqueeze(batch_size=-1, min_v_mem=-1.0)


def _conv(c, f, k=3, **kw):
    return nn.Conv2d(c, f, k, bias=False, **kw)


UNFIT = {
    "max pooling": (
        [_conv(2, 4, padding=1), _iaf(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3), _iaf()],
        (2, 8, 8),
        ["conv1: max pooling (module 2) is refused"],
    ),
    "pooling 3": (
        [_conv(2, 4, padding=1), _iaf(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(64, 3), _iaf()],
        (2, 12, 12),
        ["conv1: pooling 3x3; a core pools 1x1, 2x2 or 4x4 only"],
    ),
    "kernel 17": ([_conv(1, 2, 17), _iaf()], (1, 20, 20), ["conv1: kernel 17x17 exceeds 16x16"]),
    "stride 3": ([_conv(1, 2, 3, stride=3), _iaf()], (1, 9, 9), ["conv1: stride (3, 3)"]),
    "non-square linear kernel": (
        [_conv(1, 4, padding=1), _iaf(), nn.Flatten(), nn.Linear(4 * 4 * 2, 3), _iaf()],
        (1, 4, 2),
        ["fc1: kernel (a Linear layer's covers its whole input) 4x2 is not square"],
    ),
    "too many features and neurons": (
        [_conv(1, 1100, 1), _iaf()],
        (1, 16, 16),
        [
            "conv1: 1 input / 1100 output features; at most 1024",
            "conv1: needs kernel memory 2048, neuron memory 281600, bias memory 0; "
            "neuron memory 281600 > 65536",
        ],
    ),
    # sinabs's docs/speck/overview.md example: 16 -> 32 channels, 3x3 on 64x64: 128Ki neurons
    "neuron memory": (
        [_conv(16, 32, padding=1), _iaf()],
        (16, 64, 64),
        ["conv1: needs kernel memory 8192, neuron memory 131072, bias memory 0; neuron memory"],
    ),
    "ten layers": (
        [m for _ in range(10) for m in (_conv(2, 2, 1), _iaf())],
        (2, 4, 4),
        ["network: 10 weighted layers, but the chip has 9 cores (one layer each); conv10"],
    ),
    # kernel memory 64Ki fits only cores 5 and 6: the third such layer has no core left
    "three layers for two cores": (
        [m for _ in range(3) for m in (_conv(64, 64, 3, padding=1), _iaf())],
        (64, 4, 4),
        ["network: conv3 find no free core"],
    ),
}


@pytest.mark.parametrize("case", UNFIT, ids=list(UNFIT))
def test_unfit_network_says_which_layer_and_why(case):
    modules, shape, expected = UNFIT[case]
    mapping = chip.chip_mapping(nn.Sequential(*modules), shape)
    assert not mapping.fits
    for text in expected:
        assert any(p.startswith(text) for p in mapping.problems), (text, mapping.problems)


def test_three_big_layers_use_both_big_cores_before_failing():
    modules, shape, _ = UNFIT["three layers for two cores"]
    mapping = chip.chip_mapping(nn.Sequential(*modules), shape)
    assert all(lay.fitting_cores == (5, 6) for lay in mapping.layers)
    assert sorted(c for c in mapping.cores if c is not None) == [5, 6]
    fits_two = chip.chip_mapping(nn.Sequential(*modules[:4]), shape)
    assert fits_two.fits and sorted(fits_two.cores) == [5, 6]


def test_sinabs_bound_without_min_v_mem_zeroes_the_weights_and_is_reported():
    arch, conversion, _ = CASES["no min_v_mem, threshold 2"]
    variant = chip.discretised_variant(_snn(arch, **conversion), 1.0)
    assert [r.scale for r in variant.layers] == [1.0, 1.0]
    assert [r.min_v_mem for r in variant.layers] == [-(2**15)] * 2
    mapping = chip.chip_mapping(variant.snn, arch.input_shape)
    assert not mapping.fits
    assert any(p.startswith("conv1: every weight is 0") for p in mapping.problems)


def test_threshold_rounded_to_zero_is_reported():
    arch = Architecture(1, 8, 8, 3, (4,), 3, False)
    variant = chip.discretised_variant(_snn(arch), 1e4)  # largest weight ~ 4000: scale < 0.05
    assert variant.layers[0].threshold == 0
    mapping = chip.chip_mapping(variant.snn, arch.input_shape)
    assert any(p.startswith("conv1: threshold 0:") for p in mapping.problems)


def test_non_zero_bias_is_a_leak_flag_not_a_refusal():
    arch = CASES["biases"][0]
    variant = chip.discretised_variant(_snn(arch), 2.0)
    mapping = chip.chip_mapping(variant.snn, arch.input_shape)
    assert mapping.fits and mapping.leak_enabled
    assert all(lay.leak_enabled for lay in mapping.layers)
    assert all(lay.bias_memory == lay.kernel_shape[0] for lay in mapping.layers)
    no_bias = chip.chip_mapping(_snn(CASES["digits-like"][0]), (2, 34, 34))
    assert not no_bias.leak_enabled


# --------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------


def test_core_fan_out_counts_every_kernel_entry_after_sum_pooling():
    arch = Architecture(2, 16, 16, 5, (4, 6), 3, False)
    snn = _snn(arch)
    fan = chip.core_fan_out(snn, arch.input_shape)
    assert [f.shape for f in fan] == [(2, 16, 16), (4, 16, 16), (6, 8, 8)]
    # an inner input pixel of a stride-1 3x3 convolution: C_out * k * k (sinabs's estimate)
    assert fan[0][0, 8, 8] == 4 * 3 * 3 and fan[0][0, 0, 0] == 4 * 2 * 2
    # a spike of conv1 is pooled 2x2 into one event of conv2 (6 channels, 3x3)
    assert fan[1][0, 8, 8] == 6 * 9 and fan[1][0, 0, 0] == 6 * 4
    assert (fan[2] == 5).all()  # the read-out: every class, once
    # the float network has no zero weight: evaluate's count agrees there
    from spikescale.evaluate import fan_out, segments

    shapes = [arch.input_shape, (4, 16, 16), (6, 8, 8)]
    for ours, seg, shape in zip(fan, segments(snn), shapes):
        assert np.array_equal(ours, fan_out(seg, shape))
    # on the chip variant pools sum and small weights are 0: the chip still reads them
    variant = chip.discretised_variant(snn, 1.0).snn
    assert all(np.array_equal(a, b) for a, b in zip(fan, chip.core_fan_out(variant, (2, 16, 16))))


def test_synops_rates_mean_and_peak_against_the_limit():
    per_sample = np.array([[100.0, 10.0], [300.0, 30.0]])  # 2 samples, 2 layers, 0.1 s each
    rates = chip.synops_rates(per_sample, 0.1, limit_synops_per_second_per_core=2500.0)
    assert rates.mean_synops_per_second == (2000.0, 200.0)
    assert rates.peak_synops_per_second == (3000.0, 300.0)
    assert rates.peak_from == ("samples", "samples") and rates.busiest == 0
    assert rates.over_limit == (True, False) and not rates.within_limit
    assert rates.peak_fraction_of_limit == pytest.approx(1.2)
    per_bin = np.zeros((2, 100, 2))
    per_bin[1, 7] = [50.0, 1.0]  # one busy millisecond
    binned = chip.synops_rates(
        per_sample, 0.1, per_bin, 0.001, limit_synops_per_second_per_core=1e6
    )
    assert binned.peak_synops_per_second == (50_000.0, 1000.0)
    assert binned.peak_from == ("time_bins", "time_bins") and binned.within_limit
    # bins of the first layer only (what the evaluation counts): the others from samples
    first = chip.synops_rates(
        per_sample, 0.1, per_bin[:, :, :1], 0.001, limit_synops_per_second_per_core=1e6
    )
    assert first.peak_synops_per_second == (50_000.0, 300.0)
    assert first.peak_from == ("time_bins", "samples")
    # a bin's peak is never below the mean of its sample
    even = np.full((2, 100, 1), 3.0)
    assert chip.synops_rates(
        per_sample, 0.1, even, 0.001, limit_synops_per_second_per_core=1e6
    ).peak_synops_per_second == (3000.0, 300.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"duration_s": 0.0}, "duration_s must be a finite number > 0"),
        ({"synops_per_bin": np.zeros((5, 3)), "bin_s": 0.001}, r"1 <= k <= 2 layers"),
        ({"synops_per_bin": np.zeros((5, 2))}, "bin_s must be a finite number > 0"),
        ({"synops_per_bin": -np.ones((5, 2)), "bin_s": 0.001}, "finite counts >= 0"),
        ({"limit_synops_per_second_per_core": 0.0}, "hardware.synops_per_second_per_core"),
        ({"limit_synops_per_second_per_core": float("inf")}, "finite number > 0"),
    ],
)
def test_synops_rates_refuse_bad_input_by_name(kwargs, message):
    args = {
        "synops_per_sample": np.ones((3, 2)),
        "duration_s": 0.3,
        "limit_synops_per_second_per_core": 1e8,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        chip.synops_rates(**args)


# --------------------------------------------------------------------------------------
# sinabs without samna
# --------------------------------------------------------------------------------------

_GUARD = r"""
import json, pkgutil, importlib, importlib.util, subprocess, sys
events = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec"):
        events.append([event, repr(args)])
    elif event == "import" and (args[0] == "samna" or args[0].startswith(("samna.",
            "sinabs.backend.dynapcnn"))):
        events.append([event, args[0]])
sys.addaudithook(hook)
import spikescale
for info in pkgutil.iter_modules(spikescale.__path__):
    importlib.import_module("spikescale." + info.name)
import numpy as np, torch
from spikescale import chip
from spikescale.model import Architecture, build_cnn, to_snn
from spikescale.params import ConversionParams
from spikescale.simulate import simulate
arch = Architecture(2, 16, 16, 5, (4,), 3, True)
snn = to_snn(build_cnn(arch), arch, ConversionParams())
variant = chip.discretised_variant(snn, 4.0)
chip.chip_mapping(variant.snn, arch.input_shape)
chip.synops_rates(np.ones((2, 2)), 0.3, limit_synops_per_second_per_core=1e8)
for backend in ("sinabs", "fast"):
    simulate(variant.snn, torch.ones(1, 3, 2, 16, 16), np.array([2]), backend=backend)
loaded = sorted(m for m in sys.modules if m == "samna" or m.startswith(("samna.",
    "sinabs.backend.dynapcnn")))
work = list(events)
# controls: the hook must see a subprocess and an import named samna: an empty module of
# the test's own, first on the path and checked to be the one found, so that the real
# stub (which runs pip) is never imported
subprocess.run([sys.executable, "-c", "pass"], check=True)
sys.path.insert(0, sys.argv[1])
importlib.invalidate_caches()
spec = importlib.util.find_spec("samna")
if spec is None or spec.origin != sys.argv[1] + "/samna.py":
    sys.exit(f"the control would import {spec and spec.origin}, not the test's empty samna")
import samna
print(json.dumps({"events": work, "loaded": loaded, "control": events[len(work):]}))
"""


def test_no_import_or_chip_function_runs_pip_or_imports_samna(tmp_path):
    (tmp_path / "samna.py").write_text("")
    out = subprocess.run(
        [sys.executable, "-c", _GUARD, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert [e[0] for e in seen["control"]] == ["subprocess.Popen", "import"]
    assert not [e for e in seen["events"] if "pip" in e[1] or e[0] == "import"], seen["events"]
    assert seen["loaded"] == []
