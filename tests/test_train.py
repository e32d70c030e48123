"""The `train` stage's core: batch layouts (channels-last on request), determinism,
memory-mapped frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikescale.frames import load_arrays, save_arrays
from spikescale.model import Architecture, build_cnn
from spikescale.params import TrainingParams
from spikescale.train import memory_format, predict_logits, take, to_batch, train_cnn


def frame_set(n_samples: int = 30, bins: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Small N-MNIST-shaped frames, a bright pixel per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n_samples)
    sample_index = np.repeat(np.arange(n_samples), bins)
    frames = rng.poisson(0.3, (len(sample_index), 2, 34, 34)).astype(np.uint8)
    frames[np.arange(len(frames)), 0, 3 * labels[sample_index], 5] += 6
    return {
        "frames": frames,
        "sample_index": sample_index,
        "labels": labels,
        "dropped": np.int64(0),
        "frame_duration_us": np.full(len(frames), 100000.0),
    }


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_batches_are_the_frames_as_float32_channels_last_where_asked(dtype):
    frames = np.random.default_rng(1).integers(0, 200, (5, 2, 6, 7)).astype(dtype)
    batch = to_batch(frames[[4, 0, 2]], "cpu", channels_last=True)
    assert batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.from_numpy(frames[[4, 0, 2]].astype(np.float32)))
    plain = to_batch(frames[[4, 0, 2]], "cpu")  # the default: NCHW
    assert plain.is_contiguous() and torch.equal(plain, batch)
    flat = to_batch(frames.reshape(5, -1), "cpu", channels_last=True)  # not 4-D: default layout
    assert flat.is_contiguous()
    assert memory_format(frames.reshape(5, -1), True) is not torch.channels_last


def test_memory_mapped_batches_equal_in_memory_batches(tmp_path):
    arrays = frame_set()
    save_arrays(tmp_path / "train.npz", arrays)
    mapped = load_arrays(tmp_path / "train.npz")["frames"]
    assert isinstance(mapped, np.memmap)
    idx = np.array([40, 3, 3, 77, 0])
    assert torch.equal(to_batch(take(mapped, idx), "cpu"), to_batch(arrays["frames"][idx], "cpu"))


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_is_deterministic_and_the_same_from_a_memory_map(tmp_path, channels_last):
    """One seed, one result: twice in memory and once from the mapped frame file."""
    train, test = frame_set(seed=0), frame_set(n_samples=10, seed=1)
    save_arrays(tmp_path / "train.npz", train)
    p = TrainingParams(epochs=2, batch_size=16, channels_last=channels_last)
    runs = [
        train_cnn(train, test, p, 10, progress=False),
        train_cnn(train, test, p, 10, progress=False),
        train_cnn(load_arrays(tmp_path / "train.npz"), test, p, 10, progress=False),
    ]
    first = runs[0][0].state_dict()
    for model, _, report in runs[1:]:
        assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
        assert report == runs[0][2]
    assert len(runs[0][2]["history"]) == 2


def test_training_needs_no_gradient_mode_from_the_caller():
    train, test = frame_set(), frame_set(n_samples=10, seed=1)
    p = TrainingParams(epochs=1, batch_size=16)
    expected = train_cnn(train, test, p, 10, progress=False)[0].state_dict()
    with torch.inference_mode():
        model = train_cnn(train, test, p, 10, progress=False)[0]
    assert all(torch.equal(expected[k], v) for k, v in model.state_dict().items())


def test_logits_match_the_plain_layout_and_leave_the_weights_alone():
    torch.manual_seed(0)
    model = build_cnn(Architecture(2, 34, 34, 10, (8, 16, 32), 3, False))
    frames = frame_set()["frames"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = model.eval()(torch.from_numpy(frames.astype(np.float32))).numpy()
    logits = predict_logits(model, frames, 32, "cpu")
    np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-5)
    indices = np.array([5, 1, 60])
    picked = predict_logits(model, frames, 2, "cpu", indices)  # other batches: other sums
    np.testing.assert_allclose(picked, logits[indices], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
