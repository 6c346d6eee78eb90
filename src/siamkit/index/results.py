"""The typed results a :class:`~siamkit.index.FaceIndex` returns."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, overload

import numpy as np

from siamkit.thresholds import FarCalibration, FpirCalibration

__all__ = [
    "Calibration",
    "Enrolled",
    "FarCalibration",
    "FpirCalibration",
    "Gallery",
    "ItemId",
    "Label",
    "Match",
    "Neighbors",
    "Record",
    "SearchResults",
    "SkippedImage",
    "Verification",
]

#: An item's id in a face index: a string or an integer (their type is kept, so
#: ``1`` and ``"1"`` are two ids).
ItemId = str | int
#: A person's label: a string or an integer.
Label = str | int


@dataclass(frozen=True)
class SkippedImage:
    """An image an add left out, and why.

    Either its encoder's aligner found no face in it (``on_missing="skip"``),
    or, in :meth:`~siamkit.FaceIndex.add_folder`, the folder listing left the
    file out (not an image siamkit reads, a link that loops or leaves the
    folder); such a file has no position.

    Attributes:
        position: Its place among the items passed (None: left out by the listing).
        path: Its file, or None for an in-memory image.
        label: The label it was given (the person folder it is in).
        id: The id it was given, or None when ids were automatic.
        reason: Why it was left out.

    Examples:
        >>> SkippedImage(2, "ann/3.jpg", "ann").reason
        'no face found'
    """

    position: int | None
    path: str | None
    label: Label
    id: ItemId | None = None
    reason: str = "no face found"


class Enrolled(list):  # type: ignore[type-arg]
    """The ids an add enrolled, in order (a plain ``list`` of them), and what it skipped.

    Attributes:
        skipped: Images left out because no face was found in them (the
            encoder's aligner has ``on_missing="skip"``) or, by ``add_folder``,
            files the folder listing left out; each says why.

    Examples:
        >>> ids = Enrolled(["a1", "a2"], [SkippedImage(1, "x.png", "ann")])
        >>> ids, ids == ["a1", "a2"], len(ids.skipped)
        (['a1', 'a2'], True, 1)
    """

    def __init__(self, ids: Sequence[ItemId] = (), skipped: Sequence[SkippedImage] = ()) -> None:
        super().__init__(ids)
        self.skipped: tuple[SkippedImage, ...] = tuple(skipped)


# Not frozen: a batch search builds one per neighbour, and frozen dataclasses
# are three times slower to create.
@dataclass(slots=True)
class Match:
    """One gallery item found near a query.

    Attributes:
        id: The item's id.
        label: The person (or class) it shows.
        distance: Its distance to the query, in the index's geometry:
            :func:`siamkit.geometry.index_distances`, the same number for a
            single query and a batch, on every built-in store, and the one
            :meth:`~siamkit.index.FaceIndex.verify` gives and calibration
            measures (equal to :func:`siamkit.geometry.pairwise_distances` to
            float32 rounding).
        metadata: The item's metadata (a copy).

    Examples:
        >>> m = Match(id="s1/1.pgm", label="s1", distance=0.12, metadata={})
        >>> m.to_dict()["label"]
        's1'
    """

    id: ItemId
    label: Label
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The match as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """The answer to "do these two faces show the same person?".

    Attributes:
        same: True when ``distance <= threshold``.
        distance: The distance between the two embeddings: the number a search
            of one reports for the other (:func:`siamkit.geometry.index_distances`).
        threshold: The decision threshold used.

    Examples:
        >>> Verification(same=True, distance=0.2, threshold=0.35).same
        True
    """

    same: bool
    distance: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-able dict."""
        return asdict(self)


#: The 1:1 threshold report of :meth:`FaceIndex.calibrate` with ``target_far``: the
#: same class as :class:`siamkit.thresholds.FarCalibration` (one family with the
#: 1:N :class:`~siamkit.thresholds.FpirCalibration`), kept under its old name.
Calibration = FarCalibration


@dataclass(frozen=True)
class Record:
    """An item stored in a face index, as :meth:`FaceIndex.get` returns it.

    Attributes:
        id: The item's id.
        label: The person it shows.
        metadata: Its metadata (a copy).
        embedding: Its stored embedding (L2-normalised for the cosine metric).

    Examples:
        >>> Record("a", "ann", {}, np.zeros(2, dtype="float32")).label
        'ann'
    """

    id: ItemId
    label: Label
    metadata: dict[str, Any]
    embedding: np.ndarray


@dataclass(frozen=True)
class Neighbors:
    """Batch search results as arrays, for bulk work where ``Match`` objects cost too much.

    Row ``i`` holds query ``i``'s neighbours, nearest first. When an approximate
    index finds fewer than ``k``, the row is padded with ``None`` ids and labels
    and NaN distances.

    Attributes:
        ids: ``(num_queries, k)`` object array of ids.
        labels: ``(num_queries, k)`` object array of labels.
        distances: ``(num_queries, k)`` float32 distances.

    Examples:
        >>> n = Neighbors(np.array([["a"]], dtype=object), np.array([["ann"]], dtype=object),
        ...               np.zeros((1, 1), dtype="float32"))
        >>> n.ids.shape
        (1, 1)
    """

    ids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True)
