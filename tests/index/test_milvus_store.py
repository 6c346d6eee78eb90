"""The Milvus store on Milvus Lite: exactness against brute force, ids, metadata, faults."""

from __future__ import annotations

import time

import numpy as np
import pytest

from siamkit.exceptions import (
    ConfigError,
    DuplicateIdError,
    EncoderMismatchError,
    GeometryError,
    IndexFileError,
    NonFiniteError,
    ShapeError,
    UnknownIdError,
)
from siamkit.index.stores.base import store_registry

pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
from siamkit.index.stores.milvus import MilvusStore, connect_client

DIM = 16


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    client = connect_client(str(tmp_path_factory.mktemp("milvus") / "lite.db"))
    yield client
    client.close()


@pytest.fixture
def make_store(client, request):
    made = []

    def make(metric: str = "euclidean", index: str = "flat", name: str | None = None, **kw):
        name = name or f"t_{request.node.name[:40]}_{len(made)}".replace("[", "_").replace("]", "")
        store = MilvusStore("lite", name, dim=kw.pop("dim", DIM), metric=metric, index=index,
                            client=client, **kw)  # fmt: skip
        made.append(store)
        return store

    yield make
    for store in made:
        if client.has_collection(store.collection):
            store.drop()


def _gallery(n: int = 60, seed: int = 0) -> tuple[np.ndarray, list[int], list[str]]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors, list(range(n)), [f"p{i % 7}" for i in range(n)]


