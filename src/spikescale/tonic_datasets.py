"""Tonic's event-camera datasets read into an EventSet, offline, from partial copies.

One :class:`TonicDataset` entry in :data:`DATASETS` says everything about a dataset: where
its files lie in tonic 1.7's on-disk layout, how they are listed and decoded, its sensor,
whether it has a test split and how to get it. Adding a dataset is adding one entry.

Offline first. The files a user already has are found in tonic's own on-disk layout (or as
the archives tonic downloads, which are then extracted beside themselves), enumerated here
and decoded one by one with tonic's readers (``tonic.io.read_mnist_file`` for the 40-bit
``.bin`` files, ``tonic.io.read_aedat4`` for AEDAT 4, ``scipy.io.loadmat`` as tonic's
ASL-DVS does, ``numpy.load`` plus the column order and time unit of tonic's dataset class
for the ``.npy`` layouts). tonic's dataset classes are not used to read local files because
tonic 1.7's ``_check_exists`` wants the whole dataset and its archive (e.g. 10,000 N-MNIST
files) and otherwise starts a download: a partial copy, or a cluster node without
internet, would be blocked. They are used for what only they do: downloading, when the
caller asks for it and the data is missing.

Datasets without a test split (N-Caltech101, CIFAR10-DVS, ASL-DVS) are split here: of each
class, ``test_fraction`` of the recordings (seeded by ``seed``, stratified:
:func:`spikescale.recordings.stratified_split`, as a folder of recordings without ``test/``)
form the test split, the rest the train split. Same files, fraction and seed: same split.

Timestamps (``t``, microseconds):

* N-MNIST and N-Caltech101 keep the file's timestamps. Every recording's clock starts at 0
  when the recording starts (the first event comes a little later), and the saccades sit at
  fixed times (0, 105, 210 ms) that tools such as tonic's ``first_saccade_only`` rely on.
* DVS Gesture and POKER-DVS samples are cut out of longer recordings; their timestamps
  count from the start of the whole session. CIFAR10-DVS (AEDAT 4, whose clock is absolute)
  and ASL-DVS samples do not say where their clock starts. Each such sample is shifted so
  that its first event is at ``t = 0`` (the evaluation raster is a grid from 0). DVS
  Gesture's ``.npy`` files hold milliseconds (tonic's preprocessed version); they are
  converted to microseconds as tonic does.

Every sample is sorted by ``t`` (stable, so equal timestamps keep the file's order).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikescale.errors import InputError, MissingInputError
from spikescale.event_store import EVENT_DTYPE, EventSet, from_samples

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
SKIP_REASONS = ("corrupt", "empty", "outside_sensor")
ON_BAD_SAMPLE = ("error", "skip")

Items = list[tuple[int, Path]]  # (label, recording file)


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


class _Bad(Exception):
    """Internal: a recording that cannot be used, with one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TonicDataset:
    """One tonic dataset: its on-disk layout (tonic 1.7's), reader, sensor and source.

    ``folders`` maps each split to its folder under ``<root>/<tonic_class>`` (tonic saves to
    ``<save_to>/<class name>``); a dataset without a test split has one folder for both
    (``""``: the class folder itself), split by ``test_fraction``. ``items`` lists a folder's
    recordings as ``(label, file)`` plus the entries that do not fit the layout; ``decode``
    reads one file into tonic's structured events, checked against ``sensor_size``.
    ``archives`` maps a folder to the archive names it may come as (extracted on first use).
    ``classes`` are tonic's class names (None: the tonic class's ``classes``).
    ``varying_size``: recordings differ in size and are padded to ``sensor_size`` (the
    event file then records the largest recording's extent).
    ``how_to_get`` is the sentence that tells a user where the data comes from.
    """

    title: str
    tonic_class: str
    sensor_size: tuple[int, int, int]
    folders: dict[str, str]
    files: str  # the files inside a folder, for messages
    items: Callable[[Path, tuple[str, ...]], tuple[Items, list[Path]]]
    decode: Callable[[Path, tuple[int, int, int]], np.ndarray]
    shift_to_zero: bool
    homepage: str
    has_test_split: bool = True
    archives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    varying_size: bool = False
    how_to_get: Callable[[TonicDataset, str], str] = lambda entry, split: _tonic_url(entry, split)

    def tonic(self):
        """tonic's dataset class (importing tonic takes seconds: only when needed)."""
        import tonic.datasets

        return getattr(tonic.datasets, self.tonic_class)

    def class_names(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else tuple(self.tonic().classes)


# --------------------------------------------------------------------------- public API


def dataset_info(name: str) -> TonicDataset:
    """The registry entry of tonic dataset ``name`` (an InputError for an unknown name)."""
    if name not in DATASETS:
        raise InputError(f"unknown tonic dataset {name!r}; expected one of {TONIC_DATASETS}")
    return DATASETS[name]


def tonic_folder(name: str, root: str | Path) -> Path:
    """The folder tonic keeps dataset ``name`` in: ``<root>/<tonic class name>``."""
    return Path(root).expanduser() / dataset_info(name).tonic_class


def split_folder(name: str, root: str | Path, split: str) -> Path:
    """The standard folder of one split, e.g. ``<root>/NMNIST/Train`` (both splits of a
    dataset without a test split: its one folder, e.g. ``<root>/NCALTECH101/Caltech101``)."""
    _check_split(split)
    return tonic_folder(name, root) / dataset_info(name).folders[split]


def load_tonic(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    on_bad_sample: str = "error",
    max_samples_per_class: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> EventSet:
    """One split of a tonic dataset as an :class:`EventSet`.

    ``name`` is one of :data:`TONIC_DATASETS`, ``split`` ``"train"`` or ``"test"``, ``root``
    the folder tonic saves datasets to (``save_to``). The split is read from, in turn:
    ``<root>/<TonicClass>/<split folder>``; ``<root>/<split folder>`` (``root`` pointing at
    the dataset's own folder); an archive tonic downloads (``<root>/<TonicClass>/train.zip``
    and so on), extracted beside itself first. Any number of files is accepted (partial
    copies work). Only if none is found and ``download`` is true does tonic download the
    dataset into ``<root>/<TonicClass>``; otherwise :class:`DatasetNotFoundError` says where
    it looked and how to get the data. A dataset without a test split is split by
    ``test_fraction`` and ``seed`` (see the module docstring); the others ignore both.

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
        test_fraction=test_fraction,
        seed=seed,
    ).load()


def require_present(
    name: str,
    root: str | Path,
    download: bool = False,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> None:
    """Fail unless both splits of tonic dataset ``name`` can be found under ``root``.

    The cheap part of :func:`open_tonic`, for checks before any job: folders are listed
    (recordings or archives must be there) but nothing is read, extracted or downloaded.
    A missing split raises :class:`DatasetNotFoundError` with the message the stage gives
    (where it looked, the layout, how to get the data); with ``download`` a missing split
    is fine, the stage downloads it. A dataset without a test split must have a class with
    two recordings (else there is nothing to split off).
    """
    entry = dataset_info(name)
    _check_fraction(test_fraction)
    if download:
        return
    root = Path(root).expanduser()
    for split in SPLITS:
        found, looked = _locate(entry, root, split, extract=False)
        if found is None:
            raise DatasetNotFoundError(_not_found_message(entry, root, split, looked, download))
        if not entry.has_test_split and found[1]:
            _split_off(entry, found[0], found[1], split, test_fraction, seed)
            return  # one folder for both splits: checked once


def open_tonic(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    on_bad_sample: str = "error",
    max_samples_per_class: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TonicSplit:
    """One split of a tonic dataset, found (or downloaded) and checked, not yet read.

    Arguments and the search are those of :func:`load_tonic`, and a missing split or a
    bad argument fails here, before any recording is read. Iterating the returned
    :class:`TonicSplit` reads the recordings one by one, in :func:`load_tonic`'s order and
    with its handling of bad recordings, so memory is bounded by what the caller keeps.
    """
    entry = dataset_info(name)
    _check_split(split)
    _check_fraction(test_fraction)
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

    found, looked = _locate(entry, root, split)
    if found is None and download:
        _download(entry, root, split, looked)
        found, looked = _locate(entry, root, split)
    if found is None:
        raise DatasetNotFoundError(_not_found_message(entry, root, split, looked, download))
    split_dir, items = found
    split_off = None
    if not entry.has_test_split:
        items = _split_off(entry, split_dir, items, split, test_fraction, seed)
        split_off = {"test_fraction": float(test_fraction), "seed": int(seed)}
    return TonicSplit(
        name, split_dir, items, entry, on_bad_sample, max_samples_per_class, split_off
    )


class TonicSplit:
    """A located split of a tonic dataset, read sample by sample when iterated.

    Iterating yields ``(events, label)`` per usable recording (``events`` in
    :data:`~spikescale.event_store.EVENT_DTYPE`, sorted by ``t``). ``skipped`` counts the
    recordings left out by reason, complete once an iteration has ended; an iteration
    that finds no usable recording raises :class:`BadSampleError` at its end.
    ``sensor_size`` and ``classes`` are the registry entry's (tonic's where tonic states
    them). ``extent`` is the smallest ``(width, height)`` that held every usable
    recording of the last iteration (N-Caltech101's recordings differ in size and are
    padded to ``sensor_size``).
    """

    def __init__(
        self,
        name: str,
        split_dir: Path,
        items: Items,
        entry: TonicDataset,
        on_bad_sample: str,
        max_per_class: int | None,
        split_off: dict | None = None,
    ) -> None:
        self.name = name
        self.split_dir = split_dir
        self.items = items
        self.entry = entry
        self.sensor_size = entry.sensor_size
        self.classes = entry.class_names()
        self.on_bad_sample = on_bad_sample
        self.max_per_class = max_per_class
        self.split_off = split_off
        self.skipped: dict[str, int] = {reason: 0 for reason in SKIP_REASONS}
        self.extent: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        """Recording files found (an upper bound on the samples yielded)."""
        return len(self.items)

    def metadata(self) -> dict:
        """What the event file should record about this split (after an iteration): for a
        dataset without a test split, how it was split; for recordings of varying size, the
        largest recording's extent ``[width, height]``."""
        out: dict = {}
        if self.entry.varying_size:
            out["largest_recording"] = list(self.extent)
        if self.split_off is not None:
            out["test_split"] = {"stratified": True, **self.split_off}
        return out

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        from tqdm.auto import tqdm

        skipped = Counter({reason: 0 for reason in SKIP_REASONS})
        kept: Counter = Counter()
        extent = [0, 0]
        for label, path in tqdm(
            self.items, desc=f"{self.entry.title} {self.split_dir.name}", unit="file", disable=None
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
            extent = [
                max(extent[0], int(events["x"].max()) + 1),
                max(extent[1], int(events["y"].max()) + 1),
            ]
            yield events, label
        self.skipped = dict(skipped)
        self.extent = (extent[0], extent[1])
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


def read_recording(name: str, path: str | Path) -> np.ndarray:
    """One recording file of dataset ``name`` as EVENT_DTYPE events (raises BadSampleError)."""
    entry = dataset_info(name)
    path = Path(path)
    try:
        return _to_sample(entry.decode(path, entry.sensor_size), entry.shift_to_zero)
    except _Bad as bad:
        raise BadSampleError(path, bad.reason, bad.detail) from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, ArithmeticError) as err:
        # whatever numpy or tonic's reader trips over on a bad file: name the file
        raise BadSampleError(path, "corrupt", f"unreadable ({type(err).__name__}: {err})") from err


# --------------------------------------------------------------------------- finding files


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")


def _check_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise InputError(
            f"dataset.test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}"
        )


def _visible(path: Path) -> bool:
    # macOS copies leave "._name" AppleDouble files beside real ones; they are not recordings
    return not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and _visible(d)]


