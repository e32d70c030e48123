"""The event store: every sample of one split in one columnar Parquet file.

In memory a split is an :class:`EventSet`: the events of all samples concatenated in one
structured array (fields ``x``, ``y``, ``t``, ``p`` as tonic names them, ``t`` in
microseconds from the start of the recording), sorted by sample then time, with
``offsets`` marking where each sample starts. On disk it is one Parquet file with one row
per event (``sample``, ``t_us``, ``x``, ``y``, ``p``) and the per-split facts (labels,
sensor size, class names, fingerprint, summary) in the file's key-value metadata (which
pyarrow shows as the schema metadata), so DVC tracks one file per split instead of
thousands of small ones.

Files are written and read in bounded memory, so a split far larger than the memory
(full N-MNIST: 70,000 samples, about 290 M events) streams through:

* :class:`EventStoreWriter` appends batches of samples; row groups hold whole samples, at
  most :data:`ROW_GROUP_EVENTS` events each (more only for a single larger sample), cut by
  a rule that depends only on the events per sample, so the file's bytes do not depend
  on how the samples were batched on the way in. The metadata (labels, summary,
  fingerprint) is accumulated on the way and written at the end; the file appears
  atomically when the writer is committed.
* :func:`iter_batches` reads the row groups in order, each once, and cuts them into
  batches of samples; :func:`read_events` reads a whole split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spikescale.errors import InputError
from spikescale.io import AtomicFile

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
METADATA_KEY = b"spikescale"
ROW_GROUP_EVENTS = 1 << 20
SCHEMA = pa.schema(
    [
        ("sample", pa.int32()),
        ("t_us", pa.int64()),
        ("x", pa.int16()),
        ("y", pa.int16()),
        ("p", pa.int8()),
    ]
)
# zstd; dictionaries for the few-valued columns; timestamps, rising within a sample, as
# deltas (smaller and faster than a dictionary that overflows); the metadata goes in the
# file's key-value metadata (store_schema=False: pyarrow then shows it as schema metadata)
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": ["sample", "x", "y", "p"],
    "column_encoding": {"t_us": "DELTA_BINARY_PACKED"},
    "store_schema": False,
}
_COLUMN_FIELDS = (
    ("t_us", "t"),
    ("x", "x"),
    ("y", "y"),
    ("p", "p"),
)  # Parquet column, EventSet field


class EventStoreError(InputError):
    """An event file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class EventSet:
    """All samples of one split.

    ``events[offsets[i]:offsets[i + 1]]`` are the events of sample ``i``, whose label is
    ``labels[i]``. ``sensor_size`` is ``(width, height, polarities)``, tonic's order.
    """

    events: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    sensor_size: tuple[int, int, int]
    classes: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events.dtype != EVENT_DTYPE:
            raise EventStoreError(f"events must have dtype {EVENT_DTYPE}, got {self.events.dtype}")
        if len(self.offsets) != len(self.labels) + 1:
            raise EventStoreError("offsets must have one entry more than labels")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.events):
            raise EventStoreError("offsets must start at 0 and end at the number of events")
        if np.any(np.diff(self.offsets) < 0):
            raise EventStoreError("offsets must not decrease")

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int) -> np.ndarray:
        return self.events[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, indices: np.ndarray) -> EventSet:
        """The samples at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.offsets[indices + 1] - self.offsets[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        take = _ranges(self.offsets[indices], counts)
        return EventSet(
            self.events[take], offsets, self.labels[indices], self.sensor_size, self.classes
        )

    @property
    def events_per_sample(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def duration_us(self) -> int:
        """One past the latest timestamp of any sample (0 for no events)."""
        return int(self.events["t"].max()) + 1 if len(self.events) else 0

    def fingerprint(self) -> str:
        """Content hash of the events, labels, sensor size and classes (not of file bytes).

        Defined by :class:`Fingerprint`, so a split hashed whole here and one hashed batch
        by batch while it is written give the same value.
        """
        fp = Fingerprint(self.sensor_size, self.classes)
        fp.update(self.events, self.events_per_sample, self.labels)
        return fp.hexdigest()

    def summary(self) -> dict:
        return _summary(
            self.events_per_sample,
            self.labels,
            self.duration_us,
            self.sensor_size,
            self.classes,
            self.fingerprint(),
            self.skipped,
        )


class Fingerprint:
    """Streaming content hash of a split, independent of how it is cut into batches.

    Six byte streams are each hashed with SHA-256 as the samples arrive in order: the
    events per sample and the labels (both int64, little-endian), then each event field
    ``x``, ``y``, ``t``, ``p`` in :data:`EVENT_DTYPE`'s little-endian types. The
    fingerprint is the first 16 hex digits of the SHA-256 of the JSON of
    ``[sensor_size, classes]`` followed by the six digests. Equal content gives an equal
    fingerprint whatever the batching; any changed event, label, sample boundary, sensor
    size or class name changes it.
    """

    _STREAMS = ("events_per_sample", "labels", *EVENT_DTYPE.names)

    def __init__(self, sensor_size, classes) -> None:
        self._head = json.dumps([[int(s) for s in sensor_size], list(classes)]).encode()
        self._streams = {name: hashlib.sha256() for name in self._STREAMS}

    def update(self, events: np.ndarray, events_per_sample: np.ndarray, labels: np.ndarray) -> None:
        """Add the next samples: their events, events per sample and labels."""
        self._streams["events_per_sample"].update(
            np.ascontiguousarray(events_per_sample, dtype="<i8")
        )
        self._streams["labels"].update(np.ascontiguousarray(labels, dtype="<i8"))
        for name in EVENT_DTYPE.names:
            self._streams[name].update(np.ascontiguousarray(events[name], dtype=EVENT_DTYPE[name]))

    def hexdigest(self) -> str:
        h = hashlib.sha256(self._head)
        for stream in self._streams.values():
            h.update(stream.digest())
        return h.hexdigest()[:16]


def _summary(counts, labels, duration_us, sensor_size, classes, fingerprint, skipped) -> dict:
    counts = np.asarray(counts, dtype=np.int64)
    per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {
        "samples": len(labels),
        "events": int(counts.sum()),
        "sensor_size": [int(s) for s in sensor_size],
        "classes": list(classes),
        "samples_per_class": {c: int(n) for c, n in zip(classes, per_class)},
        "events_per_sample": {
            "min": int(counts.min()) if len(counts) else 0,
            "median": float(np.median(counts)) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "duration_us": int(duration_us),
        "fingerprint": fingerprint,
        "skipped": dict(skipped),
    }


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each start and count, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    idx = np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts)
    return idx + np.repeat(starts, counts)


def from_samples(
    samples: list[np.ndarray],
    labels: list[int] | np.ndarray,
    sensor_size: tuple[int, int, int],
    classes: tuple[str, ...],
) -> EventSet:
    """An EventSet from a list of per-sample structured arrays (any field order/dtype)."""
    offsets = np.zeros(len(samples) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in samples], out=offsets[1:])
    events = np.empty(int(offsets[-1]), dtype=EVENT_DTYPE)
    for s, a, b in zip(samples, offsets[:-1], offsets[1:]):
        for name in EVENT_DTYPE.names:
            events[name][a:b] = s[name]
    return EventSet(
        events, offsets, np.asarray(labels, dtype=np.int64), tuple(sensor_size), tuple(classes)
    )


# ---------------------------------------------------------------------------- writing


def row_group_bounds(events_per_sample: np.ndarray, limit: int = ROW_GROUP_EVENTS) -> np.ndarray:
    """Sample boundaries of the row groups: ``[0, b1, b2, ..., n]``.

    Greedy from the first sample: a row group takes as many whole samples as fit in
    ``limit`` events, and at least one. Depends only on the events per sample, so any
    batching of the same samples gives the same row groups.
    """
    counts = np.asarray(events_per_sample, dtype=np.int64)
    cum = np.concatenate(([0], np.cumsum(counts)))
    bounds, start = [0], 0
    while start < len(counts):
        stop = int(np.searchsorted(cum, cum[start] + limit, side="right")) - 1
        start = max(stop, start + 1)
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


class EventStoreWriter:
    """Write one split's event file batch by batch, in memory bounded by a batch.

    ::

        with EventStoreWriter(path, sensor_size, classes, dataset="nmnist") as w:
            for batch in batches:          # EventSets, consecutive samples in order
                w.append(batch)
            w.finish(skipped={"corrupt": 2})  # optional: samples left out, by reason

    On leaving the block without an exception the file is finished and moved to ``path``
    (:meth:`commit`); after an exception nothing is left at ``path`` (:meth:`abort`).
    :meth:`finish` alone completes the temporary file and returns the summary without
    moving it, so several files can be committed together once all are complete. The
    result is the same file :func:`write_events` writes for the concatenated batches,
    byte for byte, and its fingerprint equals ``EventSet.fingerprint()`` of the whole set.
    Extra keyword arguments are stored in the metadata beside the summary.
    """

    def __init__(
        self,
        path: str | Path,
        sensor_size: tuple[int, int, int],
        classes: tuple[str, ...],
        *,
        row_group_events: int = ROW_GROUP_EVENTS,
        **extra_metadata,
    ) -> None:
        self.path = Path(path)
        self.sensor_size = tuple(int(s) for s in sensor_size)
        self.classes = tuple(classes)
        self._extra = extra_metadata
        self._limit = int(row_group_events)
        self._fingerprint = Fingerprint(self.sensor_size, self.classes)
        self._counts: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._latest: int | None = None  # latest timestamp so far
        self._written = 0  # samples already in row groups
        self._pending_events = np.zeros(0, EVENT_DTYPE)  # samples waiting for their row group
        self._pending_counts = np.zeros(0, np.int64)
        self._summary: dict | None = None
        self._file = AtomicFile(self.path)
        self._state = "open"
        try:
            self._writer = pq.ParquetWriter(self._file.tmp, SCHEMA, **_PARQUET_OPTIONS)
        except BaseException:
            self.abort()
            raise

    def add_metadata(self, **extra) -> None:
        """More keys for the metadata beside the summary (known only once read, e.g. how
        many recordings were moved to start at t = 0); before :meth:`finish`."""
        self._extra.update(extra)

    def __enter__(self) -> EventStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    @property
    def samples(self) -> int:
        """Samples appended so far."""
        return self._written + len(self._pending_counts)

    def append(self, batch: EventSet) -> None:
        """Add the next samples (after those appended before)."""
        if self._state != "open":
            raise EventStoreError(f"{self.path}: cannot append, the writer is {self._state}")
        if tuple(batch.sensor_size) != self.sensor_size or tuple(batch.classes) != self.classes:
            raise EventStoreError(
                f"{self.path}: batch has sensor size {batch.sensor_size} "
                f"and classes {batch.classes}, "
                f"the file {self.sensor_size} and {self.classes}"
            )
        counts = batch.events_per_sample.astype(np.int64)
        self._fingerprint.update(batch.events, counts, batch.labels)
        self._counts.append(counts)
        self._labels.append(np.asarray(batch.labels, dtype=np.int64))
        if len(batch.events):
            latest = int(batch.events["t"].max())
            self._latest = latest if self._latest is None else max(self._latest, latest)
        if len(self._pending_counts):
            events = np.concatenate([self._pending_events, batch.events])
            counts = np.concatenate([self._pending_counts, counts])
        else:
            events = batch.events
        self._write_groups(events, counts, final=False)

    def _write_groups(self, events: np.ndarray, counts: np.ndarray, final: bool) -> None:
        """Write the complete row groups of the pending samples; keep the rest pending."""
        bounds = row_group_bounds(counts, self._limit)
        # the last group may still grow unless this is the end
        done = len(bounds) - 1 if final else len(bounds) - 2
        cum = np.concatenate(([0], np.cumsum(counts)))
        for a, b in zip(bounds[:done], bounds[1 : done + 1]):
            self._write_group(events[cum[a] : cum[b]], counts[a:b], self._written + a)
        keep = bounds[max(done, 0)]
        self._written += int(keep)
        self._pending_events = events[cum[keep] :].copy() if not final else np.zeros(0, EVENT_DTYPE)
        self._pending_counts = counts[keep:].copy() if not final else np.zeros(0, np.int64)

    def _write_group(self, events: np.ndarray, counts: np.ndarray, first: int) -> None:
        if not len(events):
            return  # only empty samples: nothing to store, the labels say they exist
        sample = np.repeat(np.arange(first, first + len(counts), dtype=np.int32), counts)
        table = pa.table(
            {
                "sample": pa.array(sample, pa.int32()),
                "t_us": pa.array(events["t"], pa.int64()),
                "x": pa.array(events["x"], pa.int16()),
                "y": pa.array(events["y"], pa.int16()),
                "p": pa.array(events["p"], pa.int8()),
            },
            schema=SCHEMA,
        )
        self._writer.write_table(table, row_group_size=len(table))

    def finish(self, skipped: dict[str, int] | None = None) -> dict:
        """Write the last row group and the metadata; return the split's summary.

        ``skipped``: samples the reader left out, by reason (known only at the end of a
        streamed split). The file stays at its temporary path until :meth:`commit`.
        """
        if self._state in ("finished", "committed"):
            return self._summary
        if self._state != "open":
            raise EventStoreError(f"{self.path}: cannot finish, the writer is {self._state}")
        try:
            self._write_groups(self._pending_events, self._pending_counts, final=True)
            counts = np.concatenate(self._counts) if self._counts else np.zeros(0, np.int64)
            labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
            summary = _summary(
                counts,
                labels,
                0 if self._latest is None else self._latest + 1,
                self.sensor_size,
                self.classes,
                self._fingerprint.hexdigest(),
                dict(skipped or {}),
            )
            meta = dict(summary, labels=labels.tolist(), **self._extra)
            self._writer.add_key_value_metadata(
                {METADATA_KEY: json.dumps(meta, sort_keys=True).encode()}
            )
            self._writer.close()
        except BaseException:
            self.abort()
            raise
        self._summary, self._state = summary, "finished"
        return summary

    def commit(self) -> dict:
        """Finish if needed and move the file into place; return the summary."""
        summary = self.finish()
        if self._state == "finished":
            self._file.commit()
            self._state = "committed"
        return summary

    def abort(self) -> None:
        """Drop the temporary file (no-op once committed)."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        writer = getattr(self, "_writer", None)
        try:
            if writer is not None and writer.is_open:
                writer.close()
        except Exception:  # noqa: BLE001 - the file is dropped anyway
            pass
        self._file.discard()


