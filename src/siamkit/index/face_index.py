"""``FaceIndex``: a face gallery with identify, verify and calibration, over a store.

FaceIndex is a façade. Enrolment (ids, labels, the store) is its base class,
:class:`~siamkit.index.enrolled_faces.EnrolledFaces`; it turns queries into embeddings with
the encoder, decides (:mod:`siamkit.index.decisions`), calibrates
(:mod:`siamkit.index.calibration`) and saves (:mod:`siamkit.index.persistence`);
the items live in a :class:`~siamkit.index.stores.base.VectorStore`: the FAISS
store in this process (default, saved as files) or a Milvus collection
(``store="milvus"``).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit.exceptions import ConfigError, EmptyIndexError, ShapeError
from siamkit.geometry import check_directions, prepare
from siamkit.index._inputs import fast_query_norm, to_embeddings
from siamkit.index.calibration import MAX_PAIRS, calibrate_gallery, pair_distances
from siamkit.index.decisions import decision_threshold, verification, vote
from siamkit.index.enrolled_faces import EnrolledFaces
from siamkit.index.persistence import (
    connect_index,
    describe_index,
    load_index,
    save_index,
    update_index,
)
from siamkit.index.results import Calibration, Match, Neighbors, SearchResults, Verification
from siamkit.index.stores.base import StoreHits, VectorStore, hits_to_results
from siamkit.index.stores.faiss.files import LOCK_TIMEOUT
from siamkit.thresholds import FpirCalibration

if TYPE_CHECKING:  # the index runs without torch behind an ONNX encoder
    from siamkit.encoders.base import Encoder

_FLOAT32 = np.dtype(np.float32)  # NumPy's native float32 dtype is one shared object


class FaceIndex(EnrolledFaces):
    """A searchable gallery of faces: enrol, search, identify, verify, save.

    Distances are the encoder's geometry (``1 - cos`` of unit vectors for
    ``"cosine"``, ``||a - b||`` for ``"euclidean"``): every distance reported
    (search on any store, verify, calibration) is
    :func:`siamkit.geometry.index_distances`, equal to training's
    :func:`siamkit.geometry.pairwise_distances` to float32 rounding, so a
    threshold means the same in training, evaluation and search.

    Items are images (paths, PIL images, uint8 arrays, torch tensors; turned
    upright by their EXIF orientation and encoded) or numpy embeddings. Ids
    are unique strings or integers, their type kept (``1`` and ``"1"``
    differ); by default consecutive integers. Thread-safe: searches run in
    parallel, a change waits for them, and no search sees half a change.
    Enrolment (:meth:`add`, :meth:`add_folder`, :meth:`remove`...) is
    inherited from :class:`~siamkit.index.enrolled_faces.EnrolledFaces`.

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
        >>> index = FaceIndex(metric="cosine", dim=2)
        >>> index.add(np.array([[1, 0], [0, 1]], dtype="float32"), labels=["ann", "bob"])
        [0, 1]
        >>> index.search(np.array([0.9, 0.1], dtype="float32"), k=1)[0].label
        'ann'
    """

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

        The threshold: ``threshold``, else :attr:`search_threshold` (the 1:N
        one, else the 1:1 one, which lets more strangers through as the
        gallery grows).

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
        the gallery size it holds for.

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
            A :class:`Calibration` (1:1, kept as :attr:`calibration`) or a
            :class:`FpirCalibration` (1:N, kept as :attr:`fpir_calibration`).

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

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: size, geometry, store settings, thresholds, encoder, warnings.

        ``warnings`` lists what may make decisions worse than calibrated (a
        gallery grown past twice its 1:N calibration's size; no 1:N threshold).

        Examples:
            >>> FaceIndex(metric="cosine", dim=4).info()["count"]
            0
        """
        return describe_index(self, self._store_name)

    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Save the gallery: files for the FAISS store, the record for a database.

        With the FAISS store, saves into folder ``path`` atomically (a crash
        leaves the old or the new index): vectors (npy), ids, labels and
        metadata (JSON), the FAISS index and a checksummed manifest; never
        pickle. A Milvus store already holds every item and threshold;
        ``save()`` (no path) writes :attr:`extra` to it too. A save holds the
        folder's write lock (``.face_index.lock``) and refuses to overwrite a
        later save by another writer; :meth:`update` holds the lock from load
        to save, for several writers.

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
