"""Your own network: preparation for conversion, the factory, checkpoints, model files."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from torch import nn

from conftest import BIN, ROOT
from spikescale.model import Architecture, build_cnn, load_cnn, save_cnn
from spikescale.network import (
    FactoryNetwork,
    NetworkError,
    build_network,
    check_network,
    flat_layers,
    from_layer_spec,
    import_checkpoint,
    layer_spec,
    prepare_for_conversion,
    read_checkpoint,
)
from spikescale.params import validate

EXAMPLE = "examples.strided_bn:build"
SHAPE = (2, 34, 34)


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    """Factories import from the working directory, the project root."""
    monkeypatch.chdir(ROOT)


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from the defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.05)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _example(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_norms(build_network(EXAMPLE, SHAPE, 10), seed)


def _frames(n: int = 16, shape=SHAPE) -> torch.Tensor:
    return torch.poisson(torch.full((n, *shape), 0.5), generator=torch.Generator().manual_seed(1))


def test_folded_example_equals_the_network_in_eval_mode_with_max_pool_as_average():
    model = _example().eval()
    prepared = prepare_for_conversion(model, "average")
    # the same network, max pool replaced by average, nothing folded or dropped
    reference = nn.Sequential(
        *(
            nn.AvgPool2d(m.kernel_size, m.stride) if isinstance(m, nn.MaxPool2d) else m
            for _, m in flat_layers(model)
        )
    ).eval()
    x = _frames()
    with torch.no_grad():
        want, got = reference(x), prepared(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    kinds = [type(m).__name__ for m in prepared]
    assert "BatchNorm2d" not in kinds and "Dropout" not in kinds and "MaxPool2d" not in kinds
    assert kinds.count("AvgPool2d") == 2 and kinds[-1] == "Linear"
    assert prepared[0].stride == (2, 2) and prepared[0].bias is not None  # bias from the norm
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("eps", [1e-5, 1e-1])
def test_batch_norm_1d_and_2d_fold_with_their_eps(eps):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, bias=True),
        nn.BatchNorm2d(4, eps=eps),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6, bias=False),
        nn.Dropout(0.5),
        nn.BatchNorm1d(6, eps=eps),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    _randomise_norms(model, seed=4).eval()
    prepared = prepare_for_conversion(model)
    x = _frames(8, (2, 10, 10))
    with torch.no_grad():
        want, got = model(x), prepared(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    assert [type(m).__name__ for m in prepared] == [
        "Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"
    ]  # fmt: skip


def test_builtin_family_passes_unchanged():
    torch.manual_seed(0)
    arch = Architecture(2, 34, 34, 10, (8, 16, 32), 3, True)
    cnn = build_cnn(arch).eval()
    prepared = prepare_for_conversion(cnn)
    assert str(prepared) == str(cnn)
    assert list(prepared.state_dict()) == list(cnn.state_dict())
    for (name, a), b in zip(cnn.state_dict().items(), prepared.state_dict().values()):
        assert torch.equal(a, b), name


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(2 * 34 * 34, 10))

    def forward(self, x):
        return self.body(x)


def _head(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3), *layers, nn.Flatten(), nn.Linear(4 * 32 * 32, 10))


@pytest.mark.parametrize(
    "model, path, kind, why",
    [
        (_head(nn.LeakyReLU()), "1", "LeakyReLU", "not supported"),
        (_head(nn.Sigmoid()), "1", "Sigmoid", "not supported"),
        (
            nn.Sequential(nn.Sequential(Residual(), nn.ReLU()), nn.Flatten(), nn.Linear(2312, 10)),
            "0.0",
            "Residual",
            "its own forward",
        ),
        (Net(), "(the network)", "Net", "must be an nn.Sequential"),
        (_head(nn.ReLU(), nn.MaxPool2d(1)), "2", "MaxPool2d", "not max pooling of rates"),
        (_head(nn.ReLU(), nn.BatchNorm2d(4)), "2", "BatchNorm2d", "folds only into a Conv2d"),
        (_head(nn.AvgPool2d(1)), "0", "Conv2d", "followed directly by a ReLU"),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(2312, 10), nn.Softmax(1)),
            "2",
            "Softmax",
            "not supported",
        ),
    ],
    ids=["leaky", "sigmoid", "residual", "own-forward", "max-pool", "bn-after-relu", "no-relu",
         "softmax"],
)  # fmt: skip
def test_unsupported_layers_are_refused_naming_path_and_type(model, path, kind, why):
    with pytest.raises(NetworkError) as err:
        prepare_for_conversion(model, "error")
    text = str(err.value)
    assert text.startswith(f"layer {path} ({kind}): ") and why in text, text
    assert "Supported: Conv2d" in text and "\n" not in text


def test_layer_spec_rebuilds_the_prepared_network_as_plain_data(tmp_path):
    prepared = prepare_for_conversion(_example(), "average")
    spec = layer_spec(prepared)
    assert json.loads(json.dumps(spec)) == spec  # plain data
    rebuilt = from_layer_spec(spec)
    rebuilt.load_state_dict(prepared.state_dict())
    assert str(rebuilt) == str(prepared)
    x = _frames()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), prepared(x))
    # a model file: state dict and layers, loaded with weights_only=True and no factory call
    source = FactoryNetwork(EXAMPLE, SHAPE, 10)
    save_cnn(prepared, source, tmp_path / "m.pt", layers=spec)
    loaded, got_source, blob = load_cnn(tmp_path / "m.pt")
    assert got_source == source and blob["layers"] == spec
    with torch.no_grad():
        assert torch.equal(loaded(x), prepared(x))


def test_factory_model_file_rebuilds_the_network_as_trained(tmp_path):
    model = _example()
    save_cnn(model, FactoryNetwork(EXAMPLE, SHAPE, 10), tmp_path / "cnn.pt")
    loaded, source, _ = load_cnn(tmp_path / "cnn.pt")
    assert source.factory == EXAMPLE and source.input_shape == SHAPE
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


BAD_FACTORIES = """
from torch import nn


