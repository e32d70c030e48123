"""The `frames` stage: event recordings binned into the CNN's training frames.

Each split becomes one ``.npz`` archive holding ``frames`` (n_frames, P, H, W), the
``sample_index`` of each frame, the per-sample ``labels`` and the number of events the
binning ``dropped``, and the time each frame covers, ``frame_duration_us`` (the CNN adds a
bias once per frame, the SNN once per time step: ``convert`` rescales biases by their
ratio). ``np.load`` reads it as any ``.npz``; its members are stored
uncompressed, so :func:`load_arrays` maps ``frames`` from the file
(``numpy.memmap``) instead of reading it: training touches only the frames it uses.

The split is binned batch by batch (:func:`~spikescale.event_store.iter_batches`), so memory is
bounded by a batch of events and its frames, not by the split (full N-MNIST's 60,000
training samples in 10 bins are 600,000 frames, 1.4 GB as uint8). The frame dtype is the
smallest of uint8, int16, int32, int64 that holds the largest pixel count of the whole
split exactly; each batch is binned in its own smallest type, kept in an unnamed scratch
file, and widened while the archive is written. Archives are written with fixed zip
timestamps and aligned members, so equal frames give equal bytes.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from spikescale.binning import frames_for_set
from spikescale.errors import InputError, MissingInputError
from spikescale.event_store import EventSet, iter_batches, read_metadata
from spikescale.io import atomic_path
from spikescale.params import FramesParams

BATCH_EVENTS = 4_000_000  # events binned at once (the batch's frames come on top)
_DTYPES = (np.uint8, np.int16, np.int32, np.int64)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ALIGN = 64  # array data starts at a multiple of this in the file (as numpy's .npy header)
_PAD_ID = 0x6E70  # id of the zip extra field that pads a member to alignment ("pn")


def binning_kwargs(p: FramesParams) -> dict:
    """FramesParams as keyword arguments of tonic's ToFrame (and our binning)."""
    if p.mode == "time_window":
        return {
            "time_window": p.time_window_us,
            "overlap": p.overlap,
            "include_incomplete": p.include_incomplete,
        }
    if p.mode == "event_count":
        return {
            "event_count": p.event_count,
            "overlap": p.overlap,
            "include_incomplete": p.include_incomplete,
        }
    if p.mode == "n_time_bins":
        return {"n_time_bins": p.n_time_bins, "overlap": p.overlap}
    return {"n_event_bins": p.n_event_bins, "overlap": p.overlap}


def smallest_dtype(frames: np.ndarray) -> np.dtype:
    """The smallest of uint8, int16, int32, int64 that holds every count in ``frames``."""
    top = int(frames.max()) if frames.size else 0
    return np.dtype(next(d for d in _DTYPES if top <= np.iinfo(d).max))


