"""Any torchvision ResNet as an encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchvision
from torch import nn

from siamkit.encoders._checks import check_channels_in, check_input_size
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.exceptions import ConfigError
from siamkit.geometry import check_metric

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@register_encoder("resnet")
class ResNetEncoder(Encoder):
    """A torchvision ResNet with its classifier replaced by an embedding layer.

    No weights are downloaded unless asked for: ``weights=None`` (the default)
    starts from random initialisation; ``weights="DEFAULT"`` fetches ImageNet
    weights through torchvision (RGB only, and it needs network access). They
    are starting weights: a saved model carries its own, so :func:`~siamkit.load_encoder`
    never downloads anything.

    Args:
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.
        embedding_dim: Size of the embeddings.
        in_channels: 1 for greyscale (the first convolution is rebuilt), 3 for RGB.
        input_size: ``(H, W)`` images are resized to.
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        weights: A torchvision weights name, or None.

    Examples:
        >>> import torch
        >>> ResNetEncoder("resnet18", embedding_dim=16)(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 16])
    """

    #: Loading a saved model downloads nothing: its weights are in its folder.
    starting_weights: ClassVar[dict[str, Any]] = {"weights": None}

    def __init__(
        self,
        arch: str = "resnet18",
        embedding_dim: int = 128,
        in_channels: int = 1,
        input_size: tuple[int, int] = (112, 112),
        metric: str = "cosine",
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(arch, str) or arch not in RESNETS:
            raise ConfigError(f"unknown ResNet {arch!r}: use one of {', '.join(RESNETS)}")
        if weights is not None and not isinstance(weights, str):
            raise ConfigError(f"weights must be a torchvision weights name or None: {weights!r}")
        self.embedding_dim = embedding_dim
        self.in_channels = check_channels_in(in_channels)
        self.input_size = check_input_size(input_size)
        self.metric = check_metric(metric)
        backbone = torchvision.models.get_model(arch, weights=weights)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.num_features = backbone.fc.in_features
        backbone.fc = nn.Linear(self.num_features, self.embedding_dim)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
