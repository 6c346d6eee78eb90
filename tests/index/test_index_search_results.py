"""Batch results made as they are read, and the single-query fast path, against the general path."""

from __future__ import annotations

import gc
import threading

import faiss
import numpy as np
import pytest

import siamkit
from siamkit.geometry import pairwise_distances
from siamkit.index import FaceIndex, Match, SearchResults
from siamkit.index.stores.faiss.engine import unscaled_query_distances
from siamkit.index.stores.faiss.rwlock import RWLock

faiss.omp_set_num_threads(2)


def gallery(n: int = 60, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), [f"p{i // 3}" for i in range(n)]


def filled(kind: str = "flat", metric: str = "cosine") -> tuple[FaceIndex, np.ndarray]:
    vectors, labels = gallery()
    index = FaceIndex(metric=metric, index=kind, dim=8)
    ids = [f"item{i}" for i in range(len(vectors))]
    index.add(vectors, labels=labels, ids=ids, metadata=[{"n": i} for i in range(len(vectors))])
    return index, vectors


def eager(index: FaceIndex, queries: np.ndarray, k: int) -> list[list[tuple]]:
    """What each row must hold, from knn's arrays and the stored metadata."""
    found = index.knn(queries, k)
    rows = []
    for ids, labels, distances in zip(found.ids, found.labels, found.distances, strict=True):
        rows.append(
            [
                (i, label, float(d), index.get(i).metadata)
                for i, label, d in zip(ids, labels, distances, strict=True)
                if i is not None
            ]
        )
    return rows


def as_tuples(row: list[Match]) -> list[tuple]:
    return [(m.id, m.label, m.distance, m.metadata) for m in row]


# -- SearchResults ----------------------------------------------------------------------
def test_rows_read_one_by_one_or_all_at_once_are_the_same_matches() -> None:
    index, vectors = filled()
    queries = vectors[:7] + 0.05
    expected = eager(index, queries, 4)
    one_by_one = index.search(queries, k=4)
    assert isinstance(one_by_one, SearchResults) and len(one_by_one) == 7
    assert [as_tuples(one_by_one[i]) for i in range(7)] == expected
    all_at_once = index.search(queries, k=4)
    assert [as_tuples(row) for row in all_at_once] == expected  # iteration builds every row
    assert [as_tuples(row) for row in all_at_once.to_list()] == expected
    assert all_at_once == one_by_one == all_at_once.to_list()
    assert all_at_once != one_by_one[:6]


def test_results_behave_like_a_list_of_lists() -> None:
    index, vectors = filled()
    results = index.search(vectors[:5], k=3)
    rows = results.to_list()
    assert results[-1] == rows[-1] and results[1:4] == rows[1:4] and results[::2] == rows[::2]
    assert results[0] is results[0]  # a row is built once and kept
    assert list(results)[2] is results[2]
    with pytest.raises(IndexError):
        results[5]
    assert results.ids.shape == results.labels.shape == results.distances.shape == (5, 3)
    assert results.ids[0].tolist() == [m.id for m in rows[0]]
    np.testing.assert_array_equal(results.distances[0], [m.distance for m in rows[0]])
    assert "5 queries" in repr(results)
    with pytest.raises(TypeError):
        hash(results)


def test_reading_every_row_holds_off_the_garbage_collector_and_restores_it() -> None:
    index, vectors = filled()
    queries = np.repeat(vectors, 40, axis=0)  # 2,400 queries, 24,000 matches
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    results = index.search(queries, k=10)
    gc.collect()  # counts from zero: the few objects made before the pause set off nothing
    gc.callbacks.append(count)
    try:
        rows = results.to_list()
    finally:
        gc.callbacks.remove(count)
    # At most the one young-generation pass the pause defers; never a full one.
    assert collections in ([], [0]) and gc.isenabled()
    assert len(rows) == 2400 and all(len(row) == 10 for row in rows)
    gc.disable()
    try:
        index.search(queries[:5], k=3).to_list()
        assert not gc.isenabled()  # left off, as the caller had it
    finally:
        gc.enable()


def test_match_metadata_is_a_copy() -> None:
    index, vectors = filled()
    row = index.search(vectors[:2], k=1)[0]
    row[0].metadata["n"] = -1
    assert index.get(row[0].id).metadata["n"] != -1


def test_results_are_a_snapshot_of_the_index_when_searched() -> None:
    index, vectors = filled()
    queries = vectors[:10]
    expected = eager(index, queries, 3)
    results = index.search(queries, k=3)
    first = results[0]
    # Remove most items (the index compacts and renumbers its rows), add others.
    index.remove([f"item{i}" for i in range(40)])
    assert index.store.rows.num_dead == 0  # compacted
    index.add(vectors[:20] * 2, labels="new", ids=[f"new{i}" for i in range(20)])
    assert results[0] is first
    assert [as_tuples(row) for row in results] == expected


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_rows_short_of_k_leave_the_missing_out(kind: str) -> None:
    index, vectors = filled(kind)
    index.remove([f"item{i}" for i in range(5)])  # dead rows: the filtering path
    results = index.search(vectors[:4], k=len(index) + 10)
    assert results.ids.shape[1] == len(index)  # k capped at the items there are
    for row in results:
        assert len(row) == len(index)
        assert all(np.isfinite(m.distance) for m in row)
    # An approximate search that finds fewer than k: None ids, NaN distances.
    rows = np.array([[3, -1]])
    short = SearchResults(
        np.array([["a", None]], dtype=object),
        np.array([["ann", None]], dtype=object),
        np.array([[0.25, np.nan]], dtype=np.float32),
        rows,
        [{}, {}, {}, {"n": 3}],
    )
    assert as_tuples(short[0]) == [("a", "ann", 0.25, {"n": 3})]
    assert [as_tuples(r) for r in short] == [[("a", "ann", 0.25, {"n": 3})]]