def frame_durations_us(eventset: EventSet, sample_index: np.ndarray, p: FramesParams) -> np.ndarray:
    """The time (us) each frame covers, as tonic's binning cuts it.

    ``time_window``: the window; ``n_time_bins``: the recording's span (first to last
    event) over the bins, times ``1 + overlap``; the event-count modes: the span over the
    sample's number of frames; summed bins (``bins_as_examples: false``): the span.
    """
    t = eventset.events["t"].astype(np.int64)
    offsets = np.asarray(eventset.offsets)
    counts = np.diff(offsets)
    span = np.zeros(len(counts), dtype=np.float64)
    have = counts > 0
    span[have] = t[offsets[1:][have] - 1] - t[offsets[:-1][have]]
    if not p.bins_as_examples:
        return span[sample_index]
    if p.mode == "time_window":
        return np.full(len(sample_index), float(p.time_window_us))
    if p.mode == "n_time_bins":
        return (span // p.n_time_bins * (1 + p.overlap))[sample_index]
    per_sample = np.bincount(sample_index, minlength=len(counts)).astype(np.float64)
    return (span / np.maximum(per_sample, 1))[sample_index]


def _bin(eventset: EventSet, p: FramesParams) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(frames in their smallest exact dtype, sample_index, dropped, frame durations in us)
    of some samples."""
    frames, sample_index, dropped = frames_for_set(
        eventset, downsample=p.downsample, **binning_kwargs(p)
    )
    if not p.bins_as_examples:
        summed = np.zeros((len(eventset), *frames.shape[1:]), dtype=np.int64)
        np.add.at(summed, sample_index, frames)
        frames, sample_index = summed, np.arange(len(eventset))
    sample_index = sample_index.astype(np.int64)
    return (
        frames.astype(smallest_dtype(frames), copy=False),
        sample_index,
        int(dropped),
        frame_durations_us(eventset, sample_index, p),
    )


def make_frames(eventset: EventSet, p: FramesParams) -> dict[str, np.ndarray]:
    """The frames of a whole split in memory (what :func:`write_frames` writes, batch by batch)."""
    frames, sample_index, dropped, durations = _bin(eventset, p)
    if len(frames) == 0:
        raise InputError(f"frames: binning with {binning_kwargs(p)} produced no frames")
    return {
        "frames": frames,  # the smallest integer type that holds the counts exactly
        "sample_index": sample_index,
        "labels": eventset.labels,
        "dropped": np.int64(dropped),
        "frame_duration_us": durations,
    }


# ------------------------------------------------------------------------- the archive


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered array of ``shape`` and ``dtype``."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # too long for version 1.0 (np.save switches the same way)
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _member(name: str, offset: int, header: bytes, data_size: int) -> zipfile.ZipInfo:
    """A stored zip member at ``offset`` whose array data (after ``header``) is aligned.

    The local file header is padded with an extra field (which zip readers skip) so that
    the data starts at a multiple of :data:`_ALIGN` in the file, as numpy aligns it in a
    ``.npy`` file: a memory map of it is aligned for every dtype.
    """
    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(header) + data_size
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule in open("w")
    fixed = zipfile.sizeFileHeader + len(info.filename.encode()) + (20 if zip64 else 0)
    need = -(offset + fixed + 4 + len(header)) % _ALIGN  # 4: the pad field's id and size
    info.extra = struct.pack("<HH", _PAD_ID, need) + b"\0" * need
    return info


class _ArchiveWriter:
    """Arrays into a stored, deterministic ``.npz`` at a temporary path, one at a time."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")
        self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED)

    def add(self, name: str, shape: tuple[int, ...], dtype, chunks) -> None:
        """Member ``name``.npy holding ``shape``/``dtype``; ``chunks`` yields its data in order."""
        dtype = np.dtype(dtype)
        header = _npy_header(shape, dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        info = _member(name, self._file.tell(), header, size)
        written = 0
        with self._zip.open(info, "w") as f:
            f.write(header)
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=dtype)
                f.write(memoryview(chunk).cast("B"))
                written += chunk.nbytes
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes of array data, expected {size}")

    def add_array(self, name: str, arr: np.ndarray) -> None:
        arr = np.asarray(arr)
        self.add(name, arr.shape, arr.dtype, [arr.reshape(-1)])

    def close(self) -> None:
        self._zip.close()
        self._file.close()


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an ``.npz`` that ``np.load`` reads, byte-identical for equal data."""
    with atomic_path(path) as tmp:
        archive = _ArchiveWriter(tmp)
        try:
            for name, arr in arrays.items():
                archive.add_array(name, arr)
        finally:
            archive.close()


def _mapped(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A stored ``.npy`` member as a read-only memmap (None if it cannot be mapped)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        # the local file header (30 bytes, then the name and the extra field) precedes the data
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack_from("<HH", local, 26)
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject or not all(shape) or len(shape) == 0:
        return None  # empty or 0-d arrays: read them
    if offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > path.stat().st_size:
        raise InputError(f"frame file {path} is truncated (rerun the 'frames' stage)")
    return np.memmap(
        path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C"
    )


def load_arrays(path: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a frame file; ``frames`` memory-mapped when the member is stored.

    Always the keys frames, sample_index, labels, dropped (and any others in the file).
    ``frames`` is a read-only ``numpy.memmap`` for files written here (older, compressed
    files are read into memory); index it to get ordinary arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"frame file {path} does not exist (run the 'frames' stage first)")
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        infos = {info.filename: info for info in data.zip.infolist()}
        out = {}
        for name in names:
            arr = _mapped(path, infos[f"{name}.npy"]) if mmap and name == "frames" else None
            out[name] = data[name] if arr is None else arr
    return out


# ------------------------------------------------------------------------- the stage


def batch_samples(meta: dict, max_events: int = BATCH_EVENTS) -> int:
    """Samples per batch so that a batch holds at most ``max_events`` events (at least 1)."""
    most = int(meta["events_per_sample"]["max"]) if meta.get("events_per_sample") else 0
    return max(1, max_events // max(most, 1))


def write_frames(
    events_path: str | Path, out_path: str | Path, p: FramesParams, batch_size: int | None = None
) -> dict:
    """Bin one split's event file into one frame file, in memory bounded by a batch.

    Gives the same arrays (and bytes) as ``save_arrays(out_path, make_frames(read_events(
    events_path), p))``. ``batch_size`` (samples per batch) defaults to about
    :data:`BATCH_EVENTS` events per batch. Returns ``{"frames": n, "dropped_events": n}``.
    """
    meta = read_metadata(events_path)
    labels = np.asarray(meta["labels"], dtype=np.int64)
    batch_size = batch_size or batch_samples(meta)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sample_index, parts, dropped, shape, durations = [], [], 0, None, []
    # unnamed scratch file beside the output: the operating system removes it in any case
    with tempfile.TemporaryFile(dir=out_path.parent) as scratch:
        for idx, batch in iter_batches(events_path, batch_size):
            frames, local, d, duration = _bin(batch, p)
            durations.append(duration)
            scratch.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
            parts.append((frames.dtype, len(frames)))
            sample_index.append(local + idx[0])
            dropped += d
            shape = frames.shape[1:]
            del frames, batch
        total = sum(n for _, n in parts)
        if total == 0:
            raise InputError(f"frames: binning with {binning_kwargs(p)} produced no frames")
        dtype = np.result_type(*{dt for dt, _ in parts})  # the widest: they nest

        def chunks():
            scratch.seek(0)
            for dt, n in parts:
                part = np.empty((n, *shape), dtype=dt)
                view = memoryview(part).cast("B")
                while view:
                    got = scratch.readinto(view)
                    if not got:
                        raise OSError(f"frames: scratch file ended early while writing {out_path}")
                    view = view[got:]
                yield part.astype(dtype, copy=False)

        with atomic_path(out_path) as tmp:
            archive = _ArchiveWriter(tmp)
            try:
                archive.add("frames", (total, *shape), dtype, chunks())
                archive.add_array("sample_index", np.concatenate(sample_index))
                archive.add_array("labels", labels)
                archive.add_array("dropped", np.int64(dropped))
                archive.add_array("frame_duration_us", np.concatenate(durations))
            finally:
                archive.close()
    return {"frames": int(total), "dropped_events": int(dropped)}


def run_frames(p: FramesParams, events_dir: str | Path, out_dir: str | Path) -> dict[str, dict]:
    """Write ``<out_dir>/{train,test}.npz`` from ``<events_dir>/{train,test}.parquet``."""
    return {
        split: write_frames(
            Path(events_dir) / f"{split}.parquet", Path(out_dir) / f"{split}.npz", p
        )
        for split in ("train", "test")
    }
