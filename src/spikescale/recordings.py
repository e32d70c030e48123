"""A folder of the user's own recordings: found, split and read into events.

Layout (``dataset.name: folder``)::

    <root>/train/<class>/<recording>.<ext>
    <root>/test/<class>/<recording>.<ext>     optional; without it a seeded, stratified
                                              share of train becomes the test split

Classes are the train folder's class folders, sorted by name; a label indexes them.
:func:`find_recordings` checks the whole layout before any recording is read (a missing
or empty root, a class folder without recordings, a test class that train lacks, a file
of an unknown format: one error each, naming the path and what was expected).

Formats, each decoded with the field's own reader (see :data:`FORMATS`):

* ``.npy`` / ``.npz``: a structured array with fields ``x, y, t, p`` (``.npz``: that
  array under any one name, or the four fields as four 1-D arrays). ``t`` is taken to be
  in microseconds unless a ``time_unit`` is given (``s``, ``ms``, ``us``, ``ns``; floats
  are rounded to the nearest microsecond).
* ``.bin``: N-MNIST / N-Caltech101 40-bit events, read by ``tonic.io.read_mnist_file``.
* ``.aedat4``: iniVation's AEDAT 4 (DV), read by ``tonic.io.read_aedat4`` (the ``aedat``
  package); the first event stream; polarity ``on`` becomes ``p``.
* ``.dat``: Prophesee DAT (CD events), read by ``expelliarmus``.
* ``.raw``: Prophesee RAW in EVT 2.0 or EVT 3.0 (the header's ``% evt 2.0`` or
  ``% format EVT3`` line says which): EVT 2.0 read by ``expelliarmus``; EVT 3.0 decoded
  here (:func:`decode_evt3`), because expelliarmus 1.1.12 misreads its time base.

AEDAT 4 and Prophesee files state their sensor (``sizeX``/``sizeY``, ``% geometry``,
``% Width``/``% Height``); :func:`infer_sensor_size` takes it into account.

Timestamps come out in microseconds, each recording sorted by ``t`` (stable). A
recording on an absolute clock is moved to start at its first event (``t = 0``), because
the evaluation raster is a grid from 0: always for AEDAT 4 (microseconds since 1970), and
for any file whose first timestamp is beyond :data:`ABSOLUTE_CLOCK_US` (no recording lasts
11.6 days, so such a clock does not count from the recording's start). Other recordings
keep their file's clock (N-MNIST's saccades sit at fixed times). :class:`FolderSplit`
counts the recordings it moved, for the event file's metadata.

Bad recordings follow :mod:`spikescale.tonic_datasets`: a corrupt, truncated or empty
file, or one with events outside a given sensor, raises
:class:`~spikescale.tonic_datasets.BadSampleError` naming the file, or with
``on_bad_sample="skip"`` is left out and counted by reason.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikescale.errors import InputError
from spikescale.event_store import EVENT_DTYPE
from spikescale.tonic_datasets import (
    ON_BAD_SAMPLE,
    SKIP_REASONS,
    BadSampleError,
    DatasetNotFoundError,
    _Bad,
    _check_events,
)

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {
    ".npy": "NumPy structured array with fields x, y, t, p",
    ".npz": "NumPy archive: a structured array with fields x, y, t, p, or arrays x, y, t, p",
    ".bin": "N-MNIST / N-Caltech101 40-bit events",
    ".aedat4": "AEDAT 4 (iniVation DV)",
    ".dat": "Prophesee DAT (CD events)",
    ".raw": "Prophesee RAW, EVT 2.0 or EVT 3.0",
}
TIME_UNITS: dict[str, float] = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}  # to microseconds
ABSOLUTE_CLOCK_US = 10**12  # a first timestamp later than this is on an absolute clock
SPLITS = ("train", "test")
_INT16_MAX = np.iinfo(np.int16).max
_INT8_MAX = np.iinfo(np.int8).max


class RecordingFolderError(InputError):
    """The recordings folder does not have the expected layout."""


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Recording:
    """One recording file and the index of its class."""

    path: Path
    label: int


@dataclass(frozen=True)
class RecordingFolder:
    """The recordings of a folder, found and split, none read yet.

    ``test_split_from_train`` says whether ``test`` was drawn from ``<root>/train`` (there
    was no ``<root>/test``) rather than read from ``<root>/test``.
    """

    root: Path
    classes: tuple[str, ...]
    train: tuple[Recording, ...]
    test: tuple[Recording, ...]
    test_split_from_train: bool

    def split(self, name: str) -> tuple[Recording, ...]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.train if name == "train" else self.test


def _visible(path: Path) -> bool:
    # hidden files (".DS_Store", macOS "._name" copies, editor leftovers) are not recordings
    return not path.name.startswith(".")


def _expected_layout(root: Path) -> str:
    return (
        f"expected <root>/train/<class>/<recording>.<ext> (and optionally "
        f"<root>/test/<class>/...) under root {root}, with <ext> one of {', '.join(FORMATS)}"
    )


def _class_folders(split_dir: Path, root: Path) -> dict[str, list[Path]]:
    """Class name -> its recording files (sorted), checking the split folder's layout."""
    entries = sorted(e for e in split_dir.iterdir() if _visible(e))
    stray = [e for e in entries if not e.is_dir()]
    if stray:
        raise RecordingFolderError(
            f"{split_dir} holds files outside any class folder, e.g. {stray[0].name}; "
            + _expected_layout(root)
        )
    classes: dict[str, list[Path]] = {}
    for class_dir in entries:
        inner = sorted(e for e in class_dir.iterdir() if _visible(e))
        folders = [e for e in inner if e.is_dir()]
        if folders:
            raise RecordingFolderError(
                f"{class_dir} holds a folder {folders[0].name!r}; recordings must lie directly "
                f"in their class folder ({_expected_layout(root)})"
            )
        if not inner:
            raise RecordingFolderError(
                f"class folder {class_dir} holds no recordings; add recordings "
                f"({', '.join(FORMATS)}) or remove the folder"
            )
        classes[class_dir.name] = inner
    if not classes:
        raise RecordingFolderError(f"{split_dir} holds no class folders; {_expected_layout(root)}")
    return classes


