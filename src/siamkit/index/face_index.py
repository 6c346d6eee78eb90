"""``FaceIndex``: a FAISS face gallery with identify, verify, calibration and safe saving."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from siamkit._version import __version__
from siamkit.encoders.base import Encoder
from siamkit.exceptions import (
    ConfigError,
    DataError,
    DuplicateIdError,
    EmptyIndexError,
    EncoderMismatchError,
    GeometryError,
    IndexFileError,
    NotCalibratedError,
    ShapeError,
    UnknownIdError,
)
from siamkit.geometry import _MAX_SQUARED_NORM, check_metric, paired_distances, prepare
from siamkit.index import storage
from siamkit.index._inputs import (
    check_id,
    check_label,
    check_metadata,
    embed_items,
    per_item,
    to_embeddings,
)
from siamkit.index._rwlock import RWLock
from siamkit.index._store import RowStore
from siamkit.index.backends import (
    Backend,
    IndexSpec,
    faiss_metric,
    to_distances,
    unscaled_query_distances,
)
from siamkit.index.calibration import (
    MAX_PAIRS,
    Gallery,
    check_far,
    check_fpir,
    check_threshold,
    fit_far_threshold,
    gallery_pairs,
    search_scores,
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
    SkippedImage,
    Verification,
)
from siamkit.thresholds import FpirCalibration, fit_fpir_threshold, growth_warning

#: Removed rows are rebuilt away once they pass this share of the FAISS index.
REBUILD_FRACTION = 0.2
_RECOMPUTE_CHUNK = 4096  # queries per exact-distance block, to bound memory
_FLOAT32 = np.dtype(np.float32)  # NumPy's native float32 dtype is one shared object


class FaceIndex:
    """A searchable gallery of faces: enrol, search, identify, verify, save.

    Distances are the encoder's geometry, decided by :mod:`siamkit.geometry`:
    for ``"cosine"`` the embeddings are L2-normalised and stored in an
    inner-product FAISS index (distance ``1 - cos``); for ``"euclidean"`` in an
    L2 index (distance ``||a - b||``). Every distance this class reports equals
    :func:`siamkit.geometry.pairwise_distances` on the same embeddings, so a
    threshold means the same in training, evaluation and search.

    Items are images (paths, PIL images, uint8 arrays, torch tensors: encoded
    with the encoder) or embeddings (numpy float arrays). Ids are strings or
    integers, unique, their type kept (``1`` and ``"1"`` differ); when not given
    they are consecutive integers. All methods are thread-safe: searches run in
    parallel, a change waits for them and each search sees the index before
    or after a change, never in between.

    Args:
        encoder: Encodes images; its metric and size are the index's.
        metric: ``"cosine"`` or ``"euclidean"``; defaults to the encoder's, and
            must be given without an encoder.
        index: ``"flat"`` (exact), ``"hnsw"`` (HNSW32), ``"ivf"`` (inverted
            lists, trained once 2,048 vectors are in; exact until then) or any
            FAISS ``index_factory`` string.
        dim: The embedding size; defaults to the encoder's, or the first add.
        ef_search: HNSW search breadth (default 128).
        nprobe: IVF lists visited per query (default: 1/64 of them, at least 8).

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
        encoder: Encoder | None = None,
        metric: str | None = None,
        index: str = "flat",
        dim: int | None = None,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        self.encoder = encoder
        self._metric = _resolve_metric(encoder, metric)
        self._dim = _resolve_dim(encoder, dim)
        self._spec = IndexSpec.parse(index)
        self._params = {"ef_search": ef_search, "nprobe": nprobe}
        # Who made the embeddings; kept through a load without the encoder.
        self._encoder_info = _encoder_info(encoder)
        self._lock = RWLock()
        self._reading = self._lock.read()  # the same guard every time, one call less
        self._store: RowStore | None = None
        self._backend: Backend | None = None
        self._next_id = 0
        self._threshold: float | None = None
        self._identify_threshold: float | None = None
        #: The 1:1 calibration (:meth:`calibrate` with ``target_far``), or None.
        self.calibration: Calibration | None = None
        #: The 1:N calibration (:meth:`calibrate` with ``target_fpir``), or None.
        self.fpir_calibration: FpirCalibration | None = None
        #: JSON-able notes saved with the index (the CLI records the model folder).
        self.extra: dict[str, Any] = {}
        if self._dim is not None:
            self._create_storage(self._dim)

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
        """The FAISS index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or a factory string."""
        return self._spec.name

    @property
    def threshold(self) -> float | None:
        """The 1:1 threshold of :meth:`verify`: from ``calibrate(target_far=...)``, or by hand."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self._threshold = None if value is None else check_threshold(value)
        if self.calibration is not None and self.calibration.threshold != self._threshold:
            self.calibration = None  # the report no longer describes the threshold

    @property
    def identify_threshold(self) -> float | None:
        """The 1:N threshold of :meth:`identify`: from ``calibrate(target_fpir=...)`` or by hand."""
        return self._identify_threshold

    @identify_threshold.setter
    def identify_threshold(self, value: float | None) -> None:
        self._identify_threshold = None if value is None else check_threshold(value)
        fit = self.fpir_calibration
        if fit is not None and fit.threshold != self._identify_threshold:
            self.fpir_calibration = None

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
        if self._identify_threshold is not None:
            return self._identify_threshold
        return self._threshold

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (higher: better recall, slower); None without HNSW."""
        if self._backend is None:
            return self._params["ef_search"]
        return self._backend.ef_search

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._set_param("ef_search", value)

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (higher: better recall, slower); None without IVF."""
        if self._backend is None:
            return self._params["nprobe"]
        return self._backend.nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._set_param("nprobe", value)

    def _set_param(self, name: str, value: int | None) -> None:
        with self._lock.write():
            if self._backend is not None:
                setattr(self._backend, name, value)
            self._params[name] = value

    # -- container protocol ----------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._store is None else self._store.num_alive

    def __contains__(self, item_id: object) -> bool:
        try:
            key = check_id(item_id)
        except ConfigError:
            return False
        with self._lock.read():
            return self._store is not None and key in self._store.row_of

    def __repr__(self) -> str:
        return (
            f"FaceIndex({len(self)} items, dim={self._dim}, metric={self._metric!r}, "
            f"index={self._spec.name!r})"
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
        with self._lock.read():
            row = self._row(item_id)
            store = self._require_store()
            return Record(
                id=store.ids[row],
                label=store.labels[row],
                metadata=dict(store.metadata[row]),
                embedding=store.vectors[row].copy(),
            )

    def ids(self, label: Label | None = None) -> list[ItemId]:
        """The ids of all items, or of one person's, in enrolment order.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> index.add(np.zeros((3, 1), dtype="float32"), labels=["a", "b", "a"])
            [0, 1, 2]
            >>> index.ids(label="a")
            [0, 2]
        """
        with self._lock.read():
            if self._store is None:
                return []
            keep = self._store.alive
            if label is not None:
                keep = keep & (self._store.labels == check_label(label))
            return self._store.ids[keep].tolist()

    def labels(self) -> list[Label]:
        """The distinct labels (people), in order of first enrolment.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((3, 1), dtype="float32"), labels=["b", "a", "b"])
            >>> index.labels()
            ['b', 'a']
        """
        with self._lock.read():
            if self._store is None:
                return []
            return list(dict.fromkeys(self._store.labels[self._store.alive].tolist()))

    # -- adding and removing ---------------------------------------------------------
    def add(
        self,
        items: Any,
        labels: Any,
        ids: Any = None,
        metadata: Any = None,
        *,
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
            batch_size: Images encoded at once.
            progress: Show a progress bar while encoding.

        Returns:
            The ids of the new items: an :class:`~siamkit.index.Enrolled` list,
            whose ``skipped`` names the images left out because the encoder's
            aligner found no face in them and its policy is ``on_missing="skip"``
            (their labels, ids and metadata are dropped with them).

        Raises:
            DuplicateIdError: an id is already in the index (use :meth:`upsert`)
                or repeated.
            NoFaceError: no face was found in an image and the aligner's
                policy is ``"error"`` (the message names the file; nothing is added).
            ShapeError: wrong embedding size, or labels/ids/metadata of the
                wrong length.
            NonFiniteError: NaN or infinite embeddings.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=2)
            >>> index.add(np.ones((2, 2), dtype="float32"), labels="ann", ids=["a1", "a2"])
            ['a1', 'a2']
            >>> len(index), "a1" in index
            (2, True)
        """
        return self._insert(items, labels, ids, metadata, batch_size, progress, replace=False)

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
        return self._insert(items, labels, ids, metadata, batch_size, progress, replace=True)

    def add_folder(
        self,
        path: str | os.PathLike,
        *,
        upsert: bool = False,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Enrolled:
        """Enrol an ImageFolder gallery: ``path/<person>/<image>``, label = folder name.

        Ids are the images' paths relative to ``path`` (``"alice/1.jpg"``) and
        metadata ``{"path": <the file>}``. Images without a face follow the
        encoder's aligner's policy, as in :meth:`add`: skipped (and listed in
        the result's ``skipped``), aligned whole, or refused.

        Raises:
            DataError: ``path`` is missing or not an image folder.
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
        """
        from siamkit.data.folder import FaceFolder

        folder = FaceFolder(path)
        root = Path(path)
        files = [file for file, _ in folder.samples]
        ids = [Path(file).relative_to(root).as_posix() for file in files]
        labels = [folder.classes[target] for _, target in folder.samples]
        return self._insert(files, labels, ids, None, batch_size, progress, replace=upsert)

    def _insert(
        self,
        items: Any,
        labels: Any,
        ids: Any,
        metadata: Any,
        batch_size: int,
        progress: bool,
        replace: bool,
    ) -> Enrolled:
        if ids is not None and not replace:
            self._precheck_ids(ids)  # fail before encoding a whole gallery
        embedded = embed_items(items, self.encoder, self._dim, batch_size, progress)
        count = len(embedded.paths)
        labels = per_item(labels, count, "labels", check_label, broadcast=True)
        given = None if ids is None else per_item(ids, count, "ids", check_id, broadcast=False)
        metadata = check_metadata(metadata, count, embedded.paths)
        skipped = [
            SkippedImage(i, embedded.paths[i], labels[i], None if given is None else given[i])
            for i in embedded.skipped
        ]
        if skipped:  # what has no face goes, with its label, id and metadata
            kept = embedded.kept
            labels, metadata = [labels[i] for i in kept], [metadata[i] for i in kept]
            given = None if given is None else [given[i] for i in kept]
        embeddings = embedded.embeddings
        vectors = prepare(embeddings, self._metric)
        with self._lock.write():
            if len(embeddings) == 0:
                return Enrolled([], skipped)
            store = self._store or self._create_storage(embeddings.shape[1])
            new_ids = given if given is not None else self._auto_ids(len(embeddings))
            replaced = self._check_new_ids(new_ids, replace)
            if replaced:
                store.kill(replaced)
            store.append(vectors, new_ids, labels, metadata)
            ints = [i for i in new_ids if isinstance(i, int)]
            self._next_id = max([self._next_id, *(i + 1 for i in ints)])
            self._require_backend().sync(store.vectors)
            self._maybe_compact()
            return Enrolled(new_ids, skipped)

    def _precheck_ids(self, ids: Any) -> None:
        wanted = [check_id(i) for i in _id_list(ids)]
        with self._lock.read():
            if self._store is not None:
                self._check_new_ids(wanted, replace=False)

    def _auto_ids(self, count: int) -> list[int]:
        return list(range(self._next_id, self._next_id + count))

    def _check_new_ids(self, ids: list[ItemId], replace: bool) -> list[int]:
        repeated = [i for i, n in Counter(ids).items() if n > 1]
        if repeated:
            raise DuplicateIdError(f"ids repeated in one call: {repeated[:5]}; ids must be unique")
        row_of = self._require_store().row_of
        taken = [i for i in ids if i in row_of]
        if taken and not replace:
            raise DuplicateIdError(
                f"ids already in the index: {taken[:5]}; remove them first, or use upsert() "
                "to replace them"
            )
        return [row_of[i] for i in taken]

    def remove(self, ids: ItemId | Iterable[ItemId], *, missing_ok: bool = False) -> int:
        """Remove items by id, from every kind of index (HNSW included).

        Removed items never appear in results again. They are flagged, filtered
        out of searches, and rebuilt away once they pass 20% of the index.

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
        wanted = _id_list(ids)
        with self._lock.write():
            row_of = {} if self._store is None else self._store.row_of
            keys = list(dict.fromkeys(check_id(i) for i in wanted))
            missing = [key for key in keys if key not in row_of]
            if missing and not missing_ok:
                raise UnknownIdError(
                    f"ids not in the index: {missing[:5]}; nothing was removed "
                    "(pass missing_ok=True to skip them)"
                )
            rows = [row_of[key] for key in keys if key in row_of]
            if rows:
                self._require_store().kill(rows)
                self._maybe_compact()
            return len(rows)

    def compact(self) -> None:
        """Rebuild the FAISS index without removed items now (otherwise done at 20%).

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((10, 1), dtype="float32"), labels="a")
            >>> _ = index.remove(0); index.compact(); index.info()["removed_pending"]
            0
        """
        with self._lock.write():
            if self._store is not None and self._store.num_dead:
                self._store.compact()
                self._require_backend().rebuild(self._store.vectors)

    def _maybe_compact(self) -> None:
        store = self._require_store()
        if store.num_dead and store.num_dead > REBUILD_FRACTION * store.num_rows:
            store.compact()
            self._require_backend().rebuild(store.vectors)

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
        if type(queries) is np.ndarray and queries.dtype is _FLOAT32:
            found = self._search_one_embedding(queries, k)
            if found is not None:
                return found
        vectors, single = self._queries(queries, k)
        if not len(vectors):  # an empty batch has empty answers, even from an empty index
            return SearchResults.empty(k)
        with self._reading:
            rows, distances = self._nearest(vectors, k)
            if single:
                return self._match_list(rows[0].tolist(), distances[0].tolist())
            ids, labels = self._lookup(rows)
            return SearchResults(ids, labels, distances, rows, self._require_store().metadata)

    def knn(self, queries: Any, k: int = 5) -> Neighbors:
        """Batch search returning arrays (ids, labels, distances) instead of matches.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=1)
            >>> _ = index.add(np.array([[0.0], [1.0]], dtype="float32"), labels=["a", "b"])
            >>> index.knn(np.array([[0.1], [0.9]], dtype="float32"), k=1).labels.tolist()
            [['a'], ['b']]
        """
        vectors, _ = self._queries(queries, k)
        with self._lock.read():
            rows, distances = self._nearest(vectors, k)
            ids, labels = self._lookup(rows)
        return Neighbors(ids=ids, labels=labels, distances=distances)

    def identify(
        self, query: Any, threshold: float | None = None, k: int = 1
    ) -> Match | list[Match | None] | None:
        """Who is this? The nearest match, or None for a face not in the gallery.

        A query is unknown when its nearest item is farther than the threshold.
        With ``k > 1`` the labels of the ``k`` nearest items within the
        threshold vote (ties go to the nearest), and the nearest item of the
        winning label is returned.

        The threshold, first found first used: the ``threshold`` argument; the
        1:N threshold (:attr:`identify_threshold`, from
        ``calibrate(target_fpir=...)``); the 1:1 threshold (:attr:`threshold`,
        from ``calibrate(target_far=...)``), which lets more strangers through
        as the gallery grows.

        Args:
            query: One item or a batch.
            threshold: Accept distances up to this; default: the calibrated one.
            k: Neighbours that vote.

        Returns:
            A :class:`Match` or None per query.

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
        limit = self._decision_threshold(self.search_threshold if threshold is None else threshold)
        results = self.search(query, k)
        if isinstance(results, SearchResults):
            return [_vote(matches, limit) for matches in results]
        return _vote(results, limit)

    def verify(self, a: Any, b: Any, threshold: float | None = None) -> Verification:
        """Do ``a`` and ``b`` (two faces, or two embeddings) show the same person?

        Raises:
            NotCalibratedError: no threshold given and the index not calibrated.

        Examples:
            >>> index = FaceIndex(metric="euclidean", dim=2)
            >>> v = index.verify(np.array([0.0, 0.0], dtype="float32"),
            ...                  np.array([0.3, 0.4], dtype="float32"), threshold=0.6)
            >>> v.same, round(v.distance, 6)
            (True, 0.5)
        """
        limit = self._decision_threshold(threshold)
        first, single_a, _ = to_embeddings(a, self.encoder, self._dim)
        second, single_b, _ = to_embeddings(b, self.encoder, self._dim)
        if not (single_a and single_b):
            raise ShapeError("verify compares two single faces: pass one item as a and one as b")
        if first.shape != second.shape:
            raise ShapeError(f"embedding sizes differ: {first.shape[1]} vs {second.shape[1]}")
        distance = float(paired_distances(first, second, self._metric)[0])
        return Verification(same=distance <= limit, distance=distance, threshold=limit)

    def _decision_threshold(self, threshold: float | None) -> float:
        if threshold is None:
            threshold = self._threshold
        if threshold is None:
            raise NotCalibratedError(
                "no decision threshold: call index.calibrate(target_fpir=...) for identify or "
                "index.calibrate(target_far=...) for verify on a gallery with several images "
                "per person, or pass threshold="
            )
        return check_threshold(threshold)

    def _queries(self, queries: Any, k: int) -> tuple[np.ndarray, bool]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        embeddings, single, _ = to_embeddings(queries, self.encoder, self._dim)
        return prepare(embeddings, self._metric), single

    def _search_one_embedding(self, vector: np.ndarray, k: Any) -> list[Match] | None:
        """The matches of one float32 embedding in the common case, else None.

        Issue #3 allows a single query 50 µs on top of FAISS, and after FAISS has
        swept the CPU caches every NumPy call costs microseconds. So this path
        makes one (the squared norm, which is also the check for NaN, inf and
        norms over ``MAX_EMBEDDING_NORM``, whose float32 distances would
        overflow) besides the search: FAISS searches the query as given, since
        scaling does not change the order, and the scores become distances in
        Python. None (nothing done) for anything else: the general path handles
        it, and raises for what this refuses.
        """
        if vector.shape != (self._dim,) or type(k) is not int or k <= 0:
            return None
        # vdot, not dot: as fast, and silent when the float32 square overflows to inf.
        squared = float(np.vdot(vector, vector))
        if not squared <= _MAX_SQUARED_NORM:  # also False for NaN and inf
            return None
        with self._reading:
            backend = self._plain_backend(k)
            if backend is None or not backend.exact_distances:
                return None
            scores, rows = backend.search(vector[None], k)
            # tolist()[0], not [0].tolist(): NumPy indexing is one more cold call.
            distances = unscaled_query_distances(scores.tolist()[0], self._metric, squared**0.5)
            return self._match_list(rows.tolist()[0], distances)

    def _plain_backend(self, k: int) -> Backend | None:
        """The backend if FAISS alone answers (built, nothing removed, ``k`` below its size)."""
        store, backend = self._store, self._backend
        if store is None or backend is None or backend.index is None or store.num_dead:
            return None
        return backend if k < store.num_rows else None

    def _nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, distances)``, ``(num_queries, min(k, len))``; rows -1 where none found."""
        backend = self._plain_backend(k)
        if backend is not None:
            scores, rows = backend.search(queries, int(k))
            return self._finish(queries, rows, scores, backend.exact_distances)
        store = self._store
        if store is None or store.num_alive == 0:
            raise EmptyIndexError("the index is empty: add items before searching it")
        backend = self._require_backend()
        k = min(int(k), store.num_alive)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        # Removed rows are still in FAISS: fetch enough extra to cover them and
        # fetch again, twice as many, for queries that came up short.
        dead_share = store.num_dead / store.num_rows
        fetch = min(store.num_rows, math.ceil(k / (1 - dead_share) * 1.5) + 8 * bool(dead_share))
        todo = np.arange(len(queries))
        while todo.size:
            exact = backend.index is None or fetch >= store.num_rows
            found_scores, found = (
                faiss.knn(queries[todo], store.vectors, fetch, metric=faiss_metric(self._metric))
                if exact
                else backend.search(queries[todo], fetch)
            )
            valid = found >= 0
            if store.num_dead:
                valid &= store.alive[np.where(valid, found, 0)]
            short = (valid.sum(axis=1) < k) & (found[:, -1] >= 0) & (fetch < store.num_rows)
            order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
            keep = np.take_along_axis(valid, order, axis=1)
            done = todo[~short]
            rows[done] = np.where(keep, np.take_along_axis(found, order, axis=1), -1)[~short]
            scores[done] = np.take_along_axis(found_scores, order, axis=1)[~short]
            todo, fetch = todo[short], min(store.num_rows, 2 * fetch)
        return self._finish(queries, rows, scores, backend.exact_distances)

    def _finish(
        self, queries: np.ndarray, rows: np.ndarray, scores: np.ndarray, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        missing = rows < 0
        if exact:
            distances = to_distances(scores, self._metric)
        else:  # compressed codes (PQ, SQ...): re-rank on the stored vectors
            distances = self._recompute(queries, rows)
            order = np.argsort(np.where(missing, np.inf, distances), axis=1, kind="stable")
            rows = np.take_along_axis(rows, order, axis=1)
            distances = np.take_along_axis(distances, order, axis=1)
            missing = rows < 0
        if missing.any():
            distances = np.where(missing, np.float32(np.nan), distances)
        return rows, distances.astype(np.float32, copy=False)

    def _recompute(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        vectors = self._require_store().vectors
        out = np.empty(rows.shape, dtype=np.float32)
        for start in range(0, len(rows), _RECOMPUTE_CHUNK):
            block = slice(start, start + _RECOMPUTE_CHUNK)
            near = vectors[np.where(rows[block] < 0, 0, rows[block])]
            query = queries[block][:, None, :]
            if self._metric == "cosine":
                out[block] = 1.0 - np.einsum("qkd,qkd->qk", near, query)
            else:
                out[block] = np.sqrt(np.einsum("qkd,qkd->qk", near - query, near - query))
        return out

    def _match_list(self, rows: list[int], distances: list[float]) -> list[Match]:
        """One query's matches; rows of -1 (nothing found) are left out."""
        store = self._require_store()
        ids, labels, metadata = store.id_list, store.label_list, store.metadata
        found = zip(rows, distances, strict=True)
        # {} for no metadata: a dict() call per match is microseconds on a cold cache.
        return [
            Match(ids[r], labels[r], d, dict(metadata[r]) if metadata[r] else {})
            for r, d in found
            if r >= 0
        ]

    def _lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids and labels of ``rows``, None where a row is -1."""
        store = self._require_store()
        missing = rows < 0
        if not missing.any():
            return store.ids[rows], store.labels[rows]
        safe = np.where(missing, 0, rows)
        ids, labels = store.ids[safe], store.labels[safe]
        ids[missing] = None
        labels[missing] = None
        return ids, labels

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

        **1:1** (``target_far``, default 0.001; used by :meth:`verify`): the
        largest distance at which at most ``target_far`` of the impostor pairs
        are accepted. The pairs are the gallery's own (every genuine and
        impostor pair, sampled with ``seed`` above ``max_pairs``) or ``pairs``.

        **1:N** (``target_fpir``; used by :meth:`identify`): the largest
        distance at which at most ``target_fpir`` of searches by people *not*
        in the gallery match someone. Without ``unknown`` probes, each enrolled
        person in turn is searched as a stranger against everyone else (leave
        one person out). The expected FNIR (enrolled people rejected or
        misidentified) comes from searching each image of people with two or
        more images against the rest. The gallery size is recorded: a gallery
        grown well past it lets more strangers through (see :meth:`info`).
        All distances come from this index's own search.

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
        if target_fpir is None:
            if unknown is not None:
                raise ConfigError("unknown= probes calibrate 1:N search: pass target_fpir= too")
            return self._calibrate_far(1e-3 if target_far is None else target_far, pairs,
                                       max_pairs, seed)  # fmt: skip
        if target_far is not None or pairs is not None:
            raise ConfigError(
                "calibrate fits one threshold per call: target_far (1:1, verify) or "
                "target_fpir (1:N, identify); call it twice for both"
            )
        return self._calibrate_fpir(target_fpir, unknown)

    def _calibrate_far(
        self, target_far: float, pairs: Any, max_pairs: int, seed: int
    ) -> Calibration:
        target_far = check_far(target_far)
        if pairs is not None:
            distances, same = self._pair_distances(pairs)
            report = fit_far_threshold(distances, same, target_far, source="pairs")
        else:
            with self._lock.read():
                vectors, labels = self._gallery()
                distances, same = gallery_pairs(vectors, labels, self._metric, max_pairs, seed)
            _check_pairs(same)
            report = fit_far_threshold(distances, same, target_far, source="gallery")
        with self._lock.write():
            self._threshold, self.calibration = report.threshold, report
        return report

    def _calibrate_fpir(self, target_fpir: float, unknown: Any) -> FpirCalibration:
        target_fpir = check_fpir(target_fpir)
        probes = None
        if unknown is not None:
            # A collection: under on_missing="skip", a photo without a face is no probe.
            embedded = embed_items(unknown, self.encoder, self._dim)
            probes = embedded.embeddings
            if not len(probes):
                skipped = f" ({len(embedded.skipped)} without a face)" if embedded.skipped else ""
                raise DataError(
                    f"unknown= holds no probe{skipped}: pass images or embeddings of strangers"
                )
        with self._lock.read():
            vectors, labels = self._gallery()
            store = self._require_store()
            ids = store.ids[store.alive] if store.num_dead else store.ids
        people = len(set(labels.tolist()))
        if probes is None and people < 2:
            raise DataError(
                f"the gallery holds {people} person: leaving one out to act as a stranger "
                "needs at least two; enrol more people, or pass unknown= probes"
            )
        scores = search_scores(self.knn, Gallery(vectors, labels, ids), self._metric, probes)
        source = "probes" if probes is not None else "leave-one-person-out"
        report = fit_fpir_threshold(scores, target_fpir, gallery_size=len(labels),
                                    gallery_people=people, source=source)  # fmt: skip
        with self._lock.write():
            self._identify_threshold, self.fpir_calibration = report.threshold, report
        return report

    def _gallery(self) -> tuple[np.ndarray, np.ndarray]:
        store = self._store
        if store is None or store.num_alive == 0:
            raise EmptyIndexError("the index is empty: add a gallery before calibrating it")
        if store.num_dead:
            return store.vectors[store.alive], store.labels[store.alive]
        return store.vectors, store.labels

    def _pair_distances(self, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(pairs, (tuple, list)) or len(pairs) != 3:
            raise ConfigError("pairs must be a tuple (a, b, same) of two batches and the flags")
        first, _, _ = to_embeddings(pairs[0], self.encoder, self._dim)
        second, _, _ = to_embeddings(pairs[1], self.encoder, self._dim)
        same = np.asarray(pairs[2], dtype=bool).reshape(-1)
        if not len(first) == len(second) == len(same):
            raise ShapeError(
                f"pairs hold {len(first)} a items, {len(second)} b items and {len(same)} "
                "same/different flags: pass one of each per pair"
            )
        _check_pairs(same)
        return paired_distances(first, second, self._metric), same

    # -- information -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A JSON-able summary: size, geometry, index settings, thresholds, encoder, warnings.

        ``warnings`` lists what may make decisions worse than calibrated: a
        gallery grown past twice the size its 1:N threshold was fitted at, or
        identify left to the 1:1 threshold.

        Examples:
            >>> FaceIndex(metric="cosine", dim=4).info()["count"]
            0
        """
        with self._lock.read():
            store, backend = self._store, self._backend
            count = 0 if store is None else store.num_alive
            fit = self.fpir_calibration
            return {
                "count": count,
                "people": len(set(self._gallery()[1].tolist())) if len(self) else 0,
                "dim": self._dim,
                "metric": self._metric,
                "normalised": self._metric == "cosine",
                "index": self._spec.name,
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
                "trained": backend is not None and backend.index is not None,
                "removed_pending": 0 if store is None else store.num_dead,
                "threshold": self._threshold,
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
                "identify_threshold": self._identify_threshold,
                "fpir_calibration": None if fit is None else fit.to_dict(),
                "encoder_fingerprint": (self._encoder_info or {}).get("fingerprint"),
                "extra": dict(self.extra),
                "warnings": self._warnings(count),
            }

    def _warnings(self, count: int) -> list[str]:
        grown = growth_warning(self.fpir_calibration, count)
        warnings = [] if grown is None else [grown]
        if self._identify_threshold is None and self._threshold is not None:
            warnings.append(
                "identify uses the 1:1 threshold, which accepts more strangers the larger the "
                "gallery: calibrate 1:N search (target_fpir=...)"
            )
        return warnings

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save into folder ``path``, atomically: a crash leaves the old or the new index.

        Writes the vectors (npy), ids, labels and metadata (JSON), the FAISS
        index and a manifest with versions, geometry, threshold, the encoder's
        fingerprint and each file's checksum. Never pickle.

        Examples:
            >>> import tempfile
            >>> index = FaceIndex(metric="cosine", dim=2)
            >>> _ = index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
            >>> folder = index.save(tempfile.mkdtemp())
            >>> len(FaceIndex.load(folder))
            2
        """
        directory = Path(path)
        with self._lock.read():
            store = self._require_store()
            backend = self._backend
            records = {
                "ids": store.ids.tolist(),
                "labels": store.labels.tolist(),
                "metadata": store.metadata,
                "removed": np.flatnonzero(~store.alive).tolist(),
                "next_id": self._next_id,
            }
            keep_faiss = backend is not None and backend.index is not None
            storage.save_index_files(
                directory,
                self._manifest(store),
                store.vectors,
                records,
                backend.write if keep_faiss and self._spec.kind != "flat" else None,  # type: ignore[union-attr]
            )
        return directory

    def _manifest(self, store: RowStore) -> dict[str, Any]:
        backend, fit = self._backend, self.fpir_calibration
        return {
            "format": storage.FORMAT_NAME,
            "format_version": storage.FORMAT_VERSION,
            "siamkit_version": __version__,
            "faiss_version": faiss.__version__,
            "dim": self._dim or 0,
            "metric": self._metric,
            "normalised": self._metric == "cosine",
            "index": self._spec.name,
            "params": backend.state() if backend is not None else dict(self._params),
            "rows": store.num_rows,
            "count": store.num_alive,
            "threshold": self._threshold,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "identify_threshold": self._identify_threshold,
            "fpir_calibration": None if fit is None else fit.to_dict(),
            "encoder": self._encoder_info,
            "extra": self.extra,
        }

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | None = None) -> FaceIndex:
        """Load an index saved by :meth:`save`, checking every file.

        Args:
            path: The index folder.
            encoder: The encoder to search with images; it must be the one the
                index was built with (same fingerprint and size).

        Raises:
            IndexFileError: a file is missing, truncated, corrupted (checksum)
                or from a newer siamkit.
            EncoderMismatchError: ``encoder`` is not the index's encoder.
            GeometryError: ``encoder`` uses another metric.

        Examples:
            >>> import tempfile
            >>> FaceIndex.load(tempfile.mkdtemp())
            Traceback (most recent call last):
            ...
            siamkit.exceptions.IndexFileError: ...
        """
        directory = Path(path)
        manifest, vectors, records, faiss_index = storage.load_index_files(directory)
        _check_encoder(manifest, encoder, directory)
        params = manifest["params"]
        try:
            index = cls(
                encoder,
                metric=manifest["metric"],
                index=manifest["index"],
                dim=manifest["dim"],
                ef_search=params["ef_search"],
                nprobe=params["nprobe"],
            )
            index._restore(manifest, vectors, records, faiss_index)
        except (ConfigError, ValueError) as err:
            raise IndexFileError(
                f"the face index in {directory} is inconsistent ({err}); save or build it again"
            ) from None
        return index

    def _restore(
        self, manifest: dict[str, Any], vectors: np.ndarray, records: dict[str, Any], index: Any
    ) -> None:
        """Fill a new index from checked files (see :mod:`siamkit.index._schema`)."""
        store = self._require_store()
        store.append(vectors, records["ids"], records["labels"], records["metadata"])
        store.restore_removed(records["removed"])
        self._next_id = records["next_id"]
        backend = self._require_backend()
        if index is not None:
            backend.attach(index, manifest["params"]["trained_rows"], store.num_rows)
        elif self._spec.kind == "flat" or 0 < store.num_rows < backend.min_train():
            backend.rebuild(store.vectors)  # cheap: no FAISS file was saved for these
        elif store.num_rows:
            raise ValueError(f"the FAISS file of this {self._spec.name!r} index is missing")
        calibration = manifest["calibration"]
        self.calibration = None if calibration is None else Calibration(**calibration)
        self.threshold = manifest["threshold"]
        fit = manifest.get("fpir_calibration")  # absent before format version 3
        self.fpir_calibration = None if fit is None else FpirCalibration(**fit)
        self.identify_threshold = manifest.get("identify_threshold")
        self.extra = dict(manifest["extra"])
        if self.encoder is None:
            self._encoder_info = manifest["encoder"]

    # -- internals -------------------------------------------------------------------
    def _create_storage(self, dim: int) -> RowStore:
        self._backend = Backend(self._spec, dim, self._metric, **self._params)
        self._store = RowStore(dim)
        self._dim = dim
        return self._store

    def _require_store(self) -> RowStore:
        if self._store is None:
            raise EmptyIndexError("the index is empty: add items first")
        return self._store

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise EmptyIndexError("the index is empty: add items first")
        return self._backend

    def _row(self, item_id: ItemId) -> int:
        row = None if self._store is None else self._store.row_of.get(check_id(item_id))
        if row is None:
            raise UnknownIdError(f"id {item_id!r} is not in the index")
        return row


def _id_list(ids: Any) -> list[Any]:
    single = isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)
    return [ids] if single else list(ids)


def _vote(matches: list[Match], threshold: float) -> Match | None:
    within = [m for m in matches if m.distance <= threshold]
    if not within:
        return None
    votes = Counter(m.label for m in within)
    best = max(votes.values())
    # Ties go to the label of the nearest match, which comes first.
    return next(m for m in within if votes[m.label] == best)


def _check_pairs(same: np.ndarray) -> None:
    if not same.any():
        raise DataError(
            "no genuine pair (two images of one person) to calibrate on: enrol at least "
            "two images of some people, or pass labelled pairs="
        )
    if same.all():
        raise DataError(
            "no impostor pair (images of two people) to calibrate on: enrol several "
            "people, or pass labelled pairs="
        )


def _encoder_info(encoder: Encoder | None) -> dict[str, Any] | None:
    if encoder is None:
        return None
    return {
        "fingerprint": encoder.fingerprint(),
        "class": type(encoder).__name__,
        "embedding_dim": int(encoder.embedding_dim),
    }


def _resolve_metric(encoder: Encoder | None, metric: str | None) -> str:
    if encoder is None:
        if metric is None:
            raise ConfigError(
                "an index without an encoder needs metric='cosine' or 'euclidean': the "
                "geometry your embeddings were trained with"
            )
        return check_metric(metric)
    own = check_metric(encoder.metric)
    if metric is not None and check_metric(metric) != own:
        raise GeometryError(
            f"the encoder was trained with the {own} metric but the index was asked for "
            f"{metric}: thresholds would mean nothing; drop metric= to use the encoder's"
        )
    return own


def _resolve_dim(encoder: Encoder | None, dim: int | None) -> int | None:
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
        raise ConfigError(f"dim must be a positive integer, got {dim!r}")
    if encoder is None:
        return dim
    own = int(encoder.embedding_dim)
    if dim is not None and dim != own:
        raise ShapeError(f"dim={dim} but the encoder makes {own}-d embeddings; drop dim=")
    return own


def _check_encoder(manifest: dict[str, Any], encoder: Encoder | None, directory: Path) -> None:
    if encoder is None:
        return
    if check_metric(encoder.metric) != manifest["metric"]:
        raise GeometryError(
            f"the index in {directory} uses the {manifest['metric']} metric but the "
            f"encoder {encoder.metric}: load it with the encoder it was built with"
        )
    if int(encoder.embedding_dim) != manifest["dim"]:
        raise EncoderMismatchError(
            f"the index in {directory} holds {manifest['dim']}-d embeddings but the "
            f"encoder makes {encoder.embedding_dim}-d ones: load it with the encoder it "
            "was built with, or build a new index"
        )
    saved = (manifest.get("encoder") or {}).get("fingerprint")
    own = encoder.fingerprint() if saved is not None else None
    if saved is not None and saved != own:
        raise EncoderMismatchError(
            f"the index in {directory} was built with another encoder (fingerprint "
            f"{saved[:12]}..., this one {own[:12]}...): its embeddings "
            "would not be comparable. Load it with the model it was built with, or rebuild it"
        )
