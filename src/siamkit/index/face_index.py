"""``FaceIndex``: a face gallery with identify, verify and calibration, over a store.

FaceIndex is a façade. It turns images into embeddings with the encoder,
checks what it is given, assigns ids, and decides (:mod:`siamkit.index.decisions`)
and calibrates (:mod:`siamkit.index.calibration`); the items live in a
:class:`~siamkit.index.stores.base.VectorStore`: the FAISS store in this process
(default, saved as files) or a Milvus collection (``store="milvus"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit.exceptions import (
    ConfigError,
    EmptyIndexError,
    GeometryError,
    ShapeError,
    UnknownIdError,
)
from siamkit.geometry import check_directions, prepare
from siamkit.index import gallery_record as _record
from siamkit.index._inputs import check_id, check_label, fast_query_norm, to_embeddings
from siamkit.index.calibration import MAX_PAIRS, calibrate_gallery, pair_distances
from siamkit.index.decisions import decision_threshold, verification, vote
from siamkit.index.enrolment import enrol_folder, id_list, insert_items
from siamkit.index.gallery_record import GalleryRecord, SharedRecord
from siamkit.index.persistence import (
    connect_index,
    describe_index,
    load_index,
    save_index,
    update_index,
)
from siamkit.index.results import (
    Calibration,
    Enrolled,
    ItemId,
    Label,
    Match,
    Neighbors,
    Record,
    SearchResults,
    Verification,
)
from siamkit.index.stores.base import (
    EXISTING,
    StoreHits,
    VectorStore,
    hits_to_results,
    store_registry,
)
from siamkit.index.stores.faiss.files import LOCK_TIMEOUT
from siamkit.index.stores.settings import index_kind_name
from siamkit.thresholds import FpirCalibration

if TYPE_CHECKING:  # the index runs without torch behind an ONNX encoder
    from siamkit.encoders.base import Encoder

_FLOAT32 = np.dtype(np.float32)  # NumPy's native float32 dtype is one shared object


class FaceIndex:
    """A searchable gallery of faces: enrol, search, identify, verify, save.

    Distances are the encoder's geometry, decided by :mod:`siamkit.geometry`:
    for ``"cosine"`` the embeddings are L2-normalised and compared by ``1 - cos``;
    for ``"euclidean"`` by ``||a - b||``. Every distance this class reports (search
    on any store, verify, calibration) is :func:`siamkit.geometry.index_distances`:
    one number per pair of faces, whatever computes it, equal to
    :func:`siamkit.geometry.pairwise_distances` to float32 rounding, so a
    threshold means the same in training, evaluation and search.

    Items are images (paths, PIL images, uint8 arrays, torch tensors: encoded
    with the encoder; files and PIL images are first turned upright by their
    EXIF orientation) or embeddings (numpy float arrays). Ids are strings or
    integers, unique, their type kept (``1`` and ``"1"`` differ); when not given
    they are consecutive integers. All methods are thread-safe: searches run in
    parallel, a change waits for them and each search sees the gallery before
    or after a change, never in between.

    Args:
        encoder: Encodes images; its metric and size are the index's.
        metric: ``"cosine"`` or ``"euclidean"``; defaults to the encoder's, and
            must be given without an encoder.
        index: ``"flat"`` (exact), ``"hnsw"``, ``"ivf"``, or for the FAISS
            store any FAISS ``index_factory`` string.
        dim: The embedding size; defaults to the encoder's, or the first add.
        store: Where the items live: ``"faiss"`` (this process, saved with
            :meth:`save`), ``"milvus"`` (a Milvus collection: give ``uri=`` and
            ``collection=``), another registered store's name, or a
            :class:`~siamkit.index.stores.base.VectorStore` object.
        ef_search: HNSW search breadth of the FAISS store (default 128).
        nprobe: IVF lists the FAISS store visits per query (default: 1/64 of them, at least 8).
        **store_options: Passed to the store, e.g. ``uri`` and ``collection``.

    Raises:
        ConfigError: the named store already holds a gallery (reopen it with
            :meth:`connect`), or an option the store does not take.

    Examples:
        >>> import numpy as np
        >>> index = FaceIndex(metric="cosine", dim=2)
        >>> index.add(np.array([[1, 0], [0, 1]], dtype="float32"), labels=["ann", "bob"])
        [0, 1]
        >>> index.search(np.array([0.9, 0.1], dtype="float32"), k=1)[0].label
        'ann'
    """

    def __init__(
        self,
        encoder: Encoder | Any | None = None,
        metric: str | None = None,
        index: str = "flat",
        dim: int | None = None,
        *,
        store: str | VectorStore = "faiss",
        ef_search: int | None = None,
        nprobe: int | None = None,
        **store_options: Any,
    ) -> None:
        self.encoder = encoder
        self._metric = _record.resolve_metric(encoder, metric)
        self._dim = _record.resolve_dim(encoder, dim)
        self._shared = SharedRecord(
            GalleryRecord(encoder=_record.encoder_info(encoder)),
            keep_own_encoder=lambda: self.encoder is not None,
        )
        self._lock = self._shared.lock  # one change at a time: ids, thresholds, the record
        self._store: VectorStore | None = None
        if isinstance(store, VectorStore):
            self._adopt(store)
            self._store_name, self._store_options = type(store).__name__, {}
            self._index_name = store.index_name
            return
        self._store_name = str(store)
        self._index_name = index_kind_name(index)
        params = {"ef_search": ef_search, "nprobe": nprobe}
        self._store_options = {**{k: v for k, v in params.items() if v is not None},
                               **store_options}  # fmt: skip
        if self._dim is not None:
            self._open_store(self._dim)

    # -- the store -------------------------------------------------------------------
    @property
    def store(self) -> VectorStore | None:
        """The store holding the items (None until the embedding size is known)."""
        return self._store

    def _open_store(self, dim: int) -> VectorStore:
        made = store_registry.create(self._store_name, dim=dim, metric=self._metric,
                                     index=self._index_name, **self._store_options)  # fmt: skip
        if made.persistence == "shared" and (made.get_meta() or made.count()):
            made.close()
            raise ConfigError(
                f"the {self._store_name} store already holds a gallery: reopen it with "
                "FaceIndex.connect(...), or choose another collection"
            )
        self._store, self._dim = made, dim
        self._write_record()
        return made

    def _adopt(self, store: VectorStore) -> None:
        if store.metric != self._metric:
            raise GeometryError(
                f"the store measures {store.metric} distance but the index {self._metric}: "
                "thresholds would mean nothing"
            )
        if self._dim is not None and store.dim != self._dim:
            raise ShapeError(
                f"the store holds {store.dim}-d vectors, the encoder makes {self._dim}"
            )
        self._store, self._dim = store, store.dim

    def _require_store(self) -> VectorStore:
        if self._store is None:
            raise EmptyIndexError("the index is empty: add items first")
        return self._store

    def _write_record(self) -> None:
        self._shared.write(self._store)

    def _changing_record(self) -> AbstractContextManager[GalleryRecord]:
        return self._shared.changing(self._store)

    def refresh(self) -> None:
        """Re-read thresholds, calibrations and notes from a shared (database) store.

        A search service connected to a Milvus collection keeps the thresholds
        it read; call this after another process calibrated the gallery. A
        no-op for the FAISS store, which this process alone holds.

        Examples:
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> index.refresh()
        """
        self._shared.refresh(self._store)

    # -- properties ------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The geometry: ``"cosine"`` or ``"euclidean"``."""
        return self._metric

    @property
    def dim(self) -> int | None:
        """The embedding size (None until known)."""
        return self._dim

    @property
    def index_spec(self) -> str:
        """The store's index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or a FAISS factory string."""
        return self._index_name if self._store is None else self._store.index_name

    @property
    def extra(self) -> dict[str, Any]:
        """JSON-able notes saved with the gallery (the CLI records the model folder)."""
        return self._shared.record.extra

    @extra.setter
    def extra(self, value: dict[str, Any]) -> None:
        self._shared.record.extra = dict(value)

    @property
    def calibration(self) -> Calibration | None:
        """The 1:1 calibration (:meth:`calibrate` with ``target_far``), or None."""
        return self._shared.record.calibration

    @property
    def fpir_calibration(self) -> FpirCalibration | None:
        """The 1:N calibration (:meth:`calibrate` with ``target_fpir``), or None."""
        return self._shared.record.fpir_calibration

    @property
    def threshold(self) -> float | None:
        """The 1:1 threshold of :meth:`verify`: from ``calibrate(target_far=...)``, or by hand."""
        return self._shared.record.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        with self._changing_record() as record:
            record.set_threshold(value, "1:1")

    @property
    def identify_threshold(self) -> float | None:
        """The 1:N threshold of :meth:`identify`: from ``calibrate(target_fpir=...)`` or by hand."""
        return self._shared.record.identify_threshold

    @identify_threshold.setter
    def identify_threshold(self, value: float | None) -> None:
        with self._changing_record() as record:
            record.set_threshold(value, "1:N")

    @property
    def search_threshold(self) -> float | None:
        """What :meth:`identify` uses without ``threshold=``: the 1:N threshold, else the 1:1 one.

        Examples:
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> index.threshold = 0.5
            >>> index.search_threshold
            0.5
            >>> index.identify_threshold = 0.2
            >>> index.search_threshold
            0.2
        """
        record = self._shared.record
        if record.identify_threshold is not None:
            return record.identify_threshold
        return record.threshold

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (higher: better recall, slower); None without HNSW."""
        return self._store_setting("ef_search")

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._set_store_setting("ef_search", value)

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (higher: better recall, slower); None without IVF."""
        return self._store_setting("nprobe")

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._set_store_setting("nprobe", value)

    def _store_setting(self, name: str) -> int | None:
        if self._store is None:
            return self._store_options.get(name)
        return self._store.describe().get(name)

    def _set_store_setting(self, name: str, value: int | None) -> None:
        if self._store is None:
            self._store_options[name] = value
        elif hasattr(self._store, name):
            setattr(self._store, name, value)
        else:
            raise ConfigError(f"{name} is not a setting of this index's store")

    # -- container protocol ----------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._store is None else self._store.count()

    def __contains__(self, item_id: object) -> bool:
        try:
            key = check_id(item_id)
        except ConfigError:
            return False
        return self._store is not None and self._store.contains(key)

    def __repr__(self) -> str:
        return (
            f"FaceIndex({len(self)} items, dim={self._dim}, metric={self._metric!r}, "
            f"index={self.index_spec!r})"
        )

    def get(self, item_id: ItemId) -> Record:
        """The stored item ``item_id``.

        Raises:
            UnknownIdError: no such id.

        Examples:
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> _ = index.add(np.array([[3, 4]], dtype="float32"), labels="ann", ids="a1")
            >>> index.get("a1").embedding.tolist()
            [0.6000000238418579, 0.800000011920929]
        """
        key = check_id(item_id)
        if self._store is None:
            raise UnknownIdError(f"id {item_id!r} is not in the index")
        item = self._store.get([key])[0]
        return Record(id=item.id, label=item.label, metadata=item.metadata, embedding=item.vector)

    def ids(self, label: Label | None = None) -> list[ItemId]:
        """The ids of all items, or of one person's: in enrolment order on the FAISS store
        (an upserted item moves to the end), in the database's own order on others.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> index.add(np.zeros((3, 1), dtype="float32"), labels=["a", "b", "a"])
            [0, 1, 2]
            >>> index.ids(label="a")
            [0, 2]
        """
        if self._store is None:
            return []
        gallery = self._store.gallery()
        if label is None:
            return gallery.ids.tolist()
        return gallery.ids[gallery.labels == check_label(label)].tolist()

    def labels(self) -> list[Label]:
        """The distinct labels (people), in order of first enrolment on the FAISS store.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((3, 1), dtype="float32"), labels=["b", "a", "b"])
            >>> index.labels()
            ['b', 'a']
        """
        if self._store is None:
            return []
        return list(dict.fromkeys(self._store.gallery().labels.tolist()))

    # -- adding and removing ---------------------------------------------------------
    def add(
        self,
        items: Any,
        labels: Any,
        ids: Any = None,
        metadata: Any = None,
        *,
        existing: str = "error",
        batch_size: int = 64,
        progress: bool = False,
    ) -> Enrolled:
        """Enrol items: images (encoded in batches) or embeddings.

        Args:
            items: One item or a sequence: paths, PIL images, uint8 pictures or
                torch tensors (encoded with the encoder), or embeddings (a numpy
                float array ``(D,)`` or ``(N, D)``).
            labels: One label per item (str or int), or one label for all.
            ids: Unique ids (str or int); default: consecutive integers.
            metadata: A JSON-able dict per item; default ``{"path": ...}`` for
                files, ``{}`` otherwise.
            existing: ``"error"`` refuses ids already enrolled; ``"skip"``
                leaves them as they are and enrols the rest (re-running an
                interrupted enrolment).
            batch_size: Images encoded at once.
            progress: Show a progress bar while encoding.

        Returns:
            The ids of the new items: an :class:`~siamkit.index.Enrolled` list,
            whose ``skipped`` names the images left out because the encoder's
            aligner found no face in them and its policy is ``on_missing="skip"``
            (their labels, ids and metadata are dropped with them).

        Raises:
            DuplicateIdError: an id is already in the index (use :meth:`upsert`,
                or ``existing="skip"``) or repeated.
            NoFaceError: no face was found in an image and the aligner's
                policy is ``"error"`` (the message names the file; nothing is added).
            ShapeError: wrong embedding size, or labels/ids/metadata of the
                wrong length.
            NonFiniteError: NaN or infinite embeddings, or under cosine a zero
                vector (no direction; :func:`siamkit.geometry.check_directions`),
                whatever the store. Queries are refused alike.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=2)
            >>> index.add(np.ones((2, 2), dtype="float32"), labels="ann", ids=["a1", "a2"])
            ['a1', 'a2']
            >>> len(index), "a1" in index
            (2, True)
        """
        if existing not in EXISTING:
            raise ConfigError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
        return insert_items(self, items, labels, ids, metadata, batch_size, progress, existing)

    def upsert(
        self,
        items: Any,
        labels: Any,
        ids: Any,
        metadata: Any = None,
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Enrolled:
        """Like :meth:`add`, but an id already in the index is replaced.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((1, 1), dtype="float32"), labels="ann", ids="x")
            >>> _ = index.upsert(np.ones((1, 1), dtype="float32"), labels="bob", ids="x")
            >>> index.get("x").label, len(index)
            ('bob', 1)
        """
        if ids is None:
            raise ConfigError("upsert needs the ids of the items it adds or replaces")
        return insert_items(self, items, labels, ids, metadata, batch_size, progress, "replace")

    def add_folder(
        self,
        path: str | os.PathLike,
        *,
        upsert: bool = False,
        existing: str = "error",
        batch_size: int = 64,
        progress: bool = False,
        shard: tuple[int, int] | None = None,
        on_chunk: Callable[[Enrolled], Any] | None = None,
    ) -> Enrolled:
        """Enrol an ImageFolder gallery: ``path/<person>/<image>``, label = folder name.

        Ids are the images' paths relative to ``path`` (``"alice/1.jpg"``) and
        metadata ``{"path": <the file>}``. Images are encoded and stored in
        chunks as they go, so a gallery of millions never sits in memory and
        an interruption keeps what was stored; with ``existing="skip"`` the
        images already enrolled are not even encoded, so re-running an
        interrupted enrolment does only what is left. Images without a face
        follow the encoder's aligner's policy, as in :meth:`add`. Files the
        folder listing leaves out (not images siamkit reads, links that loop or
        leave the folder: see :func:`siamkit._folders.list_image_folder`) are
        in the result's ``skipped`` too, with their reason and no position.

        Args:
            path: The gallery folder.
            upsert: Replace items whose id is already enrolled.
            existing: ``"error"`` or ``"skip"``, as in :meth:`add`.
            batch_size: Images encoded at once.
            progress: Show a progress bar (images and images/s).
            shard: ``(rank, world_size)``: enrol only this process's contiguous
                share of the images, for several processes filling one store.
            on_chunk: Called with what each chunk enrolled, once it is stored
                (``siamkit index build`` saves a FAISS index as it grows).

        Raises:
            DataError: ``path`` is missing or not an image folder.
            DuplicateIdError: an image is already enrolled (``existing="error"``).
            NoFaceError: no face in an image under the policy ``"error"``.

        Examples:
            >>> import os, tempfile, siamkit
            >>> from PIL import Image
            >>> root = tempfile.mkdtemp()
            >>> os.makedirs(os.path.join(root, "ann"))
            >>> Image.new("L", (46, 56)).save(os.path.join(root, "ann", "1.png"))
            >>> index = FaceIndex(siamkit.create_encoder("compact", channels=[8, 16]))
            >>> index.add_folder(root)
            ['ann/1.png']
            >>> index.add_folder(root, existing="skip")
            []
        """
        return enrol_folder(self, path, upsert=upsert, existing=existing, batch_size=batch_size,
                            progress=progress, shard=shard, on_chunk=on_chunk)  # fmt: skip

    def remove(self, ids: ItemId | Iterable[ItemId], *, missing_ok: bool = False) -> int:
        """Remove items by id, from every kind of index (HNSW included).

        Removed items never appear in results again. The FAISS store flags
        them, filters them out of searches, and rebuilds them away once they
        pass 20% of the index.

        Args:
            ids: One id or several.
            missing_ok: Skip unknown ids instead of raising.

        Returns:
            How many items were removed.

        Raises:
            UnknownIdError: an id is not in the index (nothing is removed).

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1, index="hnsw")
            >>> _ = index.add(np.arange(3, dtype="float32")[:, None], labels=["a", "b", "c"])
            >>> index.remove(1)
            1
            >>> [m.id for m in index.search(np.array([1.0], dtype="float32"), k=3)]
            [0, 2]
        """
        keys = list(dict.fromkeys(check_id(i) for i in id_list(ids)))
        with self._lock:
            if self._store is None:
                if keys and not missing_ok:
                    raise UnknownIdError(
                        f"ids not in the index: {keys[:5]}; nothing was removed "
                        "(pass missing_ok=True to skip them)"
                    )
                return 0
            return self._store.remove(keys, missing_ok=missing_ok)

    def compact(self) -> None:
        """Reclaim the space of removed items now (the FAISS store does it at 20%).

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((10, 1), dtype="float32"), labels="a")
            >>> _ = index.remove(0); index.compact(); index.info()["removed_pending"]
            0
        """
        if self._store is not None:
            self._store.compact()

    # -- searching -------------------------------------------------------------------
    def search(self, queries: Any, k: int = 5) -> list[Match] | SearchResults:
        """The ``k`` nearest items of each query, nearest first.

        Args:
            queries: One item or a batch (images or embeddings, as for :meth:`add`).
            k: Neighbours per query; fewer come back when the index holds fewer.

        Returns:
            For one query a list of :class:`Match`; for a batch a
            :class:`SearchResults`, a sequence of such lists (one per query)
            that creates the ``Match`` objects as rows are read, with the
            ``ids``, ``labels`` and ``distances`` as arrays too.

        Raises:
            EmptyIndexError: the index holds no item.
            ConfigError: ``k`` is not a positive integer.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> gallery = np.array([[0.0], [1.0], [5.0]], dtype="float32")
            >>> _ = index.add(gallery, labels=["a", "b", "c"])
            >>> query = np.array([0.75], dtype="float32")
            >>> [(m.label, m.distance) for m in index.search(query, k=2)]
            [('b', 0.25), ('a', 0.75)]
            >>> index.search(np.array([[0.1], [4.0]], dtype="float32"), k=1).labels.tolist()
            [['a'], ['c']]
        """
        store = self._store
        if type(queries) is np.ndarray and queries.dtype is _FLOAT32 and store is not None:
            squared = fast_query_norm(queries, self._dim, k)  # one query: the store's fast path
            found = None if squared is None else store.search_one(queries, k, squared)
            if found is not None:  # None: the store has no fast path for it
                return found
        vectors, single = self._queries(queries, k)
        if not len(vectors):  # an empty batch has empty answers, even from an empty index
            return SearchResults.empty(k)
        results = self._search(vectors, k)
        return results[0] if single else results

    def knn(self, queries: Any, k: int = 5) -> Neighbors:
        """Batch search returning arrays (ids, labels, distances) instead of matches.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.array([[0.0], [1.0]], dtype="float32"), labels=["a", "b"])
            >>> index.knn(np.array([[0.1], [0.9]], dtype="float32"), k=1).labels.tolist()
            [['a'], ['b']]
        """
        vectors, _ = self._queries(queries, k)
        return self._neighbors(vectors, k)

    def _neighbors(self, vectors: np.ndarray, k: int) -> Neighbors:
        """:meth:`knn` of prepared vectors: calibration searches the stored ones as they are
        (preparing them again could move them by a rounding, and the distances with them)."""
        results = self._search(vectors, k)
        return Neighbors(ids=results.ids, labels=results.labels, distances=results.distances)

    def _search(self, vectors: np.ndarray, k: int) -> SearchResults:
        store = self._store
        if store is None:
            raise EmptyIndexError("the index is empty: add items before searching it")
        results = store.search(vectors, int(k))
        if isinstance(results, StoreHits):  # a store written for siamkit 0.1
            results = hits_to_results(results)
        if results.ids.shape[1] == 0 and len(vectors) and store.count() == 0:
            raise EmptyIndexError("the index is empty: add items before searching it")
        return results

    def _queries(self, queries: Any, k: int) -> tuple[np.ndarray, bool]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        embeddings, single, _ = to_embeddings(queries, self.encoder, self._dim)
        check_directions(embeddings, self._metric, "queries")
        return prepare(embeddings, self._metric), single

    def identify(
        self, query: Any, threshold: float | None = None, k: int = 1
    ) -> Match | list[Match | None] | None:
        """Who is this? The nearest match, or None for a face not in the gallery.

        A query is unknown when its nearest item is farther than the threshold.
        With ``k > 1`` the labels of the ``k`` nearest items within the
        threshold vote (ties go to the nearest), and the nearest item of the
        winning label is returned (:func:`siamkit.index.decisions.vote`).

        The threshold, first found first used: the ``threshold`` argument; the
        1:N threshold (:attr:`identify_threshold`, from
        ``calibrate(target_fpir=...)``); the 1:1 threshold (:attr:`threshold`,
        from ``calibrate(target_far=...)``), which lets more strangers through
        as the gallery grows.

        Raises:
            NotCalibratedError: no threshold given and the index not calibrated.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.array([[0.0], [1.0]], dtype="float32"), labels=["a", "b"])
            >>> index.identify(np.array([0.9], dtype="float32"), threshold=0.5).label
            'b'
            >>> index.identify(np.array([9.0], dtype="float32"), threshold=0.5) is None
            True
        """
        limit = decision_threshold(threshold, self.search_threshold)
        results = self.search(query, k)
        if isinstance(results, SearchResults):
            return [vote(matches, limit) for matches in results]
        return vote(results, limit)

    def verify(self, a: Any, b: Any, threshold: float | None = None) -> Verification:
        """Do ``a`` and ``b`` (two faces, or two embeddings) show the same person?

        The distance is :func:`siamkit.geometry.index_distances`: the number a
        search of ``a`` reports for ``b`` once enrolled, and calibration measures.

        Raises:
            NotCalibratedError: no threshold given and the index not calibrated.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=2)
            >>> v = index.verify(np.array([0.0, 0.0], dtype="float32"),
            ...                  np.array([0.3, 0.4], dtype="float32"), threshold=0.6)
            >>> v.same, round(v.distance, 6)
            (True, 0.5)
        """
        limit = decision_threshold(threshold, self.threshold)
        first, single_a, _ = to_embeddings(a, self.encoder, self._dim)
        second, single_b, _ = to_embeddings(b, self.encoder, self._dim)
        if not (single_a and single_b):
            raise ShapeError("verify compares two single faces: pass one item as a and one as b")
        if first.shape != second.shape:
            raise ShapeError(f"embedding sizes differ: {first.shape[1]} vs {second.shape[1]}")
        return verification(float(pair_distances(first, second, self._metric)[0]), limit)

    # -- calibration -----------------------------------------------------------------
    def calibrate(
        self,
        target_far: float | None = None,
        pairs: tuple[Any, Any, Any] | None = None,
        *,
        target_fpir: float | None = None,
        unknown: Any = None,
        max_pairs: int = MAX_PAIRS,
        seed: int = 0,
    ) -> Calibration | FpirCalibration:
        """Fit and store a decision threshold: 1:1 for a FAR, or 1:N for an FPIR.

        **1:1** (``target_far``, default 0.001; :meth:`verify`): the largest
        distance accepting at most ``target_far`` of the impostor pairs (the
        gallery's own, sampled above ``max_pairs``, or ``pairs``). **1:N**
        (``target_fpir``; :meth:`identify`): the largest distance at which at
        most ``target_fpir`` of strangers' searches match someone (each person
        left out in turn, or the ``unknown`` probes), with the expected FNIR and
        the gallery size it holds for (see :meth:`info`). How: the thresholds
        concept page.

        Args:
            target_far: The false-accept rate to allow, e.g. 0.001.
            pairs: Labelled pairs ``(a, b, same)`` instead: two equal-length
                batches of items or embeddings and a bool per pair.
            target_fpir: The false-positive identification rate to allow, e.g. 0.01.
            unknown: Items or embeddings of people not in the gallery, to
                measure the FPIR on instead of leaving people out.
            max_pairs: Cap on 1:1 pairs of each kind drawn from the gallery.
            seed: Seed of that sampling.

        Returns:
            A :class:`Calibration` (1:1, also ``index.calibration``) or a
            :class:`~siamkit.thresholds.FpirCalibration` (1:N, also
            ``index.fpir_calibration``).

        Raises:
            ConfigError: a rate outside (0, 1), or both kinds asked at once.
            DataError: nothing to fit on (no genuine or impostor pair; fewer
                than two people to leave out).

        Examples:
            >>> rng = np.random.default_rng(0)
            >>> centres = rng.normal(size=(5, 8)).astype("float32")
            >>> faces = np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(20, 8))
            >>> index = FaceIndex(metric="cosine", dim=8)
            >>> _ = index.add(faces.astype("float32"), labels=np.repeat(np.arange(5), 4))
            >>> report = index.calibrate(target_far=0.01)
            >>> report.num_genuine, report.num_impostor, report.tar
            (30, 160, 1.0)
            >>> search = index.calibrate(target_fpir=0.1)
            >>> search.num_mated, search.num_non_mated, search.fnir, search.gallery_size
            (20, 20, 0.0, 20)
        """
        fit = calibrate_gallery(self, target_far, pairs, target_fpir=target_fpir,
                                unknown=unknown, max_pairs=max_pairs, seed=seed)  # fmt: skip
        with self._changing_record() as record:
            record.keep(fit)
        return fit

    # -- information -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A JSON-able summary: size, geometry, store settings, thresholds, encoder, warnings.

        ``warnings`` lists what may make decisions worse than calibrated: a
        gallery grown past twice the size its 1:N threshold was fitted at, or
        identify left to the 1:1 threshold.

        Examples:
            >>> FaceIndex(metric="cosine", dim=4).info()["count"]
            0
        """
        return describe_index(self, self._store_name)

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Save the gallery: files for the FAISS store, the record for a database.

        With the FAISS store, saves into folder ``path``, atomically: a crash
        leaves the old or the new index. It writes the vectors (npy), ids,
        labels and metadata (JSON), the FAISS index and a manifest with
        versions, geometry, thresholds, the encoder's fingerprint and each
        file's checksum. Never pickle. A Milvus store already holds every item
        and threshold; ``save()`` (no path) writes :attr:`extra` to it too.

        A save holds the folder's write lock (``.face_index.lock``), waiting
        for another writer up to :data:`~siamkit.index.stores.faiss.files.LOCK_TIMEOUT`
        seconds. An index loaded from ``path`` refuses to save over it once
        another process (or another FaceIndex) saved there since: that save's
        changes would be lost. To change a saved index while others may too,
        use :meth:`update`, which holds the lock from load to save.

        Raises:
            EmptyIndexError: nothing to save yet (the embedding size is unknown).
            ConfigError: a path for a database store, or none for the FAISS
                store; :attr:`extra` not JSON or nested deeper than 32 levels.
            IndexFileError: ``path`` holds something else than a face index,
                or a later save than the one this index was loaded from.
            LockTimeoutError: another process held the folder's lock too long.

        Examples:
            >>> import tempfile
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> _ = index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
            >>> folder = index.save(tempfile.mkdtemp())
            >>> len(FaceIndex.load(folder))
            2
        """
        return save_index(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | Any | None = None) -> FaceIndex:
        """Load an index saved by :meth:`save`, checking every file and the encoder.

        ``encoder`` (to search with images) must be the one the index was built
        with: same fingerprint, size and metric.

        Raises:
            IndexFileError: a file is missing, truncated, corrupted (checksum)
                or from a newer siamkit.
            EncoderMismatchError: ``encoder`` is not the index's encoder.
            GeometryError: ``encoder`` uses another metric.

        Examples:
            >>> import tempfile
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> _ = index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
            >>> FaceIndex.load(index.save(tempfile.mkdtemp())).labels()
            ['a', 'b']
        """
        return load_index(path, encoder, cls=cls)

    @classmethod
    def update(
        cls, path: str | os.PathLike, encoder: Encoder | Any | None = None, *,
        timeout: float = LOCK_TIMEOUT,
    ) -> AbstractContextManager[FaceIndex]:  # fmt: skip
        """Load the index in ``path`` to change it, and save it back, other writers kept out.

        Holds the folder's write lock from the load to the save (waiting up to
        ``timeout`` seconds for another writer), so several processes adding to
        or removing from one index all keep their changes. The index is saved
        when the ``with`` block ends without an exception; after one nothing
        is saved. Loads and searches elsewhere never wait for the lock.

        Raises:
            LockTimeoutError: another writer held the lock past ``timeout``.
            IndexFileError: as for :meth:`load`.

        Examples:
            >>> import tempfile
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((1, 1), dtype="float32"), labels="a")
            >>> folder = index.save(tempfile.mkdtemp())
            >>> with FaceIndex.update(folder) as shared:
            ...     _ = shared.add(np.ones((1, 1), dtype="float32"), labels="b")
            >>> len(FaceIndex.load(folder))
            2
        """
        return update_index(path, encoder, timeout=timeout, cls=cls)

    @classmethod
    def connect(
        cls, encoder: Encoder | Any | None = None, *, store: str | VectorStore = "milvus",
        **options: Any,
    ) -> FaceIndex:  # fmt: skip
        """Reopen a gallery kept in a database store, checked against ``encoder`` as :meth:`load`.

        Thresholds and calibrations come back with it.

        Args:
            encoder: The encoder to search with images, or None for embeddings.
            store: ``"milvus"`` (or another registered store), or a store object.
            **options: The store's connection, e.g. ``uri="faces.db"``,
                ``collection="faces"``.

        Raises:
            IndexFileError: no such collection, or Milvus unreachable.
            EncoderMismatchError: ``encoder`` is not the gallery's encoder.
            GeometryError: ``encoder`` uses another metric.

        Examples:
            >>> FaceIndex.connect(encoder, uri="faces.db", collection="faces")  # doctest: +SKIP
            FaceIndex(400 items, dim=128, metric='euclidean', index='flat')
        """
        return connect_index(encoder, store=store, cls=cls, **options)
