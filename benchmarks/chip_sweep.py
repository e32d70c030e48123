"""Measurement: each first-layer factor on the float SNN and on its Speck / DYNAP-CNN variant.

Reads a converted model (``models/<dataset>/snn.pt``) and test events as the pipeline
writes them, and for every factor simulates the float SNN (first layer scaled) and the
chip-discretised one (:func:`spikescale.chip.discretised_variant`), with the same binning
as the evaluate stage. Prints, per factor: accuracy and silent fraction of both, the
first layer's integer threshold, spikes and chip synaptic operations per sample
(:func:`spikescale.chip.core_fan_out`), the busiest core's mean and peak SynOps/s
(:func:`spikescale.chip.synops_rates`; peaks from the busiest time bin of every core),
which core that is, whether every core stays within the per-core limit (``--synops-limit``,
default: hardware.synops_per_second_per_core's placeholder) and whether the network maps
onto the chip's cores; ``w>thr`` lists the layers whose largest integer weight exceeds the
threshold (there the chip spikes once per event where the simulation may spike more).
The pipeline's evaluate stage computes the same with ``hardware.target: speck``; this
script sweeps any factors on a finished run without rerunning it.

    .venv/bin/python benchmarks/chip_sweep.py --snn models/digits/snn.pt \\
        --events data/digits/events/test.parquet --factors 1 4 16 64
"""

from __future__ import annotations

import argparse
import functools
import math

import numpy as np
import torch

from spikescale import chip
from spikescale.binning import raster
from spikescale.event_store import iter_batches, read_metadata
from spikescale.model import load_cnn, scale_first_layer, to_snn
from spikescale.params import ConversionParams, HardwareParams
from spikescale.simulate import simulate


def load_snn(path: str):
    """The SNN the convert stage wrote, and the input shape."""
    cnn, arch, blob = load_cnn(path)
    return to_snn(cnn, arch, ConversionParams(**blob["conversion"])), arch.input_shape


def run(snn, input_shape, events, time_bin_us, max_samples, batch_size, backend, limit) -> dict:
    """Accuracy, silent fraction, spikes and chip synops of ``snn`` on the test events."""
    meta = read_metadata(events)
    steps = max(1, math.ceil(meta["duration_us"] / time_bin_us))
    fan = [f.ravel() for f in chip.core_fan_out(snn, input_shape)]
    correct = silent = done = 0
    spikes, synops, bins = [], [], []
    for _, batch in iter_batches(events, batch_size):
        if done >= max_samples:
            break
        if len(batch) > max_samples - done:
            batch = batch.subset(np.arange(max_samples - done))
        done += len(batch)
        grid, _ = raster(batch, time_bin_us, steps)
        result = simulate(snn, torch.from_numpy(grid), np.array([steps - 1]), backend=backend)
        out = result.output_counts.reshape(len(batch), -1)
        pred = np.where(out.sum(1) > 0, out.argmax(1), -1)
        correct += int((pred == batch.labels).sum())
        silent += int((pred < 0).sum())
        ins = [grid.sum(1).reshape(len(batch), -1)]
        ins += [c.reshape(len(batch), -1) for c in result.layer_counts[:-1]]
        synops.append(np.stack([s @ f for s, f in zip(ins, fan)], 1))
        spikes.append(sum(c.reshape(len(batch), -1).sum(1) for c in result.layer_counts))
        run = functools.partial(simulate, backend=backend)
        bins.append(chip.synops_per_step(snn, torch.from_numpy(grid), fan, run))
    synops_all = np.concatenate(synops)
    per_bin = np.concatenate(bins)
    rates = chip.synops_rates(
        synops_all,
        steps * time_bin_us * 1e-6,
        per_bin,
        time_bin_us * 1e-6,
        limit_synops_per_second_per_core=limit,
    )
    return {
        "accuracy": correct / done,
        "silent": silent / done,
        "spikes": float(np.concatenate(spikes).mean()),
        "synops": float(synops_all.sum(1).mean()),
        "rates": rates,
        "input_peak_per_s": rates.peak_synops_per_second[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snn", default="models/digits/snn.pt")
    ap.add_argument("--events", default="data/digits/events/test.parquet")
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--time-bin-us", type=int, default=1000)
    ap.add_argument("--max-samples", type=int, default=10**9)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backend", default="fast")
    ap.add_argument(
        "--synops-limit",
        type=float,
        default=HardwareParams().synops_per_second_per_core,
        help="synops/s one core carries (default: the parameter's placeholder)",
    )
    a = ap.parse_args()
    snn, shape = load_snn(a.snn)
    print(
        f"{'factor':>7} {'float acc':>9} {'chip acc':>8} {'chip silent':>11} {'thr1':>5} "
        f"{'chip spikes':>11} {'chip synops':>11} {'max mean/s':>10} {'max peak/s':>10} "
        f"{'core0 bin/s':>11} {'busiest':>7} {'<=limit':>7} {'w>thr':>11} fits"
    )
    for factor in a.factors:
        common = (
            shape,
            a.events,
            a.time_bin_us,
            a.max_samples,
            a.batch_size,
            a.backend,
            a.synops_limit,
        )
        flt = run(scale_first_layer(snn, factor), *common)
        variant = chip.discretised_variant(snn, factor)
        hw = run(variant.snn, *common)
        fits = chip.chip_mapping(variant.snn, shape)
        r = hw["rates"]
        busiest = fits.layers[int(np.argmax(r.peak_synops_per_second))].name
        above = ",".join(lay.name for lay in variant.layers if lay.weight_above_threshold)
        print(
            f"{factor:>7g} {flt['accuracy']:>9.3f} {hw['accuracy']:>8.3f} {hw['silent']:>11.3f} "
            f"{variant.layers[0].threshold:>5d} {hw['spikes']:>11.0f} {hw['synops']:>11.0f} "
            f"{max(r.mean_synops_per_second):>10.3g} {max(r.peak_synops_per_second):>10.3g} "
            f"{hw['input_peak_per_s']:>11.3g} {busiest:>7} {'yes' if r.within_limit else 'no':>7} "
            f"{above or '-':>11} "
            f"{'yes' if fits.fits else '; '.join(fits.problems)}"
        )


if __name__ == "__main__":
    main()
