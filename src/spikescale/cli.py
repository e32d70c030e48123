"""``spikescale <stage>``: the one command that Snakemake rules and DVC stages call.

Each subcommand reads its inputs, calls the pure stage function and writes its outputs
atomically. ``--params`` takes either a YAML file (DVC, and users) or a JSON object of
parameter sections (what a Snakemake rule hands over, overrides applied).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from spikescale import params as P
from spikescale.io import atomic_path, read_json, write_json


def _params(value: str) -> P.Params:
    text = value.strip()
    return P.from_json(text) if text.startswith("{") else P.load(text)


def _threads(n: int | None) -> None:
    import torch

    torch.set_num_threads(max(1, n or 1))


def _need(*paths: str | Path) -> None:
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"input {path} does not exist (run the stage that writes it first)"
            )


def cmd_events(a) -> None:
    from spikescale.dataset import run_events

    p = _params(a.params)
    summary = run_events(p.dataset, a.out_dir)
    for split, s in summary.items():
        print(
            f"{split}: {s['samples']} samples, {s['events']} events, fingerprint {s['fingerprint']}"
        )


def cmd_frames(a) -> None:
    from spikescale.frames import run_frames

    p = _params(a.params)
    _need(Path(a.events_dir) / "train.parquet", Path(a.events_dir) / "test.parquet")
    for split, s in run_frames(p.frames, a.events_dir, a.out_dir).items():
        print(f"{split}: {s['frames']} frames, {s['dropped_events']} events dropped by the binning")


def cmd_train(a) -> None:
    from spikescale.events import read_metadata
    from spikescale.frames import load_arrays
    from spikescale.model import save_cnn
    from spikescale.train import train_cnn

    p = _params(a.params)
    _check_device(p.device)
    _threads(a.threads)
    train, test = (load_arrays(Path(a.frames_dir) / f"{s}.npz") for s in ("train", "test"))
    classes = len(read_metadata(a.events)["classes"])
    model, arch, report = train_cnn(
        train, test, p.training, classes, p.device, progress=not a.quiet, network=p.model
    )
    save_cnn(model, arch, a.out)
    write_json(report, a.report)
    how = "imported from " + report["checkpoint"] if report["imported"] else "trained"
    print(
        f"CNN ({how}) test accuracy (one decision per recording): {report['cnn_test_accuracy']:.4f}"
    )


def cmd_normalise(a) -> None:
    import numpy as np

    from spikescale.frames import load_arrays
    from spikescale.model import load_cnn, save_cnn
    from spikescale.network import layer_spec, prepare_for_conversion
    from spikescale.normalise import frame_batches, normalise

    params = _params(a.params)
    p = params.normalisation
    _threads(a.threads)
    cnn, arch, _ = load_cnn(a.cnn)
    cnn = prepare_for_conversion(cnn, params.conversion.max_pool)
    frames = load_arrays(a.frames)["frames"]
    pick = np.sort(np.random.default_rng(0).permutation(len(frames))[: p.samples])
    model, table = normalise(
        cnn, frame_batches(frames, pick, p.batch_size), p.percentile, p.ignore_zeros
    )
    save_cnn(model, arch, a.out, layers=layer_spec(model))
    write_json(
        {
            "percentile": p.percentile,
            "ignore_zeros": p.ignore_zeros,
            "samples": len(pick),
            "layers": table,
        },
        a.table,
    )
    for row in table:
        flag = "  (left unscaled: no positive activation)" if row["degenerate"] else ""
        print(f"{row['layer']:>4} {row['kind']:<7} scale {row['scale']:.4g}{flag}")


def cmd_convert(a) -> None:
    from spikescale.convert import bias_ratio, convert
    from spikescale.frames import load_arrays
    from spikescale.model import load_cnn, save_cnn
    from spikescale.network import layer_spec

    params = _params(a.params)
    p = params.conversion
    _need(a.frames)
    cnn, arch, _ = load_cnn(a.cnn)
    ratio = bias_ratio(
        p.bias_rescaling,
        load_arrays(a.frames).get("frame_duration_us"),
        params.evaluation.time_bin_us,
    )
    _, rows = convert(cnn, arch, p, ratio)
    conversion = p.model_dump(mode="json")
    save_cnn(cnn, arch, a.out, layers=layer_spec(cnn), conversion=conversion, bias_rescaling=ratio)
    write_json({"conversion": conversion, "bias_rescaling": ratio, "modules": rows}, a.summary)
    print(
        f"SNN with {sum('spike_fn' in r for r in rows)} spiking layers, biases divided by "
        f"{ratio:g}, written to {a.out}"
    )


def load_snn(path):
    """The SNN stored by `convert`, and its CNN twin on the SNN's time scale (the normalised
    CNN with its biases divided as the SNN's are)."""
    from spikescale.model import divide_biases, load_cnn, to_snn

    cnn, arch, blob = load_cnn(path)
    if "conversion" not in blob:
        raise ValueError(f"{path} is a CNN, not an SNN written by 'spikescale convert'")
    ratio = float(blob.get("bias_rescaling", 1.0))
    snn = to_snn(cnn, arch, P.ConversionParams(**blob["conversion"]), ratio)
    return divide_biases(cnn, ratio), arch, snn


