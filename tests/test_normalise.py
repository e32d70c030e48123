import copy

import numpy as np
import pytest
import torch
from sinabs.utils import normalize_weights

from spikescale.model import Architecture, build_cnn
from spikescale.normalise import frame_batches, normalise, output_layer_names

ARCH = Architecture(2, 16, 16, 4, (4, 6), 3, True)


def batches(frames, size):
    return frame_batches(frames.numpy(), np.arange(len(frames)), size)


def _cnn_and_frames(seed=0, n=40, arch=ARCH):
    torch.manual_seed(seed)
    cnn = build_cnn(arch).eval()
    frames = torch.poisson(torch.full((n, 2, 16, 16), 0.3))
    return cnn, frames


@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.9, 100.0])
def test_equals_sinabs_normalize_weights_when_configured_alike(percentile):
    cnn, frames = _cnn_and_frames()
    ours, table = normalise(cnn, batches(frames, 16), percentile, ignore_zeros=False)
    reference = copy.deepcopy(cnn)
    pairs = output_layer_names(cnn)
    normalize_weights(
        reference, frames, [o for _, o in pairs], [p for p, _ in pairs], percentile=percentile
    )
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert [row["layer"] for row in table] == [p for p, _ in pairs]


def test_normalised_activations_reach_one_at_the_percentile():
    cnn, frames = _cnn_and_frames()
    model, _ = normalise(cnn, batches(frames, 16), 99.0, ignore_zeros=False)
    with torch.no_grad():
        out = model[:2](frames)  # first conv and its ReLU
    assert np.percentile(out.numpy(), 99.0) == pytest.approx(1.0, rel=1e-4)


def test_sparse_layer_gives_finite_weights_with_ignore_zeros_and_is_flagged_without():
    cnn, _ = _cnn_and_frames(arch=Architecture(2, 16, 16, 4, (4, 6), 3, False))
    frames = torch.zeros((40, 2, 16, 16))
    frames[0, 0, 5, 5] = (
        1.0  # one event in forty frames: the 99th percentile of all activations is 0
    )
    plain, table = normalise(cnn, batches(frames, 40), 99.0, ignore_zeros=False)
    assert table[0]["degenerate"] and table[0]["scale"] == 1.0
    assert all(torch.isfinite(p).all() for p in plain.parameters())
    sparse, table = normalise(cnn, batches(frames, 40), 99.0, ignore_zeros=True)
    assert not table[0]["degenerate"]
    assert all(torch.isfinite(p).all() for p in sparse.parameters())
    # sinabs itself writes infinite weights here
    reference = copy.deepcopy(cnn)
    pairs = output_layer_names(cnn)
    with np.errstate(divide="ignore"):
        normalize_weights(
            reference, frames, [o for _, o in pairs], [p for p, _ in pairs], percentile=99.0
        )
    assert not all(torch.isfinite(p).all() for p in reference.parameters())


@pytest.mark.parametrize("ignore_zeros", [False, True])
@pytest.mark.parametrize("q", [50.0, 99.0, 99.9, 100.0])
def test_bounded_memory_percentile_matches_the_exact_one(q, ignore_zeros):
    cnn, frames = _cnn_and_frames(n=60)
    exact, _ = normalise(cnn, batches(frames, 16), q, ignore_zeros)
    bounded, table = normalise(cnn, batches(frames, 16), q, ignore_zeros, in_memory=64)
    assert table[0]["values"] > 100 * 64  # the histogram passes really ran
    for (name, a), (_, b) in zip(exact.state_dict().items(), bounded.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-6, atol=0), name


@pytest.mark.parametrize("percentile", [99.0, 99.9])
def test_equals_sinabs_on_the_folded_example_network(percentile, monkeypatch):
    """A user's network (strides, folded batch norm, max pool as average, hidden Linear):
    normalisation of the prepared chain is sinabs's normalize_weights on it."""
    from conftest import ROOT
    from spikescale.network import build_network, prepare_for_conversion

    monkeypatch.chdir(ROOT)  # examples/ is importable from the project root
    torch.manual_seed(1)
    model = build_network("examples.strided_bn:build", (2, 34, 34), 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    prepared = prepare_for_conversion(model, "average")
    frames = torch.poisson(torch.full((30, 2, 34, 34), 0.3))
    # one batch, as sinabs takes the sample (smaller batches round the read-out's matmul
    # differently in the last bit)
    ours, _ = normalise(prepared, batches(frames, 30), percentile, ignore_zeros=False)
    reference = copy.deepcopy(prepared)
    pairs = output_layer_names(prepared)
    assert len(pairs) == 5
    normalize_weights(
        reference, frames, [o for _, o in pairs], [p for p, _ in pairs], percentile=percentile
    )
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
