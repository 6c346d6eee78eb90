"""Reading image files with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from siamkit.exceptions import ImageReadError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".pgm", ".ppm", ".pbm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
)  # fmt: skip


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has an image file extension siamkit reads.

    Example:
        >>> is_image_file("s1/1.pgm"), is_image_file("README")
        (True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """Open and decode an image, converting it to ``mode`` ("L", "RGB") if given.

    Mixed modes in one dataset (greyscale next to RGB or palette images) are
    normal; converting on load means every image reaches the model alike.

    Raises:
        ImageReadError: the file is missing, not an image or truncated; the
            message names the file.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> Image.new("RGB", (4, 3)).save(p)
        >>> load_image(p, mode="L").size
        (4, 3)
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode and img.mode != mode else img.copy()
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(
            f"cannot read image {path}: {err}. Replace the file or remove it from the dataset"
        ) from None
