"""Turning what users pass a face index into embeddings, ids, labels and metadata.

Embedding the items is :mod:`siamkit._embedding`'s (evaluation embeds through
it too); its names are re-exported here. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from siamkit._embedding import (
    Embedded,
    Paths,
    check_vectors,
    embed_items,
    skips_missing_faces,
    to_embeddings,
)
from siamkit._manifest import check_json_depth
from siamkit.exceptions import ConfigError, ShapeError
from siamkit.geometry import MAX_SQUARED_NORM

__all__ = [
    "MAX_METADATA_DEPTH",
    "Embedded",
    "Paths",
    "check_extra",
    "check_id",
    "check_label",
    "check_metadata",
    "check_vectors",
    "embed_items",
    "fast_query_norm",
    "per_item",
    "skips_missing_faces",
    "to_embeddings",
]


#: How deep an item's metadata (and a gallery's ``extra`` notes) may nest, the dict
#: itself counted: deeper JSON would crash the JSON writer (RecursionError) at 1,000.
MAX_METADATA_DEPTH = 32


# Single queries shorter than this take the general path, which refuses cosine's zero
# vectors (norm below 1e-12, a square of 1e-24; the margin covers rounding).
_SHORT_SQUARED_NORM = 1e-20


def fast_query_norm(vector: np.ndarray, dim: int | None, k: Any) -> float | None:
    """The squared norm of one float32 query that may take a store's ``search_one``, else None.

    One NumPy call, which is also the check for NaN, inf and norms over
    ``MAX_EMBEDDING_NORM`` (whose float32 distances would overflow); anything
    else takes the general path, which raises for what this refuses.

    Examples:
        >>> fast_query_norm(np.array([3, 4], dtype="float32"), 2, 1)
        25.0
        >>> fast_query_norm(np.array([np.nan, 0], dtype="float32"), 2, 1) is None
        True
    """
    if vector.shape != (dim,) or type(k) is not int or k <= 0:
        return None
    # vdot, not dot: as fast, and silent when the float32 square overflows to inf.
    squared = float(np.vdot(vector, vector))
    # Also False for NaN and inf; (near) zero queries go where cosine's rule is applied.
    return squared if _SHORT_SQUARED_NORM <= squared <= MAX_SQUARED_NORM else None


# -- ids, labels, metadata ------------------------------------------------------------
def check_id(value: Any) -> str | int:
    """An id as stored: a str or an int (numpy integers become int).

    Examples:
        >>> check_id(np.int64(3)), check_id("a")
        (3, 'a')
    """
    return _scalar(value, "id")


def check_label(value: Any) -> str | int:
    """A label as stored: a str or an int.

    Examples:
        >>> check_label("ann")
        'ann'
    """
    return _scalar(value, "label")


def _scalar(value: Any, what: str) -> str | int:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise ConfigError(f"{what} must be a string or an integer, got {value!r}")


def per_item(
    values: Any, count: int, name: str, check: Callable[[Any], Any], broadcast: bool
) -> list[Any]:
    """One checked value per item: a sequence of ``count``, or one scalar.

    Examples:
        >>> per_item("ann", 2, "labels", check_label, broadcast=True)
        ['ann', 'ann']
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        if broadcast or count == 1:
            return [check(values)] * count
        raise ShapeError(f"one {name[:-1]} given for {count} items: pass a list of {count} {name}")
    values = list(np.asarray(values).tolist() if isinstance(values, np.ndarray) else values)
    if len(values) != count:
        raise ShapeError(f"{count} items but {len(values)} {name}: pass one per item")
    return [check(v) for v in values]


def check_metadata(metadata: Any, count: int, paths: Paths) -> list[dict[str, Any]]:
    """One JSON-able dict per item; by default ``{"path": ...}`` for files, else ``{}``.

    Examples:
        >>> check_metadata(None, 2, ["a.png", None])
        [{'path': 'a.png'}, {}]
    """
    if metadata is None:
        return [{"path": p} if p is not None else {} for p in paths]
    if isinstance(metadata, dict):
        metadata = [metadata] * count if count == 1 else metadata
    if isinstance(metadata, dict) or len(metadata) != count:
        given = "one dict" if isinstance(metadata, dict) else f"{len(metadata)} dicts"
        raise ShapeError(f"{count} items but {given} of metadata: pass one dict per item")
    return [_json_copy(m, i) for i, m in enumerate(metadata)]


def _json_copy(meta: Any, position: int) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ConfigError(f"metadata of item {position} must be a dict, got {type(meta).__name__}")
    return _checked_json(meta, f"metadata of item {position}")


def check_extra(extra: Any) -> dict[str, Any]:
    """A copy of a gallery's ``extra`` notes, checked as metadata is: a JSON dict, bounded.

    Raises:
        ConfigError: not a dict, not JSON, or nested deeper than :data:`MAX_METADATA_DEPTH`.

    Examples:
        >>> check_extra({"model": "runs/faces"})
        {'model': 'runs/faces'}
    """
    if not isinstance(extra, dict):
        raise ConfigError(f"extra must be a dict, got {type(extra).__name__}")
    return _checked_json(extra, "the index's extra notes")


def _checked_json(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        # First: json.dumps recurses once per level, and the walk here does not.
        check_json_depth(value, MAX_METADATA_DEPTH)
    except ValueError:
        raise ConfigError(
            f"{what} nests lists and dicts deeper than {MAX_METADATA_DEPTH} levels: keep it flatter"
        ) from None
    try:
        # allow_nan=False: NaN and infinity are not JSON; stores would keep them differently.
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{what} is not JSON-serialisable ({err}): keep it to strings, finite numbers, "
            "booleans, lists and dicts"
        ) from None
