"""Folders of images, one sub-folder per person or class (the ImageFolder layout)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from siamkit.data.images import is_image_file, load_image
from siamkit.exceptions import DataError


class FaceFolder(ImageFolder):
    """A torchvision ``ImageFolder`` with checks and errors that say what to fix.

    ``root/<person>/<image>``: every sub-folder is a class named after it; files
    that are not images (by extension) are ignored. Images are converted to
    ``mode`` when given, so greyscale, RGB and palette images can be mixed.

    Args:
        root: The folder of class folders.
        transform: Applied to each PIL image.
        mode: PIL mode to convert images to (``"L"``, ``"RGB"``), or None.
        min_images_per_class: Classes with fewer images raise ``DataError``
            (2 for training, where a class needs a positive pair).

    Raises:
        DataError: ``root`` is missing, holds no class folder, or holds no image.

    Examples:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for person in ("ann", "bob"):
        ...     os.makedirs(os.path.join(root, person))
        ...     for i in range(2):
        ...         Image.new("L", (8, 8)).save(os.path.join(root, person, f"{i}.png"))
        >>> faces = FaceFolder(root)
        >>> faces.classes, len(faces)
        (['ann', 'bob'], 4)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        mode: str | None = None,
        min_images_per_class: int = 1,
    ) -> None:
        check_image_folder(root, min_images_per_class)
        self.mode = mode
        super().__init__(
            str(root), transform=transform, loader=self._load, is_valid_file=is_image_file
        )

    def _load(self, path: str) -> Any:
        return load_image(path, mode=self.mode)

    @property
    def paths(self) -> list[str]:
        """The image files, in dataset order."""
        return [path for path, _ in self.samples]


def check_image_folder(root: str | os.PathLike, min_images_per_class: int = 1) -> dict[str, int]:
    """Check ``root`` has the ImageFolder layout; return the image count per class.

    Raises:
        DataError: naming the missing folder, the empty one, or the classes with
            too few images.

    Examples:
        >>> check_image_folder("/no/such/folder")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.DataError: image folder /no/such/folder does not exist
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    class_dirs = sorted(entry for entry in path.iterdir() if entry.is_dir())
    if not class_dirs:
        raise DataError(
            f"{path} has no sub-folders: put each person's (or class's) images in a "
            f"folder of their own, e.g. {path}/alice/1.jpg"
        )
    counts = Counter(
        {
            d.name: sum(1 for f in d.rglob("*") if f.is_file() and is_image_file(f))
            for d in class_dirs
        }
    )
    if sum(counts.values()) == 0:
        raise DataError(f"{path} holds no image files (looked for .png, .jpg, .pgm, ...)")
    empty = sorted(name for name, count in counts.items() if count == 0)
    if empty:
        raise DataError(f"class folders without images in {path}: {', '.join(empty[:10])}")
    few = sorted(name for name, count in counts.items() if count < min_images_per_class)
    if few:
        raise DataError(
            f"classes with fewer than {min_images_per_class} images in {path}: "
            f"{', '.join(few[:10])}{'...' if len(few) > 10 else ''}. Training needs at least "
            "two images of each person to form a matching pair: add images or remove these folders"
        )
    return dict(counts)
