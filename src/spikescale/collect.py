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


def build_sweep(
    summary: pa.Table, cnn_accuracy: float, tolerance_pp: float
) -> tuple[pa.Table, dict]:
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


def refine_factors(
    results: dict[float, float], rounds: int, tolerance_pp: float, accuracy_at
) -> list[float]:
    """Bisect between the recommended factor and the next smaller one, ``rounds`` times.

    ``results`` maps the coarse factors to their accuracy and grows with each evaluation;
    ``accuracy_at(factor)`` evaluates a new factor. Midpoints are geometric (the factors
    are spread on a log scale) and rounded to 4 significant digits. Returns the factors tried.
    """
    tried: list[float] = []
    for _ in range(rounds):
        factors = np.array(sorted(results))
        accuracy = np.array([results[f] for f in factors])
        chosen = recommend(factors, accuracy, tolerance_pp)["recommended_factor"]
        below = factors[factors < chosen]
        if len(below) == 0:
            break
        midpoint = float(f"{np.sqrt(below.max() * chosen):.4g}")
        if midpoint in results or midpoint <= below.max() or midpoint >= chosen:
            break
        results[midpoint] = accuracy_at(midpoint)
        tried.append(midpoint)
    return tried
