"""The built-in dataset: scikit-learn's handwritten digits seen by a simulated event camera.

Each 8x8 digit is upsampled to 28x28 and placed on a 34x34 sensor, as in N-MNIST. The
sensor makes straight saccades over the image (a triangle, like the N-MNIST recordings); at
every camera step each pixel compares its log intensity with the level at its last event
and emits one ON or OFF event per threshold crossed, timed where the crossing falls within
the step. All samples are simulated at once (vectorised over samples and pixels), so the
whole set takes seconds, and the result depends only on the parameters and the seed.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from spikescale.event_store import EVENT_DTYPE, EventSet
from spikescale.params import DigitsParams

SENSOR_SIZE = (34, 34, 2)
DIGIT_PX = 28
CLASSES = tuple(str(d) for d in range(10))
LOG_EPS = 0.1  # dark pixels are not -inf in log space
TIE = 1e-4  # in thresholds: a change this close to a level has not crossed it


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (N, h, w) images in [0, 1] to (N, size, size)."""
    n, h, w = images.shape
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = images[:, y0][:, :, x0] * (1 - fx) + images[:, y0][:, :, x1] * fx
    bottom = images[:, y1][:, :, x0] * (1 - fx) + images[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def shifted(canvas: np.ndarray, dx: float, dy: float, pad: int) -> np.ndarray:
    """A padded (N, H+2pad, W+2pad) canvas moved by a sub-pixel (dx, dy), bilinear."""
    h, w = canvas.shape[1] - 2 * pad, canvas.shape[2] - 2 * pad
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = np.float32(dx - ix), np.float32(dy - iy)

    def window(ox: int, oy: int) -> np.ndarray:
        return canvas[:, pad - oy : pad - oy + h, pad - ox : pad - ox + w]

    return (
        window(ix, iy) * (1 - fx) * (1 - fy)
        + window(ix + 1, iy) * fx * (1 - fy)
        + window(ix, iy + 1) * (1 - fx) * fy
        + window(ix + 1, iy + 1) * fx * fy
    )


def saccade_path(p: DigitsParams) -> np.ndarray:
    """Sensor offsets (steps + 1, 2) along a closed triangle of ``p.saccades`` legs."""
    corners = [np.array([0.0, 0.0])]
    for k in range(1, p.saccades):
        angle = np.pi / 3 + 2 * np.pi * (k - 1) / max(p.saccades, 3)
        corners.append(corners[-1] + p.saccade_px * np.array([np.cos(angle), np.sin(angle)]))
    corners.append(corners[0])
    legs = []
    for a, b in zip(corners[:-1], corners[1:]):
        f = np.arange(p.steps_per_saccade)[:, None] / p.steps_per_saccade
        legs.append(a + (b - a) * f)
    legs.append(corners[-1][None])
    return np.concatenate(legs)


def simulate_camera(
    images: np.ndarray, p: DigitsParams, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Events of every image: (structured events sorted by sample then time, offsets)."""
    n = len(images)
    width, height, _ = SENSOR_SIZE
    pad = int(np.ceil(p.saccade_px)) + 2
    canvas = np.zeros((n, height + 2 * pad, width + 2 * pad), dtype=np.float32)
    top, left = pad + (height - DIGIT_PX) // 2, pad + (width - DIGIT_PX) // 2
    canvas[:, top : top + DIGIT_PX, left : left + DIGIT_PX] = upsample(images, DIGIT_PX)

    path = saccade_path(p)
    steps = len(path) - 1
    dt = p.duration_us / steps
    threshold = np.float32(p.threshold)

    def log_view(step: int) -> np.ndarray:
        return np.log(shifted(canvas, *path[step], pad) + np.float32(LOG_EPS)).ravel()

    reference = log_view(0)
    previous = reference.copy()
    chunks = []
    for step in range(1, steps + 1):
        current = log_view(step)
        change = current - reference
        # a crossing must pass the level, not just touch it: a pixel back exactly at a level
        # it fired at (the path ends where it began) would otherwise fire again, all at once
        crossings = np.floor(np.abs(change) / threshold - TIE).astype(np.int64)
        where = np.flatnonzero(crossings > 0)
        if len(where):
            count = crossings[where]
            sign = np.sign(change[where])
            level = reference[where]
            before = previous[where]
            moved = np.maximum(np.abs(current[where] - before), 1e-12)
            reference[where] = level + sign * count * threshold
            # the k-th crossing is at level + sign*k*threshold; the log intensity moves
            # linearly from `before` within the step, so the event sits where it gets there
            rep = np.repeat(np.arange(len(where)), count)
            k = 1 + np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
            frac = (sign[rep] * (level[rep] - before[rep]) + k * threshold) / moved[rep]
            t = (step - 1 + np.clip(frac, 0, 1)) * dt
            sample, y, x = np.unravel_index(where[rep], (n, height, width))
            chunks.append((sample, x, y, (sign[rep] > 0).astype(np.int8), t))
        previous = current

    rng = np.random.default_rng(seed)
    if p.noise_hz > 0:
        expected = p.noise_hz * p.duration_us * 1e-6 * width * height
        counts = rng.poisson(expected, size=n)
        sample = np.repeat(np.arange(n), counts)
        total = len(sample)
        chunks.append(
            (
                sample,
                rng.integers(0, width, total),
                rng.integers(0, height, total),
                rng.integers(0, 2, total).astype(np.int8),
                rng.uniform(0, p.duration_us, total),
            )
        )

    sample, x, y, pol, t = (np.concatenate(c) for c in zip(*chunks)) if chunks else ([],) * 5
    t_us = np.minimum(np.floor(t).astype(np.int64), p.duration_us - 1)
    order = np.lexsort((pol, x, y, t_us, sample))
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"], events["y"] = x[order], y[order]
    events["t"], events["p"] = t_us[order], pol[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sample, minlength=n), out=offsets[1:])
    return events, offsets


def split_indices(
    labels: np.ndarray, p: DigitsParams, seed: int, max_samples_per_class: int | None = None
) -> dict[str, np.ndarray]:
    """Sorted sample indices of the train and test splits (stratified, seeded)."""
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=p.test_fraction, random_state=seed, stratify=labels
    )
    splits = {}
    for split, idx in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        if max_samples_per_class is not None:
            keep = np.concatenate(
                [idx[labels[idx] == c][:max_samples_per_class] for c in range(10)]
            )
            idx = np.sort(keep)
        splits[split] = idx
    return splits


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as intensities in [0, 1] and their labels."""
    digits = load_digits()
    return digits.images / 16.0, digits.target.astype(np.int64)


def make_digits(
    p: DigitsParams, seed: int, max_samples_per_class: int | None = None
) -> dict[str, EventSet]:
    """The train and test splits of the built-in dataset (stratified, seeded)."""
    images, labels = load_images()
    splits = {}
    for split, idx in split_indices(labels, p, seed, max_samples_per_class).items():
        events, offsets = simulate_camera(images[idx], p, seed)
        splits[split] = EventSet(events, offsets, labels[idx], SENSOR_SIZE, CLASSES)
    return splits


def digits_images(
    p: DigitsParams, seed: int, max_samples_per_class: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The images the recordings were made from, as the camera sees them at rest.

    Per split (the same samples as ``make_digits``): (N, 1, 34, 34) float32 intensities in
    [0, 1], the digit upsampled to 28x28 and centred as in ``simulate_camera``, and labels.
    """
    images, labels = load_images()
    width, height, _ = SENSOR_SIZE
    top, left = (height - DIGIT_PX) // 2, (width - DIGIT_PX) // 2
    out = {}
    for split, idx in split_indices(labels, p, seed, max_samples_per_class).items():
        canvas = np.zeros((len(idx), 1, height, width), dtype=np.float32)
        canvas[:, 0, top : top + DIGIT_PX, left : left + DIGIT_PX] = upsample(images[idx], DIGIT_PX)
        out[split] = (canvas, labels[idx])
    return out