def _files(folder: Path, suffix: str) -> list[Path]:
    return [f for f in folder.iterdir() if f.suffix == suffix and f.is_file() and _visible(f)]


def _class_folder_items(
    folder: Path, label_of: Callable[[str], int | None], suffix: str
) -> tuple[Items, list[Path]]:
    """``<folder>/<class folder>/*<suffix>``; ``label_of`` maps a folder name to its label
    (None: not a class folder of the layout, ignored)."""
    items, ignored = [], []
    for d in _subdirs(folder):
        label = label_of(d.name)
        if label is None:
            ignored.append(d)
        else:
            items += [(label, f) for f in _files(d, suffix)]
    return items, ignored


def _nmnist_items(split_dir: Path, classes: tuple[str, ...]) -> tuple[Items, list[Path]]:
    def digit(name: str) -> int | None:
        return int(name) if len(name) == 1 and name in "0123456789" else None

    return _class_folder_items(split_dir, digit, ".bin")


def _dvsgesture_items(split_dir: Path, classes: tuple[str, ...]) -> tuple[Items, list[Path]]:
    items, ignored = [], []
    for d in _subdirs(split_dir):
        for f in _files(d, ".npy"):
            if f.stem.isascii() and f.stem.isdecimal() and int(f.stem) < len(classes):
                items.append((int(f.stem), f))
            else:
                ignored.append(f)
    return items, ignored


