"""The fast simulation backend against the sinabs reference.

With dyadic weights (multiples of 1/16, finer with the fan-in) and pooling divisors that
are powers of two (windows of any shape and stride, those of 3 with a ``divisor_override``)
every synaptic sum is exact in float32, whatever the order in which torch adds it up;
there the backends must
agree exactly, spike for spike, for any threshold, reset, spike function and membrane
bound (those are elementwise float32 operations that the fast backend repeats in sinabs's
order). With arbitrary float weights torch's float32 sums and the fast backend's (float32
too, added in another order) can differ by an ulp or a few, so there the check is the
tolerance of the issue: identical predictions, spike totals within 0.1 %.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
import sinabs
import sinabs.layers as sl
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from torch import nn

from spikescale.simulate import simulate, simulate_fast_cpu, simulate_fast_torch
from spikescale.simulate.event_driven.blocks import block_unchecked
from spikescale.simulate.event_driven.simd import accumulate_loop, accumulate_simd
from spikescale.simulate.graph import pair


@pytest.fixture(autouse=True)
def _no_grad():
    """Simulation needs no autograd; restored after each test (later tests train)."""
    with torch.no_grad():
        yield


def iaf(cfg: dict) -> sl.IAFSqueeze:
    return sl.IAFSqueeze(
        num_timesteps=-1,
        batch_size=1,
        spike_threshold=cfg["threshold"],
        spike_fn=cfg["spike_fn"],
        reset_fn=cfg["reset_fn"],
        min_v_mem=cfg["min_v_mem"],
    )


def assert_same(a, b) -> None:
    assert len(a.layer_counts) == len(b.layer_counts)
    for i, (x, y) in enumerate(zip(a.layer_counts, b.layer_counts)):
        assert x.shape == y.shape, (i, x.shape, y.shape)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=f"spiking layer {i}")
    assert a.output_over_time.shape == b.output_over_time.shape
    np.testing.assert_array_equal(a.output_over_time, b.output_over_time)


# ---------------------------------------------------------------------------------------
# random networks


@st.composite
def neuron_configs(draw) -> dict:
    reset = draw(st.sampled_from(["subtract", "subtract_value", "zero", "value"]))
    if reset == "subtract":
        reset_fn = MembraneSubtract()
    elif reset == "subtract_value":
        reset_fn = MembraneSubtract(subtract_value=draw(st.floats(0.25, 2.0, width=32)))
    elif reset == "zero":
        reset_fn = MembraneReset()
    else:  # sinabs adds a non-zero reset value to every non-spiking neuron at every step
        reset_fn = MembraneReset(reset_value=draw(st.floats(-0.5, 0.5, width=32)))
    return {
        "spike_fn": draw(st.sampled_from([MultiSpike, SingleSpike])),
        "reset_fn": reset_fn,
        "threshold": draw(st.floats(0.25, 3.0, width=32)),
        # a positive bound too: then the resting state moves at the first step
        "min_v_mem": draw(st.one_of(st.none(), st.floats(-3.0, 0.5, width=32))),
    }


def _conv_out(n: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _power_of_two_at_least(n: int) -> int:
    return 1 << int(np.ceil(np.log2(n)))


@st.composite
def conv_layers(draw, shape: tuple[int, int, int]) -> tuple[nn.Conv2d, tuple[int, int, int]]:
    """A convolution as researchers write them: square or not, strided, padded (numbers,
    pairs, "same", "valid"), dilated, grouped, with or without bias; sometimes wide (16-40
    channels, so that the scatter's 8 / 16 / 32-lane sums run)."""
    c, h, w = shape
    kh = draw(st.integers(1, min(3, h)))
    kw = draw(st.integers(1, min(3, w))) if draw(st.booleans()) else min(kh, w)
    stride = draw(st.sampled_from([1, 1, 1, 2, 3, (1, 2), (2, 1)]))
    sh, sw = pair(stride)
    dilation = 1
    if draw(st.integers(0, 3)) == 0 and min(h, w) > 2 * max(kh, kw):
        dilation = draw(st.sampled_from([2, (1, 2), (2, 1)]))
    dh, dw = pair(dilation)
    pad_kind = draw(st.sampled_from(["int", "int", "pair", "same", "valid"]))
    if pad_kind == "same" and (sh, sw) == (1, 1):
        padding: int | tuple[int, int] | str = "same"
        out_hw = (h, w)
    elif pad_kind == "valid":
        padding, out_hw = "valid", (_conv_out(h, kh, sh, 0, dh), _conv_out(w, kw, sw, 0, dw))
    else:
        ph = draw(st.integers(0, kh // 2 + 1))
        pw = draw(st.integers(0, kw // 2 + 1)) if pad_kind == "pair" else ph
        padding = (ph, pw) if pad_kind == "pair" else ph
        out_hw = (_conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw))
    assume(min(out_hw) >= 1)
    wide = draw(st.integers(0, 4)) == 0
    out_c = draw(st.integers(16, 40) if wide else st.integers(1, 5))
    groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0 and out_c % g == 0]))
    conv = nn.Conv2d(
        c, out_c, (kh, kw), stride, padding, dilation, groups, bias=draw(st.booleans())
    )
    return conv, (out_c, *out_hw)


@st.composite
def pool_layers(draw, shape: tuple[int, int, int]) -> tuple[nn.AvgPool2d, tuple[int, int, int]]:
    """Average pooling with any window: tiling (kernel = stride), overlapping (stride <
    kernel), with gaps (stride > kernel), padded (zeros counted, as torch's default does).
    Windows of 3 get a divisor that is a power of two, so that the pooled values stay
    dyadic and every sum after them exact; the geometry is what is tested."""
    c, h, w = shape
    kh, kw = draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))
    if kh * kw == 1:
        kh = kw = min(2, h, w)
    tiling = draw(st.booleans())
    if tiling:
        stride: tuple[int, int] = (kh, kw)
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (0, 0)
    if not tiling and max(kh, kw) > 1 and draw(st.booleans()):
        padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    area = kh * kw
    divisor = None if area == _power_of_two_at_least(area) else _power_of_two_at_least(area)
    pool = nn.AvgPool2d((kh, kw), stride, padding, divisor_override=divisor)
    out = (
        c,
        _conv_out(h, kh, stride[0], padding[0], 1),
        _conv_out(w, kw, stride[1], padding[1], 1),
    )
    return pool, out


