"""The per-factor results on disk, and the SNN they are computed from.

``evaluate`` writes one set of parts per factor (``<prefix>.parquet`` for the summary row,
``<prefix>.layers.parquet``, ``.samples`` and ``.timecourse``); ``refine`` writes the same
parts for the factors it adds; ``collect`` reads them all. :func:`factor_evaluator` is
what both ``evaluate`` and ``refine`` run for one factor.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spikescale.errors import InputError, MissingInputError
from spikescale.io import atomic_path
from spikescale.params import ConversionParams, Params

PARTS = ("summary", "layers", "samples", "timecourse")

Tables = dict[str, pa.Table]


def require(*paths: str | Path) -> None:
    """Fail with one clear line if an input file is missing."""
    for path in paths:
        if not Path(path).exists():
            raise MissingInputError(
                f"input {path} does not exist (run the stage that writes it first)"
            )


def load_snn(path: str | Path):
    """The SNN stored by `convert`: (normalised CNN, its architecture, the sinabs SNN)."""
    from spikescale.model import load_cnn, to_snn

    cnn, arch, blob = load_cnn(path)
    if "conversion" not in blob:
        raise InputError(f"{path} is a CNN, not an SNN written by 'spikescale convert'")
    return cnn, arch, to_snn(cnn, arch, ConversionParams(**blob["conversion"]))


def part_path(prefix: str | Path, name: str) -> Path:
    """``<prefix>.parquet`` for the summary, ``<prefix>.<name>.parquet`` for the other parts."""
    return Path(f"{prefix}.parquet" if name == "summary" else f"{prefix}.{name}.parquet")


def write_parts(prefix: str | Path, tables: Tables) -> None:
    """Write all parts or none: each goes to a temporary file, moved into place at the end."""
    with ExitStack() as stack:
        tmps = {name: stack.enter_context(atomic_path(part_path(prefix, name))) for name in tables}
        for name, table in tables.items():
            pq.write_table(table, tmps[name], compression="zstd")


def read_parts(prefix: str | Path) -> Tables:
    """The parts written by :func:`write_parts`, by name."""
    require(*(part_path(prefix, name) for name in PARTS))
    return {name: pq.read_table(part_path(prefix, name)) for name in PARTS}


def factor_path(factor_dir: str | Path, factor: int | float) -> Path:
    """The prefix of one factor's parts, labelled as Snakemake and DVC name the files."""
    from spikescale.params import factor_label

    return Path(factor_dir) / f"factor_{factor_label(factor)}"


def check_device(device: str) -> None:
    """``device: cuda`` on a machine where torch sees no GPU is a parameter error."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError(
                "device: cuda was asked for, but torch sees no CUDA GPU here; set device: cpu"
            )


def factor_evaluator(
    snn_path: str | Path, events_path: str | Path, p: Params, progress: bool = True
) -> Callable[[float], Tables]:
    """A function factor -> result tables for the SNN in ``snn_path`` on ``events_path``.

    Inputs are checked and the SNN loaded once, before any evaluation.
    """
    from spikescale.evaluate import evaluate_factor
    from spikescale.model import scale_first_layer

    check_device(p.device)
    require(snn_path, events_path)
    cnn, arch, snn = load_snn(snn_path)

    def run(factor: float) -> Tables:
        tables = evaluate_factor(
            scale_first_layer(snn, factor),
            scale_first_layer(cnn, factor),
            arch,
            events_path,
            p.evaluation,
            factor,
            p.device,
            progress=progress,
        )
        s = tables["summary"].to_pylist()[0]
        print(
            f"factor {factor:g}: accuracy {s['snn_accuracy']:.4f}, "
            f"silent {s['silent_fraction']:.4f}, "
            f"{s['spikes_per_sample']:.1f} spikes per sample",
            flush=True,
        )
        return tables

    return run
