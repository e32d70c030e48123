"""Your own network: a user's module made into the flat ``nn.Sequential`` that converts.

A researcher's CNN (``model.factory``) comes with nested blocks, batch norm, dropout and
max pooling. :func:`prepare_for_conversion` turns it into the plain chain that sinabs
converts layer by layer and that normalisation scales: nested ``nn.Sequential`` flattened,
batch norm folded into the Conv2d/Linear before it (eps included; the same outputs in eval
mode up to float32 rounding), Dropout/Identity dropped, MaxPool2d refused or replaced by
an AvgPool2d of the same window (``conversion.max_pool``). Anything else is refused naming
the layer's path and type. :func:`layer_spec` describes the prepared chain in plain data,
so that later stages rebuild it from the model file without calling the user's code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spikescale.errors import InputError

SUPPORTED = (
    "Conv2d (zero padding; any stride, padding, dilation, groups, with or without bias), "
    "Linear, ReLU, AvgPool2d, MaxPool2d (with conversion.max_pool: average), "
    "BatchNorm2d/BatchNorm1d directly after a Conv2d/Linear (folded into it), "
    "Dropout/Dropout1d/Dropout2d and Identity (dropped), Flatten, nested nn.Sequential"
)
WEIGHTED = (nn.Conv2d, nn.Linear)
_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_KEPT = (nn.Conv2d, nn.Linear, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d)

MAX_POOL_WHY = (
    "max pooling of spikes is not max pooling of rates: the neuron that spikes first or "
    "most often in a window is not the one with the highest rate over the recording, so the "
    "SNN's pool would pass on the wrong values; set conversion.max_pool: average to replace it "
    "by an AvgPool2d of the same window (as NengoDL's max_to_avg_pool does), or use AvgPool2d"
)


class NetworkError(InputError):
    """A network, factory or checkpoint that spikescale cannot use; the message says why."""


@dataclass(frozen=True)
class FactoryNetwork:
    """A user's network as the model files record it: how to build it again."""

    factory: str
    input_shape: tuple[int, int, int]
    classes: int


# --------------------------------------------------------------------------- the factory


def _project_root_on_path() -> None:
    """Make modules in the working directory (the project root) importable."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def load_factory(factory: str) -> Callable[..., nn.Module]:
    """The function named by ``"module:function"``, imported from the project root or the
    environment."""
    module_name, _, function_name = factory.partition(":")
    if not module_name or not function_name:
        raise NetworkError(
            f"model.factory: expected 'module:function' (e.g. examples.strided_bn:build), "
            f"got {factory!r}"
        )
    _project_root_on_path()
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        raise NetworkError(
            f"model.factory {factory!r}: cannot import module {module_name!r} from the project "
            f"root ({Path.cwd()}) or the environment: {type(err).__name__}: {err}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise NetworkError(
            f"model.factory {factory!r}: module {module_name!r} has no function {function_name!r}"
        )
    return function


def factory_source(factory: str) -> Path | None:
    """The source file of the factory's module (a dependency of `train`), if it has one."""
    module_name = factory.partition(":")[0]
    _project_root_on_path()
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def build_network(factory: str, input_shape: tuple[int, int, int], classes: int) -> nn.Module:
    """Call the factory as ``function(input_shape=(C, H, W), classes=N)`` and check that it
    returns a module that maps one input of that shape to ``classes`` outputs."""
    function = load_factory(factory)
    shape = tuple(int(s) for s in input_shape)
    try:
        model = function(input_shape=shape, classes=int(classes))
    except Exception as err:  # noqa: BLE001
        raise NetworkError(
            f"model.factory {factory!r}: calling it as function(input_shape={shape}, "
            f"classes={classes}) failed: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise NetworkError(
            f"model.factory {factory!r}: expected it to return a torch.nn.Module, got "
            f"{type(model).__name__}"
        )
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *shape)))
    except Exception as err:  # noqa: BLE001
        raise NetworkError(
            f"model.factory {factory!r}: its network fails on an input of shape (N, {shape}) "
            f"(the dataset's frames): {type(err).__name__}: {err}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise NetworkError(
            f"model.factory {factory!r}: expected an output of shape (N, {classes}) (one value "
            f"per class) for an input of shape (N, {shape}), got {got}"
        )
    return model


