"""The per-factor results on disk, and the SNN they are computed from.

``evaluate`` writes one set of parts per factor (``<prefix>.parquet`` for the summary row,
``<prefix>.layers.parquet``, ``.samples`` and ``.timecourse``); ``refine`` writes the same
parts for the factors it adds; ``collect`` reads them all.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spikescale.errors import InputError, require
from spikescale.io import atomic_path
from spikescale.params import ConversionParams, factor_label

PARTS = ("summary", "layers", "samples", "timecourse")

Tables = dict[str, pa.Table]


def load_snn(path: str | Path):
    """The SNN stored by `convert`: (its CNN twin, the architecture, the sinabs SNN).

    The twin is the normalised CNN on the SNN's time scale: its biases divided as the SNN's
    are (``bias_rescaling``), so that it predicts the SNN's spike counts per step.
    """
    from spikescale.model import divide_biases, load_cnn, to_snn

    cnn, arch, blob = load_cnn(path)
    if "conversion" not in blob:
        raise InputError(f"{path} is a CNN, not an SNN written by 'spikescale convert'")
    ratio = float(blob.get("bias_rescaling", 1.0))
    snn = to_snn(cnn, arch, ConversionParams(**blob["conversion"]), ratio)
    return divide_biases(cnn, ratio), arch, snn


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
    return Path(factor_dir) / f"factor_{factor_label(factor)}"
