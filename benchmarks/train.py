"""Benchmark: training throughput (frames/s) of `train_cnn` now against an earlier version.

Loads ``src/spikescale/train.py`` as it was at ``--before`` (a git revision; default
8d14fa9, before ``training.channels_last`` existed) beside the current module, and runs
the old ``train_cnn`` and the current one (default layout, and channels-last) on the same
memory-mapped frame file with the same parameters, in one process, taking turns
(``--repeats`` rounds, the fastest run of each counted), so that other load on the machine
hits all alike. A run is the whole call: validation after each epoch and the test accuracy
included, as the ``train`` stage runs it. Frames/s = fitted frames x epochs / wall time.
Also says whether old and current give identical weights and whether the current one
gives identical weights twice (determinism).

``--batch-sizes`` adds current-code channels-last runs at other batch sizes (a parameter,
so a different result); ``--compile`` times the bare training step (no validation) eager
against ``torch.compile``, both channels-last, compile time reported apart.

Frames: ``--frames train.npz`` (e.g. ``data/digits/frames/train.npz`` after ``make run``),
else synthetic N-MNIST-shaped frames (2x34x34 counts with learnable labels, ``--frames-n``).

    .venv/bin/python benchmarks/train.py --frames data/digits/frames/train.npz --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikescale.frames import load_arrays, save_arrays
from spikescale.params import TrainingParams

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "8d14fa9"


def module_at(revision: str, name: str):
    """``src/spikescale/train.py`` at ``revision``, imported as module ``name``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/spikescale/train.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="spikescale-train-bench-"))
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_frames(path: Path, n_frames: int, seed: int = 0) -> None:
    """N-MNIST-shaped frames (uint8 counts), 10 bins per recording, labels it can learn."""
    rng = np.random.default_rng(seed)
    n_samples = n_frames // 10
    labels = rng.integers(0, 10, n_samples)
    sample_index = np.repeat(np.arange(n_samples), 10)
    pattern = rng.random((10, 2, 34, 34)) < 0.1  # a pixel mask per class
    rate = 0.3 + 2.0 * pattern[labels[sample_index]]
    frames = rng.poisson(rate).astype(np.uint8)
    save_arrays(
        path,
        {
            "frames": frames,
            "sample_index": sample_index,
            "labels": labels,
            "dropped": np.int64(0),
            "frame_duration_us": np.full(len(frames), 30000.0),
        },
    )


