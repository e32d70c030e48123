"""An example of your own network for ``model.factory: examples.strided_bn:build``.

A CNN as researchers write them, not as spikescale's built-in family: a strided first
convolution, batch norm, max pooling, dropout, biases, nested ``nn.Sequential`` blocks and
a hidden fully connected layer. spikescale folds the batch norms into the convolutions
before them, drops the dropouts, and replaces the max pool by an average pool of the same
window when ``conversion.max_pool: average``.
"""

from __future__ import annotations

import torch
from torch import nn


def build(input_shape: tuple[int, int, int], classes: int) -> nn.Module:
    channels = input_shape[0]
    features = nn.Sequential(
        nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        ),
        nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
        ),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, *input_shape)).numel()
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(flat, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )
