import nir
import numpy as np
import pytest
import sinabs
import torch
from torch import nn

from spikescale.export import to_nir_graph, with_sum_pooling, write_nir
from spikescale.model import Architecture, build_cnn, scale_first_layer, to_snn
from spikescale.params import ConversionParams
from spikescale.simulate import simulate

ARCH = Architecture(2, 16, 16, 5, (4, 6), 3, False)


def _snn():
    torch.manual_seed(1)
    return to_snn(build_cnn(ARCH), ARCH, ConversionParams())


def test_sum_pooling_twin_spikes_exactly_like_the_original():
    snn = scale_first_layer(_snn(), 8.0)
    raster = torch.poisson(torch.full((3, 20, 2, 16, 16), 0.2))
    steps = np.array([19])
    a = simulate(snn, raster, steps)
    b = simulate(with_sum_pooling(snn), raster, steps)
    for x, y in zip(a.layer_counts, b.layer_counts):
        assert np.array_equal(x, y)
    assert a.layer_counts[0].sum() > 0


def test_nir_file_reads_back_with_every_layer(tmp_path):
    snn = scale_first_layer(_snn(), 4.0)
    write_nir(to_nir_graph(snn, ARCH.input_shape), tmp_path / "snn.nir")
    graph = nir.read(tmp_path / "snn.nir")
    kinds = sorted(type(n).__name__ for n in graph.nodes.values())
    assert kinds == sorted(
        [
            "Input",
            "Output",
            "Conv2d",
            "IF",
            "SumPool2d",
            "Conv2d",
            "IF",
            "SumPool2d",
            "Flatten",
            "Affine",
            "IF",
        ]
    )
    conv = [n for n in graph.nodes.values() if isinstance(n, nir.Conv2d)]
    first = min(conv, key=lambda n: n.weight.shape[1])  # the one with 2 input channels
    assert np.allclose(first.weight, snn[0].weight.detach().numpy())  # the factor is in the weights
    second = max(conv, key=lambda n: n.weight.shape[1])
    assert np.allclose(second.weight, snn[3].weight.detach().numpy() / 4)  # avg-pool folded in


def test_example_network_exports_with_every_parameter(tmp_path):
    """The worked example (strided convolution, folded batch norm biases, pooling): the NIR
    file reads back with each node's parameters those of the SNN (average pools as sum
    pools, the weights after them divided by the window's area)."""
    from example_network import INPUT_SHAPE, example_cnn, example_snn

    snn = example_snn(example_cnn(seed=2))
    write_nir(to_nir_graph(snn, INPUT_SHAPE), tmp_path / "example.nir")
    graph = nir.read(tmp_path / "example.nir")
    order = [graph.nodes[str(i)] for i in range(len(snn))]
    assert [type(n).__name__ for n in order] == [
        "Conv2d",
        "IF",
        "Conv2d",
        "IF",
        "SumPool2d",
        "Conv2d",
        "IF",
        "SumPool2d",
        "Flatten",
        "Affine",
        "IF",
        "Affine",
        "IF",
    ]
    for i, divisor in [(0, 1), (2, 1), (5, 4), (9, 4), (11, 1)]:
        layer, node = snn[i], order[i]
        np.testing.assert_array_equal(node.weight, layer.weight.detach().numpy() / divisor)
        np.testing.assert_array_equal(node.bias, layer.bias.detach().numpy())
    assert tuple(order[0].stride) == (2, 2) and tuple(order[0].padding) == (2, 2)
    assert tuple(order[0].input_shape) == (34, 34) and tuple(order[2].input_shape) == (17, 17)
    for i in (4, 7):
        assert tuple(order[i].kernel_size) == tuple(order[i].stride) == (2, 2)
    for i in (1, 3, 6, 10, 12):
        assert np.all(order[i].v_threshold == 1.0)
    assert sorted(graph.edges) == sorted(
        [("input", "0")] + [(str(i), str(i + 1)) for i in range(12)] + [("12", "output")]
    )


def _pooled_snn(pool: nn.Module, before_neurons: bool = False) -> nn.Sequential:
    """Conv -> IAF -> pool -> conv -> IAF -> flatten -> linear -> IAF, dyadic weights."""
    from sinabs.layers import IAFSqueeze

    torch.manual_seed(4)
    conv1, conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, groups=2)
    with torch.no_grad():
        for m in (conv1, conv2):
            m.weight.copy_(torch.randint(-4, 12, m.weight.shape) / 16)
            m.bias.copy_(torch.randint(-2, 3, m.bias.shape) / 32)
    x = torch.zeros(1, 2, 12, 12)
    head = (
        [conv1, pool, IAFSqueeze(batch_size=1)]
        if before_neurons
        else [conv1, IAFSqueeze(batch_size=1), pool]
    )
    body = nn.Sequential(*head, conv2, IAFSqueeze(batch_size=1), nn.Flatten())
    n = body(x).shape[1]
    sinabs.reset_states(body)
    linear = nn.Linear(n, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.randint(-4, 12, linear.weight.shape) / 16)
    return nn.Sequential(*body, linear, IAFSqueeze(batch_size=1))


