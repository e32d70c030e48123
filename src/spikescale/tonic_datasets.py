"""Tonic's event-camera datasets (N-MNIST, DVS Gesture, POKER-DVS) read into an EventSet.

Offline first. The files a user already has are found in tonic's own on-disk layout (or as
the archives tonic downloads, which are then extracted beside themselves), enumerated here
and decoded one by one with tonic's readers (``tonic.io.read_mnist_file`` for N-MNIST's
``.bin`` files; ``numpy.load`` plus the column order and time unit of tonic's dataset class
for the ``.npy`` layouts). tonic's dataset classes are not used to read local files because
tonic 1.7's ``_check_exists`` wants the whole dataset and its archive (e.g. 10,000 N-MNIST
files) and otherwise starts a download: a partial copy, or a cluster node without
internet, would be blocked. They are used for what only they do: downloading, when the
caller asks for it and the split is missing.

Timestamps (``t``, microseconds):

* N-MNIST keeps the file's timestamps. Every recording's clock starts at 0 when the
  recording starts (the first event comes a little later), and the saccades sit at fixed
  times (0, 105, 210 ms) that tools such as tonic's ``first_saccade_only`` rely on.
* DVS Gesture and POKER-DVS samples are cut out of longer recordings; their timestamps
  count from the start of the whole session. Each sample is shifted so that its first event
  is at ``t = 0``. DVS Gesture's ``.npy`` files hold milliseconds (tonic's preprocessed
  version); they are converted to microseconds as tonic does.

Every sample is sorted by ``t`` (stable, so equal timestamps keep the file's order).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikescale.errors import InputError, MissingInputError
from spikescale.events import EVENT_DTYPE, EventSet, from_samples

log = logging.getLogger(__name__)

TONIC_DATASETS = ("nmnist", "dvsgesture", "pokerdvs")
SPLITS = ("train", "test")
SKIP_REASONS = ("corrupt", "empty", "outside_sensor")
ON_BAD_SAMPLE = ("error", "skip")


class DatasetNotFoundError(MissingInputError):
    """No usable copy of a dataset split where it was looked for (and no download)."""


class BadSampleError(InputError):
    """One recording is corrupt, truncated, empty or has events outside the sensor."""

    def __init__(self, path: Path, reason: str, detail: str):
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        hint = (
            " (set dataset.on_bad_sample: skip to skip and count such recordings instead)"
            if reason in SKIP_REASONS
            else ""
        )
        super().__init__(f"{path}: {reason}: {detail}{hint}")


class CorruptArchiveError(InputError):
    """A dataset archive cannot be extracted or does not hold the expected folder."""


@dataclass(frozen=True)
class _Layout:
    """Where and how one tonic dataset lies on disk (tonic 1.7's layout)."""

    title: str
    tonic_class: str  # also the folder under root: tonic saves to <save_to>/<class name>
    split_dirs: dict[str, str]
    archives: dict[str, tuple[str, ...]]
    files: str  # the files inside a split folder, for messages
    shift_to_zero: bool
    homepage: str


_LAYOUTS: dict[str, _Layout] = {
    "nmnist": _Layout(
        title="N-MNIST",
        tonic_class="NMNIST",
        split_dirs={"train": "Train", "test": "Test"},
        # tonic saves the download as train.zip/test.zip; the original site calls them
        # Train.zip/Test.zip
        archives={"train": ("train.zip", "Train.zip"), "test": ("test.zip", "Test.zip")},
        files="<digit 0-9>/*.bin (N-MNIST's 40-bit events)",
        shift_to_zero=False,
        homepage="https://www.garrickorchard.com/datasets/n-mnist",
    ),
    "dvsgesture": _Layout(
        title="DVS Gesture",
        tonic_class="DVSGesture",
        split_dirs={"train": "ibmGestureTrain", "test": "ibmGestureTest"},
        archives={"train": ("ibmGestureTrain.tar.gz",), "test": ("ibmGestureTest.tar.gz",)},
        files="<user>_<lighting>/<label 0-10>.npy"
        " (tonic's preprocessed version: columns x, y, p, t in ms)",
        shift_to_zero=True,
        homepage="https://research.ibm.com/dvsgesture/",
    ),
    "pokerdvs": _Layout(
        title="POKER-DVS",
        tonic_class="POKERDVS",
        split_dirs={"train": "pips_train", "test": "pips_test"},
        archives={"train": ("pips_train.tar.gz",), "test": ("pips_test.tar.gz",)},
        files=(
            "<cl|he|di|sp>/*.npy (tonic's version: columns t, x, y, p; the class is the "
            "folder name's last two letters)"
        ),
        shift_to_zero=True,
        homepage="http://www2.imse-cnm.csic.es/caviar/POKERDVS.html",
    ),
}


class _Bad(Exception):
    """Internal: a recording that cannot be used, with one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- public API


def tonic_folder(name: str, root: str | Path) -> Path:
    """The folder tonic keeps dataset ``name`` in: ``<root>/<tonic class name>``."""
    return Path(root).expanduser() / _layout(name).tonic_class


def split_folder(name: str, root: str | Path, split: str) -> Path:
    """The standard folder of one split, e.g. ``<root>/NMNIST/Train`` (a DVC dependency)."""
    _check_split(split)
    return tonic_folder(name, root) / _layout(name).split_dirs[split]


def load_tonic(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    on_bad_sample: str = "error",
    max_samples_per_class: int | None = None,
) -> EventSet:
    """One split of a tonic dataset as an :class:`EventSet`.

    ``name`` is one of :data:`TONIC_DATASETS`, ``split`` ``"train"`` or ``"test"``, ``root``
    the folder tonic saves datasets to (``save_to``). The split is read from, in turn:
    ``<root>/<TonicClass>/<split folder>``; ``<root>/<split folder>`` (``root`` pointing at
    the dataset's own folder); an archive tonic downloads (``<root>/<TonicClass>/train.zip``
    and so on), extracted beside itself first. Any number of files is accepted (partial
    copies work). Only if none is found and ``download`` is true does tonic download the
    split into ``<root>/<TonicClass>``; otherwise :class:`DatasetNotFoundError` says where
    it looked and how to get the data.

    Samples come sorted by label, then by path inside the split folder; labels index
    ``classes``, tonic's class names. A recording that is corrupt, truncated, empty or has
    events outside the sensor raises :class:`BadSampleError`, or with
    ``on_bad_sample="skip"`` is left out and counted by reason in ``skipped``.
    ``max_samples_per_class`` keeps the first N usable samples of each class (quick runs);
    files after the N-th of a class are not read. See the module docstring for timestamps.
    The whole split is in memory; :func:`open_tonic` streams it sample by sample.
    """
    return open_tonic(
        name,
        root,
        split,
        download=download,
        on_bad_sample=on_bad_sample,
        max_samples_per_class=max_samples_per_class,
    ).load()


def require_present(name: str, root: str | Path, download: bool = False) -> None:
    """Fail unless both splits of tonic dataset ``name`` can be found under ``root``.

    The cheap part of :func:`open_tonic`, for checks before any job: folders are listed
    (recordings or archives must be there) but nothing is read, extracted or downloaded.
    A missing split raises :class:`DatasetNotFoundError` with the message the stage gives
    (where it looked, the layout, how to get the data); with ``download`` a missing split
    is fine, the stage downloads it.
    """
    if download:
        _layout(name)
        return
    root = Path(root).expanduser()
    tonic_cls = _tonic_class(_layout(name))
    for split in SPLITS:
        found, looked = _locate(name, root, split, tonic_cls, extract=False)
        if found is None:
            raise DatasetNotFoundError(_not_found_message(name, root, split, looked, download))


def open_tonic(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    on_bad_sample: str = "error",
    max_samples_per_class: int | None = None,
) -> TonicSplit:
    """One split of a tonic dataset, found (or downloaded) and checked, not yet read.

    Arguments and the search are those of :func:`load_tonic`, and a missing split or a
    bad argument fails here, before any recording is read. Iterating the returned
    :class:`TonicSplit` reads the recordings one by one, in :func:`load_tonic`'s order and
    with its handling of bad recordings, so memory is bounded by what the caller keeps.
    """
    layout = _layout(name)
    _check_split(split)
    if on_bad_sample not in ON_BAD_SAMPLE:
        raise InputError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
    if max_samples_per_class is not None and (
        isinstance(max_samples_per_class, bool)
        or int(max_samples_per_class) != max_samples_per_class
        or max_samples_per_class < 1
    ):
        raise InputError(
            "max_samples_per_class must be a positive integer or None, "
            f"got {max_samples_per_class!r}"
        )
    root = Path(root).expanduser()
    tonic_cls = _tonic_class(layout)

    found, looked = _locate(name, root, split, tonic_cls)
    if found is None and download:
        _download(name, root, split, tonic_cls, looked)
        found, looked = _locate(name, root, split, tonic_cls)
    if found is None:
        raise DatasetNotFoundError(_not_found_message(name, root, split, looked, download))
    split_dir, items = found
    return TonicSplit(name, split_dir, items, tonic_cls, on_bad_sample, max_samples_per_class)


class TonicSplit:
    """A located split of a tonic dataset, read sample by sample when iterated.

    Iterating yields ``(events, label)`` per usable recording (``events`` in
    :data:`~spikescale.events.EVENT_DTYPE`, sorted by ``t``). ``skipped`` counts the
    recordings left out by reason, complete once an iteration has ended; an iteration
    that finds no usable recording raises :class:`BadSampleError` at its end.
    ``sensor_size`` and ``classes`` are tonic's.
    """

    def __init__(
        self, name, split_dir: Path, items, tonic_cls, on_bad_sample, max_per_class
    ) -> None:
        self.name = name
        self.split_dir = split_dir
        self.items = items
        self.sensor_size = tuple(int(s) for s in tonic_cls.sensor_size)
        self.classes = tuple(tonic_cls.classes)
        self.on_bad_sample = on_bad_sample
        self.max_per_class = max_per_class
        self.skipped: dict[str, int] = {reason: 0 for reason in SKIP_REASONS}

    def __len__(self) -> int:
        """Recording files found (an upper bound on the samples yielded)."""
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        from tqdm.auto import tqdm

        layout = _layout(self.name)
        skipped = Counter({reason: 0 for reason in SKIP_REASONS})
        kept = Counter()
        for label, path in tqdm(
            self.items, desc=f"{layout.title} {self.split_dir.name}", unit="file", disable=None
        ):
            if self.max_per_class is not None and kept[label] >= self.max_per_class:
                continue
            try:
                events = read_recording(self.name, path)
            except BadSampleError as err:
                if self.on_bad_sample == "error":
                    raise
                skipped[err.reason] += 1
                log.warning("skipped %s", err)
                continue
            kept[label] += 1
            yield events, label
        self.skipped = dict(skipped)
        if not sum(kept.values()):
            raise BadSampleError(
                self.split_dir,
                "no usable recordings",
                f"all {sum(skipped.values())} recordings were skipped ({dict(skipped)})",
            )
        if sum(skipped.values()):
            log.warning("%s: skipped %s", self.split_dir, dict(skipped))

    def load(self) -> EventSet:
        """The whole split in memory (what :func:`load_tonic` returns)."""
        samples, labels = [], []
        for events, label in self:
            samples.append(events)
            labels.append(label)
        eventset = from_samples(samples, labels, self.sensor_size, self.classes)
        return dataclasses.replace(eventset, skipped=dict(self.skipped))


# --------------------------------------------------------------------------- finding files


def _layout(name: str) -> _Layout:
    if name not in _LAYOUTS:
        raise InputError(f"unknown tonic dataset {name!r}; expected one of {TONIC_DATASETS}")
    return _LAYOUTS[name]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")


def _tonic_class(layout: _Layout):
    import tonic.datasets  # slow to import (seconds); only when a tonic dataset is used

    return getattr(tonic.datasets, layout.tonic_class)


def _visible(path: Path) -> bool:
    # macOS copies leave "._name" AppleDouble files beside real ones; they are not recordings
    return not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and _visible(d)]


def _files(folder: Path, suffix: str) -> list[Path]:
    return [f for f in folder.iterdir() if f.suffix == suffix and f.is_file() and _visible(f)]


def _nmnist_items(split_dir: Path, tonic_cls) -> tuple[list[tuple[int, Path]], list[Path]]:
    items, ignored = [], []
    for d in _subdirs(split_dir):
        if len(d.name) == 1 and d.name in "0123456789":
            items += [(int(d.name), f) for f in _files(d, ".bin")]
        else:
            ignored.append(d)
    return items, ignored


def _dvsgesture_items(split_dir: Path, tonic_cls) -> tuple[list[tuple[int, Path]], list[Path]]:
    n_classes = len(tonic_cls.classes)
    items, ignored = [], []
    for d in _subdirs(split_dir):
        for f in _files(d, ".npy"):
            if f.stem.isascii() and f.stem.isdecimal() and int(f.stem) < n_classes:
                items.append((int(f.stem), f))
            else:
                ignored.append(f)
    return items, ignored


def _pokerdvs_items(split_dir: Path, tonic_cls) -> tuple[list[tuple[int, Path]], list[Path]]:
    items, ignored = [], []
    for d in _subdirs(split_dir):
        label = tonic_cls.int_classes.get(d.name[-2:])
        if label is None:
            ignored.append(d)
        else:
            items += [(label, f) for f in _files(d, ".npy")]
    return items, ignored


_ITEMS: dict[str, Callable] = {
    "nmnist": _nmnist_items,
    "dvsgesture": _dvsgesture_items,
    "pokerdvs": _pokerdvs_items,
}


def _enumerate(name: str, split_dir: Path, tonic_cls) -> list[tuple[int, Path]]:
    """(label, file) of every recording in a split folder, sorted by label then path."""
    items, ignored = _ITEMS[name](split_dir, tonic_cls)
    if ignored:
        log.warning(
            "%s: ignored %d entries that do not fit the layout %s, e.g. %s",
            split_dir,
            len(ignored),
            _layout(name).files,
            sorted(ignored)[0],
        )
    return sorted(items, key=lambda item: (item[0], item[1].relative_to(split_dir).as_posix()))


def _locate(name: str, root: Path, split: str, tonic_cls, extract: bool = True):
    """((split folder, items) or None, [(place looked at, what was there)]).

    Without ``extract``, an archive that exists counts as found: ``(archive, [])``.
    """
    layout = _layout(name)
    split_name = layout.split_dirs[split]
    homes = [root / layout.tonic_class, root]
    looked: list[tuple[Path, str]] = []
    for home in homes:
        split_dir = home / split_name
        if not split_dir.is_dir():
            looked.append((split_dir, "missing"))
            continue
        items = _enumerate(name, split_dir, tonic_cls)
        if items:
            return (split_dir, items), looked
        looked.append((split_dir, f"exists but holds no {layout.files}"))
    for home in homes:
        for archive_name in layout.archives[split]:
            archive = home / archive_name
            if not archive.is_file():
                looked.append((archive, "missing"))
                continue
            if not extract:
                return (archive, []), looked
            split_dir = _extract(
                archive, split_name, lambda d: bool(_enumerate(name, d, tonic_cls))
            )
            items = _enumerate(name, split_dir, tonic_cls)
            if items:
                return (split_dir, items), looked
            looked.append((archive, f"extracted to {split_dir}, which holds no {layout.files}"))
    return None, looked


def _extract(archive: Path, split_name: str, has_recordings: Callable[[Path], bool]) -> Path:
    """Extract ``archive`` and move its ``split_name`` folder beside it, atomically.

    The archive is unpacked into a hidden temporary folder next to it; only a complete
    extraction is moved into place, so an interrupted run leaves no half-filled folder.
    Paths that would leave the folder (``..``, absolute names, links out) are refused.
    """
    target = archive.parent / split_name
    log.info("extracting %s into %s", archive, archive.parent)
    try:
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=archive.parent)
        )
    except OSError as err:
        raise type(err)(
            err.errno,
            f"cannot extract {archive}: cannot write to {archive.parent} ({err.strerror}); extract "
            "it yourself, or copy it to a writable folder and point dataset.root there",
        ) from err
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)  # zipfile drops absolute and ".." parts itself
            else:
                with tarfile.open(archive) as tf:
                    tf.extractall(tmp, filter="data")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as err:
            raise CorruptArchiveError(
                f"cannot extract {archive}: {err}; download it again or remove it"
            ) from err
        candidates = [tmp / split_name] + [d / split_name for d in _subdirs(tmp)]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None and has_recordings(tmp):
            found = tmp  # the archive holds the split's contents without the split folder
        if found is None:
            top = sorted(p.name for p in tmp.iterdir())[:10]
            raise CorruptArchiveError(
                f"{archive} holds no folder {split_name!r} (top-level entries: {top})"
            )
        if target.exists():
            try:
                target.rmdir()  # only an empty folder is replaced
            except OSError as err:
                raise CorruptArchiveError(
                    f"cannot extract {archive}: {target} exists and is not empty but holds no "
                    "recordings; move it away and rerun"
                ) from err
        if found == tmp:
            os.replace(tmp, target)
        else:
            os.replace(found, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(name: str, root: Path, split: str, tonic_cls, looked) -> None:
    """Let tonic download (and extract) one split into ``<root>/<TonicClass>``."""
    layout = _layout(name)
    log.info(
        "downloading %s %s split with tonic into %s", layout.title, split, root / layout.tonic_class
    )
    try:
        tonic_cls(save_to=str(root), train=(split == "train"))
    except Exception as err:  # network, checksum, disk: all end the same way for the user
        raise DatasetNotFoundError(
            _not_found_message(name, root, split, looked, download=True)
            + f"\ntonic's download failed: {type(err).__name__}: {err}"
        ) from err


def _not_found_message(name: str, root: Path, split: str, looked, download: bool) -> str:
    layout = _layout(name)
    cls = layout.tonic_class
    places = "\n".join(f"  - {path} ({what})" for path, what in looked)
    archives = " or ".join(f"<root>/{cls}/{a}" for a in layout.archives[split])
    lines = [
        f"{layout.title} {split} split not found under root {root}. Looked for:",
        places,
        "Expected layout (tonic's): "
        f"<root>/{cls}/{layout.split_dirs[split]}/{layout.files}; "
        f"or the archive {archives}, which is extracted there. A partial copy is fine.",
    ]
    lines.append(_how_to_get(name, split, download))
    return "\n".join(lines)


def _how_to_get(name: str, split: str, download: bool) -> str:
    layout = _layout(name)
    cls = _tonic_class(layout)
    ask = (
        ""
        if download
        else "To let tonic download it, set `dataset.download: true` in params.yaml (or override "
        "it for one run, e.g. `dvc exp run -S dataset.download=true`). "
    )
    if name == "pokerdvs":
        import tonic.datasets

        shipped = Path(tonic.datasets.__file__).parent / layout.archives[split][0]
        where = "present" if shipped.is_file() else "missing in this installation"
        return (
            ask
            + f"tonic 1.7 has no download URL for POKER-DVS: it copies {layout.archives[split][0]} "
            f"from its own package folder ({shipped}: {where}); the archives are in tonic's source "
            "repository (https://github.com/neuromorphs/tonic, tonic/datasets/). Copy "
            f"{layout.archives[split][0]} to <root>/{layout.tonic_class}/. "
            f"Dataset home page: {layout.homepage}"
        )
    url = cls.train_url if split == "train" else cls.test_url
    note = (
        " (tonic's preprocessed .npy version; the original IBM DvsGesture.tar.gz with "
        ".aedat files is not read here)"
        if name == "dvsgesture"
        else ""
    )
    return ask + f"tonic downloads it from {url}{note}. Dataset home page: {layout.homepage}"


# --------------------------------------------------------------------------- decoding


def _decode_nmnist(path: Path, tonic_cls) -> np.ndarray:
    size = path.stat().st_size
    if size % 5:
        raise _Bad(
            "corrupt", f"truncated: {size} bytes is not a whole number of 5-byte (40-bit) events"
        )
    from tonic.io import read_mnist_file

    events = read_mnist_file(str(path), dtype=tonic_cls.dtype)
    _check_events({n: events[n] for n in ("x", "y", "t", "p")}, tonic_cls.sensor_size)
    return events


def _decode_npy(path: Path, tonic_cls, t_scale: int) -> np.ndarray:
    """An (N, 4) ``.npy`` in tonic's column order, as tonic's ``__getitem__`` decodes it."""
    from numpy.lib.recfunctions import unstructured_to_structured

    names = tonic_cls.dtype.names
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _Bad("corrupt", f"not a readable .npy file ({type(err).__name__}: {err})") from err
    if not isinstance(raw, np.ndarray):
        raise _Bad("corrupt", f"expected one .npy array, found {type(raw).__name__}")
    if raw.size == 0:
        raise _Bad("empty", "the recording holds no events")
    if raw.ndim != 2 or raw.shape[1] != len(names):
        raise _Bad(
            "corrupt",
            f"expected an (N, {len(names)}) array with columns {', '.join(names)}; "
            f"got shape {raw.shape}",
        )
    if raw.dtype.kind not in "biuf":
        raise _Bad("corrupt", f"expected numbers, got dtype {raw.dtype}")
    if raw.dtype.kind == "f":
        arr = raw.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise _Bad("corrupt", "NaN or infinite values")
        coords = arr[:, [names.index(n) for n in ("x", "y", "p")]]
        if np.any(coords != np.floor(coords)):
            raise _Bad("corrupt", "non-integer x, y or p")
    else:
        arr = raw.astype(
            np.int64
        )  # wide enough for the unit change below, unlike int16/int32 files
    arr[:, names.index("t")] *= t_scale
    _check_events({n: arr[:, i] for i, n in enumerate(names)}, tonic_cls.sensor_size)
    return unstructured_to_structured(arr, tonic_cls.dtype)


def _check_events(cols: dict[str, np.ndarray], sensor_size) -> None:
    """Raise _Bad for an empty recording or events outside the sensor (before any cast)."""
    n = len(cols["x"])
    if n == 0:
        raise _Bad("empty", "the recording holds no events")
    width, height, polarities = sensor_size
    x, y, p = cols["x"], cols["y"], cols["p"]
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height) | (p < 0) | (p >= polarities)
    k = int(np.count_nonzero(outside))
    if k:
        raise _Bad(
            "outside_sensor",
            f"{k} of {n} events outside the {width}x{height}x{polarities} sensor "
            f"(x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}], "
            f"p in [{p.min()}, {p.max()}]; "
            f"expected x < {width}, y < {height}, p < {polarities})",
        )


# The conversion benchmark sets (readers only; their registry entries are still to come).
# N-Caltech101's recordings differ in size (tonic: sensor_size None, each recording moved
# to x, y >= 0); they are padded to the largest, 240x180 (spikingjelly's N-Caltech101 size).
NCALTECH101_SENSOR = (240, 180, 2)
CIFAR10DVS_SENSOR = (128, 128, 2)
ASLDVS_SENSOR = (240, 180, 2)


def _decode_ncaltech101(path: Path) -> np.ndarray:
    """An N-Caltech101 ``.bin`` as tonic's ``NCALTECH101.__getitem__`` decodes it (40-bit
    events, x and y moved to start at 0), checked against the padded 240x180 sensor."""
    size = path.stat().st_size
    if size % 5:
        raise _Bad(
            "corrupt", f"truncated: {size} bytes is not a whole number of 5-byte (40-bit) events"
        )
    if size == 0:
        raise _Bad("empty", "the recording holds no events")
    from tonic.io import read_mnist_file

    events = read_mnist_file(str(path), dtype=np.dtype([(n, np.int64) for n in "xytp"]))
    events["x"] -= events["x"].min()
    events["y"] -= events["y"].min()
    _check_events({n: events[n] for n in ("x", "y", "t", "p")}, NCALTECH101_SENSOR)
    return events


def _decode_cifar10dvs(path: Path) -> np.ndarray:
    """A CIFAR10-DVS ``.aedat4`` read by ``tonic.io.read_aedat4`` (fields t, x, y, p), as
    tonic's ``CIFAR10DVS.__getitem__`` does, checked against the 128x128 sensor."""
    from tonic.io import read_aedat4

    try:
        events = read_aedat4(str(path))
    except Exception as err:  # the aedat decoder raises bare Exceptions on bad files
        raise _Bad("corrupt", f"not a readable AEDAT4 file ({type(err).__name__}: {err})") from err
    events.dtype.names = ["t", "x", "y", "p"]
    cols = {n: events[n].astype(np.int64) for n in ("x", "y", "t", "p")}
    _check_events(cols, CIFAR10DVS_SENSOR)
    return events


