"""What happens to an image before the network, as data: the part of a model outside its graph.

An exported encoder (ONNX) holds the network and everything after it; what
comes before it, reading, face alignment, colour mode, resizing and scaling
pixels, is described by a :class:`Preprocessing` record saved beside the
graph and replayed here with NumPy and Pillow only, so the ONNX Runtime path
sees exactly the input tensors PyTorch saw. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from siamkit.exceptions import ConfigError

MODES = ("L", "RGB")


@dataclass(frozen=True)
class Preprocessing:
    """Image to input tensor: convert to ``mode``, resize to ``size``, ``pixels * scale + offset``.

    Attributes:
        mode: ``"L"`` (one channel) or ``"RGB"`` (three).
        size: ``(height, width)`` the image is resized to (bilinear), or None.
        scale: Pixels (0..255) are multiplied by it...
        offset: ...and shifted by it (``1/127.5`` and ``-1`` give ``[-1, 1]``).

    Examples:
        >>> spec = Preprocessing("L", (2, 3), 1 / 127.5, -1.0)
        >>> spec.apply(Image.new("L", (6, 4), 255)).shape
        (1, 2, 3)
    """

    mode: str
    size: tuple[int, int] | None
    scale: float
    offset: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"preprocessing mode must be L or RGB, got {self.mode!r}")
        if self.size is not None:
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    def apply(self, image: Image.Image) -> np.ndarray:
        """The float32 ``(C, H, W)`` input of one image."""
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if self.size is not None and image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.scale)
        pixels = pixels + np.float32(self.offset)
        return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for the export manifest."""
        data = asdict(self)
        data["size"] = list(self.size) if self.size is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Preprocessing:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ConfigError: a field is missing or of the wrong type.
        """
        try:
            size = data["size"]
            return cls(
                mode=str(data["mode"]),
                size=None if size is None else (int(size[0]), int(size[1])),
                scale=float(data["scale"]),
                offset=float(data["offset"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ConfigError(f"bad preprocessing record {data!r}: {err}") from None
