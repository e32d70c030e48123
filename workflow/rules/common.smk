# Shared helpers. The config is validated by spikescale's typed params model first, so a
# bad value fails here, before any job, with a message naming the key and what was expected.

import json
import os

from snakemake.exceptions import WorkflowError

from spikescale.events import require_dataset
from spikescale.errors import InputError
from spikescale.params import (
    DatasetParams,
    ParamsError,
    canonical,
    factor_label,
    from_snakemake_config,
)
from spikescale.sources import stage_sources

try:
    VALIDATED = from_snakemake_config(config)
except ParamsError as err:
    raise WorkflowError(str(err)) from None
PARAMS = canonical(VALIDATED)

# your own network (model.factory, model.checkpoint): build, prepare and load it now, so an
# unsupported layer or a checkpoint that does not fit fails here, before any job
NETWORK_SOURCES = []
if PARAMS["model"]["factory"] is not None:
    from spikescale.network import NetworkError, check_network, factory_source

    try:
        check_network(VALIDATED)
    except NetworkError as err:
        raise WorkflowError(str(err)) from None
    _source = factory_source(PARAMS["model"]["factory"])
    if _source is not None:
        _here = os.path.abspath(".")
        _path = os.path.abspath(_source)
        NETWORK_SOURCES.append(
            os.path.relpath(_path, _here) if _path.startswith(_here + os.sep) else _path
        )
    if PARAMS["model"]["checkpoint"] is not None:
        NETWORK_SOURCES.append(PARAMS["model"]["checkpoint"])

# from here on the config holds the validated values (`--config` gives strings for numbers
# and for null)
config.clear()
config.update(PARAMS)

DS = PARAMS["dataset"]["name"]
EVENTS = f"data/{DS}/events"
FRAMES = f"data/{DS}/frames"
MODELS = f"models/{DS}"
RESULTS = f"results/{DS}"
FACTORS = [factor_label(f) for f in PARAMS["scale"]["factors"]]
FACTOR_PARTS = ["", ".layers", ".samples", ".timecourse"]
SWEEP = f"{RESULTS}/sweep.parquet"
PLOTS = [
    f"{RESULTS}/plots/{name}.png" for name in ("accuracy", "pareto", "layer_rates", "timecourse")
]
NIR = f"{RESULTS}/snn_recommended.nir"
NIR_CHIP = f"{RESULTS}/snn_recommended_chip.nir"
GPU = 1 if PARAMS["device"] == "cuda" else 0
RAW = PARAMS["dataset"]["root"]

# A missing or malformed dataset stops the run here, before any job, with the message the
# `events` stage would give (where it looked, the layout, how to download, which class
# folder is wrong). Event files already made (or pulled with DVC) need no raw data.
if not all(os.path.exists(f"{EVENTS}/{split}.parquet") for split in ("train", "test")):
    try:
        require_dataset(DatasetParams(**PARAMS["dataset"]))
    except InputError as err:
        raise WorkflowError(str(err)) from None

# The command all jobs run, an input of each (`{input.spikescale}`, ancient: it picks the
# program and changes no result, so its edits rerun nothing): workflow/bin/spikescale
# runs the checkout's .venv/bin/spikescale (else the one on PATH), so rules need no PATH set
# up, here or on a Slurm node (under `--sdm conda`, the rule's conda environment's).
SPIKESCALE = os.path.relpath(os.path.join(workflow.basedir, "workflow", "bin", "spikescale"))


def sources(stage):
    """The package's source files that `spikescale <stage>` runs (spikescale.sources).

    As inputs they make an edit of that code rerun the job and what follows (README.md and
    the tests are inputs of none).
    """
    return [
        os.path.relpath(os.path.join(workflow.basedir, path))
        for path in stage_sources(stage, workflow.basedir)
    ]


def raw_datasets(wildcards):
    """The raw dataset folder as the `events` input where it exists (as in dvc.yaml); a
    missing one is the stage's to explain (where it looked, how to download)."""
    return [RAW] if os.path.isdir(RAW) else []


def network_sources(wildcards):
    """The factory's source file and the checkpoint (where set): inputs of `train`, so a
    new checkpoint or an edited network reruns everything after it."""
    return NETWORK_SOURCES


def sections(*names, **keys):
    """The resolved parameter sections a rule uses, as JSON for `spikescale --params`;
    ``section=[key, ...]`` passes only those keys of a section.

    Passing values (not the params.yaml path) lets `--config` overrides reach the stage,
    and Snakemake's params trigger reruns only the rules whose sections changed.
    """
    chosen = {n: PARAMS[n] for n in names}
    chosen.update({n: {k: PARAMS[n][k] for k in ks} for n, ks in keys.items()})
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


wildcard_constraints:
    factor=r"[0-9]+(\.[0-9]+)?",