def _pokerdvs_items(split_dir: Path, classes: tuple[str, ...]) -> tuple[Items, list[Path]]:
    # tonic: the class is the folder name's last two letters
    index = {c: i for i, c in enumerate(classes)}
    return _class_folder_items(split_dir, lambda name: index.get(name[-2:]), ".npy")


def _named_class_items(suffix: str) -> Callable[[Path, tuple[str, ...]], tuple[Items, list]]:
    """``<folder>/<class name>/*<suffix>`` (N-Caltech101, CIFAR10-DVS: tonic labels a file
    by its folder's name)."""

    def items(folder: Path, classes: tuple[str, ...]) -> tuple[Items, list[Path]]:
        index = {c: i for i, c in enumerate(classes)}
        return _class_folder_items(folder, index.get, suffix)

    return items


def _asldvs_items(folder: Path, classes: tuple[str, ...]) -> tuple[Items, list[Path]]:
    # tonic: the class is the folder name's last character (a letter a-z)
    index = {c: i for i, c in enumerate(classes)}
    return _class_folder_items(folder, lambda name: index.get(name[-1:]), ".mat")


def _enumerate(entry: TonicDataset, split_dir: Path) -> Items:
    """(label, file) of every recording in a split folder, sorted by label then path."""
    items, ignored = entry.items(split_dir, entry.class_names())
    if ignored:
        log.warning(
            "%s: ignored %d entries that do not fit the layout %s, e.g. %s",
            split_dir,
            len(ignored),
            entry.files,
            sorted(ignored)[0],
        )
    return sorted(items, key=lambda item: (item[0], item[1].relative_to(split_dir).as_posix()))


