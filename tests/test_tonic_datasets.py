"""load_tonic reads tonic's datasets offline, from tiny files in their real on-disk formats."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import tonic.datasets
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_datasets import (
    SENSORS,
    WRITERS,
    archive_folder,
    encode_nmnist,
    random_events,
    write_dvsgesture,
    write_nmnist,
    write_nmnist_bin,
    write_npy,
)
from spikescale.event_store import EVENT_DTYPE
from spikescale.tonic_datasets import (
    SKIP_REASONS,
    BadSampleError,
    CorruptArchiveError,
    DatasetNotFoundError,
    load_tonic,
    read_recording,
    split_folder,
)

TONIC = {
    "nmnist": tonic.datasets.NMNIST,
    "dvsgesture": tonic.datasets.DVSGesture,
    "pokerdvs": tonic.datasets.POKERDVS,
}


pytestmark = pytest.mark.usefixtures("no_tonic_download")  # everything here is offline


def assert_matches(es, written):
    assert len(es) == len(written)
    assert es.labels.tolist() == [label for label, _, _ in written]
    for i, (_, path, expected) in enumerate(written):
        got = es.sample(i)
        assert got.dtype == EVENT_DTYPE
        for field in EVENT_DTYPE.names:
            np.testing.assert_array_equal(got[field], expected[field], err_msg=f"{path} {field}")


# ------------------------------------------------------------------------ reading the layouts


@pytest.mark.parametrize("name", ["nmnist", "dvsgesture", "pokerdvs"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_partial_copy_in_tonic_layout(tmp_path, name, split):
    written = WRITERS[name](tmp_path, split)
    es = load_tonic(name, tmp_path, split)
    assert_matches(es, written)
    assert es.sensor_size == SENSORS[name]
    assert es.classes == tuple(TONIC[name].classes)
    assert es.skipped == {reason: 0 for reason in SKIP_REASONS}
    assert np.all(np.diff(es.labels) >= 0)  # sorted by class
    for i in range(len(es)):
        t = es.sample(i)["t"]
        assert np.all(np.diff(t) >= 0)


def test_time_conventions(tmp_path):
    """N-MNIST keeps the recording clock; cut-out DVS Gesture/POKER-DVS samples start at 0."""
    nm = write_nmnist(tmp_path, per_class={1: 1})
    assert nm[0][2]["t"][0] > 0
    assert load_tonic("nmnist", tmp_path, "train").events["t"][0] == nm[0][2]["t"][0]
    for name in ("dvsgesture", "pokerdvs"):
        written = WRITERS[name](tmp_path)
        assert all(ev["t"][0] == 0 for _, _, ev in written)  # expected: shifted
        es = load_tonic(name, tmp_path, "train")
        assert np.all(es.events["t"][es.offsets[:-1]] == 0)
    # DVS Gesture's files hold milliseconds: 6 s gestures become microseconds
    assert load_tonic("dvsgesture", tmp_path, "train").duration_us > 1_000_000


def test_order_is_class_then_file_name(tmp_path):
    written = write_nmnist(tmp_path, per_class={5: 3, 2: 2})
    es = load_tonic("nmnist", tmp_path, "train")
    assert es.labels.tolist() == [2, 2, 5, 5, 5]
    names = [p.name for _, p, _ in written]
    assert names[:2] == sorted(names[:2]) and names[2:] == sorted(names[2:])
    assert_matches(es, written)


def test_unsorted_recording_is_sorted_stably(tmp_path):
    ev = random_events(np.random.default_rng(1), 20, SENSORS["nmnist"])
    shuffled = ev[::-1].copy()
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "4" / "00001.bin", shuffled)
    got = load_tonic("nmnist", tmp_path, "train").sample(0)
    order = np.argsort(shuffled["t"], kind="stable")
    np.testing.assert_array_equal(got, shuffled[order])


def test_root_may_be_the_dataset_folder(tmp_path):
    written = write_nmnist(tmp_path)
    es = load_tonic("nmnist", tmp_path / "NMNIST", "train")
    assert_matches(es, written)


def test_split_folder(tmp_path):
    assert split_folder("nmnist", tmp_path, "test") == tmp_path / "NMNIST" / "Test"
    assert (
        split_folder("dvsgesture", tmp_path, "train") == tmp_path / "DVSGesture" / "ibmGestureTrain"
    )
    assert split_folder("pokerdvs", tmp_path, "test") == tmp_path / "POKERDVS" / "pips_test"


def test_float_npy_and_hidden_and_foreign_files(tmp_path, caplog):
    written = write_dvsgesture(tmp_path, per_class={3: 1}, dtype=np.float32)
    user_dir = written[0][1].parent
    (user_dir / "._3.npy").write_bytes(b"\x00\x05Mac OS X")  # AppleDouble litter from macOS
    (user_dir / "notes.npy").write_bytes(b"junk")  # not <label>.npy
    (user_dir / "11.npy").write_bytes(b"junk")  # no such class
    es = load_tonic("dvsgesture", tmp_path, "train")
    assert_matches(es, written)
    assert "ignored 2 entries" in caplog.text


def test_max_samples_per_class(tmp_path):
    written = write_nmnist(tmp_path, per_class={0: 3, 1: 1, 2: 4})
    es = load_tonic("nmnist", tmp_path, "train", max_samples_per_class=2)
    keep = [w for label in (0, 1, 2) for w in [w for w in written if w[0] == label][:2]]
    assert_matches(es, keep)


def test_max_samples_counts_usable_samples(tmp_path):
    written = write_nmnist(tmp_path, per_class={0: 3})
    written[0][1].write_bytes(b"")  # the first of class 0 is empty
    es = load_tonic("nmnist", tmp_path, "train", on_bad_sample="skip", max_samples_per_class=2)
    assert_matches(es, written[1:3])
    assert es.skipped["empty"] == 1


# ------------------------------------------------------------------------ tonic's own readers


@pytest.mark.parametrize("name", ["nmnist", "dvsgesture", "pokerdvs"])
def test_same_events_as_tonics_dataset_class(tmp_path, name, monkeypatch):
    """tonic's Dataset class on the same partial copy (its size check bypassed) agrees."""
    WRITERS[name](tmp_path)
    cls = TONIC[name]
    monkeypatch.setattr(cls, "_check_exists", lambda self: True)
    ds = cls(save_to=str(tmp_path), train=True)
    ours = load_tonic(name, tmp_path, "train")
    assert len(ds) == len(ours)
    theirs = []
    for i in range(len(ds)):
        events, target = ds[i]
        t = events["t"].astype(np.int64)
        if name != "nmnist":
            t = t - t.min()
        key = tuple(np.concatenate([t, events["x"], events["y"], events["p"]]).astype(np.int64))
        theirs.append((target, key))
    mine = []
    for i in range(len(ours)):
        s = ours.sample(i)
        key = tuple(np.concatenate([s["t"], s["x"], s["y"], s["p"]]).astype(np.int64))
        mine.append((int(ours.labels[i]), key))
    if name == "nmnist":  # tonic sorts N-MNIST by digit then file name, as load_tonic does
        assert mine == theirs
        assert [str(p) for p in ds.data] == sorted(map(str, ds.data))
    else:  # tonic's walk order is not sorted there; the contents agree
        assert sorted(mine) == sorted(theirs)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 33), st.integers(0, 33), st.integers(0, (1 << 23) - 1), st.integers(0, 1)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_nmnist_bit_layout_round_trips(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("bin") / "00001.bin"
    x, y, t, p = map(np.array, zip(*rows))
    path.write_bytes(encode_nmnist(x, y, t, p))
    got = read_recording("nmnist", path)
    order = np.argsort(t, kind="stable")
    for field, col in (("x", x), ("y", y), ("t", t), ("p", p)):
        np.testing.assert_array_equal(got[field], col[order])


# ------------------------------------------------------------------------ archives


@pytest.mark.parametrize("archive_name", ["train.zip", "Train.zip"])
def test_nmnist_zip_is_extracted_when_folder_missing(tmp_path, archive_name):
    expected = write_nmnist(tmp_path)
    archive = archive_folder(tmp_path / "NMNIST" / "Train", tmp_path / "NMNIST" / archive_name)
    assert not (tmp_path / "NMNIST" / "Train").exists()
    es = load_tonic("nmnist", tmp_path, "train")
    assert_matches(es, expected)
    assert (tmp_path / "NMNIST" / "Train").is_dir()
    assert archive.is_file()
    assert not [
        p for p in (tmp_path / "NMNIST").iterdir() if p.name.startswith(".")
    ]  # no temp left
    assert_matches(load_tonic("nmnist", tmp_path, "train"), expected)  # second run: the folder


def test_zip_without_top_folder(tmp_path):
    written = write_nmnist(tmp_path, split="test")
    archive_folder(tmp_path / "NMNIST" / "Test", tmp_path / "NMNIST" / "Test.zip", arc_prefix="")
    assert_matches(load_tonic("nmnist", tmp_path, "test"), written)


@pytest.mark.parametrize(
    "name,split_dir,archive",
    [
        ("dvsgesture", "ibmGestureTest", "ibmGestureTest.tar.gz"),
        ("pokerdvs", "pips_test", "pips_test.tar.gz"),
    ],
)
def test_tar_archives_are_extracted(tmp_path, name, split_dir, archive):
    written = WRITERS[name](tmp_path, "test")
    folder = tmp_path / TONIC[name].__name__ / split_dir
    archive_folder(folder, folder.parent / archive)
    assert_matches(load_tonic(name, tmp_path, "test"), written)


@pytest.mark.parametrize("leaving", ["../outside.bin", "/abs/outside.bin"])
def test_tar_member_leaving_the_folder_is_refused(tmp_path, leaving):
    """Refused with the extraction filter (Python >= 3.11.4) and without it (the check
    spikescale makes on older Pythons, run here directly too)."""
    import io
    import tarfile

    from spikescale.tonic_datasets import _refuse_members_leaving

    folder = tmp_path / "POKERDVS"
    folder.mkdir()
    with tarfile.open(folder / "pips_test.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo(leaving)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(CorruptArchiveError, match="pips_test.tar.gz"):
        load_tonic("pokerdvs", tmp_path, "test")
    assert not (tmp_path / "outside.bin").exists()
    assert [p.name for p in folder.iterdir()] == ["pips_test.tar.gz"]
    with tarfile.open(folder / "pips_test.tar.gz") as tf, pytest.raises(tarfile.TarError):
        _refuse_members_leaving(tf)


def test_corrupt_archive(tmp_path):
    (tmp_path / "NMNIST").mkdir()
    (tmp_path / "NMNIST" / "train.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptArchiveError, match="train.zip"):
        load_tonic("nmnist", tmp_path, "train")
    assert not (tmp_path / "NMNIST" / "Train").exists()
    assert [p.name for p in (tmp_path / "NMNIST").iterdir()] == ["train.zip"]


# ------------------------------------------------------------------------ missing datasets


@pytest.mark.parametrize(
    "name,places",
    [
        ("nmnist", ["NMNIST/Train", "Train", "NMNIST/train.zip", "NMNIST/Train.zip"]),
        (
            "dvsgesture",
            ["DVSGesture/ibmGestureTrain", "ibmGestureTrain", "DVSGesture/ibmGestureTrain.tar.gz"],
        ),
        ("pokerdvs", ["POKERDVS/pips_train", "pips_train", "POKERDVS/pips_train.tar.gz"]),
    ],
)
def test_missing_dataset_message(tmp_path, name, places):
    with pytest.raises(DatasetNotFoundError) as info:
        load_tonic(name, tmp_path / "raw", "train")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in places:
        assert str(tmp_path / "raw" / place) in msg
    assert "Expected layout" in msg
    assert "dataset.download: true" in msg
    if name == "pokerdvs":
        assert "github.com/neuromorphs/tonic" in msg
    else:
        assert TONIC[name].train_url in msg


def test_empty_split_folder_is_reported(tmp_path):
    (tmp_path / "NMNIST" / "Train" / "3").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="exists but holds no"):
        load_tonic("nmnist", tmp_path, "train")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown tonic dataset"):
        load_tonic("mnist", tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_tonic("nmnist", tmp_path, "validation")
    with pytest.raises(ValueError, match="on_bad_sample"):
        load_tonic("nmnist", tmp_path, "train", on_bad_sample="ignore")
    with pytest.raises(ValueError, match="max_samples_per_class"):
        load_tonic("nmnist", tmp_path, "train", max_samples_per_class=0)


# ------------------------------------------------------------------------ download path


def test_download_calls_tonic_with_root_and_split(tmp_path, monkeypatch):
    calls = []

    class FakeNMNIST(tonic.datasets.NMNIST):
        def __init__(self, save_to, train=True):
            calls.append((save_to, train))
            write_nmnist(Path(save_to), "train" if train else "test", per_class={6: 1})

    monkeypatch.setattr(tonic.datasets, "NMNIST", FakeNMNIST)
    es = load_tonic("nmnist", tmp_path, "test", download=True)
    assert calls == [(str(tmp_path), False)]
    assert es.labels.tolist() == [6]
    load_tonic("nmnist", tmp_path, "test", download=True)
    assert len(calls) == 1  # present now: no second download


def test_download_not_called_for_partial_copy(tmp_path, monkeypatch):
    write_nmnist(tmp_path, per_class={2: 1})

    class NoDownload(tonic.datasets.NMNIST):
        def __init__(self, *args, **kwargs):
            raise AssertionError("tonic's NMNIST was constructed")

    monkeypatch.setattr(tonic.datasets, "NMNIST", NoDownload)
    assert len(load_tonic("nmnist", tmp_path, "train", download=True)) == 1


def test_download_failure_is_explained(tmp_path, monkeypatch):
    class Offline(tonic.datasets.DVSGesture):
        def __init__(self, save_to, train=True):
            raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tonic.datasets, "DVSGesture", Offline)
    with pytest.raises(DatasetNotFoundError, match="no route to host") as info:
        load_tonic("dvsgesture", tmp_path, "train", download=True)
    assert str(tmp_path / "DVSGesture" / "ibmGestureTrain") in str(info.value)


# ------------------------------------------------------------------------ bad recordings


def nmnist_path(root, digit=1, name="00009.bin"):
    path = root / "NMNIST" / "Train" / str(digit) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_truncated(root):
    path = nmnist_path(root)
    path.write_bytes(encode_nmnist([1, 2], [3, 4], [10, 20], [0, 1])[:-2])
    return path, "corrupt", "truncated"


def make_empty_bin(root):
    path = nmnist_path(root)
    path.write_bytes(b"")
    return path, "empty", "no events"


def make_outside_bin(root):
    path = nmnist_path(root)
    path.write_bytes(encode_nmnist([1, 40], [3, 4], [10, 20], [0, 1]))
    return path, "outside_sensor", "1 of 2 events outside the 34x34x2 sensor"


def gesture_path(root):
    return root / "DVSGesture" / "ibmGestureTrain" / "user05_led" / "2.npy"


def make_corrupt_npy(root):
    path = gesture_path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x93NUMPY garbage")
    return path, "corrupt", "not a readable .npy"


def make_truncated_npy(root):
    path = gesture_path(root)
    write_npy(
        path, {"x": [1, 2, 3], "y": [1, 2, 3], "p": [0, 1, 0], "t": [5, 6, 7]}, ("x", "y", "p", "t")
    )
    path.write_bytes(path.read_bytes()[:-7])
    return path, "corrupt", "not a readable .npy"


def make_wrong_shape_npy(root):
    path = gesture_path(root)
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((5, 3)))
    return path, "corrupt", "shape (5, 3)"


def make_nan_npy(root):
    path = gesture_path(root)
    cols = {"x": [1, 2], "y": [1, 2], "p": [0, 1], "t": [5, np.nan]}
    write_npy(path, cols, ("x", "y", "p", "t"), dtype=np.float64)
    return path, "corrupt", "NaN"


def make_empty_npy(root):
    path = gesture_path(root)
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((0, 4), dtype=np.int64))
    return path, "empty", "no events"


def make_outside_npy(root):
    path = gesture_path(root)
    write_npy(
        path,
        {"x": [1, 128, 5], "y": [1, 2, -1], "p": [0, 1, 0], "t": [5, 6, 7]},
        ("x", "y", "p", "t"),
    )
    return path, "outside_sensor", "2 of 3 events outside the 128x128x2 sensor"


def make_bad_polarity_npy(root):
    path = root / "POKERDVS" / "pips_train" / "he" / "he1.npy"
    write_npy(path, {"t": [5, 6], "x": [1, 2], "y": [1, 2], "p": [0, 2]}, ("t", "x", "y", "p"))
    return path, "outside_sensor", "p in [0, 2]"


BAD = [
    make_truncated,
    make_empty_bin,
    make_outside_bin,
    make_corrupt_npy,
    make_truncated_npy,
    make_wrong_shape_npy,
    make_nan_npy,
    make_empty_npy,
    make_outside_npy,
    make_bad_polarity_npy,
]


def dataset_name(path: Path) -> str:
    folders = {"NMNIST": "nmnist", "DVSGesture": "dvsgesture", "POKERDVS": "pokerdvs"}
    return next(name for folder, name in folders.items() if folder in path.parts)


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__)
def test_bad_recording_raises_with_file_name(tmp_path, make_bad):
    path, reason, detail = make_bad(tmp_path)
    name = dataset_name(path)
    WRITERS[name](tmp_path)  # good recordings beside it
    with pytest.raises(BadSampleError) as info:
        load_tonic(name, tmp_path, "train")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.reason == reason
    assert str(path) in str(err)
    assert detail in str(err)
    assert "on_bad_sample: skip" in str(err)


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__)
def test_bad_recording_skipped_and_counted(tmp_path, make_bad):
    path, reason, _ = make_bad(tmp_path)
    name = dataset_name(path)
    written = WRITERS[name](tmp_path)
    es = load_tonic(name, tmp_path, "train", on_bad_sample="skip")
    assert_matches(es, written)
    assert es.skipped == {r: int(r == reason) for r in SKIP_REASONS}


def test_skip_counts_several_reasons(tmp_path):
    written = write_nmnist(tmp_path, per_class={1: 2})
    make_truncated(tmp_path)
    nmnist_path(tmp_path, 2, "00001.bin").write_bytes(b"")
    nmnist_path(tmp_path, 2, "00002.bin").write_bytes(b"")
    nmnist_path(tmp_path, 5, "00003.bin").write_bytes(encode_nmnist([50], [1], [1], [0]))
    es = load_tonic("nmnist", tmp_path, "train", on_bad_sample="skip")
    assert es.skipped == {"corrupt": 1, "empty": 2, "outside_sensor": 1}
    assert_matches(es, written)
    assert es.summary()["skipped"] == es.skipped


def test_all_recordings_bad(tmp_path):
    make_empty_bin(tmp_path)
    with pytest.raises(BadSampleError, match="all 1 recordings were skipped"):
        load_tonic("nmnist", tmp_path, "train", on_bad_sample="skip")
