"""spikescale.binning against tonic's ToFrame (the reference) and brute-force counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tonic import slicers
from tonic.transforms import ToFrame

from spikescale import binning
from spikescale.binning import frames_for_set, raster, to_frames
from spikescale.event_store import EVENT_DTYPE, from_samples

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- strategies


@st.composite
def sensors(draw) -> tuple[int, int, int]:
    return (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.sampled_from([1, 2, 2, 3])))


@st.composite
def streams(draw, sensor, min_events=0, max_events=40) -> np.ndarray:
    """A sorted event stream on ``sensor``; single-polarity streams use one p (0 or 1)."""
    width, height, polarities = sensor
    n = draw(st.integers(min_events, max_events))
    step = st.one_of(st.integers(0, 30), st.sampled_from([0, 0, 1, 100]))
    start = draw(st.one_of(st.integers(0, 2000), st.just(10**12)))
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = start + np.cumsum(draw(st.lists(step, min_size=n, max_size=n)), dtype=np.int64)
    ev["x"] = draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n))
    ev["y"] = draw(st.lists(st.integers(0, height - 1), min_size=n, max_size=n))
    if polarities == 1:
        ev["p"] = draw(st.sampled_from([0, 1]))
    else:
        ev["p"] = draw(st.lists(st.integers(0, polarities - 1), min_size=n, max_size=n))
    return ev


@st.composite
def modes(draw) -> dict:
    """ToFrame keyword arguments: one slicing mode, an overlap, include_incomplete."""
    name = draw(st.sampled_from(binning._MODES))
    if name == "time_window":
        window = draw(
            st.one_of(st.integers(1, 120), st.floats(0.5, 120.0), st.sampled_from([10.0, 25.0]))
        )
        overlap = draw(
            st.one_of(
                st.just(0.0),
                st.integers(-int(window), int(np.ceil(window)) - 1),
                st.floats(-1.0, 0.95).map(lambda f: f * window),
            )
        )
        assume(overlap < window)
        return {name: window, "overlap": overlap, "include_incomplete": draw(st.booleans())}
    if name == "event_count":
        count = draw(st.integers(1, 25))
        overlap = draw(
            st.one_of(st.just(0), st.integers(-5, count - 1), st.floats(-3.0, count - 0.5))
        )
        assume(overlap < count)
        return {name: count, "overlap": overlap, "include_incomplete": draw(st.booleans())}
    bins = draw(st.integers(1, 12))
    return {name: bins, "overlap": draw(st.one_of(st.just(0.0), st.floats(0.0, 0.95)))}


def tonic_frames(events: np.ndarray, sensor, **mode) -> np.ndarray:
    return ToFrame(sensor_size=sensor, **mode)(events.copy())  # tonic writes p for 1 polarity


def tonic_dropped(events: np.ndarray, **mode) -> int:
    """Events in none of tonic's own slices, found by tagging every event with its index."""
    tagged = np.zeros(len(events), dtype=[("t", "<i8"), ("i", "<i8")])
    tagged["t"], tagged["i"] = events["t"], np.arange(len(events))
    overlap = mode.get("overlap", 0.0)
    if "time_window" in mode:
        parts = slicers.slice_events_by_time(
            tagged,
            mode["time_window"],
            overlap=overlap,
            include_incomplete=mode["include_incomplete"],
        )
    elif "event_count" in mode:
        parts = slicers.slice_events_by_count(
            tagged,
            mode["event_count"],
            overlap=overlap,
            include_incomplete=mode["include_incomplete"],
        )
    elif "n_time_bins" in mode:
        parts = slicers.slice_events_by_time_bins(tagged, mode["n_time_bins"], overlap=overlap)
    else:
        parts = slicers.slice_events_by_event_bins(tagged, mode["n_event_bins"], overlap=overlap)
    covered = set()
    for part in parts:
        covered.update(part["i"].tolist())
    return len(events) - len(covered)


# ---------------------------------------------------------------------------- to_frames


@FAST
@given(data=st.data())
def test_to_frames_equals_tonic(data):
    sensor = data.draw(sensors())
    events = data.draw(streams(sensor, min_events=1))
    mode = data.draw(modes())
    frames, dropped = to_frames(events, sensor, **mode)
    expected = tonic_frames(events, sensor, **mode)
    assert frames.shape == expected.shape
    np.testing.assert_array_equal(frames, expected)
    assert dropped == tonic_dropped(events, **mode)
    if mode.get("overlap", 0) == 0:  # no event counted twice
        assert int(frames.sum()) + dropped == len(events)


