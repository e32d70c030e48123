"""Output files: readable by others (the umask's permissions) and byte-reproducible."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import BIN, run
from spikescale.io import atomic_path

OUTPUT_DIRS = ("data/digits", "models", "results", "logs")


def test_atomic_path_gives_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "new" / "file.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "file.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750


@pytest.mark.integration
def test_every_output_of_the_pipeline_is_readable_by_others(snakemake_project):
    umask = os.umask(0)
    os.umask(umask)
    checked = 0
    for top in OUTPUT_DIRS:
        for path in (snakemake_project / top).rglob("*"):
            mode = stat.S_IMODE(path.stat().st_mode)
            expected = (0o777 if path.is_dir() else 0o666) & ~umask
            assert mode == expected, f"{path.relative_to(snakemake_project)}: {oct(mode)}"
            checked += path.is_file()
    assert checked > 40  # parquet, npz, pt, json, png, csv, nir, logs


@pytest.mark.integration
def test_model_files_and_nir_export_are_byte_identical_across_runs(snakemake_project, tmp_path):
    """Each model-writing stage run again, in a new process, into another file name."""
    models, results = "models/digits", "results/digits"
    again = tmp_path / "again"

    def spikescale(*args: str) -> None:
        run([str(BIN / "spikescale"), *args, "--quiet"], snakemake_project)

    # the rules run train and normalise with two threads
    spikescale("train", "--frames-dir", "data/digits/frames", "--threads", "2",
               "--events", "data/digits/events/test.parquet",
               "--out", f"{again}/cnn.pt", "--report", f"{again}/training.json")  # fmt: skip
    spikescale("normalise", "--cnn", f"{models}/cnn.pt", "--threads", "2",
               "--frames", "data/digits/frames/train.npz",
               "--out", f"{again}/cnn_normalised.pt", "--table", f"{again}/table.json")  # fmt: skip
    spikescale("convert", "--cnn", f"{models}/cnn_normalised.pt",
               "--frames", "data/digits/frames/train.npz",
               "--out", f"{again}/snn.pt", "--summary", f"{again}/snn_layers.json")  # fmt: skip
    run(
        [str(BIN / "spikescale"), "export", "--snn", f"{models}/snn.pt",
         "--recommendation", f"{results}/recommendation.json", "--out", f"{again}/snn.nir",
         "--chip-out", f"{again}/chip.nir"],
        snakemake_project,
    )  # fmt: skip
    for name in ("cnn.pt", "cnn_normalised.pt", "snn.pt"):
        assert (again / name).read_bytes() == (snakemake_project / models / name).read_bytes(), name
    exported = (snakemake_project / results / "snn_recommended.nir").read_bytes()
    assert (again / "snn.nir").read_bytes() == exported
    chip = (snakemake_project / results / "snn_recommended_chip.nir").read_bytes()
    assert (again / "chip.nir").read_bytes() == chip
