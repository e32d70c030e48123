"""Shared fixtures: copies of the project on a reduced config, run by the real tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# few samples, one epoch, two factors: the whole chain in well under a minute
REDUCED = {
    "dataset": {"max_samples_per_class": 5},
    "training": {"epochs": 1},
    "normalisation": {"samples": 50},
    "scale": {"factors": [4, 16]},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            merge(base[key], value)
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
        )
    return out


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what a clone would hold)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def make_project(dst: Path, overrides: dict | None = None) -> Path:
    """Copy the project into ``dst`` with params.yaml reduced (and further overridden)."""
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = merge(merge(params, REDUCED), overrides or {})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("SPIKESCALE_THREADS", "1")
    return e


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(
        [str(BIN / "snakemake"), "--cores", "2", "--profile", "profiles/default", *args], cwd, check
    )


def init_dvc(cwd: Path) -> None:
    run(["git", "init", "-q"], cwd)
    run(["git", "config", "user.email", "test@spikescale"], cwd)
    run(["git", "config", "user.name", "spikescale tests"], cwd)
    if not (cwd / ".dvc" / "config").is_file():  # the project ships DVC initialised
        run([str(BIN / "dvc"), "init", "-q"], cwd)
        run([str(BIN / "dvc"), "config", "core.analytics", "false"], cwd)
    run(["git", "add", "-A"], cwd)
    run(["git", "commit", "-qm", "project"], cwd)


@pytest.fixture
def no_tonic_download(monkeypatch):
    """Any attempt of tonic to download (or copy an archive in) fails the test."""
    from spikescale.tonic_datasets import DATASETS

    def refuse(self, *args, **kwargs):
        raise AssertionError("tonic tried to download")

    for entry in DATASETS.values():
        cls = entry.tonic()
        monkeypatch.setattr(cls, "download", refuse, raising=False)
        monkeypatch.setattr(cls, "_copy_and_extract_local_data", refuse, raising=False)


@pytest.fixture(scope="session")
def snakemake_project(tmp_path_factory) -> Path:
    """The reduced pipeline, run once by Snakemake."""
    project = make_project(tmp_path_factory.mktemp("snakemake"))
    snakemake(project)
    return project


@pytest.fixture(scope="session")
def dvc_project(tmp_path_factory) -> Path:
    """The reduced pipeline, run once by `dvc repro` in its own git repository."""
    project = make_project(tmp_path_factory.mktemp("dvc"))
    init_dvc(project)
    run([str(BIN / "dvc"), "repro", "-q"], project)
    return project
