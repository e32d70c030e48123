"""benchmarks/pipeline.py keeps working: its --tiny self-test runs the whole pipeline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.integration
@pytest.mark.beside
def test_pipeline_benchmark_runs_every_stage_and_reports_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/pipeline.py"), "--tiny"]
        + ["--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "setup: 50 files" in out
    for job in ("events", "frames", "train", "normalise", "convert", "evaluate 4", "collect"):
        assert f"\n{job} " in out, job
    assert "end to end (snakemake):" in out and "frames/s" in out
    assert "<- recommended" in out
    assert not (tmp_path / "work").exists()  # removed without --keep
