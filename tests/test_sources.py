"""Each stage depends on the source files its command runs, the same in both engines."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT
from spikescale import sources
from spikescale.sources import all_stage_sources, dvc_deps_text, stage_modules


def _rules() -> set[str]:
    text = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    return set(re.findall(r"^rule (\w+):", text, re.M))


def test_every_stage_and_rule_has_its_modules():
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert stages == set(sources.STAGES) == _rules()


def test_dvc_yaml_lists_each_stages_source_files():
    """dvc.yaml is static text; this keeps its `src/` deps equal to the computed ones."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = {
        name: sorted(d for d in stage["deps"] if d.startswith(f"{sources.SOURCE_DIR}/"))
        for name, stage in stages.items()
    }
    expected = all_stage_sources(ROOT)
    assert listed == expected, (
        "dvc.yaml's source deps differ from the stages' imports; put these lines in each "
        "stage's deps (python -m spikescale.sources --write does it):\n" + dvc_deps_text(ROOT)
    )


def test_stage_sources_follow_the_imports_but_not_the_dispatch():
    closure = all_stage_sources(ROOT)
    # normalise runs frames (and through it binning and events) but no evaluation code
    assert "src/spikescale/normalise.py" in closure["normalise"]
    assert "src/spikescale/binning.py" in closure["normalise"]
    assert not any(f.startswith("src/spikescale/simulate/") for f in closure["normalise"])
    # the simulator is a package: evaluate depends on every file of it
    simulator = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "src/spikescale/simulate").rglob("*.py")
    )
    assert set(simulator) <= set(closure["evaluate"]) and len(simulator) > 1
    # cli.py's lazy imports dispatch to the other stages: report runs no model code
    assert "src/spikescale/model.py" not in closure["report"]
    for files in closure.values():
        assert {"src/spikescale/cli.py", "src/spikescale/params.py"} <= set(files)
        assert "src/spikescale/sources.py" not in files
        assert not any(f.startswith("tests/") or f == "README.md" for f in files)


def _write(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_imports_of_every_form_are_followed(tmp_path, monkeypatch):
    """Relative, function-level, `from package import submodule` and subpackage imports;
    of the dispatching cli.py only its top level and the stage's own cmd_<stage>."""
    _write(
        tmp_path / "src/spikescale",
        {
            "__init__.py": "",
            "cli.py": "from spikescale import io, params\n"
            "def cmd_toy():\n    from spikescale.stage import g\n"
            "def cmd_other():\n    from spikescale.other import x\n",
            "params.py": "",
            "io.py": "import json\n",
            "stage.py": "from .helper import f\n"
            "def g():\n    from spikescale.sim import graph\n    import spikescale.late\n",
            "helper.py": "from . import tool\n",
            "tool.py": "",
            "late.py": "",
            "other.py": "",
            "unused.py": "",
            "sim/__init__.py": "from .dense import run\n",
            "sim/dense.py": "from ..tool import y\n",
            "sim/graph.py": "",
        },
    )
    monkeypatch.setattr(sources, "STAGES", ("toy", "other"))
    assert stage_modules("toy", tmp_path / "src") == [
        "spikescale",
        "spikescale.cli",
        "spikescale.helper",
        "spikescale.io",
        "spikescale.late",
        "spikescale.params",
        "spikescale.sim",
        "spikescale.sim.dense",
        "spikescale.sim.graph",
        "spikescale.stage",
        "spikescale.tool",
    ]
    files = sources.stage_sources("toy", tmp_path)
    assert "src/spikescale/sim/__init__.py" in files and "src/spikescale/other.py" not in files