@SOME
@given(data=st.data())
def test_search_path_equals_fast_path(data):
    """The compiled path (back-to-back windows) equals the general numpy search."""
    sensor = data.draw(sensors())
    events = data.draw(streams(sensor))
    if data.draw(st.booleans()):
        mode = {
            "time_window": data.draw(st.integers(1, 60)),
            "include_incomplete": data.draw(st.booleans()),
        }
    else:
        mode = {"n_time_bins": data.draw(st.integers(1, 12))}
    fast = to_frames(events, sensor, **mode)
    original = binning._fused_windows
    binning._fused_windows = lambda *args: None
    try:
        slow = to_frames(events, sensor, **mode)
    finally:
        binning._fused_windows = original
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[1] == slow[1]


def test_tonic_quirks_are_reproduced():
    ev = np.zeros(5, dtype=EVENT_DTYPE)
    ev["t"] = [100, 110, 120, 130, 200]
    # time_window starts at the first event; the last event sits exactly at the end of
    # the last window, so it is dropped even with include_incomplete
    frames, dropped = to_frames(ev, (1, 1, 1), time_window=50, include_incomplete=True)
    assert frames[:, 0, 0, 0].tolist() == [4, 0] and dropped == 1
    # n_time_bins never reaches the last event
    frames, dropped = to_frames(ev, (1, 1, 1), n_time_bins=2)
    assert frames[:, 0, 0, 0].tolist() == [4, 0] and dropped == 1
    # a stream shorter than n_time_bins microseconds: every event dropped
    frames, dropped = to_frames(ev[:2], (1, 1, 1), n_time_bins=20)
    assert frames.shape == (20, 1, 1, 1) and frames.sum() == 0 and dropped == 2
    # n_event_bins drops the remainder n % bins
    frames, dropped = to_frames(ev, (1, 1, 1), n_event_bins=2)
    assert frames[:, 0, 0, 0].tolist() == [2, 2] and dropped == 1
    # a stream shorter than one window is one frame, with or without include_incomplete
    frames, dropped = to_frames(ev, (1, 1, 1), time_window=10**6)
    assert frames.shape == (1, 1, 1, 1) and frames.sum() == 5 and dropped == 0


@pytest.mark.parametrize(
    "mode, n",
    [
        ({"time_window": 10}, 1),
        ({"time_window": 10, "include_incomplete": True}, 1),
        ({"event_count": 3}, 1),
        ({"n_time_bins": 4}, 4),
        ({"n_event_bins": 5, "overlap": 0.5}, 5),
    ],
)
def test_empty_stream_gives_tonics_frame_count_in_our_layout(mode, n):
    sensor = (5, 3, 2)
    empty = np.zeros(0, dtype=EVENT_DTYPE)
    frames, dropped = to_frames(empty, sensor, **mode)
    assert frames.shape == (n, 2, 3, 5) and not frames.any() and dropped == 0
    # tonic: same count, but (n, P, W, H) floats
    assert tonic_frames(empty, sensor, **mode).shape == (n, 2, 5, 3)


def test_single_polarity_maps_p1_to_0_like_tonic():
    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["p"] = [0, 1, 2], [0, 1, 1], 1
    frames, _ = to_frames(ev, (2, 1, 1), event_count=3)
    np.testing.assert_array_equal(frames, tonic_frames(ev, (2, 1, 1), event_count=3))
    assert frames[0, 0, 0].tolist() == [1, 2]
    assert ev["p"].tolist() == [1, 1, 1]  # input untouched (tonic overwrites it)


# ---------------------------------------------------------------------------- dtype


def test_default_dtype_is_smallest_exact():
    ev = np.zeros(300, dtype=EVENT_DTYPE)
    ev["t"] = np.arange(300)
    small, _ = to_frames(ev, (2, 2, 1), event_count=255)
    assert small.dtype == np.uint8 and small.max() == 255
    big, _ = to_frames(ev, (2, 2, 1), event_count=300)
    assert big.dtype == np.int16 and big.max() == 300
    wide, _ = to_frames(ev, (2, 2, 1), event_count=300, dtype=np.int32)
    assert wide.dtype == np.int32 and wide.max() == 300
    as_float, _ = to_frames(ev, (2, 2, 1), event_count=300, dtype=np.float32)
    assert as_float.dtype == np.float32 and as_float.max() == 300
    spread = ev.copy()
    spread["x"] = np.arange(300) % 2
    fits, _ = to_frames(spread, (2, 2, 1), event_count=300, dtype=np.uint8)  # 150 per pixel
    assert fits.dtype == np.uint8 and fits.max() == 150
    with pytest.raises(ValueError, match="300 events .* uint8"):
        to_frames(ev, (2, 2, 1), event_count=300, dtype=np.uint8)
    with pytest.raises(ValueError, match="dtype"):
        to_frames(ev, (2, 2, 1), event_count=300, dtype=bool)