def _check_formats(files: Iterable[Path]) -> None:
    unknown = sorted(f for f in files if f.suffix.lower() not in FORMATS)
    if unknown:
        shown = ", ".join(str(f) for f in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        known = "; ".join(f"{ext} ({what})" for ext, what in FORMATS.items())
        raise RecordingFolderError(
            f"{len(unknown)} file(s) of unknown format: {shown}{more}. Known formats: {known}"
        )


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with about ``test_fraction`` of every class in test.

    Per class, ``round(n * test_fraction)`` recordings, at least 1 and at most ``n - 1``
    (a class of one recording stays in train), are drawn with a generator seeded by
    ``seed``; both index arrays come sorted. Same labels and seed: same split.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        if n < 2:
            continue
        k = min(max(round(n * test_fraction), 1), n - 1)
        test.append(np.sort(rng.permutation(members)[:k]))
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _warn_untested(classes: tuple[str, ...], tested: set[int], why: str) -> None:
    untested = [c for i, c in enumerate(classes) if i not in tested]
    if untested:
        log.warning(
            "classes without test recordings (%s): %s; their test accuracy is unmeasured",
            why,
            ", ".join(untested),
        )


def find_recordings(root: str | Path, *, test_fraction: float, seed: int) -> RecordingFolder:
    """Find and split the recordings under ``root`` (see the module docstring); read none.

    Raises :class:`~spikescale.tonic_datasets.DatasetNotFoundError` for a missing or empty
    root and :class:`RecordingFolderError` for any other departure from the layout.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetNotFoundError(f"recordings folder {root} {what}; {_expected_layout(root)}")
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        what = "is empty" if not any(root.iterdir()) else "has no train folder"
        raise DatasetNotFoundError(f"recordings folder {root} {what}; {_expected_layout(root)}")
    train_classes = _class_folders(train_dir, root)
    test_classes = _class_folders(test_dir, root) if test_dir.is_dir() else None
    _check_formats(
        f
        for split in (train_classes, test_classes or {})
        for files in split.values()
        for f in files
    )
    classes = tuple(sorted(train_classes))
    index = {name: i for i, name in enumerate(classes)}
    train = [Recording(f, index[c]) for c in classes for f in train_classes[c]]
    if test_classes is None:
        train_idx, test_idx = stratified_split(
            np.array([r.label for r in train], dtype=np.int64), test_fraction, seed
        )
        if not len(test_idx):
            raise RecordingFolderError(
                f"{root} has no test folder and no class has two recordings to split off a "
                f"test share (test_fraction {test_fraction}); add <root>/test/<class>/... or "
                "more recordings"
            )
        _warn_untested(classes, {train[i].label for i in test_idx}, "one recording")
        return RecordingFolder(
            root,
            classes,
            tuple(train[i] for i in train_idx),
            tuple(train[i] for i in test_idx),
            test_split_from_train=True,
        )
    missing = sorted(set(test_classes) - set(classes))
    if missing:
        raise RecordingFolderError(
            f"test class folder(s) {', '.join(str(test_dir / m) for m in missing)} have no "
            f"counterpart in {train_dir} (train classes: {', '.join(classes)}); a class "
            "must have training recordings"
        )
    test = [Recording(f, index[c]) for c in sorted(test_classes) for f in test_classes[c]]
    _warn_untested(classes, {r.label for r in test}, f"no folder in {test_dir}")
    return RecordingFolder(root, classes, tuple(train), tuple(test), test_split_from_train=False)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RecordingEvents:
    """One recording's events and what was done to its clock.

    ``events`` are :data:`~spikescale.event_store.EVENT_DTYPE`, sorted by ``t`` (stable),
    microseconds; ``moved_by_us`` was subtracted from every timestamp (0: the file's own
    clock is kept). ``geometry`` is the sensor the file says it was recorded with,
    ``(width, height, 2)``, where the format states it (AEDAT 4, Prophesee), else None.
    """

    events: np.ndarray
    moved_by_us: int
    geometry: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ReadOptions:
    """How recordings are read: the sensor they must fit and the unit of NumPy times."""

    sensor_size: tuple[int, int, int] | None = None  # None: accept any non-negative address
    time_unit: str = "us"  # of t in .npy/.npz files

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ValueError(
                f"time_unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}"
            )
        if self.sensor_size is not None:
            size = tuple(self.sensor_size)
            if (
                len(size) != 3
                or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size)
                or size[0] > _INT16_MAX + 1
                or size[1] > _INT16_MAX + 1
                or size[2] > _INT8_MAX + 1
            ):
                raise ValueError(
                    "sensor_size must be [width, height, polarities], positive integers "
                    f"(width, height <= {_INT16_MAX + 1}, polarities <= {_INT8_MAX + 1}), "
                    f"got {self.sensor_size!r}"
                )
            object.__setattr__(self, "sensor_size", tuple(int(s) for s in size))


@dataclass
class _Columns:
    """Decoded events as int64 columns, before checks; ``absolute_clock`` by format."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    absolute_clock: bool = False
    geometry: tuple[int, int, int] | None = None


def _int_column(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == bool:
        return values.astype(np.int64)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise _Bad("corrupt", f"NaN or infinite values in {name}")
        if np.any(values != np.floor(values)):
            raise _Bad("corrupt", f"non-integer values in {name}")
        return values.astype(np.int64)
    raise _Bad("corrupt", f"field {name} holds {values.dtype}, expected numbers")


def _time_column(values: np.ndarray, unit: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise _Bad("corrupt", "NaN or infinite timestamps")
        return np.rint(values.astype(np.float64) * TIME_UNITS[unit]).astype(np.int64)
    t = _int_column(values, "t")
    if unit == "ns":
        return t // 1000
    return t * int(TIME_UNITS[unit])


def _from_fields(arrays: dict[str, np.ndarray], time_unit: str) -> _Columns:
    missing = [n for n in ("x", "y", "t", "p") if n not in arrays]
    if missing:
        raise _Bad(
            "corrupt",
            f"no field(s) {', '.join(missing)}; expected fields x, y, t, p "
            f"(found {', '.join(arrays) or 'none'})",
        )
    lengths = {n: np.shape(arrays[n]) for n in ("x", "y", "t", "p")}
    if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
        raise _Bad("corrupt", f"fields x, y, t, p must be 1-D and of equal length, got {lengths}")
    return _Columns(
        _int_column(arrays["x"], "x"),
        _int_column(arrays["y"], "y"),
        _time_column(arrays["t"], time_unit),
        _int_column(arrays["p"], "p"),
    )


def _structured_fields(array: np.ndarray) -> dict[str, np.ndarray]:
    if array.dtype.names is None:
        raise _Bad(
            "corrupt",
            f"expected a structured array with fields x, y, t, p, got a plain {array.dtype} "
            f"array of shape {array.shape}",
        )
    if array.ndim != 1:
        array = array.reshape(-1)
    return {n: array[n] for n in array.dtype.names}


def _read_npy(path: Path, options: ReadOptions) -> _Columns:
    array = np.load(path, allow_pickle=False)
    return _from_fields(_structured_fields(array), options.time_unit)


def _read_npz(path: Path, options: ReadOptions) -> _Columns:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1:
        (only,) = arrays.values()
        if only.dtype.names is not None:
            return _from_fields(_structured_fields(only), options.time_unit)
    return _from_fields(arrays, options.time_unit)


def _read_nmnist_bin(path: Path, options: ReadOptions) -> _Columns:
    size = path.stat().st_size
    if size % 5:
        raise _Bad(
            "corrupt", f"truncated: {size} bytes is not a whole number of 5-byte (40-bit) events"
        )
    from tonic.io import read_mnist_file

    dtype = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
    events = read_mnist_file(str(path), dtype=dtype)
    return _Columns(events["x"], events["y"], events["t"], events["p"])


def _read_aedat4(path: Path, options: ReadOptions) -> _Columns:
    from tonic.io import read_aedat4

    try:
        events = read_aedat4(str(path))
    except Exception as err:  # the Rust decoder and tonic raise plain exceptions
        text = str(err)
        if "there are no events" in text:  # tonic: no event stream in the header
            raise _Bad("empty", "the file has no event stream") from err
        if "need at least one array" in text:  # tonic concatenates no packets
            raise _Bad("empty", "the event stream has no packets") from err
        raise _Bad(
            "corrupt", f"not a readable AEDAT 4 file ({type(err).__name__}: {text})"
        ) from err
    return _Columns(
        events["x"].astype(np.int64),
        events["y"].astype(np.int64),
        events["t"].astype(np.int64),
        events["on"].astype(np.int64),
        absolute_clock=True,
        geometry=_aedat4_geometry(path),
    )


def _aedat4_geometry(path: Path) -> tuple[int, int, int] | None:
    """``(sizeX, sizeY, 2)`` of the event stream tonic reads (the lowest id), if stated."""
    import aedat

    streams = aedat.Decoder(str(path)).id_to_stream()  # reads the header only
    ids = sorted(i for i, stream in streams.items() if stream["type"] == "events")
    stream = streams[ids[0]] if ids else {}
    width, height = stream.get("width", 0), stream.get("height", 0)
    return (int(width), int(height), 2) if width and height else None


def _prophesee_header(path: Path) -> tuple[int, list[str]]:
    """(bytes of the ``%`` text header, its lines without the ``% ``)."""
    lines, at = [], 0
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line.startswith(b"%"):
                break
            at += len(line)
            text = line[1:].decode("latin-1").strip()
            lines.append(text)
            if text == "end":
                break
    return at, lines


def _header_geometry(header: list[str]) -> tuple[int, int, int] | None:
    """``(width, height, 2)`` from a Prophesee header, if it says.

    RAW: ``% geometry 1280x720`` or ``% format EVT3;height=720;width=1280``; DAT:
    ``% Width 304`` and ``% Height 240`` (or ``% geometry``).
    """
    found: dict[str, int] = {}
    for line in header:
        if m := re.fullmatch(r"geometry\s+(\d+)\s*x\s*(\d+)", line, re.IGNORECASE):
            found["width"], found["height"] = int(m.group(1)), int(m.group(2))
        elif m := re.fullmatch(r"(width|height)\s+(\d+)", line, re.IGNORECASE):
            found.setdefault(m.group(1).lower(), int(m.group(2)))
        elif line.lower().startswith("format"):
            for key, value in re.findall(r"(width|height)=(\d+)", line, re.IGNORECASE):
                found.setdefault(key.lower(), int(value))
    if found.get("width") and found.get("height"):
        return found["width"], found["height"], 2
    return None


def _raw_encoding(header: list[str]) -> str:
    """``evt2`` or ``evt3`` from a RAW header (``% evt 3.0`` or ``% format EVT3;...``)."""
    for line in header:
        m = re.fullmatch(r"evt\s+([23])\.0", line, re.IGNORECASE) or re.match(
            r"format\s+EVT([23])\b", line, re.IGNORECASE
        )
        if m:
            return f"evt{m.group(1)}"
    named = [line for line in header if re.match(r"(evt|format)\b", line, re.IGNORECASE)]
    raise _Bad(
        "corrupt",
        "the RAW header names no EVT 2.0 or EVT 3.0 encoding (expected a line '% evt 2.0', "
        f"'% evt 3.0' or '% format EVT2/EVT3'){'; found ' + repr(named) if named else ''}",
    )


_DAT_CD_TYPES = (0x00, 0x0C)
# EVT word types the format defines (Prophesee's EVT 2.0 / 3.0 specifications)
_EVT_TYPES = {
    "evt2": (0x0, 0x1, 0x8, 0xA, 0xE, 0xF),
    "evt3": (0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF),
}


def _checked_words(path: Path, header_bytes: int, encoding: str) -> np.ndarray:
    """The file's EVT words; raise _Bad at the first of a type the encoding does not define."""
    dtype, shift = ("<u4", 28) if encoding == "evt2" else ("<u2", 12)
    words = np.fromfile(path, dtype=dtype, offset=header_bytes)
    types = words >> shift
    defined = np.zeros(16, dtype=bool)
    defined[list(_EVT_TYPES[encoding])] = True
    unknown = np.flatnonzero(~defined[types])
    if len(unknown):
        at = int(unknown[0])
        raise _Bad(
            "corrupt",
            f"word {at} (byte {header_bytes + at * words.itemsize}) has type "
            f"{int(types[at]):#x}, which {encoding.upper()} does not define "
            f"({len(unknown)} such words)",
        )
    return words


def _latest(positions: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index into ``positions`` (sorted) of the latest one at or before each of ``at``.

    -1 where none is.
    """
    return np.searchsorted(positions, at, side="right") - 1


def decode_evt3(words: np.ndarray) -> dict[str, np.ndarray]:
    """CD events of Prophesee EVT 3.0 ``uint16`` words, vectorised, as int64 columns.

    Follows the EVT 3.0 specification: ``t = (TIME_HIGH << 12) + TIME_LOW``, where a
    TIME_HIGH word starts a new time base (its low half 0 until a TIME_LOW) and a TIME_HIGH
    below the previous one is the 24-bit clock wrapping (add 2**24 us); ``EVT_ADDR_Y`` sets
    the row, ``EVT_ADDR_X`` is one event, ``VECT_BASE_X`` sets the polarity and first column
    of the ``VECT_12``/``VECT_8`` masks that follow, each advancing the column by 12 or 8.
    Events before the first TIME_HIGH, row or vector base are dropped, as Prophesee's
    decoder does. Trigger and other words are ignored. Used instead of expelliarmus 1.1.12,
    which adds 4096 us whenever TIME_LOW falls below its previous value, new TIME_HIGH or
    not (``tests/test_recordings.py::test_evt3_time_high_boundary``).
    """
    words = np.asarray(words, dtype=np.uint16)
    kind = words >> 12
    payload = words & 0xFFF
    highs, lows = np.flatnonzero(kind == 0x8), np.flatnonzero(kind == 0x6)
    rows, bases = np.flatnonzero(kind == 0x0), np.flatnonzero(kind == 0x3)
    singles = np.flatnonzero(kind == 0x2)
    vectors = np.flatnonzero((kind == 0x4) | (kind == 0x5))

    # vector words: their first column and the events their masks hold
    v_base = _latest(bases, vectors)
    vectors, v_base = vectors[v_base >= 0], v_base[v_base >= 0]
    width = np.where(kind[vectors] == 0x4, 12, 8)
    before = np.cumsum(width) - width  # columns advanced by earlier vector words
    first_after_base = np.searchsorted(vectors, bases[v_base], side="right")
    base_word = payload[bases[v_base]].astype(np.int64)
    column0 = (base_word & 0x7FF) + before - before[np.minimum(first_after_base, len(before) - 1)]
    bit = np.arange(12)
    mask = (width[:, None] > bit) & (((payload[vectors, None] >> bit) & 1) == 1)
    v_word, v_bit = np.nonzero(mask)

    at = np.concatenate([singles, vectors[v_word]])
    x = np.concatenate([payload[singles] & 0x7FF, column0[v_word] + v_bit]).astype(np.int64)
    p = np.concatenate([(payload[singles] >> 11) & 1, (base_word[v_word] >> 11) & 1])
    # both parts are in word order (a vector's events by bit): a stable sort merges them
    order = np.argsort(at, kind="stable")
    at, x, p = at[order], x[order], p[order].astype(np.int64)

    high = payload[highs].astype(np.int64)
    loops = np.concatenate(([0], np.cumsum(high[1:] < high[:-1]))) if len(high) else high
    full_high = (loops << 24) + (high << 12)
    k_high, k_low, k_row = _latest(highs, at), _latest(lows, at), _latest(rows, at)
    known = (k_high >= 0) & (k_row >= 0)
    if not known.all():
        at, x, p, k_high, k_low, k_row = (a[known] for a in (at, x, p, k_high, k_low, k_row))
    low_since_high = (k_low >= 0) & (lows[np.maximum(k_low, 0)] > highs[k_high])
    low = np.where(low_since_high, payload[lows[np.maximum(k_low, 0)]], 0).astype(np.int64)
    return {
        "x": x,
        "y": (payload[rows[k_row]] & 0x7FF).astype(np.int64),  # bit 11: system type
        "t": full_high[k_high] + low,
        "p": p,
    }


def _read_prophesee(path: Path, options: ReadOptions) -> _Columns:
    from expelliarmus import Wizard

    header_bytes, header = _prophesee_header(path)
    body = path.stat().st_size - header_bytes
    if path.suffix.lower() == ".dat":
        encoding, word = "dat", 8
        body -= 2  # event type and event size bytes after the header
        if body < 0:
            raise _Bad("corrupt", "truncated: no event type and size bytes after the header")
    else:
        encoding = _raw_encoding(header)
        word = 4 if encoding == "evt2" else 2
    if body % word:
        raise _Bad(
            "corrupt",
            f"truncated: {body} bytes of events is not a whole number of {word}-byte "
            f"{encoding.upper()} words",
        )
    if body == 0:
        raise _Bad("empty", "the recording holds no events")
    if encoding == "dat":
        with open(path, "rb") as f:
            f.seek(header_bytes)
            event_type, event_size = f.read(2)
        if event_type not in _DAT_CD_TYPES or event_size != 8:
            raise _Bad(
                "corrupt",
                f"event type {event_type:#04x} of size {event_size} after the header; "
                "expected CD events (type 0x0c, or 0x00 in older files) of 8 bytes",
            )
    else:
        words = _checked_words(path, header_bytes, encoding)
    if encoding == "evt3":
        cols = decode_evt3(words)
        if not len(cols["x"]):
            raise _Bad("empty", "the recording holds no CD events")
        return _Columns(
            cols["x"], cols["y"], cols["t"], cols["p"], geometry=_header_geometry(header)
        )
    events = Wizard(encoding=encoding).read(path)
    if events is None:
        raise _Bad("empty", "the recording holds no CD events")
    if np.any(events["p"] > 1):
        raise _Bad("corrupt", f"polarities up to {events['p'].max()}; CD events have 0 or 1")
    return _Columns(
        events["x"].astype(np.int64),
        events["y"].astype(np.int64),
        events["t"].astype(np.int64),
        events["p"].astype(np.int64),
        geometry=_header_geometry(header),
    )


_READERS = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".bin": _read_nmnist_bin,
    ".aedat4": _read_aedat4,
    ".dat": _read_prophesee,
    ".raw": _read_prophesee,
}


def _check_columns(cols: _Columns, sensor_size: tuple[int, int, int] | None) -> None:
    """Raise _Bad for an empty recording, negative times or addresses outside the sensor."""
    if len(cols.t) and cols.t.min() < 0:
        raise _Bad(
            "corrupt",
            f"{int(np.count_nonzero(cols.t < 0))} of {len(cols.t)} timestamps are negative "
            f"(down to {int(cols.t.min())} us); expected times from 0",
        )
    if sensor_size is not None:
        _check_events({"x": cols.x, "y": cols.y, "p": cols.p}, sensor_size)
        return
    n = len(cols.x)
    if n == 0:
        raise _Bad("empty", "the recording holds no events")
    limits = {"x": _INT16_MAX, "y": _INT16_MAX, "p": _INT8_MAX}
    for name, limit in limits.items():
        values = getattr(cols, name)
        bad = int(np.count_nonzero((values < 0) | (values > limit)))
        if bad:
            raise _Bad(
                "outside_sensor",
                f"{bad} of {n} events have {name} outside [0, {limit}] "
                f"({name} in [{values.min()}, {values.max()}]; polarities must count from 0)",
            )


def read_recording(path: str | Path, options: ReadOptions | None = None) -> RecordingEvents:
    """One recording file, by its extension, as sorted events from ``t = 0`` where moved.

    Raises :class:`~spikescale.tonic_datasets.BadSampleError` naming the file for a
    corrupt, truncated or empty recording or one with events outside the sensor, and
    :class:`RecordingFolderError` for an unknown extension.
    """
    path = Path(path)
    options = options or ReadOptions()
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        _check_formats([path])
    try:
        cols = reader(path, options)
        _check_columns(cols, options.sensor_size)
    except _Bad as bad:
        raise BadSampleError(path, bad.reason, bad.detail) from None
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        RuntimeError,
        zipfile.BadZipFile,
    ) as err:
        # whatever numpy, tonic or expelliarmus trip over on a bad file: name the file
        raise BadSampleError(path, "corrupt", f"unreadable ({type(err).__name__}: {err})") from err
    events = np.empty(len(cols.x), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = cols.x, cols.y, cols.t, cols.p
    if np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    first = int(events["t"][0])
    moved = first if cols.absolute_clock or first > ABSOLUTE_CLOCK_US else 0
    if moved:
        events["t"] -= moved
    return RecordingEvents(events, moved, cols.geometry)


# --------------------------------------------------------------------------- splits


@dataclass
class FolderSplit:
    """One split of a recordings folder, read recording by recording when iterated.

    Iterating yields ``(events, label)`` per usable recording, in the split's order, as
    :class:`~spikescale.tonic_datasets.TonicSplit` does (same ``on_bad_sample`` and
    ``max_samples_per_class`` rules; an iteration without a usable recording raises
    :class:`~spikescale.tonic_datasets.BadSampleError` at its end). Once an iteration has
    ended, ``skipped`` counts the recordings left out by reason, ``moved_to_zero`` the
    recordings moved to start at ``t = 0``, ``extent`` is the smallest sensor that holds
    every usable recording's events and stated geometry, ``(width, height, polarities)``,
    and ``sample_paths`` names the file of each sample yielded (relative to ``root``), in
    order. :meth:`metadata` gathers what the event file should say about them.
    """

    name: str
    recordings: tuple[Recording, ...]
    classes: tuple[str, ...]
    options: ReadOptions = field(default_factory=ReadOptions)
    on_bad_sample: str = "error"
    max_samples_per_class: int | None = None
    root: Path | None = None
    split_off_train: bool = False
    skipped: dict[str, int] = field(default_factory=dict)
    moved_to_zero: int = 0
    extent: tuple[int, int, int] = (0, 0, 0)
    sample_paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(
                f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {self.on_bad_sample!r}"
            )
        cap = self.max_samples_per_class
        if cap is not None and (isinstance(cap, bool) or int(cap) != cap or cap < 1):
            raise ValueError(
                f"max_samples_per_class must be a positive integer or None, got {cap!r}"
            )
        self.skipped = {reason: 0 for reason in SKIP_REASONS}

    def __len__(self) -> int:
        """Recording files in the split (an upper bound on the samples yielded)."""
        return len(self.recordings)

    @property
    def sensor_size(self) -> tuple[int, int, int] | None:
        return self.options.sensor_size

    def _relative(self, path: Path) -> str:
        # relative to the root, so the event file's bytes do not depend on where it lies
        return path.relative_to(self.root).as_posix() if self.root else path.as_posix()

    def metadata(self) -> dict:
        """What the event file should record about this split (after an iteration).

        ``recordings_moved_to_t0``: recordings on an absolute clock, moved to start at
        their first event; ``test_split_off_train``: the test split was drawn from
        ``<root>/train``. (``sample_paths`` is left to the caller: 60,000 paths are about
        2 MB of metadata.)
        """
        return {
            "recordings_moved_to_t0": self.moved_to_zero,
            "test_split_off_train": self.split_off_train,
        }

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        from tqdm.auto import tqdm

        skipped = Counter({reason: 0 for reason in SKIP_REASONS})
        kept: Counter = Counter()
        moved = 0
        extent = np.zeros(3, dtype=np.int64)
        paths: list[str] = []
        for rec in tqdm(self.recordings, desc=self.name, unit="file", disable=None):
            if self.max_samples_per_class is not None and kept[rec.label] >= (
                self.max_samples_per_class
            ):
                continue
            try:
                read = read_recording(rec.path, self.options)
            except BadSampleError as err:
                if self.on_bad_sample == "error":
                    raise
                skipped[err.reason] += 1
                log.warning("skipped %s", err)
                continue
            kept[rec.label] += 1
            moved += bool(read.moved_by_us)
            ev = read.events
            extent = np.maximum(
                extent,
                [int(ev["x"].max()) + 1, int(ev["y"].max()) + 1, int(ev["p"].max()) + 1],
            )
            if read.geometry is not None:
                extent = np.maximum(extent, read.geometry)
            paths.append(self._relative(rec.path))
            yield ev, rec.label
        self.skipped, self.moved_to_zero = dict(skipped), moved
        self.extent = tuple(int(e) for e in extent)
        self.sample_paths = paths
        if not sum(kept.values()):
            raise BadSampleError(
                Path(self.name),
                "no usable recordings",
                f"all {sum(skipped.values())} recordings were skipped ({dict(skipped)})",
            )
        if sum(skipped.values()):
            log.warning("%s: skipped %s", self.name, dict(skipped))


def open_folder(
    root: str | Path,
    *,
    test_fraction: float,
    seed: int,
    sensor_size: tuple[int, int, int] | None = None,
    time_unit: str = "us",
    on_bad_sample: str = "error",
    max_samples_per_class: int | None = None,
) -> dict[str, FolderSplit]:
    """Both splits of a recordings folder, found and checked, not yet read.

    Layout and argument errors are raised here, before any recording is read. With
    ``sensor_size=None`` the returned splits accept any non-negative address;
    :func:`infer_sensor_size` then reads them once to find the sensor, and
    :func:`with_sensor_size` gives the splits that check every event against it.
    """
    folder = find_recordings(root, test_fraction=test_fraction, seed=seed)
    options = ReadOptions(sensor_size=sensor_size, time_unit=time_unit)
    return {
        split: FolderSplit(
            f"{folder.root}/{split}"
            + (" (split off train)" if folder.test_split_from_train else ""),
            folder.split(split),
            folder.classes,
            options,
            on_bad_sample,
            max_samples_per_class,
            root=folder.root,
            split_off_train=folder.test_split_from_train,
        )
        for split in SPLITS
    }


def infer_sensor_size(splits: Iterable[FolderSplit]) -> tuple[int, int, int]:
    """The sensor of ``splits``: ``(max x + 1, max y + 1, max p + 1)`` over every usable
    recording, widened to the geometry a file states (AEDAT 4's ``sizeX``/``sizeY``,
    Prophesee's header), so that a border no event reached still counts.

    Reads every recording (a pass before the one that writes the events), skipping or
    raising on bad recordings as each split's ``on_bad_sample`` says.
    """
    extent = np.zeros(3, dtype=np.int64)
    for split in splits:
        for _ in split:
            pass
        extent = np.maximum(extent, split.extent)
    return tuple(int(e) for e in extent)


def with_sensor_size(
    splits: dict[str, FolderSplit], sensor_size: tuple[int, int, int]
) -> dict[str, FolderSplit]:
    """The same splits, now checking every event against ``sensor_size``."""
    return {
        name: FolderSplit(
            s.name,
            s.recordings,
            s.classes,
            ReadOptions(sensor_size=tuple(sensor_size), time_unit=s.options.time_unit),
            s.on_bad_sample,
            s.max_samples_per_class,
            root=s.root,
            split_off_train=s.split_off_train,
        )
        for name, s in splits.items()
    }
