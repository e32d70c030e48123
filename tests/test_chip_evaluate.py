"""The chip variant inside the evaluate stage (hardware.target: speck)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from spikescale import chip
from spikescale.collect import build_sweep
from spikescale.evaluate import chip_tables, evaluate_factor, with_variant
from spikescale.event_store import EVENT_DTYPE, EventSet, write_events
from spikescale.model import Architecture, build_cnn, scale_first_layer, to_snn
from spikescale.params import ConversionParams, EvaluationParams, HardwareParams

ARCH = Architecture(2, 16, 16, 5, (4,), 3, True)
SPECK = HardwareParams(target="speck")


def _events(path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(100, 300, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    events = np.empty(total, EVENT_DTYPE)
    for i in range(n):
        events["t"][offsets[i] : offsets[i + 1]] = np.sort(rng.integers(0, 50_000, counts[i]))
    events["x"] = rng.integers(0, 16, total)
    events["y"] = rng.integers(0, 16, total)
    events["p"] = rng.integers(0, 2, total)
    labels = rng.integers(0, 5, n)
    write_events(EventSet(events, offsets, labels, (16, 16, 2), list(range(5)), {}), path)
    return path


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    cnn = build_cnn(ARCH).eval()
    return cnn, to_snn(cnn, ARCH, ConversionParams())


def _run(network, path, factor, backend):
    cnn, snn = network
    p = EvaluationParams(backend=backend, time_bin_us=5000, timecourse_points=3)
    return chip_tables(snn, cnn, ARCH, path, p, factor, SPECK, progress=False)


def test_chip_variant_is_the_discretised_network_and_both_backends_agree(tmp_path, network):
    path = _events(tmp_path / "test.parquet")
    fast = _run(network, path, 8.0, "fast")
    reference = _run(network, path, 8.0, "sinabs")
    for name in fast:
        assert fast[name].equals(reference[name]), name
    cnn, snn = network
    p = EvaluationParams(time_bin_us=5000, timecourse_points=3)
    variant = chip.discretised_variant(snn, 8.0)
    direct = evaluate_factor(
        variant.snn, scale_first_layer(cnn, 8.0), ARCH, path, p, 8.0, progress=False
    )
    assert (
        fast["summary"]["snn_accuracy"][0].as_py() == direct["summary"]["snn_accuracy"][0].as_py()
    )
    assert fast["samples"]["total_spikes"].equals(direct["samples"]["total_spikes"])
    summary = fast["summary"].to_pylist()[0]
    assert summary["variant"] == "speck" and summary["chip_fits"] is True
    assert summary["within_synops_limit"] is True and summary["chip_problems"] == ""
    layers = fast["layers"].to_pylist()
    assert [r["layer"] for r in layers] == ["conv1", "fc1"]
    for r in layers:
        assert r["fits_core"] and r["kernel_memory"] <= r["core_kernel_memory"]
        assert r["neuron_memory"] <= r["core_neuron_memory"]
    # chip synops use the core fan-out: every kernel entry a spike reaches
    fan = chip.core_fan_out(variant.snn, ARCH.input_shape)
    inputs = fast["samples"]["input_events"].to_numpy()
    assert layers[0]["synops_per_sample"] >= 0
    assert np.isclose(
        layers[0]["synops_per_sample"], inputs.mean() * fan[0].max(), rtol=1
    )  # order of magnitude: kernel entries per input event
    assert [d.threshold for d in variant.layers] == [r["chip_threshold"] for r in layers]


def test_peaks_are_the_busiest_time_bins_of_every_core(tmp_path, network):
    import functools

    from spikescale.binning import raster
    from spikescale.event_store import read_events
    from spikescale.simulate import simulate

    path = _events(tmp_path / "test.parquet")
    tables = _run(network, path, 8.0, "fast")
    layers = tables["layers"].to_pylist()
    assert [r["peak_synops_from"] for r in layers] == ["time_bins", "time_bins"]
    # recounted per 5 ms bin: input events times the core fan-out of the discretised
    # network for conv1, conv1's spikes per bin (the sinabs backend) times its fan-out for fc1
    _, snn = network
    variant = chip.discretised_variant(snn, 8.0).snn
    fan = chip.core_fan_out(variant, ARCH.input_shape)
    steps = tables["summary"]["steps"][0].as_py()
    grid, _ = raster(read_events(path), 5000, steps)
    sinabs = functools.partial(simulate, backend="sinabs")
    per_bin = chip.synops_per_step(variant, torch.from_numpy(grid), fan, sinabs, 2**12)
    first = np.einsum("btchw,chw->bt", grid.astype(np.float64), fan[0])
    assert np.array_equal(per_bin[:, :, 0], first)
    for i, r in enumerate(layers):  # the bins add up to the per-sample counts
        assert per_bin[:, :, i].sum(1).mean() == pytest.approx(r["synops_per_sample"], rel=1e-12)
        assert r["peak_synops_per_second"] == pytest.approx(per_bin[:, :, i].max() / 0.005)
        assert r["peak_synops_per_second"] >= r["mean_synops_per_second"] > 0
    summary = tables["summary"].to_pylist()[0]
    busiest = max(layers, key=lambda r: r["peak_synops_per_second"])
    assert summary["peak_synops_layer"] == busiest["layer"]
    assert summary["peak_synops_from"] == "time_bins"


def test_the_rate_limit_is_the_hardware_parameter(tmp_path, network):
    cnn, snn = network
    path = _events(tmp_path / "test.parquet", n=4)
    p = EvaluationParams(time_bin_us=10_000, timecourse_points=2)
    low = HardwareParams(target="speck", synops_per_second_per_core=1000.0)
    tables = chip_tables(snn, cnn, ARCH, path, p, 4.0, low, progress=False)
    summary = tables["summary"].to_pylist()[0]
    assert summary["synops_limit_per_second_per_core"] == 1000.0
    assert summary["within_synops_limit"] is False and summary["chip_fits"] is True
    assert "conv1: peak" in summary["chip_problems"]
    assert "hardware.synops_per_second_per_core" in summary["chip_problems"]
    assert tables["layers"]["over_synops_limit"].to_pylist()[0] is True
    # recorded in the recommendation; nothing within the limit, so nothing recommended
    floats = with_variant(
        evaluate_factor(
            scale_first_layer(snn, 4.0),
            scale_first_layer(cnn, 4.0),
            ARCH,
            path,
            p,
            4.0,
            progress=False,
        ),
        "float",
    )
    summary = pa.concat_tables([floats["summary"], tables["summary"]], promote_options="default")
    _, rec = build_sweep(summary, 0.9, 1.0, 50.0)
    assert rec["synops_limit_per_second_per_core"] == 1000.0
    assert rec["recommended_factor"] is None and "hardware.synops" in rec["message"]
    with pytest.raises(ValueError, match="synops_per_second_per_core"):
        HardwareParams(target="speck", synops_per_second_per_core=0)


def test_a_layer_too_large_for_any_core_is_named(tmp_path):
    arch = Architecture(2, 16, 16, 5, (1024,), 3, True)
    torch.manual_seed(0)
    cnn = build_cnn(arch).eval()
    snn = to_snn(cnn, arch, ConversionParams())
    path = _events(tmp_path / "test.parquet", n=3)
    p = EvaluationParams(time_bin_us=10_000, timecourse_points=2)
    tables = chip_tables(snn, cnn, arch, path, p, 1.0, SPECK, progress=False)
    summary = tables["summary"].to_pylist()[0]
    assert summary["chip_fits"] is False
    assert "fc1" in summary["chip_problems"] or "conv1" in summary["chip_problems"]
    assert not all(tables["layers"]["fits_core"].to_pylist())


def _summary(factor, variant, accuracy, fits=None, within=None):
    row = {
        "factor": factor,
        "variant": variant,
        "snn_accuracy": accuracy,
        "synops_per_sample": 10.0 * factor,
        "chip_fits": fits,
        "within_synops_limit": within,
        "chip_problems": None if fits is None else ("" if fits else "conv1: too big"),
        "synops_limit_per_second_per_core": None if fits is None else 1e8,
    }
    return row


def test_recommendation_with_a_chip_is_among_chip_rows_that_fit():
    rows = []
    for f, acc, chip_acc, fits in [(1, 0.5, 0.4, True), (2, 0.9, 0.85, False), (4, 0.9, 0.8, True)]:
        rows += [_summary(f, "float", acc), _summary(f, "speck", chip_acc, fits, True)]
    sweep, rec = build_sweep(pa.Table.from_pylist(rows), 0.9, 1.0, 50.0)
    assert rec["variant"] == "speck" and rec["recommended_factor"] == 4.0
    assert rec["float_recommendation"]["recommended_factor"] == 2.0
    assert "maps onto the chip" in rec["restricted_to"]
    assert rec["synops_limit_per_second_per_core"] == 1e8
    chosen = [(r["factor"], r["variant"]) for r in sweep.to_pylist() if r["recommended"]]
    assert chosen == [(4.0, "speck")]


def test_with_variant_marks_every_row():
    tables = with_variant({"a": pa.table({"factor": [1.0, 2.0]})}, "float")
    assert tables["a"].column_names == ["factor", "variant"]


_STAGE_GUARD = r"""
import json, sys
events = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec"):
        events.append([event, repr(args)])
    elif event == "import" and (args[0] == "samna" or args[0].startswith(("samna.",
            "sinabs.backend.dynapcnn"))):
        events.append([event, args[0]])