def not_a_module(input_shape, classes):
    return 3


def wrong_shape(input_shape, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(7, classes))


def raises(input_shape, classes):
    raise RuntimeError("no GPU")


def wrong_classes(input_shape, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 34 * 34, classes + 1))
"""


@pytest.mark.parametrize(
    "factory, message",
    [
        ("examples.no_such_module:build", "cannot import module 'examples.no_such_module'"),
        ("examples.strided_bn:nothing", "has no function 'nothing'"),
        ("badnets:not_a_module", "expected it to return a torch.nn.Module, got int"),
        ("badnets:wrong_shape", "fails on an input of shape (N, (2, 34, 34))"),
        ("badnets:raises", "failed: RuntimeError: no GPU"),
        ("badnets:wrong_classes", "expected an output of shape (N, 10)"),
    ],
)
def test_bad_factories_get_one_line_naming_the_value(factory, message, tmp_path, monkeypatch):
    (tmp_path / "badnets.py").write_text(BAD_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(NetworkError) as err:
        build_network(factory, SHAPE, 10)
    text = str(err.value)
    assert factory in text and message in text and "\n" not in text, text


def test_checkpoint_import_checks_names_and_shapes(tmp_path):
    trained = _example(seed=5)
    torch.save(trained.state_dict(), tmp_path / "good.pt")
    fresh = build_network(EXAMPLE, SHAPE, 10)
    import_checkpoint(tmp_path / "good.pt", fresh, EXAMPLE)
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

    state = trained.state_dict()
    state.pop("5.weight")
    state["extra.weight"] = torch.zeros(1)
    state["0.0.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(NetworkError) as err:
        import_checkpoint(tmp_path / "bad.pt", build_network(EXAMPLE, SHAPE, 10), EXAMPLE)
    text = str(err.value)
    assert "does not fit model.factory 'examples.strided_bn:build'" in text
    assert "5.weight: missing (expected shape (10, 64))" in text
    assert "extra.weight: not in the network" in text
    assert "0.0.0.weight: shape (3, 3), the network has (16, 2, 5, 5)" in text

    with pytest.raises(NetworkError, match="the file does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(NetworkError, match="expected a state_dict .* got list"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save(trained, tmp_path / "pickled_module.pt")
    with pytest.raises(NetworkError, match="cannot be loaded with weights_only=True"):
        read_checkpoint(tmp_path / "pickled_module.pt")


def test_check_network_builds_prepares_and_loads_before_any_job(tmp_path):
    ok = validate({"model": {"factory": EXAMPLE}, "conversion": {"max_pool": "average"}})
    assert "5 weighted layers" in check_network(ok)
    with pytest.raises(NetworkError, match="not max pooling of rates"):
        check_network(validate({"model": {"factory": EXAMPLE}}))
    torch.save({"0.0.0.weight": torch.zeros(1)}, tmp_path / "c.pt")
    bad = validate(
        {
            "model": {"factory": EXAMPLE, "checkpoint": str(tmp_path / "c.pt")},
            "conversion": {"max_pool": "average"},
        }
    )
    with pytest.raises(NetworkError, match="does not fit"):
        check_network(bad)


def test_spikescale_check_names_the_bad_layer(tmp_path):
    (tmp_path / "params.yaml").write_text(
        (ROOT / "params.yaml").read_text().replace("factory: null", f"factory: {EXAMPLE}")
    )
    proc = subprocess.run(
        [str(BIN / "spikescale"), "check", "--params", str(tmp_path / "params.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert proc.returncode == 2
    assert "layer 0.1.3 (MaxPool2d): max pooling of spikes is not max pooling of rates" in (
        proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_snn_biases_and_its_cnn_twin_are_divided_alike():
    from spikescale.model import divide_biases, to_snn
    from spikescale.params import ConversionParams

    prepared = prepare_for_conversion(_example(), "average")
    snn = to_snn(prepared, FactoryNetwork(EXAMPLE, SHAPE, 10), ConversionParams(), 29.5)
    twin = divide_biases(prepared, 29.5)
    biased = [m for m in snn if isinstance(m, (nn.Conv2d, nn.Linear))]
    want = [m for m in twin if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(biased) == 5
    for a, b, c in zip(
        biased, want, (m for m in prepared if isinstance(m, (nn.Conv2d, nn.Linear)))
    ):
        assert torch.equal(a.bias, b.bias) and torch.equal(a.weight, c.weight)
        assert not torch.equal(b.bias, c.bias)


@pytest.mark.parametrize(
    "name, shape, classes",
    [
        ("digits", (2, 34, 34), 10),
        ("nmnist", (2, 34, 34), 10),
        ("dvsgesture", (2, 128, 128), 11),
        ("pokerdvs", (2, 35, 35), 4),
    ],
)
def test_check_time_input_shape_is_the_datasets_frame_shape(name, shape, classes):
    from spikescale.network import dataset_shape

    assert dataset_shape(validate({"dataset": {"name": name}}).dataset) == (shape, classes)


def test_check_time_input_shape_follows_frames_downsample():
    from spikescale.network import dataset_shape

    dataset = validate({"dataset": {"name": "pokerdvs"}}).dataset
    assert dataset_shape(dataset, downsample=4) == ((2, 9, 9), 4)  # ceil(35 / 4)


@pytest.mark.parametrize(
    "pool", [nn.AvgPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 1, 1, count_include_pad=False)]
)
def test_pools_the_simulators_cannot_run_exactly_are_refused(pool):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), pool, nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(NetworkError, match="layer 2 .AvgPool2d.*ceil_mode"):
        prepare_for_conversion(model)


def test_a_pool_divisor_survives_preparation_and_the_layer_spec():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AvgPool2d(3, divisor_override=4), nn.Flatten()
    )
    prepared = prepare_for_conversion(nn.Sequential(*model, nn.Linear(4, 3)))
    assert prepared[2].divisor_override == 4
