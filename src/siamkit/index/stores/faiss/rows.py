"""The authoritative records of a face index: one row per item, removed rows flagged."""

from __future__ import annotations

from typing import Any

import numpy as np


class RowStore:
    """Vectors, ids, labels, metadata and an alive flag per row, grown in place.

    Rows are never reused: a removed row stays (flagged dead) until
    :meth:`compact`, so row numbers stay valid FAISS ids in between.

    Examples:
        >>> store = RowStore(2)
        >>> store.append(np.ones((2, 2), dtype="float32"), ["a", "b"], ["x", "y"], [{}, {}])
        >>> store.kill([0]); store.num_alive, store.num_dead
        (1, 1)
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.num_rows = 0
        self.num_dead = 0
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.empty(0, dtype=object)
        self._labels = np.empty(0, dtype=object)
        self._alive = np.zeros(0, dtype=bool)
        # Append-only (compact makes new lists): search results keep a reference
        # and read their rows' metadata after the index lock is released.
        self.metadata: list[dict[str, Any]] = []
        # The ids and labels again, as lists: a single-query search reads ten of
        # them, and indexing a NumPy object array costs it ~1 µs each, cold.
        self.id_list: list[Any] = []
        self.label_list: list[Any] = []
        self.row_of: dict[Any, int] = {}

    @property
    def num_alive(self) -> int:
        """Rows not removed: the items of the index."""
        return self.num_rows - self.num_dead

    @property
    def vectors(self) -> np.ndarray:
        """``(num_rows, dim)`` stored vectors, removed rows included (a view)."""
        return self._vectors[: self.num_rows]

    @property
    def ids(self) -> np.ndarray:
        """Object array of each row's id (a view)."""
        return self._ids[: self.num_rows]

    @property
    def labels(self) -> np.ndarray:
        """Object array of each row's label (a view)."""
        return self._labels[: self.num_rows]

    @property
    def alive(self) -> np.ndarray:
        """Boolean array, False for removed rows (a view)."""
        return self._alive[: self.num_rows]

    def append(
        self,
        vectors: np.ndarray,
        ids: list[Any],
        labels: list[Any],
        metadata: list[dict[str, Any]],
    ) -> None:
        """Add rows at the end; the caller has checked the ids are new."""
        count = len(vectors)
        self._reserve(self.num_rows + count)
        start, stop = self.num_rows, self.num_rows + count
        self._vectors[start:stop] = vectors
        self._ids[start:stop] = _object_array(ids)
        self._labels[start:stop] = _object_array(labels)
        self._alive[start:stop] = True
        self.metadata.extend(metadata)
        self.id_list.extend(ids)
        self.label_list.extend(labels)
        self.row_of.update(zip(ids, range(start, stop), strict=True))
        self.num_rows = stop

    def kill(self, rows: list[int]) -> None:
        """Flag rows removed and forget their ids."""
        for row in rows:
            del self.row_of[self._ids[row]]
        self._alive[rows] = False
        self.num_dead += len(rows)

    def restore_removed(self, rows: list[int]) -> None:
        """Flag rows removed while loading: a removed row may share its id with the
        row that replaced it (an upsert), so the id map is rebuilt from live rows."""
        self._alive[rows] = False
        self.num_dead = len(rows)
        live = np.flatnonzero(self.alive).tolist()
        self.row_of = {self._ids[row]: row for row in live}

    def compact(self) -> None:
        """Drop removed rows, renumbering the others in order."""
        keep = np.flatnonzero(self.alive)
        self._vectors = np.ascontiguousarray(self.vectors[keep])
        self._ids = self.ids[keep]
        self._labels = self.labels[keep]
        self._alive = np.ones(len(keep), dtype=bool)
        self.metadata = [self.metadata[row] for row in keep.tolist()]
        self.id_list, self.label_list = self._ids.tolist(), self._labels.tolist()
        self.num_rows, self.num_dead = len(keep), 0
        self.row_of = dict(zip(self.id_list, range(len(keep)), strict=True))

    def _reserve(self, rows: int) -> None:
        capacity = len(self._vectors)
        if rows <= capacity:
            return
        # Doubling keeps a long run of small adds linear in time.
        capacity = max(rows, 2 * capacity if capacity else rows)
        vectors = np.empty((capacity, self.dim), dtype=np.float32)
        vectors[: self.num_rows] = self.vectors
        self._vectors = vectors
        self._ids = _grow(self._ids, capacity, object)
        self._labels = _grow(self._labels, capacity, object)
        self._alive = _grow(self._alive, capacity, bool)


def _grow(array: np.ndarray, capacity: int, dtype: Any) -> np.ndarray:
    grown = np.zeros(capacity, dtype=dtype)
    grown[: len(array)] = array
    return grown


def _object_array(values: list[Any]) -> np.ndarray:
    # np.array(list_of_lists_or_tuples, dtype=object) would build a 2-D array.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
