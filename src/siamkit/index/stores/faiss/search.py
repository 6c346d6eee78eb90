"""k-NN over the FAISS store's rows: removed rows skipped, every distance exact.

The FAISS index still holds removed rows until they are rebuilt away, and its
scores are float32 approximations (compressed codes: rough ones); these
functions turn FAISS's answers into live rows and the distances of
:func:`siamkit.geometry.index_distances`, which verify and calibration use too.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from siamkit.exceptions import EmptyIndexError
from siamkit.geometry import index_distance_list, index_distances
from siamkit.index.stores.faiss.engine import Backend, faiss_metric
from siamkit.index.stores.faiss.rows import RowStore

_RECOMPUTE_VALUES = 1 << 22  # float64 differences per block of exact distances


def nearest_rows(
    rows: RowStore, backend: Backend, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, distances)``, ``(num_queries, min(k, live))``; rows -1 where none found.

    Examples:
        >>> from siamkit.index.stores.faiss.engine import IndexSpec
        >>> store, backend = RowStore(1), Backend(IndexSpec.parse("flat"), 1, "euclidean")
        >>> store.append(np.array([[0.0], [3.0]], "float32"), [0, 1], ["a", "b"], [{}, {}])
        >>> backend.sync(store.vectors)
        >>> nearest_rows(store, backend, np.array([[2.0]], "float32"), 1, "euclidean")
        (array([[1]]), array([[1.]], dtype=float32))
    """
    if not rows.num_dead and backend.index is not None and k < rows.num_rows:
        _, found = backend.search(queries, int(k))
        return finish(rows, queries, found, metric)
    if rows.num_alive == 0:
        raise EmptyIndexError("the index is empty: add items before searching it")
    k = min(int(k), rows.num_alive)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    # Removed rows are still in FAISS: fetch enough extra to cover them and
    # fetch again, twice as many, for queries that came up short.
    dead_share = rows.num_dead / rows.num_rows
    fetch = min(rows.num_rows, math.ceil(k / (1 - dead_share) * 1.5) + 8 * bool(dead_share))
    todo = np.arange(len(queries))
    while todo.size:
        exact = backend.index is None or fetch >= rows.num_rows
        _, found = (
            faiss.knn(queries[todo], rows.vectors, fetch, metric=faiss_metric(metric))
            if exact
            else backend.search(queries[todo], fetch)
        )
        valid = found >= 0
        if rows.num_dead:
            valid &= rows.alive[np.where(valid, found, 0)]
        short = (valid.sum(axis=1) < k) & (found[:, -1] >= 0) & (fetch < rows.num_rows)
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(valid, order, axis=1)
        done = todo[~short]
        out_rows[done] = np.where(keep, np.take_along_axis(found, order, axis=1), -1)[~short]
        todo, fetch = todo[short], min(rows.num_rows, 2 * fetch)
    return finish(rows, queries, out_rows, metric)


def finish(
    rows: RowStore, queries: np.ndarray, found: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's rows with siamkit's distances (NaN where nothing was found), nearest first.

    FAISS's own scores only pick the rows: every distance is worked out again
    from the stored vectors by :func:`siamkit.geometry.index_distances`, the
    function verify and calibration use, so a pair has one distance whichever
    entry point asks. (FAISS's float32 scores differ from it in the last
    digits, and between its single-query and batch kernels; compressed codes
    give approximations.) Ties are put in row order, so a single query and a
    batch list equal distances alike.
    """
    missing = found < 0
    distances = recompute(rows.vectors, queries, found, metric)
    # Nearest first; ties in row order, what was not found last.
    order = np.lexsort(
        (np.where(missing, rows.num_rows, found), np.where(missing, np.inf, distances))
    )
    found = np.take_along_axis(found, order, axis=1)
    distances = np.take_along_axis(distances, order, axis=1)
    if missing.any():
        distances = np.where(found < 0, np.float32(np.nan), distances)
    return found, distances


def nearest_one(
    vectors: np.ndarray, query: np.ndarray, found: np.ndarray, metric: str
) -> tuple[list[int], list[float]]:
    """:func:`finish` for one query (``(1, D)``, prepared) as lists; rows -1 left out.

    Examples:
        >>> v = np.array([[0.0], [3.0], [1.0]], dtype="float32")
        >>> nearest_one(v, np.array([[2.0]], "float32"), np.array([1, 2, -1]), "euclidean")
        ([1, 2], [1.0, 1.0])
    """
    rows = found.tolist()
    if -1 in rows:
        rows = [row for row in rows if row >= 0]
        found = np.array(rows, dtype=np.int64)
    distances = index_distance_list(vectors.take(found, axis=0), query, metric)
    ranked = sorted(zip(distances, rows, strict=True))  # as finish: ties in row order
    return [row for _, row in ranked], [distance for distance, _ in ranked]


def recompute(
    vectors: np.ndarray, queries: np.ndarray, found: np.ndarray, metric: str
) -> np.ndarray:
    """Each query's :func:`~siamkit.geometry.index_distances` to its ``found`` rows (-1 reads 0)."""
    out = np.empty(found.shape, dtype=np.float32)
    if not out.size:
        return out
    # Queries per block: about 4M float64 differences at a time, to bound memory.
    step = max(1, _RECOMPUTE_VALUES // max(1, found.shape[1] * vectors.shape[1]))
    for start in range(0, len(found), step):
        block = slice(start, start + step)
        near = vectors[np.where(found[block] < 0, 0, found[block])]
        out[block] = index_distances(near, queries[block][:, None, :], metric)
    return out
