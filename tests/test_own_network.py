"""Your own network through the real Snakemake and DVC: the worked example, checkpoint
import, reruns when the network or checkpoint changes, bad networks refused before any
job, and biases rescaled to the SNN's time step."""

from __future__ import annotations

import json
import re
import time

import pyarrow.parquet as pq
import pytest
import torch

from conftest import BIN, make_project, run, snakemake

pytestmark = pytest.mark.integration

EXAMPLE = "examples.strided_bn:build"
OWN = {"model": {"factory": EXAMPLE}, "conversion": {"max_pool": "average"}}


def job_counts(dry_run_output: str) -> dict[str, int]:
    table = dry_run_output.split("Job stats:")[-1] if "Job stats:" in dry_run_output else ""
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
        if m.group(1) != "total"
    }


@pytest.fixture(scope="module")
def example_project(tmp_path_factory):
    """The reduced pipeline on examples/strided_bn.py, run once by Snakemake."""
    project = make_project(tmp_path_factory.mktemp("own"), OWN)
    snakemake(project)
    return project


def test_example_network_runs_the_whole_pipeline(example_project):
    import nir

    results = example_project / "results/digits"
    sweep = pq.read_table(results / "sweep.parquet").to_pylist()
    assert [r["factor"] for r in sweep] == [4.0, 16.0]
    assert all(0 <= r["snn_accuracy"] <= 1 and r["samples"] == 50 for r in sweep)
    training = json.loads((example_project / "models/digits/training.json").read_text())
    assert training["imported"] is False and len(training["history"]) == 1
    # biases divided by the SNN steps in a training frame: 300 ms / 10 bins / 1 ms, a little
    # less because a recording spans its first to its last event
    layers = json.loads((example_project / "models/digits/snn_layers.json").read_text())
    assert 28 < layers["bias_rescaling"] < 30
    assert layers["conversion"]["max_pool"] == "average"
    blob = torch.load(example_project / "models/digits/snn.pt", weights_only=True)
    assert blob["bias_rescaling"] == layers["bias_rescaling"]
    assert blob["factory"] == {"factory": EXAMPLE, "input_shape": [2, 34, 34], "classes": 10}
    kinds = [layer["type"] for layer in blob["layers"]]
    assert kinds.count("Conv2d") == 3 and kinds.count("Linear") == 2
    assert "MaxPool2d" not in kinds and blob["layers"][0]["stride"] == [2, 2]
    graph = nir.read(results / "snn_recommended.nir")
    node_kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert node_kinds.count("IF") == 5 and node_kinds.count("Conv2d") == 3


def test_checkpoint_import_and_network_edits_rerun_train(example_project):
    project = example_project
    trained = json.loads((project / "models/digits/training.json").read_text())
    state = torch.load(project / "models/digits/cnn.pt", weights_only=True)["state_dict"]
    torch.save(state, project / "checkpoints/trained.pt")
    imported = "model={factory: " + EXAMPLE + ", checkpoint: checkpoints/trained.pt}"
    dry = snakemake(project, "-n", "--config", imported).stdout
    assert job_counts(dry)["train"] == 1
    snakemake(project, "--until", "train", "--config", imported)
    report = json.loads((project / "models/digits/training.json").read_text())
    assert report["imported"] is True and report["checkpoint"] == "checkpoints/trained.pt"
    assert report["cnn_test_accuracy"] == trained["cnn_test_accuracy"]
    assert report["history"] == []
    # a new checkpoint, then an edited network: train and everything after it rerun
    time.sleep(1)
    state["0.0.0.weight"] *= 1.5
    torch.save(state, project / "checkpoints/trained.pt")
    assert job_counts(snakemake(project, "-n", "--config", imported).stdout)["train"] == 1
    snakemake(project, "--until", "train", "--config", imported)
    assert "train" not in job_counts(snakemake(project, "-n", "--config", imported).stdout)
    time.sleep(1)
    source = project / "examples/strided_bn.py"
    source.write_text(source.read_text() + "\n# edited\n")
    counts = job_counts(snakemake(project, "-n", "--config", imported).stdout)
    assert counts["train"] == 1 and counts["convert"] == 1 and counts["evaluate"] == 2


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"model": {"factory": EXAMPLE}},
            "layer 0.1.3 (MaxPool2d): max pooling of spikes is not max pooling of rates",
        ),
        (
            {"model": {"factory": "examples.missing:build"}},
            "cannot import module 'examples.missing'",
        ),
        (
            {**OWN, "model": {"factory": EXAMPLE, "checkpoint": "checkpoints/none.pt"}},
            "model.checkpoint 'checkpoints/none.pt': the file does not exist",
        ),
    ],
    ids=["max-pool", "no-module", "no-checkpoint"],
)
def test_bad_network_fails_before_any_job(tmp_path, override, message):
    project = make_project(tmp_path, override)
    proc = snakemake(project, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (project / "logs").exists() and not (project / "data/digits").exists()
    check = run([str(BIN / "spikescale"), "check"], project, check=False)
    assert check.returncode == 2 and message in check.stderr


def test_dvc_reruns_train_for_an_edited_network_or_a_new_checkpoint(tmp_path):
    from conftest import init_dvc

    project = make_project(tmp_path, OWN)
    init_dvc(project)
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "-q", "train"], project)
    assert "up to date" in run([dvc, "status", "train"], project).stdout
    source = project / "examples/strided_bn.py"
    original = source.read_text()
    source.write_text(original + "\n# edited\n")
    assert set(json.loads(run([dvc, "status", "--json", "train"], project).stdout)) == {"train"}
    source.write_text(original)
    assert "up to date" in run([dvc, "status", "train"], project).stdout
    torch.save({"w": torch.zeros(1)}, project / "checkpoints/new.pt")
    assert set(json.loads(run([dvc, "status", "--json", "train"], project).stdout)) == {"train"}


