"""The ``VectorStore`` contract: where a face gallery's vectors, ids, labels and metadata live.

A store keeps one record per item (a unique id, a label, a metadata dict and
the vector) and answers k-nearest-neighbour searches in siamkit's geometry:
distances are ``||a - b||`` for ``"euclidean"`` and ``1 - cos`` for
``"cosine"`` (vectors are unit length for cosine), whatever the engine
reports internally, so thresholds mean the same on every store. A store also
keeps a small JSON ``meta`` record with the collection (calibration, the
encoder's fingerprint), so a reopened gallery can be checked against its
encoder.

Built-ins: the Milvus store (:class:`~siamkit.index.milvus.MilvusStore`); a
store is pluggable like encoders (``register_store``, entry-point group
``siamkit.stores``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from siamkit.exceptions import ConfigError, ShapeError
from siamkit.registry import Registry

METRICS = ("euclidean", "cosine")
#: What ``add`` does with ids already stored: refuse them, or leave them as they are
#: (an interrupted enrolment re-run skips what it already wrote).
EXISTING = ("error", "skip")


@dataclass(frozen=True)
class StoredItem:
    """One record of a store.

    Examples:
        >>> StoredItem(7, "alice", {"path": "a.jpg"}, np.zeros(2, "float32")).label
        'alice'
    """

    id: Any
    label: Any
    metadata: dict[str, Any]
    vector: np.ndarray


@dataclass(frozen=True)
class StoreHits:
    """The k nearest items of each query, nearest first.

    Attributes:
        ids: Per query, the ids found (fewer than k when the store is smaller).
        labels: Their labels.
        distances: ``(queries, k)`` distances in siamkit's geometry; ``inf``
            past the items found.
        metadata: Their metadata dicts.

    Examples:
        >>> hits = StoreHits([[1]], [["a"]], np.array([[0.5, np.inf]]), [[{}]])
        >>> hits.ids[0], float(hits.distances[0, 0])
        ([1], 0.5)
    """

    ids: list[list[Any]]
    labels: list[list[Any]]
    distances: np.ndarray
    metadata: list[list[dict[str, Any]]] = field(default_factory=list)


class VectorStore(ABC):
    """Base class of every face-gallery store (see the module's docstring).

    Args:
        dim: The vectors' dimension.
        metric: ``"euclidean"`` or ``"cosine"``.

    Examples:
        >>> from siamkit.index import MilvusStore
        >>> issubclass(MilvusStore, VectorStore)
        True
    """

    def __init__(self, dim: int, metric: str) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        if metric not in METRICS:
            raise ConfigError(f"metric must be euclidean or cosine, got {metric!r}")
        self.dim = dim
        self.metric = metric

    # -- writing ---------------------------------------------------------------------
    @abstractmethod
    def add(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
        existing: str = "error",
    ) -> int:
        """Store new items; returns how many were written.

        Raises:
            DuplicateIdError: an id is repeated, or already stored and
                ``existing="error"``.
        """

    @abstractmethod
    def upsert(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Store items, replacing those whose id is already stored."""

    @abstractmethod
    def remove(self, ids: Sequence[Any], missing_ok: bool = False) -> int:
        """Delete items by id; returns how many were removed.

        Raises:
            UnknownIdError: an id is not stored and ``missing_ok`` is False.
        """

    # -- reading ---------------------------------------------------------------------
    @abstractmethod
    def get(self, ids: Sequence[Any]) -> list[StoredItem]:
        """The records of ``ids``, in order.

        Raises:
            UnknownIdError: an id is not stored.
        """

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> StoreHits:
        """The ``k`` nearest items of each row of ``queries``."""

    @abstractmethod
    def count(self) -> int:
        """How many items are stored."""

    @abstractmethod
    def items(self, batch_size: int = 10_000) -> Iterator[list[StoredItem]]:
        """Every record, in batches (for calibration and exports)."""

    def contains(self, item_id: Any) -> bool:
        """True when ``item_id`` is stored."""
        return bool(self.existing_ids([item_id]))

    @abstractmethod
    def existing_ids(self, ids: Sequence[Any]) -> set[Any]:
        """The subset of ``ids`` already stored."""

    # -- the collection's own record -------------------------------------------------
    @abstractmethod
    def get_meta(self) -> dict[str, Any]:
        """The JSON record kept with the collection (``{}`` when none was set)."""

    @abstractmethod
    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the JSON record kept with the collection."""

    def close(self) -> None:  # noqa: B027 - optional: stores without connections need nothing
        """Release connections (the store is unusable afterwards)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers for implementations -------------------------------------------------
    def prepared(self, vectors: Any) -> np.ndarray:
        """``vectors`` as a checked float32 ``(N, dim)`` array, unit length for cosine.

        Raises:
            ShapeError: wrong shape; NonFiniteError-like values are refused as ShapeError.
        """
        array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ShapeError(f"expected ({'N'}, {self.dim}) vectors, got {array.shape}")
        if not np.isfinite(array).all():
            raise ShapeError("vectors contain NaN or infinity")
        if self.metric == "cosine":
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            if (norms == 0).any():
                raise ShapeError("a zero vector has no direction: cosine cannot compare it")
            array = array / norms
        return array


def encode_key(value: Any) -> str:
    """An id or label as the text stores keep: ``i:`` for ints, ``s:`` and percent-encoding for
    strings, so ints stay ints and no quote or backslash reaches a query expression.

    Examples:
        >>> encode_key(7), encode_key("7"), encode_key('say "hi"')
        ('i:7', 's:7', 's:say%20%22hi%22')
    """
    if isinstance(value, bool) or not isinstance(value, (int, str, np.integer)):
        raise ConfigError(f"ids and labels must be ints or strings, got {value!r}")
    if isinstance(value, str):
        return "s:" + quote(value, safe="")
    return f"i:{int(value)}"


def decode_key(text: str) -> Any:
    """Inverse of :func:`encode_key`.

    Examples:
        >>> decode_key("s:alice"), decode_key("i:3")
        ('alice', 3)
    """
    kind, _, body = text.partition(":")
    if kind == "i":
        return int(body)
    if kind == "s":
        return unquote(body)
    raise ConfigError(f"{text!r} is not an id or label a siamkit store wrote")


store_registry: Registry[VectorStore] = Registry("store", group="siamkit.stores", base=VectorStore)


def register_store(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering a :class:`VectorStore` subclass under a name.

    Examples:
        >>> "milvus" in store_registry.names()
        True
    """
    return store_registry.register(name, overwrite=overwrite)