# --------------------------------------------------------------------------- preparation


def _own_forward(m: nn.Module, base: type) -> bool:
    return type(m).forward is not base.forward


def _refuse(path: str, m: nn.Module, why: str) -> NetworkError:
    return NetworkError(
        f"layer {path or '(the network)'} ({type(m).__name__}): {why}. Supported: {SUPPORTED}"
    )


def flat_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(path, layer) of every leaf of nested ``nn.Sequential`` blocks, refusing what is not
    supported (a module with its own ``forward``, an activation other than ReLU, ...)."""
    if isinstance(model, nn.Sequential):
        if _own_forward(model, nn.Sequential):
            raise _refuse(prefix, model, "an nn.Sequential with its own forward")
        out = []
        for name, child in model.named_children():
            out += flat_layers(child, f"{prefix}.{name}" if prefix else name)
        return out
    for base in _KEPT + _DROPPED + _NORMS:
        if isinstance(model, base):
            if _own_forward(model, base):
                raise _refuse(prefix, model, f"a {base.__name__} with its own forward")
            return [(prefix, model)]
    if not prefix:
        why = (
            "the network must be an nn.Sequential (nested nn.Sequential blocks allowed), "
            "not a module with its own forward"
        )
    elif type(model).__module__.startswith("torch."):
        why = "not supported"  # LeakyReLU, Sigmoid, ...
    else:
        why = "a module with its own forward (e.g. a residual block) is not supported"
    raise _refuse(prefix, model, why)


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, norm: nn.Module) -> nn.Module:
    """A copy of ``layer`` (Conv2d or Linear) whose output equals ``norm(layer(x))`` in eval
    mode: weights times gamma / sqrt(var + eps) per output channel, the bias shifted."""
    mean = norm.running_mean.double()
    std = torch.sqrt(norm.running_var.double() + norm.eps)
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / std
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    weight = layer.weight.double() * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    folded = _rebuilt(layer, bias=True)
    folded.weight.copy_(weight.to(layer.weight.dtype))
    folded.bias.copy_(((bias - mean) * scale + beta).to(layer.weight.dtype))
    return folded


def _rebuilt(layer: nn.Module, bias: bool) -> nn.Module:
    spec = _spec_of(layer)
    spec["bias"] = bias
    return _layer_from_spec(spec)


def _average_pool(path: str, m: nn.MaxPool2d) -> nn.AvgPool2d:
    if m.dilation not in (1, (1, 1)) or m.return_indices:
        raise _refuse(path, m, "max pooling with dilation or return_indices has no average twin")
    return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)


def prepare_for_conversion(model: nn.Module, max_pool: str = "error") -> nn.Sequential:
    """The flat, convertible ``nn.Sequential`` equal to ``model`` in eval mode.

    Nested ``nn.Sequential`` are flattened, batch norm folded into the weighted layer before
    it, Dropout/Identity dropped, MaxPool2d replaced by AvgPool2d (``max_pool="average"``)
    or refused (``"error"``). Every weighted layer but the last must be followed directly
    by a ReLU (sinabs makes the ReLUs the spiking layers), and the last layer must be a
    weighted one (the read-out). The model itself is left unchanged.
    """
    if max_pool not in ("error", "average"):
        raise NetworkError(f"conversion.max_pool: expected error or average, got {max_pool!r}")
    layers: list[tuple[str, nn.Module]] = []
    for path, m in flat_layers(model):
        if isinstance(m, _DROPPED):
            continue
        if isinstance(m, _NORMS):
            prev = layers[-1][1] if layers else None
            want = nn.Conv2d if isinstance(m, nn.BatchNorm2d) else nn.Linear
            if not isinstance(prev, want):
                raise _refuse(
                    path,
                    m,
                    f"batch norm folds only into a {want.__name__} directly before it "
                    f"(Dropout/Identity between are fine), found "
                    f"{type(prev).__name__ if prev is not None else 'nothing'}",
                )
            if m.running_mean is None or m.running_var is None:
                raise _refuse(path, m, "batch norm without running statistics cannot be folded")
            layers[-1] = (layers[-1][0], fold_batch_norm(prev, m))
            continue
        if isinstance(m, nn.MaxPool2d):
            if max_pool == "error":
                raise _refuse(path, m, MAX_POOL_WHY)
            m = _average_pool(path, m)
        if isinstance(m, nn.AvgPool2d) and (m.ceil_mode or not m.count_include_pad):
            raise _refuse(
                path,
                m,
                "the simulators pool whole windows with the padding counted: no ceil_mode,"
                " no count_include_pad=False",
            )
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise _refuse(path, m, f"padding_mode {m.padding_mode!r} (only zero padding)")
        layers.append((path, _copy_layer(m)))
    _check_chain(layers)
    prepared = nn.Sequential(*(m for _, m in layers))
    return prepared.eval()


def _copy_layer(m: nn.Module) -> nn.Module:
    copy = _layer_from_spec(_spec_of(m))
    copy.load_state_dict(m.state_dict())
    return copy


def _check_chain(layers: list[tuple[str, nn.Module]]) -> None:
    """Refuse chains sinabs cannot convert one spiking layer per weighted layer."""
    if not any(isinstance(m, WEIGHTED) for _, m in layers):
        raise NetworkError(f"the network has no Conv2d or Linear layer. Supported: {SUPPORTED}")
    path, last = layers[-1]
    if not isinstance(last, WEIGHTED):
        raise _refuse(
            path,
            last,
            "the last layer must be the Conv2d/Linear read-out (no ReLU, pooling "
            "or softmax after it: the SNN's output spikes stand for its values)",
        )
    for i, (path, m) in enumerate(layers):
        before = layers[i - 1][1] if i else None
        after = layers[i + 1][1] if i + 1 < len(layers) else None
        if isinstance(m, WEIGHTED) and after is not None and not isinstance(after, nn.ReLU):
            raise _refuse(
                path,
                m,
                f"every Conv2d/Linear but the read-out must be followed directly by a ReLU "
                f"(batch norm and dropout between are fine), found {type(after).__name__}",
            )
        if isinstance(m, nn.ReLU) and not isinstance(before, WEIGHTED):
            raise _refuse(path, m, "a ReLU must directly follow a Conv2d/Linear (after batch norm)")


# --------------------------------------------------------------------------- plain-data spec


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _spec_of(m: nn.Module) -> dict:
    """The constructor arguments of one prepared layer, as plain data."""
    if isinstance(m, nn.Conv2d):
        keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
        spec = {k: _plain(getattr(m, k)) for k in keys}
        spec.update(groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)
    elif isinstance(m, nn.Linear):
        spec = {"in_features": m.in_features, "out_features": m.out_features}
        spec["bias"] = m.bias is not None
    elif isinstance(m, nn.AvgPool2d):
        keys = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
        spec = {k: _plain(getattr(m, k)) for k in keys}
        spec["divisor_override"] = m.divisor_override
    elif isinstance(m, nn.Flatten):
        spec = {"start_dim": m.start_dim, "end_dim": m.end_dim}
    elif isinstance(m, nn.ReLU):
        spec = {}
    else:
        raise NetworkError(f"no plain-data description for {type(m).__name__}")
    return {"type": _base_name(m), **spec}


def _base_name(m: nn.Module) -> str:
    return next(name for name, cls in _TYPES.items() if isinstance(m, cls))


_TYPES = {
    "Conv2d": nn.Conv2d,
    "Linear": nn.Linear,
    "AvgPool2d": nn.AvgPool2d,
    "Flatten": nn.Flatten,
    "ReLU": nn.ReLU,
}


def _layer_from_spec(spec: dict) -> nn.Module:
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    if spec.get("type") not in _TYPES:
        raise NetworkError(f"unknown layer type {spec.get('type')!r} in a model file's layers")
    return _TYPES[spec["type"]](**kwargs)


def layer_spec(model: nn.Sequential) -> list[dict]:
    """Plain data (for a ``weights_only`` model file) that :func:`from_layer_spec` rebuilds."""
    return [_spec_of(m) for m in model]


def from_layer_spec(spec: list[dict]) -> nn.Sequential:
    """The prepared ``nn.Sequential`` (untrained weights) that :func:`layer_spec` describes."""
    return nn.Sequential(*(_layer_from_spec(s) for s in spec))


# --------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, loaded with ``weights_only=True`` (a dict of tensors, or
    a model file of spikescale's that holds one under ``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"model.checkpoint {str(path)!r}: the file does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise NetworkError(
            f"model.checkpoint {str(path)!r}: expected a state_dict saved with torch.save, "
            f"but it cannot be loaded with weights_only=True: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    if (
        not isinstance(blob, dict)
        or not blob
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items())
    ):
        raise NetworkError(
            f"model.checkpoint {str(path)!r}: expected a state_dict (a dict of parameter "
            f"names to tensors, as model.state_dict() gives), got {type(blob).__name__}"
        )
    return blob


def checkpoint_mismatches(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Every tensor whose name or shape differs between a state dict and a model."""
    expected = model.state_dict()
    problems = [
        f"{k}: missing (expected shape {tuple(v.shape)})"
        for k, v in expected.items()
        if k not in state
    ]
    problems += [f"{k}: not in the network" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)}, the network has {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return problems


def import_checkpoint(path: str | Path, model: nn.Module, factory: str) -> nn.Module:
    """``model`` with the checkpoint's weights, after checking every name and shape."""
    state = read_checkpoint(path)
    problems = checkpoint_mismatches(state, model)
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise NetworkError(
            f"model.checkpoint {str(path)!r} does not fit model.factory {factory!r}: {shown}"
        )
    model.load_state_dict(state)
    return model


# --------------------------------------------------------------------------- checks


def dataset_shape(dataset, downsample: int = 1) -> tuple[tuple[int, int, int], int] | None:
    """((C, H, W) of the frames, number of classes) that a dataset's recordings give at
    ``frames.downsample``; None for a folder of recordings whose sensor is to be inferred
    from the events."""
    if dataset.name == "digits":
        from spikescale.digits import CLASSES, SENSOR_SIZE

        sensor, classes = SENSOR_SIZE, len(CLASSES)
    elif dataset.name == "folder":
        if dataset.sensor_size is None:
            return None
        from spikescale.recordings import find_recordings

        found = find_recordings(
            dataset.root, test_fraction=dataset.test_fraction, seed=dataset.seed
        )
        sensor, classes = dataset.sensor_size, len(found.classes)
    else:
        from spikescale.tonic_datasets import dataset_info

        entry = dataset_info(dataset.name)
        sensor, classes = entry.sensor_size, len(entry.class_names())
    from spikescale.binning import downsampled_sensor

    width, height, polarities = downsampled_sensor(tuple(int(s) for s in sensor), downsample)
    return (polarities, height, width), classes


def check_network(params) -> str:
    """Build, prepare and (with a checkpoint) load the configured network, as `train`,
    `normalise` and `convert` will: raise :class:`NetworkError` before any job if that
    fails. Returns a one-line description."""
    model_params = params.model
    if model_params.factory is None:
        return "the built-in network family"
    shape = dataset_shape(params.dataset, params.frames.downsample)
    if shape is None:
        return f"{model_params.factory}: checked by train (the sensor is inferred from the events)"
    input_shape, classes = shape
    model = build_network(model_params.factory, input_shape, classes)
    if model_params.checkpoint is not None:
        import_checkpoint(model_params.checkpoint, model, model_params.factory)
    prepared = prepare_for_conversion(model, params.conversion.max_pool)
    weighted = sum(isinstance(m, WEIGHTED) for m in prepared)
    imported = f", weights from {model_params.checkpoint}" if model_params.checkpoint else ""
    return (
        f"{model_params.factory} on {input_shape} -> {classes} classes: "
        f"{weighted} weighted layers after preparation{imported}"
    )
