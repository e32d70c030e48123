"""README.md's own shell commands, run as written, so the README cannot drift from what works.

Every ```sh block runs verbatim, in README order, with bash (``-e``: each command must
succeed), in a temporary git copy of the project on the reduced config, after the pipeline
has run there as `make run` runs it. ``PATH`` holds only the system's folders, not
``.venv/bin``; the copy's ``.venv`` is a link to the test's virtual environment and its
``src`` is what runs (as an editable install in a clone would). A block that needs what a
test cannot have (a Slurm cluster, a DVC remote, a download; `make`, which would install
into the shared environment) is skipped where README.md marks it, right above the block, with
``<!-- not run by tests/test_readme.py: <why> -->``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, init_dvc, make_project

pytestmark = [pytest.mark.integration, pytest.mark.beside]

SKIP_MARK = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->\s*$")
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
# how `make run` runs the pipeline (Makefile), before the README's blocks
MAKE_RUN = """
.venv/bin/snakemake --profile profiles/default
.venv/bin/spikescale summary results/digits
"""


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """(commands, why it is not run or None) of every ```sh block, in order."""
    blocks = []
    for m in BLOCK.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP_MARK.match(before)
        blocks.append((m.group(1), skip.group(1) if skip else None))
    return blocks


def test_readme_marks_only_what_a_test_cannot_run():
    blocks = readme_blocks((ROOT / "README.md").read_text())
    skipped = [(code.split()[0:2], why) for code, why in blocks if why]
    for code, why in blocks:
        if why is None:
            assert not re.search(r"^make\b", code, re.M) and "profiles/slurm" not in code, code
            assert "dvc pull" not in code and "dvc push" not in code, code
    assert [words for words, _ in skipped] == [
        ["make", "run"],
        [".venv/bin/dvc", "pull"],
        [".venv/bin/dvc", "add"],
        [".venv/bin/snakemake", "--profile"],  # the three training-input sweeps
        [".venv/bin/python", "benchmarks/pipeline.py"],  # the full-size run
        [".venv/bin/snakemake", "--profile"],  # the Slurm profile
        [".venv/bin/snakemake", "--profile"],  # the full-size Speck sweep
    ], skipped
    assert len(blocks) - len(skipped) >= 5


def _plain_env(project: Path) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "CONDA", "PYTHON"))
    }
    env["PATH"] = PLAIN_PATH
    env["PYTHONPATH"] = str(project / "src")
    env.setdefault("SPIKESCALE_THREADS", "1")
    return env


def _bash(project: Path, commands: str) -> None:
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", commands],
        cwd=project,
        env=_plain_env(project),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"README block failed ({proc.returncode}):\n{commands}\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


def test_readme_commands_work_as_written(tmp_path):
    project = make_project(tmp_path / "clone")
    init_dvc(project)
    (project / ".venv").symlink_to(Path(sys.executable).parent.parent)
    with (project / ".git/info/exclude").open("a") as exclude:
        exclude.write(".venv\n")  # .gitignore's `.venv/` matches a folder, not this link
    _bash(project, MAKE_RUN)
    for commands, why in readme_blocks((project / "README.md").read_text()):
        if why is None:
            _bash(project, commands)
    assert (project / "runs/time_bin.png").is_file()
    assert (project / "dvc_plots/index.html").is_file()