def _split_off(
    entry: TonicDataset, folder: Path, items: Items, split: str, test_fraction: float, seed: int
) -> Items:
    """The ``split`` part of a dataset without a test split: per class, a seeded
    ``test_fraction`` of the recordings is the test split (order kept)."""
    from spikescale.recordings import stratified_split

    labels = np.array([label for label, _ in items], dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    if not len(test_idx):
        raise InputError(
            f"{folder}: {entry.title} has no test split and no class with two recordings to "
            f"split off a test share (dataset.test_fraction {test_fraction}); add recordings"
        )
    untested = sorted(set(labels.tolist()) - set(labels[test_idx].tolist()))
    if untested:
        classes = entry.class_names()
        log.warning(
            "%s: classes with one recording stay in train, their test accuracy is unmeasured: %s",
            folder,
            ", ".join(classes[i] for i in untested),
        )
    return [items[i] for i in (train_idx if split == "train" else test_idx)]


def _locate(entry: TonicDataset, root: Path, split: str, extract: bool = True):
    """((split folder, items) or None, [(place looked at, what was there)]).

    Without ``extract``, an archive that exists counts as found: ``(archive, [])``.
    """
    split_name = entry.folders[split]
    homes = [root / entry.tonic_class, root]
    looked: list[tuple[Path, str]] = []
    for home in homes:
        split_dir = home / split_name
        if not split_dir.is_dir():
            looked.append((split_dir, "missing"))
            continue
        items = _enumerate(entry, split_dir)
        if items:
            return (split_dir, items), looked
        looked.append((split_dir, f"exists but holds no {entry.files}"))
    for home in homes:
        for archive_name in entry.archives.get(split_name, ()):
            archive = home / archive_name
            if not archive.is_file():
                looked.append((archive, "missing"))
                continue
            if not extract:
                return (archive, []), looked
            split_dir = _extract(archive, split_name, lambda d: bool(_enumerate(entry, d)))
            items = _enumerate(entry, split_dir)
            if items:
                return (split_dir, items), looked
            looked.append((archive, f"extracted to {split_dir}, which holds no {entry.files}"))
    return None, looked


def _refuse_members_leaving(tf: tarfile.TarFile) -> None:
    """What ``filter="data"`` refuses, for Pythons without it: members that are not plain
    files or folders or links, absolute names, and names or link targets with ``..``."""
    for m in tf.getmembers():
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise tarfile.TarError(f"{m.name!r} is not a file, folder or link")
        for name in (m.name, m.linkname) if (m.issym() or m.islnk()) else (m.name,):
            if name.startswith("/") or ".." in Path(name).parts:
                raise tarfile.TarError(f"{m.name!r} would be written outside the folder")


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
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp, filter="data")
                    else:  # Python before 3.11.4 has no extraction filters
                        _refuse_members_leaving(tf)
                        tf.extractall(tmp)
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


