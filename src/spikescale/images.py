"""Static images for ``training.input: images``: the pictures the recordings were made from.

The CNN can be trained on the images an event dataset was recorded from instead of on
binned event frames. Images are intensities in [0, 1], one channel, placed on the event
sensor's geometry exactly as the camera saw them (the digit centred on the sensor), so a
network trained on them takes the same (1, height, width) input that a single-channel
event raster has. How the two polarities of the events become that one channel is
``single_channel``: ``sum`` adds OFF and ON counts, ``on`` keeps ON events only.

Sources: ``digits`` (scikit-learn's images upsampled and centred as in ``digits.py``, with
the same seeded train/test split as the simulated recordings) and ``nmnist`` (MNIST in
torchvision's on-disk layout, read here from the IDX files: torchvision is not needed).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np

from spikescale.errors import InputError, MissingInputError

Polarities = Literal["sum", "on"]
ON = 1  # the raster's polarity channel of ON events (p == 1)

# IDX type codes (the third byte of the magic number) and their big-endian dtypes
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MNIST_SPLITS = {"train": "train", "test": "t10k"}
MNIST_DOWNLOAD_HINT = (
    "fetch MNIST once with torchvision, which writes exactly this layout: "
    "python -c \"from torchvision.datasets import MNIST; MNIST('{root}', download=True)\""
)


def read_idx(path: str | Path) -> np.ndarray:
    """The array in one IDX file (plain or .gz), checked against its own header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot read the IDX file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise InputError(
            f"{path}: not an IDX file (expected a magic number 00 00 <type> <ndim>, "
            f"got {data[:4].hex(' ') or 'nothing'})"
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: IDX header cut short ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InputError(
            f"{path}: IDX shape {shape} of {dtype.str} needs {expected} bytes, "
            f"the file has {len(data)}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _mnist_file(raw: Path, stem: str, root: Path, download: bool) -> Path:
    """The plain or gzipped IDX file ``raw/stem``; a clear error when neither is there."""
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    hint = MNIST_DOWNLOAD_HINT.format(root=root)
    why = (
        "dataset.download is true, but spikescale does not download MNIST itself: "
        if (download)
        else ""
    )
    raise MissingInputError(f"MNIST image file {raw / stem}[.gz] not found; {why}{hint}")


def place_on_sensor(images: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, h, w) images in [0, 1] centred on a (N, 1, height, width) float32 canvas."""
    n, h, w = images.shape
    if h > height or w > width:
        raise InputError(f"images of {w}x{h} do not fit on the {width}x{height} sensor")
    canvas = np.zeros((n, 1, height, width), dtype=np.float32)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[:, 0, top : top + h, left : left + w] = images
    return canvas


def mnist_images(
    root: str | Path, split: str, sensor_wh: tuple[int, int], download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` (train | test) from ``root/MNIST/raw``: (images on the sensor, labels)."""
    root = Path(root)
    raw = root / "MNIST" / "raw"
    prefix = MNIST_SPLITS[split]
    images_path = _mnist_file(raw, f"{prefix}-images-idx3-ubyte", root, download)
    labels_path = _mnist_file(raw, f"{prefix}-labels-idx1-ubyte", root, download)
    pixels, labels = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise InputError(f"{images_path}: expected (N, 28, 28) uint8 images, got {pixels.shape}")
    if labels.ndim != 1 or len(labels) != len(pixels):
        raise InputError(
            f"{labels_path}: expected {len(pixels)} labels for {images_path.name}, "
            f"got shape {labels.shape}"
        )
    if len(labels) and labels.max() > 9:
        raise InputError(f"{labels_path}: labels must be digits 0-9, found {labels.max()}")
    width, height = sensor_wh
    return place_on_sensor(pixels / np.float32(255), width, height), labels.astype(np.int64)


def single_channel(counts: np.ndarray, polarities: Polarities) -> np.ndarray:
    """(..., 2, H, W) polarity counts as (..., 1, H, W): OFF + ON (``sum``) or ON only (``on``)."""
    if counts.shape[-3] != 2:
        raise InputError(f"single_channel needs two polarity channels, got shape {counts.shape}")
    if polarities == "sum":
        return counts.sum(axis=-3, keepdims=True, dtype=counts.dtype)
    if polarities == "on":
        return counts[..., ON : ON + 1, :, :].copy()
    raise InputError(f"training.polarities must be 'sum' or 'on', got {polarities!r}")


def as_training_set(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Images in the layout ``train.train_cnn`` reads: one frame per sample (sample i -> i)."""
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    return {
        "frames": images,
        "sample_index": np.arange(len(labels), dtype=np.int64),
        "labels": np.asarray(labels, dtype=np.int64),
    }


def first_per_class(labels: np.ndarray, cap: int | None) -> np.ndarray:
    """Indices of the first ``cap`` samples of every class, in file order (all if None)."""
    if cap is None:
        return np.arange(len(labels))
    keep = [np.flatnonzero(labels == c)[:cap] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def training_images(dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and test (images, labels) of ``dataset`` (``params.DatasetParams``).

    ``digits``: the very samples the simulated recordings show (same split and cap).
    ``nmnist``: MNIST's train and t10k files, on N-MNIST's 34x34 sensor, capped at
    ``max_samples_per_class`` per class like the recordings.
    """
    if dataset.name == "digits":
        from spikescale.digits import digits_images

        return digits_images(dataset.digits, dataset.seed, dataset.max_samples_per_class)
    if dataset.name == "nmnist":
        out = {}
        for split in ("train", "test"):
            images, labels = mnist_images(dataset.root, split, (34, 34), dataset.download)
            keep = first_per_class(labels, dataset.max_samples_per_class)
            out[split] = (images[keep], labels[keep])
        return out
    raise InputError(
        f"training.input: images has no images for dataset {dataset.name!r} (known: digits, nmnist)"
    )