def _decode_asldvs(path: Path) -> np.ndarray:
    """An ASL-DVS ``.mat`` (``ts``, ``x``, ``y``, ``pol``) as tonic's ``ASLDVS.__getitem__``
    decodes it: y flipped (``179 - y``), checked against the 240x180 sensor."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError) as err:
        raise _Bad("corrupt", f"not a readable .mat file ({type(err).__name__}: {err})") from err
    missing = [k for k in ("ts", "x", "y", "pol") if k not in mat]
    if missing:
        raise _Bad("corrupt", f"expected variables ts, x, y, pol; missing {missing}")
    cols = {
        "t": np.ravel(mat["ts"]).astype(np.int64),
        "x": np.ravel(mat["x"]).astype(np.int64),
        "y": ASLDVS_SENSOR[1] - 1 - np.ravel(mat["y"]).astype(np.int64),
        "p": np.ravel(mat["pol"]).astype(np.int64),
    }
    if len({len(c) for c in cols.values()}) != 1:
        raise _Bad("corrupt", "ts, x, y and pol differ in length")
    _check_events(cols, ASLDVS_SENSOR)
    out = np.empty(len(cols["t"]), dtype=np.dtype([(n, np.int64) for n in "txyp"]))
    for name, values in cols.items():
        out[name] = values
    return out


_DECODERS: dict[str, Callable[[Path, object], np.ndarray]] = {
    "nmnist": _decode_nmnist,
    "dvsgesture": lambda path, cls: _decode_npy(path, cls, t_scale=1000),  # ms -> us, as tonic
    "pokerdvs": lambda path, cls: _decode_npy(path, cls, t_scale=1),
}


def _to_sample(events: np.ndarray, shift_to_zero: bool) -> np.ndarray:
    """tonic's structured events as EVENT_DTYPE, sorted by t, optionally starting at t=0."""
    out = np.empty(len(events), dtype=EVENT_DTYPE)
    for field in EVENT_DTYPE.names:
        out[field] = events[field]
    if np.any(np.diff(out["t"]) < 0):
        out = out[np.argsort(out["t"], kind="stable")]
    if shift_to_zero:
        out["t"] -= out["t"][0]
    return out


def read_recording(name: str, path: str | Path) -> np.ndarray:
    """One recording file of dataset ``name`` as EVENT_DTYPE events (raises BadSampleError)."""
    layout = _layout(name)
    path = Path(path)
    tonic_cls = _tonic_class(layout)
    try:
        return _to_sample(_DECODERS[name](path, tonic_cls), layout.shift_to_zero)
    except _Bad as bad:
        raise BadSampleError(path, bad.reason, bad.detail) from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, ArithmeticError) as err:
        # whatever numpy or tonic's reader trips over on a bad file: name the file
        raise BadSampleError(path, "corrupt", f"unreadable ({type(err).__name__}: {err})") from err
