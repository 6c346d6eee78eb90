"""Listing a folder of people, ``root/<person>/<image>``, without PyTorch.

:class:`~siamkit.data.FaceFolder` (a torchvision ``ImageFolder``) takes its
classes and images from :func:`list_image_folder`, so evaluation and the face
index, which only need the paths, list a folder exactly as training does, with
or without torch: the same class order (sorted folder names), the same image
order (``os.walk`` of each class folder, following links, sorted) and the same
image extensions (:data:`siamkit._images.IMAGE_EXTENSIONS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from siamkit._images import is_image_file
from siamkit.exceptions import DataError


@dataclass(frozen=True)
class FolderListing:
    """The images of a folder of people, in dataset order.

    Attributes:
        root: The folder, as given (the paths start with it).
        classes: The class (person) folder names, sorted; a label is a position here.
        paths: Every image file, class by class.
        labels: The class of each image, an index into ``classes``.

    Examples:
        >>> listing = FolderListing("faces", ["ann", "bob"], ["faces/ann/1.png"], [0])
        >>> listing.counts
        {'ann': 1, 'bob': 0}
    """

    root: str
    classes: list[str]
    paths: list[str]
    labels: list[int]

    @property
    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = dict.fromkeys(self.classes, 0)
        for label in self.labels:
            counts[self.classes[label]] += 1
        return counts


def list_image_folder(root: str | os.PathLike, min_images_per_class: int = 1) -> FolderListing:
    """List ``root/<person>/<image>`` as torchvision's ``ImageFolder`` does, with checks.

    Every sub-folder of ``root`` is a class; its image files (by extension, in
    sub-folders too) are its images; other files are ignored.

    Raises:
        DataError: ``root`` is missing, holds no class folder or no image, or a
            class folder holds no image or fewer than ``min_images_per_class``.

    Examples:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for person in ("bob", "ann"):
        ...     os.makedirs(os.path.join(root, person))
        ...     Image.new("L", (8, 8)).save(os.path.join(root, person, "1.png"))
        >>> listing = list_image_folder(root)
        >>> listing.classes, listing.labels
        (['ann', 'bob'], [0, 1])
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    if not classes:
        raise DataError(
            f"{path} has no sub-folders: put each person's (or class's) images in a "
            f"folder of their own, e.g. {path}/alice/1.jpg"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = _class_images(os.path.join(os.fspath(root), name))
        paths += images
        labels += [label] * len(images)
    listing = FolderListing(os.fspath(root), classes, paths, labels)
    _check_counts(path, listing.counts, min_images_per_class)
    return listing


def _class_images(folder: str) -> list[str]:
    """The image files under one class folder, in ``ImageFolder``'s order."""
    return [
        os.path.join(parent, name)
        for parent, _, names in sorted(os.walk(folder, followlinks=True))
        for name in sorted(names)
        if is_image_file(os.path.join(parent, name))
    ]


def _check_counts(path: Path, counts: dict[str, int], min_images_per_class: int) -> None:
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
