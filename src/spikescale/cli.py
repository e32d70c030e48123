"""``spikescale <stage>``: the one command that Snakemake rules and DVC stages call.

Argument parsing and dispatch only: each subcommand reads its arguments, calls its stage's
function (which reads the inputs and writes the outputs atomically) and prints what it did.
``--params`` takes either a YAML file (DVC, and users) or a JSON object of parameter
sections (what a Snakemake rule hands over, overrides applied). Bad input
(:class:`spikescale.errors.InputError`) ends with one line and exit status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from spikescale import params as P
from spikescale.errors import InputError
from spikescale.errors import check_device as _check_device
from spikescale.errors import require as _need
from spikescale.io import atomic_path


def _params(value: str) -> P.Params:
    text = value.strip()
    return P.from_json(text) if text.startswith("{") else P.load(text)


def _threads(n: int | None) -> None:
    import torch

    torch.set_num_threads(max(1, n or 1))


def cmd_events(a) -> None:
    from spikescale.events import run_events

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
    from spikescale.train import run_train

    p = _params(a.params)
    _check_device(p.device)
    _threads(a.threads)
    report = run_train(p, a.frames_dir, a.events, a.out, a.report, progress=not a.quiet)
    how = "imported from " + report["checkpoint"] if report["imported"] else "trained"
    if "cnn_test_image_accuracy" in report:
        print(f"CNN ({how}) accuracy on the test images: {report['cnn_test_image_accuracy']:.4f}")
    else:
        accuracy = report["cnn_test_accuracy"]
        print(f"CNN ({how}) test accuracy (one decision per recording): {accuracy:.4f}")


def cmd_normalise(a) -> None:
    from spikescale.normalise import run_normalise

    p = _params(a.params)
    _threads(a.threads)
    for row in run_normalise(p, a.cnn, a.frames, a.out, a.table):
        flag = "  (left unscaled: no positive activation)" if row["degenerate"] else ""
        print(f"{row['layer']:>4} {row['kind']:<7} scale {row['scale']:.4g}{flag}")


def cmd_convert(a) -> None:
    from spikescale.convert import run_convert

    rows, ratio = run_convert(_params(a.params), a.cnn, a.frames, a.out, a.summary)
    print(
        f"SNN with {sum('spike_fn' in r for r in rows)} spiking layers, biases divided by "
        f"{ratio:g}, written to {a.out}"
    )


def cmd_evaluate(a) -> None:
    from spikescale.evaluate import InputFormat, factor_evaluator
    from spikescale.results import write_parts

    p = _params(a.params)
    if not (a.factor > 0 and math.isfinite(a.factor)):
        raise P.ParamsError(f"--factor must be a finite number > 0, got {a.factor}")
    _threads(a.threads)
    evaluate = factor_evaluator(
        a.snn,
        a.events,
        p.evaluation,
        p.device,
        not a.quiet,
        input_format=InputFormat(p.frames.downsample, p.training.polarities),
        hardware=p.hardware,
    )
    write_parts(a.out_prefix, evaluate(a.factor))


def cmd_refine(a) -> None:
    from spikescale.refine import run_refine

    p = _params(a.params)
    _threads(a.threads)
    tried = run_refine(p, a.snn, a.events, a.factor_dir, a.out_prefix, progress=not a.quiet)
    print(f"refined factors: {', '.join(f'{f:g}' for f in tried) or 'none'}")


def cmd_collect(a) -> None:
    from spikescale.collect import CollectInputs, format_summary, run_collect

    inputs = CollectInputs(
        Path(a.factor_dir), Path(a.refine_prefix), Path(a.training), Path(a.snn), Path(a.events)
    )
    run_collect(_params(a.params), inputs, a.out_dir)
    print(format_summary(a.out_dir))


def cmd_summary(a) -> None:
    from spikescale.collect import format_summary

    print(format_summary(a.results_dir))


def cmd_export(a) -> None:
    from spikescale.export import run_export

    note = run_export(a.snn, a.recommendation, a.out, a.chip_out)
    print(note)


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
    from spikescale.events import require_dataset
    from spikescale.network import check_network

    p = _params(a.params)
    require_dataset(p.dataset)  # a missing dataset, with where it was looked for
    network = check_network(p)  # an unsupported or unloadable network, naming the layer
    print(f"{a.params}: valid (params hash {P.params_hash(p)}); network: {network}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, or says that it is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text  # stated in the text already
            or not action.option_strings
            or action.default is argparse.SUPPRESS
        ):
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class _Version(argparse.Action):
    """``--version``: the package version, its code hash and git commit (computed on use)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from spikescale.provenance import version_line

        print(version_line())
        parser.exit()


def _option(flag: str, help: str, **kw) -> tuple[str, dict]:
    return flag, {"help": help, **kw}