def _download(entry: TonicDataset, root: Path, split: str, looked) -> None:
    """Let tonic download (and extract) the dataset, or one split, into ``<root>/<class>``."""
    log.info(
        "downloading %s (%s) with tonic into %s",
        entry.title,
        split if entry.has_test_split else "the whole dataset",
        root / entry.tonic_class,
    )
    kwargs = {"train": split == "train"} if entry.has_test_split else {}
    try:
        entry.tonic()(save_to=str(root), **kwargs)
    except Exception as err:  # network, checksum, disk: all end the same way for the user
        raise DatasetNotFoundError(
            _not_found_message(entry, root, split, looked, download=True)
            + f"\ntonic's download failed: {type(err).__name__}: {err}"
        ) from err


def _not_found_message(entry: TonicDataset, root: Path, split: str, looked, download) -> str:
    cls = entry.tonic_class
    folder = entry.folders[split]
    places = "\n".join(f"  - {path} ({what})" for path, what in looked)
    archives = " or ".join(f"<root>/{cls}/{a}" for a in entry.archives.get(folder, ()))
    where = f"<root>/{cls}/{folder}/" if folder else f"<root>/{cls}/"
    what = f"{entry.title} {split} split" if entry.has_test_split else entry.title
    layout = f"Expected layout (tonic's): {where}{entry.files}"
    layout += f"; or the archive {archives}, which is extracted there." if archives else "."
    layout += " A partial copy is fine."
    if not entry.has_test_split:
        layout += (
            f" {entry.title} has no test split: dataset.test_fraction of each class (seeded "
            "by dataset.seed) is held out as the test split."
        )
    ask = (
        ""
        if download
        else "To let tonic download it, set `dataset.download: true` in params.yaml (or override "
        "it for one run, e.g. `dvc exp run -S dataset.download=true`). "
    )
    return "\n".join(
        [
            f"{what} not found under root {root}. Looked for:",
            places,
            layout,
            ask + entry.how_to_get(entry, split),
        ]
    )


def _tonic_url(entry: TonicDataset, split: str, note: str = "") -> str:
    """'tonic downloads it from <url>' with tonic's URL for the split (or the dataset)."""
    cls = entry.tonic()
    url = getattr(cls, f"{split}_url", None) or cls.url
    return f"tonic downloads it from {url}{note}. Dataset home page: {entry.homepage}"


def _pokerdvs_source(entry: TonicDataset, split: str) -> str:
    import tonic.datasets

    archive = entry.archives[entry.folders[split]][0]
    shipped = Path(tonic.datasets.__file__).parent / archive
    where = "present" if shipped.is_file() else "missing in this installation"
    return (
        f"tonic 1.7 has no download URL for POKER-DVS: it copies {archive} from its own "
        f"package folder ({shipped}: {where}); the archives are in tonic's source repository "
        f"(https://github.com/neuromorphs/tonic, tonic/datasets/). Copy {archive} to "
        f"<root>/{entry.tonic_class}/. Dataset home page: {entry.homepage}"
    )


