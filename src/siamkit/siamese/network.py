"""The Siamese twin: one encoder applied to both sides of a pair."""

from __future__ import annotations

import torch
from torch import nn

from siamkit.encoders.base import Encoder
from siamkit.exceptions import ConfigError
from siamkit.geometry import paired_distances


class SiameseNetwork(nn.Module):
    """Twin networks with shared weights: both inputs go through the same encoder.

    Distances use the encoder's own ``metric``, the geometry it was trained in.

    Args:
        encoder: Any :class:`~siamkit.Encoder`.

    Examples:
        >>> import torch, siamkit
        >>> encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
        >>> net = siamkit.SiameseNetwork(encoder)
        >>> e1, e2 = net(torch.randn(3, 4), torch.randn(3, 4))
        >>> e1.shape, net.distance(torch.randn(3, 4), torch.randn(3, 4)).shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise ConfigError(
                f"SiameseNetwork needs a siamkit Encoder, got {type(encoder).__name__}; "
                "subclass siamkit.Encoder"
            )
        self.encoder = encoder

    @property
    def metric(self) -> str:
        """The encoder's geometry."""
        return self.encoder.metric

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both sides in one pass (so BatchNorm sees one batch) and split."""
        both = self.encoder(torch.cat([x1, x2]))
        return both[: len(x1)], both[len(x1) :]

    def distance(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The dissimilarity of each pair ``(x1[i], x2[i])`` in the encoder's metric."""
        e1, e2 = self(x1, x2)
        return paired_distances(e1, e2, self.metric)
