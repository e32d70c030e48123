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
