"""The typed parameter model: the one way parameters reach the code.

``params.yaml`` is validated by :class:`Params`; the JSON schema that the Snakefile checks
the config against is generated from it (``spikescale schema``). Every stage receives the
resolved values (Snakemake passes the sections a rule uses as JSON; DVC lets the stage read
``params.yaml``, which ``dvc exp run -S`` has already changed), so overrides reach the
computation in both tools.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from spikescale.errors import InputError

# int | float keeps a factor as written (2 stays 2, 2.0 stays 2.0), so its label in file
# names is the same in Snakemake and in DVC's ${item.factor}.
Factor = Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigitsParams(Section):
    """The built-in dataset: scikit-learn's digits seen by a simulated event camera."""

    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="fraction of samples in the test split"
    )
    duration_us: int = Field(300_000, gt=0, description="recording length in microseconds")
    saccades: int = Field(3, ge=1, description="straight eye movements per recording")
    saccade_px: float = Field(2.0, gt=0, description="amplitude of a saccade in sensor pixels")
    steps_per_saccade: int = Field(100, ge=1, description="camera samples per saccade")
    threshold: float = Field(0.15, gt=0, description="log-intensity change that fires an event")
    noise_hz: float = Field(0.0, ge=0, description="background events per pixel per second")


class DatasetParams(Section):
    name: Literal[
        "digits",
        "nmnist",
        "dvsgesture",
        "pokerdvs",
        "ncaltech101",
        "cifar10dvs",
        "asldvs",
        "folder",
    ] = Field(
        "digits",
        description="built-in 'digits', a tonic dataset, or 'folder': your own recordings",
    )
    root: str = Field(
        "data/raw",
        description="folder holding (or receiving) tonic datasets; for 'folder', the"
        " recordings as <root>/train/<class>/<file> (and <root>/test/<class>/<file>)",
    )
    download: bool = Field(False, description="let tonic download a missing dataset into root")
    on_bad_sample: Literal["error", "skip"] = Field(
        "error",
        description="a corrupt/empty/out-of-sensor recording stops the run,"
        " or is skipped and counted",
    )
    max_samples_per_class: int | None = Field(
        None, ge=1, description="cap per class and split (quick runs)"
    )
    seed: int = Field(0, description="seed of the dataset generator and split")
    sensor_size: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None,
        description="folder: [width, height, polarities]; null: inferred from the events"
        " (and the sizes the files state)",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="the seeded, stratified test share where a dataset has no test split"
        " (a folder without test/, ncaltech101, cifar10dvs, asldvs)",
    )
    time_unit: Literal["s", "ms", "us", "ns"] = Field(
        "us", description="folder: unit of .npy/.npz timestamps (the other formats state theirs)"
    )

    @model_validator(mode="after")
    def _folder_only(self) -> DatasetParams:
        if self.sensor_size is not None and self.name != "folder":
            raise ValueError(
                f"dataset.sensor_size is for name: folder; {self.name!r} has its own sensor"
            )
        return self

    digits: DigitsParams = DigitsParams()


class FramesParams(Section):
    """How training frames are binned (tonic ToFrame's modes)."""

    mode: Literal["n_time_bins", "time_window", "event_count", "n_event_bins"] = "n_time_bins"
    n_time_bins: int = Field(10, ge=1)
    time_window_us: int = Field(30_000, gt=0)
    event_count: int = Field(400, ge=1)
    n_event_bins: int = Field(10, ge=1)
    overlap: float = Field(0.0, ge=0, description="overlap of consecutive bins, in the mode's unit")
    include_incomplete: bool = Field(
        False, description="time_window/event_count: keep the last, partial bin"
    )
    bins_as_examples: bool = Field(
        True,
        description="each bin is a training example (true)"
        " or the bins of a sample are summed (false)",
    )
    downsample: int = Field(
        1,
        ge=1,
        description="integer spatial factor k: an event at (x, y) counts at (x // k, y // k),"
        " counts summed, on a ceil(W/k) x ceil(H/k) sensor; the same for training frames and"
        " evaluation rasters",
    )


class TrainingParams(Section):
    seed: int = 0
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    channels: list[int] = Field(
        [8, 16, 32], min_length=1, description="output channels of the conv blocks"
    )
    kernel_size: int = Field(3, ge=1)
    bias: bool = Field(False, description="biases in conv and linear layers")
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    channels_last: bool = Field(
        False,
        description="hold networks and frames channels-last (NHWC): about 1.4x the training"
        " speed on the CPU, weights different from the default layout's in the last bits",
    )
    input: Literal["frames", "images"] = Field(
        "frames",
        description="what the CNN trains on: binned event frames, or the static images the"
        " recordings were made from (datasets digits and nmnist; one input channel)",
    )
    polarities: Literal["sum", "on"] = Field(
        "sum",
        description="with input: images, how two-polarity events feed the one-channel network"
        " in evaluation: OFF + ON counts summed, or ON events only",
    )

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError(f"every channel count must be >= 1, got {v}")
        return v


