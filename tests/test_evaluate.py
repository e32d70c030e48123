import itertools

import numpy as np
import pytest
import torch
from torch import nn

from spikescale.collect import pareto_front, recommend
from spikescale.evaluate import (
    checkpoints,
    cnn_expectation,
    fan_out,
    layer_names,
    macs,
    predictions,
    segments,
)
from spikescale.simulate import simulate


def test_a_sample_without_output_spikes_has_no_prediction():
    counts = np.array([[0, 0, 0], [0, 2, 1], [3, 3, 0]])
    assert predictions(counts).tolist() == [-1, 1, 0]


def test_fan_out_counts_every_synapse_through_pooling():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    seg = nn.Sequential(nn.AvgPool2d(2), conv)
    fan = fan_out(seg, (2, 9, 9))
    # brute force: a spike at (c, y, x) enters pool cell (y//2, x//2) unless cropped,
    # then reaches every output of the conv whose kernel covers that cell
    expected = np.zeros((2, 9, 9))
    for c in range(2):
        for y in range(9):
            for x in range(9):
                py, px = y // 2, x // 2
                if py >= 4 or px >= 4:
                    continue
                targets = sum(
                    1
                    for oy in range(4)
                    for ox in range(4)
                    if abs(oy - py) <= 1 and abs(ox - px) <= 1
                )
                expected[c, y, x] = 3 * targets
    assert np.array_equal(fan, expected)


def _pairs(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _edges(layer: nn.Module, shape: tuple[int, ...]):
    """Brute force: (output shape, {input neuron: [output neuron per synapse or window]})."""
    edges: dict[tuple, list[tuple]] = {}
    if isinstance(layer, nn.Flatten):
        out = (int(np.prod(shape)),)
        for i, idx in enumerate(itertools.product(*map(range, shape))):
            edges[idx] = [(i,)]
        return out, edges
    if isinstance(layer, nn.Linear):
        for i in range(shape[0]):
            edges[(i,)] = [(o,) for o in range(layer.out_features) if layer.weight[o, i] != 0]
        return (layer.out_features,), edges
    c, h, w = shape
    (kh, kw), (sh, sw) = _pairs(layer.kernel_size), _pairs(layer.stride)
    if isinstance(layer, nn.Conv2d):
        (dh, dw) = _pairs(layer.dilation)
        if layer.padding == "same":
            ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
        else:
            ph, pw = _pairs(layer.padding)
    else:
        (dh, dw), (ph, pw) = (1, 1), _pairs(layer.padding)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if layer.padding == "same":
        ho, wo = h, w
    out_c = layer.out_channels if isinstance(layer, nn.Conv2d) else c
    for ci, y, x in itertools.product(range(c), range(h), range(w)):
        targets = []
        for oy, ox, ky, kx in itertools.product(range(ho), range(wo), range(kh), range(kw)):
            if oy * sh - ph + ky * dh != y or ox * sw - pw + kx * dw != x:
                continue
            if isinstance(layer, nn.AvgPool2d):
                targets.append((ci, oy, ox))
                continue
            cig, cog = c // layer.groups, out_c // layer.groups
            for o in range((ci // cig) * cog, (ci // cig + 1) * cog):
                if layer.weight[o, ci % cig, ky, kx] != 0:
                    targets.append((o, oy, ox))
        edges[(ci, y, x)] = targets
    return (out_c, ho, wo), edges


def brute_force_fan_out(segment: nn.Sequential, input_shape: tuple[int, ...]) -> np.ndarray:
    """Paths from each input neuron to the segment's outputs, layer by layer."""
    shapes, maps = [tuple(input_shape)], []
    for layer in segment:
        out, edges = _edges(layer, shapes[-1])
        shapes.append(out)
        maps.append(edges)
    paths = np.ones(shapes[-1])
    for edges, shape in zip(reversed(maps), reversed(shapes[:-1])):
        before = np.zeros(shape)
        for idx, targets in edges.items():
            before[idx] = sum(paths[t] for t in targets)
        paths = before
    return paths


def _sparse(layer: nn.Module, seed: int) -> nn.Module:
    """Weights with zeros (no synapse there) and biases, which fan-out must ignore."""
    torch.manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape) > 0.3).float())
    return layer


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    "segment, shape",
    [
        # overlapping, padded pool windows, then a strided grouped convolution
        (
            [nn.AvgPool2d(3, 1, padding=1), nn.Conv2d(4, 6, 3, 2, 1, groups=2)],
            (4, 7, 7),
        ),
        # rectangular kernel, rectangular stride, padding and dilation, depthwise-ish groups
        ([nn.Conv2d(3, 6, (3, 2), (2, 1), (1, 0), (1, 2), groups=3)], (3, 8, 9)),
        # pool windows with gaps between them (stride > kernel), flatten, linear
        ([nn.AvgPool2d(2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 5)], (2, 8, 8)),
        # "same" padding with dilation, a kernel of even size
        ([nn.Conv2d(2, 4, 2, padding="same", dilation=2, bias=False)], (2, 6, 5)),
    ],
)
def test_fan_out_equals_a_brute_force_count(segment, shape):
    seg = nn.Sequential(
        *[_sparse(m, i) if hasattr(m, "weight") else m for i, m in enumerate(segment)]
    )
    expected = brute_force_fan_out(seg, shape)
    assert expected.sum() > 0
    np.testing.assert_array_equal(fan_out(seg, shape), expected)