@st.composite
def cases(draw):
    """(model, raster, checkpoints): a conv / pool / linear stack as sinabs's conversion
    builds it (and some it does not: pooling before the neurons, two weighted layers in a
    row, neurons on a flattened map), with neuron settings drawn per layer."""
    cfg = draw(neuron_configs())  # most layers share one setting, as after conversion
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    batch = draw(st.integers(1, 3))
    steps = draw(st.integers(1, 24))
    mlp = draw(st.integers(0, 3)) == 0  # a quarter: 1-d input, linear layers only
    layers: list[nn.Module] = []
    if mlp:
        in_shape: tuple[int, ...] = (draw(st.integers(1, 40)),)
        shape = in_shape
    else:
        in_shape = (draw(st.integers(1, 4)), draw(st.integers(3, 10)), draw(st.integers(3, 10)))
        shape = in_shape
        for _ in range(draw(st.integers(1, 3))):
            conv, shape = draw(conv_layers(shape))
            layers.append(conv)
            if min(shape[1:]) >= 2 and draw(st.integers(0, 4)) == 0:
                pool, shape = draw(pool_layers(shape))  # pooling of the currents
                layers.append(pool)
            elif draw(st.integers(0, 5)) == 0:
                continue  # two weighted layers without neurons in between
            layers.append(iaf(draw(neuron_configs()) if draw(st.integers(0, 3)) == 0 else cfg))
            if min(shape[1:]) >= 2 and draw(st.booleans()):
                pool, shape = draw(pool_layers(shape))
                layers.append(pool)
        layers.append(nn.Flatten())
        shape = (int(np.prod(shape)),)
    if mlp or draw(st.integers(0, 5)) > 0:
        for _ in range(draw(st.integers(1, 2))):
            out = draw(st.integers(1, 6) if draw(st.integers(0, 3)) else st.integers(7, 40))
            layers += [nn.Linear(shape[0], out, bias=draw(st.booleans())), iaf(cfg)]
            shape = (out,)
    else:
        layers.append(iaf(cfg))  # neurons on the flattened feature map
    for m in layers:
        # dyadic weights, mostly excitatory so that spikes flow, scaled down by a power of
        # two with the fan-in so that activity stays in the range where float32 sums of
        # them are exact (below 2**24 units of the finest weight)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            unit = 16.0 * 2.0 ** max(0, int(np.ceil(np.log2(fan_in / 4))))
            m.weight.copy_(torch.from_numpy(rng.integers(-20, 36, m.weight.shape) / unit))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(rng.integers(-8, 9, m.bias.shape) / 16.0))
    density = draw(st.sampled_from([0.05, 0.2, 0.6]))
    active = rng.random((batch, steps, *in_shape)) < density
    raster = torch.from_numpy(active * rng.integers(1, 4, active.shape)).float()
    checkpoints = np.array(
        draw(st.lists(st.integers(-steps, steps - 1), min_size=1, max_size=4)), dtype=np.int64
    )
    return nn.Sequential(*layers), raster, checkpoints


