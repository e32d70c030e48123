"""Binning event streams into frames, vectorised over whole splits.

Two products:

* :func:`to_frames` / :func:`frames_for_set` cut each sample into frames exactly as
  ``tonic.transforms.ToFrame`` does (same four slicing modes, same overlap and
  ``include_incomplete`` semantics, same quirks), but for all samples of a split at once:
  two compiled passes over the events for whole-microsecond windows without overlap (the
  common case), a few numpy passes otherwise, instead of a Python loop per frame. They
  also say how many events fell in no frame (tonic drops some silently).
* :func:`raster` puts every sample on one fixed time grid starting at t = 0: the input of
  the spiking network, where time must mean the same thing in every sample.

Both take ``downsample`` (an integer spatial factor ``k``, default 1): an event at
``(x, y)`` counts at ``(x // k, y // k)`` on a sensor of ``ceil(W / k) x ceil(H / k)``, so
the counts of each ``k x k`` block are summed and no event is lost at the edges. It is
applied by :func:`downsampled_sensor` and :func:`_downsample` here and nowhere else, so
training frames and evaluation rasters cannot disagree about it.

Tonic behaviour reproduced on purpose (see ``tonic/slicers.py``):

* ``time_window``: windows ``[t0 + k*stride, t0 + k*stride + time_window)`` with
  ``stride = time_window - overlap`` and ``t0`` the *first event's* timestamp. The number
  of windows is ``floor((duration - time_window) / stride) + 1`` (``ceil`` with
  ``include_incomplete``), at least 1, ``duration = t_last - t0``. So the events after the
  last whole window are dropped, and even with ``include_incomplete`` the last event is
  dropped whenever ``duration - time_window`` is a multiple of ``stride`` (the last
  window then ends exactly at ``t_last``, exclusive). A stream shorter than one window
  gives one frame holding everything, with or without ``include_incomplete``. A negative
  overlap leaves gaps between windows; their events are dropped.
* ``event_count``: frames of ``min(event_count, n)`` events starting every
  ``trunc(k * (event_count - overlap))`` events; the trailing events that do not fill a
  frame are dropped unless ``include_incomplete``.
* ``n_time_bins``: bin length ``(duration // n_time_bins) * (1 + overlap)`` (integer
  division first), stride ``length * (1 - overlap)``. Without overlap the bins end at or
  before the last event, so at least that event is always dropped; a stream shorter than
  ``n_time_bins`` microseconds gives all-empty frames and drops every event.
* ``n_event_bins``: ``int((n // n_event_bins) * (1 + overlap))`` events per bin, stride
  ``int(that * (1 - overlap))``. Without overlap the last ``n % n_event_bins`` events are
  dropped; a stream with fewer events than bins gives all-empty frames.
* Single-polarity sensor: tonic maps the polarity to 0 when a sample has only one
  polarity value and refuses a sample that mixes two. Here ``p`` must be 0 or 1 on such a
  sensor (1 being the usual "ON only" coding) and a sample may not mix them.

Where this module deliberately differs from tonic:

* Frame dtype: by default the smallest of uint8, int16, int32, int64 that holds the
  largest frame's event count, so values are always exact (tonic's int16 wraps past
  32767 events in a pixel) and short windows cost a quarter of int32's memory; filling
  the frames is memory-bound, so this is most of the speed. ``dtype=`` fixes it.
* Empty sample: tonic returns float zeros of shape ``(n, P, W, H)`` (width and height
  swapped). Here it is the same number of frames (1 for ``time_window`` /
  ``event_count``, ``n_time_bins`` / ``n_event_bins`` otherwise), all zero, in the usual
  ``(n, P, H, W)`` layout and dtype, so every sample contributes frames and shapes agree.
* Bad input raises ``ValueError`` with a message instead of an ``AssertionError``,
  ``IndexError``, a silent wrap-around for negative coordinates, or a mutated input
  array: non-positive sizes, ``overlap`` outside ``[0, 1)`` for the bin modes or not
  below the window for the others, ``include_incomplete`` with a bin mode (tonic ignores
  it there), events outside the sensor, unsorted timestamps.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from spikescale.errors import InputError
from spikescale.event_store import EventSet

_MODES = ("time_window", "event_count", "n_time_bins", "n_event_bins")


class _Mode(NamedTuple):
    name: str
    value: float
    overlap: float
    include_incomplete: bool


# ---------------------------------------------------------------------------- public API


def to_frames(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    *,
    time_window: float | None = None,
    event_count: int | None = None,
    n_time_bins: int | None = None,
    n_event_bins: int | None = None,
    overlap: float = 0.0,
    include_incomplete: bool = False,
    dtype: npt.DTypeLike | None = None,
) -> tuple[np.ndarray, int]:
    """Frames of one sample, equal to ``tonic.transforms.ToFrame`` with the same arguments.

    ``events`` is a structured array with fields ``x``, ``y``, ``t``, ``p``, sorted by
    ``t``; ``sensor_size`` is ``(width, height, polarities)``. Exactly one of
    ``time_window`` (us), ``event_count``, ``n_time_bins``, ``n_event_bins`` is given;
    ``overlap`` and ``include_incomplete`` mean what they mean in tonic.

    Returns ``(frames, dropped)``: ``frames`` of shape ``(n_frames, P, H, W)`` holding
    event counts, and the number of events that fell in no frame. ``dtype=None`` returns
    the smallest of uint8, int16, int32, int64 that holds the largest frame's event count
    (exact, and four times less memory than int32 for short windows: filling the frames
    is memory-bound); pass a dtype to fix it, e.g. across batches. A dtype too small for
    the actual counts raises ``ValueError``.
    """
    mode = _check_mode(
        time_window, event_count, n_time_bins, n_event_bins, overlap, include_incomplete
    )
    events = _check_array(events)
    offsets = np.array([0, len(events)], dtype=np.int64)
    frames, _, dropped = _frames(events, offsets, _check_sensor(sensor_size), mode, dtype)
    return frames, dropped


def frames_for_set(
    eventset: EventSet,
    *,
    time_window: float | None = None,
    event_count: int | None = None,
    n_time_bins: int | None = None,
    n_event_bins: int | None = None,
    overlap: float = 0.0,
    include_incomplete: bool = False,
    dtype: npt.DTypeLike | None = None,
    downsample: int = 1,
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`to_frames` for every sample of a split at once.

    Returns ``(frames, sample_index, dropped)``: the frames of all samples concatenated in
    sample order, shape ``(total_frames, P, H, W)``; for each frame the index of its
    sample (int64); and the total number of events that fell in no frame. ``dtype`` as in
    :func:`to_frames`, chosen once for the whole set. ``downsample`` sums the counts of
    ``k x k`` pixel blocks (module docstring); ``H, W`` are then the downsampled sensor's.
    """
    mode = _check_mode(
        time_window, event_count, n_time_bins, n_event_bins, overlap, include_incomplete
    )
    events = _check_array(eventset.events)
    offsets = _check_offsets(eventset.offsets, len(events))
    events, sensor = _downsample(events, offsets, _check_sensor(eventset.sensor_size), downsample)
    return _frames(events, offsets, sensor, mode, dtype)


