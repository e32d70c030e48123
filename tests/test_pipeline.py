"""The whole chain through the real Snakemake and the real DVC, on a reduced config."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import BIN, ROOT, make_project, run, snakemake

pytestmark = pytest.mark.integration

COLLECTED = ("sweep", "layers", "timecourse", "samples")


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a Snakemake dry run."""
    counts = {}
    table = dry_run_output.split("Job stats:")[-1] if "Job stats:" in dry_run_output else ""
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_snakemake_writes_every_result(snakemake_project):
    results = snakemake_project / "results/digits"
    sweep = pq.read_table(results / "sweep.parquet").to_pylist()
    assert [r["factor"] for r in sweep] == [4.0, 16.0]
    for row in sweep:
        assert 0 <= row["snn_accuracy"] <= 1
        assert row["dataset"] == "digits" and len(row["dataset_fingerprint"]) == 16
        assert row["samples"] == 50
    rec = json.loads((results / "recommendation.json").read_text())
    assert rec["recommended_factor"] in (4.0, 16.0)
    for name in ("accuracy", "pareto", "layer_rates", "timecourse"):
        assert (results / "plots" / f"{name}.png").stat().st_size > 1000
    logs = snakemake_project / "logs/digits/evaluate"
    assert {p.name for p in logs.glob("*.log")} == {"factor_4.log", "factor_16.log"}


def test_snakemake_and_dvc_results_are_byte_identical(snakemake_project, dvc_project):
    for name in COLLECTED:
        a = (snakemake_project / f"results/digits/{name}.parquet").read_bytes()
        b = (dvc_project / f"results/digits/{name}.parquet").read_bytes()
        assert a == b, f"{name}.parquet differs between snakemake and dvc repro"


def test_second_snakemake_run_has_nothing_to_do(snakemake_project):
    out = snakemake(snakemake_project, "-n").stdout
    assert "Nothing to be done" in out, out


def test_changing_factors_reruns_only_what_follows_evaluate(snakemake_project):
    out = snakemake(snakemake_project, "-n", "--config", "scale={factors: [4, 16, 32]}").stdout
    assert job_counts(out) == {
        "evaluate": 1,
        "refine": 1,
        "collect": 1,
        "report": 1,
        "export": 1,
        "all": 1,
    }, out


def test_changing_epochs_reruns_from_train_on(snakemake_project):
    out = snakemake(snakemake_project, "-n", "--config", "training={epochs: 2}").stdout
    assert job_counts(out) == {
        "train": 1,
        "normalise": 1,
        "convert": 1,
        "evaluate": 2,
        "refine": 1,
        "collect": 1,
        "report": 1,
        "export": 1,
        "all": 1,
    }, out


def test_config_override_reaches_the_stage(tmp_path):
    project = make_project(tmp_path)
    snakemake(project, "--config", "scale={factors: [8]}", "--until", "collect")
    sweep = pq.read_table(project / "results/digits/sweep.parquet")
    assert sweep.column("factor").to_pylist() == [8.0]


def test_dvc_is_clean_after_repro_and_tracks_params(dvc_project):
    dvc = str(BIN / "dvc")
    assert "up to date" in run([dvc, "status"], dvc_project).stdout
    params = dvc_project / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("epochs: 1", "epochs: 2"))
        status = run([dvc, "status", "--json"], dvc_project).stdout
        # train uses the section; collect records the hash of all params as provenance
        assert set(json.loads(status)) == {"train", "collect"}, status
    finally:
        params.write_text(original)


def test_dvc_repro_after_new_factor_runs_only_what_follows_evaluate(tmp_path):
    from conftest import init_dvc

    project = make_project(tmp_path)
    init_dvc(project)
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "-q"], project)
    params = project / "params.yaml"
    values = yaml.safe_load(params.read_text())
    values["scale"]["factors"].append(32)
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    out = run([dvc, "repro"], project).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {"evaluate@32", "refine", "collect", "report", "export"}, out
    sweep = pq.read_table(project / "results/digits/sweep.parquet")
    assert sweep.column("factor").to_pylist() == [4.0, 16.0, 32.0]


@pytest.mark.parametrize(
    "override, key",
    [
        ("dataset={name: mnist}", "dataset.name"),
        ("scale={factors: [0, 2]}", "scale.factors.0"),
        ("scale={factors: []}", "scale.factors"),
        ("evaluation={time_bin_us: -5}", "evaluation.time_bin_us"),
        ("normalisation={percentile: 100.5}", "normalisation.percentile"),
        ("normalisation={percentile: 0}", "normalisation.percentile"),
    ],
)
def test_invalid_params_fail_before_any_job(tmp_path, override, key):
    project = make_project(tmp_path)
    proc = snakemake(project, "--config", override, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert key in text, text
    written = {p.relative_to(project).as_posix() for p in (project / "data").rglob("*")}
    assert written == {"data/raw", "data/raw/README.md"}, written  # only the checkout's own
    assert not (project / "logs").exists()


def test_snakemake_lint_is_clean():
    proc = run([str(BIN / "snakemake"), "--lint"], ROOT, check=False)
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr
    )


