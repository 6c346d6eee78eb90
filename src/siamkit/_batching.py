"""Embedding a list of inputs in batches, for every runtime (PyTorch, ONNX Runtime).

This module imports no torch: the ONNX Runtime encoder uses it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from siamkit.exceptions import ConfigError, NonFiniteError


def embed_in_batches(
    items: Sequence[Any], batch_size: int, run: Callable[[Sequence[Any]], np.ndarray], dim: int
) -> np.ndarray:
    """``run`` on consecutive slices of ``items``, stacked as a float32 ``(N, dim)`` array.

    Raises:
        ConfigError: ``batch_size`` is not positive.
        NonFiniteError: a batch produced NaN or infinity.

    Examples:
        >>> embed_in_batches([1, 2, 3], 2, lambda b: np.array([[x, x] for x in b], "f4"), 2)
        array([[1., 1.],
               [2., 2.],
               [3., 3.]], dtype=float32)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    outputs = [run(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]
    if not outputs:
        return np.zeros((0, dim), dtype=np.float32)
    result = np.concatenate(outputs).astype(np.float32, copy=False)
    if not np.isfinite(result).all():
        raise NonFiniteError("the encoder produced NaN or infinite embeddings")
    return result


#: NumPy arrays of these types are pictures (``(H, W)`` or ``(H, W, C)``), not tensors.
PICTURE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def as_item_list(images: Any) -> list[Any]:
    """What ``embed`` was given, as a list of single inputs.

    A 4-D array or tensor is a batch of preprocessed images and a 2-D one a batch
    of vectors; a uint8 (or uint16) array is one picture, ``(H, W)`` or
    ``(H, W, C)``; a path or a PIL image is one item; any other iterable is a list
    of items. Tensors are recognised by their ``ndim`` without importing torch.

    Examples:
        >>> len(as_item_list(np.zeros((3, 5), "float32"))), len(as_item_list("a.png"))
        (3, 1)
    """
    if isinstance(images, np.ndarray) and images.dtype in PICTURE_DTYPES:
        return [images]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    ndim = getattr(images, "ndim", None)
    if ndim is not None:
        return list(images) if ndim in (2, 4) else [images]
    if isinstance(images, Iterable):
        return list(images)
    return [images]
