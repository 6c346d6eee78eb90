"""A face gallery in Milvus: :class:`MilvusStore`, one collection per gallery.

Milvus is a distributed vector database (sharded, replicated); Milvus Lite,
which ``pip install 'siamkit[milvus]'`` brings, runs the same client API on a
local file. The same code talks to a Lite file, a standalone server or a
cluster: only the URI changes (``"faces.db"``, ``"http://host:19530"``).

Ids and labels are kept as JSON text (so ints stay ints), metadata as a JSON
field, and the collection's own record (calibration, the encoder's
fingerprint) in a collection property. Reads are strongly consistent by
default: a search right after an add sees it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from siamkit.exceptions import (
    ConfigError,
    DuplicateIdError,
    EncoderMismatchError,
    GeometryError,
    IndexFileError,
    MissingExtraError,
    ShapeError,
    UnknownIdError,
)
from siamkit.index.backends import HNSW_EF_SEARCH, ivf_probes
from siamkit.index.store import (
    StoredItem,
    StoreHits,
    VectorStore,
    decode_key,
    encode_key,
    register_store,
)

#: siamkit's index kinds and the Milvus index types (with build parameters) they map to.
INDEX_KINDS: dict[str, tuple[str, dict[str, int]]] = {
    "flat": ("FLAT", {}),
    "hnsw": ("HNSW", {"M": 32, "efConstruction": 200}),
    "ivf": ("IVF_FLAT", {"nlist": 1024}),
}
_MILVUS_METRICS = {"euclidean": "L2", "cosine": "COSINE"}
_SIAMKIT_METRICS = {value: key for key, value in _MILVUS_METRICS.items()}
META_PROPERTY = "siamkit.meta"
_MAX_KEY = 1024  # characters of a JSON-encoded id or label
_BATCH = 1_000  # rows per insert request


def _client_class() -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MissingExtraError(
            "the Milvus store needs pymilvus (and milvus-lite for a local file): "
            "pip install 'siamkit[milvus]'"
        ) from None
    return MilvusClient


def connect_client(uri: str, retries: int = 3, timeout: float = 10.0, wait: float = 0.5) -> Any:
    """A ``MilvusClient`` for ``uri``, trying ``retries`` times before a clear error.

    Raises:
        IndexFileError: the server cannot be reached (the message names the URI).
        MissingExtraError: pymilvus is not installed.
    """
    client_class = _client_class()
    last: Exception | None = None
    for attempt in range(max(1, retries)):
        try:
            return client_class(uri=uri, timeout=timeout)
        except Exception as err:  # pymilvus raises its own and gRPC's types
            last = err
            time.sleep(wait * (2**attempt))
    raise IndexFileError(
        f"cannot reach Milvus at {uri} after {max(1, retries)} tries ({_first_line(last)}); "
        "check the URI and that the server is running"
    )


def _first_line(err: BaseException | None) -> str:
    text = str(err or "no answer").strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


@register_store("milvus")
class MilvusStore(VectorStore):
    """A face gallery kept in a Milvus collection.

    Args:
        uri: A Milvus Lite file (``"faces.db"``) or a server (``"http://host:19530"``).
        collection: The collection's name.
        dim: The vectors' dimension; None to take an existing collection's.
        metric: ``"euclidean"`` or ``"cosine"``; None to take an existing collection's.
        index: ``"flat"``, ``"hnsw"`` or ``"ivf"`` (Milvus FLAT, HNSW, IVF_FLAT),
            used when the collection is created.
        consistency: Milvus consistency level (``"Strong"``: reads see every write).
        retries: Connection attempts before giving up.
        client: An existing ``MilvusClient`` to use instead of connecting.
        create: Create the collection when it does not exist (else refuse).
        ef_search: HNSW search breadth (default 128, as the FAISS store's).
        nprobe: IVF lists visited per query (default: 1/64 of them, at least 8, as the
            FAISS store's).

    Raises:
        EncoderMismatchError: the collection exists with another dimension.
        GeometryError: the collection exists with another metric.
        IndexFileError: the collection does not exist and ``dim``/``metric`` are
            not given, or it is not a siamkit collection, or Milvus is unreachable.

    Examples:
        >>> store = MilvusStore("faces.db", "faces", dim=128, metric="cosine")  # doctest: +SKIP
        >>> store.add([1, 2], vectors, ["alice", "bob"])  # doctest: +SKIP
        2
    """

    def __init__(
        self,
        uri: str,
        collection: str = "faces",
        dim: int | None = None,
        metric: str | None = None,
        index: str = "flat",
        consistency: str = "Strong",
        retries: int = 3,
        client: Any = None,
        create: bool = True,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        if index not in INDEX_KINDS:
            raise ConfigError(f"index must be one of {', '.join(INDEX_KINDS)}, got {index!r}")
        self.uri, self.collection, self.index = str(uri), str(collection), index
        self.ef_search = _positive("ef_search", HNSW_EF_SEARCH if ef_search is None else ef_search)
        self.nprobe = _positive("nprobe", ivf_probes(INDEX_KINDS["ivf"][1]["nlist"])
                                if nprobe is None else nprobe)  # fmt: skip
        self.consistency = consistency
        self._owns_client = client is None  # a client passed in is the caller's to close
        self.client = client if client is not None else connect_client(self.uri, retries)
        #: Whether this object created the collection (False: it existed).
        self.created = False
        if self.client.has_collection(self.collection):
            found_dim, found_metric = self._existing_geometry()
            _check_geometry(self, found_dim, found_metric, dim, metric)
            super().__init__(found_dim, found_metric)
            # A collection another process wrote may be released (not in memory):
            # searches and queries need it loaded.
            with _quiet_pymilvus():
                self.client.load_collection(self.collection)
        else:
            if not create or dim is None or metric is None:
                raise IndexFileError(
                    f"Milvus at {self.uri} has no collection {self.collection!r}"
                    + ("; give dim and metric to create it" if create else "")
                )
            super().__init__(dim, metric)
            self._create()
            self.created = True

    # -- the collection ----------------------------------------------------------------
    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=_MAX_KEY)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("label", DataType.VARCHAR, max_length=_MAX_KEY)
        schema.add_field("metadata", DataType.JSON)
        kind, params = INDEX_KINDS[self.index]
        indexes = self.client.prepare_index_params()
        indexes.add_index(
            field_name="vector",
            index_type=kind,
            metric_type=_MILVUS_METRICS[self.metric],
            params=params,
        )
        with _quiet_pymilvus():  # it waits for the index through a call Lite does not serve
            self.client.create_collection(
                self.collection,
                schema=schema,
                index_params=indexes,
                consistency_level=self.consistency,
            )
        self.set_meta({})

    def _existing_geometry(self) -> tuple[int, str]:
        description = self.client.describe_collection(self.collection)
        names = {f["name"]: f for f in description.get("fields", [])}
        if not {"pk", "vector", "label", "metadata"} <= set(names):
            raise IndexFileError(
                f"the Milvus collection {self.collection!r} at {self.uri} is not a siamkit "
                "gallery (it lacks the pk, vector, label and metadata fields)"
            )
        dim = int(names["vector"]["params"]["dim"])
        described = self.client.describe_index(self.collection, "vector")
        metric = described.get("metric_type")
        kinds = {kind: name for name, (kind, _) in INDEX_KINDS.items()}
        self.index = kinds.get(described.get("index_type"), self.index)
        if metric not in _SIAMKIT_METRICS:
            raise GeometryError(
                f"the Milvus collection {self.collection!r} measures {metric}, which is neither "
                "of siamkit's geometries (L2 for euclidean, COSINE for cosine)"
            )
        return dim, _SIAMKIT_METRICS[metric]

    @classmethod
    def open(cls, **options: Any) -> MilvusStore:
        """Reopen an existing collection: its dimension and metric are read from it.

        Raises:
            IndexFileError: no such collection, or Milvus unreachable.
        """
        return cls(**{"create": False, **options})

    @property
    def index_name(self) -> str:
        """siamkit's name of the collection's index kind (``"flat"``, ``"hnsw"``, ``"ivf"``)."""
        return self.index

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "store": "milvus", "uri": self.uri,
                "collection": self.collection, "consistency": self.consistency,
                "ef_search": self.ef_search if self.index == "hnsw" else None,
                "nprobe": self.nprobe if self.index == "ivf" else None}  # fmt: skip

    def prepared(self, vectors: Any) -> np.ndarray:
        array = super().prepared(vectors)
        # Milvus's COSINE divides by the norms: a zero vector would come back as NaN.
        if self.metric == "cosine" and not np.einsum("ij,ij->i", array, array).all():
            raise ShapeError(
                "a zero vector has no direction: cosine cannot compare it (drop it, or use "
                "an encoder that normalises its embeddings)"
            )
        return array

    # -- writing -----------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
        existing: str = "error",
    ) -> int:
        rows = self._rows(ids, vectors, labels, metadata, existing)
        present = self.existing_ids(list(ids))
        if present and existing == "error":
            shown = ", ".join(map(repr, sorted(present, key=str)[:5]))
            raise DuplicateIdError(
                f"ids already in the gallery: {shown}; use upsert() to replace them, or "
                "existing='skip' to keep them (e.g. when re-running an interrupted enrolment)"
            )
        taken = {encode_key(i) for i in present}
        fresh = [row for row in rows if row["pk"] not in taken]
        for start in range(0, len(fresh), _BATCH):
            self.client.insert(self.collection, fresh[start : start + _BATCH])
        return len(fresh)

    def upsert(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        rows = self._rows(ids, vectors, labels, metadata)
        for start in range(0, len(rows), _BATCH):
            self.client.upsert(self.collection, rows[start : start + _BATCH])

    def _rows(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None,
        existing: str = "error",
    ) -> list[dict[str, Any]]:
        array, ids, labels, metadata = self.columns(ids, vectors, labels, metadata, existing)
        keys = [encode_key(i) for i in ids]
        return [
            {"pk": key, "vector": vector.tolist(), "label": encode_key(label), "metadata": meta}
            for key, vector, label, meta in zip(keys, array, labels, metadata, strict=True)
        ]

    def remove(self, ids: Sequence[Any], missing_ok: bool = False) -> int:
        present = self.existing_ids(list(ids))
        missing = [i for i in ids if i not in present]
        if missing and not missing_ok:
            raise UnknownIdError(f"no item with id {missing[0]!r} in the gallery")
        if present:
            self.client.delete(self.collection, ids=[encode_key(i) for i in present])
        return len(present)

    # -- reading -----------------------------------------------------------------------
    def existing_ids(self, ids: Sequence[Any]) -> set[Any]:
        found: set[Any] = set()
        keys = [encode_key(i) for i in ids]
        for start in range(0, len(keys), _BATCH):
            rows = self.client.query(
                self.collection, ids=keys[start : start + _BATCH], output_fields=["pk"]
            )
            found.update(decode_key(row["pk"]) for row in rows)
        return found

    def get(self, ids: Sequence[Any]) -> list[StoredItem]:
        keys = [encode_key(i) for i in ids]
        rows = self.client.query(
            self.collection, ids=keys, output_fields=["pk", "vector", "label", "metadata"]
        )
        by_key = {row["pk"]: row for row in rows}
        missing = [i for i, key in zip(ids, keys, strict=True) if key not in by_key]
        if missing:
            raise UnknownIdError(f"no item with id {missing[0]!r} in the gallery")
        return [_item(by_key[key]) for key in keys]

    def search(self, queries: np.ndarray, k: int) -> StoreHits:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        array = self.prepared(queries)
        results = self.client.search(
            self.collection,
            data=array.tolist(),
            limit=int(k),
            output_fields=["label", "metadata"],
            search_params={"metric_type": _MILVUS_METRICS[self.metric], "params": self._params()},
        )
        distances = np.full((len(array), int(k)), np.inf, dtype=np.float32)
        ids, labels, metadata = [], [], []
        for row, hits in enumerate(results):
            hits = list(hits)
            raw = np.array([hit["distance"] for hit in hits], dtype=np.float64)
            distances[row, : len(hits)] = self._to_distances(raw)
            ids.append([decode_key(hit["pk"] if "pk" in hit else hit["id"]) for hit in hits])
            labels.append([decode_key(hit["entity"]["label"]) for hit in hits])
            metadata.append([hit["entity"].get("metadata") or {} for hit in hits])
        return StoreHits(ids, labels, distances, metadata)

    def _params(self) -> dict[str, int]:
        # The same search breadth as the FAISS store's, so recall is comparable.
        if self.index == "hnsw":
            return {"ef": max(self.ef_search, 1)}
        if self.index == "ivf":
            return {"nprobe": self.nprobe}
        return {}

    def _to_distances(self, raw: np.ndarray) -> np.ndarray:
        # Milvus reports squared L2 and cosine *similarity*; siamkit's geometry is
        # ||a - b|| and 1 - cos, so thresholds mean the same on every store.
        if self.metric == "euclidean":
            return np.sqrt(np.maximum(raw, 0.0))
        return np.clip(1.0 - raw, 0.0, 2.0)

    def count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def items(self, batch_size: int = 10_000) -> Iterator[list[StoredItem]]:
        with _quiet_pymilvus():
            iterator = self.client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter="",
                output_fields=["pk", "vector", "label", "metadata"],
            )
        try:
            while True:
                with _quiet_pymilvus():
                    rows = iterator.next()
                if not rows:
                    break
                yield [_item(row) for row in rows]
        finally:
            iterator.close()

    def compact(self) -> None:
        """Seal what was inserted (``flush``): searches after a bulk insert get fast again."""
        self.client.flush(self.collection)

    # -- the collection's own record ---------------------------------------------------
    def get_meta(self) -> dict[str, Any]:
        properties = self.client.describe_collection(self.collection).get("properties") or {}
        text = properties.get(META_PROPERTY)
        if not text:
            return {}
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise IndexFileError(
                f"the siamkit record of the Milvus collection {self.collection!r} is corrupted"
            )
        return meta

    def set_meta(self, meta: dict[str, Any]) -> None:
        self.client.alter_collection_properties(
            self.collection, properties={META_PROPERTY: json.dumps(meta, sort_keys=True)}
        )

    def drop(self) -> None:
        """Delete the whole collection (the gallery and its record)."""
        self.client.drop_collection(self.collection)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return (
            f"MilvusStore({self.uri!r}, collection={self.collection!r}, dim={self.dim}, "
            f"metric={self.metric!r})"
        )


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """Hold back what pymilvus and an in-process Milvus Lite log when the iterator asks for a
    timestamp Lite does not serve (a warning, and gRPC's traceback of "Method not
    implemented"): the iterator then carries on, and the library stays quiet unless asked."""
    loggers = [logging.getLogger("pymilvus"), logging.getLogger("grpc._server")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _item(row: dict[str, Any]) -> StoredItem:
    return StoredItem(
        id=decode_key(row["pk"]),
        label=decode_key(row["label"]),
        metadata=row.get("metadata") or {},
        vector=np.asarray(row["vector"], dtype=np.float32),
    )


def _check_geometry(
    store: MilvusStore, dim: int, metric: str, want_dim: int | None, want_metric: str | None
) -> None:
    if want_dim is not None and int(want_dim) != dim:
        raise EncoderMismatchError(
            f"the Milvus collection {store.collection!r} at {store.uri} holds {dim}-d vectors, "
            f"not {want_dim}-d: use another collection for this encoder"
        )
    if want_metric is not None and want_metric != metric:
        raise GeometryError(
            f"the Milvus collection {store.collection!r} at {store.uri} measures {metric} "
            f"distance, not {want_metric}: use another collection for this encoder"
        )
