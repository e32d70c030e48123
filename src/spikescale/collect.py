"""The `collect` stage: the per-factor results as tidy tables, metrics and a recommendation."""

from __future__ import annotations

import platform
from importlib.metadata import version

import numpy as np
import pyarrow as pa

PACKAGES = ("spikescale", "torch", "sinabs", "tonic", "numpy", "pyarrow")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        out[name] = version(name)
    return out


def pareto_front(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """True where no other point is at least as accurate and cheaper, or more accurate and as cheap."""
    front = np.ones(len(accuracy), dtype=bool)
    for i in range(len(accuracy)):
        better = (accuracy >= accuracy[i]) & (cost <= cost[i]) & ((accuracy > accuracy[i]) | (cost < cost[i]))
        front[i] = not better.any()
    return front


def recommend(factors: np.ndarray, accuracy: np.ndarray, tolerance_pp: float) -> dict:
    """The smallest factor within ``tolerance_pp`` percentage points of the best accuracy."""
    best = int(np.argmax(accuracy))
    ok = accuracy >= accuracy[best] - tolerance_pp / 100 - 1e-12
    chosen = int(np.flatnonzero(ok)[np.argmin(factors[ok])])
    return {
        "best_factor": float(factors[best]),
        "best_accuracy": float(accuracy[best]),
        "recommended_factor": float(factors[chosen]),
        "recommended_accuracy": float(accuracy[chosen]),
        "tolerance_pp": tolerance_pp,
    }


def with_columns(table: pa.Table, columns: dict) -> pa.Table:
    """Prepend constant columns (provenance) to a table."""
    for i, (name, value) in enumerate(columns.items()):
        table = table.add_column(i, name, pa.array([value] * table.num_rows))
    return table


def sort_by_factor(table: pa.Table, *keys: str) -> pa.Table:
    return table.sort_by([("factor", "ascending"), *((k, "ascending") for k in keys)])


def build_sweep(summary: pa.Table, cnn_accuracy: float, tolerance_pp: float) -> tuple[pa.Table, dict]:
    summary = sort_by_factor(summary)
    factors = summary.column("factor").to_numpy()
    accuracy = summary.column("snn_accuracy").to_numpy()
    rec = recommend(factors, accuracy, tolerance_pp)
    rec["cnn_accuracy"] = cnn_accuracy
    front = pareto_front(accuracy, summary.column("synops_per_sample").to_numpy())
    summary = summary.append_column("cnn_accuracy", pa.array([cnn_accuracy] * len(factors)))
    summary = summary.append_column("pareto", pa.array(front))
    summary = summary.append_column("recommended", pa.array(factors == rec["recommended_factor"]))
    rec["pareto_factors"] = factors[front].tolist()
    return summary, rec
