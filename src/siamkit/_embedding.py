"""Turning what users pass (embeddings or images) into checked float32 embeddings.

The rule for items: numpy float arrays are embeddings; paths, PIL images,
uint8 pictures and torch tensors are encoder inputs (torch tensors are
embeddings when there is no encoder).

The face index and evaluation both embed through here, with a PyTorch encoder
or an ONNX Runtime one, so this module imports no torch: tensors are
recognised through ``sys.modules`` (one can only exist once torch is imported).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from siamkit.exceptions import ConfigError, NoFaceError, NonFiniteError, ShapeError
from siamkit.geometry import MAX_EMBEDDING_NORM, MAX_SQUARED_NORM, is_tensor

if TYPE_CHECKING:
    from siamkit.encoders.base import Encoder
    from siamkit.runtime.onnx import OnnxEncoder

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
    encoder: Encoder | OnnxEncoder | None,
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
    encoder: Encoder | OnnxEncoder | None,
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
    if encoder is None and is_tensor(items):
        items = items.detach().cpu().numpy()
    if isinstance(items, np.ndarray) and items.dtype != np.uint8:
        embeddings = _checked(items, dim)
        return _all_kept(embeddings, items.ndim == 1)
    if _is_single_input(items):
        inputs, single = [items], True
    elif is_tensor(items):
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
        >>> from siamkit.alignment import NoAligner
        >>> class Model:
        ...     aligner = NoAligner()
        >>> skips_missing_faces(Model())
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
    return is_tensor(item) and item.ndim in (1, 3)


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
    usable = squared <= MAX_SQUARED_NORM  # False for NaN too
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
    encoder: Encoder | OnnxEncoder, inputs: Any, batch_size: int, progress: bool, skipping: bool
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


def _faces_only(encoder: Encoder | OnnxEncoder, batch: Any) -> tuple[list[Any], list[int]]:
    """The batch preprocessed (each image aligned once), less the images without a face."""
    ready, missing = [], []
    for position, item in enumerate(batch):
        try:
            ready.append(encoder.preprocess(item))
        except NoFaceError:
            missing.append(position)
    return ready, missing