def _snakemake_edges(cwd) -> set[tuple[str, str]]:
    dot = run([str(BIN / "snakemake"), "--rulegraph", "--cores", "1"], cwd).stdout
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    return {e for e in edges if "all" not in e}


def _dvc_edges(cwd) -> set[tuple[str, str]]:
    dot = run([str(BIN / "dvc"), "dag", "--dot"], cwd).stdout
    edges = re.findall(r'"([\w@.]+)" -> "([\w@.]+)"', dot)
    return {(a.split("@")[0], b.split("@")[0]) for a, b in edges}


def test_snakemake_and_dvc_dags_are_equal(tmp_path):
    from conftest import init_dvc

    project = make_project(tmp_path)
    init_dvc(project)
    assert _snakemake_edges(project) == _dvc_edges(project)


def test_snakemake_report_holds_every_plot_with_its_caption(snakemake_project):
    snakemake(snakemake_project, "--report", "report.html")
    html = (snakemake_project / "report.html").read_text(errors="replace")
    for name in ("accuracy.png", "pareto.png", "layer_rates.png", "timecourse.png"):
        assert name in html
    assert "Pareto front" in html and "latency a factor buys" in html


def test_dvc_metrics_and_plots_read_the_results(dvc_project):
    dvc = str(BIN / "dvc")
    metrics = run([dvc, "metrics", "show", "--json"], dvc_project).stdout
    assert "recommended_factor" in metrics and "cnn_test_accuracy" in metrics
    out = run([dvc, "plots", "show", "--json"], dvc_project).stdout
    assert "sweep.csv" in out and "timecourse.csv" in out


def test_nir_export_reads_back(snakemake_project):
    import nir

    graph = nir.read(snakemake_project / "results/digits/snn_recommended.nir")
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("IF") == 4 and kinds.count("Conv2d") == 3 and "Affine" in kinds
    factor = json.loads((snakemake_project / "results/digits/recommendation.json").read_text())[
        "recommended_factor"
    ]
    assert factor in (4.0, 16.0)


def test_refined_factors_join_the_sweep(tmp_path):
    project = make_project(tmp_path, {"scale": {"factors": [1, 4], "refine_rounds": 1}})
    snakemake(project, "--until", "collect")
    sweep = pq.read_table(project / "results/digits/sweep.parquet").to_pylist()
    refined = [r["factor"] for r in sweep if r["refined"]]
    # on the reduced config factor 1 is far below 4: one round bisects at their geometric midpoint
    assert refined == [2.0]
    assert [r["factor"] for r in sweep] == [1.0, 2.0, 4.0]
    layers = pq.read_table(project / "results/digits/layers.parquet")
    assert 2.0 in layers.column("factor").to_pylist()


def test_compare_plots_several_runs(snakemake_project, tmp_path):
    sweep = snakemake_project / "results/digits/sweep.parquet"
    out = tmp_path / "compare.png"
    run(
        [
            str(BIN / "spikescale"),
            "compare",
            str(sweep),
            str(sweep),
            "--labels",
            "a,b",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run(
        [str(BIN / "spikescale"), "compare", str(sweep), "--labels", "a,b", "--out", str(out)],
        tmp_path,
        check=False,
    )
    assert bad.returncode == 2 and "2 labels for 1 sweep files" in bad.stderr


@pytest.mark.parametrize("name, downsample", [("nmnist", 1), ("dvsgesture", 4), ("pokerdvs", 2)])
def test_tonic_dataset_runs_the_whole_pipeline(tmp_path, name, downsample):
    """A partial copy in the dataset's own on-disk layout, read offline, through every rule;
    the larger sensors downsampled (35 / 2: a partial block at the edge), in frames and SNN
    input alike (a mismatch would stop evaluate)."""
    from fake_datasets import SENSORS, WRITERS
    from spikescale.event_store import read_events

    project = make_project(
        tmp_path, {"dataset": {"name": name}, "frames": {"downsample": downsample}}
    )
    raw = project / "data" / "raw"
    written = {
        split: WRITERS[name](raw, split, seed=i) for i, split in enumerate(("train", "test"))
    }
    snakemake(project)

    test = read_events(project / f"data/{name}/events/test.parquet")
    assert len(test) == len(written["test"]) and test.sensor_size == SENSORS[name]
    results = project / "results" / name
    assert pq.read_table(results / "sweep.parquet").column("factor").to_pylist() == [4.0, 16.0]
    samples = pq.read_table(results / "samples.parquet")
    assert samples.num_rows == 2 * len(test)
    assert (
        samples.column("input_events").to_pylist()[: len(test)] == test.events_per_sample.tolist()
    )
    layers = pq.read_table(results / "layers.parquet").to_pylist()
    width, height, _ = SENSORS[name]
    height, width = -(-height // downsample), -(-width // downsample)
    assert layers[0]["layer"] == "conv1" and layers[0]["neurons"] == 8 * height * width
    assert layers[3]["neurons"] == len(test.classes)  # the read-out has one neuron per class
    assert (results / "snn_recommended.nir").is_file()
