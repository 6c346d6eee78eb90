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
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from siamkit._manifest import parse_json
from siamkit.exceptions import (
    ConfigError,
    DuplicateIdError,
    EncoderMismatchError,
    GeometryError,
    IndexFileError,
    MissingExtraError,
    UnknownIdError,
)
from siamkit.geometry import index_distances
from siamkit.index.results import SearchResults
from siamkit.index.stores.base import (
    StoredItem,
    VectorStore,
    check_k,
    decode_key,
    encode_key,
    register_store,
)
from siamkit.index.stores.settings import HNSW_EF_SEARCH, ivf_probes

#: siamkit's index kinds and the Milvus index types (with build parameters) they map to.
INDEX_KINDS: dict[str, tuple[str, dict[str, int]]] = {
    "flat": ("FLAT", {}),
    "hnsw": ("HNSW", {"M": 32, "efConstruction": 200}),
    "ivf": ("IVF_FLAT", {"nlist": 1024}),
}
_MILVUS_METRICS = {"euclidean": "L2", "cosine": "COSINE"}
_SIAMKIT_METRICS = {value: key for key, value in _MILVUS_METRICS.items()}
META_PROPERTY = "siamkit.meta"
_MAX_KEY = 1024  # characters of an encoded id or label (``encode_key``: ASCII)
_INT64 = (-(2**63), 2**63 - 1)  # what a Milvus JSON field holds of an integer
_BATCH = 1_000  # rows per insert request


