"""The CNN of the classic PyTorch Siamese-network tutorial, kept for comparison."""

from __future__ import annotations

import torch
from torch import nn

from siamkit.encoders._checks import check_input_size
from siamkit.encoders.base import Encoder, register_encoder

#: The largest side accepted: the first linear layer holds 8 x H x W x 500 weights
#: (4 GB at 512 x 512).
MAX_TUTORIAL_SIDE = 512


def _tutorial_block(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.ReflectionPad2d(1),
        nn.Conv2d(cin, cout, 3),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cout),
    ]


@register_encoder("tutorial")
class TutorialCNN(Encoder):
    """Three padded 3×3 conv blocks (ReLU, BatchNorm) then three fully connected layers.

    This is the network of the well-known tutorial: 100×100 greyscale input,
    4-8-8 channels at full resolution, 500-500-5 fully connected. It is large
    (40M parameters, almost all in the first linear layer) and slow; siamkit's
    default :class:`~siamkit.encoders.CompactCNN` is smaller, faster and more
    accurate. Euclidean geometry, as in the tutorial.

    Args:
        embedding_dim: Output size (5 in the tutorial).
        input_size: ``(H, W)`` the images are resized to.

    Examples:
        >>> import torch
        >>> TutorialCNN()(torch.zeros(2, 1, 100, 100)).shape
        torch.Size([2, 5])
    """

    def __init__(self, embedding_dim: int = 5, input_size: tuple[int, int] = (100, 100)) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.in_channels = 1
        self.input_size = check_input_size(input_size, MAX_TUTORIAL_SIDE)
        self.metric = "euclidean"
        self.features = nn.Sequential(
            *_tutorial_block(1, 4), *_tutorial_block(4, 8), *_tutorial_block(8, 8)
        )
        height, width = self.input_size
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * height * width, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, self.embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
