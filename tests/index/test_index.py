"""FaceIndex: search against brute force, geometry, identify, verify, calibrate, add/remove."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

import siamkit
from siamkit.geometry import pairwise_distances, prepare
from siamkit.index import FaceIndex, Match

faiss.omp_set_num_threads(2)


def clustered(
    people: int, per_person: int, dim: int, seed: int = 0, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors, labels, centres)``: each person a random centre plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim)).astype(np.float32)
    labels = np.repeat(np.arange(people), per_person)
    noisy = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return noisy.astype(np.float32), labels, centres


def brute_force(queries: np.ndarray, gallery: np.ndarray, metric: str, k: int):
    distances = pairwise_distances(queries, gallery, metric)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def exact(query: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """Float64 distances of one query to gallery rows."""
    q, g = query.astype(np.float64), gallery.astype(np.float64)
    if metric == "euclidean":
        return np.linalg.norm(g - q, axis=1)
    return 1 - (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


# -- exact search and geometry ---------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_search_equals_numpy_brute_force(metric: str) -> None:
    gallery, labels, _ = clustered(40, 10, 24, seed=1)
    queries, _, _ = clustered(40, 2, 24, seed=2)
    index = FaceIndex(metric=metric, dim=24)
    assert index.add(gallery, labels=labels) == list(range(400))
    truth, distances = brute_force(queries, gallery, metric, k=7)
    results = index.search(queries, k=7)
    assert [[m.id for m in row] for row in results] == truth.tolist()
    got = np.array([[m.distance for m in row] for row in results])
    np.testing.assert_allclose(got, distances, atol=2e-5)
    assert [m.label for m in results[0]] == labels[truth[0]].tolist()
    arrays = index.knn(queries, k=7)
    assert arrays.ids.tolist() == truth.tolist()
    np.testing.assert_allclose(arrays.distances, distances, atol=2e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "IVF16,PQ4", "HNSW16,Flat"])
def test_reported_distances_are_the_geometry_distances(kind: str) -> None:
    gallery, labels, _ = clustered(30, 6, 16, seed=3)
    queries = gallery[:5] + 0.01
    for metric in ("cosine", "euclidean"):
        index = FaceIndex(metric=metric, index=kind, dim=16)
        index.add(gallery, labels=labels)
        for query, matches in zip(queries, index.search(queries, k=4), strict=True):
            ids = [m.id for m in matches]
            got = [m.distance for m in matches]
            expected = pairwise_distances(query[None], gallery[ids], metric)[0]
            if metric == "cosine":
                np.testing.assert_allclose(got, expected, atol=1e-5)
            else:  # pairwise_distances's float32 |a|^2 + |b|^2 - 2ab rounds at that scale
                scale = (query**2).sum() + (gallery[ids] ** 2).sum(axis=1)
                gap = np.abs(np.square(got) - np.square(expected))
                assert (gap <= 2e-6 * scale).all()
            np.testing.assert_allclose(got, exact(query, gallery[ids], metric), atol=2e-5)
            assert got == sorted(got)


def test_cosine_stores_normalised_vectors_in_an_inner_product_index() -> None:
    index = FaceIndex(metric="cosine", dim=2)
    index.add(np.array([[3.0, 4.0]], dtype=np.float32), labels="a", ids="x")
    np.testing.assert_allclose(index.get("x").embedding, [0.6, 0.8], rtol=1e-6)
    assert index.store.backend.index.metric_type == faiss.METRIC_INNER_PRODUCT
    euclid = FaceIndex(metric="euclidean", dim=2)
    euclid.add(np.array([[3.0, 4.0]], dtype=np.float32), labels="a", ids="x")
    np.testing.assert_allclose(euclid.get("x").embedding, [3.0, 4.0])
    assert euclid.store.backend.index.metric_type == faiss.METRIC_L2
    match = euclid.search(np.zeros(2, dtype=np.float32), k=1)[0]
    assert match.distance == pytest.approx(5.0)  # sqrt of faiss's squared L2


def test_metric_comes_from_the_encoder_and_conflicts_are_refused() -> None:
    encoder = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=4, metric="cosine")
    index = FaceIndex(encoder)
    assert (index.metric, index.dim) == ("cosine", 4)
    with pytest.raises(siamkit.GeometryError, match="cosine"):
        FaceIndex(encoder, metric="euclidean")
    with pytest.raises(siamkit.ShapeError, match="dim=8"):
        FaceIndex(encoder, dim=8)
    with pytest.raises(siamkit.ConfigError, match="metric="):
        FaceIndex(dim=4)


# -- approximate indexes -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "minimum"), [("hnsw", 0.97), ("ivf", 0.9), ("IVF32,Flat", 0.9), ("HNSW8,SQ8", 0.9)]
)
def test_approximate_indexes_reach_their_recall(kind: str, minimum: float) -> None:
    gallery, labels, _ = clustered(1500, 8, 32, seed=4)  # 12,000 vectors: enough to train
    queries, _, _ = clustered(1500, 1, 32, seed=4, noise=0.35)
    queries = queries[:200]
    truth, _ = brute_force(queries, gallery, "cosine", k=10)
    nprobe = 8 if kind.startswith("IVF") else None
    index = FaceIndex(metric="cosine", index=kind, dim=32, nprobe=nprobe)
    index.add(gallery, labels=labels)
    assert index.info()["trained"]
    found = index.knn(queries, k=10)
    assert recall(found.ids.astype(np.int64), truth) >= minimum
    # Compressed codes (SQ8) are re-ranked on the stored vectors: exact distances.
    ids = found.ids[0].astype(np.int64)
    expected = pairwise_distances(queries[:1], gallery[ids], "cosine")[0]
    np.testing.assert_allclose(found.distances[0], expected, atol=2e-5)


def test_ivf_searches_exactly_until_trained_then_trains_lazily() -> None:
    gallery, labels, _ = clustered(300, 10, 16, seed=5)
    index = FaceIndex(metric="euclidean", index="ivf", dim=16)
    index.add(gallery[:1000], labels=labels[:1000])
    assert not index.info()["trained"]
    truth, _ = brute_force(gallery[:20], gallery[:1000], "euclidean", k=5)
    assert index.knn(gallery[:20], k=5).ids.tolist() == truth.tolist()
    index.add(gallery[1000:], labels=labels[1000:])
    assert index.info()["trained"] and index.nprobe >= 8
    index.nprobe = 3
    assert index.nprobe == 3
    index.nprobe = 1  # one list holds fewer than k items: fewer matches, never -1 or inf
    matches = index.search(gallery[0], k=500)
    assert 0 < len(matches) < 500 and all(np.isfinite(m.distance) for m in matches)
    assert all(m.id in index for m in matches)
    arrays = index.knn(gallery[:2], k=500)
    assert arrays.ids[0, -1] is None and np.isnan(arrays.distances[0, -1])
    assert [m.id for m in matches] == [i for i in arrays.ids[0].tolist() if i is not None]
    with pytest.raises(siamkit.ConfigError, match="HNSW"):
        index.ef_search = 64


def test_hnsw_settings_and_fewer_items_than_k() -> None:
    gallery, labels, _ = clustered(5, 2, 8)
    index = FaceIndex(metric="cosine", index="hnsw", dim=8, ef_search=40)
    index.add(gallery, labels=labels)
    assert index.ef_search == 40
    matches = index.search(gallery[0], k=50)
    assert len(matches) == 10  # never faiss's -1 ids or inf distances
    assert sorted(m.id for m in matches) == list(range(10))
    assert all(np.isfinite(m.distance) for m in matches)
    with pytest.raises(siamkit.ConfigError, match="IVF"):
        index.nprobe = 4


def test_bad_index_spec_is_a_clear_error() -> None:
    with pytest.raises(siamkit.ConfigError, match="index_factory"):
        FaceIndex(metric="cosine", index="NoSuchIndex42", dim=8)
    with pytest.raises(siamkit.ConfigError, match="index must be"):
        FaceIndex(metric="cosine", index="", dim=8)


# -- identify, verify, calibrate ---------------------------------------------------------
def test_identify_rejects_a_person_never_enrolled_at_the_calibrated_threshold() -> None:
    vectors, labels, centres = clustered(31, 6, 64, seed=6, noise=0.25)
    enrolled = labels < 30  # person 30 is never enrolled
    index = FaceIndex(metric="cosine", dim=64)
    index.add(vectors[enrolled], labels=[f"p{i}" for i in labels[enrolled]])
    report = index.calibrate(target_far=0.001)
    assert index.threshold == report.threshold and index.calibration == report
    assert (report.num_genuine, report.num_impostor) == (30 * 15, 180 * 179 // 2 - 450)
    assert report.far <= 0.001 and report.tar == 1.0 and report.reliable
    assert report.source == "gallery"
    strangers = vectors[~enrolled]
    nearest = [m.distance for m in index.search(strangers, k=1)[0]]
    assert min(nearest) > report.threshold
    assert index.identify(strangers) == [None] * 6
    assert index.identify(strangers, threshold=2.0)[0] is not None  # a loose threshold accepts
    rng = np.random.default_rng(7)
    fresh = centres[:30] + 0.25 * rng.normal(size=(30, 64))
    found = index.identify(fresh.astype(np.float32))
    assert [m.label for m in found] == [f"p{i}" for i in range(30)]


def test_calibration_threshold_is_the_largest_distance_within_the_far() -> None:
    vectors, labels, _ = clustered(8, 5, 16, seed=8, noise=0.6)
    index = FaceIndex(metric="euclidean", dim=16)
    index.add(vectors, labels=labels)
    report = index.calibrate(target_far=0.05)
    d = pairwise_distances(vectors, None, "euclidean")
    i, j = np.triu_indices(len(labels), k=1)
    d, same = d[i, j], labels[i] == labels[j]
    impostor = np.sort(d[~same])
    allowed = int(np.floor(0.05 * impostor.size))
    assert (impostor <= report.threshold).sum() <= allowed
    above = d[d > report.threshold].min()
    assert (impostor <= above).sum() > allowed  # the next distance would exceed the FAR
    assert report.tar == pytest.approx((d[same] <= report.threshold).mean())
    assert report.reliable == (report.num_impostor >= 10 / 0.05)
    assert report.num_impostor == impostor.size


def test_calibrate_samples_large_galleries_deterministically() -> None:
    vectors, labels, _ = clustered(50, 8, 8, seed=9)
    index = FaceIndex(metric="cosine", dim=8)
    index.add(vectors, labels=labels)
    first = index.calibrate(target_far=0.01, max_pairs=3000)
    again = index.calibrate(target_far=0.01, max_pairs=3000)
    assert first == again
    assert first.num_genuine == 50 * 28 and first.num_impostor == 3000


def test_calibrate_from_labelled_pairs_and_verify() -> None:
    vectors, labels, _ = clustered(10, 4, 8, seed=10)
    index = FaceIndex(metric="euclidean", dim=8)
    a, b = vectors[:-1], vectors[1:]
    report = index.calibrate(target_far=0.1, pairs=(a, b, labels[:-1] == labels[1:]))
    assert report.source == "pairs" and report.num_genuine == 30
    result = index.verify(vectors[0], vectors[1])
    assert result.threshold == report.threshold
    assert result.distance == pytest.approx(float(np.linalg.norm(vectors[0] - vectors[1])), 1e-5)
    assert result.same == (result.distance <= report.threshold)
    assert not index.verify(vectors[0], vectors[-1], threshold=0.01).same
    with pytest.raises(siamkit.ShapeError, match="one item"):
        index.verify(vectors[:2], vectors[2])


def test_identify_without_threshold_asks_to_calibrate() -> None:
    index = FaceIndex(metric="cosine", dim=4)
    index.add(np.eye(4, dtype=np.float32), labels=list("abcd"))
    with pytest.raises(siamkit.NotCalibratedError, match="calibrate"):
        index.identify(np.ones(4, dtype=np.float32))
    with pytest.raises(siamkit.DataError, match="genuine"):
        index.calibrate()


def test_identify_votes_over_labels() -> None:
    gallery = np.array([[0.0], [0.9], [1.0], [1.1]], dtype=np.float32)
    index = FaceIndex(metric="euclidean", dim=1)
    index.add(gallery, labels=["ann", "bob", "bob", "bob"])
    query = np.array([0.3], dtype=np.float32)
    assert index.identify(query, threshold=1.0).label == "ann"
    voted = index.identify(query, threshold=1.0, k=4)
    assert (voted.label, voted.id) == ("bob", 1)  # nearest of the winning label
    assert index.identify(query, threshold=0.1, k=4) is None


# -- adding, ids, metadata, removal ------------------------------------------------------
def test_ids_labels_metadata_and_lookup() -> None:
    index = FaceIndex(metric="euclidean", dim=2)
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2)
    ids = index.add(vectors[:2], labels=["ann", "bob"], metadata=[{"age": 30}, None])
    assert ids == [0, 1]
    assert index.add(vectors[2:], labels=np.array([7, 7]), ids=["x", np.int64(9)]) == ["x", 9]
    assert index.add(vectors[0], labels="cy") == [10]  # automatic ids skip past taken ints
    assert len(index) == 5 and "x" in index and 9 in index and "9" not in index
    assert True not in index and 3.5 not in index
    record = index.get(0)
    assert (record.label, record.metadata) == ("ann", {"age": 30})
    record.metadata["age"] = 99
    assert index.get(0).metadata == {"age": 30}  # callers get copies
    assert index.labels() == ["ann", "bob", 7, "cy"]
    assert index.ids(label=7) == ["x", 9]
    match = index.search(vectors[2], k=1)[0]
    assert isinstance(match, Match) and match.to_dict()["id"] == "x"
    with pytest.raises(siamkit.UnknownIdError, match="'nope'"):
        index.get("nope")


def test_duplicate_ids_are_refused_and_upsert_replaces() -> None:
    index = FaceIndex(metric="euclidean", dim=2)
    index.add(np.zeros((2, 2), dtype=np.float32), labels="a", ids=["p", "q"])
    with pytest.raises(siamkit.DuplicateIdError, match="upsert"):
        index.add(np.ones((1, 2), dtype=np.float32), labels="b", ids="p")
    with pytest.raises(siamkit.DuplicateIdError, match="repeated"):
        index.add(np.ones((2, 2), dtype=np.float32), labels="b", ids=["r", "r"])
    assert len(index) == 2 and "r" not in index
    index.upsert(np.full((2, 2), 5, dtype=np.float32), labels="b", ids=["q", "s"])
    assert len(index) == 3 and index.get("q").label == "b"
    assert [m.id for m in index.search(np.full(2, 5, dtype=np.float32), k=3)][:2] == ["q", "s"]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_removed_items_never_come_back(kind: str) -> None:
    gallery, labels, _ = clustered(300, 8, 16, seed=11)
    index = FaceIndex(metric="cosine", index=kind, dim=16)
    index.add(gallery, labels=labels)
    removed = [i for i in range(len(gallery)) if labels[i] % 10 == 0]  # whole people
    removed_few = removed[:40]
    assert index.remove(removed_few) == 40
    assert index.info()["removed_pending"] == 40  # below 20%: filtered, not rebuilt
    keep = np.setdiff1d(np.arange(len(gallery)), removed_few)
    queries = gallery[removed_few[:20]] + 0.01
    truth, _ = brute_force(queries, gallery[keep], "cosine", k=10)
    found = index.knn(queries, k=10).ids.astype(np.int64)
    assert not np.isin(found, removed_few).any()
    assert recall(found, keep[truth]) >= (1.0 if kind == "flat" else 0.9)
    index.remove(removed[40:], missing_ok=True)
    index.remove(list(range(len(gallery) // 2)), missing_ok=True)
    assert index.info()["removed_pending"] == 0  # past 20%: rebuilt without them
    assert len(index) == len(gallery) - len(set(removed) | set(range(len(gallery) // 2)))
    everything = index.knn(gallery[:50], k=len(index))
    assert all(row.count(None) == 0 for row in everything.ids.tolist())
    assert sorted(everything.ids[0].tolist()) == sorted(index.ids())


def test_remove_on_hnsw_gives_the_answers_of_an_index_without_the_items() -> None:
    gallery, labels, _ = clustered(100, 5, 16, seed=12)
    index = FaceIndex(metric="euclidean", index="hnsw", dim=16)
    index.add(gallery, labels=labels, ids=[f"i{i}" for i in range(500)])
    index.remove([f"i{i}" for i in range(0, 500, 7)])
    never = FaceIndex(metric="euclidean", index="flat", dim=16)
    kept = [i for i in range(500) if i % 7]
    never.add(gallery[kept], labels=labels[kept], ids=[f"i{i}" for i in kept])
    queries = gallery[:30] + 0.05
    ours = [[m.id for m in row] for row in index.search(queries, k=5)]
    theirs = [[m.id for m in row] for row in never.search(queries, k=5)]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ours, theirs, strict=True)]) >= 0.98
    assert len(index) == len(never) and set(index.ids()) == set(never.ids())


def test_remove_unknown_ids_changes_nothing() -> None:
    index = FaceIndex(metric="euclidean", dim=1)
    index.add(np.zeros((3, 1), dtype=np.float32), labels="a")
    with pytest.raises(siamkit.UnknownIdError, match="nothing was removed"):
        index.remove([0, 42])
    assert len(index) == 3
    assert index.remove(0) == 1 and index.remove([0, 1], missing_ok=True) == 1


# -- images through the encoder ----------------------------------------------------------
def test_images_paths_and_tensors_go_through_the_encoder(synthetic_faces: Path) -> None:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    index = FaceIndex(encoder, index="hnsw")
    ids = index.add_folder(synthetic_faces)
    assert len(ids) == 36 and ids[0] == "person0/0.png"
    assert index.labels() == [f"person{i}" for i in range(6)]
    path = synthetic_faces / "person3" / "2.png"
    assert index.get("person3/2.png").metadata == {"path": str(path)}
    by_path = index.search(path, k=36)
    own = next(m for m in by_path if m.id == "person3/2.png")
    assert own.distance == pytest.approx(0.0, abs=1e-5)
    assert by_path[0].distance <= own.distance + 1e-6
    embedding = encoder.embed(path)
    stored = index.get("person3/2.png").embedding
    np.testing.assert_allclose(stored, prepare(embedding, "cosine")[0], atol=1e-6)
    top = [m.id for m in by_path[:3]]
    tensor = encoder.preprocess(path)
    assert [m.id for m in index.search(tensor, k=3)] == top
    batch = index.search(torch.stack([tensor, tensor]), k=3)
    assert [[m.id for m in row] for row in batch] == [top, top]
    assert [m.id for m in index.search(embedding[0], k=3)] == top  # numpy floats: an embedding
    added = index.add([path], labels="again")
    assert index.get(added[0]).metadata == {"path": str(path)}
    with pytest.raises(siamkit.DuplicateIdError):
        index.add_folder(synthetic_faces)
    assert index.add_folder(synthetic_faces, upsert=True) == ids


def test_embeddings_only_index_refuses_images(synthetic_faces: Path) -> None:
    index = FaceIndex(metric="cosine", dim=16)
    with pytest.raises(siamkit.ConfigError, match="no encoder"):
        index.add([synthetic_faces / "person0" / "0.png"], labels="a")


# -- bad input --------------------------------------------------------------------------
def test_bad_input_gives_clear_errors() -> None:
    index = FaceIndex(metric="cosine", dim=4)
    with pytest.raises(siamkit.EmptyIndexError, match="empty"):
        index.search(np.ones(4, dtype=np.float32))
    with pytest.raises(siamkit.EmptyIndexError, match="empty"):
        index.calibrate()
    with pytest.raises(siamkit.ShapeError, match=r"\(N, 4\)"):
        index.add(np.ones((2, 3), dtype=np.float32), labels="a")
    with pytest.raises(siamkit.NonFiniteError, match="NaN"):
        index.add(np.array([[1, np.nan, 0, 0]], dtype=np.float32), labels="a")
    with pytest.raises(siamkit.ShapeError, match="2 items but 3 labels"):
        index.add(np.ones((2, 4), dtype=np.float32), labels=["a", "b", "c"])
    with pytest.raises(siamkit.ShapeError, match="ids"):
        index.add(np.ones((2, 4), dtype=np.float32), labels="a", ids="x")
    with pytest.raises(siamkit.ConfigError, match="label must be"):
        index.add(np.ones((1, 4), dtype=np.float32), labels=[1.5])
    with pytest.raises(siamkit.ConfigError, match="JSON"):
        index.add(np.ones((1, 4), dtype=np.float32), labels="a", metadata=[{"x": object()}])
    assert len(index) == 0
    index.add(np.eye(4, dtype=np.float32), labels=list("abcd"))
    for k in (0, -1, 1.5, True):
        with pytest.raises(siamkit.ConfigError, match="k must be"):
            index.search(np.ones(4, dtype=np.float32), k=k)
    with pytest.raises(siamkit.ShapeError, match=r"\(N, 4\)"):
        index.search(np.ones(5, dtype=np.float32))
    with pytest.raises(siamkit.NonFiniteError):
        index.search(np.array([np.inf, 0, 0, 0], dtype=np.float32))
    with pytest.raises(siamkit.ConfigError, match="target_far"):
        index.calibrate(target_far=1.5)
    with pytest.raises(siamkit.ConfigError, match="threshold"):
        index.threshold = float("nan")
    assert len(index) == 4


def test_docstring_examples_run() -> None:
    import pkgutil

    import siamkit.index

    names = [m.name for m in pkgutil.walk_packages(siamkit.index.__path__, "siamkit.index.")]
    assert "siamkit.index.stores.faiss.store" in names and len(names) >= 18
    for name in ["siamkit.index", *names]:
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
