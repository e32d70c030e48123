"""`dataset.name: folder`: a lab's own recordings, in mixed real formats, through the pipeline."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from conftest import BIN, make_project, run, snakemake
from recording_formats import write_aedat4, write_bin, write_dat, write_npy, write_raw
from spikescale.digits import make_digits
from spikescale.event_store import read_events, read_metadata
from spikescale.params import DigitsParams

pytestmark = pytest.mark.integration

WRITERS = {  # one format after the other, so every class folder mixes them
    "npy": lambda path, ev: write_npy(path, ev),
    "bin": lambda path, ev: write_bin(path, ev),
    "dat": lambda path, ev: write_dat(path, ev, 34, 34),
    "raw": lambda path, ev: write_raw(path, ev, 34, 34, "evt3"),
    "aedat4": lambda path, ev: write_aedat4(path, ev, 34, 34),
}


def write_folder(root, per_class: int) -> dict[str, list[tuple[int, int]]]:
    """digits recordings as files under ``root/<split>/<class>/``; (label, events) written."""
    splits = make_digits(DigitsParams(), seed=0, max_samples_per_class=per_class)
    written = {}
    formats = list(WRITERS)
    for split, es in splits.items():
        written[split] = []
        for i in range(len(es.labels)):
            label, events = int(es.labels[i]), es.sample(i)
            ext = formats[i % len(formats)]
            WRITERS[ext](root / split / f"digit_{label}" / f"rec{i:03d}.{ext}", events)
            written[split].append((label, len(events)))
    return written


def test_a_folder_of_mixed_formats_runs_the_whole_pipeline(tmp_path):
    project = make_project(tmp_path, {"dataset": {"name": "folder", "root": "recordings"}})
    written = write_folder(project / "recordings", per_class=4)
    snakemake(project)

    for split, files in written.items():
        events = read_events(project / f"data/folder/events/{split}.parquet")
        assert events.sensor_size == (34, 34, 2)  # inferred: none was given
        assert events.classes == tuple(f"digit_{d}" for d in range(10))
        recordings = zip(events.labels.tolist(), events.events_per_sample.tolist())
        assert sorted(recordings) == sorted(files)
        meta = read_metadata(project / f"data/folder/events/{split}.parquet")
        assert meta["sensor_size_inferred"] is True
        # AEDAT 4 timestamps are on DV's absolute clock: those recordings start at their first event
        aedat4 = sum(1 for i in range(len(files)) if list(WRITERS)[i % len(WRITERS)] == "aedat4")
        assert meta["recordings_moved_to_t0"] == aedat4 > 0
    sweep = pq.read_table(project / "results/folder/sweep.parquet")
    assert sweep.column("factor").to_pylist() == [4.0, 16.0]
    assert sweep.column("dataset").to_pylist() == ["folder", "folder"]


def test_a_bad_folder_is_refused_before_any_job(tmp_path):
    project = make_project(tmp_path, {"dataset": {"name": "folder", "root": "recordings"}})
    write_folder(project / "recordings", per_class=1)
    (project / "recordings/test/digit_3/notes.txt").write_text("not a recording")
    check = run([str(BIN / "spikescale"), "check"], project, check=False)
    assert check.returncode == 2 and "notes.txt" in check.stderr, check.stderr
    proc = snakemake(project, "-n", check=False)
    assert proc.returncode != 0 and "notes.txt" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr  # the message, not a stack
    assert not (project / "data/folder").exists()
    assert not (project / "logs").exists()