def test_biases_rescaled_to_the_snn_time_step_recover_the_cnn_accuracy(tmp_path):
    """Built-in family with biases: divided by the SNN steps per training frame, the SNN
    reaches the CNN's accuracy; added at every 1 ms step as the CNN added them once per
    30 ms frame, they drown the input."""
    from spikescale.cli import main

    project = make_project(
        tmp_path,
        {
            "dataset": {"max_samples_per_class": 20},
            "training": {"epochs": 3, "bias": True},
            "evaluation": {"max_samples": 100},
        },
    )
    params = str(project / "params.yaml")
    data, models = project / "data/digits", project / "models"

    def stage(*args: str) -> None:
        assert main([args[0], "--params", params, *args[1:], "--quiet"]) == 0, args

    stage("events", "--out-dir", str(data / "events"))
    stage("frames", "--events-dir", str(data / "events"), "--out-dir", str(data / "frames"))
    stage(
        "train",
        *("--frames-dir", str(data / "frames"), "--events", str(data / "events/test.parquet")),
        *("--out", str(models / "cnn.pt"), "--report", str(models / "training.json")),
    )
    stage(
        "normalise",
        *("--cnn", str(models / "cnn.pt"), "--frames", str(data / "frames/train.npz")),
        *("--out", str(models / "norm.pt"), "--table", str(models / "norm.json")),
    )
    cnn_accuracy = json.loads((models / "training.json").read_text())["cnn_test_accuracy"]
    accuracy = {}
    for setting in ("auto", 1):
        text = (project / "params.yaml").read_text()
        (project / "params.yaml").write_text(
            re.sub(r"bias_rescaling: \S+", f"bias_rescaling: {setting}", text)
        )
        snn = models / f"snn_{setting}.pt"
        stage(
            "convert",
            *("--cnn", str(models / "norm.pt"), "--frames", str(data / "frames/train.npz")),
            *("--out", str(snn), "--summary", str(models / f"snn_{setting}.json")),
        )
        prefix = project / f"results/{setting}"
        stage(
            "evaluate",
            *("--snn", str(snn), "--events", str(data / "events/test.parquet")),
            *("--factor", "4", "--out-prefix", str(prefix)),
        )
        accuracy[setting] = pq.read_table(f"{prefix}.parquet")["snn_accuracy"][0].as_py()
    ratio = json.loads((models / "snn_auto.json").read_text())["bias_rescaling"]
    assert 28 < ratio < 30
    assert cnn_accuracy > 0.6
    # measured: CNN 0.76 (on all 200 test recordings), rescaled 0.85, unrescaled 0.16
    assert accuracy["auto"] >= cnn_accuracy - 0.1, (cnn_accuracy, accuracy)
    assert accuracy[1] < accuracy["auto"] - 0.3, (cnn_accuracy, accuracy)
