"""The `refine` stage: bisect between the recommended factor and the next smaller one.

The coarse sweep's factors are spread on a log scale; a few geometric bisections find
the smallest good factor more precisely. One job whatever ``scale.refine_rounds`` says
(zero rounds writes empty parts), so Snakemake's and DVC's DAGs stay static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from spikescale.collect import recommend
from spikescale.params import Params
from spikescale.results import PARTS, factor_path, read_parts, write_parts


def refine_factors(
    results: dict[float, float],
    rounds: int,
    tolerance_pp: float,
    accuracy_at: Callable[[float], float],
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


def run_refine(
    p: Params,
    snn_path: str | Path,
    events_path: str | Path,
    factor_dir: str | Path,
    out_prefix: str | Path,
    progress: bool = True,
) -> list[float]:
    """Evaluate the bisection's factors and write their parts to ``out_prefix``; returns them."""
    coarse = [read_parts(factor_path(factor_dir, f)) for f in p.scale.factors]
    results = {
        float(t["summary"]["factor"][0].as_py()): float(t["summary"]["snn_accuracy"][0].as_py())
        for t in coarse
    }
    evaluate = None
    if p.scale.refine_rounds:
        from spikescale.evaluate import InputFormat, factor_evaluator  # torch, numba: if needed

        evaluate = factor_evaluator(
            snn_path,
            events_path,
            p.evaluation,
            p.device,
            progress,
            input_format=InputFormat(p.frames.downsample, p.training.polarities),
            hardware=p.hardware,
        )
    refined: list[dict[str, pa.Table]] = []

    def accuracy_at(factor: float) -> float:
        tables = evaluate(factor)
        refined.append(tables)
        return float(tables["summary"]["snn_accuracy"][0].as_py())

    tried = refine_factors(results, p.scale.refine_rounds, p.recommend.tolerance_pp, accuracy_at)
    empty = {name: coarse[0][name].slice(0, 0) for name in PARTS}
    tables = {name: pa.concat_tables([empty[name]] + [t[name] for t in refined]) for name in PARTS}
    write_parts(out_prefix, tables)
    return tried