@pytest.mark.parametrize(
    "pool, before_neurons",
    [
        (nn.AvgPool2d(2, 1), False),  # overlapping windows
        (nn.AvgPool2d(2, 1, padding=1), False),  # overlapping and padded
        (nn.AvgPool2d(2, 3), False),  # gaps between the windows
        (nn.AvgPool2d(2, 1, padding=1), True),  # pooling of currents, before the neurons
    ],
)
def test_any_average_pool_exports_as_an_equivalent_sum_pool(tmp_path, pool, before_neurons):
    snn = _pooled_snn(pool, before_neurons)
    twin = with_sum_pooling(snn)
    raster = torch.poisson(torch.full((2, 15, 2, 12, 12), 0.4))
    a = simulate(snn, raster, np.array([14]))
    b = simulate(twin, raster, np.array([14]))
    assert a.layer_counts[0].sum() > 0 and a.layer_counts[-1].sum() > 0
    for x, y in zip(a.layer_counts, b.layer_counts):
        np.testing.assert_array_equal(x, y)
    write_nir(to_nir_graph(snn, (2, 12, 12)), tmp_path / "snn.nir")
    node = next(
        n for n in nir.read(tmp_path / "snn.nir").nodes.values() if isinstance(n, nir.SumPool2d)
    )
    assert tuple(node.stride) == (pool.stride,) * 2
    assert tuple(node.padding) == (pool.padding,) * 2


@pytest.mark.parametrize(
    "pool, needle",
    [
        (nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), "count_include_pad"),
        (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
    ],
)
def test_pools_without_a_sum_pool_twin_are_refused(pool, needle):
    with pytest.raises(ValueError, match=needle):
        with_sum_pooling(_pooled_snn(pool))


def test_even_same_padding_and_a_trailing_pool_are_refused():
    from sinabs.layers import IAFSqueeze

    with pytest.raises(ValueError, match="padding='same'"):
        with_sum_pooling(
            nn.Sequential(nn.Conv2d(2, 2, 2, padding="same"), IAFSqueeze(batch_size=1))
        )
    with pytest.raises(ValueError, match="no weighted layer"):
        with_sum_pooling(
            nn.Sequential(nn.Conv2d(2, 2, 3), IAFSqueeze(batch_size=1), nn.AvgPool2d(2))
        )


def test_chip_export_is_the_discretised_network_and_reads_back_into_sinabs(tmp_path):
    """What would be flashed: the factor, then sinabs's discretisation, as NIR whose nodes
    say what each layer became; sinabs reads it back into a network that spikes as the
    evaluated chip variant does; two writes give the same bytes."""
    from spikescale import chip
    from spikescale.export import chip_nir_graph

    snn = _snn()
    variant = chip.discretised_variant(snn, 8.0)
    write_nir(chip_nir_graph(snn, ARCH.input_shape, 8.0), tmp_path / "a.nir")
    write_nir(chip_nir_graph(snn, ARCH.input_shape, 8.0), tmp_path / "b.nir")
    assert (tmp_path / "a.nir").read_bytes() == (tmp_path / "b.nir").read_bytes()
    graph = nir.read(tmp_path / "a.nir")
    assert graph.metadata["target"] == "speck" and graph.metadata["factor"] == 8.0
    neurons = [n.metadata for n in graph.nodes.values() if isinstance(n, nir.IF)]
    assert [m["layer"] for m in neurons] == ["conv1", "conv2", "fc1"]
    assert [int(m["threshold"]) for m in neurons] == [d.threshold for d in variant.layers]
    assert [int(m["min_v_mem"]) for m in neurons] == [d.min_v_mem for d in variant.layers]
    for node in graph.nodes.values():
        if isinstance(node, (nir.Conv2d, nir.Affine)):
            w = np.asarray(node.weight)
            assert np.array_equal(w, np.round(w)) and w.min() >= -128 and w.max() <= 127
    loaded = sinabs.from_nir(graph, batch_size=1)  # a nirtorch graph of sinabs layers
    flat = nn.Sequential(*[m for m in loaded.children() if not isinstance(m, nn.Identity)])
    raster = torch.poisson(torch.full((2, 20, 2, 16, 16), 0.3))
    expected = simulate(variant.snn, raster, np.array([19]), backend="sinabs")
    got = simulate(flat, raster, np.array([19]), backend="sinabs")
    assert expected.output_counts.sum() > 0
    for a, b in zip(got.layer_counts, expected.layer_counts, strict=True):
        assert np.array_equal(a, b)
