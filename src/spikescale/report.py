"""The `report` stage: plots of the sweep (PNG) and CSV exports for ``dvc plots``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from spikescale.errors import InputError  # noqa: E402
from spikescale.io import atomic_path  # noqa: E402

PNG_METADATA = {"Software": None}  # no version string: same figure, same bytes
_PLAIN = {pa.float64(), pa.int64(), pa.bool_()}  # columns that dvc plots can read from CSV


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=PNG_METADATA)
    plt.close(fig)


def conversion_failed_title(sweep) -> str | None:
    """The accuracy plot's title where the conversion failed (no factor works), else None."""
    if "conversion_failed" not in sweep or not sweep["conversion_failed"].any():
        return None
    best = int(np.argmax(sweep["snn_accuracy"]))
    gap = 100 * (sweep["cnn_accuracy"][0] - sweep["snn_accuracy"][best])
    return (
        f"Conversion failed: best SNN {gap:.1f} pp below the CNN (factor {sweep['factor'][best]:g})"
    )


def split_variants(columns: dict[str, np.ndarray]) -> tuple[dict, dict | None]:
    """The float SNN's rows and the chip's (None without ``hardware.target``)."""
    if "variant" not in columns:
        return columns, None
    is_float = columns["variant"] == "float"
    pick = lambda mask: {k: v[mask] for k, v in columns.items()}  # noqa: E731
    return pick(is_float), (pick(~is_float) if (~is_float).any() else None)


def _plot_chip_accuracy(ax, chip) -> None:
    """The chip's accuracy against the factor; factors that do not fit (memory, mapping or
    the rate limit) crossed out in red."""
    fits = np.array(
        [bool(a) and bool(b) for a, b in zip(chip["chip_fits"], chip["within_synops_limit"])]
    )
    target = chip["variant"][0]
    ax.plot(
        chip["factor"],
        100 * chip["snn_accuracy"],
        "^-",
        color="C4",
        label=f"{target} (chip) accuracy",
    )
    if (~fits).any():
        ax.plot(
            chip["factor"][~fits],
            100 * chip["snn_accuracy"][~fits],
            "x",
            color="C3",
            ms=11,
            mew=2,
            label=f"does not fit {target}",
        )


def plot_accuracy(sweep, path: Path) -> None:
    sweep, chip = split_variants(sweep)
    if chip is not None and chip["recommended"].any():
        sweep = dict(sweep, recommended=chip["recommended"])  # the chip's recommendation
    f = sweep["factor"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(f, 100 * sweep["snn_accuracy"], "o-", color="C0", label="SNN accuracy")
    ax.plot(f, 100 * sweep["silent_fraction"], "x:", color="C0", alpha=0.6, label="silent samples")
    ax.axhline(100 * sweep["cnn_accuracy"][0], color="k", ls="--", lw=1, label="CNN accuracy")
    if chip is not None:
        _plot_chip_accuracy(ax, chip)
    rec = f[sweep["recommended"]]
    for r in rec:
        ax.axvline(r, color="C2", lw=1, label=f"recommended ({r:g})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("first-layer scale factor")
    ax.set_ylabel("% of test samples")
    ax.set_ylim(-2, 102)
    right = ax.twinx()
    right.plot(f, sweep["spikes_per_sample"], "s-", color="C1", label="spikes per sample")
    right.plot(f, sweep["synops_per_sample"], "d-", color="C3", label="synaptic ops per sample")
    right.set_yscale("log")
    right.set_ylabel("per sample")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="center right")
    failed = conversion_failed_title(sweep)
    if failed:
        ax.set_title(failed, color="C3")
        ax.text(
            0.02,
            0.90,
            "no factor recommended; per-layer diagnostics in layers.parquet:\n"
            "silent/saturated neuron fractions, activation_spike_correlation",
            transform=ax.transAxes,
            fontsize=7,
            color="C3",
            va="top",
            bbox={"facecolor": "white", "edgecolor": "C3", "alpha": 0.9},
            zorder=5,
        )
    else:
        ax.set_title("Accuracy and activity against the scale factor")
    fig.tight_layout()
    _save(fig, path)


def plot_pareto(sweep, path: Path) -> None:
    sweep = split_variants(sweep)[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    syn, acc, front = sweep["synops_per_sample"], 100 * sweep["snn_accuracy"], sweep["pareto"]
    ax.scatter(syn, acc, c=["C3" if p else "0.6" for p in front], zorder=3)
    order = np.argsort(syn[front])
    ax.plot(syn[front][order], acc[front][order], "-", color="C3", label="Pareto front")
    for s, a, f in zip(syn, acc, sweep["factor"]):
        ax.annotate(f"{f:g}", (s, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("symlog")
    ax.set_xlabel("synaptic operations per sample")
    ax.set_ylabel("SNN accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("Accuracy against cost (labels: scale factor)")
    fig.tight_layout()
    _save(fig, path)


def plot_layer_rates(layers, path: Path) -> None:
    """Firing rate per (factor, layer); with a chip target, the chip's network, and a red
    frame round each layer over a limit (no core holds it, or its peak synops/s exceeds
    the per-core limit)."""
    floats, chip = split_variants(layers)
    layers = floats if chip is None else chip
    factors = np.unique(layers["factor"])
    names = list(dict.fromkeys(layers["layer"][np.argsort(layers["position"], kind="stable")]))
    grid = np.full((len(factors), len(names)), np.nan)
    for f, name, rate in zip(layers["factor"], layers["layer"], layers["firing_rate_hz"]):
        grid[np.searchsorted(factors, f), names.index(name)] = rate
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 0.45 * len(factors) + 1.8))
    im = ax.imshow(np.log10(grid + 1e-3), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(factors)), [f"{f:g}" for f in factors])
    ax.set_xlabel("layer")
    ax.set_ylabel("scale factor")
    for i in range(len(factors)):
        for j in range(len(names)):
            ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, label="log10 firing rate per neuron (Hz)")
    ax.set_title("Mean firing rate per neuron")
    if chip is not None:
        for f, name, fits, over in zip(
            layers["factor"], layers["layer"], layers["fits_core"], layers["over_synops_limit"]
        ):
            if not fits or over:
                i, j = np.searchsorted(factors, f), names.index(name)
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="C3", lw=2.5))
        ax.set_title(
            f"Mean firing rate per neuron on {layers['variant'][0]} (red: over a core's limit)"
        )
    fig.tight_layout()
    _save(fig, path)


