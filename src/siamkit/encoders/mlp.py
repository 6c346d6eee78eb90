"""A multilayer perceptron encoder for feature vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siamkit.encoders._checks import MAX_EMBEDDING_DIM, check_dropout, check_int, check_ints
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.geometry import check_metric

#: The longest input vector accepted: the first layer holds this many weights per unit.
MAX_INPUT_DIM = 1 << 20


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """Linear → BatchNorm → ReLU blocks then a linear projection, for vector inputs.

    Args:
        input_dim: Size of the input vectors.
        embedding_dim: Size of the embeddings.
        hidden: Widths of the hidden layers.
        metric: ``"euclidean"`` or ``"cosine"``.
        dropout: Dropout before the projection.

    Examples:
        >>> import numpy as np
        >>> MLPEncoder(input_dim=10, embedding_dim=4).embed(np.zeros((3, 10), "float32")).shape
        (3, 4)
    """

    def __init__(
        self,
        input_dim: int,
        embedding_dim: int = 32,
        hidden: Sequence[int] = (128,),
        metric: str = "euclidean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.metric = check_metric(metric)
        self.in_channels = 1
        self.input_size = None
        layers: list[nn.Module] = []
        self.input_dim = check_int("input_dim", input_dim, 1, MAX_INPUT_DIM)
        hidden = check_ints("hidden", hidden, 1, MAX_EMBEDDING_DIM)
        dropout = check_dropout(dropout)
        width = self.input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            width = size
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, self.embedding_dim))
        self.net = nn.Sequential(*layers)

    def preprocessing(self) -> None:
        """None: the inputs are vectors, given as float arrays, not pictures."""
        return None

    def example_input(self, batch: int) -> torch.Tensor:
        """Standard-normal vectors (seeded), for tracing an export."""
        return torch.randn(batch, self.input_dim, generator=torch.Generator().manual_seed(batch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
