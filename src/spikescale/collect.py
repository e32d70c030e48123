"""The `collect` stage: the per-factor results as tidy tables, metrics and a recommendation.

Every row carries its provenance as columns (dataset and its fingerprint, model, params and
code hashes, git commit, seed, package versions). The recommendation is the smallest factor
within ``recommend.tolerance_pp`` of the best accuracy, unless even the best factor is more
than ``recommend.max_gap_pp`` below the CNN: then the conversion failed and no factor is
recommended. Cost is compared like for like: the CNN decides a recording from all its test
frames (the mean of their logits), so its multiply-accumulates per recording are those of
one frame times the frames per recording; energies are operations times the energy of one
operation (``energy`` parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spikescale.errors import InputError, MissingInputError, require
from spikescale.io import atomic_path, read_json, write_json
from spikescale.params import EnergyParams, Params, params_hash
from spikescale.provenance import code_provenance, package_versions
from spikescale.results import PARTS, factor_path, read_parts

COLLECTED = ("sweep", "layers", "timecourse", "samples")
DIAGNOSTICS = (
    "silent_neuron_fraction",
    "saturated_neuron_fraction",
    "activation_spike_correlation",
)
PJ_TO_UJ = 1e-6


def pareto_front(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """True where no other point is at least as accurate and cheaper, or more accurate and as
    cheap."""
    front = np.ones(len(accuracy), dtype=bool)
    for i in range(len(accuracy)):
        better = (
            (accuracy >= accuracy[i])
            & (cost <= cost[i])
            & ((accuracy > accuracy[i]) | (cost < cost[i]))
        )
        front[i] = not better.any()
    return front


def recommend(
    factors: np.ndarray,
    accuracy: np.ndarray,
    tolerance_pp: float,
    cnn_accuracy: float | None = None,
    max_gap_pp: float | None = None,
) -> dict:
    """The smallest factor within ``tolerance_pp`` percentage points of the best accuracy.

    Given the CNN's accuracy and ``max_gap_pp``, also whether the conversion failed (the
    best SNN more than ``max_gap_pp`` points below the CNN): then ``recommended_factor`` and
    ``recommended_accuracy`` are None and ``message`` says where to look.
    """
    best = int(np.argmax(accuracy))
    ok = accuracy >= accuracy[best] - tolerance_pp / 100 - 1e-12
    chosen = int(np.flatnonzero(ok)[np.argmin(factors[ok])])
    rec = {
        "best_factor": float(factors[best]),
        "best_accuracy": float(accuracy[best]),
        "recommended_factor": float(factors[chosen]),
        "recommended_accuracy": float(accuracy[chosen]),
        "tolerance_pp": tolerance_pp,
    }
    if cnn_accuracy is None or max_gap_pp is None:
        return rec
    gap_pp = 100 * (cnn_accuracy - rec["best_accuracy"])
    failed = bool(gap_pp > max_gap_pp + 1e-9)
    rec.update(
        cnn_accuracy=cnn_accuracy,
        gap_pp=gap_pp,
        max_gap_pp=max_gap_pp,
        conversion_failed=failed,
    )
    if failed:
        rec.update(
            recommended_factor=None,
            recommended_accuracy=None,
            message=(
                f"conversion failed: the best SNN accuracy, {100 * rec['best_accuracy']:.1f}% "
                f"at factor {rec['best_factor']:g}, is {gap_pp:.1f} pp below the CNN's "
                f"{100 * cnn_accuracy:.1f}% (recommend.max_gap_pp: {max_gap_pp:g}); no factor "
                "is recommended. layers.parquet says, per factor and layer, where it breaks: "
                + ", ".join(DIAGNOSTICS)
            ),
        )
    return rec


def _column(value, rows: int) -> pa.Array:
    kind = pa.string() if value is None else None  # a null still names its type
    return pa.array([value] * rows, type=kind)


def with_columns(table: pa.Table, columns: dict) -> pa.Table:
    """Prepend constant columns (provenance) to a table."""
    for i, (name, value) in enumerate(columns.items()):
        table = table.add_column(i, name, _column(value, table.num_rows))
    return table


def sort_by_factor(table: pa.Table, *keys: str) -> pa.Table:
    return table.sort_by([("factor", "ascending"), *((k, "ascending") for k in keys)])


CHIP_RESTRICTION = (
    "the {target} rows (the chip-discretised network) whose network maps onto the chip's "
    "cores and whose busiest core stays within the synops/s limit per core "
    "(synops_limit_per_second_per_core, hardware.synops_per_second_per_core); "
    "float_recommendation: the float SNN's"
)


def build_sweep(
    summary: pa.Table,
    cnn_accuracy: float,
    tolerance_pp: float,
    max_gap_pp: float,
    refined_factors: frozenset[float] = frozenset(),
) -> tuple[pa.Table, dict]:
    """One row per factor (sorted) with the recommendation's columns, and the recommendation.

    With a ``variant`` column (``hardware.target`` set), one row per factor and variant;
    the recommendation is then among the chip's rows that fit and stay within the rate
    limit (``restricted_to`` says so), the float SNN's beside it as ``float_recommendation``.
    """
    if "variant" not in summary.column_names:
        return _variant_sweep(summary, cnn_accuracy, tolerance_pp, max_gap_pp, refined_factors)
    variants = summary.column("variant").to_numpy(zero_copy_only=False)
    floats = summary.filter(pa.array(variants == "float"))
    on_chip = sort_by_factor(summary.filter(pa.array(variants != "float")))
    float_sweep, float_rec = _variant_sweep(
        floats, cnn_accuracy, tolerance_pp, max_gap_pp, refined_factors
    )
    float_sweep = float_sweep.set_column(
        float_sweep.schema.get_field_index("recommended"),
        "recommended",
        pa.array([False] * float_sweep.num_rows),
    )
    target = on_chip.column("variant")[0].as_py()
    eligible = np.array(on_chip.column("chip_fits").to_pylist(), dtype=bool) & np.array(
        on_chip.column("within_synops_limit").to_pylist(), dtype=bool
    )
    chip_sweep, rec = _variant_sweep(
        on_chip, cnn_accuracy, tolerance_pp, max_gap_pp, refined_factors, eligible
    )
    limits = set(on_chip.column("synops_limit_per_second_per_core").to_pylist())
    rec.update(
        variant=target,
        restricted_to=CHIP_RESTRICTION.format(target=target),
        synops_limit_per_second_per_core=limits.pop() if len(limits) == 1 else sorted(limits),
        float_recommendation=float_rec,
    )
    sweep = pa.concat_tables([float_sweep, chip_sweep], promote_options="default")
    return sort_by_factor(sweep, "variant"), rec


def _variant_sweep(
    summary: pa.Table,
    cnn_accuracy: float,
    tolerance_pp: float,
    max_gap_pp: float,
    refined_factors: frozenset[float] = frozenset(),
    eligible: np.ndarray | None = None,
) -> tuple[pa.Table, dict]:
    """The sweep rows of one variant; the recommendation among the ``eligible`` rows (all
    by default; where none is, nothing is recommended and ``message`` says why)."""
    summary = sort_by_factor(summary)  # ``eligible`` follows the sorted rows
    factors = summary.column("factor").to_numpy()
    accuracy = summary.column("snn_accuracy").to_numpy()
    if eligible is None or eligible.all():
        rec = recommend(factors, accuracy, tolerance_pp, cnn_accuracy, max_gap_pp)
    elif eligible.any():
        rec = recommend(
            factors[eligible], accuracy[eligible], tolerance_pp, cnn_accuracy, max_gap_pp
        )
    else:
        rec = recommend(factors, accuracy, tolerance_pp, cnn_accuracy, max_gap_pp)
        problems = summary.column("chip_problems")[0].as_py()
        rec.update(
            recommended_factor=None,
            recommended_accuracy=None,
            conversion_failed=True,
            message=(
                "no factor fits the chip within its rate limit, so none is recommended; "
                f"at factor {factors[0]:g}: {problems}"
            ),
        )
    front = pareto_front(accuracy, summary.column("synops_per_sample").to_numpy())
    n = len(factors)
    summary = summary.append_column("cnn_accuracy", pa.array([cnn_accuracy] * n))
    summary = summary.append_column("pareto", pa.array(front))
    summary = summary.append_column("recommended", pa.array(factors == rec["recommended_factor"]))
    summary = summary.append_column("refined", pa.array([f in refined_factors for f in factors]))
    summary = summary.append_column("conversion_failed", pa.array([rec["conversion_failed"]] * n))
    rec["pareto_factors"] = factors[front].tolist()
    return summary, rec


def with_energy(
    sweep: pa.Table, layers: pa.Table, frames_per_recording: float, energy: EnergyParams
) -> tuple[pa.Table, pa.Table]:
    """Add like-for-like cost and energy per recording to the sweep and the layer table.

    The CNN's multiply-accumulates per recording are its per-frame MACs times the test
    frames per recording; energy is operations times ``energy.mac_pj`` (CNN) or
    ``energy.ac_pj`` (SNN synaptic operations), in microjoules.
    """
    layer_macs = layers.column("cnn_macs_per_frame").to_numpy().astype(np.float64)
    layer_macs = layer_macs * frames_per_recording
    layers = layers.append_column("cnn_macs_per_recording", pa.array(layer_macs))
    layers = layers.append_column(
        "snn_energy_uj_per_recording",
        pa.array(layers.column("synops_per_sample").to_numpy() * energy.ac_pj * PJ_TO_UJ),
    )
    layers = layers.append_column(
        "cnn_energy_uj_per_recording", pa.array(layer_macs * energy.mac_pj * PJ_TO_UJ)
    )

    def keys(table: pa.Table) -> list:
        factors = table.column("factor").to_pylist()
        if "variant" not in table.column_names:
            return factors
        return list(zip(factors, table.column("variant").to_pylist()))

    per_factor: dict = {}
    for key, macs in zip(keys(layers), layer_macs):
        per_factor[key] = per_factor.get(key, 0.0) + float(macs)
    factors = keys(sweep)
    missing = [f for f in factors if f not in per_factor]
    if missing:
        raise InputError(f"the layer tables hold no rows for factors {missing}")
    cnn_macs = np.array([per_factor[f] for f in factors])
    snn_uj = sweep.column("synops_per_sample").to_numpy() * energy.ac_pj * PJ_TO_UJ
    cnn_uj = cnn_macs * energy.mac_pj * PJ_TO_UJ
    sweep = sweep.append_column("cnn_macs_per_recording", pa.array(cnn_macs))
    sweep = sweep.append_column("snn_energy_uj_per_recording", pa.array(snn_uj))
    sweep = sweep.append_column("cnn_energy_uj_per_recording", pa.array(cnn_uj))
    sweep = sweep.append_column("snn_cheaper_than_cnn", pa.array(snn_uj < cnn_uj))
    return sweep, layers


def metrics(sweep: pa.Table, rec: dict) -> dict:
    """The figures `dvc metrics` and `dvc exp show` compare: None where nothing is recommended."""
    variant = rec.get("variant")
    rows = {r["factor"]: r for r in sweep.to_pylist() if r.get("variant") in (None, variant)}
    chosen = rows.get(rec["recommended_factor"])
    return {
        "cnn_accuracy": rec["cnn_accuracy"],
        "best_factor": rec["best_factor"],
        "best_snn_accuracy": rec["best_accuracy"],
        "conversion_failed": rec["conversion_failed"],
        "recommended_factor": rec["recommended_factor"],
        "recommended_snn_accuracy": rec["recommended_accuracy"],
        "recommended_synops_per_sample": chosen["synops_per_sample"] if chosen else None,
        "recommended_snn_energy_uj_per_recording": (
            chosen["snn_energy_uj_per_recording"] if chosen else None
        ),
        "cnn_energy_uj_per_recording": sweep.column("cnn_energy_uj_per_recording")[0].as_py(),
    }


@dataclass(frozen=True)
class CollectInputs:
    """Where `collect` reads: the factor parts, the refined parts and what describes them."""

    factor_dir: Path
    refine_prefix: Path
    training: Path  # training.json of the `train` stage
    snn: Path
    events: Path  # the test event file (its fingerprint)


def frames_per_recording(training: dict, path: Path) -> float:
    """The test frames per recording that the CNN's decision averages over."""
    if "test_frames_per_recording" not in training:
        raise InputError(
            f"{path} has no test_frames_per_recording (written by an older `spikescale train`):"
            " rerun the train stage"
        )
    return float(training["test_frames_per_recording"])


