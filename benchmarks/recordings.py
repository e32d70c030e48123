"""Benchmark: reading a user's recordings, per file format.

Writes N-MNIST-sized recordings (about 4,000 events over 300 ms on a 34x34x2 sensor) in
every format ``spikescale.recordings`` reads, with the test writers (from the format
specifications), then times ``read_recording`` over them and prints recordings/s and
events/s per format; also one long recording per format (default 1 M events over 8 s) to show the
per-event rate, and the EVT 3.0 decoder against expelliarmus on the same long file.

    PYTHONPATH=src:tests .venv/bin/python benchmarks/recordings.py --files 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from expelliarmus import Wizard

from fake_datasets import random_events
from recording_formats import (
    write_aedat4,
    write_bin,
    write_dat,
    write_npy,
    write_npz,
    write_raw,
)
from spikescale.recordings import ReadOptions, read_recording

SENSOR = (34, 34, 2)
WRITERS = {
    "npy": lambda p, ev: write_npy(p.with_suffix(".npy"), ev),
    "npz": lambda p, ev: write_npz(p.with_suffix(".npz"), ev),
    "bin": lambda p, ev: write_bin(p.with_suffix(".bin"), ev),
    "aedat4": lambda p, ev: write_aedat4(p.with_suffix(".aedat4"), ev, 34, 34),
    "dat": lambda p, ev: write_dat(p.with_suffix(".dat"), ev, 34, 34),
    "evt2": lambda p, ev: write_raw(p.with_suffix(".raw"), ev, 34, 34, "evt2"),
    "evt3": lambda p, ev: write_raw(p.with_suffix(".raw"), ev, 34, 34, "evt3"),
}


def timed(paths: list[Path], options: ReadOptions) -> tuple[float, int]:
    start = time.perf_counter()
    events = sum(len(read_recording(p, options).events) for p in paths)
    return time.perf_counter() - start, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="recordings per format")
    parser.add_argument("--events", type=int, default=4000, help="events per recording")
    parser.add_argument("--long-events", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    options = ReadOptions(sensor_size=SENSOR)
    samples = [random_events(rng, args.events, SENSOR) for _ in range(args.files)]
    # 8 s: N-MNIST's .bin holds 23-bit timestamps
    long = random_events(rng, args.long_events, SENSOR, duration=8_000_000)
    print(
        f"{args.files} recordings of {args.events} events per format; "
        f"one of {args.long_events:,} events over 8 s"
    )
    print(f"{'format':8} {'recordings/s':>13} {'M events/s':>11} {'long: M events/s':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, write in WRITERS.items():
            folder = Path(tmp) / fmt
            paths = [write(folder / f"r{i:05d}", ev) for i, ev in enumerate(samples)]
            read_recording(paths[0], options)  # imports (tonic's take seconds) not timed
            seconds, events = timed(paths, options)
            long_path = write(folder / "long", long)
            long_seconds, long_events = timed([long_path], options)
            print(
                f"{fmt:8} {len(paths) / seconds:13,.0f} {events / seconds / 1e6:11.2f} "
                f"{long_events / long_seconds / 1e6:17.2f}"
            )
            if fmt == "evt3":
                start = time.perf_counter()
                Wizard(encoding="evt3").read(long_path)
                theirs = time.perf_counter() - start
                print(
                    f"  evt3 long file: spikescale.recordings {long_seconds:.3f} s, "
                    f"expelliarmus {theirs:.3f} s (whose time stamps are wrong after 4 ms)"
                )


if __name__ == "__main__":
    main()
