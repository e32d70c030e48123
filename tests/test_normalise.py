import copy

import numpy as np
import pytest
import torch
from sinabs.utils import normalize_weights

from spikescale.model import Architecture, build_cnn
from spikescale.normalise import normalise, output_layer_names

ARCH = Architecture(2, 16, 16, 4, (4, 6), 3, True)


def _cnn_and_frames(seed=0, n=40, arch=ARCH):
    torch.manual_seed(seed)
    cnn = build_cnn(arch).eval()
    frames = torch.poisson(torch.full((n, 2, 16, 16), 0.3))
    return cnn, frames


@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.9, 100.0])
def test_equals_sinabs_normalize_weights_when_configured_alike(percentile):
    cnn, frames = _cnn_and_frames()
    ours, table = normalise(cnn, frames, percentile, ignore_zeros=False, batch_size=len(frames))
    reference = copy.deepcopy(cnn)
    pairs = output_layer_names(cnn)
    normalize_weights(reference, frames, [o for _, o in pairs], [p for p, _ in pairs], percentile=percentile)
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert [row["layer"] for row in table] == [p for p, _ in pairs]


def test_normalised_activations_reach_one_at_the_percentile():
    cnn, frames = _cnn_and_frames()
    model, _ = normalise(cnn, frames, 99.0, ignore_zeros=False, batch_size=16)
    with torch.no_grad():
        out = model[:2](frames)  # first conv and its ReLU
    assert np.percentile(out.numpy(), 99.0) == pytest.approx(1.0, rel=1e-4)


def test_sparse_layer_gives_finite_weights_with_ignore_zeros_and_is_flagged_without():
    cnn, _ = _cnn_and_frames(arch=Architecture(2, 16, 16, 4, (4, 6), 3, False))
    frames = torch.zeros((40, 2, 16, 16))
    frames[0, 0, 5, 5] = 1.0  # one event in forty frames: the 99th percentile of all activations is 0
    plain, table = normalise(cnn, frames, 99.0, ignore_zeros=False, batch_size=40)
    assert table[0]["degenerate"] and table[0]["scale"] == 1.0
    assert all(torch.isfinite(p).all() for p in plain.parameters())
    sparse, table = normalise(cnn, frames, 99.0, ignore_zeros=True, batch_size=40)
    assert not table[0]["degenerate"]
    assert all(torch.isfinite(p).all() for p in sparse.parameters())
    # sinabs itself writes infinite weights here
    reference = copy.deepcopy(cnn)
    pairs = output_layer_names(cnn)
    with np.errstate(divide="ignore"):
        normalize_weights(reference, frames, [o for _, o in pairs], [p for p, _ in pairs], percentile=99.0)
    assert not all(torch.isfinite(p).all() for p in reference.parameters())
