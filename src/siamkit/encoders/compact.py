"""siamkit's default face encoder: a small, fast CNN for greyscale faces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siamkit.encoders.base import Encoder, register_encoder
from siamkit.geometry import check_metric


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@register_encoder("compact")
class CompactCNN(Encoder):
    """Stages of two 3×3 conv-BN-ReLU layers with max-pooling, global average pooling,
    then a linear embedding; cosine geometry.

    At the default 56×46 input it has about 0.3M parameters and embeds hundreds
    of faces a second on one CPU core.

    Args:
        embedding_dim: Size of the embeddings.
        channels: Width of each stage (each halves the resolution).
        input_size: ``(H, W)`` images are resized to.
        in_channels: 1 for greyscale, 3 for RGB.
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        dropout: Dropout before the embedding layer.

    Example:
        >>> import torch
        >>> CompactCNN()(torch.zeros(2, 1, 56, 46)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        embedding_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128),
        input_size: tuple[int, int] = (56, 46),
        in_channels: int = 1,
        metric: str = "cosine",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.in_channels = in_channels
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.metric = check_metric(metric)
        layers: list[nn.Module] = []
        width = in_channels
        for index, size in enumerate(channels):
            layers += _conv_bn_relu(width, size) + _conv_bn_relu(size, size)
            if index < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            width = size
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