class NormalisationParams(Section):
    percentile: float = Field(
        99.9, gt=0, le=100, description="percentile of activations mapped to 1"
    )
    ignore_zeros: bool = Field(
        False, description="percentile over non-zero activations (SNN Toolbox) or all (sinabs)"
    )
    samples: int = Field(500, ge=1, description="training frames used for normalisation")
    seed: int = Field(0, description="seed of the draw of those frames from the training set")
    batch_size: int = Field(256, ge=1)


class ModelParams(Section):
    """Which network: the built-in family or the user's own, trained here or imported."""

    factory: str | None = Field(
        None,
        description="'module:function' importable from the project root or the environment,"
        " called as function(input_shape=(C, H, W), classes=N) -> torch.nn.Module;"
        " null: the built-in family (training.channels, kernel_size, bias)",
    )
    checkpoint: str | None = Field(
        None,
        description="a trained state_dict (.pt) for model.factory's network:"
        " train verifies and imports it instead of training",
    )

    @field_validator("factory")
    @classmethod
    def _module_function(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(
                f"expected 'module:function' (e.g. examples.strided_bn:build), got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _checkpoint_needs_factory(self) -> ModelParams:
        if self.checkpoint is not None and self.factory is None:
            raise ValueError(
                "model.checkpoint needs model.factory: the network the weights belong to"
            )
        return self


class ConversionParams(Section):
    spike_fn: Literal["multi", "single"] = Field(
        "multi", description="sinabs MultiSpike or SingleSpike"
    )
    reset: Literal["subtract", "zero"] = Field(
        "subtract", description="MembraneSubtract or MembraneReset"
    )
    threshold: float = Field(1.0, gt=0)
    min_v_mem: float | None = Field(
        -1.0, lt=0, description="lower bound of the membrane; null for none"
    )
    max_pool: Literal["error", "average"] = Field(
        "error",
        description="MaxPool2d in the network: refuse it (error) or replace it by an AvgPool2d"
        " of the same window before normalisation (average)",
    )
    bias_rescaling: Literal["auto"] | Annotated[float, Field(gt=0)] = Field(
        "auto",
        description="biases divided by this many SNN time steps per training frame; auto:"
        " the training frames' mean duration over evaluation.time_bin_us",
    )


class EvaluationParams(Section):
    time_bin_us: int = Field(1000, gt=0, description="simulation time step in microseconds")
    batch_size: int = Field(64, ge=1)
    backend: Literal["fast", "sinabs"] = Field(
        "fast", description="event-driven simulation (fast) or sinabs's dense one (the reference)"
    )
    max_samples: int | None = Field(
        None, ge=1, description="evaluate only the first N test samples"
    )
    timecourse_points: int = Field(15, ge=2, le=100, description="read-outs through the recording")


class ScaleParams(Section):
    factors: list[Factor] = Field(
        [1, 2, 4, 8, 16, 32, 64], min_length=1, description="first-layer weight scale factors, > 0"
    )
    refine_rounds: int = Field(0, ge=0)

    @field_validator("factors")
    @classmethod
    def _unique(cls, v: list[float]) -> list[float]:
        if len(set(v)) != len(v):
            raise ValueError(f"factors must be unique, got {v}")
        return v


class RecommendParams(Section):
    tolerance_pp: float = Field(
        1.0, ge=0, description="accept factors this many percentage points below the best"
    )
    max_gap_pp: float = Field(
        10.0,
        ge=0,
        description="the conversion failed (no factor is recommended) when the best SNN"
        " accuracy is more than this many percentage points below the CNN's",
    )


class EnergyParams(Section):
    """Energy per operation for the per-recording estimates (Horowitz, ISSCC 2014, 45 nm,
    32-bit float: multiply 3.7 pJ + add 0.9 pJ for a multiply-accumulate, 0.9 pJ for an
    accumulate)."""

    mac_pj: float = Field(
        4.6, gt=0, description="energy of one multiply-accumulate (the CNN's operation), pJ"
    )
    ac_pj: float = Field(
        0.9, gt=0, description="energy of one accumulate (the SNN's synaptic operation), pJ"
    )


class HardwareParams(Section):
    """The chip the converted network is meant to run on (spikescale.chip)."""

    target: Literal["speck"] | None = Field(
        None,
        description="null | speck: also evaluate every factor as Speck / DYNAP-CNN would run "
        "it (discretised), with its memory and synops/s checks",
    )
    synops_per_second_per_core: float = Field(
        1e8,
        gt=0,
        allow_inf_nan=False,
        description="synaptic operations per second one core carries before the chip stalls; "
        "the default is a placeholder of plausible order, not a SynSense figure: set the "
        "limit of your chip (measured, or from SynSense)",
    )


class Params(Section):
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="torch device for training and evaluation"
    )
    dataset: DatasetParams = DatasetParams()
    frames: FramesParams = FramesParams()
    training: TrainingParams = TrainingParams()
    model: ModelParams = ModelParams()
    normalisation: NormalisationParams = NormalisationParams()
    conversion: ConversionParams = ConversionParams()
    evaluation: EvaluationParams = EvaluationParams()
    scale: ScaleParams = ScaleParams()
    recommend: RecommendParams = RecommendParams()
    energy: EnergyParams = EnergyParams()
    hardware: HardwareParams = HardwareParams()

    @model_validator(mode="after")
    def _images_exist(self) -> Params:
        if self.training.input == "images" and self.dataset.name not in ("digits", "nmnist"):
            raise ValueError(
                "training.input: images needs the images the recordings were made from, known"
                f" for datasets digits and nmnist, not {self.dataset.name!r}; use frames"
            )
        return self

    @model_validator(mode="after")
    def _frames_fit(self) -> Params:
        f = self.frames
        window = {"time_window": f.time_window_us, "event_count": f.event_count}.get(f.mode)
        if window is not None and f.overlap >= window:
            raise ValueError(
                f"frames.overlap ({f.overlap}) must be smaller than the window ({window})"
            )
        if f.mode in ("n_time_bins", "n_event_bins") and f.overlap >= 1:
            raise ValueError(
                f"frames.overlap is a fraction in mode {f.mode}: expected [0, 1), got {f.overlap}"
            )
        return self


class ParamsError(InputError):
    """Parameters that do not validate; the message names each key and what was expected."""


_UNION_TAGS = {"int", "float", "str", "bool", "none", "list[int]"}


def _explain(err: ValidationError, source: str) -> ParamsError:
    """One line per offending key: the key, what was expected, what was given."""
    found: dict[str, tuple[list[str], object]] = {}
    for e in err.errors():
        # drop pydantic's union-branch tags ("constrained-int") from the key path
        parts = [
            str(p)
            for p in e["loc"]
            if not (isinstance(p, str) and (p in _UNION_TAGS or "-" in p or "[" in p))
        ]
        key = ".".join(parts) or "(top level)"
        messages, _ = found.setdefault(key, ([], e.get("input")))
        if e["msg"] not in messages:
            messages.append(e["msg"])
    lines = [f"invalid parameters in {source}:"]
    lines += [f"  {key}: {' or '.join(msgs)} (got {got!r})" for key, (msgs, got) in found.items()]
    return ParamsError("\n".join(lines))


def validate(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise _explain(err, source) from None


# YAML's spellings of null (the core schema's), as `--config` may bring them
_YAML_NULLS = frozenset({"null", "Null", "NULL", "~"})


def _nulls_restored(value):
    if isinstance(value, dict):
        return {k: _nulls_restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls_restored(v) for v in value]
    return None if isinstance(value, str) and value in _YAML_NULLS else value


def from_snakemake_config(config: dict) -> Params:
    """The Snakemake config (params.yaml with ``--config`` overrides applied), validated.

    Snakemake reads ``--config section={key: value}`` with YAML's BaseLoader, so the nested
    values arrive as strings: the typed model turns ``"8"`` and ``"true"`` back into a number
    and a boolean, but ``null`` would stay the string ``"null"``; it is None again here
    (no parameter takes the word "null" as a value).
    """
    return validate(_nulls_restored(config), "the Snakemake config (params.yaml and --config)")


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameter file {path} does not exist")
    return validate(yaml.safe_load(path.read_text()), str(path))


def from_json(text: str) -> Params:
    """Parameters as a rule hands them over: a JSON object of (some) sections."""
    return validate(json.loads(text), "the rule's params")


def canonical(params: Params) -> dict:
    return params.model_dump(mode="json")


def params_hash(params: Params) -> str:
    blob = json.dumps(canonical(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def factor_label(factor: int | float) -> str:
    """A factor as it appears in file names, exactly as DVC renders ``${item.factor}``."""
    return str(factor)


def json_schema() -> dict:
    schema = Params.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "spikescale params.yaml"
    return schema