def plot_timecourse(timecourse, path: Path) -> None:
    timecourse = split_variants(timecourse)[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    factors = np.unique(timecourse["factor"])
    cmap = plt.get_cmap("viridis")
    for i, f in enumerate(factors):
        sel = timecourse["factor"] == f
        ax.plot(
            timecourse["time_ms"][sel],
            100 * timecourse["snn_accuracy"][sel],
            "-",
            color=cmap(i / max(1, len(factors) - 1)),
            label=f"{f:g}",
        )
    ax.set_xlabel("time into the recording (ms)")
    ax.set_ylabel("SNN accuracy so far (%)")
    ax.legend(title="factor", fontsize=7, ncol=2)
    ax.set_title("Accuracy over time: the latency a factor buys")
    fig.tight_layout()
    _save(fig, path)


def plot_comparison(sweeps: dict[str, dict], path: Path) -> None:
    """Accuracy and synaptic operations against the factor, one line per run."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    for i, (label, sweep) in enumerate(sweeps.items()):
        order = np.argsort(sweep["factor"])
        f = sweep["factor"][order]
        top.plot(f, 100 * sweep["snn_accuracy"][order], "o-", color=f"C{i}", label=label)
        top.axhline(100 * sweep["cnn_accuracy"][0], color=f"C{i}", ls=":", lw=1)
        bottom.plot(f, sweep["synops_per_sample"][order], "s-", color=f"C{i}", label=label)
    top.set_ylabel("SNN accuracy (%)  (dotted: CNN)")
    top.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel("synaptic ops per sample")
    bottom.set_xscale("log", base=2)
    bottom.set_xlabel("first-layer scale factor")
    top.set_title("Runs compared")
    fig.tight_layout()
    _save(fig, path)


def _columns(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def run_report(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    sweep = _columns(results_dir / "sweep.parquet")
    layers = _columns(results_dir / "layers.parquet")
    timecourse = _columns(results_dir / "timecourse.parquet")
    written = []
    for name, fn, data in (
        ("accuracy", plot_accuracy, sweep),
        ("pareto", plot_pareto, sweep),
        ("layer_rates", plot_layer_rates, layers),
        ("timecourse", plot_timecourse, timecourse),
    ):
        fn(data, out_dir / f"{name}.png")
        written.append(out_dir / f"{name}.png")
    for name in ("sweep", "timecourse"):
        table = pq.read_table(results_dir / f"{name}.parquet")
        keep = [c for c in table.column_names if table.schema.field(c).type in _PLAIN]
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            pacsv.write_csv(table.select(keep), tmp)
        written.append(out_dir / f"{name}.csv")
    return written


def run_compare(sweep_paths: list[Path], labels: list[str] | None, out: Path) -> None:
    labels = labels or [Path(p).stem for p in sweep_paths]
    if len(labels) != len(sweep_paths):
        raise InputError(f"{len(labels)} labels for {len(sweep_paths)} sweep files")
    plot_comparison({label: _columns(Path(p)) for label, p in zip(labels, sweep_paths)}, Path(out))
