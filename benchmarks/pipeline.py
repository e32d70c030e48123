"""Benchmark: the whole pipeline through Snakemake on a full-N-MNIST-sized dataset.

Writes a synthetic recordings folder the size of N-MNIST (60,000 train and 10,000 test
recordings of about 4,000 events over 300 ms on a 34x34x2 sensor, ten classes), one
``.npy`` structured array (fields x, y, t, p) per recording, the layout of
``dataset.name: folder`` (README, "Your own recordings"). The recordings are learnable:
each shows one of scikit-learn's handwritten digits of its class, enlarged and placed at
a random position, with 10 % uniform noise events; timestamps uniform over the 300 ms.
Writing them is setup, timed apart from the pipeline.

Then it copies the project (the files a clone holds) into the work folder, sets
``params.yaml`` to that folder (everything else as in params.yaml unless an option says
otherwise) and runs ``snakemake --cores N`` there: the real rules and stages, from the
``events`` stage reading 70,000 files to the plots and the NIR export. Every job's
``spikescale`` goes through a small wrapper placed first on PATH that records its wall time
and its peak resident memory (``ru_maxrss`` of the stage's process: the kernel's own
figure, no sampling). Prints one line per job, the span of each stage (the ``evaluate``
jobs run side by side), the end-to-end time of the ``snakemake`` call, the training
throughput, and the largest peak memory.

    .venv/bin/python benchmarks/pipeline.py                  # full size (about 6 GB of files)
    .venv/bin/python benchmarks/pipeline.py --scale 0.05     # 3,000 + 500 recordings
    .venv/bin/python benchmarks/pipeline.py --tiny           # seconds: a self-test

The work folder (default: a new temporary folder) is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENSOR = (34, 34, 2)
CLASSES = 10
FULL = {"train": 60_000, "test": 10_000}
NOISE = 0.1  # share of events uniform over the sensor

# The stage's wall time and peak RSS (ru_maxrss of the waited child: the kernel's peak,
# KiB on Linux), one JSON line per call appended to $SPIKESCALE_BENCH_LOG.
WRAPPER = """#!{python}
import json, os, resource, subprocess, sys, time
start = time.time()
code = subprocess.call([{real!r}] + sys.argv[1:])
end = time.time()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
row = {{"stage": sys.argv[1] if len(sys.argv) > 1 else "", "args": sys.argv[1:],
        "start": start, "end": end, "rc": code, "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime}}
with open(os.environ["SPIKESCALE_BENCH_LOG"], "a") as f:
    f.write(json.dumps(row) + "\\n")
sys.exit(code)
"""


# ------------------------------------------------------------------------ the recordings


def digit_templates() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as 24x24 intensity maps in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0
    return images.repeat(3, axis=1).repeat(3, axis=2), digits.target.astype(np.int64)


def synthetic_recording(
    rng: np.random.Generator, template: np.ndarray, mean_events: int, duration_us: int
) -> np.ndarray:
    """One recording: events drawn from ``template`` at a random place, plus noise."""
    n = int(rng.integers(int(mean_events * 0.8), int(mean_events * 1.2) + 1))
    width, height, polarities = SENSOR
    size = template.shape[0]
    ox, oy = rng.integers(0, width - size + 1), rng.integers(0, height - size + 1)
    weights = template.reshape(-1) / template.sum()
    n_noise = int(rng.binomial(n, NOISE))
    pixel = rng.choice(size * size, n - n_noise, p=weights)
    x = np.concatenate([pixel % size + ox, rng.integers(0, width, n_noise)])
    y = np.concatenate([pixel // size + oy, rng.integers(0, height, n_noise)])
    order = rng.permutation(n)
    events = np.empty(n, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    events["x"], events["y"] = x[order], y[order]
    events["t"] = np.sort(rng.integers(0, duration_us, n))
    events["p"] = rng.integers(0, polarities, n)
    return events


def write_recordings(
    root: Path, counts: dict[str, int], mean_events: int, duration_us: int, seed: int
) -> dict:
    """``<root>/<split>/<class>/<n>.npy`` for each split; the classes take turns."""
    templates, labels = digit_templates()
    by_class = [np.flatnonzero(labels == c) for c in range(CLASSES)]
    files = events = 0
    for s, (split, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, s])
        for c in range(CLASSES):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            c = i % CLASSES
            template = templates[rng.choice(by_class[c])]
            rec = synthetic_recording(rng, template, mean_events, duration_us)
            np.save(root / split / str(c) / f"{i:05d}.npy", rec)
            files += 1
            events += len(rec)
    return {"files": files, "events": events}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------------ the project


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what a clone holds)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merge(base[key], value) if nested else value
    return out


def make_project(dst: Path, overrides: dict) -> dict:
    """Copy the project into ``dst`` with ``overrides`` merged into params.yaml."""
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def write_wrapper(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "spikescale"
    wrapper.write_text(WRAPPER.format(python=sys.executable, real=str(BIN / "spikescale")))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# ------------------------------------------------------------------------ the report


def job_name(row: dict) -> str:
    args = row["args"]
    if row["stage"] == "evaluate" and "--factor" in args:
        return f"evaluate {args[args.index('--factor') + 1]}"
    return row["stage"]


def training_throughput(project: Path, dataset: str) -> dict:
    """Frames per second of training: epochs x fitted frames over the train job's time."""
    report = json.loads((project / "models" / dataset / "training.json").read_text())
    return {
        "train_frames": report.get("train_frames", 0),
        "epochs": len(report.get("history", [])),
        "cnn_test_accuracy": report.get("cnn_test_accuracy"),
    }


def covered(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``intervals``."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def print_report(rows: list[dict], end_to_end: float, t0: float, extra: dict) -> None:
    print(f"\n{'job':<16}{'start s':>9}{'wall s':>9}{'cpu s':>9}{'peak MB':>10}")
    for row in sorted(rows, key=lambda r: r["start"]):
        print(
            f"{job_name(row):<16}{row['start'] - t0:>9.1f}{row['end'] - row['start']:>9.1f}"
            f"{row['cpu_s']:>9.1f}{row['peak_rss_mb']:>10.0f}"
        )
    print(f"\n{'stage':<16}{'jobs':>5}{'span s':>9}{'share':>8}{'peak MB':>10}")
    stages: dict[str, list[dict]] = {}
    for row in rows:
        stages.setdefault(row["stage"], []).append(row)
    for name, group in sorted(stages.items(), key=lambda kv: min(r["start"] for r in kv[1])):
        span = max(r["end"] for r in group) - min(r["start"] for r in group)
        peak = max(r["peak_rss_mb"] for r in group)
        print(f"{name:<16}{len(group):>5}{span:>9.1f}{span / end_to_end:>8.1%}{peak:>10.0f}")
    busy = covered([(r["start"], r["end"]) for r in rows])
    print(f"\nend to end (snakemake): {end_to_end:.1f} s = {end_to_end / 60:.1f} min")
    print(
        f"some job running: {busy:.1f} s; Snakemake alone (start-up, DAG, between jobs): "
        f"{end_to_end - busy:.1f} s"
    )
    print(f"largest peak RSS of a job: {max(r['peak_rss_mb'] for r in rows):.0f} MB")
    train = [r for r in rows if r["stage"] == "train"]
    if train and extra.get("train_frames"):
        wall = train[0]["end"] - train[0]["start"]
        rate = extra["train_frames"] * extra["epochs"] / wall
        print(
            f"training: {extra['epochs']} epochs x {extra['train_frames']} frames in "
            f"{wall:.1f} s (start-up and evaluation included) = {rate:.0f} frames/s; "
            f"CNN test accuracy {extra['cnn_test_accuracy']:.4f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="share of N-MNIST's 60,000 + 10,000")
    ap.add_argument("--events", type=int, default=4000, help="mean events per recording")
    ap.add_argument("--duration-ms", type=int, default=300, help="recording length")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    ap.add_argument("--epochs", type=int, help="training.epochs (default: params.yaml's)")
    ap.add_argument("--batch-size", type=int, help="training.batch_size (default: params.yaml's)")
    ap.add_argument("--factors", help="comma-separated scale.factors (default: params.yaml's)")
    ap.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="training.channels_last (the faster layout on CPUs; default: on)",
    )
    ap.add_argument("--tiny", action="store_true", help="a few recordings, 1 epoch: a self-test")
    ap.add_argument("--workdir", help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic recordings")
    a = ap.parse_args()

    counts = {split: max(CLASSES, round(n * a.scale)) for split, n in FULL.items()}
    overrides: dict = {"training": {}, "scale": {}}
    if a.tiny:
        counts = {"train": 3 * CLASSES, "test": 2 * CLASSES}
        a.events = min(a.events, 500)
        overrides = {
            "training": {"epochs": 1},
            "normalisation": {"samples": 50},
            "scale": {"factors": [4, 16]},
        }
    overrides["training"]["channels_last"] = a.channels_last
    if a.epochs is not None:
        overrides["training"]["epochs"] = a.epochs
    if a.batch_size is not None:
        overrides["training"]["batch_size"] = a.batch_size
    if a.factors:
        overrides["scale"]["factors"] = [float(f) for f in a.factors.split(",")]

    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="spikescale-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        recordings = work / "recordings"
        print(
            f"writing {counts['train']} + {counts['test']} recordings of about {a.events} "
            f"events ({a.duration_ms} ms, {SENSOR[0]}x{SENSOR[1]}x{SENSOR[2]}) to {recordings}",
            flush=True,
        )
        start = time.perf_counter()
        written = write_recordings(recordings, counts, a.events, a.duration_ms * 1000, a.seed)
        setup = time.perf_counter() - start
        print(
            f"setup: {written['files']} files, {written['events']:,} events, "
            f"{folder_bytes(recordings) / 1e9:.2f} GB in {setup:.1f} s (not part of the pipeline)"
        )
        project = work / "project"
        dataset = {"name": "folder", "root": str(recordings), "sensor_size": list(SENSOR)}
        params = make_project(project, merge({"dataset": dataset}, overrides))
        print(
            f"params: epochs {params['training']['epochs']}, batch size "
            f"{params['training']['batch_size']}, factors {params['scale']['factors']}, "
            f"device {params['device']}; snakemake --cores {a.cores}",
            flush=True,
        )
        write_wrapper(work / "bin")
        log = work / "jobs.jsonl"
        env = dict(os.environ)
        env["PATH"] = f"{work / 'bin'}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["SPIKESCALE_BENCH_LOG"] = str(log)
        env.pop("SPIKESCALE_THREADS", None)  # the rules' threads decide
        cmd = [str(BIN / "snakemake"), "--profile", "profiles/default", "--cores", str(a.cores)]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        end_to_end = time.time() - t0
        if proc.returncode != 0:
            print(proc.stdout[-6000:], proc.stderr[-6000:], file=sys.stderr)
            print(f"snakemake failed ({proc.returncode}) in {project}", file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        extra = training_throughput(project, params["dataset"]["name"])
        print_report(rows, end_to_end, t0, extra)
        summary = subprocess.run(
            [str(BIN / "spikescale"), "summary", "results/folder"],
            cwd=project,
            capture_output=True,
            text=True,
        )
        print("\n" + summary.stdout.strip())
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
