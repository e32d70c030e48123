"""Benchmark: the `events` and `frames` stages on a full-N-MNIST-sized stream, in bounded memory.

A synthetic stream the size of N-MNIST (60,000 train + 10,000 test samples, about 4,140
events per sample, so about 290 M events; 34x34x2 sensor, about 300 ms per sample) is
generated chunk by chunk, never whole, and pushed through the stages' own code:

* ``events``: :class:`spikescale.event_store.EventStoreWriter`, chunks of 1,000 samples, as
  ``spikescale events`` writes a tonic dataset;
* ``frames``: :func:`spikescale.frames.run_frames` with ``n_time_bins: 10`` (the default);
* ``evaluate-read``: the test split read as evaluation reads it,
  :func:`spikescale.event_store.iter_batches` with 64 samples per batch, plus the raster;
* ``train-read``: one epoch of shuffled batches of 64 training frames from the
  memory-mapped frame file, as ``spikescale train`` reads them (no model).

Each phase runs in a fresh subprocess that reports its wall time and its peak resident
memory (``VmHWM``, which for a memory map includes the file pages it touched, and
``ru_maxrss``). Files go to a temporary folder (about 3.5 GB at full size) that is
removed at the end unless ``--keep``. Exits non-zero if a phase's peak exceeds ``--limit-gb``.

    .venv/bin/python benchmarks/scale.py                            # full size (minutes)
    .venv/bin/python benchmarks/scale.py --train 3000 --test 500    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SENSOR = (34, 34, 2)
CLASSES = tuple(str(d) for d in range(10))
CHUNK_SAMPLES = 1000


def synthetic_chunks(
    n_samples: int, mean_events: int, duration_us: int, seed: int, chunk: int = CHUNK_SAMPLES
):
    """EventSets of ``chunk`` samples each, N-MNIST-like, generated one chunk at a time.

    Events per sample uniform in +-20 % of ``mean_events``; timestamps rise by random
    steps so a sample spans about ``duration_us``; pixels and polarities uniform.
    """
    from spikescale.event_store import EVENT_DTYPE, EventSet

    for c, first in enumerate(range(0, n_samples, chunk)):
        rng = np.random.default_rng([seed, c])
        k = min(chunk, n_samples - first)
        counts = rng.integers(int(mean_events * 0.8), int(mean_events * 1.2) + 1, k)
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        n = int(offsets[-1])
        events = np.empty(n, dtype=EVENT_DTYPE)
        steps = rng.integers(0, 2 * duration_us // mean_events + 1, n, dtype=np.int64)
        t = np.cumsum(steps)
        t -= np.repeat(t[offsets[:-1]], counts)  # each sample starts at t = 0
        events["t"] = t
        events["x"] = rng.integers(0, SENSOR[0], n, dtype=np.int16)
        events["y"] = rng.integers(0, SENSOR[1], n, dtype=np.int16)
        events["p"] = rng.integers(0, SENSOR[2], n, dtype=np.int8)
        labels = rng.integers(0, len(CLASSES), k)
        yield EventSet(events, offsets, labels, SENSOR, CLASSES)


# ------------------------------------------------------------------------------ phases


def phase_events(args, work: Path) -> dict:
    from spikescale.event_store import EventStoreWriter

    out, generating = {}, 0.0
    for split, n, seed in (("train", args.train, 0), ("test", args.test, 1)):
        with EventStoreWriter(
            work / "events" / f"{split}.parquet", SENSOR, CLASSES, dataset="synthetic", split=split
        ) as w:
            chunks = synthetic_chunks(n, args.events, args.duration_ms * 1000, seed)
            while True:
                start = time.perf_counter()
                chunk = next(chunks, None)
                generating += time.perf_counter() - start
                if chunk is None:
                    break
                w.append(chunk)
                del chunk
        out[split] = w.commit()
    return {
        "samples": sum(s["samples"] for s in out.values()),
        "events": sum(s["events"] for s in out.values()),
        "generating_s": round(generating, 1),
        "file_bytes": sum((work / "events" / f"{s}.parquet").stat().st_size for s in out),
    }


def phase_frames(args, work: Path) -> dict:
    from spikescale.frames import run_frames
    from spikescale.params import FramesParams

    summary = run_frames(
        FramesParams(mode="n_time_bins", n_time_bins=10), work / "events", work / "frames"
    )
    return {
        "frames": sum(s["frames"] for s in summary.values()),
        "file_bytes": sum((work / "frames" / f"{s}.npz").stat().st_size for s in summary),
    }


def phase_evaluate_read(args, work: Path) -> dict:
    from spikescale.binning import raster
    from spikescale.event_store import iter_batches

    samples = events = 0
    for _, batch in iter_batches(work / "events" / "test.parquet", 64):
        grid, _ = raster(batch, 1000, 300)  # what evaluate builds from each batch (1 ms bins)
        samples += len(batch)
        events += len(batch.events)
        del grid
    return {"samples": samples, "events": events}


def phase_train_read(args, work: Path) -> dict:
    from spikescale.frames import load_arrays
    from spikescale.train import take, to_batch

    train = load_arrays(work / "frames" / "train.npz")
    frames = train["frames"]
    order = np.random.default_rng(0).permutation(len(frames))
    total = 0.0
    for start in range(0, len(order), 64):
        total += float(to_batch(take(frames, order[start : start + 64]), "cpu").sum())
    return {
        "frames": len(frames),
        "frame_dtype": str(frames.dtype),
        "memmap": isinstance(frames, np.memmap),
        "event_count_check": int(total),
    }


PHASES = {
    "events": phase_events,
    "frames": phase_frames,
    "evaluate-read": phase_evaluate_read,
    "train-read": phase_train_read,
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def run_phase(args) -> None:
    """In the child: run one phase and print one JSON line with its figures."""
    start = time.perf_counter()
    result = PHASES[args.phase](args, Path(args.work))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["peak_rss_mb"] = round(_status_kib("VmHWM") / 1024, 1)
    result["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["rss_anon_mb_at_end"] = round(_status_kib("RssAnon") / 1024, 1)
    result["rss_file_mb_at_end"] = round(_status_kib("RssFile") / 1024, 1)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=60_000, help="training samples (default 60,000)")
    ap.add_argument("--test", type=int, default=10_000, help="test samples (default 10,000)")
    ap.add_argument(
        "--events", type=int, default=4_140, help="mean events per sample (default 4,140)"
    )
    ap.add_argument("--duration-ms", type=int, default=300, help="about how long a sample lasts")
    ap.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}"
    )
    ap.add_argument(
        "--workdir", default=tempfile.gettempdir(), help="where the temporary folder goes"
    )
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument(
        "--limit-gb", type=float, default=4.0, help="fail if a phase's peak RSS exceeds this"
    )
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        run_phase(args)
        return 0

    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)}; expected some of {list(PHASES)}")
    work = Path(tempfile.mkdtemp(prefix="spikescale-scale-", dir=args.workdir))
    print(
        f"{args.train:,} train + {args.test:,} test samples, about {args.events:,} events each "
        f"(~{(args.train + args.test) * args.events / 1e6:,.0f} M events), in {work}",
        flush=True,
    )
    failed = False
    try:
        for phase in phases:
            cmd = [sys.executable, __file__, "--phase", phase, "--work", str(work)] + [
                f"--{k}={getattr(args, k.replace('-', '_'))}"
                for k in ("train", "test", "events", "duration-ms")
            ]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"{phase}: failed (exit {proc.returncode})\n{proc.stdout}", flush=True)
                return 1
            r = json.loads(line[len("RESULT ") :])
            over = r["peak_rss_mb"] > args.limit_gb * 1024
            failed |= over
            extra = ", ".join(
                f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                for k, v in r.items()
                if k not in ("wall_s", "peak_rss_mb")
            )
            print(
                f"{phase:>14}: wall {r['wall_s']:8.1f} s   peak RSS {r['peak_rss_mb']:8.1f} MB"
                f"{'  OVER THE LIMIT' if over else ''}   ({extra})",
                flush=True,
            )
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"largest peak RSS of any phase (RUSAGE_CHILDREN): {children:.1f} MB; "
            f"limit {args.limit_gb * 1024:.0f} MB: {'FAIL' if failed else 'ok'}",
            flush=True,
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
