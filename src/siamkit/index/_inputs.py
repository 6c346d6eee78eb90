"""Turning what users pass a face index into embeddings, ids, labels and metadata.

The rule for items: numpy float arrays are embeddings; paths, PIL images,
uint8 pictures and torch tensors are encoder inputs (torch tensors are
embeddings when the index has no encoder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from siamkit.encoders.base import Encoder
from siamkit.exceptions import ConfigError, NoFaceError, NonFiniteError, ShapeError
from siamkit.geometry import _MAX_SQUARED_NORM, MAX_EMBEDDING_NORM

Paths = list[str | None]


@dataclass
class Embedded:
    """What :func:`embed_items` made of a call's items.

    Attributes:
        embeddings: ``(K, D)`` float32, one row per kept item.
        single: The call passed one item, not a sequence.
        paths: The file path of every item given (None for other items).
        kept: Positions (among the items given) of the embedded ones.
        skipped: Positions of images dropped because no face was found.
    """

    embeddings: np.ndarray
    single: bool
    paths: Paths
    kept: list[int]
    skipped: list[int] = field(default_factory=list)


def to_embeddings(
    items: Any,
    encoder: Encoder | None,
    dim: int | None,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, bool, Paths]:
    """``(embeddings (N, D) float32, was_single_item, file path of each item or None)``.

    Every image must be embedded: under an aligner's ``"skip"`` policy an image
    without a face raises :class:`~siamkit.exceptions.NoFaceError` here (a
    query cannot be dropped); :func:`embed_items` drops it instead.

    Examples:
        >>> emb, single, _ = to_embeddings(np.zeros(3, dtype="float32"), None, 3)
        >>> emb.shape, single
        ((1, 3), True)
    """
    result = embed_items(items, encoder, dim, batch_size, progress, skip_missing=False)
    return result.embeddings, result.single, result.paths


def embed_items(
    items: Any,
    encoder: Encoder | None,
    dim: int | None,
    batch_size: int = 64,
    progress: bool = False,
    skip_missing: bool = True,
) -> Embedded:
    """Embed what a user passed; images without a face are dropped when the policy says so.

    With ``skip_missing`` and an encoder whose aligner has ``on_missing="skip"``,
    an image in which no face is found is left out and its position recorded in
    :attr:`Embedded.skipped`; under ``"error"`` its ``NoFaceError`` propagates.

    Examples:
        >>> result = embed_items(np.zeros((2, 3), dtype="float32"), None, 3)
        >>> result.embeddings.shape, result.kept, result.skipped
        ((2, 3), [0, 1], [])
    """
    if isinstance(items, torch.Tensor) and encoder is None:
        items = items.detach().cpu().numpy()
    if isinstance(items, np.ndarray) and items.dtype != np.uint8:
        embeddings = _checked(items, dim)
        return _all_kept(embeddings, items.ndim == 1)
    if _is_single_input(items):
        inputs, single = [items], True
    elif isinstance(items, torch.Tensor):
        inputs, single = items, False
    elif isinstance(items, Iterable) and not isinstance(items, (str, bytes, dict)):
        inputs, single = list(items), False
        if inputs and all(isinstance(x, np.ndarray) and x.dtype != np.uint8 for x in inputs):
            return _all_kept(_checked(_stack(inputs), dim), False)
    else:
        raise ConfigError(
            f"cannot index an object of type {type(items).__name__}: pass embeddings "
            "(a numpy float array) or images (paths, PIL images, torch tensors)"
        )
    if len(inputs) == 0:
        return Embedded(np.zeros((0, dim or 0), dtype=np.float32), single, [], [])
    if encoder is None:
        raise ConfigError(
            "this index has no encoder, so it takes embeddings only (numpy float arrays); "
            "create it with FaceIndex(encoder=...) to index images"
        )
    paths = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else None for x in inputs]
    skipping = skip_missing and skips_missing_faces(encoder)
    embeddings, skipped = _encode(encoder, inputs, batch_size, progress, skipping)
    gone = set(skipped)
    kept = [i for i in range(len(inputs)) if i not in gone]
    return Embedded(embeddings, single, paths, kept, skipped)


def skips_missing_faces(encoder: Any) -> bool:
    """True when ``encoder``'s aligner drops images without a face (``on_missing="skip"``).

    Examples:
        >>> import siamkit
        >>> skips_missing_faces(siamkit.create_encoder("compact"))
        False
    """
    aligner = getattr(encoder, "aligner", None)
    return aligner is not None and getattr(aligner, "on_missing", None) == "skip"


def _all_kept(embeddings: np.ndarray, single: bool) -> Embedded:
    count = len(embeddings)
    return Embedded(embeddings, single, [None] * count, list(range(count)))


def _is_single_input(item: Any) -> bool:
    if isinstance(item, (str, os.PathLike, Image.Image)):
        return True
    if isinstance(item, np.ndarray):  # uint8 here: one (H, W) or (H, W, C) picture
        return item.ndim in (2, 3)
    return isinstance(item, torch.Tensor) and item.ndim in (1, 3)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if any(a.ndim != 1 for a in arrays) or len({a.shape for a in arrays}) != 1:
        raise ShapeError(
            "a list of embeddings must hold 1-D arrays of one size, got shapes "
            f"{sorted({a.shape for a in arrays})[:3]}"
        )
    return np.stack(arrays)


def _checked(array: np.ndarray, dim: int | None) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: inf, refused
        array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        expected = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ShapeError(
            f"embeddings must have shape {expected} (or ({dim},) for one), got "
            f"{tuple(array.shape)}; to encode images pass paths, PIL images or torch tensors"
        )
    check_vectors(array)
    return np.ascontiguousarray(array)


def check_vectors(vectors: np.ndarray, what: str = "embeddings") -> None:
    """Raise ``NonFiniteError`` unless every row of a float32 ``(N, D)`` array is usable.

    A row is usable when it is finite and its L2 norm is at most
    ``siamkit.geometry.MAX_EMBEDDING_NORM`` (1e18): FAISS computes
    squared distances in float32, which larger vectors overflow into NaN. One
    pass decides: the float32 squared norms are NaN or infinite for non-finite
    rows, and over the bound (or overflowed) for huge ones.

    Examples:
        >>> check_vectors(np.full((1, 4), 1e30, dtype="float32"))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.NonFiniteError: embeddings of L2 norm above 1e+18 (rows [0]) ...
    """
    squared = np.einsum("ij,ij->i", vectors, vectors)  # einsum: no overflow warning
    usable = squared <= _MAX_SQUARED_NORM  # False for NaN too
    if usable.all():
        return
    finite = np.isfinite(vectors).all(axis=1)
    broken = np.flatnonzero(~finite)
    if broken.size:
        raise NonFiniteError(
            f"{what} contain NaN or infinity, or values beyond float32's range (rows "
            f"{broken[:5].tolist()}): fix or drop them"
        )
    huge = np.flatnonzero(~usable)
    raise NonFiniteError(
        f"{what} of L2 norm above {MAX_EMBEDDING_NORM:g} (rows {huge[:5].tolist()}) cannot "
        "be indexed or searched: FAISS computes their squared distances in float32, which "
        "overflow. Rescale them (for cosine, normalise them first); real encoders give norms "
        "near 1"
    )


def _encode(
    encoder: Encoder, inputs: Any, batch_size: int, progress: bool, skipping: bool
) -> tuple[np.ndarray, list[int]]:
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    from tqdm.auto import tqdm

    chunks, skipped = [], []
    with tqdm(total=len(inputs), desc="encoding", unit="img", disable=not progress) as bar:
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            if skipping:
                batch, missing = _faces_only(encoder, batch)
                skipped += [start + i for i in missing]
            if len(batch):
                chunks.append(encoder.embed(batch, batch_size=batch_size))
            bar.update(len(batch) + (len(missing) if skipping else 0))
    dim = int(getattr(encoder, "embedding_dim", 0))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    check_vectors(embeddings, f"the embeddings {type(encoder).__name__} produced")
    return embeddings, skipped


def _faces_only(encoder: Encoder, batch: Any) -> tuple[list[Any], list[int]]:
    """The batch preprocessed (each image aligned once), less the images without a face."""
    ready, missing = [], []
    for position, item in enumerate(batch):
        try:
            ready.append(encoder.preprocess(item))
        except NoFaceError:
            missing.append(position)
    return ready, missing


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
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"metadata of item {position} is not JSON-serialisable ({err}): keep it to "
            "strings, numbers, booleans, lists and dicts"
        ) from None