def timed_training(module, train: dict, test: dict, p: TrainingParams) -> tuple[float, dict]:
    start = time.perf_counter()
    model, _, report = module.train_cnn(train, test, p, 10, "cpu", progress=False)
    wall = time.perf_counter() - start
    return wall, {"report": report, "state": model.state_dict()}


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def compile_benchmark(train: dict, p: TrainingParams, steps: int, repeats: int) -> None:
    """The bare training step on channels-last batches: eager against torch.compile."""
    from torch import nn

    from spikescale.model import Architecture, build_cnn
    from spikescale.train import take, to_batch

    frames, labels = train["frames"], train["labels"][train["sample_index"]]
    arch = Architecture(*frames.shape[1:], 10, tuple(p.channels), p.kernel_size, p.bias)
    order = np.random.default_rng(0).permutation(len(frames))
    batches = [order[i : i + p.batch_size] for i in range(0, steps * p.batch_size, p.batch_size)]

    def make():
        torch.manual_seed(0)
        model = build_cnn(arch).to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=p.learning_rate)

    def run(forward, model, optimiser) -> float:
        start = time.perf_counter()
        for idx in batches:
            x = to_batch(take(frames, idx), "cpu", channels_last=True)
            y = torch.from_numpy(labels[idx])
            optimiser.zero_grad()
            nn.functional.cross_entropy(forward(x), y).backward()
            optimiser.step()
        return time.perf_counter() - start

    eager_model, eager_opt = make()
    compiled_model, compiled_opt = make()
    compiled = torch.compile(compiled_model)
    start = time.perf_counter()
    run(compiled, compiled_model, compiled_opt)  # compiles (and recompiles for the last batch)
    print(f"torch.compile: first pass over {steps} steps {time.perf_counter() - start:.1f} s")
    best = {"eager": 0.0, "compiled": 0.0}
    for _ in range(repeats):
        for name, (fwd, m, o) in {
            "eager": (eager_model, eager_model, eager_opt),
            "compiled": (compiled, compiled_model, compiled_opt),
        }.items():
            best[name] = max(best[name], steps * p.batch_size / run(fwd, m, o))
    for name, rate in best.items():
        print(f"training step, {name:<8} (batch {p.batch_size}): {rate:8.0f} frames/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="git revision of the old train.py")
    ap.add_argument("--frames", help="a frame file (train.npz); default: synthetic frames")
    ap.add_argument("--frames-n", type=int, default=20_000, help="synthetic frames")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-sizes", default="", help="more batch sizes, current code only")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the fastest run counts")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--compile", action="store_true", help="also eager vs torch.compile steps")
    ap.add_argument("--compile-steps", type=int, default=150)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    before = module_at(a.before, "train_before")
    import spikescale.train as after

    with tempfile.TemporaryDirectory(prefix="spikescale-train-bench-") as tmp:
        path = Path(a.frames) if a.frames else Path(tmp) / "train.npz"
        if not a.frames:
            synthetic_frames(path, a.frames_n)
        train = load_arrays(path)
        n_test = min(100, len(train["labels"]))
        test = {
            "frames": train["frames"][np.isin(train["sample_index"], np.arange(n_test))],
            "sample_index": train["sample_index"][train["sample_index"] < n_test],
            "labels": train["labels"][:n_test],
        }
        print(
            f"{len(train['frames'])} frames {tuple(train['frames'].shape[1:])} "
            f"{train['frames'].dtype} from {a.frames or 'synthetic'}; torch "
            f"{torch.__version__}, {a.threads} threads; {a.epochs} epoch(s) a run, "
            f"best of {a.repeats}"
        )
        p = TrainingParams(epochs=a.epochs, batch_size=a.batch_size)
        nhwc = p.model_copy(update={"channels_last": True})
        runs = {
            f"before ({a.before})": (before, p),
            "after": (after, p),
            "after, channels_last": (after, nhwc),
        }
        for bs in (int(b) for b in a.batch_sizes.split(",") if b):
            runs[f"after, batch {bs}"] = (
                after,
                TrainingParams(epochs=a.epochs, batch_size=bs, channels_last=True),
            )
        best: dict[str, float] = {}
        states: dict[str, list] = {}
        for _ in range(a.repeats):
            for name, (module, params) in runs.items():
                wall, out = timed_training(module, train, test, params)
                frames_done = out["report"]["train_frames"] * params.epochs
                best[name] = max(best.get(name, 0.0), frames_done / wall)
                states.setdefault(name, []).append(out["state"])
                acc = out["report"]["cnn_test_accuracy"]
                print(f"  {name:<24} {wall:6.1f} s  {frames_done / wall:7.0f} frames/s  {acc=}")
        print()
        for name, rate in best.items():
            print(f"{name:<26} batch {runs[name][1].batch_size:>4}: {rate:8.0f} frames/s")
        first = next(iter(runs))
        print(f"speed-up after/before: {best['after'] / best[first]:.2f}x (default layout)")
        print(f"speed-up channels_last/before: {best['after, channels_last'] / best[first]:.2f}x")
        print(
            "after gives the same weights as before: "
            f"{same_weights(states['after'][0], states[first][0])}; after twice the same "
            f"(deterministic): {all(same_weights(states['after'][0], s) for s in states['after'])}"
        )
        if a.compile:
            compile_benchmark(train, nhwc, a.compile_steps, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