sys.addaudithook(hook)
sys.path.insert(0, sys.argv[2])
import test_chip_evaluate as t
import torch
torch.manual_seed(0)
cnn = t.build_cnn(t.ARCH).eval()
snn = t.to_snn(cnn, t.ARCH, t.ConversionParams())
for backend in ("fast", "sinabs"):
    p = t.EvaluationParams(backend=backend, time_bin_us=10_000, timecourse_points=2)
    tables = t.chip_tables(snn, cnn, t.ARCH, sys.argv[1], p, 4.0, t.SPECK, progress=False)
loaded = sorted(m for m in sys.modules if m == "samna" or m.startswith(("samna.",
    "sinabs.backend.dynapcnn")))
print(json.dumps({"events": events, "loaded": loaded, "rows": tables["summary"].num_rows}))
"""


def test_the_chip_evaluation_starts_no_pip_and_imports_no_samna(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    path = _events(tmp_path / "test.parquet", n=4)
    out = subprocess.run(
        [sys.executable, "-c", _STAGE_GUARD, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["rows"] == 1
    # platform's `uname -p` may run; no pip, no samna import
    assert not [e for e in seen["events"] if "pip" in e[1] or e[0] == "import"], seen["events"]
    assert seen["loaded"] == []


def test_report_draws_float_and_chip_rows(tmp_path, network):
    import pyarrow.parquet as pq

    from spikescale.report import run_report

    cnn, snn = network
    path = _events(tmp_path / "test.parquet", n=4)
    p = EvaluationParams(time_bin_us=10_000, timecourse_points=2)
    parts = []
    for factor in (1.0, 4.0):
        floats = with_variant(
            evaluate_factor(
                scale_first_layer(snn, factor),
                scale_first_layer(cnn, factor),
                ARCH,
                path,
                p,
                factor,
                progress=False,
            ),
            "float",
        )
        on_chip = chip_tables(snn, cnn, ARCH, path, p, factor, SPECK, progress=False)
        parts += [floats, on_chip]
    tables = {
        name: pa.concat_tables([t[name] for t in parts], promote_options="default")
        for name in parts[0]
    }
    sweep, rec = build_sweep(tables["summary"], 0.5, 1.0, 100.0)
    sweep = sweep.append_column("snn_energy_uj_per_recording", pa.array([0.0] * sweep.num_rows))
    for name, table in (("sweep", sweep), ("layers", tables["layers"])):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    pq.write_table(tables["timecourse"], tmp_path / "timecourse.parquet")
    written = run_report(tmp_path, tmp_path / "plots")
    assert all(w.stat().st_size > 0 for w in written)
    assert rec["variant"] == "speck"
    assert sweep.column("variant").to_pylist() == ["float", "speck"] * 2


def test_snakemake_run_with_a_speck_target_writes_chip_rows(tmp_path):
    import json

    import pyarrow.parquet as pq

    from conftest import make_project, snakemake

    project = make_project(tmp_path, {"hardware": {"target": "speck"}})
    snakemake(project, "--until", "report", "export")
    results = project / "results/digits"
    sweep = pq.read_table(results / "sweep.parquet").to_pylist()
    assert [(r["factor"], r["variant"]) for r in sweep] == [
        (4.0, "float"),
        (4.0, "speck"),
        (16.0, "float"),
        (16.0, "speck"),
    ]
    for r in sweep:
        chip_row = r["variant"] == "speck"
        assert (r["chip_fits"] is not None) == chip_row
        assert (r["within_synops_limit"] is not None) == chip_row
    layers = pq.read_table(results / "layers.parquet").to_pylist()
    speck = [r for r in layers if r["variant"] == "speck"]
    assert speck and all(r["kernel_memory"] > 0 and r["fits_core"] is not None for r in speck)
    rec = json.loads((results / "recommendation.json").read_text())
    assert rec["variant"] == "speck" and "maps onto the chip" in rec["restricted_to"]
    assert "float_recommendation" in rec
    assert rec["synops_limit_per_second_per_core"] == 1e8  # params.yaml's placeholder
    assert {r["synops_limit_per_second_per_core"] for r in sweep if r["variant"] == "speck"} == {
        1e8
    }
    assert {r["peak_synops_from"] for r in speck} == {"time_bins"}
    assert (results / "plots/accuracy.png").stat().st_size > 0
    # export: the chip's recommended factor, discretised, beside the float NIR; the same
    # bytes when written again by another process
    import nir

    chip_nir = results / "snn_recommended_chip.nir"
    graph = nir.read(chip_nir)
    factor = rec["recommended_factor"] or rec["best_factor"]
    assert graph.metadata["target"] == "speck" and graph.metadata["factor"] == factor
    assert nir.read(results / "snn_recommended.nir").metadata == {}
    from conftest import BIN, run

    again = tmp_path / "again.nir"
    run(
        [str(BIN / "spikescale"), "export", "--snn", "models/digits/snn.pt", "--recommendation",
         "results/digits/recommendation.json", "--out", str(tmp_path / "float.nir"),
         "--chip-out", str(again)],
        project,
    )  # fmt: skip
    assert again.read_bytes() == chip_nir.read_bytes()
    from spikescale.collect import format_summary

    text = format_summary(results)
    assert text.count("[speck: ") == 2 and text.count(" of the limit, ") == 2, text
