"""The simulator's tests once more, with numba's bounds checks on.

The event-driven kernels index flat arrays at offsets that :mod:`spikescale.simulate.event_driven.
program` computes; a layout mistake would read or write the wrong memory silently. Here
``tests/test_simulate.py`` runs in a subprocess with ``NUMBA_BOUNDSCHECK=1`` and the
plain-loop twin of the SIMD helper (``SPIKESCALE_PLAIN_ACCUMULATE=1``; the LLVM IR helper
has no checks), so every index becomes an IndexError instead. The checked build is
compiled afresh and never cached (see :mod:`spikescale.simulate.event_driven.jit`); its numba
cache folder is a temporary one all the same. The random-network tests run on fewer
examples (``SPIKESCALE_TEST_EXAMPLES``) to keep the time modest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.beside  # a subprocess of one core, a few minutes


def test_simulator_tests_pass_with_bounds_checks(tmp_path):
    env = {
        **os.environ,
        "NUMBA_BOUNDSCHECK": "1",
        "SPIKESCALE_PLAIN_ACCUMULATE": "1",
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "SPIKESCALE_TEST_EXAMPLES": "20",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    cmd.append(str(ROOT / "tests" / "test_simulate.py"))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