# ---------------------------------------------------------------------------- frames_for_set


@SOME
@given(data=st.data())
def test_frames_for_set_equals_per_sample(data):
    sensor = data.draw(sensors())
    samples = data.draw(st.lists(streams(sensor, max_events=25), min_size=0, max_size=6))
    mode = data.draw(modes())
    eventset = from_samples(samples, np.zeros(len(samples), dtype=np.int64), sensor, ("a",))
    frames, sample_index, dropped = frames_for_set(eventset, **mode)
    parts = [to_frames(s, sensor, **mode) for s in samples]
    width, height, polarities = sensor
    expected = np.concatenate([f for f, _ in parts] or [np.zeros((0, polarities, height, width))])
    assert frames.shape == expected.shape
    np.testing.assert_array_equal(frames, expected)
    assert sample_index.dtype == np.int64
    per_sample = [len(f) for f, _ in parts]
    np.testing.assert_array_equal(sample_index, np.repeat(np.arange(len(samples)), per_sample))
    assert dropped == sum(d for _, d in parts)


# ---------------------------------------------------------------------------- raster


@SOME
@given(data=st.data())
def test_raster_equals_explicit_loop(data):
    sensor = data.draw(sensors())
    samples = data.draw(st.lists(streams(sensor, max_events=25), min_size=0, max_size=5))
    samples = [s for s in samples if not len(s) or s["t"][-1] < 10**6]  # keep the grid small
    bin_us = data.draw(st.integers(1, 400))
    n_bins = data.draw(st.integers(1, 12))
    eventset = from_samples(samples, np.zeros(len(samples), dtype=np.int64), sensor, ("a",))
    counts, dropped = raster(eventset, bin_us, n_bins)
    width, height, polarities = sensor
    expected = np.zeros((len(samples), n_bins, polarities, height, width), dtype=np.float32)
    expected_dropped = 0
    for i, sample in enumerate(samples):
        for x, y, t, p in sample.tolist():
            k = t // bin_us
            if k < n_bins:
                expected[i, k, p if polarities > 1 else 0, y, x] += 1
            else:
                expected_dropped += 1
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts, expected)
    assert dropped == expected_dropped


def test_raster_grid_starts_at_zero_not_at_first_event():
    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["t"] = [2500, 2999, 3000]
    eventset = from_samples([ev], [0], (1, 1, 1), ("a",))
    counts, dropped = raster(eventset, 1000, 3, dtype=np.int32)
    assert counts[0, :, 0, 0, 0].tolist() == [0, 0, 2] and dropped == 1
    assert counts.dtype == np.int32


def test_raster_narrow_dtype_is_exact_or_refused():
    ev = np.zeros(600, dtype=EVENT_DTYPE)
    ev["t"] = np.arange(600)  # 300 events in each of two bins, all on one pixel
    eventset = from_samples([ev], [0], (1, 1, 1), ("a",))
    counts, _ = raster(eventset, 300, 2, dtype=np.int16)
    assert counts.dtype == np.int16 and counts.ravel().tolist() == [300, 300]
    spread = ev.copy()
    spread["x"] = np.arange(600) % 2  # 150 per pixel and bin: fits uint8
    counts, _ = raster(from_samples([spread], [0], (2, 1, 1), ("a",)), 300, 2, dtype=np.uint8)
    assert counts.dtype == np.uint8 and counts.ravel().tolist() == [150, 150, 150, 150]
    with pytest.raises(ValueError, match="300 events .* uint8"):
        raster(eventset, 300, 2, dtype=np.uint8)