def test_macs_of_grouped_strided_conv():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    # output 6 x 4 x 4, each output sums 2 input channels x 9 kernel positions
    assert macs(nn.Sequential(nn.AvgPool2d(3, 1, 1), conv), (4, 7, 7)) == 6 * 16 * 2 * 9
    assert macs(nn.Sequential(nn.Conv2d(3, 6, (3, 2), (2, 1), dilation=(1, 2))), (3, 8, 9)) == (
        6 * 3 * 7 * 3 * 6
    )


def test_example_network_diagnostics_line_up_with_its_spiking_layers():
    """On the worked example: a name, a segment, a fan-out and an expectation for every
    spiking layer, shaped like that layer's spike counts."""
    from example_network import INPUT_SHAPE, example_cnn, example_snn

    cnn = example_cnn(seed=1)
    snn = example_snn(cnn)
    assert layer_names(snn) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    segs = segments(snn)
    raster = torch.poisson(torch.full((2, 5, *INPUT_SHAPE), 0.3))
    result = simulate(snn, raster, np.array([4]), backend="fast")
    expected = cnn_expectation(cnn, raster.mean(1), 5)
    assert len(segs) == len(result.layer_counts) == len(expected) == 5
    shape = INPUT_SHAPE
    for seg, counts, e in zip(segs, result.layer_counts, expected):
        fan = fan_out(seg, shape)
        assert fan.shape == shape and fan.min() >= 0
        assert e.shape == counts.shape
        shape = counts.shape[1:]
    # the 5x5 convolution of stride 2: a pixel away from the border lies in the windows of
    # 2 or 3 output rows and 2 or 3 output columns, each with 16 channels
    first = fan_out(segs[0], INPUT_SHAPE)
    assert set(np.unique(first[:, 4:30, 4:30])) == {16 * 4, 16 * 6, 16 * 9}


def test_macs_of_conv_and_linear():
    assert macs(nn.Sequential(nn.Conv2d(2, 8, 3, padding=1)), (2, 34, 34)) == 34 * 34 * 8 * 2 * 9
    assert macs(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2)) == 60


def test_checkpoints_end_at_the_last_step():
    cp = checkpoints(300, 15)
    assert cp[-1] == 299 and len(cp) == 15 and np.all(np.diff(cp) > 0)


def test_recommendation_is_the_smallest_factor_within_tolerance():
    factors = np.array([1.0, 2, 4, 8, 16])
    acc = np.array([0.0, 0.5, 0.89, 0.9, 0.88])
    rec = recommend(factors, acc, tolerance_pp=1.0)
    assert rec["best_factor"] == 8 and rec["recommended_factor"] == 4
    assert recommend(factors, acc, tolerance_pp=0.0)["recommended_factor"] == 8


def test_pareto_front():
    acc = np.array([0.1, 0.5, 0.5, 0.9, 0.8])
    cost = np.array([1.0, 2, 3, 4, 5])
    assert pareto_front(acc, cost).tolist() == [True, True, False, True, False]


def test_refine_bisects_geometrically_towards_the_smallest_good_factor():
    from spikescale.refine import refine_factors

    truth = lambda f: 0.9 if f >= 3.0 else 0.2  # noqa: E731  accuracy jumps at factor 3
    results = {1.0: 0.2, 2.0: 0.2, 4.0: 0.9, 8.0: 0.9}
    tried = refine_factors(results, 3, 1.0, truth)
    assert tried == [2.828, 3.363, 3.084]
    assert min(f for f, a in results.items() if a >= 0.9) == 3.084
    assert refine_factors({1.0: 0.9, 2.0: 0.9}, 3, 1.0, truth) == []  # nothing below the smallest