def run_collect(p: Params, inputs: CollectInputs, out_dir: str | Path) -> dict:
    """Write sweep, layers, timecourse and samples tables, recommendation.json and
    metrics.json into ``out_dir``; returns the recommendation."""
    from spikescale.event_store import read_metadata
    from spikescale.model import load_cnn, state_hash

    require(inputs.training, inputs.snn, inputs.events)
    runs = [read_parts(factor_path(inputs.factor_dir, f)) for f in p.scale.factors]
    refined = read_parts(inputs.refine_prefix)
    parts = {
        name: pa.concat_tables([r[name] for r in runs] + [refined[name]], promote_options="default")
        for name in PARTS
    }
    training = read_json(inputs.training)
    per_recording = frames_per_recording(training, inputs.training)
    cnn, _, _ = load_cnn(inputs.snn)
    provenance = {
        "dataset": p.dataset.name,
        "dataset_fingerprint": read_metadata(inputs.events)["fingerprint"],
        "model_hash": state_hash(cnn),
        "params_hash": params_hash(p),
        "seed": p.training.seed,
        **{f"{k}_version": v for k, v in package_versions().items()},
        **code_provenance(),
    }
    sweep, rec = build_sweep(
        parts["summary"],
        training["cnn_test_accuracy"],
        p.recommend.tolerance_pp,
        p.recommend.max_gap_pp,
        frozenset(refined["summary"].column("factor").to_pylist()),
    )
    by_variant = ("variant",) if "variant" in parts["layers"].column_names else ()
    layers = sort_by_factor(parts["layers"], *by_variant, "position")
    sweep, layers = with_energy(sweep, layers, per_recording, p.energy)
    tables = {
        "sweep": sweep,
        "layers": layers,
        "timecourse": sort_by_factor(parts["timecourse"], *by_variant, "time_ms"),
        "samples": sort_by_factor(parts["samples"], *by_variant, "sample"),
    }
    out = Path(out_dir)
    for name, table in tables.items():
        with atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(with_columns(table, provenance), tmp, compression="zstd")
    rec.update(dataset=p.dataset.name, params_hash=provenance["params_hash"])
    write_json(rec, out / "recommendation.json")
    write_json(metrics(sweep, rec), out / "metrics.json")
    return rec