def test_raster_rejects_negative_time():
    ev = np.zeros(1, dtype=EVENT_DTYPE)
    ev["t"] = -1
    with pytest.raises(ValueError, match="'t' has value -1"):
        raster(from_samples([ev], [0], (1, 1, 1), ("a",)), 10, 2)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "field, value, sensor, needle",
    [
        ("x", 4, (4, 3, 2), "'x' has value 4"),
        ("x", -1, (4, 3, 2), "'x' has value -1"),
        ("y", 3, (4, 3, 2), "'y' has value 3"),
        ("p", 2, (4, 3, 2), "'p' has value 2"),
        ("p", -1, (4, 3, 2), "'p' has value -1"),
        ("p", 2, (4, 3, 1), "'p' has value 2"),
    ],
)
def test_events_outside_the_sensor_are_named(field, value, sensor, needle):
    ev = np.zeros(4, dtype=EVENT_DTYPE)
    ev["t"] = np.arange(4)
    ev[field][2] = value
    eventset = from_samples([ev[:1], ev], [0, 0], sensor, ("a",))
    for call in (
        lambda: to_frames(ev, sensor, time_window=10),
        lambda: frames_for_set(eventset, n_event_bins=2),
        lambda: raster(eventset, 10, 2),
    ):
        with pytest.raises(ValueError, match=needle) as info:
            call()
        assert str(sensor) in str(info.value)
    with pytest.raises(ValueError, match="sample 1"):
        frames_for_set(eventset, n_event_bins=2)


def test_mixed_polarities_on_single_polarity_sensor():
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["t"], ev["p"] = [0, 1], [0, 1]
    with pytest.raises(ValueError, match="single polarity"):
        to_frames(ev, (1, 1, 1), time_window=10)
    with pytest.raises(ValueError):  # tonic refuses it as well
        tonic_frames(ev, (1, 1, 1), time_window=10)
    one, other = ev[:1].copy(), ev[1:].copy()  # each sample on its own is fine
    frames, _, _ = frames_for_set(
        from_samples([one, other], [0, 0], (1, 1, 1), ("a",)), event_count=1
    )
    assert frames.reshape(-1).tolist() == [1, 1]


def test_unsorted_events_are_refused():
    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["t"] = [0, 5, 4]
    for mode in ({"time_window": 10}, {"time_window": 2.5}, {"event_count": 2}):  # both paths
        with pytest.raises(ValueError, match="sample 0 are not sorted"):
            to_frames(ev, (1, 1, 1), **mode)
    past_the_end = np.zeros(4, dtype=EVENT_DTYPE)
    past_the_end["t"] = [0, 5, 30, 25]  # the disorder lies after the last whole window
    for mode in ({"time_window": 10}, {"n_time_bins": 3}):
        with pytest.raises(ValueError, match="sample 0 are not sorted"):
            to_frames(past_the_end, (1, 1, 1), **mode)
    later = ev.copy()
    later["t"] = [0, 1, 2]
    # a drop in t between samples is fine
    frames, _, _ = frames_for_set(
        from_samples([later, later], [0, 0], (1, 1, 1), ("a",)), event_count=3
    )
    assert frames.shape == (2, 1, 1, 1)
    frames, _, _ = frames_for_set(
        from_samples([later, later], [0, 0], (1, 1, 1), ("a",)), time_window=1
    )
    assert frames.shape == (4, 1, 1, 1)
    for mode in ({"time_window": 10}, {"n_time_bins": 2}):
        with pytest.raises(ValueError, match="sample 2 are not sorted"):
            frames_for_set(from_samples([later, later, ev], [0, 0, 0], (1, 1, 1), ("a",)), **mode)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({}, "exactly one of time_window, event_count, n_time_bins, n_event_bins; got none"),
        ({"time_window": 10, "n_time_bins": 3}, "got time_window=10, n_time_bins=3"),
        ({"time_window": 0}, "time_window must be a positive"),
        ({"event_count": 2.5}, "event_count must be a positive integer"),
        ({"n_event_bins": -1}, "n_event_bins must be a positive integer"),
        ({"time_window": 10, "overlap": 10}, "overlap"),
        ({"event_count": 3, "overlap": 3}, "overlap"),
        ({"n_time_bins": 3, "overlap": 1.0}, r"\[0, 1\)"),
        ({"n_event_bins": 3, "overlap": -0.1}, r"\[0, 1\)"),
        ({"n_time_bins": 3, "include_incomplete": True}, "include_incomplete"),
        ({"time_window": float("nan")}, "time_window"),
    ],
)
def test_bad_parameters_are_named(kwargs, needle):
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    with pytest.raises(ValueError, match=needle):
        to_frames(ev, (1, 1, 1), **kwargs)


def test_bad_sensor_and_array():
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    with pytest.raises(ValueError, match="sensor_size"):
        to_frames(ev, (1, 1), time_window=10)
    with pytest.raises(ValueError, match="sensor_size"):
        to_frames(ev, (1, 0, 1), time_window=10)
    with pytest.raises(ValueError, match="fields x, y, t, p"):
        to_frames(np.zeros(3), (1, 1, 1), time_window=10)
    with pytest.raises(ValueError, match="time_bin_us"):
        raster(from_samples([ev], [0], (1, 1, 1), ("a",)), 0, 2)


