"""The source files each pipeline stage runs, so that both engines rerun a stage whose code
changed (Snakemake rules take them as inputs, dvc.yaml lists them as deps).

``spikescale <stage>`` starts in ``cli.py``, whose ``cmd_<stage>`` function imports the
stage's own modules lazily; so the roots of a stage are ``cli.py`` with its module-level
imports and the imports inside ``cmd_<stage>`` (read from the source, so no list can drift
from the code). From the roots, every ``spikescale`` import (module level or inside a
function, absolute or relative) is followed to its transitive closure. The analysis reads
the files with :mod:`ast`; nothing is imported, so it is cheap enough for Snakemake's parse
step.

``python -m spikescale.sources`` prints each stage's list as dvc.yaml deps, and with
``--write`` puts them into dvc.yaml (tests check dvc.yaml against them).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "spikescale"
SOURCE_DIR = "src"  # where the package lies in the project, relative to its root

DISPATCH_MODULE = "spikescale.cli"  # cmd_<stage> in it imports the stage's modules

# the Snakemake rules and dvc.yaml stages that run `spikescale <stage>`, in pipeline order
STAGES = (
    "events", "frames", "train", "normalise", "convert",
    "evaluate", "refine", "collect", "report", "export",
)  # fmt: skip


def module_file(module: str, source_dir: Path) -> Path | None:
    """The file of ``module`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), None if absent."""
    base = source_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The modules of :data:`PACKAGE` that ``module`` (read from ``path``) imports by name.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule); callers keep
    those that exist. With ``top_level_only``, imports inside functions and classes are
    left out.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(tree, package, walk=not top_level_only)


def _imports_in(tree: ast.Module, package: str, walk: bool) -> set[str]:
    """The :data:`PACKAGE` modules imported in ``tree`` (all of it, or its top level only);
    ``package`` resolves relative imports."""
    found: set[str] = set()
    for node in ast.walk(tree) if walk else tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' __init__."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _dispatched_modules(stage: str, source_dir: Path) -> set[str]:
    """The modules that ``cmd_<stage>`` in the dispatching module imports inside its body."""
    path = module_file(DISPATCH_MODULE, source_dir)
    if path is None:
        raise FileNotFoundError(f"{DISPATCH_MODULE} not found under {source_dir}")
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == f"cmd_{stage}":
            body = ast.Module(body=node.body, type_ignores=[])
            return _imports_in(body, DISPATCH_MODULE.rpartition(".")[0], walk=True)
    raise ValueError(f"stage {stage!r}: {path} has no function cmd_{stage}")


def stage_modules(stage: str, source_dir: Path) -> list[str]:
    """Every :data:`PACKAGE` module that ``spikescale <stage>`` may import, sorted."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {list(STAGES)}")
    roots = [DISPATCH_MODULE, *_dispatched_modules(stage, source_dir)]
    todo = [m for root in roots for m in _with_parents(root)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module, source_dir)
        if path is None:
            continue  # `from a import name` where name is not a module
        seen.add(module)
        imports = imported_modules(module, path, top_level_only=module == DISPATCH_MODULE)
        todo += [p for m in imports for p in _with_parents(m) if p not in seen]
    return sorted(seen)


def stage_sources(stage: str, project: str | Path = ".") -> list[str]:
    """The source files ``spikescale <stage>`` runs, as sorted POSIX paths relative to the
    project root ``project`` (e.g. ``src/spikescale/normalise.py``)."""
    project = Path(project)
    source_dir = project / SOURCE_DIR
    files = (module_file(m, source_dir) for m in stage_modules(stage, source_dir))
    return sorted(f.relative_to(project).as_posix() for f in files if f is not None)


def all_stage_sources(project: str | Path = ".") -> dict[str, list[str]]:
    """:func:`stage_sources` of every stage, in pipeline order."""
    return {stage: stage_sources(stage, project) for stage in STAGES}


def dvc_deps_text(project: str | Path = ".") -> str:
    """Each stage's source files as the YAML lines of dvc.yaml's ``deps`` (for copy-paste)."""
    lines = []
    for stage, files in all_stage_sources(project).items():
        lines.append(f"  {stage}:")
        lines += [f"      - {f}" for f in files]
    return "\n".join(lines) + "\n"


def with_dvc_deps(dvc_yaml: str, project: str | Path = ".") -> str:
    """dvc.yaml's text with each stage's ``src/`` deps replaced by the computed lists (put
    first in ``deps``); every other line stays as it is."""
    computed = all_stage_sources(project)
    out: list[str] = []
    stage = None
    for line in dvc_yaml.splitlines(keepends=True):
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":"):
            stage = stripped[:-1]
        if stripped.startswith(f"- {SOURCE_DIR}/{PACKAGE}/"):
            continue
        out.append(line)
        if stripped == "deps:" and stage in computed:
            indent = line[: len(line) - len(line.lstrip())] + "  "
            out += [f"{indent}- {f}\n" for f in computed[stage]]
    return "".join(out)


if __name__ == "__main__":
    # python -m spikescale.sources            print each stage's list
    # python -m spikescale.sources --write    rewrite dvc.yaml's source deps in place
    if sys.argv[1:] == ["--write"]:
        dvc_yaml = Path("dvc.yaml")
        dvc_yaml.write_text(with_dvc_deps(dvc_yaml.read_text()))
    else:
        sys.stdout.write(dvc_deps_text(sys.argv[1] if len(sys.argv) > 1 else "."))
