"""The CNN and its conversion to a sinabs SNN; how both are stored.

The built-in CNN is a plain ``nn.Sequential``: conv/ReLU/avg-pool blocks, flatten, linear
read-out, so that sinabs converts it layer by layer and every weighted layer can be
normalised; a user's network (``model.factory``) is made such a chain by
:func:`spikescale.network.prepare_for_conversion`. Files hold a state dict (loaded with
``weights_only=True``, never a pickled module) and what rebuilds the module: the built-in
family's architecture, or the factory, input shape and classes of a user's network; the
prepared (normalised, converted) networks also hold ``layers``, a plain-data description
of the flat chain, so that later stages rebuild it without the user's code.
"""

from __future__ import annotations

import copy
import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import sinabs
import sinabs.activation as sa
import torch
from torch import nn

from spikescale.errors import InputError, MissingInputError
from spikescale.io import atomic_path
from spikescale.network import FactoryNetwork, build_network, from_layer_spec
from spikescale.params import ConversionParams


@dataclass(frozen=True)
class Architecture:
    in_channels: int
    height: int
    width: int
    classes: int
    channels: tuple[int, ...]
    kernel_size: int
    bias: bool

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.height, self.width)


def build_cnn(arch: Architecture) -> nn.Sequential:
    layers: list[nn.Module] = []
    c, h, w = arch.input_shape
    for out in arch.channels:
        layers += [
            nn.Conv2d(c, out, arch.kernel_size, padding=arch.kernel_size // 2, bias=arch.bias),
            nn.ReLU(),
            nn.AvgPool2d(2),
        ]
        c, h, w = out, h // 2, w // 2
    if h < 1 or w < 1:
        raise InputError(
            f"training.channels: {len(arch.channels)} pooling blocks shrink a "
            f"{arch.height}x{arch.width} input below 1 pixel; use fewer blocks"
        )
    layers += [nn.Flatten(), nn.Linear(c * h * w, arch.classes, bias=arch.bias)]
    return nn.Sequential(*layers)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every Conv2d and Linear, in order."""
    return [(n, m) for n, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]


NetworkSource = Architecture | FactoryNetwork  # how a model file's network was made


def _describe(source: NetworkSource) -> dict:
    if isinstance(source, Architecture):
        return {"architecture": asdict(source)}
    return {
        "factory": {
            "factory": source.factory,
            "input_shape": list(source.input_shape),
            "classes": source.classes,
        }
    }


def _source(blob: dict) -> NetworkSource:
    if "architecture" in blob:
        raw = dict(blob["architecture"])
        raw["channels"] = tuple(raw["channels"])
        return Architecture(**raw)
    raw = blob["factory"]
    return FactoryNetwork(raw["factory"], tuple(raw["input_shape"]), int(raw["classes"]))


def save_cnn(model: nn.Module, arch: NetworkSource, path: str | Path, **extra) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # torch.save names the archive inside the zip after the file it writes to: saving to
    # a buffer keeps the temporary file's random name out, so equal models give equal bytes
    buffer = io.BytesIO()
    torch.save({**_describe(arch), "state_dict": state, **extra}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_cnn(path: str | Path) -> tuple[nn.Module, NetworkSource, dict]:
    """The network in a model file (eval mode), how it was made, and the file's contents.

    A file with ``layers`` (normalised CNN, SNN) gives the prepared flat chain; otherwise the
    built-in family's architecture or the user's factory builds the network as trained.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"model file {path} does not exist (run the stage that writes it first)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    arch = _source(blob)
    if "layers" in blob:
        model = from_layer_spec(blob["layers"])
    elif isinstance(arch, Architecture):
        model = build_cnn(arch)
    else:
        model = build_network(arch.factory, arch.input_shape, arch.classes)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, arch, blob


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's parameters (independent of file format)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def to_snn(
    cnn: nn.Sequential,
    arch: NetworkSource,
    conversion: ConversionParams,
    bias_rescaling: float = 1.0,
) -> nn.Sequential:
    """The spiking ``nn.Sequential`` that sinabs makes of the CNN, spiking output included;
    every bias divided by ``bias_rescaling`` (SNN time steps per training frame)."""
    network = sinabs.from_model(
        copy.deepcopy(cnn),
        input_shape=arch.input_shape,
        spike_threshold=conversion.threshold,
        spike_fn=sa.MultiSpike if conversion.spike_fn == "multi" else sa.SingleSpike,
        reset_fn=sa.MembraneSubtract() if conversion.reset == "subtract" else sa.MembraneReset(),
        min_v_mem=conversion.min_v_mem,
        num_timesteps=1,
        add_spiking_output=True,
        bias_rescaling=float(bias_rescaling),
    )
    snn = network.spiking_model
    snn.eval()
    return snn


def divide_biases(model: nn.Module, ratio: float) -> nn.Module:
    """A copy of ``model`` with every Conv2d/Linear bias divided by ``ratio``: the CNN that
    adds per SNN time step what the SNN adds (sinabs's ``bias_rescaling``)."""
    model = copy.deepcopy(model)
    if ratio != 1.0:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                    m.bias /= ratio
    return model


def scale_first_layer(snn: nn.Sequential, factor: float) -> nn.Sequential:
    """A copy of the SNN whose first weighted layer (weights and bias) is multiplied by factor."""
    scaled = copy.deepcopy(snn)
    _, first = weighted_layers(scaled)[0]
    with torch.no_grad():
        first.weight.mul_(factor)
        if first.bias is not None:
            first.bias.mul_(factor)
    return scaled