# ---------------------------------------------------------------------------- downsample


def _sum_pool(counts: np.ndarray, k: int) -> np.ndarray:
    """Brute-force reference: zero-pad H and W up to multiples of k, then sum k x k blocks."""
    *lead, height, width = counts.shape
    padded = np.zeros((*lead, -(-height // k) * k, -(-width // k) * k), dtype=np.int64)
    padded[..., :height, :width] = counts
    h, w = padded.shape[-2] // k, padded.shape[-1] // k
    return padded.reshape(*lead, h, k, w, k).sum(axis=(-3, -1))


@SOME
@given(data=st.data())
def test_downsampled_frames_and_rasters_sum_blocks_alike(data):
    """At a factor k, training frames and evaluation rasters are both the k x k block sums
    of their full-resolution counts: the two inputs of the networks cannot drift apart."""
    sensor = data.draw(sensors())
    k = data.draw(st.integers(1, 4))
    samples = data.draw(st.lists(streams(sensor, max_events=25), min_size=1, max_size=4))
    samples = [s for s in samples if not len(s) or s["t"][-1] < 10**6]
    assume(samples)
    mode = data.draw(modes())
    eventset = from_samples(samples, np.zeros(len(samples), dtype=np.int64), sensor, ("a",))
    full, index, dropped = frames_for_set(eventset, **mode)
    small, small_index, small_dropped = frames_for_set(eventset, downsample=k, **mode)
    np.testing.assert_array_equal(small, _sum_pool(full, k))
    np.testing.assert_array_equal(small_index, index)
    assert small_dropped == dropped
    grid, _ = raster(eventset, 300, 4, dtype=np.int64)
    small_grid, _ = raster(eventset, 300, 4, dtype=np.int64, downsample=k)
    np.testing.assert_array_equal(small_grid, _sum_pool(grid, k))
    width, height, polarities = binning.downsampled_sensor(sensor, k)
    assert small.shape[1:] == small_grid.shape[2:] == (polarities, height, width)


def test_downsampled_frames_summed_equal_the_raster_of_the_same_events():
    """One frame per sample (bins summed) at a factor is the raster's sum over time."""
    rng = np.random.default_rng(3)
    sensor = (240, 180, 2)
    samples = []
    for _ in range(3):
        ev = np.zeros(500, dtype=EVENT_DTYPE)
        ev["x"], ev["y"] = rng.integers(0, 240, 500), rng.integers(0, 180, 500)
        ev["p"], ev["t"] = rng.integers(0, 2, 500), np.sort(rng.integers(0, 90_000, 500))
        samples.append(ev)
    eventset = from_samples(samples, [0, 1, 2], sensor, ("a", "b", "c"))
    frames, _, dropped = frames_for_set(eventset, n_event_bins=1, downsample=4)
    grid, grid_dropped = raster(eventset, 1000, 90, dtype=np.int64, downsample=4)
    assert frames.shape == (3, 2, 45, 60) and dropped == grid_dropped == 0
    np.testing.assert_array_equal(frames, grid.sum(1))


def test_downsample_one_changes_nothing():
    rng = np.random.default_rng(0)
    ev = np.zeros(300, dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, 300), rng.integers(0, 34, 300)
    ev["p"], ev["t"] = rng.integers(0, 2, 300), np.sort(rng.integers(0, 300_000, 300))
    eventset = from_samples([ev], [0], (34, 34, 2), ("a",))
    before, _, _ = frames_for_set(eventset, n_time_bins=10)
    after, _, _ = frames_for_set(eventset, n_time_bins=10, downsample=1)
    assert before.dtype == after.dtype and before.tobytes() == after.tobytes()


def test_downsample_checks_the_full_sensor_and_the_factor():
    ev = np.zeros(1, dtype=EVENT_DTYPE)
    ev["x"] = 34  # one past the edge: x // 4 = 8 would fit the 9-wide downsampled sensor
    eventset = from_samples([ev], [0], (34, 34, 2), ("a",))
    with pytest.raises(ValueError, match="'x' has value 34 outside the sensor"):
        frames_for_set(eventset, n_event_bins=1, downsample=4)
    with pytest.raises(ValueError, match="'x' has value 34 outside the sensor"):
        raster(eventset, 10, 2, downsample=4)
    with pytest.raises(ValueError, match="downsample must be a positive integer, got 0"):
        raster(eventset, 10, 2, downsample=0)
