"""The command line, collect's recommendation, cost and energy, and the results' provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BIN, env
from spikescale import __version__
from spikescale.cli import build_parser
from spikescale.collect import build_sweep, format_summary, recommend, with_energy
from spikescale.export import export_factor
from spikescale.io import write_json
from spikescale.params import EnergyParams
from spikescale.provenance import code_hash, git_commit

SPIKESCALE = str(BIN / "spikescale")


def spikescale(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SPIKESCALE, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------- synthetic results

FACTORS = [1.0, 4.0, 16.0, 64.0]


def summary_table(accuracy: list[float], synops: list[float]) -> pa.Table:
    """The summary parts of `evaluate` for FACTORS (only the columns collect reads)."""
    n = len(accuracy)
    return pa.table(
        {
            "factor": FACTORS[:n],
            "samples": [100] * n,
            "snn_accuracy": accuracy,
            "silent_fraction": [0.0] * n,
            "spikes_per_sample": [s / 10 for s in synops],
            "synops_per_sample": synops,
        }
    )


def layers_table(synops_per_layer: list[list[float]], macs_per_frame: list[int]) -> pa.Table:
    rows = []
    for factor, synops in zip(FACTORS, synops_per_layer):
        for position, (s, m) in enumerate(zip(synops, macs_per_frame)):
            rows.append(
                {
                    "factor": factor,
                    "layer": f"l{position}",
                    "position": position,
                    "silent_neuron_fraction": 0.9,
                    "saturated_neuron_fraction": 0.0,
                    "synops_per_sample": s,
                    "cnn_macs_per_frame": m,
                    "activation_spike_correlation": 0.25 if position else None,
                }
            )
    return pa.Table.from_pylist(rows)


def results_dir(tmp_path: Path, accuracy: list[float], cnn_accuracy: float) -> Path:
    """A results folder as `collect` writes it, from synthetic factor tables."""
    synops = [1e5 * f for f in FACTORS[: len(accuracy)]]
    sweep, rec = build_sweep(summary_table(accuracy, synops), cnn_accuracy, 1.0, 10.0)
    layers = layers_table([[s / 2, s / 2] for s in synops], [1_000_000, 10_000])
    sweep, layers = with_energy(sweep, layers, 10.0, EnergyParams())
    pq.write_table(sweep, tmp_path / "sweep.parquet")
    pq.write_table(layers, tmp_path / "layers.parquet")
    write_json(rec, tmp_path / "recommendation.json")
    return tmp_path


# --------------------------------------------------------------------------- recommendation


def test_recommendation_within_the_gap_names_a_factor():
    factors, accuracy = np.array(FACTORS), np.array([0.1, 0.9, 0.95, 0.95])
    rec = recommend(factors, accuracy, 1.0, cnn_accuracy=0.98, max_gap_pp=10.0)
    assert rec["conversion_failed"] is False and rec["recommended_factor"] == 16.0
    assert rec["gap_pp"] == pytest.approx(3.0)
    # exactly at the limit still counts as working
    assert not recommend(factors, accuracy, 1.0, 1.05, 10.0)["conversion_failed"]


def test_conversion_fails_when_the_best_factor_is_far_below_the_cnn():
    sweep, rec = build_sweep(summary_table([0.102, 0.102, 0.102, 0.40], [1, 2, 3, 4]), 0.984, 1, 10)
    assert rec["conversion_failed"] is True
    assert rec["recommended_factor"] is None and rec["recommended_accuracy"] is None
    assert rec["best_factor"] == 64.0 and rec["gap_pp"] == pytest.approx(58.4)
    assert "layers.parquet" in rec["message"] and "activation_spike_correlation" in rec["message"]
    assert sweep.column("recommended").to_pylist() == [False] * 4
    assert sweep.column("conversion_failed").to_pylist() == [True] * 4
    # a looser threshold accepts the same sweep
    _, loose = build_sweep(summary_table([0.102, 0.102, 0.102, 0.40], [1, 2, 3, 4]), 0.984, 1, 60)
    assert loose["conversion_failed"] is False and loose["recommended_factor"] == 64.0


def test_export_takes_the_best_factor_when_the_conversion_failed():
    _, failed = build_sweep(summary_table([0.1, 0.2, 0.3, 0.2], [1, 2, 3, 4]), 0.98, 1.0, 10.0)
    factor, note = export_factor(failed)
    assert factor == 16.0 and "conversion failed" in note and "best factor 16" in note
    _, fine = build_sweep(summary_table([0.1, 0.97, 0.98, 0.98], [1, 2, 3, 4]), 0.98, 1.0, 10.0)
    assert export_factor(fine) == (4.0, "exported the recommended factor 4")


# --------------------------------------------------------------------------- cost and energy


def test_cnn_cost_counts_every_frame_of_a_recording_and_energy_uses_the_parameters():
    synops = [1e6, 4e6, 16e6, 64e6]
    sweep, _ = build_sweep(summary_table([0.5, 0.9, 0.9, 0.9], synops), 0.9, 1.0, 10.0)
    layers = layers_table([[s / 4, 3 * s / 4] for s in synops], [2_000_000, 500_000])
    energy = EnergyParams(mac_pj=4.0, ac_pj=1.0)
    sweep, layers = with_energy(sweep, layers, 10.0, energy)
    # 2.5 M MACs a frame, 10 frames a recording: 25 M MACs, 100 uJ at 4 pJ each
    assert sweep.column("cnn_macs_per_recording").to_pylist() == [25e6] * 4
    assert sweep.column("cnn_energy_uj_per_recording").to_pylist() == pytest.approx([100.0] * 4)
    assert sweep.column("snn_energy_uj_per_recording").to_pylist() == pytest.approx(
        [1.0, 4.0, 16.0, 64.0]
    )
    assert sweep.column("snn_cheaper_than_cnn").to_pylist() == [True, True, True, True]
    first = layers.filter(pa.compute.equal(layers["factor"], 64.0)).to_pylist()
    assert [r["cnn_macs_per_recording"] for r in first] == [20e6, 5e6]
    assert [r["cnn_energy_uj_per_recording"] for r in first] == pytest.approx([80.0, 20.0])
    assert [r["snn_energy_uj_per_recording"] for r in first] == pytest.approx([16.0, 48.0])
    costly = with_energy(
        sweep.select(sweep.column_names[:11]),
        layers.select(layers.column_names[:8]),
        10.0,
        EnergyParams(mac_pj=1.0, ac_pj=2.0),
    )[0]
    assert costly.column("snn_cheaper_than_cnn").to_pylist() == [True, True, False, False]


# --------------------------------------------------------------------------- summary


def test_summary_says_when_the_recommended_factor_is_the_best(tmp_path):
    text = format_summary(results_dir(tmp_path, [0.1, 0.5, 0.95, 0.93], 0.96))
    last = text.splitlines()[-1]
    assert last == (
        "recommended factor: 16 (95.0%, the best accuracy; no smaller factor is within 1 pp of it)"
    )
    assert "16 " in text and "<- recommended" in text
    assert "CNN cost per recording: 1.01e+07 MACs, 46.46 uJ" in text
    assert "the SNN needs less energy at factors 1, 4, 16, 64" in text


def test_summary_names_a_smaller_recommended_factor_and_the_best(tmp_path):
    text = format_summary(results_dir(tmp_path, [0.1, 0.945, 0.95, 0.93], 0.96))
    assert text.splitlines()[-1] == (
        "recommended factor: 4 (94.5%, within 1 pp of the best, 95.0% at 16)"
    )


def test_summary_of_a_failed_conversion_points_at_the_layer_diagnostics(tmp_path):
    folder = results_dir(tmp_path, [0.1, 0.1, 0.2, 0.4], 0.984)
    proc = spikescale("summary", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "<- recommended" not in proc.stdout and "recommended factor" not in proc.stdout
    assert "conversion failed: the best SNN accuracy, 40.0% at factor 64, is 58.4 pp below" in (
        proc.stdout
    )
    assert "per-layer diagnostics at factor 64 (layers.parquet)" in proc.stdout
    assert "90.0%" in proc.stdout and "0.250" in proc.stdout


def test_accuracy_plot_says_when_the_conversion_failed(tmp_path):
    from spikescale.report import _columns, conversion_failed_title, plot_accuracy

    failed = _columns(results_dir(tmp_path, [0.1, 0.1, 0.2, 0.4], 0.984) / "sweep.parquet")
    title = conversion_failed_title(failed)
    assert title == "Conversion failed: best SNN 58.4 pp below the CNN (factor 64)"
    plot_accuracy(failed, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    fine = _columns(results_dir(tmp_path, [0.1, 0.9, 0.95, 0.95], 0.96) / "sweep.parquet")
    assert conversion_failed_title(fine) is None


def test_summary_of_a_missing_folder_names_the_file_and_the_command(tmp_path):
    proc = spikescale("summary", "results/nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "spikescale summary: error: results/nope/sweep.parquet does not exist: run the pipeline "
        "(snakemake --profile profiles/default, or dvc repro), or `spikescale collect` on "
        "finished factor results"
    ]


# --------------------------------------------------------------------------- command line


def test_version_names_the_package_version_and_code_hash():
    proc = spikescale("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"spikescale {__version__} (code hash {code_hash()}")
    assert f"git commit {git_commit() or 'none'}" in proc.stdout


def _subcommands(parser):
    action = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    return action.choices


def test_every_option_has_help_that_states_its_default():
    parser = build_parser()
    for name, sub in _subcommands(parser).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = formatter._get_help_string(action)
            assert action.help, f"{name} {action.option_strings}: no help"
            assert "default" in text or "(required)" in text, f"{name} {action.option_strings}"
    assert "(default: params.yaml)" in _subcommands(parser)["collect"].format_help()


@pytest.mark.parametrize("command", ["export", "report"])
def test_export_and_report_take_no_params(command):
    required = {
        "export": ["--snn", "a", "--recommendation", "b", "--out", "c"],
        "report": ["--results-dir", "a", "--out-dir", "b"],
    }
    proc = spikescale(command, *required[command], "--params", "params.yaml")
    assert proc.returncode == 2 and "unrecognized arguments: --params" in proc.stderr


def test_an_input_error_is_one_line_and_exit_2(tmp_path):
    proc = spikescale(
        "evaluate",
        "--params",
        "{}",
        "--snn",
        str(tmp_path / "snn.pt"),
        "--events",
        str(tmp_path / "test.parquet"),
        "--factor",
        "4",
        "--out-prefix",
        str(tmp_path / "f4"),
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"spikescale evaluate: error: input {tmp_path / 'snn.pt'} does not exist "
        "(run the stage that writes it first)"
    ]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("factor", ["0", "-2", "inf", "nan"])
def test_a_bad_factor_is_refused_before_reading_anything(tmp_path, factor):
    proc = spikescale(
        "evaluate",
        "--params",
        "{}",
        "--snn",
        "missing.pt",
        "--events",
        "missing.parquet",
        "--factor",
        factor,
        "--out-prefix",
        str(tmp_path / "f"),
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"spikescale evaluate: error: --factor must be a finite number > 0, got {float(factor)}"
    ]


def test_a_bad_parameter_is_one_line_per_key_and_exit_2():
    proc = spikescale("check", "--params", '{"scale": {"factors": [0]}}')
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "scale.factors.0" in proc.stderr


def test_an_unexpected_error_keeps_its_traceback(tmp_path):
    """A ValueError from inside numpy is a bug, not bad input: it must not be swallowed."""
    code = (
        "import sys, numpy as np, spikescale.collect as c\n"
        "from spikescale.cli import main\n"
        "c.format_summary = lambda d: np.zeros(3).reshape(2, 2)\n"
        "sys.exit(main(['summary', 'x']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "cannot reshape array" in proc.stderr


def test_normalisation_draws_the_same_frames_as_before_and_its_seed_changes_them():
    from spikescale.normalise import sample_indices

    before = np.sort(np.random.default_rng(0).permutation(1000)[:50])  # cli.py as of 723e33d
    assert np.array_equal(sample_indices(1000, 50, seed=0), before)  # normalisation.seed: 0
    assert np.array_equal(sample_indices(10, 50, seed=0), np.arange(10))
    other = sample_indices(1000, 50, seed=1)
    assert not np.array_equal(other, before) and np.array_equal(other, np.sort(other))


# --------------------------------------------------------------------------- provenance


def _package(root: Path) -> Path:
    pkg = root / "src" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "mod.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code\n")
    return pkg


def test_code_hash_follows_the_source_and_nothing_else(tmp_path):
    pkg = _package(tmp_path / "a")
    first = code_hash(pkg)
    assert len(first) == 16
    assert code_hash(_package(tmp_path / "b")) == first  # where it lies does not matter
    (pkg / "notes.txt").write_text("changed\n")
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    code_hash.cache_clear()
    assert code_hash(pkg) == first
    (pkg / "sub" / "mod.py").write_text("y = 3\n")
    code_hash.cache_clear()
    assert code_hash(pkg) != first
    (pkg / "sub" / "mod.py").rename(pkg / "sub" / "other.py")  # same bytes, another name
    code_hash.cache_clear()
    renamed = code_hash(pkg)
    (pkg / "sub" / "other.py").rename(pkg / "sub" / "mod.py")
    code_hash.cache_clear()
    assert renamed != code_hash(pkg)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_is_the_package_checkout_and_says_when_it_differs(tmp_path):
    repo = tmp_path / "repo"
    pkg = _package(repo)
    assert git_commit(pkg) is None  # not a git checkout
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pkg")
    head = _git(repo, "rev-parse", "HEAD")
    git_commit.cache_clear()
    assert git_commit(pkg) == head
    (repo / "README").write_text("outside the package: the package is unchanged\n")
    git_commit.cache_clear()
    assert git_commit(pkg) == head
    (pkg / "new.py").write_text("z = 1\n")  # untracked source
    git_commit.cache_clear()
    assert git_commit(pkg) == f"{head}-dirty"
    (pkg / "new.py").unlink()
    (pkg / "__init__.py").write_text("x = 2\n")
    git_commit.cache_clear()
    assert git_commit(pkg) == f"{head}-dirty"
    # an untracked (e.g. ignored, installed) copy inside the repository has no commit
    copy = _package(repo / "venv")
    (repo / ".gitignore").write_text("venv/\n")
    git_commit.cache_clear()
    assert git_commit(copy) is None


@pytest.mark.integration
def test_every_result_row_names_the_code_it_came_from(snakemake_project, dvc_project):
    """Both engines, the DVC run in a fresh git repository of its own: the commit is the
    package's, derived from where the package lies, not from the working directory."""
    own_head = _git(dvc_project, "rev-parse", "HEAD")
    for project in (snakemake_project, dvc_project):
        for name in ("sweep", "layers", "timecourse", "samples"):
            table = pq.read_table(project / f"results/digits/{name}.parquet")
            assert set(table.column("code_hash").to_pylist()) == {code_hash()}
            assert set(table.column("git_commit").to_pylist()) == {git_commit()}
            assert table.schema.field("git_commit").type == pa.string()
            assert set(table.column("spikescale_version").to_pylist()) == {__version__}
    assert (git_commit() or "").removesuffix("-dirty") != own_head
    metrics = json.loads((dvc_project / "results/digits/metrics.json").read_text())
    assert metrics["conversion_failed"] in (True, False)
    assert metrics["cnn_energy_uj_per_recording"] > 0


