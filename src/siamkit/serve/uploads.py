"""Uploaded images, checked before they are decoded: size, type from the bytes, pixels.

Examples:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (8, 6)).save(buffer, format="PNG")
    >>> decode_upload(buffer.getvalue(), "face.png", UploadLimits()).size
    (8, 6)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from siamkit._images import upright
from siamkit.exceptions import SiamkitError

#: The formats a service accepts, sniffed from the bytes (never from a name or a header).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class UploadError(SiamkitError, ValueError):
    """An upload the service refuses; :attr:`code` and :attr:`status` go to the client."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True)
class UploadLimits:
    """What one request may send.

    Attributes:
        max_file_bytes: The largest image file.
        max_request_bytes: All the images of one request together.
        max_files: Images in one request.
        max_pixels: Width times height of one image, checked before decoding
            (a small file may claim a huge size: a decompression bomb).
    """

    max_file_bytes: int = 10 * 2**20
    max_request_bytes: int = 50 * 2**20
    max_files: int = 16
    max_pixels: int = 40_000_000


def decode_upload(data: bytes, name: str, limits: UploadLimits) -> Image.Image:
    """The upright RGB picture in ``data``, or an :class:`UploadError` naming the problem.

    Raises:
        UploadError: ``too_large`` (413), ``unsupported_media`` (415: not one of
            :data:`FORMATS` by its bytes) or ``bad_image`` (422: truncated,
            corrupt, or more than ``max_pixels``).
    """
    if len(data) > limits.max_file_bytes:
        raise UploadError("too_large", f"{name} is {len(data)} bytes, above the limit of "
                          f"{limits.max_file_bytes}", 413)  # fmt: skip
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise UploadError("unsupported_media", f"{name} is not a {', '.join(FORMATS)} image "
                          "(judged by its bytes)", 415) from None  # fmt: skip
    except Exception as err:  # a hostile header can make PIL raise anything
        raise UploadError("bad_image", f"cannot read {name}: {err}", 422) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadError("bad_image", f"{name} is {width}x{height} pixels, above the limit of "
                          f"{limits.max_pixels}", 422)  # fmt: skip
    try:
        image.load()
        return upright(image).convert("RGB")
    except Exception as err:
        raise UploadError("bad_image", f"cannot decode {name}: {err or type(err).__name__}",
                          422) from None  # fmt: skip
