"""`make gpu-check` refuses plainly where torch sees no GPU (the check itself needs one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


def test_gpu_check_says_there_is_no_gpu_and_fails():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "no CUDA GPU visible to torch" in proc.stderr


@pytest.mark.integration
def test_gpu_check_runs_its_comparison_with_the_cpu_as_the_other_device():
    """The script's whole flow, the CPU compared with itself, so that it keeps working."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu"]
        + ["--samples-per-class", "2", "--epochs", "1", "--factors", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "factor 4: predictions agree on 100.00% of 20 samples" in proc.stdout
    assert "evaluate 4 cpu" in proc.stdout
