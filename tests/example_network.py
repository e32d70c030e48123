"""The worked example network (``examples/strided_bn.py``) in the form spikescale converts.

Until ``spikescale.network.prepare_for_conversion`` is on this branch, :func:`prepared_by_hand`
does its work for the layers the example uses: nested ``nn.Sequential`` flattened, batch norm
folded into the convolution before it (a bias appears), dropout dropped, max pooling
replaced by average pooling of the same window. Switch :func:`example_cnn` to
``prepare_for_conversion(model, max_pool="average")`` once that lands.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sinabs
import torch
from sinabs.activation import MembraneSubtract, MultiSpike
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
INPUT_SHAPE = (2, 34, 34)
CLASSES = 10


def _example_module():
    spec = importlib.util.spec_from_file_location("strided_bn", ROOT / "examples/strided_bn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _flat(child)]
    return [model]


@torch.no_grad()
def prepared_by_hand(model: nn.Module) -> nn.Sequential:
    """The flat eval-mode twin of ``model``: batch norm folded, dropout dropped, max pools
    made average pools of the same window."""
    layers: list[nn.Module] = []
    for m in _flat(model):
        if isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(m, nn.BatchNorm2d):
            conv = layers[-1]
            assert isinstance(conv, nn.Conv2d)
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            folded = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups,
                bias=True,
            )
            folded.weight.copy_(conv.weight * scale[:, None, None, None])
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            folded.bias.copy_((bias - m.running_mean) * scale + m.bias)
            layers[-1] = folded
        elif isinstance(m, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


@torch.no_grad()
def example_cnn(seed: int = 0) -> nn.Sequential:
    """The example network with seeded random weights and batch-norm statistics (so that the
    folding changes something), prepared for conversion."""
    torch.manual_seed(seed)
    model = _example_module().build(input_shape=INPUT_SHAPE, classes=CLASSES)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    return prepared_by_hand(model.eval())


def example_snn(
    cnn: nn.Sequential,
    spike_fn=MultiSpike,
    reset_fn=None,
    min_v_mem: float | None = -1.0,
    bias_rescaling: float = 1.0,
) -> nn.Sequential:
    """The spiking ``nn.Sequential`` sinabs makes of the prepared CNN, as the pipeline does."""
    return sinabs.from_model(
        cnn,
        input_shape=INPUT_SHAPE,
        num_timesteps=1,
        add_spiking_output=True,
        spike_threshold=1.0,
        spike_fn=spike_fn,
        reset_fn=reset_fn if reset_fn is not None else MembraneSubtract(),
        min_v_mem=min_v_mem,
        bias_rescaling=bias_rescaling,
    ).spiking_model.eval()


@torch.no_grad()
def normalised(cnn: nn.Sequential, frames: torch.Tensor, percentile: float = 99.0) -> nn.Sequential:
    """``cnn`` (changed in place) with each weighted layer's activations on ``frames`` scaled
    to about 1: weights times lambda_{l-1} / lambda_l, biases divided by lambda_l, lambda_l the
    percentile of the layer's non-zero post-ReLU activations (Rueckauer 2017)."""
    x, previous = frames, 1.0
    for m in cnn:
        x = m(x)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            post = torch.relu(x)
            scale = float(torch.quantile(post[post > 0], percentile / 100)) if post.any() else 1.0
            m.weight.mul_(previous / scale)
            if m.bias is not None:
                m.bias.div_(scale)
            x, previous = x / scale, scale
    return cnn
