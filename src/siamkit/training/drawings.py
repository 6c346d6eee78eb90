"""Are the images line drawings? What ``--preset auto`` looks at when the data holds no faces.

Handwritten characters, symbols and sketches are strokes on plain paper: a
small convolutional network trained from scratch on them, with the
augmentation of handwriting, beats any start from photographs
(``docs/benchmarks.md``, Omniglot). :func:`drawing_share` tells them from
photographs by their pixels alone: no colour, most pixels the paper's one
tone, few in between the paper and the ink.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Training images looked at (seeded), as for faces, and the share that must be drawings.
DRAWING_SAMPLE = 24
DRAWING_MAJORITY = 0.5
#: A pixel within this many grey levels of the paper's tone is paper; farther than
#: :data:`INK_LEVELS`, ink; between them, a half-tone.
PAPER_LEVELS = 24
INK_LEVELS = 96


@dataclass(frozen=True)
class DrawingShare:
    """How many of a seeded sample of images are line drawings, and how many of dark ink.

    Examples:
        >>> DrawingShare(found=24, looked=24, dark_ink=24).most, DrawingShare(24, 24, 24).dark
        (True, True)
    """

    found: int
    looked: int
    dark_ink: int

    @property
    def most(self) -> bool:
        """More than :data:`DRAWING_MAJORITY` of the sample are line drawings."""
        return self.looked > 0 and self.found > DRAWING_MAJORITY * self.looked

    @property
    def dark(self) -> bool:
        """Most drawings found are dark strokes on light paper (ink on paper)."""
        return self.dark_ink * 2 > self.found

    def summary(self) -> str:
        """``"line drawings in 24 of 24 sampled training images"``."""
        return f"line drawings in {self.found} of {self.looked} sampled training images"


def drawing_tone(image: Image.Image) -> str | None:
    """``"dark"`` (dark strokes on light paper), ``"light"`` (the reverse), or None: not a drawing.

    A line drawing has no colour, at least 50% of its pixels in the paper's
    tone, at least 1% in ink, and at most 15% half-tones between them
    (photographs are mostly half-tones).

    Examples:
        >>> from PIL import ImageDraw
        >>> page = Image.new("L", (64, 64), 255)
        >>> ImageDraw.Draw(page).line([(8, 8), (56, 50)], fill=0, width=3)
        >>> drawing_tone(page)
        'dark'
        >>> noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
        >>> drawing_tone(Image.fromarray(noise)) is None
        True
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    if float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) > 12:
        return None  # coloured: a photograph or a painting
    grey = np.asarray(image.convert("L"), dtype=np.int16).ravel()
    if grey.size == 0:
        return None
    paper = int(np.bincount(grey, minlength=256).argmax())
    away = np.abs(grey - paper)
    ink = away > INK_LEVELS
    if (away <= PAPER_LEVELS).mean() < 0.5 or ink.mean() < 0.01:
        return None
    if ((away > PAPER_LEVELS) & ~ink).mean() > 0.15:
        return None
    return "dark" if float(grey[ink].mean()) < paper else "light"


def drawing_share(paths: list[str], sample: int = DRAWING_SAMPLE, seed: int = 0) -> DrawingShare:
    """How many of a seeded sample of ``paths`` are line drawings (:func:`drawing_tone`).

    The sample is the one :func:`~siamkit.training.face_share.face_share` looks at
    for the same seed.

    Examples:
        >>> drawing_share(["chars/a/1.png", "chars/b/1.png"])  # doctest: +SKIP
        DrawingShare(found=2, looked=2, dark_ink=2)
    """
    from siamkit.data.images import load_image

    chosen = np.random.default_rng(seed).permutation(len(paths))[:sample]
    tones = [drawing_tone(load_image(paths[i], mode="RGB")) for i in chosen]
    found = sum(tone is not None for tone in tones)
    return DrawingShare(found=found, looked=len(chosen), dark_ink=tones.count("dark"))


__all__ = [
    "DRAWING_MAJORITY",
    "DRAWING_SAMPLE",
    "DrawingShare",
    "drawing_share",
    "drawing_tone",
]
