"""The `frames` stage: event recordings binned into the CNN's training frames.

Each split becomes one ``.npz`` archive holding ``frames`` (n_frames, P, H, W), the
``sample_index`` of each frame, the per-sample ``labels`` and the number of events the
binning ``dropped``. Archives are written with fixed zip timestamps, so equal frames give
equal bytes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from spikescale.binning import frames_for_set
from spikescale.events import EventSet, read_events
from spikescale.io import atomic_path
from spikescale.params import FramesParams


def binning_kwargs(p: FramesParams) -> dict:
    """FramesParams as keyword arguments of tonic's ToFrame (and our binning)."""
    if p.mode == "time_window":
        return {"time_window": p.time_window_us, "overlap": p.overlap, "include_incomplete": p.include_incomplete}
    if p.mode == "event_count":
        return {"event_count": p.event_count, "overlap": p.overlap, "include_incomplete": p.include_incomplete}
    if p.mode == "n_time_bins":
        return {"n_time_bins": p.n_time_bins, "overlap": p.overlap}
    return {"n_event_bins": p.n_event_bins, "overlap": p.overlap}


def make_frames(eventset: EventSet, p: FramesParams) -> dict[str, np.ndarray]:
    frames, sample_index, dropped = frames_for_set(eventset, **binning_kwargs(p))
    if not p.bins_as_examples:
        summed = np.zeros((len(eventset), *frames.shape[1:]), dtype=np.int64)
        np.add.at(summed, sample_index, frames)
        frames, sample_index = summed, np.arange(len(eventset))
    if len(frames) == 0:
        raise ValueError(f"frames: binning with {binning_kwargs(p)} produced no frames")
    return {
        "frames": frames,  # the smallest integer type that holds the counts exactly
        "sample_index": sample_index.astype(np.int64),
        "labels": eventset.labels,
        "dropped": np.int64(dropped),
    }


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an ``.npz`` that ``np.load`` reads, byte-identical for equal data."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame file {path} does not exist (run the 'frames' stage first)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def run_frames(p: FramesParams, events_dir: str | Path, out_dir: str | Path) -> dict[str, dict]:
    summary = {}
    for split in ("train", "test"):
        arrays = make_frames(read_events(Path(events_dir) / f"{split}.parquet"), p)
        save_arrays(Path(out_dir) / f"{split}.npz", arrays)
        summary[split] = {"frames": int(len(arrays["frames"])), "dropped_events": int(arrays["dropped"])}
    return summary
