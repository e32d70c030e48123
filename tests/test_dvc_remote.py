"""DVC carries datasets, models and results between machines (here: two clones)."""

from __future__ import annotations

import pytest

from conftest import BIN, run, snakemake

pytestmark = pytest.mark.integration


def test_push_clone_pull_is_clean_for_dvc_and_snakemake(dvc_project, tmp_path):
    dvc = str(BIN / "dvc")
    remote = tmp_path / "remote"
    run([dvc, "remote", "add", "-d", "shared", str(remote)], dvc_project)
    run([dvc, "push", "-q"], dvc_project)
    run(["git", "add", "-A"], dvc_project)
    run(["git", "commit", "-qm", "results"], dvc_project)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_project), str(clone)], tmp_path)
    assert not (clone / "results/digits/sweep.parquet").exists()
    run([dvc, "pull", "-q"], clone)
    for name in ("sweep", "layers", "timecourse", "samples"):
        a = (clone / f"results/digits/{name}.parquet").read_bytes()
        assert a == (dvc_project / f"results/digits/{name}.parquet").read_bytes()
    assert "up to date" in run([dvc, "status"], clone).stdout
    # DVC checks files out with fresh timestamps in no useful order: tell Snakemake the
    # pulled files are current (README: "Moving between machines")
    snakemake(clone, "--touch")
    assert "Nothing to be done" in snakemake(clone, "-n").stdout


def test_dvc_added_raw_dataset_feeds_the_events_stage(tmp_path):
    """README "Versioning a dataset": `dvc add` a tonic dataset under data/raw, commit the
    .dvc file; `dvc repro` then reruns `events` when the dataset's content changes."""
    import numpy as np

    from conftest import init_dvc, make_project
    from fake_datasets import random_events, write_nmnist, write_nmnist_bin
    from spikescale.event_store import read_events

    dvc = str(BIN / "dvc")
    project = make_project(tmp_path / "project", {"dataset": {"name": "nmnist"}})
    raw = project / "data" / "raw"
    written = {split: write_nmnist(raw, split, seed=i) for i, split in enumerate(("train", "test"))}
    init_dvc(project)
    assert "NMNIST" not in run(["git", "ls-files"], project).stdout  # ignored by git
    run([dvc, "add", "-q", "data/raw/NMNIST"], project)
    # the .dvc file is for git, and git takes it (README's commands); the data stays ignored
    run(["git", "add", "data/raw/NMNIST.dvc"], project)
    run(["git", "commit", "-qm", "N-MNIST, versioned"], project)

    run([dvc, "repro", "-q", "events"], project)
    events = project / "data/nmnist/events/test.parquet"
    first = read_events(events)
    assert len(first) == len(written["test"])
    assert "up to date" in run([dvc, "status", "events"], project).stdout

    # a new version of one recording: DVC sees the raw folder changed, repro rereads it
    _, path, _ = written["test"][0]
    write_nmnist_bin(path, random_events(np.random.default_rng(9), 55))
    status = run([dvc, "status", "events"], project).stdout
    assert "changed deps" in status and "data/raw" in status, status
    run([dvc, "add", "-q", "data/raw/NMNIST"], project)
    run([dvc, "repro", "-q", "events"], project)
    second = read_events(events)
    assert second.fingerprint() != first.fingerprint()
    assert int(second.events_per_sample[0]) == 55
    assert "up to date" in run([dvc, "status", "events"], project).stdout