# --------------------------------------------------------------------------- the summary


def _need_result(path: Path) -> None:
    if not path.is_file():
        raise MissingInputError(
            f"{path} does not exist: run the pipeline (snakemake --profile profiles/default, "
            "or dvc repro), or `spikescale collect` on finished factor results"
        )


def _recommendation_line(rec: dict) -> str:
    if rec.get("conversion_failed"):
        return rec["message"]
    head = (
        f"recommended factor: {rec['recommended_factor']:g} "
        f"({100 * rec['recommended_accuracy']:.1f}%"
    )
    if rec["recommended_factor"] == rec["best_factor"]:
        return (
            f"{head}, the best accuracy; no smaller factor is within "
            f"{rec['tolerance_pp']:g} pp of it)"
        )
    return (
        f"{head}, within {rec['tolerance_pp']:g} pp of the best, "
        f"{100 * rec['best_accuracy']:.1f}% at {rec['best_factor']:g})"
    )


def _energy_line(sweep: list[dict]) -> str:
    cnn_uj = sweep[0]["cnn_energy_uj_per_recording"]
    cheaper = [f"{r['factor']:g}" for r in sweep if r["snn_cheaper_than_cnn"]]
    where = f"at factors {', '.join(cheaper)}" if cheaper else "at no factor"
    return (
        f"CNN cost per recording: {sweep[0]['cnn_macs_per_recording']:.4g} MACs, "
        f"{cnn_uj:.4g} uJ; the SNN needs less energy {where}"
    )


