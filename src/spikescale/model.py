"""The CNN and its conversion to a sinabs SNN; how both are stored.

The CNN is a plain ``nn.Sequential``: conv/ReLU/avg-pool blocks, flatten, linear read-out,
so that sinabs converts it layer by layer and every weighted layer can be normalised. Files
hold the architecture and a state dict (loaded with ``weights_only=True``), never a pickled
module.
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


def save_cnn(model: nn.Sequential, arch: Architecture, path: str | Path, **extra) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # torch.save names the archive inside the zip after the file it writes to: saving to
    # a buffer keeps the temporary file's random name out, so equal models give equal bytes
    buffer = io.BytesIO()
    torch.save({"architecture": asdict(arch), "state_dict": state, **extra}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_cnn(path: str | Path) -> tuple[nn.Sequential, Architecture, dict]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"model file {path} does not exist (run the stage that writes it first)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    raw = dict(blob["architecture"])
    raw["channels"] = tuple(raw["channels"])
    arch = Architecture(**raw)
    model = build_cnn(arch)
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


def to_snn(cnn: nn.Sequential, arch: Architecture, conversion: ConversionParams) -> nn.Sequential:
    """The spiking ``nn.Sequential`` that sinabs makes of the CNN, spiking output included."""
    network = sinabs.from_model(
        copy.deepcopy(cnn),
        input_shape=arch.input_shape,
        spike_threshold=conversion.threshold,
        spike_fn=sa.MultiSpike if conversion.spike_fn == "multi" else sa.SingleSpike,
        reset_fn=sa.MembraneSubtract() if conversion.reset == "subtract" else sa.MembraneReset(),
        min_v_mem=conversion.min_v_mem,
        num_timesteps=1,
        add_spiking_output=True,
    )
    snn = network.spiking_model
    snn.eval()
    return snn


def scale_first_layer(snn: nn.Sequential, factor: float) -> nn.Sequential:
    """A copy of the SNN whose first weighted layer (weights and bias) is multiplied by factor."""
    scaled = copy.deepcopy(snn)
    _, first = weighted_layers(scaled)[0]
    with torch.no_grad():
        first.weight.mul_(factor)
        if first.bias is not None:
            first.bias.mul_(factor)
    return scaled
