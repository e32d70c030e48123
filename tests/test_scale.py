"""The event store and the frames stage stream: equal results to the in-memory path,
row groups that hold whole samples, and memory bounded by a batch, not by the split."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from spikescale.event_store import (
    EVENT_DTYPE,
    EventSet,
    EventStoreError,
    EventStoreWriter,
    iter_batches,
    read_events,
    read_metadata,
    row_group_bounds,
    write_events,
)
from spikescale.frames import load_arrays, make_frames, save_arrays, write_frames
from spikescale.params import FramesParams

SENSOR = (34, 34, 2)
CLASSES = tuple("0123456789")


def synthetic(n: int, mean_events: int = 300, seed: int = 0, empty_every: int = 7) -> EventSet:
    """N-MNIST-like samples (sorted times over about 300 ms), some of them empty."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(mean_events // 2, mean_events * 3 // 2 + 1, n)
    counts[::empty_every] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    events = np.empty(total, EVENT_DTYPE)
    t = np.cumsum(rng.integers(0, 2 * 300_000 // mean_events + 1, total))
    events["t"] = t - np.repeat(t[offsets[:-1][counts > 0]], counts[counts > 0])
    events["x"] = rng.integers(0, SENSOR[0], total)
    events["y"] = rng.integers(0, SENSOR[1], total)
    events["p"] = rng.integers(0, SENSOR[2], total)
    return EventSet(events, offsets, rng.integers(0, 10, n), SENSOR, CLASSES, {"corrupt": 1})


def chunks(es: EventSet, sizes):
    """``es`` cut into consecutive EventSets of the given numbers of samples (cycled)."""
    start, i = 0, 0
    while start < len(es):
        stop = min(len(es), start + sizes[i % len(sizes)])
        yield es.subset(np.arange(start, stop))
        start, i = stop, i + 1


# ------------------------------------------------------------------------- event store


@pytest.mark.parametrize("sizes", [[1], [5, 1, 17], [10_000]])
def test_streamed_file_equals_whole_file_byte_for_byte(tmp_path, sizes):
    es = synthetic(120)
    whole, streamed = tmp_path / "whole.parquet", tmp_path / "streamed.parquet"
    with EventStoreWriter(whole, SENSOR, CLASSES, row_group_events=2000, split="train") as w:
        w.append(es)
        w.finish(skipped={"corrupt": 1})
    with EventStoreWriter(streamed, SENSOR, CLASSES, row_group_events=2000, split="train") as w:
        for batch in chunks(es, sizes):
            w.append(batch)
        w.finish(skipped={"corrupt": 1})
    assert whole.read_bytes() == streamed.read_bytes()
    meta = read_metadata(streamed)
    assert meta["fingerprint"] == es.fingerprint()
    assert {k: meta[k] for k in es.summary()} == es.summary()
    assert meta["split"] == "train" and meta["labels"] == es.labels.tolist()
    back = read_events(streamed)
    assert np.array_equal(back.events, es.events) and np.array_equal(back.offsets, es.offsets)


def test_fingerprint_depends_on_content_not_on_batching():
    es = synthetic(40)
    assert es.subset(np.arange(40)).fingerprint() == es.fingerprint()
    moved = es.events.copy()
    moved["x"][3] = (moved["x"][3] + 1) % SENSOR[0]
    changed = [
        EventSet(moved, es.offsets, es.labels, SENSOR, CLASSES),
        EventSet(es.events, es.offsets, (es.labels + 1) % 10, SENSOR, CLASSES),
        EventSet(es.events, es.offsets, es.labels, (34, 34, 3), CLASSES),
        # the same events, one sample boundary moved
        EventSet(
            es.events,
            np.r_[es.offsets[:2], es.offsets[2] + 1, es.offsets[3:]],
            es.labels,
            SENSOR,
            CLASSES,
        ),
    ]
    assert len({es.fingerprint(), *(c.fingerprint() for c in changed)}) == 5


def test_row_groups_hold_whole_samples_within_the_limit(tmp_path):
    es = synthetic(200, mean_events=300)
    counts = es.events_per_sample
    big = counts.copy()
    big[50] = 5000  # one sample larger than a row group gets one of its own
    bounds = row_group_bounds(big, 2000)
    assert bounds[0] == 0 and bounds[-1] == len(big) and np.all(np.diff(bounds) >= 1)
    sizes = [int(big[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    assert all(s <= 2000 or b - a == 1 for s, a, b in zip(sizes, bounds[:-1], bounds[1:]))
    # greedy: the next sample would not have fitted
    assert all(s + big[b] > 2000 for s, b in zip(sizes[:-1], bounds[1:-1]))

    path = tmp_path / "s.parquet"
    with EventStoreWriter(path, SENSOR, CLASSES, row_group_events=2000) as w:
        for batch in chunks(es, [13]):
            w.append(batch)
    md = pq.ParquetFile(path).metadata
    ranges = [
        (md.row_group(i).column(0).statistics.min, md.row_group(i).column(0).statistics.max)
        for i in range(md.num_row_groups)
    ]
    expected = [(a, b - 1) for a, b in zip(*[row_group_bounds(counts, 2000)[k:] for k in (0, 1)])]
    # row groups of only empty samples hold no rows and are not written
    expected = [(a, b) for a, b in expected if counts[a : b + 1].sum()]
    nonempty = np.flatnonzero(counts)
    assert [
        (nonempty[nonempty >= a][0], nonempty[nonempty <= b][-1]) for a, b in expected
    ] == ranges
    assert all(r[0] > q[1] for q, r in zip(ranges, ranges[1:]))  # no sample spans two groups


@pytest.mark.parametrize("batch_size", [1, 3, 16, 64, 1000])
def test_batches_equal_the_whole_split_reading_each_row_group_once(
    tmp_path, monkeypatch, batch_size
):
    es = synthetic(150)
    path = tmp_path / "s.parquet"
    with EventStoreWriter(path, SENSOR, CLASSES, row_group_events=1500) as w:
        for batch in chunks(es, [40]):
            w.append(batch)
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_group",
        lambda self, i, *a, **k: reads.append(i) or original(self, i, *a, **k),
    )
    got = list(iter_batches(path, batch_size))
    assert reads == list(range(pq.ParquetFile(path).metadata.num_row_groups))
    assert [idx.tolist() for idx, _ in got] == [
        list(range(a, min(a + batch_size, 150))) for a in range(0, 150, batch_size)
    ]
    assert np.array_equal(np.concatenate([b.events for _, b in got]), es.events)
    assert np.array_equal(
        np.concatenate([b.events_per_sample for _, b in got]), es.events_per_sample
    )
    assert np.array_equal(np.concatenate([b.labels for _, b in got]), es.labels)


def test_a_batch_reads_only_the_row_groups_it_needs(tmp_path, monkeypatch):
    es = synthetic(150, empty_every=1000)
    path = tmp_path / "s.parquet"
    with EventStoreWriter(path, SENSOR, CLASSES, row_group_events=1500) as w:
        w.append(es)
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_group",
        lambda self, i, *a, **k: reads.append(i) or original(self, i, *a, **k),
    )
    first = next(iter(iter_batches(path, 4)))
    assert len(first[1]) == 4 and reads == [0]  # 4 samples of ~300 events: in the first group


def test_batches_of_files_whose_row_groups_split_samples(tmp_path):
    """Files from other writers (e.g. the earlier one) may cut a sample between row groups."""
    es = synthetic(60)
    path = tmp_path / "old.parquet"
    write_events(es, path)
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=777)  # keeps the schema metadata
    assert read_metadata(path)["fingerprint"] == es.fingerprint()
    for batch_size in (1, 7, 100):
        got = [b for _, b in iter_batches(path, batch_size)]
        assert np.array_equal(np.concatenate([b.events for b in got]), es.events)
        assert np.array_equal(
            np.concatenate([b.events_per_sample for b in got]), es.events_per_sample
        )


def test_batches_refuse_events_of_unlabelled_samples(tmp_path):
    es = synthetic(10, empty_every=1000)
    path = tmp_path / "s.parquet"
    write_events(es, path)
    meta = read_metadata(path)
    meta["labels"] = meta["labels"][:8]
    table = pq.read_table(path).replace_schema_metadata({b"spikescale": json.dumps(meta).encode()})
    pq.write_table(table, path)
    with pytest.raises(EventStoreError, match="unlabelled"):
        list(iter_batches(path, 3))


def test_a_failed_stream_leaves_nothing(tmp_path):
    es = synthetic(20)
    path = tmp_path / "s.parquet"
    with pytest.raises(RuntimeError), EventStoreWriter(path, SENSOR, CLASSES) as w:
        w.append(es)
        raise RuntimeError("reader failed half way")
    assert list(tmp_path.iterdir()) == []
    with (
        pytest.raises(EventStoreError, match="sensor size"),
        EventStoreWriter(path, SENSOR, CLASSES) as w,
    ):
        w.append(EventSet(es.events, es.offsets, es.labels, (128, 128, 2), CLASSES))
    assert list(tmp_path.iterdir()) == []


def test_events_stage_streams_a_tonic_dataset_in_chunks(tmp_path, monkeypatch):
    """Chunks of a few samples give the same files as the whole split written at once;
    a bad recording in the test split leaves neither split's file behind."""
    import spikescale.events as events_stage
    from fake_datasets import write_nmnist, write_nmnist_bin
    from spikescale.params import DatasetParams
    from spikescale.tonic_datasets import BadSampleError, load_tonic

    for split, seed in (("train", 0), ("test", 1)):
        write_nmnist(tmp_path / "raw", split, per_class={0: 3, 4: 2, 9: 4}, seed=seed)
    p = DatasetParams(name="nmnist", root=str(tmp_path / "raw"))
    appended = []
    monkeypatch.setattr(events_stage, "CHUNK_SAMPLES", 2)
    original = EventStoreWriter.append
    monkeypatch.setattr(
        EventStoreWriter, "append", lambda self, b: appended.append(len(b)) or original(self, b)
    )
    summaries = events_stage.run_events(p, tmp_path / "events")
    assert appended == [2, 2, 2, 2, 1] * 2
    for split in ("train", "test"):
        whole = load_tonic("nmnist", tmp_path / "raw", split)
        write_events(whole, tmp_path / f"whole_{split}.parquet", dataset="nmnist", split=split)
        assert (tmp_path / "events" / f"{split}.parquet").read_bytes() == (
            tmp_path / f"whole_{split}.parquet"
        ).read_bytes()
        assert summaries[split] == whole.summary()

    write_nmnist_bin(
        tmp_path / "raw" / "NMNIST" / "Test" / "9" / "99999.bin", np.zeros(0, EVENT_DTYPE)
    )
    with pytest.raises(BadSampleError, match="99999.bin"):
        events_stage.run_events(p, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() or list((tmp_path / "fresh").iterdir()) == []


# ----------------------------------------------------------------------------- frames


MODES = [
    FramesParams(mode="n_time_bins", n_time_bins=10),
    FramesParams(mode="time_window", time_window_us=30_000, include_incomplete=True),
    FramesParams(mode="event_count", event_count=100, overlap=20),
    FramesParams(mode="n_event_bins", n_event_bins=4, bins_as_examples=False),
]


@pytest.mark.parametrize("p", MODES, ids=lambda p: p.mode)
def test_streamed_frames_equal_the_in_memory_frames_byte_for_byte(tmp_path, p):
    es = synthetic(90)
    write_events(es, tmp_path / "e.parquet")
    save_arrays(tmp_path / "whole.npz", make_frames(es, p))
    for batch_size in (1, 13, None):
        summary = write_frames(
            tmp_path / "e.parquet", tmp_path / "streamed.npz", p, batch_size=batch_size
        )
        assert (tmp_path / "streamed.npz").read_bytes() == (tmp_path / "whole.npz").read_bytes()
    arrays = load_arrays(tmp_path / "streamed.npz")
    plain = np.load(tmp_path / "streamed.npz")  # an ordinary .npz as well
    assert (
        sorted(arrays)
        == sorted(plain.files)
        == [
            "dropped",
            "frame_duration_us",
            "frames",
            "labels",
            "sample_index",
        ]
    )
    assert isinstance(arrays["frames"], np.memmap)
    for k in plain.files:
        assert arrays[k].dtype == plain[k].dtype and np.array_equal(arrays[k], plain[k])
    assert summary == {"frames": len(plain["frames"]), "dropped_events": int(plain["dropped"])}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no scratch left


def test_frame_dtype_is_the_smallest_exact_one_for_the_whole_split(tmp_path):
    es = synthetic(30, mean_events=400)
    i = int(np.argmax(es.events_per_sample))
    events = es.events.copy()
    a, b = es.offsets[i], es.offsets[i + 1]  # the largest sample: all its events on one pixel
    events["x"][a:b], events["y"][a:b], events["p"][a:b] = 5, 6, 1
    es = EventSet(events, es.offsets, es.labels, SENSOR, CLASSES)
    assert b - a > 255
    p = FramesParams(mode="n_time_bins", n_time_bins=1)
    write_events(es, tmp_path / "e.parquet")
    write_frames(
        tmp_path / "e.parquet", tmp_path / "f.npz", p, batch_size=4
    )  # batches of uint8 and of int16
    frames = load_arrays(tmp_path / "f.npz")["frames"]
    assert frames.dtype == np.int16 and frames[i, 1, 6, 5] == int(
        np.count_nonzero(events["t"][a:b] < events["t"][a] + (events["t"][b - 1] - events["t"][a]))
    )
    assert np.array_equal(frames, make_frames(es, p)["frames"])
    small = make_frames(synthetic(30), p)["frames"]
    assert small.dtype == np.uint8


def test_frames_map_in_aligned_also_in_zip64_archives(tmp_path, monkeypatch):
    es = synthetic(20)
    arrays = make_frames(es, FramesParams())
    arrays["frames"] = arrays["frames"].astype(np.int64)  # the strictest alignment
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)  # members this large count as huge
    save_arrays(tmp_path / "f.npz", arrays)
    frames = load_arrays(tmp_path / "f.npz")["frames"]
    assert isinstance(frames, np.memmap) and frames.offset % 64 == 0 and frames.flags.aligned
    assert np.array_equal(frames, arrays["frames"])
    with zipfile.ZipFile(tmp_path / "f.npz") as zf:
        assert zf.testzip() is None


def test_compressed_frame_files_of_earlier_versions_still_load(tmp_path):
    arrays = make_frames(synthetic(10), FramesParams())
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    loaded = load_arrays(tmp_path / "old.npz")
    assert not isinstance(loaded["frames"], np.memmap)
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)


def test_training_reads_memory_mapped_frames_in_the_same_order():
    from spikescale.train import take

    frames = np.arange(50 * 2).reshape(50, 2)
    idx = np.array([7, 3, 3, 49, 0, 12])
    assert np.array_equal(take(frames, idx), frames[idx])


# ---------------------------------------------------------------------- bounded memory


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_scale import synthetic, SENSOR, CLASSES
    from spikescale.event_store import EventStoreWriter, iter_batches
    from spikescale.frames import write_frames
    from spikescale.params import FramesParams

    def peak():
        status = Path("/proc/self/status").read_text().splitlines()
        line = next(entry for entry in status if entry.startswith("VmHWM"))
        return int(line.split()[1]) * 1024

    def run(work, chunks):
        work.mkdir()
        events = 0
        with EventStoreWriter(work / "e.parquet", SENSOR, CLASSES, row_group_events=50_000) as w:
            for c in range(chunks):
                chunk = synthetic({samples}, 4000, seed=c, empty_every=10**9)
                events += len(chunk.events)
                w.append(chunk)
                del chunk
        written = write_frames(work / "e.parquet", work / "f.npz", FramesParams(), batch_size=20)
        frames = written["frames"]
        read = sum(len(b.events) for _, b in iter_batches(work / "e.parquet", 16))
        return events, read, frames

    # a small split first: the libraries' one-time buffers (pyarrow's writer, zstd) are not data
    run(Path({work!r}) / "small", 2)
    base = peak()
    events, read, frames = run(Path({work!r}) / "large", {chunks})
    print(json.dumps({{"events": events, "read": read, "frames": frames, "growth": peak() - base}}))
    """
)


def test_memory_is_bounded_by_a_batch_not_by_the_split(tmp_path):
    """A 16 M-event split (200 MB as events, 90 MB as frames) through writer, frames and
    batch reader, in chunks of 50 samples: the process grows by far less than the data
    (reading it whole instead grows it by about 850 MB)."""
    chunks, samples = 80, 50
    code = _CHILD.format(
        tests=str(Path(__file__).parent), work=str(tmp_path), chunks=chunks, samples=samples
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    data_bytes = r["events"] * EVENT_DTYPE.itemsize
    frame_bytes = r["frames"] * 2 * 34 * 34
    assert r["events"] == r["read"] > 15_000_000 and r["frames"] == chunks * samples * 10
    bound = 40 * 2**20
    assert data_bytes > 4.5 * bound and frame_bytes > 2 * bound
    assert r["growth"] < bound, (
        f"grew by {r['growth'] / 2**20:.0f} MB for {data_bytes / 2**20:.0f} MB of events"
    )


def test_frames_record_the_time_each_frame_covers():
    """What `convert` divides biases by (with evaluation.time_bin_us): one value per frame."""
    es = synthetic(30)
    es = es.subset(np.flatnonzero(es.events_per_sample > 0))  # an empty one spans nothing
    t, offsets = es.events["t"], es.offsets
    span = (t[offsets[1:] - 1] - t[offsets[:-1]]).astype(np.float64)
    bins = make_frames(es, FramesParams(mode="n_time_bins", n_time_bins=10))
    assert np.array_equal(bins["frame_duration_us"], np.repeat(span // 10, 10))
    window = make_frames(es, FramesParams(mode="time_window", time_window_us=30_000))
    assert len(window["frame_duration_us"]) == len(window["frames"])
    assert (window["frame_duration_us"] == 30_000).all()
    summed = make_frames(es, FramesParams(bins_as_examples=False))
    assert np.array_equal(summed["frame_duration_us"], span)
    counted = make_frames(es, FramesParams(mode="event_count", event_count=100))
    per_sample = np.bincount(counted["sample_index"], minlength=len(es))
    assert (
        np.allclose(
            np.bincount(counted["sample_index"], weights=counted["frame_duration_us"]), span
        )
        or (per_sample == 0).any()
    )
