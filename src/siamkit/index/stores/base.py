"""The ``VectorStore`` contract: where a face gallery's vectors, ids, labels and metadata live.

A store keeps one record per item (a unique id, a label, a metadata dict and
the vector) and answers k-nearest-neighbour searches in siamkit's geometry:
distances are ``||a - b||`` for ``"euclidean"`` and ``1 - cos`` for
``"cosine"`` (vectors are unit length for cosine), whatever the engine
reports internally, so thresholds mean the same on every store. The built-in
stores report :func:`siamkit.geometry.index_distances` of the query and the
stored vector, the number ``FaceIndex.verify`` and calibration compute for
the same pair (the engine's own scores only choose the neighbours); a
third-party store should too. Every vector reaches a store checked by
``prepared``: finite, of a norm float32 search handles, and for cosine not a
zero vector (:func:`siamkit.geometry.check_directions`; ``FaceIndex`` applies
the same rule before any store sees its input). A store also keeps a small
JSON ``meta`` record with the collection (calibration, the encoder's
fingerprint), so a reopened gallery can be checked against its encoder.

The contract is ten methods: ``add``, ``upsert``, ``remove``, ``get``,
``existing_ids``, ``count``, ``items``, ``search`` (answering with the one
result type every search returns, :class:`~siamkit.index.SearchResults`),
``get_meta`` and ``set_meta``; and one declared capability,
:attr:`VectorStore.persistence`: ``"files"`` (this process alone holds the
gallery and saves it with ``save(path)``, loads it with ``load(path)``) or
``"shared"`` (a database other processes read and write; every change is
stored as it is made). The rest (``contains``, ``gallery``, ``search_one``,
``compact``, ``describe``, ``close``, ``open``) have working defaults a store
may speed up.

Built-ins: the FAISS store (:class:`~siamkit.index.FaissStore`, in this
process, saved as files; the default) and the Milvus store
(:class:`~siamkit.index.MilvusStore`, a collection in Milvus Lite or a Milvus
server). A store is pluggable like encoders (``register_store``, entry-point
group ``siamkit.stores``): subclass :class:`VectorStore`, implement its
abstract methods, and :class:`~siamkit.index.FaceIndex` runs on it.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote

import numpy as np

from siamkit._manifest import check_json_depth
from siamkit.exceptions import ConfigError, DuplicateIdError, ShapeError
from siamkit.geometry import check_directions, prepare
from siamkit.index._inputs import MAX_METADATA_DEPTH, check_vectors
from siamkit.index.results import Gallery, Match, SearchResults
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
    """Deprecated: what ``VectorStore.search`` returned before 0.2; return ``SearchResults``.

    The k nearest items of each query, nearest first. A store whose ``search``
    still returns these keeps working for one release (``FaceIndex`` converts
    them, with a DeprecationWarning); build the answer with
    :meth:`~siamkit.index.SearchResults.from_lists` instead.

    Attributes:
        ids: Per query, the ids found (fewer than k when the store is smaller).
        labels: Their labels.
        distances: ``(queries, k)`` distances in siamkit's geometry; ``inf``
            past the items found.
        metadata: Their metadata dicts.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     hits = StoreHits([[1]], [["a"]], np.array([[0.5, np.inf]]), [[{}]])
        >>> hits.ids[0], float(hits.distances[0, 0])
        ([1], 0.5)
    """

    ids: list[list[Any]]
    labels: list[list[Any]]
    distances: np.ndarray
    metadata: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        warnings.warn(
            "StoreHits is deprecated: VectorStore.search returns SearchResults "
            "(SearchResults.from_lists builds one from per-query lists); it goes in siamkit 0.3",
            DeprecationWarning,
            stacklevel=3,
        )


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

    #: How the gallery outlives this process: ``"files"``, held by this process
    #: alone and written by ``save(path)`` (read back by the class's ``load(path)``),
    #: or ``"shared"``, a database several processes read and write, where every
    #: change is stored as it is made (``FaceIndex`` then re-reads the gallery's
    #: record before each change, and refuses to create a gallery that exists).
    persistence: ClassVar[Literal["files", "shared"]] = "shared"

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
    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        """The ``k`` nearest items of each row of ``queries``, nearest first.

        ``queries`` go through :meth:`prepared` (checked, unit length for
        cosine; preparing prepared vectors changes nothing). Rows that found
        fewer than ``k`` items are padded as :class:`SearchResults` pads them
        (:meth:`SearchResults.from_lists` builds one from per-query lists).

        Raises:
            ConfigError: ``k`` is not a positive integer.
        """

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

    @classmethod
    def open(cls, **options: Any) -> VectorStore:
        """Reopen an existing gallery (``FaceIndex.connect``); refuse to create one.

        The default builds the store with ``options``; a store that would
        create a missing collection overrides this to refuse instead.
        """
        return cls(**options)

    # -- optional: defaults built on the methods above ----------------------------------
    @property
    def index_name(self) -> str:
        """The kind of index the store searches with (``"flat"``, ``"hnsw"``...)."""
        return str(getattr(self, "index", "flat"))

    def gallery(self) -> Gallery:
        """Every stored item's vector, label and id, as arrays (calibration reads them)."""
        vectors, labels, ids = [], [], []
        for batch in self.items():
            for item in batch:
                vectors.append(item.vector)
                labels.append(item.label)
                ids.append(item.id)
        stacked = np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return Gallery(stacked.astype(np.float32, copy=False), _objects(labels), _objects(ids))

    def search_one(self, vector: np.ndarray, k: int, squared_norm: float) -> list[Match] | None:
        """A fast path for one float32 query, or None to take :meth:`search`.

        ``FaceIndex`` calls it with a query of the store's size whose squared
        norm (given) it has checked to be finite, positive and in float32's
        range; nothing else is checked, for speed. The default has no fast path.
        """
        return None

    def compact(self) -> None:  # noqa: B027 - optional: most stores reclaim space themselves
        """Reclaim the space of removed items now."""

    def describe(self) -> dict[str, Any]:
        """Store-specific facts for :meth:`FaceIndex.info` (JSON-able)."""
        return {"index": self.index_name}

    # -- helpers for implementations -------------------------------------------------
    def columns(
        self,
        ids: Sequence[Any],
        vectors: Any,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None,
        existing: str = "error",
    ) -> tuple[np.ndarray, list[Any], list[Any], list[dict[str, Any]]]:
        """What ``add`` and ``upsert`` are given, checked: prepared vectors and equal-length lists.

        Raises:
            ConfigError: unequal lengths, an unknown ``existing``, or metadata
                nested deeper than ``MAX_METADATA_DEPTH``.
            DuplicateIdError: an id repeated in the call.
        """
        if existing not in EXISTING:
            raise ConfigError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
        array = self.prepared(vectors)
        ids, labels = list(ids), list(labels)
        metadata = [{} for _ in ids] if metadata is None else list(metadata)
        if not len(ids) == len(array) == len(labels) == len(metadata):
            raise ConfigError(
                f"got {len(ids)} ids, {len(array)} vectors, {len(labels)} labels and "
                f"{len(metadata)} metadata dicts: give one of each per item"
            )
        repeated = [i for i, n in Counter(ids).items() if n > 1]
        if repeated:
            raise DuplicateIdError(f"ids repeated in one call: {repeated[:5]}; ids must be unique")
        try:  # writing deeper JSON would raise RecursionError; the list is one more level
            check_json_depth(metadata, MAX_METADATA_DEPTH + 1)
        except ValueError:
            raise ConfigError(
                f"metadata nests lists and dicts deeper than {MAX_METADATA_DEPTH} levels: keep "
                "it flatter"
            ) from None
        return array, ids, labels, metadata

    def prepared(self, vectors: Any) -> np.ndarray:
        """``vectors`` as a checked float32 ``(N, dim)`` array, unit length for cosine.

        Normalised by :func:`siamkit.geometry.prepare`, as training and evaluation do.

        Raises:
            ShapeError: not ``(N, dim)``.
            NonFiniteError: NaN, infinity, a norm FAISS-style float32 search would
                overflow, or for cosine a zero vector
                (:func:`siamkit.geometry.check_directions`).
        """
        array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ShapeError(f"expected (N, {self.dim}) vectors, got {array.shape}")
        check_vectors(array)
        check_directions(array, self.metric, "vectors")
        return np.ascontiguousarray(prepare(array, self.metric))


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def check_k(k: Any) -> int:
    """``k`` as an int, checked: a positive integer (not a bool).

    Raises:
        ConfigError: anything else.

    Examples:
        >>> check_k(3)
        3
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def hits_to_results(hits: StoreHits) -> SearchResults:
    """A pre-0.2 store's :class:`StoreHits` as :class:`SearchResults` (``inf`` distances unused).

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     hits = StoreHits([[1]], [["a"]], np.array([[0.5, np.inf]]), [[{}]])
        >>> hits_to_results(hits)[0]
        [Match(id=1, label='a', distance=0.5, metadata={})]
    """
    return SearchResults.from_lists(hits.ids, hits.labels, hits.distances, hits.metadata or None)


def encode_key(value: Any) -> str:
    """An id or label as the text stores keep: ``i:`` for ints, ``s:`` and percent-encoding for
    strings, so ints stay ints and no quote or backslash reaches a query expression.

    Lone surrogates (a file name in another encoding, as ``os.listdir`` gives
    it) are encoded too, so every id a FaceIndex takes round-trips.

    Examples:
        >>> encode_key(7), encode_key("7"), encode_key('say "hi"')
        ('i:7', 's:7', 's:say%20%22hi%22')
    """
    if isinstance(value, bool) or not isinstance(value, (int, str, np.integer)):
        raise ConfigError(f"ids and labels must be ints or strings, got {value!r}")
    if isinstance(value, str):
        return "s:" + quote(value.encode("utf-8", "surrogatepass"), safe="")
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
        return unquote(body, errors="surrogatepass")
    raise ConfigError(f"{text!r} is not an id or label a siamkit store wrote")


def store_kind(store: VectorStore) -> str:
    """The registered name of ``store``'s class (its class name when unregistered).

    Examples:
        >>> from siamkit.index.stores import FaissStore
        >>> store_kind(FaissStore(2, "cosine"))
        'faiss'
    """
    names = [name for name in store_registry.names() if type(store) is store_registry.get(name)]
    return names[0] if names else type(store).__name__


def store_place(store: VectorStore) -> str:
    """Where a store's gallery is, in words: its collection and address, else its repr.

    Examples:
        >>> from siamkit.index.stores import FaissStore
        >>> store_place(FaissStore(2, "cosine")).startswith("FaissStore(")
        True
    """
    collection, uri = getattr(store, "collection", None), getattr(store, "uri", None)
    return f"{collection!r} at {uri}" if collection and uri else repr(store)


store_registry: Registry[VectorStore] = Registry("store", group="siamkit.stores", base=VectorStore)


def register_store(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering a :class:`VectorStore` subclass under a name.

    Examples:
        >>> "milvus" in store_registry.names()
        True
    """
    return store_registry.register(name, overwrite=overwrite)
