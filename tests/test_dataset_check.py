"""A missing tonic dataset is refused before any job, with the message the stage gives."""

from __future__ import annotations

import pytest
import yaml

from conftest import BIN, make_project, run, snakemake


def _params(project, **dataset) -> None:
    path = project / "params.yaml"
    values = yaml.safe_load(path.read_text())
    values["dataset"].update(dataset)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def _error(proc, command: str) -> str:
    prefix = f"spikescale {command}: error: "
    assert proc.returncode == 2 and proc.stderr.startswith(prefix), proc.stderr
    return proc.stderr.removeprefix(prefix)


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def test_check_refuses_a_missing_dataset_with_the_stages_message(project):
    _params(project, name="nmnist")
    spikescale = str(BIN / "spikescale")
    check = _error(run([spikescale, "check"], project, check=False), "check")
    assert check.startswith("N-MNIST train split not found under root data/raw. Looked for:")
    assert "data/raw/NMNIST/Train (missing)" in check
    assert "data/raw/NMNIST/train.zip (missing)" in check
    assert "<root>/NMNIST/Train/<digit 0-9>/*.bin" in check  # the layout
    assert "dataset.download: true" in check and "tonic downloads it from https://" in check
    stage = run([spikescale, "events", "--out-dir", "out"], project, check=False)
    assert _error(stage, "events") == check
    assert not (project / "out").exists()


def test_check_refuses_an_empty_split_folder(project):
    (project / "data/raw/NMNIST/Train").mkdir(parents=True)
    _params(project, name="nmnist")
    check = _error(run([str(BIN / "spikescale"), "check"], project, check=False), "check")
    assert "data/raw/NMNIST/Train (exists but holds no <digit 0-9>/*.bin" in check


def test_check_passes_with_download_or_data_or_digits(project):
    from fake_datasets import WRITERS

    spikescale = str(BIN / "spikescale")
    assert run([spikescale, "check"], project).returncode == 0  # digits: built in
    _params(project, name="nmnist", download=True)  # the stage downloads it
    assert run([spikescale, "check"], project).returncode == 0
    _params(project, download=False)
    for i, split in enumerate(("train", "test")):
        WRITERS["nmnist"](project / "data/raw", split, seed=i)
    assert run([spikescale, "check"], project).stdout.startswith("params.yaml: valid")


@pytest.mark.integration
def test_snakemake_refuses_a_missing_dataset_before_any_job(project):
    from fake_datasets import WRITERS

    proc = snakemake(project, "-n", "--config", "dataset={name: pokerdvs}", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "POKER-DVS train split not found under root data/raw" in text
    assert "data/raw/POKERDVS/pips_train (missing)" in text and "Expected layout" in text
    assert not (project / "logs").exists() and not (project / "data/pokerdvs").exists()
    for i, split in enumerate(("train", "test")):
        WRITERS["pokerdvs"](project / "data/raw", split, seed=i)
    proc = snakemake(project, "-n", "--config", "dataset={name: pokerdvs}")
    assert "rule events:" in proc.stdout
