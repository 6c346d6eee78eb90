"""Does the data hold faces? What ``--preset auto`` looks at before it takes the face recipe.

A face recipe on handwritten characters aligns noise and measures nothing; a
from-scratch recipe on faces wastes a pretrained face model. So ``auto``
runs the face detector (:data:`~siamkit.training.recipes.FACE_ALIGNER`) on a
seeded sample of the training images and takes the face recipe only when
most of them hold a face (:func:`face_share`, :func:`follow_data`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Training images the face detector looks at (seeded), and the share that must hold a face.
FACE_SAMPLE = 24
FACE_MAJORITY = 0.5


@dataclass(frozen=True)
class FaceShare:
    """How many of a seeded sample of images hold a face.

    Examples:
        >>> FaceShare(found=20, looked=24).most
        True
    """

    found: int
    looked: int

    @property
    def most(self) -> bool:
        """More than :data:`FACE_MAJORITY` of the sample holds a face."""
        return self.looked > 0 and self.found > FACE_MAJORITY * self.looked

    def summary(self) -> str:
        """``"a face in 3 of 24 sampled training images"``."""
        return f"a face in {self.found} of {self.looked} sampled training images"


def training_paths(data: Any, layout: str = "auto") -> list[str]:
    """The image files of ``data``: a folder (listed in ``layout``), or a split's training part.

    Examples:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp(); os.makedirs(os.path.join(root, "ann"))
        >>> Image.new("L", (8, 8)).save(os.path.join(root, "ann", "1.png"))
        >>> [os.path.basename(p) for p in training_paths(root)]
        ['1.png']
    """
    from siamkit._folders import list_image_folder
    from siamkit.data.splits import ClassSplit

    if isinstance(data, ClassSplit):
        part = data.train
        return [part.dataset.paths[i] for i in part.indices]
    return list_image_folder(os.fspath(data), layout=layout).paths


def face_share(
    paths: list[str], sample: int = FACE_SAMPLE, seed: int = 0, detector: Any = None
) -> FaceShare:
    """How many of a seeded sample of ``paths`` hold a face, by ``detector`` (the face recipe's).

    Args:
        paths: Image files.
        sample: How many to look at (all of them when fewer).
        seed: Seeds the sample.
        detector: A face aligner (its ``find_faces``); default the face recipe's.

    Raises:
        MissingExtraError: no detector given and the face extra is not installed.

    Examples:
        >>> face_share(["faces/ann/1.jpg"], detector=None)  # doctest: +SKIP
        FaceShare(found=1, looked=1)
    """
    from siamkit.data.images import load_image

    if detector is None:
        from siamkit.training.recipes import face_aligner

        detector = face_aligner()
    chosen = np.random.default_rng(seed).permutation(len(paths))[:sample]
    found = sum(bool(detector.find_faces(load_image(paths[i], mode="RGB"))) for i in chosen)
    return FaceShare(found=int(found), looked=len(chosen))


__all__ = ["FACE_MAJORITY", "FACE_SAMPLE", "FaceShare", "face_share", "training_paths"]