def _required(flag: str, help: str, **kw) -> tuple[str, dict]:
    return flag, {"help": help, "required": True, **kw}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spikescale", description=__doc__.splitlines()[0], formatter_class=_HelpFormatter
    )
    ap.add_argument("--version", action=_Version, help="print the version and code hash, and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, fn, *args, params=True, threads=False, quiet=True, help=None):
        sp = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        if params:
            sp.add_argument(
                "--params",
                default="params.yaml",
                help="params.yaml path, or a JSON object of parameter sections (from a rule)",
            )
        for flag, kw in args:
            sp.add_argument(flag, **kw)
        if threads:
            sp.add_argument(
                "--threads",
                type=int,
                default=int(os.environ.get("SPIKESCALE_THREADS", 1)),
                help="torch threads (the default is $SPIKESCALE_THREADS if set, else 1)",
            )
        if quiet:
            sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.set_defaults(fn=fn)
        return sp

    snn = _required("--snn", "the SNN written by `spikescale convert` (snn.pt)")
    test_events = _required("--events", "the test split's event file (events/test.parquet)")
    factor_dir = _required("--factor-dir", "folder of the evaluate stage's factor_<f> parts")
    command(
        "events",
        cmd_events,
        _required("--out-dir", "folder for train.parquet and test.parquet"),
        help="build the event files of both splits from the dataset",
    )
    command(
        "frames",
        cmd_frames,
        _required("--events-dir", "folder holding train.parquet and test.parquet"),
        _required("--out-dir", "folder for train.npz and test.npz"),
        help="bin the events into training frames",
    )
    command(
        "train",
        cmd_train,
        _required("--frames-dir", "folder holding train.npz and test.npz"),
        _required("--events", "an event file of the dataset (for its classes)"),
        _required("--out", "the trained CNN to write (cnn.pt)"),
        _required("--report", "the training report to write (training.json)"),
        threads=True,
        help="train the CNN",
    )
    command(
        "normalise",
        cmd_normalise,
        _required("--cnn", "the trained CNN (cnn.pt)"),
        _required("--frames", "the training frames (train.npz)"),
        _required("--out", "the normalised CNN to write (cnn_normalised.pt)"),
        _required("--table", "the per-layer scales to write (normalisation.json)"),
        threads=True,
        help="normalise the CNN's activations",
    )
    command(
        "convert",
        cmd_convert,
        _required("--cnn", "the normalised CNN (cnn_normalised.pt)"),
        _required(
            "--frames", "training frames (train.npz): their duration sets bias_rescaling: auto"
        ),
        _required("--out", "the SNN to write (snn.pt)"),
        _required("--summary", "the layer summary to write (snn_layers.json)"),
        help="convert the normalised CNN to a sinabs SNN",
    )
    command(
        "evaluate",
        cmd_evaluate,
        snn,
        test_events,
        _required("--factor", "first-layer scale factor, > 0", type=float),
        _required("--out-prefix", "write <prefix>.parquet and its .layers/.samples/.timecourse"),
        threads=True,
        help="evaluate the SNN at one scale factor",
    )
    command(
        "refine",
        cmd_refine,
        snn,
        test_events,
        factor_dir,
        _required("--out-prefix", "write <prefix>.parquet and its .layers/.samples/.timecourse"),
        threads=True,
        help="bisect between the recommended factor and the next smaller one",
    )
    command(
        "collect",
        cmd_collect,
        factor_dir,
        _required("--refine-prefix", "prefix of the refine stage's parts"),
        _required("--training", "the train stage's report (training.json)"),
        snn,
        test_events,
        _required("--out-dir", "folder for the tables, recommendation.json and metrics.json"),
        help="collect the factor results into tables, metrics and a recommendation",
    )
    command(
        "export",
        cmd_export,
        snn,
        _required("--recommendation", "recommendation.json of the collect stage"),
        _required("--out", "the NIR file to write"),
        (
            "--chip-out",
            {
                "help": "also write the same factor's network discretised for Speck / "
                "DYNAP-CNN (what would be flashed) to this NIR file",
                "default": None,
            },
        ),
        params=False,
        help="write the SNN scaled by the recommended factor as NIR (and its chip twin)",
    )
    command(
        "report",
        cmd_report,
        _required("--results-dir", "folder of the collected results (sweep.parquet, ...)"),
        _required("--out-dir", "folder for the plots (PNG) and the CSV for dvc plots"),
        params=False,
        help="plot the results",
    )
    command("check", cmd_check, help="validate the parameters")
    sp = command(
        "compare",
        cmd_compare,
        _option("--labels", "comma-separated labels, one per file (default: the file names)"),
        _required("--out", "the PNG to write"),
        params=False,
        quiet=False,
        help="plot several runs' sweep.parquet files against each other",
    )
    sp.add_argument("sweeps", nargs="+", help="sweep.parquet files, one per run")
    command(
        "schema",
        cmd_schema,
        _option("--out", "the JSON file to write (default: standard output)"),
        params=False,
        quiet=False,
        help="write the JSON schema of params.yaml",
    )
    sp = command(
        "summary",
        cmd_summary,
        params=False,
        quiet=False,
        help="print the sweep table and the recommendation of a finished run",
    )
    sp.add_argument("results_dir", help="the run's results folder, e.g. results/digits")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except InputError as err:
        # bad input: one line (the message names the value or file and what was expected);
        # any other exception is a bug and propagates with its traceback
        print(f"spikescale {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
