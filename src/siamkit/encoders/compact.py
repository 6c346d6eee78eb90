"""siamkit's default face encoder: a small, fast CNN for greyscale faces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.encoders._checks import (
    MAX_WIDTH,
    check_channels_in,
    check_dropout,
    check_flag,
    check_input_size,
    check_ints,
)
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.encoders.whitening import Whitening
from siamkit.exceptions import ConfigError
from siamkit.geometry import check_metric


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@register_encoder("compact")
class CompactCNN(Encoder):
    """Conv-BN-ReLU stages with max-pooling, global average pooling and a linear
    embedding on the unit sphere, followed by within-person whitening.

    The defaults are siamkit's face recipe: 56×46 greyscale input, stages of
    32-64-128-256 channels (about 0.4M parameters), 128-d embeddings compared by
    Euclidean distance on the unit sphere (trained with margin 2), the average
    of the embeddings of the face and its mirror image at inference, and a
    :class:`~siamkit.encoders.Whitening` layer that the Trainer fits on the
    training people.

    Args:
        embedding_dim: Size of the embeddings.
        channels: Width of each stage (each but the last halves the resolution).
        input_size: ``(H, W)`` images are resized to.
        in_channels: 1 for greyscale, 3 for RGB.
        metric: ``"euclidean"`` (default: on the unit sphere) or ``"cosine"``.
        normalize: Put embeddings on the unit sphere.
        flip_average: At inference, average the embeddings of the image and its
            mirror image (faces are nearly symmetric; this steadies the embedding).
        whitening: End with a :class:`~siamkit.encoders.Whitening` layer.
        dropout: Dropout before the embedding layer.

    Examples:
        >>> import torch
        >>> CompactCNN()(torch.zeros(2, 1, 56, 46)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        embedding_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        input_size: tuple[int, int] = (56, 46),
        in_channels: int = 1,
        metric: str = "euclidean",
        normalize: bool = True,
        flip_average: bool = True,
        whitening: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.in_channels = check_channels_in(in_channels)
        self.input_size = check_input_size(input_size)
        self.metric = check_metric(metric)
        channels = check_ints("channels", channels, 1, MAX_WIDTH, min_len=1, max_len=12)
        if min(self.input_size) >> (len(channels) - 1) < 1:
            raise ConfigError(
                f"{len(channels)} stages halve the resolution {len(channels) - 1} times, too "
                f"often for input_size {self.input_size}: give fewer channels or a larger size"
            )
        normalize = check_flag("normalize", normalize)
        flip_average = check_flag("flip_average", flip_average)
        whitening = check_flag("whitening", whitening)
        dropout = check_dropout(dropout)
        # Unit-sphere embeddings are at most 2 apart: margin 2 keeps every
        # non-matching pair pushing apart, which spreads people over the sphere.
        self.default_margin = 2.0 if normalize and self.metric == "euclidean" else None
        self.normalize = normalize
        self.flip_average = flip_average
        layers: list[nn.Module] = []
        width = self.in_channels
        for index, size in enumerate(channels):
            layers += _conv_bn_relu(width, size)
            if index < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            width = size
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, self.embedding_dim),
        )
        self.whitening = Whitening(self.embedding_dim, normalize=normalize) if whitening else None

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return F.normalize(z, dim=-1) if self.normalize else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._project(x)
        if self.flip_average and not self.training:
            z = z + self._project(torch.flip(x, dims=[-1]))
        if self.whitening is not None:
            return self.whitening(z)
        return F.normalize(z, dim=-1) if self.normalize else z
