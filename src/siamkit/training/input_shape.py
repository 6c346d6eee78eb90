"""The from-scratch recipe's input, from the data: colour or greyscale, and the images' shape.

A network trained from random weights learns from what it is fed: colour
photos (cars, products) lose what tells them apart in greyscale, and a wide
photo squeezed into a face's upright frame loses its shape. So, unless the
user sets ``in_channels`` or ``input_size``, the from-scratch recipe looks at
the seeded sample :func:`~siamkit.training.face_share.face_share` looks at:
three channels when most images have colour, else one; the median aspect
ratio at :data:`INPUT_PIXELS` pixels, the encoder default's count, so a wide
photo costs what a face costs. The AT&T faces (92x112 greyscale) give the
encoder's own default, 1 channel at 56x46.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The pixels the from-scratch encoder sees (the compact encoder's default, 56x46).
INPUT_PIXELS = 56 * 46
#: Mean spread between an image's channels above which it has colour (as for drawings).
COLOUR_SPREAD = 12.0
#: Aspect ratios (width / height) the width may follow: wider or taller images are cropped
#: by the resize anyway, and a network needs some height and width at every stage.
ASPECT_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class InputShape:
    """What the sample showed, and the input it asks for.

    Attributes:
        in_channels: 3 when most sampled images have colour, else 1.
        input_size: ``(height, width)``: the median aspect at :data:`INPUT_PIXELS` pixels.
        colour: Sampled images with colour.
        looked: Images sampled.
        aspect: Their median width / height.
    """

    in_channels: int
    input_size: tuple[int, int]
    colour: int
    looked: int
    aspect: float

    def summary(self) -> str:
        """``"input: 3 channels at 40x64 (colour in 24 of 24 sampled ...; median aspect 1.60)"``."""
        height, width = self.input_size
        return (f"input: {self.in_channels} channel{'s' * (self.in_channels > 1)} at "
                f"{height}x{width} (colour in {self.colour} of {self.looked} sampled training "
                f"images; median aspect {self.aspect:.2f})")  # fmt: skip


def has_colour(image: Image.Image) -> bool:
    """Whether ``image``'s channels differ enough to carry colour.

    Examples:
        >>> has_colour(Image.new("RGB", (4, 4), (200, 30, 30))), has_colour(Image.new("L", (4, 4)))
        (True, False)
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) > COLOUR_SPREAD


def shape_of(images: list[Image.Image]) -> InputShape:
    """The input ``images`` ask for (see the module's rule).

    Examples:
        >>> shape_of([Image.new("L", (92, 112))] * 3).input_size
        (56, 46)
        >>> wide = shape_of([Image.new("RGB", (160, 100), (200, 30, 30))])
        >>> wide.in_channels, wide.input_size
        (3, (40, 64))
    """
    colour = sum(has_colour(image) for image in images)
    aspect = float(np.median([image.width / image.height for image in images])) if images else 1.0
    clipped = min(max(aspect, ASPECT_RANGE[0]), ASPECT_RANGE[1])
    height = round((INPUT_PIXELS / clipped) ** 0.5)
    width = round(height * clipped)
    channels = 3 if 2 * colour > len(images) else 1
    return InputShape(channels, (height, width), colour, len(images), aspect)


def input_shape(paths: list[str], sample: int = 24, seed: int = 0) -> InputShape:
    """The input a seeded sample of ``paths`` asks for (the sample faces and drawings use)."""
    from siamkit.data.images import load_image

    chosen = np.random.default_rng(seed).permutation(len(paths))[:sample]
    return shape_of([load_image(paths[i], mode="RGB") for i in chosen])


__all__ = ["INPUT_PIXELS", "InputShape", "has_colour", "input_shape", "shape_of"]