# --------------------------------------------------------------------------- decoding

_XYTP = np.dtype([(n, np.int64) for n in "xytp"])  # tonic's NMNIST/NCALTECH101 dtype


def _read_40bit(path: Path) -> np.ndarray:
    """A 40-bit ``.bin`` (N-MNIST, N-Caltech101) read by ``tonic.io.read_mnist_file``, after
    checking that it holds whole events and at least one."""
    size = path.stat().st_size
    if size % 5:
        raise _Bad(
            "corrupt", f"truncated: {size} bytes is not a whole number of 5-byte (40-bit) events"
        )
    if size == 0:
        raise _Bad("empty", "the recording holds no events")
    from tonic.io import read_mnist_file

    return read_mnist_file(str(path), dtype=_XYTP)


def _decode_nmnist(path: Path, sensor_size) -> np.ndarray:
    """An N-MNIST ``.bin`` as tonic reads it, checked against the sensor."""
    events = _read_40bit(path)
    _check_events({n: events[n] for n in ("x", "y", "t", "p")}, sensor_size)
    return events


def _decode_ncaltech101(path: Path, sensor_size) -> np.ndarray:
    """An N-Caltech101 ``.bin`` as tonic's ``NCALTECH101.__getitem__`` decodes it (40-bit
    events, x and y moved to start at 0), checked against the padded sensor."""
    events = _read_40bit(path)
    events["x"] -= events["x"].min()
    events["y"] -= events["y"].min()
    _check_events({n: events[n] for n in ("x", "y", "t", "p")}, sensor_size)
    return events


def _decode_npy(path: Path, sensor_size, columns: tuple[str, ...], t_scale: int) -> np.ndarray:
    """An (N, 4) ``.npy`` in tonic's column order, as tonic's ``__getitem__`` decodes it."""
    from numpy.lib.recfunctions import unstructured_to_structured

    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _Bad("corrupt", f"not a readable .npy file ({type(err).__name__}: {err})") from err
    if not isinstance(raw, np.ndarray):
        raise _Bad("corrupt", f"expected one .npy array, found {type(raw).__name__}")
    if raw.size == 0:
        raise _Bad("empty", "the recording holds no events")
    if raw.ndim != 2 or raw.shape[1] != len(columns):
        raise _Bad(
            "corrupt",
            f"expected an (N, {len(columns)}) array with columns {', '.join(columns)}; "
            f"got shape {raw.shape}",
        )
    if raw.dtype.kind not in "biuf":
        raise _Bad("corrupt", f"expected numbers, got dtype {raw.dtype}")
    if raw.dtype.kind == "f":
        arr = raw.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise _Bad("corrupt", "NaN or infinite values")
        coords = arr[:, [columns.index(n) for n in ("x", "y", "p")]]
        if np.any(coords != np.floor(coords)):
            raise _Bad("corrupt", "non-integer x, y or p")
    arr = raw.astype(np.int64)  # wide enough for the unit change below, unlike int16/int32
    arr[:, columns.index("t")] *= t_scale
    _check_events({n: arr[:, i] for i, n in enumerate(columns)}, sensor_size)
    return unstructured_to_structured(arr, np.dtype([(n, np.int64) for n in columns]))


def _decode_cifar10dvs(path: Path, sensor_size) -> np.ndarray:
    """A CIFAR10-DVS ``.aedat4`` read by ``tonic.io.read_aedat4`` (fields t, x, y, on,
    renamed t, x, y, p as tonic's ``CIFAR10DVS.__getitem__`` does)."""
    from tonic.io import read_aedat4

    try:
        events = read_aedat4(str(path))
    except Exception as err:  # the Rust decoder and tonic raise plain exceptions
        text = str(err)
        if "there are no events" in text or "need at least one array" in text:
            raise _Bad("empty", "the file has no event stream or no event packets") from err
        raise _Bad(
            "corrupt", f"not a readable AEDAT 4 file ({type(err).__name__}: {text})"
        ) from err
    events.dtype.names = ["t", "x", "y", "p"]
    cols = {n: events[n].astype(np.int64) for n in ("x", "y", "t", "p")}
    _check_events(cols, sensor_size)
    return events


