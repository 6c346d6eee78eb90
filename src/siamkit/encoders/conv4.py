"""The few-shot literature's Conv-4, for handwritten characters and other line drawings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from siamkit.encoders._checks import MAX_WIDTH, check_flag, check_input_size, check_int
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.exceptions import ConfigError
from siamkit.geometry import check_metric
from siamkit.runtime.preprocessing import Preprocessing


@register_encoder("conv4")
class Conv4(Encoder):
    """Four stages of 3×3 convolution, BatchNorm, ReLU and 2×2 max-pooling; the flattened
    feature map on the unit sphere, compared by Euclidean distance.

    The network of Vinyals et al. (2016) and Snell et al. (2017) for Omniglot,
    and the encoder of siamkit's ``characters`` recipe: a 28×28 greyscale
    character becomes a 64-d embedding (111,680 parameters). Pixels are scaled to
    ``[0, 1]`` with the strokes bright (``invert=True`` turns dark ink on light
    paper around), so the zero padding of the convolutions and of augmentation
    is blank paper.

    Args:
        width: Channels of every stage.
        input_size: ``(H, W)`` images are resized to; the embedding is
            ``width * (H // 16) * (W // 16)`` long (28×28: 1×1 after four poolings).
        invert: The images show dark strokes on a light background (ink on paper).
        stages: How many conv-pool stages (each halves the resolution).
        metric: ``"euclidean"`` (on the unit sphere) or ``"cosine"`` (the same
            ranking; for a loss that measures cosine similarity, such as
            pytorch-metric-learning's ``MultiSimilarityLoss``).

    Examples:
        >>> import torch
        >>> Conv4()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
        >>> Conv4().default_margin
        0.7
    """

    input_range = (0.0, 1.0)

    def __init__(
        self,
        width: int = 64,
        input_size: tuple[int, int] = (28, 28),
        invert: bool = True,
        stages: int = 4,
        metric: str = "euclidean",
    ) -> None:
        super().__init__()
        width = check_int("width", width, 1, MAX_WIDTH)
        stages = check_int("stages", stages, 1, 8)
        self.input_size = check_input_size(input_size)
        self.invert = check_flag("invert", invert)
        height, across = self.input_size
        for _ in range(stages):
            height, across = height // 2, across // 2
        if height < 1 or across < 1:
            raise ConfigError(
                f"{stages} stages halve the resolution {stages} times, too often for "
                f"input_size {self.input_size}: give fewer stages or a larger size"
            )
        self.in_channels = 1
        self.metric = check_metric(metric)
        # Chosen on held-out Omniglot background alphabets: 0.5 and 1.0 lose about a
        # point of 20-way one-shot accuracy, 1.3 collapses (docs/benchmarks.md). Cosine
        # distance on the unit sphere is half the squared Euclidean one: the same margin.
        self.default_margin = 0.7 if self.metric == "euclidean" else 0.7**2 / 2
        self.embedding_dim = width * height * across
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(stages):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x).flatten(1), dim=-1)

    @property
    def transform(self) -> Conv4Transform:
        """Greyscale, resized (bilinear), pixels to ``[0, 1]``: strokes 1, paper 0."""
        return Conv4Transform(self.input_size, self.invert)

    def preprocessing(self) -> Preprocessing:
        """:attr:`transform` as data: ``1 - p/255`` when inverting, else ``p/255``."""
        if self.invert:
            return Preprocessing("L", self.input_size, -1 / 255, 1.0)
        return Preprocessing("L", self.input_size, 1 / 255, 0.0)


class Conv4Transform:
    """One PIL image to a ``(1, H, W)`` tensor in ``[0, 1]`` (see :class:`Conv4`).

    Examples:
        >>> Conv4Transform((28, 28), invert=True)(Image.new("L", (105, 105), 255)).max().item()
        0.0
    """

    def __init__(self, size: tuple[int, int], invert: bool) -> None:
        self.size = size
        self.invert = invert

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "L":
            image = image.convert("L")
        if image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        # Float32 as the exported runtime computes it (pixels * scale + offset).
        pixels = np.asarray(image, dtype=np.float32)
        if self.invert:
            pixels = pixels * np.float32(-1 / 255) + np.float32(1.0)
        else:
            pixels = pixels * np.float32(1 / 255)
        return torch.from_numpy(pixels).unsqueeze(0)
