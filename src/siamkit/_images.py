"""Reading image files with errors that name the file.

Every image siamkit decodes goes through :func:`load_image`, which turns any
decoding failure (a missing, truncated or corrupt file, one too large to be an
honest photo) into :class:`~siamkit.exceptions.ImageReadError`, turns a photo
stored sideways upright by its EXIF orientation (see :func:`upright`), and brings
images of more than 8 bits per channel to 8 bits by scaling, not clipping
(see :func:`to_8bit`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from siamkit.exceptions import ImageReadError

#: The extensions of the images a folder listing takes without opening them:
#: Pillow's names for JPEG, PNG, GIF, BMP, TIFF, WebP and the PNM family (``.jfif``
#: and ``.jpe`` are JPEG, ``.dib`` BMP, ``.apng`` PNG), in any case (``.JPG``).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".pgm", ".ppm", ".pbm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
    ".pnm", ".jpe", ".jfif", ".dib", ".apng",
)  # fmt: skip

#: 16-bit greyscale modes (PNG, TIFF): scaled by 255/65535.
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_MAX_16 = 65535

#: EXIF orientations that need a flip or a turn (1 is upright; other values are invalid).
_TURNED = range(2, 9)


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has an image file extension siamkit reads (:data:`IMAGE_EXTENSIONS`).

    A folder listing also takes files of other extensions whose content is
    one of these formats (see :mod:`siamkit._folders`).

    Examples:
        >>> is_image_file("s1/1.pgm"), is_image_file("IMG_1.JFIF"), is_image_file("README")
        (True, True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """Open and decode an image, converting it to ``mode`` ("L", "RGB") if given.

    Mixed modes in one dataset (greyscale next to RGB or palette images) are
    normal; converting on load means every image reaches the model alike.
    Images of more than 8 bits (16-bit PNG or TIFF, 16-bit PGM, float TIFF)
    come back as 8-bit ``"L"`` (or ``mode``), scaled by ``to_8bit``, even
    when ``mode`` is None: everything downstream, PIL's ``convert`` included,
    takes pixels as 0..255 and would clip them.

    Images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89
    million) are refused before they are decoded: a small file can claim a huge
    size (a "decompression bomb"). Raise that PIL setting for trusted files.

    A photo whose EXIF (or XMP) orientation says it is stored flipped or turned
    (a phone held sideways: orientations 2 to 8) comes back upright, as a
    viewer shows it (:func:`upright`); a missing, invalid or damaged EXIF
    block leaves the pixels as they are stored.

    Raises:
        ImageReadError: the file is missing, not an image, truncated, corrupt,
            too large, or of an unusable bit depth; the message names the file.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> Image.new("RGB", (4, 3)).save(p)
        >>> load_image(p, mode="L").size
        (4, 3)
    """
    try:
        # A file, not a path: Pillow memory-maps an uncompressed file given by path, and
        # maps a TIFF its orientation turns (5 to 8) with the turned size, scrambling it.
        with open(path, "rb") as file, Image.open(file) as img:
            _check_size(img, path)  # before decoding, and before any turn
            img.load()
            turned = upright(img)
            return _converted(turned, mode, path, copy=turned is img)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # The warning arrives as an exception only under -W error; PIL's own message.
        raise _too_large(path, str(err)) from None
    except MemoryError:
        raise ImageReadError(
            f"not enough memory to decode image {path}: shrink it or remove it from the dataset"
        ) from None
    except Exception as err:  # a hostile file can make PIL raise anything
        raise ImageReadError(
            f"cannot read image {path}: {err or type(err).__name__}. Replace the file or "
            "remove it from the dataset"
        ) from None


def _check_size(img: Image.Image, path: str | os.PathLike) -> None:
    # PIL only warns between its limit and twice that, and decodes anyway.
    limit = Image.MAX_IMAGE_PIXELS
    width, height = img.size
    if limit is not None and width * height > limit:
        raise _too_large(path, f"{width}x{height} = {width * height} pixels, above {limit}")


def _too_large(path: str | os.PathLike, detail: str) -> ImageReadError:
    return ImageReadError(
        f"image {path} is too large to decode safely ({detail}): it may be a decompression "
        "bomb. Shrink it, or if you trust it raise PIL.Image.MAX_IMAGE_PIXELS"
    )


def upright(image: Image.Image) -> Image.Image:
    """``image`` as a viewer shows it: flipped or turned by its EXIF orientation.

    Phones store a photo as the sensor saw it and record in the EXIF (or XMP)
    orientation tag how to turn it: 6 and 8 are a quarter turn, 3 a half
    turn, 2 and 4 a mirror image, 5 and 7 one turned a quarter. For those,
    the image is transposed with Pillow's :func:`PIL.ImageOps.exif_transpose`,
    which also drops the tag, so turning the result again changes nothing. Any other image
    (orientation 1, none, an invalid value, an EXIF block Pillow cannot read)
    is returned as it is, not copied: reading the tag is all it costs.

    Examples:
        >>> photo = Image.new("L", (4, 3))
        >>> exif = Image.Exif()
        >>> exif[0x0112] = 6  # stored a quarter turn counter-clockwise
        >>> photo.info["exif"] = exif.tobytes()
        >>> upright(photo).size, upright(upright(photo)).size
        ((3, 4), (3, 4))
        >>> plain = Image.new("L", (4, 3))
        >>> upright(plain) is plain
        True
    """
    if _orientation(image) not in _TURNED:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # damaged metadata besides the tag: keep the pixels as stored
        return image


def _orientation(image: Image.Image) -> int:
    # A damaged block can make Pillow warn (an exception under -W error) or raise.
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) else 1


def _converted(
    img: Image.Image, mode: str | None, path: str | os.PathLike, copy: bool = True
) -> Image.Image:
    if img.mode in _MODES_16 or img.mode in ("I", "F"):
        img = to_8bit(img, path)
    if mode and img.mode != mode:
        return img.convert(mode)
    # The file's own image is closed on return; a turned one is already a copy.
    return img.copy() if copy else img


def to_8bit(image: Image.Image, name: str | os.PathLike = "image") -> Image.Image:
    """An 8-bit ``"L"`` copy of a greyscale image of more bits, scaled, not clipped.

    The rule, by mode:

    * ``"I;16"`` (16-bit PNG, TIFF) and ``"I"`` (how PIL holds 16-bit PGM,
      already stretched to 0..65535): the 16-bit range, ``v * 255 / 65535``
      rounded; ``"I"`` pixels outside 0..65535 (true 32-bit data has no
      standard range) are refused.
    * ``"F"`` (float TIFF): the smallest of the ranges [0, 1], [0, 255] and
      [0, 65535] that holds every pixel is mapped to 0..255; NaN, infinite,
      negative or larger values are refused.

    Other modes are returned unchanged (PIL converts 8-bit modes itself).

    Raises:
        ImageReadError: pixels out of the ranges above; the message names
            ``name``.

    Examples:
        >>> img = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16))
        >>> img.mode, np.asarray(to_8bit(img)).tolist()
        ('I;16', [[0, 1, 255]])
    """
    if not (image.mode in _MODES_16 or image.mode in ("I", "F")):
        return image
    pixels = np.asarray(image)
    if image.mode == "F":
        top = _float_range(pixels, name)
    else:
        if pixels.size and (pixels.min() < 0 or pixels.max() > _MAX_16):
            raise ImageReadError(
                f"cannot read image {name}: 32-bit integer pixels outside 0..{_MAX_16} have "
                "no standard brightness scale; convert it to 8 or 16 bits"
            )
        top = _MAX_16
    scaled = np.rint(pixels.astype(np.float64) * (255.0 / top))
    return Image.fromarray(scaled.astype(np.uint8))


def _float_range(pixels: np.ndarray, name: str | os.PathLike) -> float:
    if not pixels.size:
        return 1.0
    low, high = float(pixels.min()), float(pixels.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > _MAX_16:
        raise ImageReadError(
            f"cannot read image {name}: float pixels span [{low:g}, {high:g}]; siamkit reads "
            f"finite values in [0, 1], [0, 255] or [0, {_MAX_16}]. Rescale the image"
        )
    return next(top for top in (1.0, 255.0, float(_MAX_16)) if high <= top)