def write_events(eventset: EventSet, path: str | Path, **extra_metadata) -> None:
    """Write an EventSet atomically as one Parquet file (one row per event)."""
    with EventStoreWriter(path, eventset.sensor_size, eventset.classes, **extra_metadata) as w:
        w.append(eventset)
        w.finish(skipped=eventset.skipped)


# ---------------------------------------------------------------------------- reading


def read_metadata(path: str | Path) -> dict:
    """The per-split facts stored with an event file, without reading the events."""
    path = Path(path)
    if not path.is_file():
        raise EventStoreError(f"event file {path} does not exist (run the 'events' stage first)")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise EventStoreError(f"event file {path} is not a readable Parquet file: {err}") from err
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise EventStoreError(f"{path} is a Parquet file but not a spikescale event file")
    return json.loads(raw)


def read_events(path: str | Path) -> EventSet:
    """Read a whole split written by :func:`write_events` or :class:`EventStoreWriter`."""
    meta = read_metadata(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise EventStoreError(f"event file {path} is corrupt: {err}") from err
    return _to_eventset(table, meta, path)


def _to_eventset(table: pa.Table, meta: dict, path) -> EventSet:
    labels = np.asarray(meta["labels"], dtype=np.int64)
    sample = table.column("sample").to_numpy()
    events = np.empty(table.num_rows, dtype=EVENT_DTYPE)
    for column, name in _COLUMN_FIELDS:
        events[name] = table.column(column).to_numpy()
    counts = (
        np.bincount(sample, minlength=len(labels))
        if len(sample)
        else np.zeros(len(labels), np.int64)
    )
    if len(counts) != len(labels) or (len(sample) and np.any(np.diff(sample) < 0)):
        raise EventStoreError(
            f"event file {path} is inconsistent: samples out of order or unlabelled"
        )
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return EventSet(
        events,
        offsets,
        labels,
        tuple(meta["sensor_size"]),
        tuple(meta["classes"]),
        dict(meta.get("skipped", {})),
    )


def _row_group_starts(pf: pq.ParquetFile) -> list[int | None]:
    """The smallest sample of every row group, from its statistics (None if unknown)."""
    md, column = pf.metadata, pf.schema_arrow.get_field_index("sample")
    starts = []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(column).statistics
        starts.append(int(stats.min) if stats is not None and stats.has_min_max else None)
    return starts


def iter_batches(path: str | Path, batch_size: int) -> Iterator[tuple[np.ndarray, EventSet]]:
    """Stream a split as EventSets of at most ``batch_size`` samples each.

    Yields ``(sample_indices, eventset)``. Row groups are read in order, each once, and
    only when a batch needs them (their ``sample`` statistics say where they start), so at
    most one batch and the row groups it touches are in memory. Works for any row-group
    layout whose rows are sorted by sample, not only the one the writer makes.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    meta = read_metadata(path)
    labels = np.asarray(meta["labels"], dtype=np.int64)
    n = len(labels)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise EventStoreError(f"event file {path} is corrupt: {err}") from err
    with pf:
        starts = _row_group_starts(pf)
        next_group, last = 0, -1
        buffered: list[dict[str, np.ndarray]] = []  # decoded rows not yet yielded, in order
        for start in range(0, n, int(batch_size)):
            stop = min(n, start + int(batch_size))
            while next_group < len(starts) and (
                starts[next_group] is None or starts[next_group] < stop
            ):
                cols = _read_group(pf, next_group, path)
                next_group += 1
                if len(cols["sample"]):
                    s = cols["sample"]
                    if s[0] < last or np.any(s[1:] < s[:-1]):
                        raise EventStoreError(
                            f"event file {path} is inconsistent: samples out of order"
                        )
                    last = int(s[-1])
                    buffered.append(cols)
                if last >= stop:
                    break
            take, keep = [], []
            for cols in buffered:
                k = int(np.searchsorted(cols["sample"], stop))
                take.append({c: v[:k] for c, v in cols.items()})
                if k < len(cols["sample"]):
                    keep.append({c: v[k:] for c, v in cols.items()})
            buffered = keep
            yield np.arange(start, stop), _batch(take, labels[start:stop], start, meta, path)
        # rows left over, or row groups no batch needed, hold samples beyond the labels
        if buffered or any(
            starts[g] is not None or len(_read_group(pf, g, path)["sample"])
            for g in range(next_group, len(starts))
        ):
            raise EventStoreError(
                f"event file {path} is inconsistent: events of unlabelled samples"
            )


def _read_group(pf: pq.ParquetFile, i: int, path) -> dict[str, np.ndarray]:
    try:
        table = pf.read_row_group(i)
    except (pa.ArrowInvalid, OSError) as err:
        raise EventStoreError(f"event file {path} is corrupt (row group {i}): {err}") from err
    return {name: table.column(name).to_numpy() for name in SCHEMA.names}


def _batch(
    parts: list[dict[str, np.ndarray]], labels: np.ndarray, first: int, meta: dict, path
) -> EventSet:
    """An EventSet of samples ``first ...`` from decoded row-group pieces."""
    total = sum(len(p["sample"]) for p in parts)
    events = np.empty(total, dtype=EVENT_DTYPE)
    counts = np.zeros(len(labels), dtype=np.int64)
    at = 0
    for p in parts:
        k = len(p["sample"])
        if not k:
            continue
        for column, name in _COLUMN_FIELDS:
            events[name][at : at + k] = p[column]
        local = p["sample"] - first
        if local[0] < 0:
            raise EventStoreError(f"event file {path} is inconsistent: samples out of order")
        counts += np.bincount(local, minlength=len(labels))
        at += k
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return EventSet(
        events,
        offsets,
        labels,
        tuple(meta["sensor_size"]),
        tuple(meta["classes"]),
        dict(meta.get("skipped", {})),
    )
