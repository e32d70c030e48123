"""The source files each pipeline stage runs, so that both engines rerun a stage whose code
changed (Snakemake rules take them as inputs, dvc.yaml lists them as deps).

``spikescale <stage>`` starts in ``cli.py``, which imports the stage's own modules lazily,
inside the subcommand; so the roots of a stage are the entry modules (:data:`ENTRY_MODULES`)
plus the stage's modules (:data:`STAGE_MODULES`, the one place that maps stages to code),
and only the module-level imports of the dispatching module (:data:`DISPATCH_MODULE`) are
followed. From the roots, every ``spikescale`` import (module level or inside a function,
absolute or relative) is followed to its transitive closure. The analysis reads the files
with :mod:`ast`; nothing is imported, so it is cheap enough for Snakemake's parse step.

``python -m spikescale.sources`` prints each stage's list as dvc.yaml deps (tests check
dvc.yaml against it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "spikescale"
SOURCE_DIR = "src"  # where the package lies in the project, relative to its root

# every `spikescale <stage>` runs these: the command line, the parameters, the writers
ENTRY_MODULES = ("spikescale.cli", "spikescale.params", "spikescale.io")
# the module whose function-level imports dispatch to all the stages: not followed
DISPATCH_MODULE = "spikescale.cli"

# stage (Snakemake rule and dvc.yaml stage name) -> the modules its subcommand imports
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "events": ("spikescale.dataset",),
    "frames": ("spikescale.frames",),
    "train": ("spikescale.train", "spikescale.frames", "spikescale.events", "spikescale.model"),
    "normalise": ("spikescale.normalise", "spikescale.frames", "spikescale.model"),
    "convert": ("spikescale.convert", "spikescale.model"),
    "evaluate": ("spikescale.evaluate", "spikescale.model"),
    "refine": ("spikescale.collect", "spikescale.evaluate", "spikescale.model"),
    "collect": ("spikescale.collect", "spikescale.events", "spikescale.model"),
    "report": ("spikescale.report",),
    "export": ("spikescale.export", "spikescale.model"),
}


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
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
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


def stage_modules(stage: str, source_dir: Path) -> list[str]:
    """Every :data:`PACKAGE` module that ``spikescale <stage>`` may import, sorted."""
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_MODULES)}")
    todo = [m for root in ENTRY_MODULES + STAGE_MODULES[stage] for m in _with_parents(root)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module, source_dir)
        if path is None:
            if module in ENTRY_MODULES + STAGE_MODULES[stage]:
                raise FileNotFoundError(
                    f"stage {stage!r}: module {module} not found under {source_dir} "
                    "(update spikescale.sources.STAGE_MODULES)"
                )
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
    return {stage: stage_sources(stage, project) for stage in STAGE_MODULES}


def dvc_deps_text(project: str | Path = ".") -> str:
    """Each stage's source files as the YAML lines of dvc.yaml's ``deps`` (for copy-paste)."""
    lines = []
    for stage, files in all_stage_sources(project).items():
        lines.append(f"  {stage}:")
        lines += [f"      - {f}" for f in files]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dvc_deps_text(sys.argv[1] if len(sys.argv) > 1 else "."))
