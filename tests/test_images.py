"""Static images for training on images: the IDX reader, digits placement, polarity choice."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from spikescale.binning import raster
from spikescale.digits import DIGIT_PX, SENSOR_SIZE, digits_images, make_digits
from spikescale.errors import InputError, MissingInputError
from spikescale.event_store import EVENT_DTYPE, EventSet
from spikescale.images import mnist_images, read_idx, single_channel
from spikescale.params import DigitsParams


def write_idx(path, array: np.ndarray, type_code: int = 0x08, compress: bool = False) -> None:
    """An IDX file as LeCun's format defines it: 00 00 type ndim, big-endian u32 dims, data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def write_mnist(root, split_prefix: str, n: int, compress: bool = False, seed: int = 0):
    """Small MNIST files in torchvision's layout under root/MNIST/raw."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    gz = ".gz" if compress else ""
    write_idx(raw / f"{split_prefix}-images-idx3-ubyte{gz}", pixels, compress=compress)
    write_idx(raw / f"{split_prefix}-labels-idx1-ubyte{gz}", labels, compress=compress)
    return pixels, labels


def test_idx_header_bytes_follow_the_format(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    raw = path.read_bytes()
    # magic 0x00000803 for a 3-d ubyte array (MNIST images), then dims big-endian
    assert raw[:16] == bytes.fromhex("00000803 00000002 00000003 00000004".replace(" ", ""))
    np.testing.assert_array_equal(read_idx(path), np.arange(24).reshape(2, 3, 4))


@pytest.mark.parametrize("dtype,code", [(np.int32, 0x0C), (np.float32, 0x0D), (np.int16, 0x0B)])
def test_idx_reads_wider_types_big_endian(tmp_path, dtype, code):
    values = np.array([[1, -2, 300], [70000 if dtype != np.int16 else 7000, 5, -6]], dtype=dtype)
    write_idx(tmp_path / "a", values, code)
    got = read_idx(tmp_path / "a")
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, values)


def test_idx_refuses_wrong_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(InputError, match="bad: not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "cut", np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "cut").read_bytes()[:-10])
    with pytest.raises(InputError, match=r"cut: IDX shape \(5, 28, 28\).*needs 3936 bytes"):
        read_idx(tmp_path / "cut")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_images_centred_on_the_nmnist_sensor(tmp_path, compress):
    pixels, labels = write_mnist(tmp_path, "t10k", 7, compress)
    images, got_labels = mnist_images(tmp_path, "test", (34, 34))
    assert images.shape == (7, 1, 34, 34) and images.dtype == np.float32
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(images[:, 0, 3:31, 3:31], pixels / 255, rtol=1e-6)
    assert images.max() <= 1 and images.min() >= 0
    border = images.copy()
    border[:, :, 3:31, 3:31] = 0
    assert not border.any()


def test_mnist_missing_files_say_how_to_fetch(tmp_path):
    with pytest.raises(MissingInputError, match=r"train-images-idx3-ubyte.*MNIST\('"):
        mnist_images(tmp_path, "train", (34, 34), download=True)


def test_mnist_label_count_must_match(tmp_path):
    write_mnist(tmp_path, "train", 4)
    write_idx(tmp_path / "MNIST/raw/train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(InputError, match="expected 4 labels"):
        mnist_images(tmp_path, "train", (34, 34))


def test_digits_images_are_what_the_camera_recorded():
    p = DigitsParams()
    images = digits_images(p, seed=0, max_samples_per_class=3)
    recordings = make_digits(p, seed=0, max_samples_per_class=3)
    for split in ("train", "test"):
        pictures, labels = images[split]
        np.testing.assert_array_equal(labels, recordings[split].labels)
        width, height, _ = SENSOR_SIZE
        assert pictures.shape == (len(labels), 1, height, width)
        assert 0 <= pictures.min() and pictures.max() <= 1
        margin = (width - DIGIT_PX) // 2
        inside = np.zeros((height, width), bool)
        inside[margin : margin + DIGIT_PX, margin : margin + DIGIT_PX] = True
        assert not pictures[:, 0, ~inside].any() and pictures[:, 0, inside].any()


def test_single_channel_matches_raster_of_the_chosen_events():
    """sum/on on the two-polarity raster equals the raster of the events that feed it."""
    rng = np.random.default_rng(1)
    n = 400
    events = np.zeros(n, EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, 6, n), rng.integers(0, 5, n)
    events["t"] = np.sort(rng.integers(0, 1000, n))
    events["p"] = rng.integers(0, 2, n)
    offsets = np.array([0, n])
    labels = np.zeros(1, np.int64)
    two, _ = raster(EventSet(events, offsets, labels, (6, 5, 2), ("a",)), 400, 3)
    summed = single_channel(two, "sum")
    on = single_channel(two, "on")
    assert summed.shape == on.shape == (1, 3, 1, 5, 6)
    as_one = events.copy()
    as_one["p"] = 0
    one_channel = EventSet(as_one, offsets, labels, (6, 5, 1), ("a",))
    np.testing.assert_array_equal(summed, raster(one_channel, 400, 3)[0])
    assert summed.sum() == n and on.sum() == (events["p"] == 1).sum()
    with pytest.raises(InputError, match="'both'"):
        single_channel(two, "both")


def test_cnn_trained_on_images_reads_single_channel_event_rasters():
    """A CNN trained on digits images takes the one-channel raster of the same digits' events,
    and classifies the images well above chance (a few epochs on a small subset)."""
    from spikescale.images import as_training_set
    from spikescale.params import TrainingParams
    from spikescale.train import image_accuracy_report, predict_logits, train_cnn

    p = DigitsParams()
    images = digits_images(p, seed=0, max_samples_per_class=30)
    train = as_training_set(*images["train"])
    test = as_training_set(*images["test"])
    params = TrainingParams(epochs=4, validation_fraction=0.0)
    model, source, report = train_cnn(train, test, params, classes=10, progress=False)
    assert source.input_shape == (1, 34, 34)
    named = image_accuracy_report(report)
    assert named["cnn_test_image_accuracy"] > 0.5 and named["test_frames_per_recording"] == 1
    recordings = make_digits(p, seed=0, max_samples_per_class=3)["test"]
    counts, _ = raster(recordings, 30_000, 10)
    for polarities in ("sum", "on"):
        one = single_channel(counts, polarities)
        frames = one.reshape(-1, *one.shape[2:])
        assert frames.shape[1:] == source.input_shape
        assert predict_logits(model, frames, 64, "cpu").shape == (len(frames), 10)


@pytest.mark.integration
def test_images_mode_through_snakemake(tmp_path):
    """training.input: images runs the whole reduced pipeline: the CNN is trained and
    normalised on one-channel images, the SNN evaluated on summed-polarity event rasters."""
    import json

    import pyarrow.parquet as pq
    import torch

    from conftest import make_project, snakemake

    project = make_project(tmp_path, {"training": {"input": "images", "polarities": "sum"}})
    snakemake(project)
    report = json.loads((project / "models/digits/training.json").read_text())
    assert report["training_input"] == "images" and report["polarities"] == "sum"
    assert report["cnn_test_image_accuracy"] == report["cnn_test_accuracy"]
    assert report["test_frames_per_recording"] == 1
    blob = torch.load(project / "models/digits/cnn.pt", weights_only=True)
    first = next(v for k, v in blob["state_dict"].items() if k.endswith("weight"))
    assert first.shape[1] == 1  # one input channel
    sweep = pq.read_table(project / "results/digits/sweep.parquet").to_pylist()
    assert sweep and all(0 <= row["snn_accuracy"] <= 1 for row in sweep)
