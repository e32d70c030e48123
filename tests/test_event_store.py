import numpy as np
import pyarrow.parquet as pq
import pytest

from spikescale.event_store import (
    EVENT_DTYPE,
    EventStoreError,
    from_samples,
    iter_batches,
    read_events,
    write_events,
)


def _set():
    samples = [
        np.array([(1, 2, 5, 1), (3, 4, 9, 0)], dtype=EVENT_DTYPE),
        np.zeros(0, EVENT_DTYPE),
        np.array([(0, 0, 1, 1)], dtype=EVENT_DTYPE),
    ]
    return from_samples(samples, [0, 1, 1], (34, 34, 2), ("a", "b"))


def test_round_trip_keeps_events_labels_and_fingerprint(tmp_path):
    es = _set()
    write_events(es, tmp_path / "s.parquet")
    back = read_events(tmp_path / "s.parquet")
    assert np.array_equal(back.events, es.events) and np.array_equal(back.offsets, es.offsets)
    assert back.labels.tolist() == [0, 1, 1] and back.sensor_size == (34, 34, 2)
    assert back.fingerprint() == es.fingerprint()
    assert pq.read_table(tmp_path / "s.parquet").column_names == ["sample", "t_us", "x", "y", "p"]


def test_batches_cover_every_sample_once(tmp_path):
    write_events(_set(), tmp_path / "s.parquet")
    batches = list(iter_batches(tmp_path / "s.parquet", 2))
    assert [idx.tolist() for idx, _ in batches] == [[0, 1], [2]]
    assert batches[0][1].offsets.tolist() == [0, 2, 2]
    assert batches[1][1].events["t"].tolist() == [1]


def test_subset_reorders_samples():
    sub = _set().subset(np.array([2, 0]))
    assert sub.offsets.tolist() == [0, 1, 3] and sub.labels.tolist() == [1, 0]


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(EventStoreError, match="does not exist"):
        read_events(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(EventStoreError, match="bad.parquet"):
        read_events(bad)


def test_writing_is_atomic(tmp_path, monkeypatch):
    import spikescale.event_store as ev

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ev.pq.ParquetWriter, "write_table", boom)
    with pytest.raises(OSError):
        write_events(_set(), tmp_path / "s.parquet")
    assert list(tmp_path.iterdir()) == []
