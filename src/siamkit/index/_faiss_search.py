"""k-NN over the FAISS store's rows: removed rows skipped, compressed codes re-ranked.

The FAISS index still holds removed rows until they are rebuilt away, and
PQ/SQ indexes report approximate distances; these functions turn FAISS's
answers into live rows and distances in siamkit's geometry.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from siamkit.exceptions import EmptyIndexError
from siamkit.index._store import RowStore
from siamkit.index.backends import Backend, faiss_metric, to_distances

_RECOMPUTE_CHUNK = 4096  # queries per exact-distance block, to bound memory


def nearest_rows(
    rows: RowStore, backend: Backend, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, distances)``, ``(num_queries, min(k, live))``; rows -1 where none found.

    Examples:
        >>> from siamkit.index.backends import IndexSpec
        >>> store, backend = RowStore(1), Backend(IndexSpec.parse("flat"), 1, "euclidean")
        >>> store.append(np.array([[0.0], [3.0]], "float32"), [0, 1], ["a", "b"], [{}, {}])
        >>> backend.sync(store.vectors)
        >>> nearest_rows(store, backend, np.array([[2.0]], "float32"), 1, "euclidean")
        (array([[1]]), array([[1.]], dtype=float32))
    """
    if not rows.num_dead and backend.index is not None and k < rows.num_rows:
        scores, found = backend.search(queries, int(k))
        return finish(rows, queries, found, scores, backend.exact_distances, metric)
    if rows.num_alive == 0:
        raise EmptyIndexError("the index is empty: add items before searching it")
    k = min(int(k), rows.num_alive)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.zeros((len(queries), k), dtype=np.float32)
    # Removed rows are still in FAISS: fetch enough extra to cover them and
    # fetch again, twice as many, for queries that came up short.
    dead_share = rows.num_dead / rows.num_rows
    fetch = min(rows.num_rows, math.ceil(k / (1 - dead_share) * 1.5) + 8 * bool(dead_share))
    todo = np.arange(len(queries))
    while todo.size:
        exact = backend.index is None or fetch >= rows.num_rows
        found_scores, found = (
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
        out_scores[done] = np.take_along_axis(found_scores, order, axis=1)[~short]
        todo, fetch = todo[short], min(rows.num_rows, 2 * fetch)
    return finish(rows, queries, out_rows, out_scores, backend.exact_distances, metric)


def finish(
    rows: RowStore,
    queries: np.ndarray,
    found: np.ndarray,
    scores: np.ndarray,
    exact: bool,
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS scores as siamkit distances (NaN where nothing was found), re-ranked if inexact."""
    missing = found < 0
    if exact:
        distances = to_distances(scores, metric)
    else:  # compressed codes (PQ, SQ...): re-rank on the stored vectors
        distances = recompute(rows.vectors, queries, found, metric)
        order = np.argsort(np.where(missing, np.inf, distances), axis=1, kind="stable")
        found = np.take_along_axis(found, order, axis=1)
        distances = np.take_along_axis(distances, order, axis=1)
        missing = found < 0
    if missing.any():
        distances = np.where(missing, np.float32(np.nan), distances)
    return found, distances.astype(np.float32, copy=False)


def recompute(
    vectors: np.ndarray, queries: np.ndarray, found: np.ndarray, metric: str
) -> np.ndarray:
    """Exact distances from each query to its ``found`` rows (row -1 reads row 0)."""
    out = np.empty(found.shape, dtype=np.float32)
    for start in range(0, len(found), _RECOMPUTE_CHUNK):
        block = slice(start, start + _RECOMPUTE_CHUNK)
        near = vectors[np.where(found[block] < 0, 0, found[block])]
        query = queries[block][:, None, :]
        if metric == "cosine":
            out[block] = 1.0 - np.einsum("qkd,qkd->qk", near, query)
        else:
            out[block] = np.sqrt(np.einsum("qkd,qkd->qk", near - query, near - query))
    return out