def _diagnostics_lines(layers_path: Path, factor: float) -> list[str]:
    if not layers_path.is_file():
        return []
    rows = [r for r in pq.read_table(layers_path).to_pylist() if r["factor"] == factor]
    lines = [f"per-layer diagnostics at factor {factor:g} (layers.parquet):"]
    lines.append(f"  {'layer':<6} {'silent':>7} {'saturated':>9} {'act/spike corr':>14}")
    for r in rows:
        corr = r["activation_spike_correlation"]
        lines.append(
            f"  {r['layer']:<6} {100 * r['silent_neuron_fraction']:>6.1f}% "
            f"{100 * r['saturated_neuron_fraction']:>8.1f}% "
            f"{'-' if corr is None else f'{corr:.3f}':>14}"
        )
    return lines


def format_summary(results_dir: str | Path) -> str:
    """The sweep table, the CNN's accuracy and cost, and the recommendation (or the failure)."""
    results_dir = Path(results_dir)
    sweep_path, rec_path = results_dir / "sweep.parquet", results_dir / "recommendation.json"
    _need_result(sweep_path)
    _need_result(rec_path)
    sweep = pq.read_table(sweep_path).to_pylist()
    rec = read_json(rec_path)
    energy = "snn_energy_uj_per_recording" in sweep[0]
    lines = [
        f"\n{'factor':>8} {'SNN acc':>8} {'silent':>7} {'spikes/sample':>14} {'synops/sample':>14}"
        + (f" {'SNN uJ':>8}" if energy else "")
    ]
    for r in sweep:
        mark = ("  (refined)" if r["refined"] else "") + (
            "  <- recommended" if r["recommended"] else ""
        )
        if r.get("variant") not in (None, "float"):
            fit = (
                "DOES NOT FIT"  # memory or mapping
                if not r["chip_fits"]
                else "fits"
                if r["within_synops_limit"]
                else "OVER THE RATE LIMIT"
            )
            if r.get("peak_synops_layer"):
                fit += (
                    f"; peak {r['peak_synops_per_second']:.2g} synops/s = "
                    f"{r['peak_synops_per_second'] / r['synops_limit_per_second_per_core']:.2g}"
                    f" of the limit, {r['peak_synops_layer']}"
                )
            mark = f"  [{r['variant']}: {fit}]" + mark
            if r["chip_problems"]:
                mark += f"  ({r['chip_problems']})"
        lines.append(
            f"{r['factor']:>8g} {100 * r['snn_accuracy']:>7.1f}% "
            f"{100 * r['silent_fraction']:>6.1f}% "
            f"{r['spikes_per_sample']:>14.0f} {r['synops_per_sample']:>14.0f}"
            + (f" {r['snn_energy_uj_per_recording']:>8.2f}" if energy else "")
            + mark
        )
    lines.append(f"CNN accuracy (one decision per recording): {100 * rec['cnn_accuracy']:.1f}%")
    if energy:
        lines.append(_energy_line(sweep))
    lines.append(_recommendation_line(rec))
    if rec.get("restricted_to"):
        lines.append(f"recommended among: {rec['restricted_to']}")
    if rec.get("conversion_failed"):
        lines += _diagnostics_lines(results_dir / "layers.parquet", rec["best_factor"])
    return "\n".join(lines)
