"""GPU check: `train` and `evaluate` with ``device: cuda`` against the same stages on the CPU.

Runs the real ``spikescale`` stages (the commands the rules run) on a reduced ``digits``
configuration in a temporary folder:

* ``train`` once on the CPU and once on the GPU, from the same frames and seed: the two
  CNNs' test accuracies (GPU kernels sum in another order, so the weights differ slightly);
* ``normalise`` and ``convert`` the CPU-trained CNN once, then ``evaluate`` that one SNN at
  each factor on the CPU (the numba event-driven backend) and on the GPU (the dense torch
  path): predictions must agree on at least ``--min-agreement`` of the samples and the
  per-layer spike totals within ``--spike-tolerance`` (relative), since the GPU's float32
  sums differ from the CPU's in the last bits.

Prints the figures and each stage's wall time on both devices. Exits 1 when no CUDA GPU is
visible to torch (it is not part of ``make test``), 2 when a comparison fails.

    make gpu-check     # or: .venv/bin/python benchmarks/gpu_check.py [--samples-per-class 40]

``--device cpu`` runs the same comparison of the CPU with itself (the tests use it to keep
this script working on machines without a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

SPIKESCALE = Path(sys.executable).parent / "spikescale"


def stage(workdir: Path, name: str, params: dict, *args: str) -> float:
    """Run ``spikescale <name>`` with the given parameter sections; return its wall time."""
    start = time.perf_counter()
    cmd = [str(SPIKESCALE), name, "--params", json.dumps(params), *args, "--quiet"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"spikescale {name} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples-per-class", type=int, default=40, help="digits recordings per class")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs")
    ap.add_argument("--factors", default="2,8,32", help="comma-separated scale factors")
    ap.add_argument("--min-agreement", type=float, default=0.98, help="predictions that must agree")
    ap.add_argument("--spike-tolerance", type=float, default=0.01, help="relative, per layer")
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU")
    a = ap.parse_args()

    if a.device == "cuda" and not torch.cuda.is_available():
        print(
            f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}):"
            " the GPU check needs one, and a CUDA build of torch",
            file=sys.stderr,
        )
        return 1
    if a.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")

    dataset = {"name": "digits", "max_samples_per_class": a.samples_per_class}
    training = {"epochs": a.epochs}
    failed = False
    with tempfile.TemporaryDirectory(prefix="spikescale-gpu-check-") as tmp:
        work = Path(tmp)
        stage(work, "events", {"dataset": dataset}, "--out-dir", "events")
        stage(work, "frames", {}, "--events-dir", "events", "--out-dir", "frames")
        accuracy, seconds = {}, {}
        for device in ("cpu", a.device):
            seconds[f"train {device}"] = stage(
                work, "train", {"training": training, "device": device},
                "--frames-dir", "frames", "--events", "events/test.parquet",
                "--out", f"{device}/cnn.pt", "--report", f"{device}/training.json",
                "--threads", "2",
            )  # fmt: skip
            report = json.loads((work / device / "training.json").read_text())
            accuracy[device] = report["cnn_test_accuracy"]
        print(f"CNN test accuracy: CPU {accuracy['cpu']:.4f}, {a.device} {accuracy[a.device]:.4f}")
        stage(work, "normalise", {}, "--cnn", "cpu/cnn.pt", "--frames", "frames/train.npz",
              "--out", "cnn_normalised.pt", "--table", "normalisation.json")  # fmt: skip
        stage(work, "convert", {}, "--cnn", "cnn_normalised.pt", "--frames", "frames/train.npz",
              "--out", "snn.pt", "--summary", "snn_layers.json")  # fmt: skip
        for factor in a.factors.split(","):
            tables = {}
            for device in ("cpu", a.device):
                prefix = f"eval_{device}/factor_{factor}"
                seconds[f"evaluate {factor} {device}"] = stage(
                    work, "evaluate", {"device": device},
                    "--snn", "snn.pt", "--events", "events/test.parquet", "--factor", factor,
                    "--out-prefix", prefix, "--threads", "2",
                )  # fmt: skip
                tables[device] = {
                    part: pq.read_table(work / f"{prefix}{suffix}.parquet").to_pydict()
                    for part, suffix in (("samples", ".samples"), ("layers", ".layers"))
                }
            cpu, other = tables["cpu"], tables[a.device]
            same = [
                x == y for x, y in zip(cpu["samples"]["prediction"], other["samples"]["prediction"])
            ]
            agreement = sum(same) / len(same)
            worst = max(
                abs(x - y) / max(x, 1.0)
                for x, y in zip(
                    cpu["layers"]["spikes_per_sample"], other["layers"]["spikes_per_sample"]
                )
            )
            ok = agreement >= a.min_agreement and worst <= a.spike_tolerance
            failed |= not ok
            print(
                f"factor {factor}: predictions agree on {agreement:.2%} of {len(same)} samples, "
                f"largest per-layer spike difference {worst:.3%}: {'ok' if ok else 'FAILED'}"
            )
        print("wall time per stage (process start included):")
        for name, s in seconds.items():
            print(f"  {name:<22} {s:7.1f} s")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
