"""What happens to an image before the network, as data: the part of a model outside its graph.

An exported encoder (ONNX) holds the network and everything after it; what
comes before it, reading, face alignment, colour mode, resizing and scaling
pixels, is described by a :class:`Preprocessing` record saved beside the
graph and replayed here with NumPy and Pillow only, so the ONNX Runtime path
sees exactly the input tensors PyTorch saw. This module imports no torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from siamkit.exceptions import ConfigError

MODES = ("L", "RGB")
#: The largest side, in pixels, an image may be resized to. One image's input
#: tensor is at most 192 MiB (RGB float32), and a manifest edited to
#: claim ``[60000, 60000]`` cannot make every embed allocate tens of gigabytes.
MAX_SIDE = 4096
_KEYS = frozenset({"mode", "size", "scale", "offset"})


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
            object.__setattr__(self, "size", _checked_size(self.size))
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ConfigError(f"preprocessing {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.scale == 0:
            raise ConfigError("preprocessing scale must not be 0: every image would look alike")

    @property
    def channels(self) -> int:
        """Channels of the input tensor: 1 for ``"L"``, 3 for ``"RGB"``."""
        return 1 if self.mode == "L" else 3

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
        """Rebuild from :meth:`to_dict`'s output, exactly: JSON as siamkit writes it.

        Raises:
            ConfigError: a field is missing, unknown, of the wrong type or out of range.

        Examples:
            >>> Preprocessing.from_dict({"mode": "L", "size": [56, 46], "scale": 1, "offset": 0})
            Preprocessing(mode='L', size=(56, 46), scale=1.0, offset=0.0)
            >>> Preprocessing.from_dict({"mode": "L", "size": [0, 0], "scale": 1, "offset": 0})
            Traceback (most recent call last):
            ...
            siamkit.exceptions.ConfigError: preprocessing size must be two whole numbers ...
        """
        if not isinstance(data, dict) or set(data) != _KEYS:
            keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(
                f"a preprocessing record must have exactly the keys {sorted(_KEYS)}, got {keys}"
            )
        size = data["size"]
        if size is not None and not (isinstance(size, list) and all(_is_int(v) for v in size)):
            raise ConfigError(f"preprocessing size must be null or [height, width], got {size!r}")
        if not isinstance(data["mode"], str):
            raise ConfigError(f"preprocessing mode must be L or RGB, got {data['mode']!r}")
        return cls(
            mode=data["mode"],
            size=None if size is None else tuple(size),  # type: ignore[arg-type]
            scale=data["scale"],
            offset=data["offset"],
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _checked_size(size: Any) -> tuple[int, int]:
    try:
        height, width = size
    except (TypeError, ValueError):
        height = width = None
    if not (
        _is_int(height) and _is_int(width) and 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE
    ):
        raise ConfigError(
            f"preprocessing size must be two whole numbers (height, width) from 1 to {MAX_SIDE}, "
            f"got {size!r}"
        )
    return int(height), int(width)