@pytest.mark.integration
def test_export_writes_the_best_factor_when_the_conversion_failed(snakemake_project, tmp_path):
    import nir

    models = snakemake_project / "models/digits"
    rec = json.loads((snakemake_project / "results/digits/recommendation.json").read_text())
    rec.update(conversion_failed=True, recommended_factor=None, recommended_accuracy=None)
    write_json(rec, tmp_path / "recommendation.json")
    out = tmp_path / "snn.nir"
    proc = spikescale(
        "export",
        "--snn",
        str(models / "snn.pt"),
        "--recommendation",
        str(tmp_path / "recommendation.json"),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"exported the best factor {rec['best_factor']:g}" in proc.stdout
    assert "conversion failed" in proc.stdout
    assert "IF" in {type(n).__name__ for n in nir.read(out).nodes.values()}


@pytest.mark.integration
def test_collect_refuses_an_old_training_report_before_writing(snakemake_project, tmp_path):
    project = snakemake_project
    training = json.loads((project / "models/digits/training.json").read_text())
    del training["test_frames_per_recording"]
    write_json(training, tmp_path / "training.json")
    proc = spikescale(
        "collect",
        "--factor-dir",
        str(project / "results/digits/scale"),
        "--refine-prefix",
        str(project / "results/digits/refined"),
        "--training",
        str(tmp_path / "training.json"),
        "--snn",
        str(project / "models/digits/snn.pt"),
        "--events",
        str(project / "data/digits/events/test.parquet"),
        "--out-dir",
        str(tmp_path / "out"),
        cwd=project,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"spikescale collect: error: {tmp_path / 'training.json'} has no "
        "test_frames_per_recording (written by an older `spikescale train`): rerun the train stage"
    ]
    assert not (tmp_path / "out").exists()