# tests/test_simulate_checked.py reruns this module with bounds checks, on fewer examples
EXAMPLES = int(os.environ.get("SPIKESCALE_TEST_EXAMPLES", "80"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(cases())
def test_fast_cpu_equals_sinabs_exactly(case):
    model, raster, checkpoints = case
    reference = simulate(model, raster, checkpoints, backend="sinabs")
    assert_same(simulate(model, raster, checkpoints, backend="fast"), reference)


@settings(
    max_examples=min(25, EXAMPLES), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cases(), st.integers(1, 7))
def test_fast_torch_equals_sinabs_exactly(case, chunk):
    """The dense torch path (the one that runs on CUDA), with time split into chunks."""
    model, raster, checkpoints = case
    reference = simulate(model, raster, checkpoints, backend="sinabs")
    per_step = max(int(np.prod(raster.shape[2:])), 1) * raster.shape[0]
    fast = simulate_fast_torch(model, raster, checkpoints, chunk_elements=chunk * per_step * 8)
    assert_same(fast, reference)


# ---------------------------------------------------------------------------------------
# an N-MNIST-like network with arbitrary float weights


def sparse_stream(batch: int, steps: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    active = rng.random((batch, steps, 2, 16, 16)) < 0.02
    return torch.from_numpy(active * rng.integers(1, 3, active.shape)).float()


def nmnist_like(spike_fn, reset_fn, min_v_mem, steps: int, factor: float = 8.0):
    """A smaller cousin of the benchmark's CNN, normalised on whole-sample frames (99th
    percentile of the non-zero activations per layer) and scaled by ``factor``."""
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10, bias=False),
    )
    x, previous = sparse_stream(32, steps, seed=99).sum(1), 1.0
    for m in cnn:
        x = m(x)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            scale = float(np.percentile(x[x > 0].numpy(), 99))
            m.weight.mul_(previous / scale)
            x, previous = x / scale, 1.0
    cnn[0].weight.mul_(factor)
    return sinabs.from_model(
        cnn,
        input_shape=(2, 16, 16),
        num_timesteps=steps,
        add_spiking_output=True,
        spike_threshold=1.0,
        spike_fn=spike_fn,
        reset_fn=reset_fn,
        min_v_mem=min_v_mem,
    ).spiking_model


def predictions(counts: np.ndarray) -> np.ndarray:
    pred = counts.argmax(1)
    pred[counts.sum(1) == 0] = -1
    return pred


@pytest.mark.parametrize(
    "spike_fn, reset_fn, min_v_mem",
    [
        (MultiSpike, MembraneSubtract(), -1.0),
        (MultiSpike, MembraneReset(), None),
        (SingleSpike, MembraneSubtract(), None),
        (SingleSpike, MembraneReset(), -1.0),
    ],
)
def test_float_weights_agree_with_sinabs(spike_fn, reset_fn, min_v_mem):
    steps = 100
    model = nmnist_like(spike_fn, reset_fn, min_v_mem, steps)
    raster = sparse_stream(24, steps, seed=1)
    checkpoints = np.array([0, 49, 99])
    ref = simulate(model, raster, checkpoints, backend="sinabs")
    fast = simulate(model, raster, checkpoints, backend="fast")
    assert sum(int(c.sum()) for c in ref.layer_counts[:-1]) > 1000  # the network is active
    assert (predictions(ref.output_counts) >= 0).mean() > 0.5
    np.testing.assert_array_equal(predictions(fast.output_counts), predictions(ref.output_counts))
    for a, b in zip(ref.layer_counts, fast.layer_counts):
        total = int(a.sum())
        assert abs(int(b.sum()) - total) <= max(1, total // 1000)
        # float-order differences move a spike here and there, never many
        assert (a != b).mean() < 1e-3


# ---------------------------------------------------------------------------------------
# interface


def small_model(**kw) -> nn.Sequential:
    cfg = {
        "spike_fn": MultiSpike,
        "reset_fn": MembraneSubtract(),
        "threshold": 1.0,
        "min_v_mem": -1.0,
    } | kw
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        iaf(cfg),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
        iaf(cfg),
    )


def test_checkpoints_read_cumulative_output():
    model = small_model()
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.mul_(4)
    raster = sparse_stream(3, 20, seed=2)[:, :, :, :8, :8].contiguous() * 3
    checkpoints = np.array([19, 0, 5, 5, -1])
    fast = simulate(model, raster, checkpoints, backend="fast")
    ref = simulate(model, raster, checkpoints, backend="sinabs")
    assert fast.output_over_time.shape == (3, 5, 3)
    np.testing.assert_array_equal(fast.output_over_time[:, 0], fast.output_counts)
    np.testing.assert_array_equal(fast.output_over_time[:, 4], fast.output_counts)
    np.testing.assert_array_equal(fast.output_over_time, ref.output_over_time)
    assert fast.output_counts.sum() > 0


def test_sinabs_network_and_explicit_device_are_accepted():
    model = small_model()
    net = sinabs.network.Network(None, model)
    raster = sparse_stream(2, 10, seed=3)[:, :, :, :8, :8].contiguous()
    a = simulate(net, raster, np.array([9]), backend="fast", device="cpu")
    b = simulate(model, raster, np.array([9]), backend="sinabs")
    assert_same(a, b)


def test_empty_raster_and_silent_network():
    model = small_model()
    raster = torch.zeros(2, 5, 2, 8, 8)
    out = simulate_fast_cpu(model, raster, np.array([4]))
    assert all(c.sum() == 0 for c in out.layer_counts)
    assert [c.shape for c in out.layer_counts] == [(2, 4, 8, 8), (2, 3)]


@pytest.mark.parametrize(
    "layer, needle",
    [
        (nn.BatchNorm2d(4), "BatchNorm2d"),
        (nn.MaxPool2d(2), "MaxPool2d"),
        (nn.ReLU(), "ReLU"),
        (sl.LIFSqueeze(tau_mem=10.0, num_timesteps=-1, batch_size=1), "LIFSqueeze"),
    ],
)
def test_unsupported_layer_is_named(layer, needle):
    model = small_model()
    model.insert(1, layer)
    raster = torch.zeros(1, 3, 2, 8, 8)
    with pytest.raises(ValueError, match=needle) as err:
        simulate(model, raster, np.array([2]), backend="fast")
    assert "'1'" in str(err.value)  # the layer's name in the Sequential


def test_unsupported_neuron_options_are_named():
    model = small_model(threshold=torch.ones(4, 8, 8))
    with pytest.raises(ValueError, match="spike_threshold"):
        simulate(model, torch.zeros(1, 2, 2, 8, 8), np.array([1]), backend="fast")
    with pytest.raises(ValueError, match="unknown backend"):
        simulate(small_model(), torch.zeros(1, 2, 2, 8, 8), np.array([1]), backend="exodus")


def test_threads_do_not_change_results():
    model = nmnist_like(MultiSpike, MembraneSubtract(), -1.0, steps=30)
    raster = sparse_stream(5, 30, seed=4)
    one = simulate_fast_cpu(model, raster, np.array([29]), n_threads=1)
    assert_same(simulate_fast_cpu(model, raster, np.array([29]), n_threads=3), one)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("padding, kernel", [("same", 2), ("same", 3), ("valid", 3), (2, 2)])
def test_string_and_asymmetric_padding(padding, kernel):
    torch.manual_seed(1)
    cfg = {
        "spike_fn": MultiSpike,
        "reset_fn": MembraneSubtract(),
        "threshold": 0.5,
        "min_v_mem": None,
    }
    model = nn.Sequential(
        nn.Conv2d(2, 3, kernel, padding=padding, bias=True), iaf(cfg), nn.Flatten(), iaf(cfg)
    )
    model[0].weight.copy_(torch.randint(-8, 24, model[0].weight.shape) / 16)
    model[0].bias.copy_(torch.randint(-4, 4, model[0].bias.shape) / 16)
    raster = sparse_stream(2, 12, seed=5)[:, :, :, :7, :6].contiguous()
    checkpoints = np.array([3, 11])
    assert_same(
        simulate(model, raster, checkpoints, backend="fast"),
        simulate(model, raster, checkpoints, backend="sinabs"),
    )


@numba.njit
def _call_accumulate_simd(acc, ab, span, xs, offs, n, w, wb):
    accumulate_simd(acc, ab, span, xs, offs, n, w, wb)


@numba.njit
def _call_accumulate_loop(acc, ab, span, xs, offs, n, w, wb):
    accumulate_loop(acc, ab, span, xs, offs, n, w, wb)


@pytest.mark.parametrize("helper", [_call_accumulate_simd, _call_accumulate_loop])
@pytest.mark.parametrize("span", [1, 7, 8, 9, 16, 23, 24, 31, 32, 33, 48, 65, 96, 100])
@pytest.mark.parametrize("n", [0, 1, 6])
def test_accumulate_sums_terms_in_order(helper, span, n):
    """The scatter's LLVM IR helper and its plain-loop twin: every accumulator ends with
    the float32 sum that a plain loop over the terms gives, bit for bit, however its lanes
    fall into registers (32, 16 and 8 lanes, then single ones); nothing outside its range
    changes."""
    rng = np.random.default_rng(100 * span + n)
    w = rng.standard_normal(6 * span + 20).astype(np.float32)
    xs = rng.standard_normal(n).astype(np.float32)
    offs = (rng.permutation(6)[:n] * span).astype(np.int64)
    acc = rng.standard_normal(span + 7).astype(np.float32)
    expected = acc.copy()
    for x, off in zip(xs, offs):
        expected[3 : 3 + span] = expected[3 : 3 + span] + x * w[11 + off : 11 + off + span]
    helper(acc, 3, span, xs, offs, n, w, 11)
    np.testing.assert_array_equal(acc, expected)


@numba.njit
def _write_through_block(a, start, n):
    view = block_unchecked(a, start, n)
    for i in range(view.shape[0]):
        view[i] = -view[i]
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
@pytest.mark.parametrize(("start", "n"), [(0, 0), (0, 10), (3, 4), (9, 1), (10, 0)])
def test_unchecked_block_is_the_slice(dtype, start, n):
    """The kernels' unchecked view is ``a[start:start + n]``: same values, and writes go
    through to ``a``."""
    a = np.arange(1, 11, dtype=dtype)
    view = _write_through_block(a, start, n)
    expected = np.arange(1, 11, dtype=dtype)
    expected[start : start + n] *= -1
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(view, a[start : start + n])
    assert view.dtype == a.dtype


@pytest.mark.skipif(
    os.environ.get("SPIKESCALE_PLAIN_ACCUMULATE") != "1", reason="the checked build only"
)
def test_checked_build_checks():
    """Run by tests/test_simulate_checked.py: the kernels use the plain-loop twin, and
    numba's bounds checks are on (an index past the end raises)."""
    from spikescale.simulate.event_driven import blocks, simd

    assert simd.accumulate is simd.accumulate_loop and numba.config.BOUNDSCHECK
    assert blocks.block is blocks.block_checked
    acc, xs, offs, w = (
        np.zeros(4, np.float32),
        np.ones(1, np.float32),
        np.zeros(1, np.int64),
        np.ones(8, np.float32),
    )
    with pytest.raises(IndexError):
        _call_accumulate_loop(acc, 0, 5, xs, offs, 1, w, 0)


# widths whose spans take every path of the SIMD helper: single lanes, 8, 16 and 32 lanes
# and their mixtures (63 = 32 + 16 + 8 + 7)
LANE_WIDTHS = [1, 5, 8, 16, 24, 32, 40, 63]


@pytest.mark.parametrize("width", LANE_WIDTHS)
def test_every_lane_width_equals_sinabs_exactly(width):
    """Networks wide enough for every lane width of :func:`accumulate_simd`: a convolution
    of ``width`` output channels (its row scatter sums spans of 1-3 positions of ``width``
    channels) and a linear layer of ``width`` outputs, with dyadic weights, against
    sinabs spike for spike."""
    torch.manual_seed(width)
    model = nn.Sequential(
        nn.Conv2d(2, width, 3, padding=1, bias=False),
        sl.IAFSqueeze(batch_size=1),
        nn.AvgPool2d(2),
        nn.Conv2d(width, 8, 3, padding=1, bias=True),
        sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike, reset_fn=MembraneReset()),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, width, bias=False),
        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
    )
    dyadic(model)
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.mul_(4.0)
    rng = np.random.default_rng(width)
    active = rng.random((2, 30, 2, 8, 8)) < 0.3
    raster = torch.from_numpy(active * rng.integers(1, 3, active.shape)).float()
    checkpoints = np.array([0, 14, 29])
    fast = simulate(model, raster, checkpoints, backend="fast")
    assert_same(fast, simulate(model, raster, checkpoints, backend="sinabs"))
    assert all(c.sum() > 0 for c in fast.layer_counts), "a silent layer compares nothing"