def _decode_asldvs(path: Path, sensor_size) -> np.ndarray:
    """An ASL-DVS ``.mat`` (``ts``, ``x``, ``y``, ``pol``) as tonic's ``ASLDVS.__getitem__``
    decodes it: y flipped (``height - 1 - y``: the file counts rows from the bottom)."""
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
        "y": sensor_size[1] - 1 - np.ravel(mat["y"]).astype(np.int64),
        "p": np.ravel(mat["pol"]).astype(np.int64),
    }
    if len({len(c) for c in cols.values()}) != 1:
        raise _Bad("corrupt", "ts, x, y and pol differ in length")
    _check_events(cols, sensor_size)
    out = np.empty(len(cols["t"]), dtype=np.dtype([(n, np.int64) for n in "txyp"]))
    for name, values in cols.items():
        out[name] = values
    return out


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


def _to_sample(events: np.ndarray, shift_to_zero: bool) -> np.ndarray:
    """tonic's structured events as EVENT_DTYPE, sorted by t, optionally starting at t=0."""
    out = np.empty(len(events), dtype=EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        out[name] = events[name]
    if np.any(np.diff(out["t"]) < 0):
        out = out[np.argsort(out["t"], kind="stable")]
    if shift_to_zero:
        out["t"] -= out["t"][0]
    return out


# --------------------------------------------------------------------------- the registry

# N-Caltech101's 101 folders: Caltech101's categories without "Faces" (N-Caltech101 keeps
# only "Faces_easy") plus the background class, sorted as tonic lists them (os.walk with
# sorted folders: upper case first); tonic's targets are these folder names.
NCALTECH101_CLASSES = (
    "BACKGROUND_Google", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes",
    "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain",
    "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side", "ceiling_fan",
    "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish",
    "crocodile", "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin", "dragonfly",
    "electric_guitar", "elephant", "emu", "euphonium", "ewer", "ferry", "flamingo",
    "flamingo_head", "garfield", "gerenuk", "gramophone", "grand_piano", "hawksbill",
    "headphone", "hedgehog", "helicopter", "ibis", "inline_skate", "joshua_tree", "kangaroo",
    "ketch", "lamp", "laptop", "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah",
    "metronome", "minaret", "nautilus", "octopus", "okapi", "pagoda", "panda", "pigeon",
    "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster", "saxophone", "schooner",
    "scissors", "scorpion", "sea_horse", "snoopy", "soccer_ball", "stapler", "starfish",
    "stegosaurus", "stop_sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella",
    "watch", "water_lilly", "wheelchair", "wild_cat", "windsor_chair", "wrench", "yin_yang",
)  # fmt: skip

DATASETS: dict[str, TonicDataset] = {
    "nmnist": TonicDataset(
        title="N-MNIST",
        tonic_class="NMNIST",
        sensor_size=(34, 34, 2),
        folders={"train": "Train", "test": "Test"},
        files="<digit 0-9>/*.bin (N-MNIST's 40-bit events)",
        items=_nmnist_items,
        decode=_decode_nmnist,
        shift_to_zero=False,
        homepage="https://www.garrickorchard.com/datasets/n-mnist",
        # tonic saves the download as train.zip/test.zip; the original site calls them
        # Train.zip/Test.zip
        archives={"Train": ("train.zip", "Train.zip"), "Test": ("test.zip", "Test.zip")},
    ),
    "dvsgesture": TonicDataset(
        title="DVS Gesture",
        tonic_class="DVSGesture",
        sensor_size=(128, 128, 2),
        folders={"train": "ibmGestureTrain", "test": "ibmGestureTest"},
        files="<user>_<lighting>/<label 0-10>.npy"
        " (tonic's preprocessed version: columns x, y, p, t in ms)",
        items=_dvsgesture_items,
        decode=functools.partial(_decode_npy, columns=("x", "y", "p", "t"), t_scale=1000),
        shift_to_zero=True,
        homepage="https://research.ibm.com/dvsgesture/",
        archives={
            "ibmGestureTrain": ("ibmGestureTrain.tar.gz",),
            "ibmGestureTest": ("ibmGestureTest.tar.gz",),
        },
        how_to_get=lambda entry, split: _tonic_url(
            entry,
            split,
            " (tonic's preprocessed .npy version; the original IBM DvsGesture.tar.gz with "
            ".aedat files is not read here)",
        ),
    ),
    "pokerdvs": TonicDataset(
        title="POKER-DVS",
        tonic_class="POKERDVS",
        sensor_size=(35, 35, 2),
        folders={"train": "pips_train", "test": "pips_test"},
        files=(
            "<cl|he|di|sp>/*.npy (tonic's version: columns t, x, y, p; the class is the "
            "folder name's last two letters)"
        ),
        items=_pokerdvs_items,
        decode=functools.partial(_decode_npy, columns=("t", "x", "y", "p"), t_scale=1),
        shift_to_zero=True,
        homepage="http://www2.imse-cnm.csic.es/caviar/POKERDVS.html",
        archives={"pips_train": ("pips_train.tar.gz",), "pips_test": ("pips_test.tar.gz",)},
        how_to_get=_pokerdvs_source,
    ),
    "ncaltech101": TonicDataset(
        title="N-Caltech101",
        tonic_class="NCALTECH101",
        # tonic: sensor_size None, every recording moved to x, y >= 0 and of its own size;
        # padded here to 240x180, the largest image Orchard et al. (2015) showed the
        # sensor (and the size spikingjelly and others use for this dataset)
        sensor_size=(240, 180, 2),
        folders={"train": "Caltech101", "test": "Caltech101"},
        files="<category>/*.bin (40-bit events, as N-MNIST's; 100 categories and "
        "BACKGROUND_Google)",
        items=_named_class_items(".bin"),
        decode=_decode_ncaltech101,
        shift_to_zero=False,
        homepage="https://www.garrickorchard.com/datasets/n-caltech101",
        has_test_split=False,
        archives={"Caltech101": ("Caltech101.zip",)},
        classes=NCALTECH101_CLASSES,
        varying_size=True,
        how_to_get=lambda entry, split: _tonic_url(
            entry,
            split,
            " (N-Caltech101-archive.zip; the Caltech101.zip inside it is extracted on first use)",
        ),
    ),
    "cifar10dvs": TonicDataset(
        title="CIFAR10-DVS",
        tonic_class="CIFAR10DVS",
        sensor_size=(128, 128, 2),
        folders={"train": "", "test": ""},
        files="<class>/*.aedat4 (AEDAT 4; classes airplane, automobile, ..., truck)",
        items=_named_class_items(".aedat4"),
        decode=_decode_cifar10dvs,
        shift_to_zero=True,
        homepage="https://www.frontiersin.org/articles/10.3389/fnins.2017.00309/full",
        has_test_split=False,
        how_to_get=lambda entry, split: _tonic_url(
            entry,
            split,
            " (CIFAR10DVS.zip, which holds one <class>.zip per class; tonic extracts them all. "
            "By hand: unzip CIFAR10DVS.zip into <root>/CIFAR10DVS/, then each <class>.zip "
            "there)",
        ),
    ),
    "asldvs": TonicDataset(
        title="ASL-DVS",
        tonic_class="ASLDVS",
        sensor_size=(240, 180, 2),
        folders={"train": "", "test": ""},
        files="<letter>/*.mat (MATLAB: ts, x, y, pol; the class is the folder name's last "
        "letter, a-z as tonic's classes; the recordings cover 24 letters, no j or z)",
        items=_asldvs_items,
        decode=_decode_asldvs,
        shift_to_zero=True,
        homepage="https://github.com/PIX2NVS/NVS2Graph",
        has_test_split=False,
        how_to_get=lambda entry, split: _tonic_url(
            entry,
            split,
            " (ASLDVS.zip, which holds one zip per letter; tonic extracts them all. By hand: "
            "unzip ASLDVS.zip into <root>/ASLDVS/, then each zip there)",
        ),
    ),
}
TONIC_DATASETS = tuple(DATASETS)