PARTS = ("summary", "layers", "samples", "timecourse")


def part_path(prefix, name: str) -> Path:
    """``<prefix>.parquet`` for the summary, ``<prefix>.<name>.parquet`` for the other parts."""
    return Path(f"{prefix}.parquet" if name == "summary" else f"{prefix}.{name}.parquet")


def write_parts(prefix, tables: dict) -> None:
    """Write all parts or none: each goes to a temporary file, moved into place at the end."""
    import pyarrow.parquet as pq

    with ExitStack() as stack:
        tmps = {name: stack.enter_context(atomic_path(part_path(prefix, name))) for name in tables}
        for name, table in tables.items():
            pq.write_table(table, tmps[name], compression="zstd")


def read_parts(prefix) -> dict:
    import pyarrow.parquet as pq

    _need(*(part_path(prefix, name) for name in PARTS))
    return {name: pq.read_table(part_path(prefix, name)) for name in PARTS}


def _evaluator(a, p: P.Params):
    """A function factor -> tables for the SNN in ``a.snn`` on the events in ``a.events``."""
    from spikescale.evaluate import evaluate_factor
    from spikescale.model import scale_first_layer

    _check_device(p.device)
    _need(a.snn, a.events)
    _threads(a.threads)
    cnn, arch, snn = load_snn(a.snn)

    def run(factor: float) -> dict:
        tables = evaluate_factor(
            scale_first_layer(snn, factor),
            scale_first_layer(cnn, factor),
            arch,
            a.events,
            p.evaluation,
            factor,
            p.device,
            progress=not a.quiet,
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


def cmd_evaluate(a) -> None:
    p = _params(a.params)
    if not a.factor > 0:
        raise P.ParamsError(f"--factor must be > 0, got {a.factor}")
    write_parts(a.out_prefix, _evaluator(a, p)(a.factor))


def cmd_refine(a) -> None:
    """Bisect (geometric midpoints) between the recommended factor and its lower neighbour."""
    import pyarrow as pa

    from spikescale.collect import refine_factors

    p = _params(a.params)
    coarse = [
        read_parts(Path(a.factor_dir) / f"factor_{P.factor_label(f)}") for f in p.scale.factors
    ]
    results = {
        float(t["summary"]["factor"][0].as_py()): float(t["summary"]["snn_accuracy"][0].as_py())
        for t in coarse
    }
    evaluate = _evaluator(a, p) if p.scale.refine_rounds else None
    refined: list[dict] = []

    def accuracy_at(factor: float) -> float:
        tables = evaluate(factor)
        refined.append(tables)
        return float(tables["summary"]["snn_accuracy"][0].as_py())

    tried = refine_factors(results, p.scale.refine_rounds, p.recommend.tolerance_pp, accuracy_at)
    empty = {name: coarse[0][name].slice(0, 0) for name in PARTS}
    tables = {name: pa.concat_tables([empty[name]] + [t[name] for t in refined]) for name in PARTS}
    write_parts(a.out_prefix, tables)
    print(f"refined factors: {', '.join(f'{f:g}' for f in tried) or 'none'}")


def cmd_collect(a) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spikescale.collect import build_sweep, package_versions, sort_by_factor, with_columns
    from spikescale.events import read_metadata
    from spikescale.model import load_cnn, state_hash

    p = _params(a.params)
    runs = [read_parts(Path(a.factor_dir) / f"factor_{P.factor_label(f)}") for f in p.scale.factors]
    refined = read_parts(a.refine_prefix)
    parts = {name: pa.concat_tables([r[name] for r in runs] + [refined[name]]) for name in PARTS}
    refined_factors = set(refined["summary"].column("factor").to_pylist())
    training = read_json(a.training)
    cnn, _, _ = load_cnn(a.snn)
    meta = read_metadata(a.events)
    provenance = {
        "dataset": p.dataset.name,
        "dataset_fingerprint": meta["fingerprint"],
        "model_hash": state_hash(cnn),
        "params_hash": P.params_hash(p),
        "seed": p.training.seed,
        **{f"{k}_version": v for k, v in package_versions().items()},
    }
    sweep, rec = build_sweep(
        parts["summary"], training["cnn_test_accuracy"], p.recommend.tolerance_pp
    )
    sweep = sweep.append_column(
        "refined", pa.array([f in refined_factors for f in sweep["factor"].to_pylist()])
    )
    out = Path(a.out_dir)
    tables = {
        "sweep": sweep,
        "layers": sort_by_factor(parts["layers"], "position"),
        "timecourse": sort_by_factor(parts["timecourse"], "time_ms"),
        "samples": sort_by_factor(parts["samples"], "sample"),
    }
    for name, table in tables.items():
        with atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(with_columns(table, provenance), tmp, compression="zstd")
    rec.update(dataset=p.dataset.name, params_hash=provenance["params_hash"])
    write_json(rec, out / "recommendation.json")
    metrics = {
        "cnn_accuracy": rec["cnn_accuracy"],
        "best_factor": rec["best_factor"],
        "best_snn_accuracy": rec["best_accuracy"],
        "recommended_factor": rec["recommended_factor"],
        "recommended_snn_accuracy": rec["recommended_accuracy"],
        "recommended_synops_per_sample": float(
            sweep.filter(sweep.column("recommended")).column("synops_per_sample")[0].as_py()
        ),
    }
    write_json(metrics, out / "metrics.json")
    print_summary(out)


def print_summary(results_dir: str | Path) -> None:
    import pyarrow.parquet as pq

    results_dir = Path(results_dir)
    sweep = pq.read_table(results_dir / "sweep.parquet").to_pylist()
    rec = read_json(results_dir / "recommendation.json")
    print(
        f"\n{'factor':>8} {'SNN acc':>8} {'silent':>7} {'spikes/sample':>14} {'synops/sample':>14}"
    )
    for r in sweep:
        mark = ("  (refined)" if r["refined"] else "") + (
            "  <- recommended" if r["recommended"] else ""
        )
        print(
            f"{r['factor']:>8g} {100 * r['snn_accuracy']:>7.1f}% "
            f"{100 * r['silent_fraction']:>6.1f}% "
            f"{r['spikes_per_sample']:>14.0f} {r['synops_per_sample']:>14.0f}{mark}"
        )
    print(f"CNN accuracy (one decision per recording): {100 * rec['cnn_accuracy']:.1f}%")
    print(
        f"recommended factor: {rec['recommended_factor']:g} "
        f"({100 * rec['recommended_accuracy']:.1f}%, "
        f"within {rec['tolerance_pp']:g} pp of the best, "
        f"{100 * rec['best_accuracy']:.1f}% at {rec['best_factor']:g})"
    )


def cmd_export(a) -> None:
    from spikescale.export import to_nir_graph, write_nir
    from spikescale.model import scale_first_layer

    _need(a.snn, a.recommendation)
    factor = read_json(a.recommendation)["recommended_factor"]
    _, arch, snn = load_snn(a.snn)
    write_nir(to_nir_graph(scale_first_layer(snn, factor), arch.input_shape), a.out)
    print(f"SNN scaled by the recommended factor {factor:g} written to {a.out} (NIR)")


def cmd_report(a) -> None:
    from spikescale.report import run_report

    for path in run_report(a.results_dir, a.out_dir):
        print(path)


def cmd_compare(a) -> None:
    from spikescale.report import run_compare

    _need(*a.sweeps)
    run_compare(a.sweeps, a.labels.split(",") if a.labels else None, a.out)
    print(a.out)


def cmd_schema(a) -> None:
    text = json.dumps(P.json_schema(), indent=2, sort_keys=True) + "\n"
    if a.out:
        with atomic_path(a.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)


def cmd_check(a) -> None:
    from spikescale.network import check_network

    p = _params(a.params)
    print(f"{a.params}: valid (params hash {P.params_hash(p)}); network: {check_network(p)}")


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                "device: cuda was asked for, but torch sees no CUDA GPU here; set device: cpu"
            )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spikescale", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def stage(name, fn, *args, threads=False, help=None):
        sp = sub.add_parser(name, help=help)
        sp.add_argument(
            "--params", default="params.yaml", help="params.yaml path or JSON of sections"
        )
        for flag, kw in args:
            sp.add_argument(flag, **kw)
        if threads:
            sp.add_argument(
                "--threads", type=int, default=int(os.environ.get("SPIKESCALE_THREADS", 1))
            )
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.set_defaults(fn=fn)
        return sp

    req = {"required": True}
    stage("events", cmd_events, ("--out-dir", req), help="build the event stores of both splits")
    stage(
        "frames", cmd_frames, ("--events-dir", req), ("--out-dir", req), help="bin training frames"
    )
    stage(
        "train",
        cmd_train,
        ("--frames-dir", req),
        ("--events", req),
        ("--out", req),
        ("--report", req),
        threads=True,
        help="train the CNN",
    )
    stage(
        "normalise",
        cmd_normalise,
        ("--cnn", req),
        ("--frames", req),
        ("--out", req),
        ("--table", req),
        threads=True,
        help="normalise the CNN's activations",
    )
    stage(
        "convert",
        cmd_convert,
        ("--cnn", req),
        ("--frames", req),
        ("--out", req),
        ("--summary", req),
        help="convert to a sinabs SNN",
    )
    stage(
        "evaluate",
        cmd_evaluate,
        ("--snn", req),
        ("--events", req),
        ("--factor", {"type": float, **req}),
        ("--out-prefix", req),
        threads=True,
        help="evaluate the SNN at one scale factor",
    )
    stage(
        "refine",
        cmd_refine,
        ("--snn", req),
        ("--events", req),
        ("--factor-dir", req),
        ("--out-prefix", req),
        threads=True,
        help="bisect between the recommended factor and the next smaller one",
    )
    stage(
        "collect",
        cmd_collect,
        ("--factor-dir", req),
        ("--refine-prefix", req),
        ("--training", req),
        ("--snn", req),
        ("--events", req),
        ("--out-dir", req),
        help="collect the factor results",
    )
    stage(
        "export",
        cmd_export,
        ("--snn", req),
        ("--recommendation", req),
        ("--out", req),
        help="write the recommended, scaled SNN as NIR",
    )
    stage("report", cmd_report, ("--results-dir", req), ("--out-dir", req), help="plot the results")
    stage("check", cmd_check, help="validate the parameters")
    sp = sub.add_parser("compare", help="plot several runs' sweep.parquet files against each other")
    sp.add_argument("sweeps", nargs="+", help="sweep.parquet files, one per run")
    sp.add_argument("--labels", help="comma-separated labels (default: the file names)")
    sp.add_argument("--out", required=True, help="PNG to write")
    sp.set_defaults(fn=cmd_compare)
    sp = sub.add_parser("schema", help="write the JSON schema of params.yaml")
    sp.add_argument("--out")
    sp.set_defaults(fn=cmd_schema)
    sp = sub.add_parser("summary", help="print the sweep table and the recommendation")
    sp.add_argument("results_dir")
    sp.set_defaults(fn=lambda a: print_summary(a.results_dir))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (P.ParamsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"spikescale {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
