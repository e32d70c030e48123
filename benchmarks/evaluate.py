"""Evaluation throughput: the fast backend against the sinabs reference, same SNN, same input.

Builds the N-MNIST-sized CNN (Conv2d 2->8->16->32, kernel 3, padding 1, no bias, each
followed by ReLU and AvgPool2d(2); Flatten; Linear(512 -> 10)) with fixed-seed weights,
normalises its activations to about 1 on whole-sample frames (99th percentile of the
non-zero activations per layer), scales the first layer by ``--factor`` and converts it with
``sinabs.from_model``. Synthetic N-MNIST-like streams (a random stroke pattern seen in three
saccades, about 4,000 events per sample over 300 ms, 34x34x2) are binned at 1 ms. Both
backends run in this one process on the same SNN and the same rasters, in batches of the
pipeline's ``evaluation.batch_size``; the script prints samples/s for each, the ratio, the
fraction of identical predictions and the per-layer spike count differences.

Batches alternate between the backends, so that both see the same machine load, and each
batch runs ``--repeats`` times per backend: the headline figures take each batch's fastest
run (as ``timeit`` does: on a shared machine the slower runs measure the neighbours), the
last line the mean over all runs.

    .venv/bin/python benchmarks/evaluate.py [--samples 128] [--factor 8] [--spike-fn multi]

``--network examples.strided_bn:build`` runs a user's network instead (a ``model.factory``,
importable from the project root), here the worked example: strided 5x5 convolution, batch
norm, max pooling, dropout, biases. Its weights are the factory's seeded random
initialisation, its batch norms get seeded random statistics (so that folding them makes
real biases); it is prepared for conversion as the pipeline does (nested Sequentials
flattened, batch norm folded, dropout dropped, max pooling made average pooling),
normalised as above (biases divided by the layer's scale too) and converted with its
biases divided by the number of steps (the normalisation frames hold a whole sample).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import sinabs
import torch
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from torch import nn

from spikescale.simulate import simulate

SENSOR = (2, 34, 34)
ROOT = Path(__file__).resolve().parents[1]


def build_cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10, bias=False),
    ).eval()


def synthetic_streams(n: int, steps: int, events: int, seed: int) -> torch.Tensor:
    """(n, steps, 2, 34, 34) event counts: a random stroke pattern moved in three saccades."""
    rng = np.random.default_rng(seed)
    raster = np.zeros((n, steps, *SENSOR), np.float32)
    yy, xx = np.mgrid[0:28, 0:28]
    for s in range(n):
        img = np.zeros((28, 28))
        for _ in range(rng.integers(2, 5)):  # a few thick random strokes
            p0, p1 = rng.uniform(4, 24, 2), rng.uniform(4, 24, 2)
            for a in np.linspace(0, 1, 40):
                c = p0 + a * (p1 - p0)
                img += np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 3.0)
        edge = np.hypot(*np.gradient(img))
        prob = (edge / edge.sum()).ravel()
        t = np.sort(rng.integers(0, steps, events))
        pix = rng.choice(prob.size, events, p=prob)
        sacc = (3 * t) // steps  # three saccades: the pattern moves by a few pixels
        dy = np.array([0, 3, 6])[sacc]
        dx = np.array([0, 3, 0])[sacc]
        y = np.clip(pix // 28 + dy, 0, 33)
        x = np.clip(pix % 28 + dx, 0, 33)
        pol = rng.integers(0, 2, events)
        np.add.at(raster[s], (t, pol, y, x), 1)
    return torch.from_numpy(raster)


@torch.no_grad()
def user_cnn(factory: str, seed: int) -> nn.Sequential:
    """The network of ``factory`` ("module:function", importable from the project root),
    seeded, batch-norm statistics drawn at random, prepared for conversion."""
    sys.path.insert(0, str(ROOT))
    module, _, function = factory.partition(":")
    torch.manual_seed(seed)
    model = getattr(importlib.import_module(module), function)(input_shape=SENSOR, classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    model.eval()
    try:
        from spikescale.network import prepare_for_conversion
    except ImportError:  # before the network-in half is merged: the tests' stand-in
        from tests.example_network import prepared_by_hand

        return prepared_by_hand(model)
    return prepare_for_conversion(model, max_pool="average")


@torch.no_grad()
def normalise(cnn: nn.Sequential, frames: torch.Tensor, percentile: float = 99.0) -> None:
    """Data-based normalisation (Rueckauer 2017): W_l <- W_l * lambda_{l-1} / lambda_l and
    b_l <- b_l / lambda_l, with lambda_l the given percentile of layer l's non-zero
    (post-ReLU) activations."""
    lambdas, x = [], frames
    for m in cnn:
        x = m(x)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            post = torch.relu(x)
            nz = post[post > 0]
            lambdas.append((m, float(np.percentile(nz.numpy(), percentile)) if nz.numel() else 1.0))
    previous = 1.0
    for m, lam in lambdas:
        m.weight *= previous / lam
        if m.bias is not None:
            m.bias /= lam
        previous = lam


def build_snn(cnn, steps, spike_fn, reset_fn, min_v_mem, bias_rescaling=1.0):
    return sinabs.from_model(
        cnn,
        input_shape=SENSOR,
        num_timesteps=steps,
        add_spiking_output=True,
        spike_threshold=1.0,
        spike_fn=spike_fn,
        reset_fn=reset_fn,
        min_v_mem=min_v_mem,
        bias_rescaling=bias_rescaling,
    ).spiking_model


def predictions(counts: np.ndarray) -> np.ndarray:
    pred = counts.argmax(1)
    pred[counts.sum(1) == 0] = -1  # no output spike: no prediction
    return pred


def pipeline_snn_and_raster(run: Path, samples: int, steps: int, factor: float):
    """The digits SNN of a pipeline run, scaled by ``factor``, and its first test recordings."""
    from spikescale.binning import raster as bin_raster
    from spikescale.event_store import read_events
    from spikescale.model import scale_first_layer
    from spikescale.results import load_snn

    _, _, snn = load_snn(run / "models/digits/snn.pt")
    events = read_events(run / "data/digits/events/test.parquet")
    grid, _ = bin_raster(events.subset(np.arange(min(samples, len(events)))), 1000, steps)
    return scale_first_layer(snn, factor), torch.from_numpy(grid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument(
        "--batch",
        type=int,
        default=64,
        help="batch size (both backends; the pipeline's evaluation.batch_size)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs of each batch per backend")
    ap.add_argument("--steps", type=int, default=300, help="1 ms bins")
    ap.add_argument("--events", type=int, default=4000, help="events per sample")
    ap.add_argument("--factor", type=float, default=8.0, help="first-layer scale factor")
    ap.add_argument("--spike-fn", choices=["multi", "single"], default="multi")
    ap.add_argument("--reset", choices=["subtract", "zero"], default="subtract")
    ap.add_argument("--min-v-mem", type=float, default=-1.0, help="nan for None")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (both backends)")
    ap.add_argument(
        "--digits",
        metavar="DIR",
        help="instead of synthetic streams: the SNN and the test "
        "events of a finished pipeline run in DIR"
        " (models/digits/snn.pt, data/digits/events/test.parquet)",
    )
    ap.add_argument(
        "--network",
        metavar="MODULE:FUNCTION",
        help="instead of the built-in CNN: a model.factory, e.g. examples.strided_bn:build "
        "(seeded random weights, normalised; see above)",
    )
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads (both backends): {torch.get_num_threads()}")
    if args.digits:
        snn, raster = pipeline_snn_and_raster(
            Path(args.digits), args.samples, args.steps, args.factor
        )
    else:
        cnn = user_cnn(args.network, args.seed) if args.network else build_cnn(args.seed)
        raster = synthetic_streams(args.samples, args.steps, args.events, args.seed + 1)
        normalise(cnn, synthetic_streams(64, args.steps, args.events, args.seed + 2).sum(1))
        first = next(m for m in cnn if isinstance(m, (nn.Conv2d, nn.Linear)))
        first.weight *= args.factor
        if first.bias is not None:
            first.bias *= args.factor
        snn = build_snn(
            cnn,
            args.steps,
            MultiSpike if args.spike_fn == "multi" else SingleSpike,
            MembraneSubtract() if args.reset == "subtract" else MembraneReset(),
            None if np.isnan(args.min_v_mem) else args.min_v_mem,
            # a normalisation frame holds the whole sample: a bias per frame is one per run
            bias_rescaling=float(args.steps),
        )
    checkpoints = np.linspace(0, args.steps - 1, 15).round().astype(int)
    active = (raster > 0).float().mean().item()
    print(f"network: {args.network or 'built-in'}: {[type(m).__name__ for m in snn]}")
    print(
        f"{args.samples} samples x {args.steps} steps, {raster.sum().item() / args.samples:.0f} "
        f"events/sample, {100 * active:.2f} % of pixels active per bin, factor {args.factor}, "
        f"{args.spike_fn}spike, reset {args.reset}, min_v_mem {args.min_v_mem}"
    )

    # warm-up (numba compilation or cache load) outside the timing
    simulate(snn, raster[:1, :5], checkpoints[:1] * 0, backend="fast")

    # batches alternate between the backends so that both see the same machine load
    results = {"sinabs": [], "fast": []}
    best = {"sinabs": 0.0, "fast": 0.0}  # sum over batches of the fastest run
    best_cpu = {"sinabs": 0.0, "fast": 0.0}  # CPU time of that run
    total = {"sinabs": 0.0, "fast": 0.0}  # all runs
    for i in range(0, args.samples, args.batch):
        runs = {"sinabs": [], "fast": []}
        outs = {}
        batch = raster[i : i + args.batch]
        for _ in range(args.repeats):
            for backend in results:
                t0, c0 = time.perf_counter(), time.process_time()
                outs[backend] = simulate(snn, batch, checkpoints, backend=backend)
                runs[backend].append((time.perf_counter() - t0, time.process_time() - c0))
        for backend in results:
            wall, cpu = min(runs[backend])
            best[backend] += wall
            best_cpu[backend] += cpu
            total[backend] += sum(r[0] for r in runs[backend])
            results[backend].append(outs[backend])  # every run gives the same counts
    for backend in results:
        print(
            f"{backend:>7}: {args.samples / best[backend]:8.1f} samples/s "
            f"({1000 * best_cpu[backend] / args.samples:7.2f} ms CPU time per sample)"
        )
    print(
        f"  ratio: {best['sinabs'] / best['fast']:8.1f} x wall clock, "
        f"{best_cpu['sinabs'] / best_cpu['fast']:.1f} x CPU time "
        f"(mean over all {args.repeats} runs of each batch: "
        f"{total['sinabs'] / total['fast']:.1f} x)"
    )

    def cat(backend, layer):
        return np.concatenate([r.layer_counts[layer] for r in results[backend]])

    n_layers = len(results["sinabs"][0].layer_counts)
    ref_pred = predictions(cat("sinabs", -1))
    fast_pred = predictions(cat("fast", -1))
    print(
        f"identical predictions: {100 * (ref_pred == fast_pred).mean():.2f} % "
        f"({(ref_pred == -1).mean() * 100:.0f} % of samples silent in sinabs)"
    )
    for layer in range(n_layers):
        a, b = cat("sinabs", layer).astype(np.int64), cat("fast", layer).astype(np.int64)
        rel = abs(int(b.sum()) - int(a.sum())) / max(1, int(a.sum()))
        print(
            f"  layer {layer}: {a.sum() / args.samples:10.1f} spikes/sample (sinabs), "
            f"total difference {int(b.sum()) - int(a.sum()):+d} ({100 * rel:.4f} %), "
            f"neurons differing {(a != b).sum()} of {a.size}"
        )
    over_a = np.concatenate([r.output_over_time for r in results["sinabs"]])
    over_b = np.concatenate([r.output_over_time for r in results["fast"]])
    print(f"output over time identical: {bool((over_a == over_b).all())}")


if __name__ == "__main__":
    main()
