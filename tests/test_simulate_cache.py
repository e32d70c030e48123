"""The event-driven kernels' numba cache follows every source file of the package.

numba keys a cached function on its own file, but the sample loop (``run.py``) inlines the
kernels of ``kernels.py`` and ``neuron.py``; :mod:`spikescale.simulate.event_driven.jit`
adds a hash of all the package's sources to the key. Here a copy of the package is
compiled and cached, then ``neuron.py`` alone is edited so that no neuron can spike: the
next process must compile afresh and see no spikes, not load the old code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.beside  # two cold compiles in subprocesses, about 40 s

SIMULATE = """
import numpy as np, sinabs.layers as sl, torch
from torch import nn
from spikescale.simulate import simulate
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), sl.IAFSqueeze(batch_size=1)).eval()
torch.nn.init.constant_(model[0].weight, 0.5)
out = simulate(model, torch.ones(1, 4, 1, 5, 5), np.array([3]), backend="fast")
print(int(out.layer_counts[-1].sum()))
"""


def test_editing_one_kernel_module_recompiles(tmp_path):
    shutil.copytree(
        ROOT / "src" / "spikescale",
        tmp_path / "src" / "spikescale",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    env.pop("NUMBA_CACHE_DIR", None)  # the cache beside the copied sources

    def spikes() -> int:
        run = subprocess.run(
            [sys.executable, "-c", SIMULATE], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return int(run.stdout.split()[-1])

    package = tmp_path / "src" / "spikescale" / "simulate" / "event_driven"
    assert spikes() > 0
    assert list(package.glob("__pycache__/run.simulate_samples-*.nbi")), "nothing was cached"
    neuron = package / "neuron.py"
    text = neuron.read_text()
    edited = text.replace("spikes = v >= nrn.first_spiking_v\n", "spikes = v < v\n")
    assert edited != text
    neuron.write_text(edited)
    assert spikes() == 0
