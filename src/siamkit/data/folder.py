"""Folders of images, one sub-folder per person or class (the ImageFolder layout)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torchvision.datasets import ImageFolder

from siamkit._folders import SkippedFile, list_image_folder
from siamkit.data.images import is_image_file, load_image


class FaceFolder(ImageFolder):
    """A torchvision ``ImageFolder`` with checks and errors that say what to fix.

    ``root/<person>/<image>``: every sub-folder is a class named after it.
    Images are converted to ``mode`` when given, so greyscale, RGB and palette
    images can be mixed. The folder is listed once, by
    :func:`siamkit._folders.list_image_folder`, which lists it alike without
    PyTorch: images by extension or content, links followed once and only
    inside ``root``; what it leaves out (a text file, an HEIF photo, a link
    loop, a link out of the folder) is in :attr:`skipped_files` with the reason.

    Args:
        root: The folder of class folders.
        transform: Applied to each PIL image.
        mode: PIL mode to convert images to (``"L"``, ``"RGB"``), or None.
        min_images_per_class: Classes with fewer images raise ``DataError``
            (2 for training, where a class needs a positive pair).
        layout: ``"flat"`` (``root/<class>/<image>``), ``"grouped"``
            (``root/<group>/<class>/<image>``, classes named ``"<group>/<class>"``,
            as Omniglot's alphabets and characters) or ``"auto"`` (whichever
            the folder shows: :func:`siamkit._folders.grouped_layout`).

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
        layout: str = "flat",
    ) -> None:
        self._listing = list_image_folder(root, min_images_per_class, layout)
        self.mode = mode
        super().__init__(
            str(root), transform=transform, loader=self._load, is_valid_file=is_image_file
        )

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        """The listed class folders, and their labels (as ``ImageFolder`` returns them)."""
        classes = list(self._listing.classes)
        return classes, {name: label for label, name in enumerate(classes)}

    def make_dataset(  # type: ignore[override]  # ImageFolder's is a staticmethod
        self, directory: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> list[tuple[str, int]]:
        """The listed ``(path, label)`` pairs; ``ImageFolder`` calls this once, from __init__."""
        return list(zip(self._listing.paths, self._listing.labels, strict=True))

    def _load(self, path: str) -> Any:
        return load_image(path, mode=self.mode)

    @property
    def paths(self) -> list[str]:
        """The image files, in dataset order."""
        return [path for path, _ in self.samples]

    @property
    def layout(self) -> str:
        """``"flat"`` or ``"grouped"``: how the folder was read."""
        return self._listing.layout

    @property
    def groups(self) -> list[str] | None:
        """Each class's group in the grouped layout (e.g. its alphabet), else None."""
        return None if self._listing.groups is None else list(self._listing.groups)

    @property
    def skipped_files(self) -> list[SkippedFile]:
        """The files and links of the folder left out, each with the reason."""
        return list(self._listing.skipped)


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
    return list_image_folder(root, min_images_per_class).counts