def downsampled_sensor(
    sensor_size: tuple[int, int, int], downsample: int = 1
) -> tuple[int, int, int]:
    """``(width, height, polarities)`` of a sensor seen through a ``downsample`` factor:
    ``ceil`` of each side over the factor, so that the last, partial block keeps its events."""
    width, height, polarities = _check_sensor(sensor_size)
    k = _positive_int("downsample", downsample)
    return (-(-width // k), -(-height // k), polarities)


def raster(
    eventset: EventSet,
    time_bin_us: int,
    n_bins: int,
    dtype: npt.DTypeLike = np.float32,
    downsample: int = 1,
) -> tuple[np.ndarray, int]:
    """Event counts of every sample on one fixed time grid starting at t = 0.

    Bin ``k`` holds the events with ``k * time_bin_us <= t < (k + 1) * time_bin_us``,
    whatever the sample's first timestamp (unlike tonic's ``time_window``, which starts
    at the first event), so a time step means the same in every sample. Returns
    ``(counts, dropped)``: ``counts`` of shape ``(n_samples, n_bins, P, H, W)`` in
    ``dtype``, and the number of events at or after ``n_bins * time_bin_us``, which are
    counted nowhere. Events need not be sorted; negative timestamps raise ``ValueError``.
    ``downsample`` sums ``k x k`` pixel blocks exactly as :func:`frames_for_set` does.
    """
    time_bin_us = _positive_int("time_bin_us", time_bin_us)
    n_bins = _positive_int("n_bins", n_bins)
    events = _check_array(eventset.events)
    offsets = _check_offsets(eventset.offsets, len(events))
    events, sensor = _downsample(events, offsets, _check_sensor(eventset.sensor_size), downsample)
    width, height, polarities = sensor
    frame_size = polarities * height * width
    n_samples = len(offsets) - 1
    counts = np.diff(offsets)
    cell, scratch = _cells(events, offsets, sensor)
    t = events["t"]
    if len(t) and t.min() < 0:
        i = int(np.argmax(t < 0))
        raise InputError(
            f"event field 't' has value {int(t[i])} < 0 in sample "
            f"{_sample_of(offsets, i)}: raster bins start at t = 0"
        )
    flat = np.floor_divide(t, time_bin_us)  # the time bin of every event
    keep = np.less(flat, n_bins, out=scratch.view(np.bool_)[: len(t)])
    dropped = int(len(t) - np.count_nonzero(keep))
    flat += np.repeat(np.arange(0, n_samples * n_bins, n_bins, dtype=np.int64), counts)
    if dropped:
        flat = flat[keep]
    # at most a sample's events in one cell; count exactly per bin if that is too many
    most = int(counts.max()) if n_samples else 0
    if dtype is not None and most > _exact_top(np.dtype(dtype)) and len(flat):
        most = int(np.bincount(flat).max())
    out_dtype, count_dtype = _choose_dtype(dtype, most)
    flat *= frame_size
    flat += cell[keep] if dropped else cell
    out = np.zeros(n_samples * n_bins * frame_size, dtype=count_dtype)
    np.add.at(out, flat, count_dtype.type(1))
    out = _narrow(out, out_dtype)
    return out.reshape(n_samples, n_bins, polarities, height, width), dropped


# ---------------------------------------------------------------------------- validation


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and bool(np.isfinite(v))


def _positive_int(name: str, v) -> int:
    if not _is_int(v) or v <= 0:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_mode(
    time_window, event_count, n_time_bins, n_event_bins, overlap, include_incomplete
) -> _Mode:
    given = {
        name: v
        for name, v in zip(_MODES, (time_window, event_count, n_time_bins, n_event_bins))
        if v is not None
    }
    if len(given) != 1:
        got = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "none"
        raise InputError(
            f"give exactly one of time_window, event_count, n_time_bins, n_event_bins; got {got}"
        )
    ((name, value),) = given.items()
    if not _is_real(overlap):
        raise InputError(f"overlap must be a finite number, got {overlap!r}")
    if name == "time_window":
        if not _is_real(value) or value <= 0:
            raise InputError(
                f"time_window must be a positive number of microseconds, got {value!r}"
            )
    else:
        _positive_int(name, value)
    if name in ("time_window", "event_count"):
        if overlap >= value:
            raise InputError(f"overlap ({overlap!r}) must be smaller than {name} ({value!r})")
    else:
        if not 0 <= overlap < 1:
            raise InputError(
                f"overlap for {name} is a fraction of a bin in [0, 1), got {overlap!r}"
            )
        if include_incomplete:
            raise InputError(
                f"include_incomplete applies only to time_window and event_count, not {name}"
            )
    return _Mode(name, value, overlap, bool(include_incomplete))


def _check_sensor(sensor_size) -> tuple[int, int, int]:
    try:
        ok = len(sensor_size) == 3 and all(_is_int(s) and s > 0 for s in sensor_size)
    except TypeError:
        ok = False
    if not ok:
        raise InputError(
            "sensor_size must be three positive integers (width, height, polarities), "
            f"got {sensor_size!r}"
        )
    return tuple(int(s) for s in sensor_size)


def _check_array(events: np.ndarray) -> np.ndarray:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise ValueError(
            f"events must be a structured array with fields x, y, t, p; missing {missing}"
        )
    if events.ndim != 1:
        raise ValueError(f"events must be one-dimensional, got shape {events.shape}")
    return events


def _check_offsets(offsets, n_events: int) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    if (
        offsets.ndim != 1
        or not len(offsets)
        or offsets[0] != 0
        or offsets[-1] != n_events
        or np.any(np.diff(offsets) < 0)
    ):
        raise ValueError(f"offsets must rise from 0 to the number of events ({n_events})")
    return offsets


def _sample_of(offsets: np.ndarray, i: int) -> int:
    return int(np.searchsorted(offsets, i, side="right") - 1)


def _cells(
    events: np.ndarray, offsets: np.ndarray, sensor: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index ``(p * H + y) * W + x`` of every event, after checking the events.

    Each field is copied once into a contiguous int32 array and range-checked there (as
    unsigned, so negative values count as too large): cheaper than strided reductions.
    Returns the indices and a free int32 scratch array of the same length. Both live in
    one allocation: fresh memory costs a page fault per 4 KiB, and numpy asks for huge
    pages only from 4 MiB up, so few large buffers beat many medium ones.
    """
    width, height, polarities = sensor
    if polarities * height * width >= 2**31:
        raise InputError(f"sensor_size={sensor} has 2**31 pixels or more")
    # p == 1 is allowed on a single-polarity sensor (ON-only coding) and counted as 0
    fields = (("p", polarities if polarities > 1 else 2), ("y", height), ("x", width))
    n = len(events)
    workspace = np.empty(2 * n, dtype=np.int32)
    cell, part = workspace[:n], workspace[n:]
    if polarities == 1:
        cell[:] = 0
    for (name, limit), scale in zip(fields, (0, height, width)):
        np.copyto(part, events[name], casting="unsafe")
        if len(part) and part.view(np.uint32).max() >= limit:
            i = int(np.argmax(part.view(np.uint32) >= limit))
            rule = f"0 <= {name} < {limit}"
            if name == "p" and polarities == 1:
                rule = "p to be 0 (or 1 for ON-only data, counted as polarity 0)"
            raise InputError(
                f"event field '{name}' has value {events[name][i].item()} outside the sensor in "
                f"sample {_sample_of(offsets, i)}: sensor_size={sensor} (width, height, "
                f"polarities) needs {rule}"
            )
        if name == "p":
            if polarities > 1:
                cell, part = part, cell
            elif len(part):
                _check_single_polarity(part, offsets, sensor)
        else:
            cell *= scale
            cell += part
    return cell, part


def _downsample(
    events: np.ndarray, offsets: np.ndarray, sensor: tuple[int, int, int], downsample: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The events with ``x // k, y // k`` and the downsampled sensor; unchanged for ``k = 1``.

    Coordinates are checked against the full sensor first (an event just outside it could
    otherwise land inside the last block); the input array is not modified.
    """
    k = _positive_int("downsample", downsample)
    if k == 1:
        return events, sensor
    width, height, _ = sensor
    for name, limit in (("x", width), ("y", height)):
        values = events[name]
        bad = (values < 0) | (values >= limit)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"event field '{name}' has value {values[i].item()} outside the sensor in "
                f"sample {_sample_of(offsets, i)}: sensor_size={sensor} (width, height, "
                f"polarities) needs 0 <= {name} < {limit}"
            )
    out = events.copy()
    out["x"] //= k
    out["y"] //= k
    return out, downsampled_sensor(sensor, k)


def _check_single_polarity(p: np.ndarray, offsets: np.ndarray, sensor) -> None:
    """Tonic refuses a sample that mixes polarities on a single-polarity sensor."""
    nonempty = offsets[:-1][offsets[1:] > offsets[:-1]]
    mixed = np.minimum.reduceat(p, nonempty) != np.maximum.reduceat(p, nonempty)
    if mixed.any():
        s = _sample_of(offsets, int(nonempty[np.argmax(mixed)]))
        raise InputError(
            f"sample {s} mixes polarities 0 and 1 but sensor_size={sensor} has a single "
            "polarity (tonic refuses this too)"
        )


def _check_sorted(t: np.ndarray, offsets: np.ndarray, scratch: np.ndarray) -> None:
    """Refuse decreasing timestamps within a sample (a drop between samples is fine).

    ``scratch`` is any free array of at least ``len(t)`` bytes.
    """
    if len(t) < 2:
        return
    decreasing = np.less(t[1:], t[:-1], out=scratch.view(np.bool_)[: len(t) - 1])
    inner = offsets[1:-1]
    decreasing[inner[(inner > 0) & (inner < len(t))] - 1] = False
    if decreasing.any():
        s = _sample_of(offsets, int(np.argmax(decreasing)))
        raise InputError(f"events of sample {s} are not sorted by t")


def _exact_top(dtype: np.dtype) -> int:
    """Largest count that ``dtype`` holds exactly (and every smaller one)."""
    if dtype.kind in "iu":
        return int(np.iinfo(dtype).max)
    return 2 ** (np.finfo(dtype).nmant + 1)


def _narrow(counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``counts`` as ``dtype``, refusing values that would not survive the cast."""
    if counts.dtype == dtype:
        return counts
    if counts.size and counts.max() > _exact_top(dtype):
        raise ValueError(
            f"a pixel holds {int(counts.max())} events in one frame or bin, "
            f"more than dtype {dtype} "
            "holds exactly; pass a wider dtype"
        )
    return counts.astype(dtype)


def _choose_dtype(dtype: npt.DTypeLike | None, most: int) -> tuple[np.dtype, np.dtype]:
    """(dtype to return, dtype to count in) for frames whose counts are at most ``most``.

    ``None`` picks the smallest of uint8, int16, int32, int64 that holds ``most``. An
    explicit dtype that may be too small is counted in a wide type and checked after.
    """
    if dtype is None:
        for candidate in (np.uint8, np.int16, np.int32, np.int64):
            if most <= np.iinfo(candidate).max:
                return np.dtype(candidate), np.dtype(candidate)
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise ValueError(f"dtype must be an integer or floating dtype, got {dtype}")
    return dtype, (dtype if most <= _exact_top(dtype) else np.dtype(np.int64))


# ---------------------------------------------------------------------------- slicing


class _Samples(NamedTuple):
    """Per-sample facts the slicers need (zeros for empty samples)."""

    offsets: np.ndarray
    counts: np.ndarray
    t0: np.ndarray  # first timestamp
    duration: np.ndarray  # last minus first timestamp


def _samples(t: np.ndarray, offsets: np.ndarray) -> _Samples:
    counts = np.diff(offsets)
    nonempty = counts > 0
    t0 = np.zeros(len(counts), dtype=np.int64)
    t1 = np.zeros(len(counts), dtype=np.int64)
    t0[nonempty] = t[offsets[:-1][nonempty]]
    t1[nonempty] = t[offsets[1:][nonempty] - 1]
    return _Samples(offsets, counts, t0, t1 - t0)


def _frame_counts(s: _Samples, mode: _Mode) -> np.ndarray:
    """Number of frames of every sample, by tonic's formulas (evaluated elementwise)."""
    rounding = np.ceil if mode.include_incomplete else np.floor
    if mode.name == "time_window":
        stride = mode.value - mode.overlap
        n = np.maximum((rounding((s.duration - mode.value) / stride) + 1).astype(np.int64), 1)
    elif mode.name == "event_count":
        stride = mode.value - mode.overlap
        n = (rounding((s.counts - np.minimum(mode.value, s.counts)) / stride) + 1).astype(np.int64)
    else:
        n = np.full(len(s.counts), mode.value, dtype=np.int64)
    # tonic's answer for an empty sample (but in (P, H, W) layout): 1 or n_*_bins frames
    n[s.counts == 0] = 1 if mode.name in ("time_window", "event_count") else mode.value
    return n


def _frame_ranges(
    t: np.ndarray, s: _Samples, n_frames: np.ndarray, frame_sample: np.ndarray, mode: _Mode
) -> tuple[np.ndarray, np.ndarray]:
    """Global event index range ``[start, stop)`` of every frame.

    Reproduces tonic's slicers sample by sample, vectorised: the same floating-point
    expressions are evaluated elementwise, so rounding agrees too.
    """
    k = np.arange(len(frame_sample), dtype=np.int64)
    k -= np.repeat(np.cumsum(n_frames) - n_frames, n_frames)  # index within the sample
    t0 = s.t0[frame_sample]
    if mode.name in ("time_window", "n_time_bins"):
        if mode.name == "time_window":
            begin = k * (mode.value - mode.overlap) + t0
            end = begin + mode.value
        else:
            length = s.duration // mode.value * (1 + mode.overlap)
            begin = k * (length * (1 - mode.overlap))[frame_sample] + t0
            end = begin + length[frame_sample]
        # One searchsorted for all samples: timestamps are integers, so t < bound iff
        # t < ceil(bound); each sample's times move into their own integer key range.
        span = np.where(s.counts > 0, s.duration + 1, 0)
        key_base = np.cumsum(span) - span
        keys = np.repeat(key_base - s.t0, s.counts)
        keys += t
        lo, hi = key_base[frame_sample], (key_base + span)[frame_sample]
        start = np.searchsorted(keys, np.clip(_ceil(begin) - t0 + lo, lo, hi))
        stop = np.searchsorted(keys, np.clip(_ceil(end) - t0 + lo, lo, hi))
    else:
        if mode.name == "event_count":
            begin = (k * (mode.value - mode.overlap)).astype(np.int64)
            end = begin + np.minimum(mode.value, s.counts)[frame_sample]
        else:
            length = (s.counts // mode.value * (1 + mode.overlap)).astype(np.int64)
            begin = k * (length * (1 - mode.overlap)).astype(np.int64)[frame_sample]
            end = begin + length[frame_sample]
        size = s.counts[frame_sample]
        base = s.offsets[:-1][frame_sample]
        start = np.clip(begin, 0, size) + base
        stop = np.clip(end, 0, size) + base
    return start, np.maximum(stop, start)


def _ceil(v: np.ndarray) -> np.ndarray:
    return np.ceil(v).astype(np.int64) if v.dtype.kind == "f" else v.astype(np.int64)


def _frames(
    events: np.ndarray,
    offsets: np.ndarray,
    sensor: tuple[int, int, int],
    mode: _Mode,
    dtype: npt.DTypeLike | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    width, height, polarities = sensor
    frame_size = polarities * height * width
    t = events["t"]
    s = _samples(t, offsets)
    n_frames = _frame_counts(s, mode)
    frame_sample = np.repeat(np.arange(len(n_frames), dtype=np.int64), n_frames)
    fused = _fused_windows(events, s, n_frames, frame_sample, sensor, mode, dtype)
    if fused is not None:
        return fused
    cell, scratch = _cells(events, offsets, sensor)
    total_frames = len(frame_sample)
    # frame f fills out[f * frame_size:(f + 1) * frame_size]; one spare frame at the end
    # collects events that belong to no frame, so that no event needs filtering out
    frame_base = np.arange(0, (total_frames + 1) * frame_size, frame_size, dtype=np.int64)
    spare = frame_base[-1]

    _check_sorted(t, offsets, scratch)
    start, stop = _frame_ranges(t, s, n_frames, frame_sample, mode)
    lengths = stop - start
    # Ranges have non-decreasing starts and stops, so their union is the sum of each
    # range's part beyond the previous range's stop.
    prev_stop = np.concatenate(([0], stop[:-1]))
    gaps = start - prev_stop
    covered = int(np.maximum(stop - np.maximum(start, prev_stop), 0).sum())
    dropped = len(events) - covered
    if covered == int(lengths.sum()) and np.all(gaps >= 0):
        # disjoint frames in order: walk the events once, gap, frame, gap, frame, ...
        segment_base = np.full(2 * total_frames + 1, spare)
        segment_base[1::2] = frame_base[:-1]
        segment_length = np.empty(2 * total_frames + 1, dtype=np.int64)
        segment_length[0:-1:2] = gaps
        segment_length[1::2] = lengths
        segment_length[-1] = len(events) - (stop[-1] if total_frames else 0)
        flat = np.repeat(segment_base, segment_length)
        flat += cell
    else:
        # overlapping frames: an event may count in several frames
        ends = np.cumsum(lengths)
        index = np.repeat(start - (ends - lengths), lengths)
        index += np.arange(int(lengths.sum()), dtype=np.int64)
        flat = np.repeat(frame_base[:-1], lengths)
        flat += cell[index]

    out_dtype, count_dtype = _choose_dtype(dtype, int(lengths.max()) if total_frames else 0)
    out = np.zeros(len(frame_base) * frame_size, dtype=count_dtype)
    np.add.at(out, flat, count_dtype.type(1))
    out = _narrow(out[:spare], out_dtype)
    return out.reshape(total_frames, polarities, height, width), frame_sample, dropped


# ---------------------------------------------------------------------------- fused path
#
# Back-to-back windows of whole microseconds (``time_window`` with an integer length, or
# ``n_time_bins``, both without overlap: the common cases) in two compiled passes over the
# events instead of a dozen numpy passes: count the events of every window (and check the
# order), then add each event to its frame. Only the output array is large, so the cost
# is little more than the page faults of fresh memory. Anything else (overlap, fractional
# windows, bad events, timestamps beyond float64's exact integers) goes the numpy way,
# which also words the errors.

_jit = numba.njit(cache=True, nogil=True)


def _fused_windows(events, s, n_frames, frame_sample, sensor, mode, dtype):
    """:func:`_frames` for back-to-back integer windows, or ``None`` where it does not apply."""
    if mode.overlap != 0:
        return None
    if mode.name == "time_window" and float(mode.value).is_integer():
        window = np.full(len(n_frames), int(mode.value), dtype=np.int64)
    elif mode.name == "n_time_bins":
        window = s.duration // int(mode.value)  # tonic's bin length; 0 drops every event
    else:
        return None
    latest = np.abs(s.t0).max(initial=0) + s.duration.max(initial=0) + window.max(initial=0)
    if latest >= 2**53:  # tonic computes the window bounds in float64
        return None
    width, height, polarities = sensor
    first_frame = np.cumsum(n_frames) - n_frames
    lengths = np.zeros(len(frame_sample), dtype=np.int64)
    t = events["t"]
    dropped = _window_lengths(t, s.offsets, s.t0, n_frames, first_frame, window, lengths)
    if dropped < 0:  # unsorted
        return None
    out_dtype, count_dtype = _choose_dtype(dtype, int(lengths.max()) if len(lengths) else 0)
    out = np.zeros((len(frame_sample), polarities * height * width), dtype=count_dtype)
    ok = _window_fill(
        events["x"],
        events["y"],
        events["p"],
        t,
        s.offsets,
        s.t0,
        n_frames,
        first_frame,
        window,
        width,
        height,
        polarities,
        out,
    )
    if not ok:  # an event outside the sensor, or mixed polarities on a single one
        return None
    out = _narrow(out, out_dtype)
    return out.reshape(len(frame_sample), polarities, height, width), frame_sample, dropped


@_jit
def _window_lengths(t, offsets, t0, n_frames, first_frame, window, lengths):
    """Events per window into ``lengths``; the number dropped, or -1 if a sample is unsorted.

    Sample ``j`` has ``n_frames[j]`` windows of ``window[j]`` microseconds from ``t0[j]``.
    """
    dropped = 0
    for j in range(len(n_frames)):
        # times rise within a sample, so the window index only moves forward: no division
        w = window[j]
        previous, k, end = t0[j], 0, t0[j] + w
        for i in range(offsets[j], offsets[j + 1]):
            ti = t[i]
            if ti < previous:
                return -1
            previous = ti
            while ti >= end and k < n_frames[j]:
                k += 1
                end += w
            if k < n_frames[j]:
                lengths[first_frame[j] + k] += 1
            else:
                dropped += 1
    return dropped


@_jit
def _window_fill(
    x, y, p, t, offsets, t0, n_frames, first_frame, window, width, height, polarities, out
):
    """Add every event to its window's frame; False at the first event that does not fit."""
    one = out.dtype.type(1)
    for j in range(len(n_frames)):
        p_first = p[offsets[j]] if offsets[j] < offsets[j + 1] else 0
        w = window[j]
        k, end = 0, t0[j] + w  # sorted times (checked by _window_lengths)
        for i in range(offsets[j], offsets[j + 1]):
            xi, yi, pi = np.int64(x[i]), np.int64(y[i]), np.int64(p[i])
            if xi < 0 or xi >= width or yi < 0 or yi >= height:
                return False
            if polarities == 1:
                if pi != p_first or pi < 0 or pi > 1:
                    return False
                pi = 0
            elif pi < 0 or pi >= polarities:
                return False
            while t[i] >= end and k < n_frames[j]:
                k += 1
                end += w
            if k < n_frames[j]:
                out[first_frame[j] + k, (pi * height + yi) * width + xi] += one
    return True