def _brute(gallery: np.ndarray, queries: np.ndarray, metric: str, k: int):
    if metric == "cosine":
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1.0 - queries @ gallery.T
    else:
        d = np.linalg.norm(queries[:, None] - gallery[None], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_search_equals_brute_force_in_siamkits_geometry(make_store, metric) -> None:
    store = make_store(metric)
    vectors, ids, labels = _gallery()
    assert store.add(ids, vectors, labels) == 60 and store.count() == 60
    queries = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
    hits = store.search(queries, k=4)
    order, expected = _brute(vectors, queries, metric, 4)
    assert hits.ids.tolist() == order.tolist()
    assert hits.labels.tolist() == [[labels[i] for i in row] for row in order]
    np.testing.assert_allclose(hits.distances, expected, atol=1e-4)


def test_fewer_items_than_k_give_fewer_matches(make_store) -> None:
    # Since 0.2 a store answers SearchResults (padded with None/NaN where a row of a
    # batch found fewer than others), not StoreHits padded with inf.
    store = make_store()
    store.add(["a", "b"], np.eye(2, DIM, dtype=np.float32), ["x", "y"])
    hits = store.search(np.eye(1, DIM, dtype=np.float32), k=3)
    assert hits.ids.tolist() == [["a", "b"]] and [m.label for m in hits[0]] == ["x", "y"]
    assert hits.distances.shape == (1, 2) and np.isfinite(hits.distances).all()


def test_records_round_trip_with_their_types(make_store) -> None:
    store = make_store()
    vectors = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    store.add([7, "7", "x/y"], vectors, [1, "bob", "bob"], [{"path": "a.jpg"}, {}, {"n": 2}])
    first, second, third = store.get([7, "7", "x/y"])
    assert (first.id, first.label, first.metadata) == (7, 1, {"path": "a.jpg"})
    assert (second.id, second.label, third.metadata) == ("7", "bob", {"n": 2})
    np.testing.assert_array_equal(third.vector, vectors[2])
    every = [item.id for batch in store.items(batch_size=2) for item in batch]
    assert sorted(map(str, every)) == ["7", "7", "x/y"]
    with pytest.raises(UnknownIdError, match="'nope'"):
        store.get(["nope"])


def test_duplicates_upsert_and_an_interrupted_enrolment(make_store) -> None:
    store = make_store()
    vectors, ids, labels = _gallery(20)
    store.add(ids[:8], vectors[:8], labels[:8])  # the run that was interrupted
    with pytest.raises(DuplicateIdError, match="existing='skip'"):
        store.add(ids, vectors, labels)
    assert store.count() == 8  # nothing written by the refused call
    assert store.add(ids, vectors, labels, existing="skip") == 12  # the re-run
    assert store.count() == 20
    with pytest.raises(DuplicateIdError, match="repeated"):
        store.add([100, 100], vectors[:2], ["a", "a"])
    store.upsert([3], vectors[:1] * 0 + 1, ["renamed"])
    assert store.get([3])[0].label == "renamed" and store.count() == 20


def test_remove(make_store) -> None:
    store = make_store()
    vectors, ids, labels = _gallery(10)
    store.add(ids, vectors, labels)
    assert store.remove([1, 2]) == 2 and store.count() == 8
    with pytest.raises(UnknownIdError):
        store.remove([1])
    assert store.remove([1, 3], missing_ok=True) == 1
    hits = store.search(vectors[1:2], k=8)
    assert 1 not in hits.ids[0].tolist() and len(hits[0]) == 7


def test_meta_and_reopening_checks_the_geometry(make_store, client) -> None:
    store = make_store("cosine", name="reopen_me")
    store.set_meta({"encoder": {"fingerprint": "abc"}, "threshold": 0.4})
    reopened = MilvusStore("lite", "reopen_me", client=client)
    assert (reopened.dim, reopened.metric) == (DIM, "cosine")
    assert reopened.get_meta()["threshold"] == 0.4
    with pytest.raises(EncoderMismatchError, match="16-d"):
        MilvusStore("lite", "reopen_me", dim=8, client=client)
    with pytest.raises(GeometryError, match="cosine"):
        MilvusStore("lite", "reopen_me", metric="euclidean", client=client)
    with pytest.raises(IndexFileError, match="give dim and metric"):
        MilvusStore("lite", "never_made", client=client)


def test_hnsw_and_ivf_find_the_exact_neighbours_of_a_small_gallery(make_store) -> None:
    vectors, ids, labels = _gallery(200, seed=3)
    queries = vectors[:10] + 0.01
    order, _ = _brute(vectors, queries, "cosine", 1)
    for kind in ("hnsw", "ivf"):
        store = make_store("cosine", index=kind)
        store.add(ids, vectors, labels)
        assert [row[0] for row in store.search(queries, k=1).ids] == order[:, 0].tolist()


def test_bad_input_is_typed(make_store) -> None:
    store = make_store("cosine")
    with pytest.raises(ShapeError):
        store.add([1], np.zeros((1, 3), np.float32), ["a"])
    with pytest.raises(NonFiniteError, match="zero vector"):  # every store's rule
        store.add([1], np.zeros((1, DIM), np.float32), ["a"])
    with pytest.raises(ConfigError, match="one of each"):
        store.add([1, 2], np.ones((1, DIM), np.float32), ["a"])
    with pytest.raises(ConfigError, match="ints or strings"):
        store.add([1.5], np.ones((1, DIM), np.float32), ["a"])
    with pytest.raises(ConfigError):
        store.search(np.ones((1, DIM), np.float32), k=0)
    with pytest.raises(ConfigError):
        make_store(index="annoy")


def test_an_unreachable_server_is_a_clear_error_in_bounded_time() -> None:
    started = time.perf_counter()
    with pytest.raises(IndexFileError, match=r"http://127\.0\.0\.1:9 after 2 tries"):
        MilvusStore("http://127.0.0.1:9", "faces", dim=DIM, metric="cosine", retries=2)
    assert time.perf_counter() - started < 60


def test_the_store_is_registered() -> None:
    assert store_registry.get("milvus") is MilvusStore


# -- hostile input: what Milvus cannot keep is refused before anything is written ------------
def test_ids_and_labels_over_the_key_limit_are_refused_quietly(make_store, caplog) -> None:
    store = make_store()
    vectors = np.ones((2, DIM), np.float32)
    with caplog.at_level("DEBUG"):
        with pytest.raises(ConfigError, match="1024"):
            store.add(["ok", "x" * 2000], vectors, ["a", "a"])
        with pytest.raises(ConfigError, match="1024"):
            store.upsert(["ok"], vectors[:1], ["é" * 200])  # 1,200 characters once encoded
    assert store.count() == 0, "nothing of a refused call is written"
    assert not [r for r in caplog.records if r.levelno >= 30], "the library stays quiet"
    key = "é" * 170  # 1,020 characters encoded: within the limit
    assert store.add([key], vectors[:1], [key]) == 1 and store.get([key])[0].label == key


def test_metadata_milvus_cannot_keep_is_refused_before_writing(make_store, caplog) -> None:
    store = make_store()
    vectors = np.ones((2, DIM), np.float32)
    edge = {"n": [2**63 - 1, -(2**63)], "f": 1e308}
    bad = [{"n": {"deep": [1, 2**64]}}, {"path": "caf\udce9.jpg"}]  # \udce9: a Latin-1 file name
    with caplog.at_level("DEBUG"):
        for meta in bad:
            with pytest.raises(ConfigError, match="metadata of item 1"):
                store.add(["a", "b"], vectors, ["p", "p"], [edge, meta])
    assert store.count() == 0
    assert not [r for r in caplog.records if r.levelno >= 30]
    store.add(["a"], vectors[:1], ["p"], [edge])
    assert store.get(["a"])[0].metadata == edge


def test_ids_from_file_names_in_another_encoding_round_trip(make_store) -> None:
    # os.listdir gives a Latin-1 name on a UTF-8 system as lone surrogates (surrogateescape).
    name = b"caf\xe9/1.jpg".decode("utf-8", "surrogateescape")
    store = make_store()
    store.add([name, 'say "hi"\\'], np.eye(2, DIM, dtype=np.float32), [name, "b"])
    item = store.get([name])[0]
    assert (item.id, item.label) == (name, name)
    assert store.search(np.eye(1, DIM, dtype=np.float32), k=1).ids.tolist() == [[name]]
    assert store.existing_ids([name, "other"]) == {name}
    assert store.remove([name]) == 1 and store.count() == 1


def test_search_settings_are_checked_when_changed(make_store) -> None:
    store = make_store(index="hnsw")
    store.ef_search = 48
    assert store.describe()["ef_search"] == 48
    for name, value in [("ef_search", 0), ("ef_search", -1), ("nprobe", 2.5), ("nprobe", True)]:
        with pytest.raises(ConfigError, match=name):
            setattr(store, name, value)
    assert (store.ef_search, store.nprobe) == (48, 16)


def test_milvus_failures_are_typed_errors_and_quiet(make_store, client, caplog) -> None:
    store = make_store()
    store.add([1], np.ones((1, DIM), np.float32), ["a"])
    client.drop_collection(store.collection)  # another process dropped it
    with caplog.at_level("DEBUG"):
        for call in (lambda: store.search(np.ones((1, DIM), np.float32), k=1),
                     lambda: store.add([2], np.ones((1, DIM), np.float32), ["a"]),
                     store.count, store.get_meta):  # fmt: skip
            with pytest.raises(IndexFileError, match=store.collection):
                call()
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_a_bad_uri_is_refused_at_once_without_retrying(tmp_path) -> None:
    started = time.perf_counter()
    for uri in (str(tmp_path / "no" / "such" / "faces.db"), str(tmp_path / "faces.txt")):
        with pytest.raises(IndexFileError, match="URI") as caught:
            MilvusStore(uri, "faces", dim=DIM, metric="cosine", retries=3)
        assert uri in str(caught.value) and "tries" not in str(caught.value)
    assert time.perf_counter() - started < 2  # three tries would sleep 3.5 s each
