import nir
import numpy as np
import torch

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