#: The collection names a Milvus server takes (Milvus Lite takes more: a gallery
#: made there under another name could not move to a server).
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def check_collection_name(name: Any) -> str:
    """``name`` if a Milvus server takes it as a collection name, else a ``ConfigError``.

    Milvus's rule: a letter or an underscore first, then letters, digits and
    underscores (ASCII), 255 characters at most. Milvus Lite accepts more
    (spaces, ``;``, non-ASCII letters), so siamkit applies the server's rule
    everywhere, before connecting: a gallery made in a Lite file can move to
    a server under the same name.

    Examples:
        >>> check_collection_name("faces_2024")
        'faces_2024'
        >>> check_collection_name("faces;drop")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: 'faces;drop' is not a Milvus collection name: ...
    """
    if isinstance(name, str) and COLLECTION_NAME.fullmatch(name):
        return name
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."
    raise ConfigError(
        f"{shown} is not a Milvus collection name: use a letter or an underscore first, then "
        "letters, digits and underscores (ASCII, no spaces), at most 255 characters, e.g. "
        "'faces_2024'"
    )


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
        IndexFileError: the server cannot be reached, or ``uri`` is not one
            (the message names the URI).
        MissingExtraError: pymilvus is not installed.
    """
    client_class = _client_class()
    from pymilvus.exceptions import ConnectionConfigException

    last: Exception | None = None
    for attempt in range(max(1, retries)):
        try:
            # Quiet: Milvus Lite logs its own traceback when it cannot open a file.
            with _quiet_pymilvus():
                return client_class(uri=uri, timeout=timeout)
        except ConnectionConfigException as err:
            # A malformed URI, or a Lite file in a missing folder: trying again cannot help.
            raise IndexFileError(
                f"{uri} is not a Milvus URI siamkit can open ({_first_line(err)}): give a "
                "Milvus Lite file ending in .db in an existing folder, or http://host:19530"
            ) from None
        except Exception as err:  # pymilvus raises its own and gRPC's types
            last = err
            time.sleep(wait * (2**attempt))
    raise IndexFileError(
        f"cannot reach Milvus at {uri} after {max(1, retries)} tries ({_first_line(last)}); "
        "check the URI and that the server is running"
    )


def _first_line(err: BaseException | None) -> str:
    # pymilvus's errors carry the server's words in .message; str() wraps them in a repr.
    text = str(getattr(err, "message", None) or err or "no answer").strip().splitlines()
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
        # Before connecting: a Lite file is created on connection.
        self.uri, self.collection, self.index = str(uri), check_collection_name(collection), index
        self._ef_search = _positive("ef_search", ef_search, HNSW_EF_SEARCH)
        self._nprobe = _positive("nprobe", nprobe, ivf_probes(INDEX_KINDS["ivf"][1]["nlist"]))
        self.consistency = consistency
        self._owns_client = client is None  # a client passed in is the caller's to close
        self.client = client if client is not None else connect_client(self.uri, retries)
        #: Whether this object created the collection (False: it existed).
        self.created = False
        if self._call("look up", "has_collection"):
            found_dim, found_metric = self._existing_geometry()
            _check_geometry(self, found_dim, found_metric, dim, metric)
            super().__init__(found_dim, found_metric)
            # A collection another process wrote may be released (not in memory):
            # searches and queries need it loaded.
            self._call("load", "load_collection")
        else:
            if not create or dim is None or metric is None:
                raise IndexFileError(
                    f"Milvus at {self.uri} has no collection {self.collection!r}"
                    + ("; give dim and metric to create it" if create else "")
                )
            super().__init__(dim, metric)
            self._create()
            self.created = True

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(collection, ...)``, quiet; a Milvus failure as a one-line error.

        Raises:
            IndexFileError: Milvus refused (the collection dropped meanwhile, a
                server limit, the server gone), naming the collection and the reason.
        """
        with self._guard(what):
            return getattr(self.client, method)(self.collection, *args, **kwargs)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Quiet pymilvus; what Milvus refuses raised as an IndexFileError (see :meth:`_call`)."""
        from pymilvus.exceptions import MilvusException

        try:
            with _quiet_pymilvus():
                yield
        except MilvusException as err:
            raise IndexFileError(
                f"Milvus at {self.uri} could not {what} the collection {self.collection!r} "
                f"({_first_line(err)})"
            ) from None

    @property
    def ef_search(self) -> int:
        """HNSW search breadth (higher: better recall, slower); None resets the default."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = _positive("ef_search", value, HNSW_EF_SEARCH)

    @property
    def nprobe(self) -> int:
        """IVF lists visited per query (higher: better recall, slower); None resets the default."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._nprobe = _positive("nprobe", value, ivf_probes(INDEX_KINDS["ivf"][1]["nlist"]))

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
        # Quiet: it waits for the index through a call Lite does not serve.
        self._call("create", "create_collection", schema=schema, index_params=indexes,
                   consistency_level=self.consistency)  # fmt: skip
        self.set_meta({})

    def _existing_geometry(self) -> tuple[int, str]:
        description = self._call("describe", "describe_collection")
        names = {f["name"]: f for f in description.get("fields", [])}
        if not {"pk", "vector", "label", "metadata"} <= set(names):
            raise IndexFileError(
                f"the Milvus collection {self.collection!r} at {self.uri} is not a siamkit "
                "gallery (it lacks the pk, vector, label and metadata fields)"
            )
        dim = int(names["vector"]["params"]["dim"])
        described = self._call("describe", "describe_index", "vector")
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
            self._call("insert into", "insert", fresh[start : start + _BATCH])
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
            self._call("upsert into", "upsert", rows[start : start + _BATCH])

    def _rows(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None,
        existing: str = "error",
    ) -> list[dict[str, Any]]:
        array, ids, labels, metadata = self.columns(ids, vectors, labels, metadata, existing)
        keys, label_keys = _keys(ids, "id"), _keys(labels, "label")
        for position, meta in enumerate(metadata):
            _check_json(meta, position)
        return [
            {"pk": key, "vector": vector.tolist(), "label": label, "metadata": meta}
            for key, vector, label, meta in zip(keys, array, label_keys, metadata, strict=True)
        ]

    def remove(self, ids: Sequence[Any], missing_ok: bool = False) -> int:
        present = self.existing_ids(list(ids))
        missing = [i for i in ids if i not in present]
        if missing and not missing_ok:
            raise UnknownIdError(f"no item with id {missing[0]!r} in the gallery")
        if present:
            self._call("delete from", "delete", ids=[encode_key(i) for i in present])
        return len(present)

    # -- reading -----------------------------------------------------------------------
    def existing_ids(self, ids: Sequence[Any]) -> set[Any]:
        found: set[Any] = set()
        keys = [encode_key(i) for i in ids]
        for start in range(0, len(keys), _BATCH):
            rows = self._call("query", "query", ids=keys[start : start + _BATCH],
                              output_fields=["pk"])  # fmt: skip
            found.update(decode_key(row["pk"]) for row in rows)
        return found

    def get(self, ids: Sequence[Any]) -> list[StoredItem]:
        keys = [encode_key(i) for i in ids]
        rows = self._call("query", "query", ids=keys,
                          output_fields=["pk", "vector", "label", "metadata"])  # fmt: skip
        by_key = {row["pk"]: row for row in rows}
        missing = [i for i, key in zip(ids, keys, strict=True) if key not in by_key]
        if missing:
            raise UnknownIdError(f"no item with id {missing[0]!r} in the gallery")
        return [_item(by_key[key]) for key in keys]

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        array, k = self.prepared(queries), check_k(k)
        results = self._call(
            "search",
            "search",
            data=array.tolist(),
            limit=int(k),
            output_fields=["label", "metadata", "vector"],
            search_params={"metric_type": _MILVUS_METRICS[self.metric], "params": self._params()},
        )
        distances = np.full((len(array), int(k)), np.inf, dtype=np.float32)
        ids, labels, metadata = [], [], []
        for row, hits in enumerate(results):
            hits = list(hits)
            found, order = self._distances(array[row], hits)
            distances[row, : len(hits)] = found
            hits = [hits[i] for i in order]
            ids.append([decode_key(hit["pk"] if "pk" in hit else hit["id"]) for hit in hits])
            labels.append([decode_key(hit["entity"]["label"]) for hit in hits])
            metadata.append([hit["entity"].get("metadata") or {} for hit in hits])
        return SearchResults.from_lists(ids, labels, distances, metadata)

    def _distances(self, query: np.ndarray, hits: list[Any]) -> tuple[np.ndarray, list[int]]:
        """The hits' distances, nearest first, and the order that puts them so.

        Milvus's own scores (squared L2, cosine similarity, in its float32
        arithmetic) only pick the hits: the distances are worked out again from
        the stored vectors by :func:`siamkit.geometry.index_distances`, the
        numbers of the FAISS store, verify and calibration.
        """
        if not hits:
            return np.zeros(0, np.float32), []
        vectors = np.array([hit["entity"]["vector"] for hit in hits], dtype=np.float32)
        found = index_distances(vectors, query[None], self.metric)
        order = np.argsort(found, kind="stable")  # ties keep Milvus's order
        return found[order], order.tolist()

    def _params(self) -> dict[str, int]:
        # The same search breadth as the FAISS store's, so recall is comparable.
        if self.index == "hnsw":
            return {"ef": max(self.ef_search, 1)}
        if self.index == "ivf":
            return {"nprobe": self.nprobe}
        return {}

    def count(self) -> int:
        rows = self._call("count", "query", filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def items(self, batch_size: int = 10_000) -> Iterator[list[StoredItem]]:
        iterator = self._call("read", "query_iterator", batch_size=batch_size, filter="",
                              output_fields=["pk", "vector", "label", "metadata"])  # fmt: skip
        try:
            while True:
                with self._guard("read"):
                    rows = iterator.next()
                if not rows:
                    break
                yield [_item(row) for row in rows]
        finally:
            iterator.close()

    def compact(self) -> None:
        """Seal what was inserted (``flush``): searches after a bulk insert get fast again."""
        self._call("flush", "flush")

    # -- the collection's own record ---------------------------------------------------
    def get_meta(self) -> dict[str, Any]:
        properties = self._call("describe", "describe_collection").get("properties") or {}
        text = properties.get(META_PROPERTY)
        if not text:
            return {}
        try:
            meta = parse_json(text)  # bounded: a hand-set record nested deep is refused
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise IndexFileError(
                f"the siamkit record of the Milvus collection {self.collection!r} is corrupted"
            )
        return meta

    def set_meta(self, meta: dict[str, Any]) -> None:
        text = json.dumps(meta, sort_keys=True)
        self._call("record in", "alter_collection_properties", properties={META_PROPERTY: text})

    def drop(self) -> None:
        """Delete the whole collection (the gallery and its record)."""
        self._call("drop", "drop_collection")

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return (
            f"MilvusStore({self.uri!r}, collection={self.collection!r}, dim={self.dim}, "
            f"metric={self.metric!r})"
        )


class _Quiet:
    """Who is inside :func:`_quiet_pymilvus`: the first one in lowers the loggers, the last
    one out restores them (threads overlap; each restoring its own would leave them wrong)."""

    lock = threading.Lock()
    depth = 0
    levels: list[int] = []  # noqa: RUF012 - shared on purpose, guarded by the lock


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """Hold back what pymilvus and an in-process Milvus Lite log: a refused call's ERROR
    with its traceback (siamkit raises one line instead), Milvus Lite's own traceback of
    a request it failed (its gRPC servicer logs it, in a thread of this process), and the
    iterator asking for a timestamp Lite does not serve (a warning, and gRPC's traceback
    of "Method not implemented", after which it carries on). The library stays quiet
    unless asked."""
    loggers = [logging.getLogger(name) for name in ("pymilvus", "grpc._server", "milvus_lite")]
    with _Quiet.lock:
        if _Quiet.depth == 0:
            _Quiet.levels = [logger.level for logger in loggers]
            for logger in loggers:
                logger.setLevel(logging.CRITICAL)
        _Quiet.depth += 1
    try:
        yield
    finally:
        with _Quiet.lock:
            _Quiet.depth -= 1
            if _Quiet.depth == 0:
                for logger, level in zip(loggers, _Quiet.levels, strict=True):
                    logger.setLevel(level)


def _positive(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _keys(values: list[Any], what: str) -> list[str]:
    """``values`` encoded (:func:`encode_key`), each checked to fit a Milvus key field."""
    keys = [encode_key(value) for value in values]
    for value, key in zip(values, keys, strict=True):
        if len(key) > _MAX_KEY:
            raise ConfigError(
                f"the {what} {str(value)[:40]!r}... is {len(key)} characters long once encoded "
                f"for Milvus, which keeps at most {_MAX_KEY}: use a shorter {what} (non-ASCII "
                "characters take 6 to 12 each)"
            )
    return keys


def _check_json(value: Any, position: int) -> None:
    """Refuse metadata a Milvus JSON field cannot hold: integers past 64 bits, text that
    is not UTF-8 (a file name in another encoding). The FAISS store keeps both."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not _INT64[0] <= item <= _INT64[1]:
                raise ConfigError(
                    f"metadata of item {position} holds the integer {item}, past the 64 bits a "
                    "Milvus JSON field keeps: store it as a string"
                )
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"metadata of item {position} holds text that is not valid UTF-8 "
                    f"({item!r}: a file name in another encoding?), which Milvus cannot keep"
                ) from None


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
