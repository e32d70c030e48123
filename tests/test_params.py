import json

import pytest
import yaml

from conftest import ROOT
from spikescale import params as P


def test_committed_schema_is_the_generated_one():
    committed = json.loads((ROOT / "workflow/schemas/params.schema.json").read_text())
    assert committed == P.json_schema(), "run `make schema` and commit the result"


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


def test_params_yaml_is_complete_and_valid():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    model = P.validate(raw)
    assert _keys(raw) == _keys(P.canonical(model)), (
        "params.yaml must spell out every key (DVC reads it raw)"
    )


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ({"dataset": {"name": "mnist"}}, "dataset.name", "'digits', 'nmnist'"),
        ({"scale": {"factors": [1, -2]}}, "scale.factors.1", "greater than 0"),
        ({"scale": {"factors": []}}, "scale.factors", "at least 1"),
        ({"scale": {"factors": [2, 2]}}, "scale.factors", "unique"),
        ({"evaluation": {"time_bin_us": -1}}, "evaluation.time_bin_us", "greater than 0"),
        ({"normalisation": {"percentile": 0}}, "normalisation.percentile", "greater than 0"),
        (
            {"normalisation": {"percentile": 100.1}},
            "normalisation.percentile",
            "less than or equal to 100",
        ),
        ({"training": {"epoch": 3}}, "training.epoch", "Extra inputs"),
        (
            {"frames": {"mode": "time_window", "time_window_us": 1000, "overlap": 1000}},
            "frames.overlap",
            "smaller",
        ),
    ],
)
def test_invalid_params_name_the_key_and_expectation(override, key, expected):
    with pytest.raises(P.ParamsError) as err:
        P.validate(override)
    assert key in str(err.value) and expected in str(err.value)


def test_factor_labels_match_dvc_rendering():
    p = P.validate({"scale": {"factors": [1, 2.0, 0.5, 64]}})
    assert [P.factor_label(f) for f in p.scale.factors] == ["1", "2.0", "0.5", "64"]


def test_params_hash_is_stable_and_sensitive():
    a = P.validate({})
    assert P.params_hash(a) == P.params_hash(P.validate({}))
    assert P.params_hash(a) != P.params_hash(P.validate({"training": {"epochs": 3}}))


def test_snakemake_config_overrides_reach_the_model_null_included():
    """`--config` values as Snakemake itself parses them (nested ones as YAML BaseLoader
    strings): numbers, booleans and null come out typed."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = parse_config(
        ["conversion={min_v_mem: null, bias_rescaling: 4}", "frames={n_time_bins: 1}"]
    )
    assert overrides["conversion"]["min_v_mem"] == "null"  # what Snakemake hands over
    update_config(config, overrides)
    p = P.from_snakemake_config(config)
    assert p.conversion.min_v_mem is None and p.conversion.bias_rescaling == 4.0
    assert p.frames.n_time_bins == 1
    with pytest.raises(P.ParamsError, match="evaluation.time_bin_us"):
        P.from_snakemake_config({**config, "evaluation": {"time_bin_us": "null"}})