# ---------------------------------------------------------------------------------------
# the worked example network (examples/strided_bn.py): strided 5x5 convolution, folded
# batch norm (biases), max pooling made average pooling, a hidden fully connected layer


def dyadic(model: nn.Sequential) -> nn.Sequential:
    """The model with its weights and biases rounded to multiples of a power of two (finer
    with the fan-in), so that every float32 sum in it is exact in any order."""
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            unit = 4.0 * 2.0 ** int(np.ceil(np.log2(fan_in)))
            m.weight.copy_((m.weight * unit * 8).round() / unit)
            if m.bias is not None:
                m.bias.copy_((m.bias * 64).round() / 64)
    return model


@pytest.mark.parametrize(
    "spike_fn, reset_fn, min_v_mem",
    [(MultiSpike, MembraneSubtract(), -1.0), (SingleSpike, MembraneReset(), None)],
)
def test_example_network_all_backends_agree_exactly(spike_fn, reset_fn, min_v_mem):
    from example_network import INPUT_SHAPE, example_cnn, example_snn

    snn = example_snn(dyadic(example_cnn(seed=3)), spike_fn, reset_fn, min_v_mem)
    kinds = [type(m).__name__ for m in snn]
    assert kinds == [
        "Conv2d",
        "IAFSqueeze",
        "Conv2d",
        "IAFSqueeze",
        "AvgPool2d",
        "Conv2d",
        "IAFSqueeze",
        "AvgPool2d",
        "Flatten",
        "Linear",
        "IAFSqueeze",
        "Linear",
        "IAFSqueeze",
    ]
    assert snn[0].stride == (2, 2) and snn[0].bias is not None  # batch norm folded in
    rng = np.random.default_rng(7)
    active = rng.random((3, 30, *INPUT_SHAPE)) < 0.03
    raster = torch.from_numpy(active * rng.integers(1, 3, active.shape)).float()
    checkpoints = np.array([0, 14, 29])
    reference = simulate(snn, raster, checkpoints, backend="sinabs")
    assert all(c.sum() > 0 for c in reference.layer_counts)  # spikes reach every layer
    assert_same(simulate(snn, raster, checkpoints, backend="fast"), reference)
    assert_same(simulate_fast_torch(snn, raster, checkpoints, chunk_elements=1 << 16), reference)


