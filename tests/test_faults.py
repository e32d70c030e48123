"""Killed runs lose nothing: a rerun completes and equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import BIN, env, make_project, snakemake

pytestmark = pytest.mark.integration

COLLECTED = ("sweep", "layers", "timecourse", "samples")


def _kill_when(project: Path, marker: str, timeout: float = 600) -> None:
    """Start snakemake, SIGKILL it and its jobs as soon as ``marker`` (a glob) exists."""
    proc = subprocess.Popen(
        [str(BIN / "snakemake"), "--cores", "2", "--profile", "profiles/default"],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not list(project.glob(marker)):
            assert proc.poll() is None, "snakemake ended before the point where it was to be killed"
            assert time.monotonic() < deadline, f"{marker} never appeared"
            time.sleep(0.2)
        time.sleep(1.0)  # let the job get under way
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _no_partial_files(project: Path) -> None:
    for path in project.rglob("*.parquet"):
        pq.read_metadata(path)  # a truncated file fails here
    leftovers = [p for p in project.rglob("*.tmp") if ".snakemake" not in p.parts]
    return leftovers


@pytest.mark.parametrize(
    "stage, marker",
    [("train", "logs/digits/train.log"), ("evaluate", "logs/digits/evaluate/*.log")],
)
def test_sigkill_then_rerun_gives_the_uninterrupted_results(
    tmp_path, snakemake_project, stage, marker
):
    project = make_project(tmp_path)
    _kill_when(project, marker)
    assert not (project / "results/digits/sweep.parquet").exists()
    _no_partial_files(project)
    snakemake(project, "--unlock")  # the killed run could not release its lock (README)
    snakemake(project)
    for name in COLLECTED:
        a = (project / f"results/digits/{name}.parquet").read_bytes()
        assert a == (snakemake_project / f"results/digits/{name}.parquet").read_bytes(), name
    assert _no_partial_files(project) == []
    # a factor removed from params leaves no stale row
    snakemake(project, "--config", "scale={factors: [16]}")
    assert pq.read_table(project / "results/digits/sweep.parquet").column("factor").to_pylist() == [
        16.0
    ]
    assert set(
        pq.read_table(project / "results/digits/layers.parquet").column("factor").to_pylist()
    ) == {16.0}


def test_every_output_has_exactly_one_writer(snakemake_project):
    out = snakemake(snakemake_project, "--summary").stdout
    files = [line.split("\t")[0] for line in out.splitlines()[1:] if line.strip()]
    assert files and len(files) == len(set(files))
    evaluate_outputs = [f for f in files if "/scale/factor_" in f]
    assert len(evaluate_outputs) == 2 * 4
