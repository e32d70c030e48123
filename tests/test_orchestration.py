"""Code changes rerun what they touch, in both engines, and the engines can be mixed."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import BIN, env, init_dvc, make_project, snakemake
from test_pipeline import job_counts

pytestmark = [pytest.mark.integration, pytest.mark.beside]

AFTER_NORMALISE = {
    "normalise": 1,
    "convert": 1,
    "evaluate": 2,
    "refine": 1,
    "collect": 1,
    "report": 1,
    "export": 1,
    "all": 1,
}
# an edit that changes what `normalise` computes: the percentile mapped to 1 moves
NORMALISE_EDIT = """

_normalise = normalise


def normalise(model, batches, percentile, *args, **kwargs):
    return _normalise(model, batches, percentile * 0.99, *args, **kwargs)
"""


def _dvc(project, *args: str, own_code: bool = False) -> subprocess.CompletedProcess:
    """DVC in ``project``; with ``own_code`` the stages run the project's copy of the package."""
    e = env()
    if own_code:
        e["PYTHONPATH"] = str(project / "src")
    proc = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=project, env=e, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _nothing_to_do(project) -> None:
    out = snakemake(project, "-n").stdout
    assert "Nothing to be done" in out, out


def test_code_changes_rerun_what_they_touch_in_both_engines(tmp_path):
    project = make_project(tmp_path)
    init_dvc(project)
    _dvc(project, "repro", "-q")

    # Mixing: DVC checks outputs out with fresh timestamps in no useful order; the one
    # command of README ("Mixing the engines") makes Snakemake take them as current.
    for outputs in ("data/digits", "models", "results"):
        subprocess.run(["rm", "-rf", str(project / outputs)], check=True)
    _dvc(project, "checkout", "-q")
    assert job_counts(snakemake(project, "-n").stdout), "expected a plan after dvc checkout"
    snakemake(project, "--touch")
    _nothing_to_do(project)

    # README.md and the tests are no stage's code
    with (project / "README.md").open("a") as readme:
        readme.write("\nA note.\n")
    (project / "tests/test_pipeline.py").write_text("# changed\n")
    _nothing_to_do(project)
    assert "up to date" in _dvc(project, "status").stdout

    # an edit of normalise.py reruns normalise and everything after it
    with (project / "src/spikescale/normalise.py").open("a") as source:
        source.write(NORMALISE_EDIT)
    for triggers in ([], ["--rerun-triggers", "code"]):
        out = snakemake(project, "-n", *triggers).stdout
        assert job_counts(out) == AFTER_NORMALISE, out
        assert "src/spikescale/normalise.py" in out
    status = json.loads(_dvc(project, "status", "--json").stdout)
    assert set(status) == {"normalise"}, status
    assert status["normalise"] == [{"changed deps": {"src/spikescale/normalise.py": "modified"}}]
    out = _dvc(project, "repro", own_code=True).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {
        "normalise",
        "convert",
        "evaluate@4",
        "evaluate@16",
        "refine",
        "collect",
        "report",
        "export",
    }, out

    # and Snakemake, told that DVC's outputs are current, has nothing left to do
    snakemake(project, "--touch")
    _nothing_to_do(project)