def test_example_network_float_weights_agree_with_sinabs():
    """With float weights torch and the fast backend add up currents in different orders;
    on the example network that may move a spike here and there, never a prediction."""
    from example_network import INPUT_SHAPE, example_cnn, example_snn, normalised

    steps = 60
    rng = np.random.default_rng(11)
    active = rng.random((8, steps, *INPUT_SHAPE)) < 0.03
    raster = torch.from_numpy(active * rng.integers(1, 3, active.shape)).float()
    cnn = normalised(example_cnn(seed=4), raster.sum(1))
    cnn[0].weight.mul_(8)
    cnn[0].bias.mul_(8)
    snn = example_snn(cnn, bias_rescaling=steps)  # a normalisation frame held all the steps
    checkpoints = np.array([steps - 1])
    ref = simulate(snn, raster, checkpoints, backend="sinabs")
    fast = simulate(snn, raster, checkpoints, backend="fast")
    assert (predictions(ref.output_counts) >= 0).all()
    np.testing.assert_array_equal(predictions(fast.output_counts), predictions(ref.output_counts))
    for a, b in zip(ref.layer_counts, fast.layer_counts):
        total = int(a.sum())
        assert total > 0
        assert abs(int(b.sum()) - total) <= max(1, total // 1000)
        assert (a != b).mean() < 1e-3


@pytest.mark.parametrize(
    "pool, needle",
    [
        (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
        (nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), "count_include_pad"),
    ],
)
def test_pooling_the_fast_backend_cannot_repeat_is_refused(pool, needle):
    model = small_model()
    model[2] = pool
    with pytest.raises(ValueError, match=needle) as err:
        simulate(model, torch.zeros(1, 3, 2, 8, 8), np.array([2]), backend="fast")
    assert "'2'" in str(err.value)
    with pytest.raises(ValueError, match=needle):
        simulate_fast_torch(model, torch.zeros(1, 3, 2, 8, 8), np.array([2]))


def test_reflect_padding_is_refused():
    model = small_model()
    model[0] = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", bias=False)
    with pytest.raises(ValueError, match="padding_mode 'reflect'"):
        simulate(model, torch.zeros(1, 3, 2, 8, 8), np.array([2]), backend="fast")
