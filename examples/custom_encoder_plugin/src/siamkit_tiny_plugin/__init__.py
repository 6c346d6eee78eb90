"""An example siamkit plugin: a tiny CNN face encoder.

Once this package is installed, ``siamkit.create_encoder("tiny")``,
``siamkit train --encoder tiny`` and ``siamkit.load_encoder`` find it by name,
through the ``siamkit.encoders`` entry point declared in ``pyproject.toml``.
"""

from __future__ import annotations

import torch
from torch import nn

import siamkit

__all__ = ["TinyEncoder"]


class TinyEncoder(siamkit.Encoder):
    """Two conv blocks and a linear embedding; cosine geometry.

    Example:
        >>> TinyEncoder(width=4)(torch.zeros(2, 1, 28, 23)).shape
        torch.Size([2, 32])
    """

    def __init__(self, width: int = 16, embedding_dim: int = 32) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.metric = "cosine"
        self.in_channels, self.input_size = 1, (28, 23)
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
