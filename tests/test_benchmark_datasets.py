"""N-Caltech101, CIFAR10-DVS and ASL-DVS: read offline from partial copies in tonic's
on-disk layout, checked against tonic's own listing and reading of the same files, split
into train and test by a seeded, stratified share, and run through the whole pipeline."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import BIN, make_project, run, snakemake
from fake_datasets import (
    SENSORS,
    WHOLE_WRITERS,
    archive_folder,
    random_events,
    write_asldvs_mat,
    write_ncaltech101,
    write_ncaltech101_bin,
)
from spikescale.errors import InputError
from spikescale.event_store import EVENT_DTYPE, read_events, read_metadata
from spikescale.network import dataset_shape
from spikescale.params import validate
from spikescale.recordings import stratified_split
from spikescale.tonic_datasets import (
    DATASETS,
    NCALTECH101_CLASSES,
    BadSampleError,
    DatasetNotFoundError,
    load_tonic,
    open_tonic,
    require_present,
    split_folder,
)

NEW = ("ncaltech101", "cifar10dvs", "asldvs")
TONIC = {name: DATASETS[name].tonic() for name in DATASETS}


pytestmark = pytest.mark.usefixtures("no_tonic_download")  # everything here is offline


def _tonic_dataset(name, root, monkeypatch):
    """tonic's own dataset object on a partial copy (its completeness check switched off,
    so that it lists and reads the files itself instead of downloading)."""
    cls = TONIC[name]
    monkeypatch.setattr(cls, "_check_exists", lambda self: True)
    return cls(save_to=str(root))


def _both_splits(name, root, **kwargs):
    return {split: open_tonic(name, root, split, **kwargs) for split in ("train", "test")}


# ------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_entry_agrees_with_tonic(name):
    entry, cls = DATASETS[name], TONIC[name]
    assert entry.tonic_class == cls.__name__
    if cls.sensor_size is None:  # N-Caltech101: every recording of its own size
        assert entry.varying_size and entry.sensor_size == (240, 180, 2)
    else:
        assert entry.sensor_size == tuple(cls.sensor_size)
    if entry.classes is None:
        assert entry.class_names() == tuple(cls.classes)
    decode = entry.decode
    if isinstance(decode, functools.partial):  # the .npy layouts: tonic's column order
        assert decode.keywords["columns"] == cls.dtype.names
    # tonic's class takes `train` exactly where the dataset has a test split
    assert ("train" in inspect.signature(cls.__init__).parameters) == entry.has_test_split
    assert entry.has_test_split == (name not in NEW)


def test_ncaltech101_classes_are_the_folders_tonic_lists():
    # Caltech101's 101 categories and background, without "Faces" (N-Caltech101 keeps
    # Faces_easy): 101 folders, in the order tonic's sorted os.walk visits them
    assert len(NCALTECH101_CLASSES) == len(set(NCALTECH101_CLASSES)) == 101
    assert list(NCALTECH101_CLASSES) == sorted(NCALTECH101_CLASSES)
    assert "Faces" not in NCALTECH101_CLASSES and "BACKGROUND_Google" in NCALTECH101_CLASSES


@pytest.mark.parametrize(
    "name, downsample, shape, classes",
    [
        ("ncaltech101", 4, (2, 45, 60), 101),
        ("cifar10dvs", 4, (2, 32, 32), 10),
        ("asldvs", 4, (2, 45, 60), 26),
        ("asldvs", 1, (2, 180, 240), 26),
    ],
)
def test_network_input_shape(name, downsample, shape, classes):
    dataset = validate({"dataset": {"name": name}}).dataset
    assert dataset_shape(dataset, downsample) == (shape, classes)


def test_split_folder_of_a_dataset_without_test_split(tmp_path):
    for split in ("train", "test"):
        assert split_folder("ncaltech101", tmp_path, split) == tmp_path / "NCALTECH101/Caltech101"
        assert split_folder("cifar10dvs", tmp_path, split) == tmp_path / "CIFAR10DVS"


# ------------------------------------------------------------------------ reading and splitting


@pytest.mark.parametrize("name", NEW)
def test_partial_copy_is_read_and_split_stratified(tmp_path, name):
    written = WHOLE_WRITERS[name](tmp_path)
    splits = _both_splits(name, tmp_path, test_fraction=0.34, seed=3)
    labels = np.array([label for label, _, _ in written])
    train_idx, test_idx = stratified_split(labels, 0.34, 3)
    expected = {"train": [written[i] for i in train_idx], "test": [written[i] for i in test_idx]}
    for split, ts in splits.items():
        assert [(label, path) for label, path in ts.items] == [
            (label, path) for label, path, _ in expected[split]
        ]
        samples = list(ts)
        assert [label for _, label in samples] == [label for label, _, _ in expected[split]]
        for (events, _), (_, path, want) in zip(samples, expected[split], strict=True):
            assert events.dtype == EVENT_DTYPE
            for field in EVENT_DTYPE.names:
                np.testing.assert_array_equal(events[field], want[field], err_msg=f"{path}")
        assert ts.sensor_size == SENSORS[name]
        assert ts.metadata()["test_split"] == {"stratified": True, "test_fraction": 0.34, "seed": 3}
    # every class of two or more recordings has a test share; none is in both splits
    train_paths = {p for _, p in splits["train"].items}
    test_paths = {p for _, p in splits["test"].items}
    assert not train_paths & test_paths and len(train_paths | test_paths) == len(written)
    assert {label for label, _ in splits["test"].items} == set(labels.tolist())
    # deterministic; another seed draws another split
    again = _both_splits(name, tmp_path, test_fraction=0.34, seed=3)
    assert again["test"].items == splits["test"].items
    seeds = {
        tuple(p for _, p in open_tonic(name, tmp_path, "test", seed=s, test_fraction=0.34).items)
        for s in range(6)
    }
    assert len(seeds) > 1


@pytest.mark.parametrize("name", NEW)
def test_listing_and_reading_equal_tonics(tmp_path, name, monkeypatch):
    """tonic's own dataset class lists the same files with the same labels, and its
    ``__getitem__`` decodes each one into the same events (before the shift to t = 0)."""
    written = WHOLE_WRITERS[name](tmp_path)
    ours = _both_splits(name, tmp_path)
    theirs = _tonic_dataset(name, tmp_path, monkeypatch)
    to_index = (lambda t: NCALTECH101_CLASSES.index(t)) if name == "ncaltech101" else (lambda t: t)
    tonic_items = sorted((str(p), to_index(t)) for p, t in zip(theirs.data, theirs.targets))
    our_items = sorted((str(p), label) for ts in ours.values() for label, p in ts.items)
    assert our_items == tonic_items and len(our_items) == len(written)
    entry = DATASETS[name]
    for i, path in enumerate(theirs.data):
        tonic_events = np.ravel(theirs[i][0])  # tonic's ASL-DVS keeps MATLAB's (N, 1) shape
        mine = entry.decode(Path(path), entry.sensor_size)
        for field in ("x", "y", "t", "p"):
            np.testing.assert_array_equal(
                np.asarray(mine[field], np.int64), np.asarray(tonic_events[field], np.int64)
            )


def test_ncaltech101_recordings_are_padded_to_the_sensor(tmp_path):
    written = write_ncaltech101(tmp_path, per_class={"ant": 3})
    es = load_tonic("ncaltech101", tmp_path, "train")
    assert es.sensor_size == (240, 180, 2) and es.classes == NCALTECH101_CLASSES
    ts = open_tonic("ncaltech101", tmp_path, "train")
    list(ts)
    widest = max(int(ev["x"].max()) + 1 for _, p, ev in written if p in {q for _, q in ts.items})
    assert ts.metadata()["largest_recording"][0] == widest
    # a recording wider than the padded sensor is refused, naming the file
    wide = random_events(np.random.default_rng(0), 30, (250, 100, 2))
    wide["x"][0], wide["x"][1] = 0, 249
    path = write_ncaltech101_bin(tmp_path / "NCALTECH101/Caltech101/ant/image_0099.bin", wide)
    with pytest.raises(BadSampleError, match="outside_sensor") as err:
        for split in ("train", "test"):
            load_tonic("ncaltech101", tmp_path, split)
    assert err.value.path == path
    skipped = [
        load_tonic("ncaltech101", tmp_path, s, on_bad_sample="skip").skipped["outside_sensor"]
        for s in ("train", "test")
    ]
    assert sum(skipped) == 1


def test_ncaltech101_archive_is_extracted(tmp_path):
    written = write_ncaltech101(tmp_path)
    folder = tmp_path / "NCALTECH101" / "Caltech101"
    archive_folder(folder, tmp_path / "NCALTECH101" / "Caltech101.zip")
    require_present("ncaltech101", tmp_path)  # the archive counts; nothing extracted yet
    assert not folder.exists()
    splits = _both_splits("ncaltech101", tmp_path)
    assert folder.is_dir() and sum(len(ts) for ts in splits.values()) == len(written)


def test_the_download_fetches_the_whole_dataset_once(tmp_path, monkeypatch):
    """With download: true, tonic's class is built without ``train`` (these datasets have
    no split) and what it leaves is found."""
    calls = []

    def fake_download(self):
        calls.append(self.location_on_system)
        write_asldvs_mat(
            tmp_path / "ASLDVS" / "b" / "b_0001.mat",
            random_events(np.random.default_rng(0), 20, (240, 180, 2)),
        )
        write_asldvs_mat(
            tmp_path / "ASLDVS" / "b" / "b_0002.mat",
            random_events(np.random.default_rng(1), 20, (240, 180, 2)),
        )

    monkeypatch.setattr(TONIC["asldvs"], "download", fake_download)
    monkeypatch.setattr(TONIC["asldvs"], "_check_exists", lambda self: False)
    es = load_tonic("asldvs", tmp_path, "test", download=True)
    assert calls == [str(tmp_path / "ASLDVS")] and es.labels.tolist() == [1]


# ------------------------------------------------------------------------ bad data, clear messages


@pytest.mark.parametrize(
    "name, folder, layout",
    [
        ("ncaltech101", "NCALTECH101/Caltech101", "<root>/NCALTECH101/Caltech101/<category>/*.bin"),
        ("cifar10dvs", "CIFAR10DVS", "<root>/CIFAR10DVS/<class>/*.aedat4"),
        ("asldvs", "ASLDVS", "<root>/ASLDVS/<letter>/*.mat"),
    ],
)
def test_missing_dataset_message(tmp_path, name, folder, layout):
    with pytest.raises(DatasetNotFoundError) as err:
        require_present(name, tmp_path)
    text = str(err.value)
    assert text.startswith(f"{DATASETS[name].title} not found under root {tmp_path}. Looked for:")
    assert f"{tmp_path / folder} (missing)" in text and layout in text
    assert "has no test split: dataset.test_fraction of each class" in text
    assert "dataset.download: true" in text and "tonic downloads it from https://" in text
    with pytest.raises(DatasetNotFoundError) as again:  # the stage says the same
        open_tonic(name, tmp_path, "train")
    assert str(again.value) == text
    require_present(name, tmp_path, download=True)  # the stage will download it


def test_a_dataset_with_nothing_to_split_off_is_refused(tmp_path):
    write_ncaltech101(tmp_path, per_class={"ant": 1, "emu": 1})
    with pytest.raises(InputError, match="no class with two recordings"):
        require_present("ncaltech101", tmp_path)


def test_foreign_folders_are_ignored_with_a_warning(tmp_path, caplog):
    write_ncaltech101(tmp_path, per_class={"ant": 2})
    (tmp_path / "NCALTECH101/Caltech101/Faces").mkdir()  # not an N-Caltech101 class
    (tmp_path / "NCALTECH101/Caltech101/ant/notes.txt").write_text("x")
    assert len(open_tonic("ncaltech101", tmp_path, "train").items) == 1
    assert "ignored 1 entries" in caplog.text and "Faces" in caplog.text


@pytest.mark.parametrize(
    "name, rel, content, match",
    [
        ("ncaltech101", "NCALTECH101/Caltech101/airplanes/image_0009.bin", b"\0" * 7, "truncated"),
        ("ncaltech101", "NCALTECH101/Caltech101/airplanes/image_0009.bin", b"", "empty"),
        ("cifar10dvs", "CIFAR10DVS/airplane/x.aedat4", b"not aedat", "not a readable AEDAT 4"),
        ("asldvs", "ASLDVS/a/a_0009.mat", b"not a mat file", "not a readable .mat file"),
    ],
)
def test_bad_recordings_name_the_file(tmp_path, name, rel, content, match):
    written = WHOLE_WRITERS[name](tmp_path)
    bad = tmp_path / rel
    bad.write_bytes(content)
    with pytest.raises(BadSampleError, match=match) as err:
        for ts in _both_splits(name, tmp_path).values():
            list(ts)
    assert err.value.path == bad
    skip = _both_splits(name, tmp_path, on_bad_sample="skip")
    assert sum(len(ts.load()) for ts in skip.values()) == len(written)
    assert sum(sum(ts.skipped.values()) for ts in skip.values()) == 1


# ------------------------------------------------------------------------ the whole pipeline


@pytest.mark.integration
def test_check_and_snakemake_refuse_a_missing_benchmark_set(tmp_path):
    project = make_project(tmp_path, {"dataset": {"name": "cifar10dvs"}})
    proc = run([str(BIN / "spikescale"), "check"], project, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("spikescale check: error: CIFAR10-DVS not found under root")
    proc = snakemake(project, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "CIFAR10-DVS not found under root data/raw" in text
    assert "data/raw/CIFAR10DVS (missing)" in text and not (project / "logs").exists()
    WHOLE_WRITERS["cifar10dvs"](project / "data/raw")
    assert run([str(BIN / "spikescale"), "check"], project).stdout.startswith("params.yaml: valid")
    assert "rule events:" in snakemake(project, "-n").stdout


@pytest.mark.integration
@pytest.mark.parametrize("name", NEW)
def test_benchmark_set_runs_the_whole_pipeline(tmp_path, name):
    """A partial copy in tonic's layout through every rule, split by test_fraction, its
    sensor downsampled by 4 in frames and SNN input alike (240x180 -> 60x45)."""
    project = make_project(
        tmp_path,
        {
            "dataset": {"name": name, "test_fraction": 0.34},
            "frames": {"downsample": 4},
            "scale": {"factors": [8]},  # one evaluate job: start-up dominates these runs
        },
    )
    written = WHOLE_WRITERS[name](project / "data" / "raw", n_events=40)
    snakemake(project)

    events = project / f"data/{name}/events"
    train, test = read_events(events / "train.parquet"), read_events(events / "test.parquet")
    assert len(train) + len(test) == len(written) and len(test) == 3  # one per class
    assert test.sensor_size == SENSORS[name] and len(test.classes) == len(
        DATASETS[name].class_names()
    )
    meta = read_metadata(events / "test.parquet")
    assert meta["test_split"] == {"stratified": True, "test_fraction": 0.34, "seed": 0}
    results = project / "results" / name
    assert pq.read_table(results / "sweep.parquet").column("factor").to_pylist() == [8.0]
    layers = pq.read_table(results / "layers.parquet").to_pylist()
    width, height, _ = SENSORS[name]
    assert layers[0]["neurons"] == 8 * -(-height // 4) * -(-width // 4)
    assert layers[3]["neurons"] == len(test.classes)
    assert pq.read_table(results / "samples.parquet").num_rows == len(test)
