"""The event store: every sample of one split in one columnar Parquet file.

In memory a split is an :class:`EventSet`: the events of all samples concatenated in one
structured array (fields ``x``, ``y``, ``t``, ``p`` as tonic names them, ``t`` in
microseconds from the start of the recording), sorted by sample then time, with
``offsets`` marking where each sample starts. On disk it is one Parquet file with one row
per event (``sample``, ``t_us``, ``x``, ``y``, ``p``) and the per-split facts (labels,
sensor size, class names, fingerprint) in the schema metadata, so DVC tracks one file per
split instead of thousands of small ones.
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

from spikescale.io import atomic_path

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
METADATA_KEY = b"spikescale"
ROW_GROUP_EVENTS = 1 << 20


class EventStoreError(ValueError):
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
        """Content hash of the events, labels and sensor size (not of file bytes)."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.sensor_size), list(self.classes)]).encode())
        for arr in (self.offsets, self.labels.astype(np.int64)):
            h.update(np.ascontiguousarray(arr).tobytes())
        for name in EVENT_DTYPE.names:
            h.update(np.ascontiguousarray(self.events[name]).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        counts = self.events_per_sample
        per_class = np.bincount(self.labels, minlength=len(self.classes))
        return {
            "samples": len(self),
            "events": int(len(self.events)),
            "sensor_size": list(self.sensor_size),
            "classes": list(self.classes),
            "samples_per_class": {c: int(n) for c, n in zip(self.classes, per_class)},
            "events_per_sample": {
                "min": int(counts.min()) if len(counts) else 0,
                "median": float(np.median(counts)) if len(counts) else 0.0,
                "max": int(counts.max()) if len(counts) else 0,
            },
            "duration_us": self.duration_us,
            "fingerprint": self.fingerprint(),
            "skipped": dict(self.skipped),
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
    return EventSet(events, offsets, np.asarray(labels, dtype=np.int64), tuple(sensor_size), tuple(classes))


def write_events(eventset: EventSet, path: str | Path, **extra_metadata) -> None:
    """Write an EventSet atomically as one Parquet file (one row per event)."""
    meta = eventset.summary()
    meta["labels"] = eventset.labels.tolist()
    meta.update(extra_metadata)
    sample = np.repeat(np.arange(len(eventset), dtype=np.int32), eventset.events_per_sample)
    table = pa.table(
        {
            "sample": pa.array(sample, pa.int32()),
            "t_us": pa.array(eventset.events["t"], pa.int64()),
            "x": pa.array(eventset.events["x"], pa.int16()),
            "y": pa.array(eventset.events["y"], pa.int16()),
            "p": pa.array(eventset.events["p"], pa.int8()),
        }
    )
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_EVENTS, compression="zstd")


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
    """Read a whole split written by :func:`write_events`."""
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
    events["t"] = table.column("t_us").to_numpy()
    events["x"] = table.column("x").to_numpy()
    events["y"] = table.column("y").to_numpy()
    events["p"] = table.column("p").to_numpy()
    counts = np.bincount(sample, minlength=len(labels)) if len(sample) else np.zeros(len(labels), np.int64)
    if len(counts) != len(labels) or (len(sample) and np.any(np.diff(sample) < 0)):
        raise EventStoreError(f"event file {path} is inconsistent: samples out of order or unlabelled")
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return EventSet(
        events, offsets, labels, tuple(meta["sensor_size"]), tuple(meta["classes"]),
        dict(meta.get("skipped", {})),
    )


def iter_batches(path: str | Path, batch_size: int) -> Iterator[tuple[np.ndarray, EventSet]]:
    """Stream a split as EventSets of at most ``batch_size`` samples each.

    Yields ``(sample_indices, eventset)``; only one batch of events is in memory at a time.
    """
    meta = read_metadata(path)
    n = len(meta["labels"])
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        table = pq.read_table(path, filters=[("sample", ">=", start), ("sample", "<", stop)])
        sub = dict(meta, labels=meta["labels"][start:stop])
        table = table.set_column(0, "sample", pa.compute.subtract(table.column("sample"), start))
        yield np.arange(start, stop), _to_eventset(table, sub, path)
