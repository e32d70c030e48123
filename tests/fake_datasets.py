"""Tiny copies of tonic datasets, written in each dataset's real on-disk format.

* N-MNIST: ``<root>/NMNIST/{Train,Test}/<digit>/<nnnnn>.bin``, 5 bytes (40 bits) per event:
  byte 0 = x, byte 1 = y, bit 7 of byte 2 = polarity, the remaining 23 bits = timestamp in
  microseconds, big-endian. (Encoded here from the format description, independently of
  tonic's decoder, so that reading them back checks the decoder.)
* DVS Gesture (tonic's preprocessed version): ``<root>/DVSGesture/ibmGesture{Train,Test}/
  user<NN>_<lighting>/<label>.npy``, an (N, 4) array with columns x, y, p, t and t in ms.
* POKER-DVS (tonic's version): ``<root>/POKERDVS/pips_{train,test}/<cl|he|di|sp>/*.npy``,
  an (N, 4) array with columns t, x, y, p and t in microseconds.
* N-Caltech101: ``<root>/NCALTECH101/Caltech101/<category>/image_<nnnn>.bin``, N-MNIST's
  40-bit events; every recording of its own size, somewhere on the sensor.
* CIFAR10-DVS (tonic's AEDAT 4 version): ``<root>/CIFAR10DVS/<class>/*.aedat4``, written
  by ``recording_formats.write_aedat4`` on an absolute clock (microseconds since 1970).
* ASL-DVS: ``<root>/ASLDVS/<letter>/<letter>_<nnnn>.mat``, MATLAB column vectors ts, x, y
  (counted from the bottom row), pol.

The last three have no test split: their writers return the whole dataset.

Every writer returns ``[(label, path, expected_events)]`` in the order ``load_tonic`` must
give (label, then path), with the events as ``load_tonic`` must return them.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from spikescale.event_store import EVENT_DTYPE

SENSORS = {
    "nmnist": (34, 34, 2),
    "dvsgesture": (128, 128, 2),
    "pokerdvs": (35, 35, 2),
    "ncaltech101": (240, 180, 2),
    "cifar10dvs": (128, 128, 2),
    "asldvs": (240, 180, 2),
}
NMNIST_SPLITS = {"train": "Train", "test": "Test"}
DVSGESTURE_SPLITS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}
POKERDVS_SPLITS = {"train": "pips_train", "test": "pips_test"}
POKER_CLASSES = ("cl", "he", "di", "sp")
LIGHTINGS = ("fluorescent", "led", "natural", "lab", "fluorescent_led")


def random_events(
    rng: np.random.Generator, n: int, sensor=(34, 34, 2), t0: int = 0, duration: int = 300_000
) -> np.ndarray:
    """``n`` events sorted by t in ``[t0, t0 + duration)`` (EVENT_DTYPE); the first at t0."""
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, sensor[0], n)
    ev["y"] = rng.integers(0, sensor[1], n)
    ev["p"] = rng.integers(0, sensor[2], n)
    t = np.sort(rng.integers(0, duration, n))
    if n:
        t[0] = 0
    ev["t"] = t0 + t
    return ev


# ----------------------------------------------------------------------------- N-MNIST


def encode_nmnist(x, y, t, p) -> bytes:
    """N-MNIST's 40-bit events: x, y, then polarity bit and 23-bit timestamp big-endian."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if np.any((t < 0) | (t >= 1 << 23)):
        raise ValueError("timestamps must fit 23 bits (this writer emits no overflow events)")
    raw = np.empty((len(x), 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def write_nmnist_bin(path: Path, events: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_nmnist(events["x"], events["y"], events["t"], events["p"]))
    return path


def write_nmnist(
    root: Path, split: str = "train", per_class=None, seed: int = 0, n_events: int = 40
):
    """``per_class`` maps digit -> number of files (default: digits 0, 3, 7 with 2, 1, 3)."""
    per_class = per_class or {0: 2, 3: 1, 7: 3}
    rng = np.random.default_rng(seed)
    out = []
    for digit, count in sorted(per_class.items()):
        for i in range(count):
            # scattered file numbers, as in the real set (00002.bin, 00013.bin, ...)
            path = (
                Path(root)
                / "NMNIST"
                / NMNIST_SPLITS[split]
                / str(digit)
                / f"{(i * 37 + digit) % 1000:05d}.bin"
            )
            ev = random_events(rng, n_events + i, SENSORS["nmnist"], t0=int(rng.integers(0, 2000)))
            write_nmnist_bin(path, ev)
            out.append((digit, path, ev))
    return sorted(out, key=lambda r: (r[0], r[1].name))


# ----------------------------------------------------------------------------- .npy layouts


def write_npy(
    path: Path, columns: dict[str, np.ndarray], order: tuple[str, ...], dtype=np.int64
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack([np.asarray(columns[c]) for c in order], axis=1).astype(dtype))
    return path


def write_dvsgesture(
    root: Path,
    split: str = "train",
    per_class=None,
    seed: int = 0,
    n_events: int = 60,
    dtype=np.int64,
):
    """``per_class`` maps label (0-10) -> number of users that recorded it."""
    per_class = per_class or {0: 2, 4: 1, 10: 2}
    rng = np.random.default_rng(seed)
    out = []
    for label, count in sorted(per_class.items()):
        for k in range(count):
            user = f"user{k * 7 % 29 + 1:02d}_{LIGHTINGS[k % len(LIGHTINGS)]}"
            path = Path(root) / "DVSGesture" / DVSGESTURE_SPLITS[split] / user / f"{label}.npy"
            # session time in ms, far from 0 as in the cut-out gestures
            t0 = int(rng.integers(10_000, 90_000))
            ev = random_events(rng, n_events, SENSORS["dvsgesture"], t0=t0, duration=6000)
            cols = {"x": ev["x"], "y": ev["y"], "p": ev["p"], "t": ev["t"]}
            write_npy(path, cols, ("x", "y", "p", "t"), dtype=dtype)
            expected = ev.copy()
            expected["t"] = (ev["t"] - ev["t"][0]) * 1000
            out.append((label, path, expected))
    return sorted(out, key=lambda r: (r[0], r[1].relative_to(r[1].parents[1]).as_posix()))


def write_pokerdvs(
    root: Path, split: str = "train", per_class=None, seed: int = 0, n_events: int = 30
):
    """``per_class`` maps class name (cl, he, di, sp) -> number of files."""
    per_class = per_class or {"cl": 2, "di": 1, "sp": 2}
    rng = np.random.default_rng(seed)
    out = []
    for name, count in per_class.items():
        label = POKER_CLASSES.index(name)
        for i in range(count):
            path = (
                Path(root) / "POKERDVS" / POKERDVS_SPLITS[split] / name / f"{name}{i * 11 % 50}.npy"
            )
            t0 = int(rng.integers(10**6, 10**7))
            ev = random_events(rng, n_events, SENSORS["pokerdvs"], t0=t0, duration=20_000)
            write_npy(
                path, {"t": ev["t"], "x": ev["x"], "y": ev["y"], "p": ev["p"]}, ("t", "x", "y", "p")
            )
            expected = ev.copy()
            expected["t"] -= ev["t"][0]
            out.append((label, path, expected))
    return sorted(out, key=lambda r: (r[0], r[1].name))


# ----------------------------------------------------------------------------- benchmark sets
# (no test split: each writer returns the whole dataset, sorted by label then path)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def write_ncaltech101_bin(path: Path, events: np.ndarray) -> Path:
    """N-Caltech101 uses N-MNIST's 40-bit format; recordings differ in size."""
    return write_nmnist_bin(path, events)


def write_ncaltech101(root: Path, per_class=None, seed: int = 0, n_events: int = 60):
    """``per_class`` maps category folder -> number of recordings. Each recording covers its
    own w x h box (up to 240 x 180) at an offset on the 8-bit address space (y below 240,
    which the format reserves for time-overflow events), as the real recordings do; the
    expected events are moved to x, y >= 0 (tonic's decoding)."""
    from spikescale.tonic_datasets import NCALTECH101_CLASSES

    per_class = per_class or {"airplanes": 4, "Faces_easy": 3, "yin_yang": 2}
    rng = np.random.default_rng(seed)
    out = []
    for name, count in per_class.items():
        for i in range(count):
            path = Path(root) / "NCALTECH101" / "Caltech101" / name / f"image_{i * 3 + 1:04d}.bin"
            width, height = int(rng.integers(100, 241)), int(rng.integers(80, 181))
            box = (width, height, 2)
            ev = random_events(rng, n_events, box, t0=int(rng.integers(0, 3000)), duration=90_000)
            ev["x"][0], ev["y"][1] = width - 1, height - 1  # the box's far corner is reached
            raw = ev.copy()
            raw["x"] += int(rng.integers(0, 256 - width))
            raw["y"] += int(rng.integers(0, 241 - height))  # y = 240 marks a time overflow
            write_ncaltech101_bin(path, raw)
            expected = raw.copy()
            expected["x"] -= raw["x"].min()
            expected["y"] -= raw["y"].min()
            out.append((NCALTECH101_CLASSES.index(name), path, expected))
    return sorted(out, key=lambda r: (r[0], r[1].name))


def write_cifar10dvs(root: Path, per_class=None, seed: int = 0, n_events: int = 60):
    """``per_class`` maps class name -> number of recordings (AEDAT 4, absolute clock)."""
    from recording_formats import write_aedat4

    per_class = per_class or {"airplane": 4, "cat": 3, "truck": 2}
    rng = np.random.default_rng(seed)
    out = []
    for name, count in per_class.items():
        for i in range(count):
            path = Path(root) / "CIFAR10DVS" / name / f"cifar10_{name}_{i * 7}.aedat4"
            t0 = 1_600_000_000_000_000 + int(rng.integers(0, 10**9))
            ev = random_events(rng, n_events, SENSORS["cifar10dvs"], t0=t0, duration=90_000)
            write_aedat4(path, ev, 128, 128)
            expected = ev.copy()
            expected["t"] -= t0
            out.append((CIFAR10_CLASSES.index(name), path, expected))
    return sorted(out, key=lambda r: (r[0], r[1].relative_to(r[1].parents[1]).as_posix()))


def write_asldvs_mat(path: Path, events: np.ndarray, height: int = 180) -> Path:
    """ASL-DVS's MATLAB file: column vectors ts, x, y, pol; y counted from the bottom
    (tonic flips it: ``179 - y``)."""
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(
        path,
        {
            "ts": events["t"].astype(np.int64).reshape(-1, 1),
            "x": events["x"].astype(np.uint8).reshape(-1, 1),
            "y": (height - 1 - events["y"]).astype(np.uint8).reshape(-1, 1),
            "pol": events["p"].astype(np.uint8).reshape(-1, 1),
        },
    )
    return path


def write_asldvs(root: Path, per_class=None, seed: int = 0, n_events: int = 60):
    """``per_class`` maps letter -> number of recordings."""
    per_class = per_class or {"a": 4, "k": 3, "y": 2}
    rng = np.random.default_rng(seed)
    out = []
    for letter, count in per_class.items():
        for i in range(count):
            path = Path(root) / "ASLDVS" / letter / f"{letter}_{i * 5 + 1:04d}.mat"
            t0 = int(rng.integers(10**6, 10**8))
            ev = random_events(rng, n_events, SENSORS["asldvs"], t0=t0, duration=90_000)
            write_asldvs_mat(path, ev)
            expected = ev.copy()
            expected["t"] -= t0
            out.append((ord(letter) - ord("a"), path, expected))
    return sorted(out, key=lambda r: (r[0], r[1].name))


# ----------------------------------------------------------------------------- archives


WRITERS = {"nmnist": write_nmnist, "dvsgesture": write_dvsgesture, "pokerdvs": write_pokerdvs}
# the datasets without a test split: root -> the whole dataset
WHOLE_WRITERS = {
    "ncaltech101": write_ncaltech101,
    "cifar10dvs": write_cifar10dvs,
    "asldvs": write_asldvs,
}


def archive_folder(folder: Path, archive: Path, arc_prefix: str | None = None) -> Path:
    """Pack ``folder`` (as ``arc_prefix``, default its name) into a .zip or .tar.gz; remove it."""
    folder, archive = Path(folder), Path(archive)
    prefix = folder.name if arc_prefix is None else arc_prefix
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zf:
            for f in files:
                zf.write(f, str(Path(prefix) / f.relative_to(folder)))
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for f in files:
                tf.add(f, str(Path(prefix) / f.relative_to(folder)))
    shutil.rmtree(folder)
    return archive
