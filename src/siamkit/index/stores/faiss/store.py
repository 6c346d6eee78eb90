"""The FAISS store: a face gallery in this process's memory, saved as checked files.

The default store of :class:`~siamkit.index.FaceIndex`. It keeps every vector,
id, label and metadata dict in a :class:`~siamkit.index.stores.faiss.rows.RowStore` and
a FAISS index over those rows (:mod:`siamkit.index.stores.faiss.engine`): exact for
``"flat"``, approximate for ``"hnsw"``, ``"ivf"`` or a factory string.
Removed rows are flagged, filtered out of searches, and rebuilt away once
they pass 20% of the index. It is thread-safe: searches run in parallel, a
change waits for them.

Its files (:meth:`FaissStore.save`, :meth:`FaissStore.load`) are those of
:mod:`siamkit.index.stores.faiss.files`; the record set with :meth:`set_meta` is saved in
the manifest (a FaceIndex's thresholds and encoder fingerprint).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from siamkit._version import __version__
from siamkit.exceptions import (
    ConfigError,
    DuplicateIdError,
    IndexFileError,
    UnknownIdError,
)
from siamkit.geometry import prepare_query
from siamkit.index.results import Gallery, Match, SearchResults
from siamkit.index.stores.base import StoredItem, VectorStore, check_k, register_store
from siamkit.index.stores.faiss import files as storage
from siamkit.index.stores.faiss.engine import Backend, IndexSpec
from siamkit.index.stores.faiss.rows import RowStore
from siamkit.index.stores.faiss.rwlock import RWLock
from siamkit.index.stores.faiss.search import nearest_one, nearest_rows

#: Removed rows are rebuilt away once they pass this share of the FAISS index.
REBUILD_FRACTION = 0.2
#: What the FAISS store's record keeps in the manifest (the rest goes in the records file).
MANIFEST_META = (
    "threshold",
    "calibration",
    "identify_threshold",
    "fpir_calibration",
    "encoder",
    "extra",
)


@register_store("faiss")
class FaissStore(VectorStore):
    """A gallery in a FAISS index in this process, saved as files.

    Args:
        dim: The vectors' dimension.
        metric: ``"euclidean"`` or ``"cosine"``.
        index: ``"flat"`` (exact), ``"hnsw"`` (HNSW32), ``"ivf"`` (inverted
            lists, trained once 2,048 vectors are in; exact until then) or any
            FAISS ``index_factory`` string.
        ef_search: HNSW search breadth (default 128).
        nprobe: IVF lists visited per query (default: 1/64 of them, at least 8).

    Examples:
        >>> store = FaissStore(2, "euclidean")
        >>> store.add(["a", "b"], np.array([[0, 0], [3, 4]], "float32"), ["ann", "bob"])
        2
        >>> hits = store.search(np.array([[3, 3]], "float32"), k=1)
        >>> hits.labels.tolist(), hits.distances.tolist()
        ([['bob']], [[1.0]])
    """

    persistence = "files"

    def __init__(
        self,
        dim: int,
        metric: str,
        index: str = "flat",
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        super().__init__(dim, metric)
        self.spec = IndexSpec.parse(index)
        self.backend = Backend(self.spec, dim, self.metric, ef_search=ef_search, nprobe=nprobe)
        self.rows = RowStore(dim)
        self.lock = RWLock()
        self._reading = self.lock.read()  # the same guard every time, one call less
        self._meta: dict[str, Any] = {}
        # The folder this store was loaded from, and the save of it it last read or
        # wrote: a save there refuses to overwrite a later one by someone else.
        self._loaded_from: tuple[str, str] | None = None

    @property
    def index_name(self) -> str:
        """The FAISS index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or a factory string."""
        return self.spec.name

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (higher: better recall, slower); None without HNSW."""
        return self.backend.ef_search

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        with self.lock.write():
            self.backend.ef_search = value

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (higher: better recall, slower); None without IVF."""
        return self.backend.nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        with self.lock.write():
            self.backend.nprobe = value

    # -- writing ---------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
        existing: str = "error",
    ) -> int:
        array, ids, labels, metadata = self.columns(ids, vectors, labels, metadata, existing)
        with self.lock.write():
            taken = self._taken(ids)
            if taken and existing == "error":
                raise DuplicateIdError(
                    f"ids already in the index: {taken[:5]}; remove them first, or use "
                    "upsert() to replace them"
                )
            if taken:
                fresh = [i for i, key in enumerate(ids) if key not in self.rows.row_of]
                array = array[fresh]
                ids, labels = [ids[i] for i in fresh], [labels[i] for i in fresh]
                metadata = [metadata[i] for i in fresh]
            self._append(array, ids, labels, metadata)
        return len(ids)

    def upsert(
        self,
        ids: Sequence[Any],
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        array, ids, labels, metadata = self.columns(ids, vectors, labels, metadata)
        with self.lock.write():
            replaced = [self.rows.row_of[i] for i in self._taken(ids)]
            if replaced:
                self.rows.kill(replaced)
            self._append(array, ids, labels, metadata)

    def remove(self, ids: Sequence[Any], missing_ok: bool = False) -> int:
        with self.lock.write():
            row_of = self.rows.row_of
            keys = list(dict.fromkeys(ids))
            missing = [key for key in keys if key not in row_of]
            if missing and not missing_ok:
                raise UnknownIdError(
                    f"ids not in the index: {missing[:5]}; nothing was removed "
                    "(pass missing_ok=True to skip them)"
                )
            rows = [row_of[key] for key in keys if key in row_of]
            if rows:
                self.rows.kill(rows)
                self._maybe_compact()
            return len(rows)

    def compact(self) -> None:
        """Rebuild the FAISS index without removed items now (otherwise done at 20%)."""
        with self.lock.write():
            if self.rows.num_dead:
                self.rows.compact()
                self.backend.rebuild(self.rows.vectors)

    def _taken(self, ids: list[Any]) -> list[Any]:
        row_of = self.rows.row_of
        return [i for i in ids if i in row_of]

    def _append(
        self, array: np.ndarray, ids: list[Any], labels: list[Any], metadata: list[dict[str, Any]]
    ) -> None:
        if not ids:
            return
        self.rows.append(array, ids, labels, metadata)
        self.backend.sync(self.rows.vectors)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        rows = self.rows
        if rows.num_dead and rows.num_dead > REBUILD_FRACTION * rows.num_rows:
            rows.compact()
            self.backend.rebuild(rows.vectors)

    # -- reading ---------------------------------------------------------------------
    def count(self) -> int:
        return self.rows.num_alive

    def existing_ids(self, ids: Sequence[Any]) -> set[Any]:
        with self._reading:
            row_of = self.rows.row_of
            return {i for i in ids if i in row_of}

    def contains(self, item_id: Any) -> bool:
        with self._reading:
            return item_id in self.rows.row_of

    def get(self, ids: Sequence[Any]) -> list[StoredItem]:
        with self._reading:
            rows = self.rows
            out = []
            for item_id in ids:
                row = rows.row_of.get(item_id)
                if row is None:
                    raise UnknownIdError(f"id {item_id!r} is not in the index")
                out.append(
                    StoredItem(
                        rows.id_list[row],
                        rows.label_list[row],
                        dict(rows.metadata[row]),
                        rows.vectors[row].copy(),
                    )
                )
            return out

    def gallery(self) -> Gallery:
        """The live items as read-only arrays, without copying when nothing was removed.

        Rows are only ever written past the end and replaced wholesale by a
        compaction, so views of the rows held now stay this moment's gallery.
        """
        with self._reading:
            rows = self.rows
            if rows.num_dead:
                alive = rows.alive
                return Gallery(rows.vectors[alive], rows.labels[alive], rows.ids[alive])
            return Gallery(_read_only(rows.vectors), _read_only(rows.labels), _read_only(rows.ids))

    def items(self, batch_size: int = 10_000) -> Iterator[list[StoredItem]]:
        gallery = self.gallery()
        with self._reading:
            metadata = self.rows.metadata
            alive = np.flatnonzero(self.rows.alive).tolist()
        for start in range(0, len(alive), batch_size):
            stop = min(start + batch_size, len(alive))
            yield [
                StoredItem(
                    gallery.ids[i],
                    gallery.labels[i],
                    dict(metadata[alive[i]]),
                    gallery.vectors[i].copy(),
                )
                for i in range(start, stop)
            ]

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        queries, k = self.prepared(queries), check_k(k)
        with self._reading:
            found, distances = nearest_rows(self.rows, self.backend, queries, k, self.metric)
            ids, labels = self._lookup(found)
            return SearchResults(ids, labels, distances, found, self.rows.metadata)

    def search_one(self, vector: np.ndarray, k: int, squared_norm: float) -> list[Match] | None:
        """The matches of one checked float32 query, on a short path, else None.

        Issue #3 allows a single query 50 µs on top of FAISS, and after FAISS has
        swept the CPU caches every NumPy call costs microseconds. So nothing is
        checked twice, and the distances of FAISS's rows are recomputed in a few
        calls (:func:`nearest_one`): the numbers a batch search, verify and
        calibration give for the same pairs. None when this path cannot answer:
        rows removed, not built, or ``k`` not below the size.
        """
        with self._reading:
            rows, backend = self.rows, self.backend
            if rows.num_dead or backend.index is None or k >= rows.num_rows:
                return None
            query = prepare_query(vector, self.metric)
            _, found = backend.search(query, k)
            return self.match_list(*nearest_one(rows.vectors, query, found[0], self.metric))

    def match_list(self, found: list[int], distances: list[float]) -> list[Match]:
        """One query's matches; rows of -1 (nothing found) are left out."""
        rows = self.rows
        ids, labels, metadata = rows.id_list, rows.label_list, rows.metadata
        # {} for no metadata: a dict() call per match is microseconds on a cold cache.
        return [
            Match(ids[r], labels[r], d, dict(metadata[r]) if metadata[r] else {})
            for r, d in zip(found, distances, strict=True)
            if r >= 0
        ]

    def _lookup(self, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids and labels of ``found`` rows, None where a row is -1."""
        rows = self.rows
        missing = found < 0
        if not missing.any():
            return rows.ids[found], rows.labels[found]
        safe = np.where(missing, 0, found)
        ids, labels = rows.ids[safe], rows.labels[safe]
        ids[missing] = None
        labels[missing] = None
        return ids, labels

    def describe(self) -> dict[str, Any]:
        with self._reading:
            return {
                "index": self.spec.name,
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
                "trained": self.backend.index is not None,
                "removed_pending": self.rows.num_dead,
            }

    # -- the record and the files ----------------------------------------------------
    def get_meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def set_meta(self, meta: dict[str, Any]) -> None:
        self._meta = dict(meta)

    def save(self, path: str | os.PathLike, *, timeout: float = storage.LOCK_TIMEOUT) -> Path:
        """Save into folder ``path``, atomically: a crash leaves the old or the new files.

        Writes the vectors (npy), ids, labels and metadata (JSON), the FAISS
        index and a manifest with versions, geometry, the record and each
        file's checksum (:mod:`siamkit.index.stores.faiss.files`). Never pickle. Holds the
        folder's write lock meanwhile, waiting up to ``timeout`` s for another
        writer.

        Raises:
            IndexFileError: ``path`` holds something else, or it is the folder
                this store was loaded from and another save replaced that
                index since (saving would lose its changes; nothing is written).
            LockTimeoutError: another process held the folder's lock past ``timeout``.
        """
        directory = Path(path)
        place = os.path.realpath(directory)
        loaded = self._loaded_from
        expected = loaded[1] if loaded is not None and loaded[0] == place else None
        with self._reading:
            rows, backend = self.rows, self.backend
            records = {
                "ids": rows.ids.tolist(),
                "labels": rows.labels.tolist(),
                "metadata": rows.metadata,
                "removed": np.flatnonzero(~rows.alive).tolist(),
                "next_id": int(self._meta.get("next_id", 0)),
            }
            keep_faiss = backend.index is not None and self.spec.kind != "flat"
            token = storage.save_index_files(
                directory,
                self._manifest(),
                rows.vectors,
                records,
                backend.write if keep_faiss else None,
                expected=expected,
                timeout=timeout,
            )
        if expected is not None:
            self._loaded_from = (place, token)
        return directory

    def _manifest(self) -> dict[str, Any]:
        meta = self._meta
        return {
            "format": storage.FORMAT_NAME,
            "format_version": storage.FORMAT_VERSION,
            "siamkit_version": __version__,
            "faiss_version": faiss.__version__,
            "dim": self.dim,
            "metric": self.metric,
            "normalised": self.metric == "cosine",
            "index": self.spec.name,
            "params": self.backend.state(),
            "rows": self.rows.num_rows,
            "count": self.rows.num_alive,
            **{key: meta.get(key, {} if key == "extra" else None) for key in MANIFEST_META},
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaissStore:
        """A store from files :meth:`save` wrote, every file checked; its record in ``get_meta()``.

        Raises:
            IndexFileError: a file is missing, truncated, corrupted (checksum),
                inconsistent, or from a newer siamkit.
        """
        directory = Path(path)
        manifest, vectors, records, faiss_index = storage.load_index_files(directory)
        params = manifest["params"]
        try:
            store = cls(
                manifest["dim"],
                manifest["metric"],
                manifest["index"],
                ef_search=params["ef_search"],
                nprobe=params["nprobe"],
            )
            store._restore(manifest, vectors, records, faiss_index)
        except (ConfigError, ValueError) as err:
            raise IndexFileError(
                f"the face index in {directory} is inconsistent ({err}); save or build it again"
            ) from None
        store._loaded_from = (os.path.realpath(directory), storage.manifest_token(manifest))
        return store

    def _restore(
        self, manifest: dict[str, Any], vectors: np.ndarray, records: dict[str, Any], index: Any
    ) -> None:
        """Fill a new store from checked files (see :mod:`siamkit.index.stores.faiss.manifest`)."""
        rows, backend = self.rows, self.backend
        rows.append(vectors, records["ids"], records["labels"], records["metadata"])
        rows.restore_removed(records["removed"])
        if index is not None:
            backend.attach(index, manifest["params"]["trained_rows"], rows.num_rows)
        elif self.spec.kind == "flat" or 0 < rows.num_rows < backend.min_train():
            backend.rebuild(rows.vectors)  # cheap: no FAISS file was saved for these
        elif rows.num_rows:
            raise ValueError(f"the FAISS file of this {self.spec.name!r} index is missing")
        self._meta = {key: manifest.get(key) for key in MANIFEST_META}
        self._meta["extra"] = dict(manifest["extra"])
        self._meta["next_id"] = records["next_id"]

    def __repr__(self) -> str:
        return f"FaissStore(dim={self.dim}, metric={self.metric!r}, index={self.spec.name!r})"


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
