"""Augmentation of whole batches of preprocessed images, in torch.

Applying augmentation to the cached, preprocessed tensors (rather than to PIL
images one by one) keeps training fast on a CPU; the deterministic part of the
pipeline stays the encoder's own :attr:`~siamkit.Encoder.transform`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.exceptions import ConfigError


class FaceAugment(nn.Module):
    """Random flips, small rotations, scalings and shifts, and brightness/contrast jitter.

    Every image in the batch gets its own random parameters; randomness comes
    from torch's global generator, which the Trainer seeds every epoch.

    Args:
        flip: Probability of a horizontal flip.
        rotation: Maximum rotation in degrees.
        scale: Maximum relative zoom in or out.
        shift: Maximum shift as a fraction of the image size.
        brightness: Maximum additive brightness change, as a fraction of half
            the inputs' range (0.2 is 0.2 on ``[-1, 1]`` inputs, 25.5 on ``[0, 255]``).
        contrast: Maximum relative contrast change.
        value_range: ``(low, high)`` of the input pixel values: the encoder's
            :attr:`~siamkit.Encoder.input_range` (the Trainer passes it).

    Examples:
        >>> import torch
        >>> FaceAugment()(torch.zeros(4, 1, 56, 46)).shape
        torch.Size([4, 1, 56, 46])
        >>> FaceAugment(value_range=(0.0, 255.0)).brightness_step
        25.5
    """

    def __init__(
        self,
        flip: float = 0.5,
        rotation: float = 10.0,
        scale: float = 0.1,
        shift: float = 0.08,
        brightness: float = 0.2,
        contrast: float = 0.2,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range}")
        self.flip = flip
        self.rotation = rotation
        self.scale = scale
        self.shift = shift
        self.brightness = brightness
        self.contrast = contrast
        self.value_range = (low, high)

    @property
    def brightness_step(self) -> float:
        """The largest additive brightness change, in the inputs' own units."""
        low, high = self.value_range
        return self.brightness * (high - low) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        return self._apply(x, self._draw(x.shape[0], x.device))

    def forward_shard(self, x: torch.Tensor, start: int, total: int) -> torch.Tensor:
        """Augment rows ``start:start + len(x)`` of a batch of ``total`` images.

        Draws the random parameters of the whole batch, as :meth:`forward`
        would, and applies its rows: every rank of a data-parallel run
        augments its share of the global batch exactly as one process would.

        Examples:
            >>> import torch
            >>> batch, augment = torch.rand(4, 1, 8, 8), FaceAugment()
            >>> _ = torch.manual_seed(0); whole = augment(batch)
            >>> _ = torch.manual_seed(0); part = augment.forward_shard(batch[2:], 2, 4)
            >>> torch.allclose(whole[2:], part)
            True
        """
        params = self._draw(total, x.device)
        return self._apply(x, {k: v[start : start + x.shape[0]] for k, v in params.items()})

    def _draw(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(n, device=device) * 2 - 1) * limit

        # The order of the draws is the random stream's layout: keep it.
        return {
            "angle": uniform(math.radians(self.rotation)),
            "zoom": 1.0 + uniform(self.scale),
            "mirror": torch.where(torch.rand(n, device=device) < self.flip, -1.0, 1.0),
            "shift_x": uniform(2 * self.shift),
            "shift_y": uniform(2 * self.shift),
            "gain": 1.0 + uniform(self.contrast),
            "offset": uniform(self.brightness_step),
        }

    def _apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        cos, sin = torch.cos(p["angle"]) / p["zoom"], torch.sin(p["angle"]) / p["zoom"]
        theta = torch.stack(
            [
                torch.stack([cos * p["mirror"], -sin, p["shift_x"]], 1),
                torch.stack([sin * p["mirror"], cos, p["shift_y"]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mean = out.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        return (out - mean) * p["gain"].view(shape) + mean + p["offset"].view(shape)

    def extra_repr(self) -> str:
        return (
            f"flip={self.flip}, rotation={self.rotation}, scale={self.scale}, shift={self.shift}, "
            f"brightness={self.brightness}, contrast={self.contrast}, "
            f"value_range={self.value_range}"
        )


class ShapeAugment(FaceAugment):
    """Random rotations, shears, stretches and shifts for line drawings: no photometric jitter.

    Handwriting varies in slant, proportions and placement, not in lighting,
    and a mirrored character is another character, so flips default to none.
    Space uncovered by the transform is filled with the inputs' lowest value:
    blank paper for :class:`~siamkit.encoders.Conv4`'s inputs (strokes 1 on 0).
    A :class:`FaceAugment` subclass, so data-parallel runs augment their share
    of a batch as one process would.

    Args:
        rotation: Maximum rotation in degrees.
        shear: Maximum horizontal shear (the tangent of the slant).
        scale: Maximum relative stretch, drawn for each axis.
        shift: Maximum shift as a fraction of the image size.
        flip: Probability of a horizontal flip.
        value_range: ``(low, high)`` of the input pixel values.

    Examples:
        >>> import torch
        >>> blank = torch.zeros(3, 1, 28, 28)
        >>> bool((ShapeAugment(value_range=(0.0, 1.0))(blank) == 0).all())
        True
    """

    def __init__(
        self,
        rotation: float = 10.0,
        shear: float = 0.2,
        scale: float = 0.15,
        shift: float = 0.05,
        flip: float = 0.0,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(flip=flip, rotation=rotation, scale=scale, shift=shift,
                         brightness=0.0, contrast=0.0, value_range=value_range)  # fmt: skip
        self.shear = shear

    def _draw(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(n, device=device) * 2 - 1) * limit

        return {
            "angle": uniform(math.radians(self.rotation)),
            "shear": uniform(self.shear),
            "zoom_x": 1.0 + uniform(self.scale),
            "zoom_y": 1.0 + uniform(self.scale),
            "mirror": torch.where(torch.rand(n, device=device) < self.flip, -1.0, 1.0),
            "shift_x": uniform(2 * self.shift),
            "shift_y": uniform(2 * self.shift),
        }

    def _apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
        # Output-to-input map: rotation, then shear, then the inverse stretch of each axis.
        sx, sy = p["mirror"] / p["zoom_x"], 1.0 / p["zoom_y"]
        theta = torch.stack(
            [
                torch.stack([cos * sx, (cos * p["shear"] - sin) * sy, p["shift_x"]], 1),
                torch.stack([sin * sx, (sin * p["shear"] + cos) * sy, p["shift_y"]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        low = self.value_range[0]
        return F.grid_sample(x - low, grid, padding_mode="zeros", align_corners=False) + low

    def extra_repr(self) -> str:
        return (
            f"rotation={self.rotation}, shear={self.shear}, scale={self.scale}, "
            f"shift={self.shift}, flip={self.flip}, value_range={self.value_range}"
        )


#: ``TrainConfig.augmentation`` names: what kind of images the augmentation suits.
AUGMENTATIONS = {"face": FaceAugment, "shape": ShapeAugment}


def config_augment(config: Any, encoder: Any) -> FaceAugment | None:
    """The augmentation a :class:`~siamkit.training.TrainConfig` asks for, on ``encoder``'s inputs.

    ``config.augmentation`` picks :class:`FaceAugment` (``"face"``) or
    :class:`ShapeAugment` (``"shape"``); ``config.flip=None`` flips half the
    images for faces and none for shapes.

    Examples:
        >>> from types import SimpleNamespace
        >>> config_augment(SimpleNamespace(augment=True, flip=0.0),
        ...                SimpleNamespace(input_range=(0.0, 1.0))).flip
        0.0
    """
    if not config.augment:
        return None
    kind = getattr(config, "augmentation", "face")
    flip = (0.5 if kind == "face" else 0.0) if config.flip is None else config.flip
    return AUGMENTATIONS[kind](flip=flip, value_range=encoder.input_range)