def test_empty_batch_gives_empty_results_even_from_an_empty_index() -> None:
    index = FaceIndex(metric="cosine", dim=8)
    results = index.search(np.zeros((0, 8), dtype=np.float32), k=3)
    assert len(results) == 0 and results == [] and results.ids.shape == (0, 3)


def test_identify_a_batch_reads_the_results() -> None:
    index, vectors = filled()
    answers = index.identify(vectors[[0, 4]] + 0.01, threshold=0.5)
    assert [a.id for a in answers] == ["item0", "item4"]
    assert index.identify(-vectors[[0]], threshold=0.01) == [None]


# -- one query --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "IVF4,PQ4"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_one_query_answers_as_a_batch_of_one(kind: str, metric: str) -> None:
    index, vectors = filled(kind, metric)
    for query in vectors[:5] * 3 + 0.1:
        single = index.search(query, k=5)
        batch = index.search(query[None], k=5)[0]
        as_float64 = index.search(query.astype(np.float64), k=5)  # the general path
        assert [m.id for m in single] == [m.id for m in batch] == [m.id for m in as_float64]
        assert [m.metadata for m in single] == [m.metadata for m in batch]
        np.testing.assert_allclose(
            [m.distance for m in single], [m.distance for m in batch], atol=1e-6
        )
    index.remove(["item0"])  # a removed item: the filtering path
    assert "item0" not in [m.id for m in index.search(vectors[0], k=5)]


def test_one_query_may_be_a_strided_or_read_only_view() -> None:
    index, vectors = filled("hnsw")
    strided = np.repeat(vectors[3], 2)[::2]  # every other element of a copy
    assert not strided.flags["C_CONTIGUOUS"]
    read_only = vectors[3].copy()
    read_only.setflags(write=False)
    expected = [m.id for m in index.search(vectors[3], k=4)]
    assert expected[0] == "item3"
    assert [m.id for m in index.search(strided, k=4)] == expected
    assert [m.id for m in index.search(read_only, k=4)] == expected


def test_one_query_refuses_what_a_batch_refuses() -> None:
    index, vectors = filled()
    for bad in (np.nan, np.inf, -np.inf):
        query = vectors[0].copy()
        query[3] = bad
        with pytest.raises(siamkit.NonFiniteError, match="NaN or infinity"):
            index.search(query)
    with pytest.raises(siamkit.ShapeError, match=r"\(N, 8\)"):
        index.search(vectors[0][:7])
    huge = vectors[0] * np.float32(1e30)  # squares overflow: refused by both paths
    for query in (huge, huge[None]):
        with pytest.raises(siamkit.NonFiniteError, match="norm above"):
            index.search(query, k=2)


def test_one_query_distances_are_the_geometry_distances() -> None:
    vectors, _ = gallery(40, 16, seed=4)
    for metric in ("cosine", "euclidean"):
        index = FaceIndex(metric=metric, index="hnsw", dim=16)
        index.add(vectors, labels="x")
        for query in vectors[:5] * 7 + 0.3:  # far from unit length
            matches = index.search(query, k=6)
            expected = pairwise_distances(query[None], vectors[[m.id for m in matches]], metric)
            np.testing.assert_allclose([m.distance for m in matches], expected[0], atol=1e-5)
            truth = np.argsort(pairwise_distances(query[None], vectors, metric)[0])[:6]
            assert [m.id for m in matches] == truth.tolist()
    assert unscaled_query_distances([2.0, -4.0], "cosine", 4.0) == [0.5, 2.0]
    assert unscaled_query_distances([1.0, 0.0], "cosine", 0.0) == [1.0 - 1e12, 1.0]
    assert unscaled_query_distances([9.0, -1e-7], "euclidean", 1.0) == [3.0, 0.0]


# -- the lock ---------------------------------------------------------------------------
def test_lock_shares_reading_and_a_writer_waits_for_readers() -> None:
    lock = RWLock()
    events: list[str] = []
    reading, release = threading.Event(), threading.Event()

    def reader() -> None:
        with lock.read():
            reading.set()
            release.wait(5)
            events.append("read done")

    def writer() -> None:
        with lock.write():
            events.append("write")

    first = threading.Thread(target=reader)
    first.start()
    assert reading.wait(5)
    with lock.read():  # a second reader gets in while the first holds the lock
        events.append("second read")
    second = threading.Thread(target=writer)
    second.start()
    second.join(0.2)
    assert second.is_alive() and "write" not in events  # the writer waits for the reader
    release.set()
    first.join(5)
    second.join(5)
    assert events == ["second read", "read done", "write"]
    with pytest.raises(RuntimeError), lock.write():  # an exception inside releases the lock
        raise RuntimeError
    with lock.read():
        pass