class Gallery:
    """The live items of a store, in its geometry (embeddings prepared as stored).

    What ``VectorStore.gallery`` returns and calibration reads.

    Examples:
        >>> one = np.array(["a"], object)
        >>> Gallery(np.zeros((1, 2), "float32"), one, one).size
        1
    """

    vectors: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    @property
    def size(self) -> int:
        """The number of items."""
        return len(self.labels)


class SearchResults(Sequence[list[Match]]):
    """A batch search's answers: a list of :class:`Match` lists, built as they are read.

    Row ``i`` is query ``i``'s matches, nearest first. The ids, labels and
    distances are taken from the index when the search runs (a consistent
    snapshot, whatever changes the index afterwards); the ``Match`` objects are
    only created when a row is read, and kept, so code that looks at a few rows,
    or uses the arrays, does not pay for the rest. Compares equal to the
    list of lists it stands for.

    Attributes:
        ids: ``(num_queries, k)`` object array of ids, ``None`` where an
            approximate index found fewer than ``k``.
        labels: ``(num_queries, k)`` object array of labels, likewise.
        distances: ``(num_queries, k)`` float32 distances, NaN likewise.

    Examples:
        >>> results = SearchResults(
        ...     np.array([["a", "b"]], dtype=object), np.array([["ann", "bob"]], dtype=object),
        ...     np.array([[0.1, 0.4]], dtype="float32"), np.array([[0, 1]]), [{}, {}])
        >>> [m.id for m in results[0]], len(results)
        (['a', 'b'], 1)
    """

    __slots__ = ("_built", "_metadata", "_rows", "distances", "ids", "labels")

    def __init__(
        self,
        ids: np.ndarray,
        labels: np.ndarray,
        distances: np.ndarray,
        rows: np.ndarray,
        metadata: list[dict[str, Any]],
    ) -> None:
        self.ids = ids
        self.labels = labels
        self.distances = distances
        # The index's row numbers (-1: nothing found) and its metadata list, which
        # only ever grows at the end, so these rows keep pointing at these items.
        self._rows = rows
        self._metadata = metadata
        self._built: list[list[Match] | None] = [None] * len(rows)

    @classmethod
    def from_lists(
        cls,
        ids: Sequence[Sequence[Any]],
        labels: Sequence[Sequence[Any]],
        distances: Sequence[Sequence[float]] | np.ndarray,
        metadata: Sequence[Sequence[dict[str, Any]]] | None = None,
    ) -> SearchResults:
        """Results from per-query lists (what a store built on a database has at hand).

        Query ``q`` found ``len(ids[q])`` items, nearest first; ``distances[q]``
        holds at least as many numbers (more are ignored, so a padded array
        works). Rows that found fewer than the widest are padded with ``None``
        and NaN, as every search pads them.

        Examples:
            >>> found = SearchResults.from_lists([[1, 2], [3]], [["a", "b"], ["c"]],
            ...                                  [[0.1, 0.2], [0.3]])
            >>> found.ids.tolist(), [m.label for m in found[1]]
            ([[1, 2], [3, None]], ['c'])
        """
        queries = len(ids)
        width = max((len(row) for row in ids), default=0)
        id_array = np.full((queries, width), None, dtype=object)
        label_array = np.full((queries, width), None, dtype=object)
        distance_array = np.full((queries, width), np.nan, dtype=np.float32)
        rows = np.full((queries, width), -1, dtype=np.int64)
        flat: list[dict[str, Any]] = []
        for q, found in enumerate(ids):
            count = len(found)
            id_array[q, :count] = _objects(found)
            label_array[q, :count] = _objects(labels[q])
            distance_array[q, :count] = np.asarray(distances[q], dtype=np.float32)[:count]
            rows[q, :count] = np.arange(len(flat), len(flat) + count)
            flat.extend(metadata[q] if metadata else [{}] * count)
        return cls(id_array, label_array, distance_array, rows, flat)

    @classmethod
    def empty(cls, k: int) -> SearchResults:
        """The answers to a batch of no queries."""
        nothing = np.empty((0, k), dtype=object)
        return cls(nothing, nothing.copy(), np.empty((0, k), np.float32), np.empty((0, k), int), [])

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, position: int) -> list[Match]: ...

    @overload
    def __getitem__(self, position: slice) -> list[list[Match]]: ...

    def __getitem__(self, position: int | slice) -> list[Match] | list[list[Match]]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        position = range(len(self))[position]  # negative positions; IndexError past the end
        row = self._built[position]
        if row is None:
            row = self._built[position] = self._build(position)
        return row

    def __iter__(self) -> Iterator[list[Match]]:
        if any(row is None for row in self._built):
            with _gc_paused():
                self._build_all()
        return iter(self._built)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SearchResults({len(self)} queries, k={self._rows.shape[1]})"

    def to_list(self) -> list[list[Match]]:
        """Every row as a plain list of lists of :class:`Match`."""
        return list(self)

    def _build(self, position: int) -> list[Match]:
        rows = self._rows[position].tolist()
        values = zip(
            self.ids[position].tolist(),
            self.labels[position].tolist(),
            self.distances[position].tolist(),
            rows,
            strict=True,
        )
        meta = self._metadata
        return [Match(i, label, d, dict(meta[r])) for i, label, d, r in values if r >= 0]

    def _build_all(self) -> None:
        if (self._rows < 0).any():  # some rows came up short: build them one by one
            self._built = [
                row if row is not None else self._build(i) for i, row in enumerate(self._built)
            ]
            return
        # One flat map() over all neighbours: a third faster than row by row.
        metadata = map(dict, map(self._metadata.__getitem__, self._rows.ravel().tolist()))
        matches = list(
            map(
                Match,
                self.ids.ravel().tolist(),
                self.labels.ravel().tolist(),
                self.distances.ravel().tolist(),
                metadata,
            )
        )
        k = self._rows.shape[1]
        fresh = (matches[start : start + k] for start in range(0, len(matches), k))
        # Rows already read keep their objects: a row is the same list every time.
        self._built = [
            old if old is not None else new for old, new in zip(self._built, fresh, strict=True)
        ]


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (NumPy would make tuples into a 2-d array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while making many objects.

    A batch of 10,000 queries makes 100,000 matches, which sets off full
    collections of the whole heap (150 ms in a process that has imported
    torch) and doubled the time to read every row. Matches hold no cycles, so
    there is nothing for those collections to find. Like Mercurial's
    ``util.nogc``; left alone when the collector is already off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
