"""The `events` stage: a dataset's train and test splits as event stores.

Tonic datasets are streamed: recordings are read one by one and written in chunks of
samples (about :data:`CHUNK_EVENTS` events each), so memory is bounded by a chunk, not by
the dataset (full N-MNIST is about 290 M events, 3.8 GB as events alone). The built-in
``digits`` set is small and is built whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikescale.errors import InputError
from spikescale.event_store import EventSet, EventStoreWriter, from_samples
from spikescale.params import DatasetParams

CHUNK_EVENTS = 4_000_000  # events per chunk written (52 MB as EVENT_DTYPE)
CHUNK_SAMPLES = 4096  # and at most this many samples


@dataclass
class SplitSource:
    """One split ready to be read: its sensor, classes, chunks and skipped recordings."""

    sensor_size: tuple[int, int, int]
    classes: tuple[str, ...]
    chunks: Callable[[], Iterable[EventSet]]
    skipped: Callable[[], dict[str, int]]  # complete once the chunks are exhausted
    # what the event file's metadata should say besides the summary (once exhausted too)
    metadata: Callable[[], dict] = dict


def require_dataset(p: DatasetParams) -> None:
    """Fail now, with the stage's full message, if the configured dataset is not there.

    Cheap (lists folders, reads no recording), for `spikescale check` and the Snakefile
    before any job. The built-in ``digits`` needs no data; with ``download: true`` a missing
    tonic dataset is fine (the stage downloads it).
    """
    if p.name == "digits":
        return
    if p.name == "folder":
        from spikescale.recordings import find_recordings

        find_recordings(p.root, test_fraction=p.test_fraction, seed=p.seed)
        return
    from spikescale.tonic_datasets import require_present

    require_present(p.name, p.root, download=p.download, test_fraction=p.test_fraction, seed=p.seed)


def open_splits(p: DatasetParams) -> dict[str, SplitSource]:
    """Both splits of the configured dataset, located (a missing one fails here), not read."""
    require_dataset(p)
    if p.name == "digits":
        from spikescale.digits import make_digits

        splits = make_digits(p.digits, p.seed, p.max_samples_per_class)
        return {
            split: SplitSource(
                es.sensor_size, es.classes, lambda es=es: [es], lambda es=es: dict(es.skipped)
            )
            for split, es in splits.items()
        }
    if p.name == "folder":
        return _folder_splits(p)
    from spikescale.tonic_datasets import open_tonic

    located = {
        split: open_tonic(
            p.name,
            Path(p.root),
            split,
            download=p.download,
            on_bad_sample=p.on_bad_sample,
            max_samples_per_class=p.max_samples_per_class,
            test_fraction=p.test_fraction,
            seed=p.seed,
        )
        for split in ("train", "test")
    }
    return {split: _streamed(ts, ts.metadata) for split, ts in located.items()}


def _streamed(split, metadata: Callable[[], dict] = dict) -> SplitSource:
    """A split read recording by recording (a tonic dataset's or a folder's), in chunks."""
    return SplitSource(
        split.sensor_size,
        split.classes,
        lambda: chunked(split, split.sensor_size, split.classes),
        lambda: dict(split.skipped),
        metadata,
    )


def _folder_splits(p: DatasetParams) -> dict[str, SplitSource]:
    """A folder of the user's own recordings; with no ``sensor_size`` given, the recordings
    are read once to infer it (the writing pass then checks every event against it)."""
    from spikescale.recordings import infer_sensor_size, open_folder, with_sensor_size

    splits = open_folder(
        p.root,
        test_fraction=p.test_fraction,
        seed=p.seed,
        sensor_size=p.sensor_size,
        time_unit=p.time_unit,
        on_bad_sample=p.on_bad_sample,
        max_samples_per_class=p.max_samples_per_class,
    )
    inferred = p.sensor_size is None
    if inferred:
        splits = with_sensor_size(splits, infer_sensor_size(splits.values()))
    return {
        split: _streamed(fs, lambda fs=fs: {**fs.metadata(), "sensor_size_inferred": inferred})
        for split, fs in splits.items()
    }


def chunked(
    samples: Iterable[tuple[np.ndarray, int]],
    sensor_size: tuple[int, int, int],
    classes: tuple[str, ...],
    max_events: int | None = None,
    max_samples: int | None = None,
) -> Iterator[EventSet]:
    """``(events, label)`` pairs gathered into EventSets of bounded size, in order.

    A chunk ends before a sample that would take it past ``max_events`` events (default
    :data:`CHUNK_EVENTS`) or ``max_samples`` samples (:data:`CHUNK_SAMPLES`).
    """
    max_events = CHUNK_EVENTS if max_events is None else max_events
    max_samples = CHUNK_SAMPLES if max_samples is None else max_samples
    events, labels, total = [], [], 0
    for ev, label in samples:
        if events and (total + len(ev) > max_events or len(events) >= max_samples):
            yield from_samples(events, labels, sensor_size, classes)
            events, labels, total = [], [], 0
        events.append(ev)
        labels.append(label)
        total += len(ev)
    if events:
        yield from_samples(events, labels, sensor_size, classes)


def check_summary(summary: dict, name: str, split: str) -> None:
    if summary["samples"] == 0:
        raise InputError(f"dataset {name!r}: the {split} split has no samples")
    if summary["events"] == 0:
        raise InputError(f"dataset {name!r}: every recording of the {split} split is empty")


def run_events(p: DatasetParams, out_dir: str | Path) -> dict[str, dict]:
    """Write ``<out_dir>/{train,test}.parquet``; return each split's summary.

    Both files are written in full to temporary files and moved into place only when
    both splits are complete and valid: a failure leaves neither half-written nor stale.
    """
    sources = open_splits(p)
    writers: list[EventStoreWriter] = []
    summaries = {}
    try:
        for split, src in sources.items():
            writer = EventStoreWriter(
                Path(out_dir) / f"{split}.parquet",
                src.sensor_size,
                src.classes,
                dataset=p.name,
                split=split,
            )
            writers.append(writer)
            for chunk in src.chunks():
                writer.append(chunk)
            writer.add_metadata(**src.metadata())
            summaries[split] = writer.finish(skipped=src.skipped())
            check_summary(summaries[split], p.name, split)
        for writer in writers:
            writer.commit()
    finally:
        for writer in writers:
            writer.abort()  # no-op for committed files
    return summaries
