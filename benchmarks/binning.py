"""Benchmark: spikescale.binning against tonic's ToFrame on N-MNIST-sized streams.

Synthetic samples of about 4,000 events over about 300 ms on a 34x34x2 sensor, binned
with time_window=1000 us. Times, in one run: tonic's ToFrame called per sample,
``to_frames`` called per sample, and ``frames_for_set`` on the whole set; checks that all
three give the same frames, and prints samples/s and the speed-up over tonic.

    .venv/bin/python benchmarks/binning.py --samples 200
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from tonic.transforms import ToFrame

from spikescale.binning import frames_for_set, raster, to_frames
from spikescale.event_store import EVENT_DTYPE, from_samples

SENSOR = (34, 34, 2)


def synthetic_samples(n: int, events: int, duration_us: int, seed: int) -> list[np.ndarray]:
    """N-MNIST-like streams: event count and duration jittered by about 10 % per sample."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        k = int(rng.integers(int(events * 0.9), int(events * 1.1) + 1))
        d = int(rng.integers(int(duration_us * 0.9), int(duration_us * 1.1) + 1))
        ev = np.empty(k, dtype=EVENT_DTYPE)
        ev["t"] = np.sort(rng.integers(0, d, k))
        ev["x"] = rng.integers(0, SENSOR[0], k)
        ev["y"] = rng.integers(0, SENSOR[1], k)
        ev["p"] = rng.integers(0, SENSOR[2], k)
        samples.append(ev)
    return samples


def timed(fn):
    """(wall time in seconds, result) of one call, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=200, help="number of samples (default 200)")
    ap.add_argument("--events", type=int, default=4000, help="mean events per sample")
    ap.add_argument("--duration-ms", type=int, default=300, help="mean sample duration")
    ap.add_argument("--time-window", type=int, default=1000, help="frame length in us")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds, best is kept")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    samples = synthetic_samples(args.samples, args.events, args.duration_ms * 1000, args.seed)
    eventset = from_samples(samples, np.zeros(len(samples), dtype=np.int64), SENSOR, ("0",))
    n = len(samples)
    tw = args.time_window
    tonic_frame = ToFrame(sensor_size=SENSOR, time_window=tw)

    n_bins = int(np.ceil(eventset.duration_us / tw))
    methods = {
        "tonic ToFrame, per sample": lambda: [tonic_frame(s) for s in samples],
        "spikescale to_frames, per sample": lambda: [
            to_frames(s, SENSOR, time_window=tw) for s in samples
        ],
        "spikescale frames_for_set, whole": lambda: frames_for_set(eventset, time_window=tw),
        "  the same with dtype=int32": lambda: frames_for_set(
            eventset, time_window=tw, dtype=np.int32
        ),
        f"spikescale raster ({n_bins} bins)": lambda: raster(eventset, tw, n_bins),
    }
    # rounds interleave the methods, so that load from other processes hits all alike;
    # each method's best round counts
    best = dict.fromkeys(methods, float("inf"))
    results = {}
    for _ in range(args.repeat):
        for name, fn in methods.items():
            results[name] = None
            seconds, results[name] = timed(fn)
            best[name] = min(best[name], seconds)
    names = list(methods)
    ref, each, (frames, sample_index, dropped) = (results[k] for k in names[:3])
    frames32 = results[names[3]][0]
    assert frames32.dtype == np.int32 and np.array_equal(frames32, frames)
    counts, late = results[names[4]]
    assert counts.shape == (n, n_bins, SENSOR[2], SENSOR[1], SENSOR[0])
    assert late == 0 and int(counts.sum(dtype=np.int64)) == len(eventset.events)
    del results, frames32, counts

    ref_all = np.concatenate(ref)
    assert frames.shape == ref_all.shape, (frames.shape, ref_all.shape)
    assert np.array_equal(frames, ref_all), "frames_for_set differs from tonic"
    assert all(np.array_equal(f, r) for (f, _), r in zip(each, ref)), "to_frames differs from tonic"
    assert np.array_equal(sample_index, np.repeat(np.arange(n), [len(r) for r in ref]))
    assert dropped == sum(d for _, d in each)
    del ref, ref_all, each

    print(
        f"{n} samples, {len(eventset.events)} events ({len(eventset.events) / n:.0f}/sample), "
        f"sensor {SENSOR}, time_window={tw} us, {len(sample_index)} frames, "
        f"{dropped} events dropped (by tonic too); outputs equal: yes"
    )
    print(
        f"frames_for_set dtype: {frames.dtype} (the smallest exact one); "
        f"best of {args.repeat} interleaved rounds"
    )
    print(f"{'method':34s} {'seconds':>9s} {'samples/s':>11s} {'vs tonic':>9s}")
    t_tonic = best[names[0]]
    for name, seconds in best.items():
        print(f"{name:34s} {seconds:9.3f} {n / seconds:11.0f} {t_tonic / seconds:8.1f}x")


if __name__ == "__main__":
    main()
