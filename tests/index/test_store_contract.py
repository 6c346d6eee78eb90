"""Every FaceIndex behaviour, run against each store: FAISS (in process) and Milvus (Lite).

The same assertions hold whatever holds the gallery: exact search equals brute
force, ids are unique and typed, removal and upsert, metadata, calibration
(the same thresholds on the same gallery), identify and verify, concurrent
writers, bad input, and reopening a gallery checked against its encoder.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

import siamkit
from siamkit.exceptions import (
    ConfigError,
    DuplicateIdError,
    EmptyIndexError,
    EncoderMismatchError,
    IndexFileError,
    NonFiniteError,
    NotCalibratedError,
    ShapeError,
    UnknownIdError,
)
from siamkit.geometry import pairwise_distances
from siamkit.index import FaceIndex, FaissStore, VectorStore

DIM = 8
STORES = ["faiss", "milvus"]
_names = itertools.count()


@pytest.fixture(scope="module")
def milvus_client(tmp_path_factory):
    pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
    from siamkit.index.stores.milvus import connect_client

    client = connect_client(str(tmp_path_factory.mktemp("milvus") / "contract.db"))
    yield client
    client.close()


@pytest.fixture(params=STORES)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_index(store_kind, request):
    """``make_index(metric=..., encoder=..., **kw)``: a fresh FaceIndex on the store under test."""

    def make(metric: str | None = "euclidean", encoder=None, **kw) -> FaceIndex:
        if encoder is not None:
            metric = None
        dim = None if encoder is not None else kw.pop("dim", DIM)
        if store_kind == "faiss":
            return FaceIndex(encoder, metric=metric, dim=dim, **kw)
        client = request.getfixturevalue("milvus_client")
        options = {"uri": "lite", "collection": f"c{next(_names)}", "client": client}
        return FaceIndex(encoder, metric=metric, dim=dim, store="milvus", **options, **kw)

    return make


def _gallery(n: int = 60, people: int = 6, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    labels = [f"p{i % people}" for i in range(n)]
    vectors = centres[[i % people for i in range(n)]] + 0.3 * rng.normal(size=(n, DIM))
    return vectors.astype(np.float32), labels


def _brute(gallery: np.ndarray, queries: np.ndarray, metric: str, k: int):
    distances = pairwise_distances(queries, gallery, metric)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_search_equals_brute_force(make_index, metric) -> None:
    vectors, labels = _gallery()
    index = make_index(metric)
    index.add(vectors, labels=labels)
    queries = np.random.default_rng(1).normal(size=(15, DIM)).astype(np.float32)
    order, expected = _brute(vectors, queries, metric, 5)
    results = index.search(queries, k=5)
    np.testing.assert_array_equal(results.ids.astype(int), order)
    np.testing.assert_allclose(results.distances, expected, atol=2e-5)
    single = index.search(queries[0], k=5)
    assert [m.id for m in single] == order[0].tolist()
    np.testing.assert_allclose([m.distance for m in single], expected[0], atol=2e-5)
    assert [m.label for m in single] == [labels[i] for i in order[0]]


def test_ids_are_unique_and_keep_their_type(make_index) -> None:
    index = make_index()
    vectors, _ = _gallery(4)
    assert index.add(vectors[:2], labels="a", ids=[1, "1"]) == [1, "1"]
    assert index.get(1).id == 1 and index.get("1").id == "1"
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add(vectors[2:3], labels="a", ids=[1])
    with pytest.raises(DuplicateIdError, match="repeated"):
        index.add(vectors[2:4], labels="a", ids=["x", "x"])
    assert len(index) == 2
    assert index.add(vectors[2:4], labels="b") == [2, 3]  # automatic ids continue past 1


def test_remove_and_upsert(make_index) -> None:
    vectors, labels = _gallery(20)
    index = make_index()
    index.add(vectors, labels=labels)
    assert index.remove([3, 4]) == 2
    assert 3 not in index and len(index) == 18
    with pytest.raises(UnknownIdError):
        index.remove(3)
    assert index.remove([3, 5], missing_ok=True) == 1
    found = index.search(vectors[3], k=17)
    assert not {3, 4, 5} & {m.id for m in found}
    index.upsert(vectors[0:1] + 10, labels="moved", ids=[0], metadata=[{"v": 2}])
    record = index.get(0)
    assert record.label == "moved" and record.metadata == {"v": 2}
    np.testing.assert_allclose(record.embedding, vectors[0] + 10, rtol=1e-6)
    assert index.search(vectors[0] + 10, k=1)[0].id == 0
    assert len(index) == 17


def test_metadata_and_listing(make_index) -> None:
    index = make_index()
    vectors, _ = _gallery(3)
    meta = [{"path": "a.jpg"}, {}, {"tags": ["x", 1], "n": {"deep": True}}]
    index.add(vectors, labels=["b", "a", "b"], ids=["i0", "i1", "i2"], metadata=meta)
    assert [index.get(i).metadata for i in ["i0", "i1", "i2"]] == meta
    assert index.search(vectors[2], k=1)[0].metadata == meta[2]
    assert sorted(index.labels()) == ["a", "b"]
    assert sorted(index.ids(label="b")) == ["i0", "i2"]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_calibration_is_the_same_on_every_store(make_index, metric) -> None:
    vectors, labels = _gallery(48, people=8)
    reference = FaceIndex(metric=metric, dim=DIM)
    reference.add(vectors, labels=labels)
    index = make_index(metric)
    index.add(vectors, labels=labels)
    far, want_far = index.calibrate(target_far=0.05), reference.calibrate(target_far=0.05)
    assert far.threshold == pytest.approx(want_far.threshold, abs=1e-5)
    assert (far.num_genuine, far.num_impostor) == (want_far.num_genuine, want_far.num_impostor)
    fit, want = index.calibrate(target_fpir=0.1), reference.calibrate(target_fpir=0.1)
    assert fit.threshold == pytest.approx(want.threshold, abs=1e-5)
    assert (fit.num_mated, fit.num_non_mated, fit.fnir) == (
        want.num_mated,
        want.num_non_mated,
        pytest.approx(want.fnir),
    )
    assert index.identify_threshold == fit.threshold
    assert index.info()["fpir_calibration"]["threshold"] == fit.threshold


def test_identify_and_verify(make_index) -> None:
    index = make_index()
    gallery = np.array([[0, 0], [0, 1], [5, 5]], dtype=np.float32)
    index = make_index(dim=2)
    index.add(gallery, labels=["a", "a", "b"])
    with pytest.raises(NotCalibratedError):
        index.identify(gallery[0])
    assert index.identify(np.array([0.1, 0.4], np.float32), threshold=1.0, k=3).label == "a"
    assert index.identify(np.array([9, 9], np.float32), threshold=1.0) is None
    batch = index.identify(np.array([[5, 5.2], [20, 20]], np.float32), threshold=1.0)
    assert [None if m is None else m.label for m in batch] == ["b", None]
    index.threshold = 0.6
    v = index.verify(np.array([0, 0], np.float32), np.array([0.3, 0.4], np.float32))
    assert v.same and v.distance == pytest.approx(0.5) and v.threshold == 0.6


def test_concurrent_writers_get_distinct_ids(make_index) -> None:
    index = make_index()
    vectors, _ = _gallery(80)
    added: list[list[int]] = []

    def worker(part: np.ndarray) -> None:
        for row in part:
            added.append(index.add(row[None], labels="x"))
            index.search(row, k=1)

    threads = [threading.Thread(target=worker, args=(vectors[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = sorted(i for ids in added for i in ids)
    assert flat == list(range(80)) and len(index) == 80


def test_bad_input_is_refused_with_typed_errors(make_index) -> None:
    index = make_index()
    with pytest.raises(EmptyIndexError):
        index.search(np.zeros(DIM, np.float32), k=1)
    vectors, _ = _gallery(4)
    index.add(vectors, labels="a")
    with pytest.raises(ShapeError):
        index.add(np.zeros((1, DIM + 1), np.float32), labels="a")
    bad = vectors[:1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        index.add(bad, labels="a")
    with pytest.raises(NonFiniteError):
        index.search(bad[0], k=1)
    with pytest.raises(ConfigError):
        index.search(vectors[0], k=0)
    with pytest.raises(ConfigError):
        index.add(vectors[:1], labels="a", existing="overwrite")
    assert len(index) == 4


def test_a_zero_vector_is_refused_alike_by_every_store(make_index) -> None:
    """Cosine compares directions: zeros (or a norm below 1e-12) have none, on any store."""
    index = make_index("cosine")
    vectors, _ = _gallery(4)
    index.add(vectors, labels="a")
    for bad in (np.zeros((1, DIM), np.float32), np.full((1, DIM), 1e-30, np.float32)):
        with pytest.raises(NonFiniteError, match=r"zero vectors \(rows \[1\]"):
            index.add(np.concatenate([vectors[:1], bad]), labels="b")  # nothing half-added
        with pytest.raises(NonFiniteError, match="zero vector"):
            index.upsert(bad, labels="b", ids=[0])
        with pytest.raises(NonFiniteError, match="zero vector"):
            index.store.add(["raw"], bad, ["b"])  # a store used directly checks too
        for query in (bad[0], bad):  # one query (its short path) and a batch
            with pytest.raises(NonFiniteError, match="zero vector"):
                index.search(query, k=1)
        with pytest.raises(NonFiniteError, match="zero vector"):
            index.verify(bad[0], vectors[0], threshold=0.5)
        with pytest.raises(NonFiniteError, match="zero vector"):
            index.calibrate(target_fpir=0.1, unknown=bad)
    assert len(index) == 4 and index.get(0).label == "a"
    # Euclidean distances need no direction: a zero vector is an ordinary point.
    euclid = make_index("euclidean")
    euclid.add(np.concatenate([vectors, np.zeros((1, DIM), np.float32)]), labels="a")
    assert euclid.search(np.zeros(DIM, np.float32), k=1)[0].distance == 0.0


def test_an_interrupted_enrolment_resumes_without_duplicates(make_index) -> None:
    vectors, labels = _gallery(30)
    ids = [f"img{i}" for i in range(30)]
    index = make_index()
    index.add(vectors[:12], labels=labels[:12], ids=ids[:12])  # killed after 12
    again = index.add(vectors, labels=labels, ids=ids, existing="skip")
    assert again == ids[12:] and len(index) == 30
    assert index.get("img3").label == labels[3]


def test_a_gallery_reopens_checked_against_its_encoder(make_index, store_kind, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("mlp", input_dim=16, embedding_dim=DIM)
    torch.manual_seed(1)
    other = siamkit.create_encoder("mlp", input_dim=16, embedding_dim=DIM)
    index = make_index(encoder=encoder)
    index.add(np.random.default_rng(0).normal(size=(12, DIM)).astype(np.float32),
              labels=[f"p{i % 3}" for i in range(12)])  # fmt: skip
    fit = index.calibrate(target_fpir=0.25)
    index.extra["note"] = "kept"
    if store_kind == "faiss":
        index.save(tmp_path / "g")
        reopen = lambda enc: FaceIndex.load(tmp_path / "g", enc)  # noqa: E731
    else:
        index.save()
        store = index.store
        reopen = lambda enc: FaceIndex.connect(  # noqa: E731
            enc, uri="lite", collection=store.collection, client=store.client
        )
    again = reopen(encoder)
    assert len(again) == 12 and again.identify_threshold == fit.threshold
    assert again.fpir_calibration == fit and again.extra == {"note": "kept"}
    query = index.get(5).embedding
    assert again.search(query, k=3) == index.search(query, k=3)
    with pytest.raises(EncoderMismatchError, match="another encoder"):
        reopen(other)
    assert reopen(None).info()["encoder_fingerprint"] == encoder.fingerprint()


def test_store_objects_and_the_registry(store_kind, make_index) -> None:
    index = make_index()
    index.add(_gallery(5)[0], labels="a")
    assert isinstance(index.store, VectorStore)
    assert index.info()["store"] == store_kind
    assert isinstance(FaceIndex(metric="cosine", dim=3).store, FaissStore)


def test_a_milvus_collection_is_not_overwritten_and_must_exist(milvus_client) -> None:
    options = {"uri": "lite", "collection": "taken", "client": milvus_client}
    first = FaceIndex(metric="cosine", dim=DIM, store="milvus", **options)
    first.add(_gallery(3)[0], labels="a")
    with pytest.raises(ConfigError, match="connect"):
        FaceIndex(metric="cosine", dim=DIM, store="milvus", **options)
    with pytest.raises(IndexFileError, match="no collection"):
        FaceIndex.connect(uri="lite", collection="never_made", client=milvus_client)
    with pytest.raises(ConfigError, match="nprobes"):  # a typo names itself
        FaceIndex(metric="cosine", dim=DIM, store="milvus", nprobes=64,
                  uri="lite", collection="other", client=milvus_client)  # fmt: skip
    tuned = FaceIndex(metric="cosine", dim=DIM, store="milvus", index="hnsw", ef_search=64,
                      uri="lite", collection="tuned", client=milvus_client)  # fmt: skip
    assert (tuned.ef_search, tuned.nprobe, tuned.info()["ef_search"]) == (64, None, 64)
    assert len(FaceIndex.connect(**options)) == 3


def test_processes_sharing_a_collection_do_not_undo_each_other(milvus_client, caplog) -> None:
    options = {"uri": "lite", "collection": "shared_record", "client": milvus_client}
    with caplog.at_level("DEBUG"):
        writer = FaceIndex(metric="euclidean", dim=DIM, store="milvus", **options)
    vectors, labels = _gallery(24, people=4)
    writer.add(vectors[:12], labels=labels[:12])
    service = FaceIndex.connect(**options)  # connected before the calibration
    fit = writer.calibrate(target_fpir=0.25)
    assert service.identify_threshold is None
    assert service.add(vectors[12:], labels=labels[12:]) == list(range(12, 24))
    again = FaceIndex.connect(**options)
    assert again.identify_threshold == fit.threshold and len(again) == 24
    service.refresh()
    assert service.fpir_calibration == fit
    with caplog.at_level("DEBUG"):
        assert len(again.ids()) == 24  # reads the whole collection through pymilvus's iterator
    # Creating a collection and reading it whole are where Milvus Lite used to log.
    assert not [r for r in caplog.records if r.levelno >= 30], "the library stays quiet"


# -- hostile input, the same on every store -------------------------------------------------
def _reopened(index: FaceIndex, store_kind: str, folder) -> FaceIndex:
    if store_kind == "faiss":
        return FaceIndex.load(index.save(folder))
    store = index.store
    return FaceIndex.connect(uri="lite", collection=store.collection, client=store.client)


def test_odd_ids_and_labels_round_trip_with_their_types(make_index, store_kind, tmp_path) -> None:
    latin1 = b"caf\xe9/1.jpg".decode("utf-8", "surrogateescape")  # how os.listdir gives it
    ids = [0, -7, 2**40, "0", "", 'say "hi"', "back\\slash", "ünï/код 名", latin1]
    labels = [1, "1", latin1, "o'neil", "", 1, 'x"y', "名", "%41"]
    vectors = np.random.default_rng(3).normal(size=(len(ids), DIM)).astype(np.float32)
    index = make_index()
    index.add(vectors, labels=labels, ids=ids, metadata=[{"k": i} for i in range(len(ids))])
    for again in (index, _reopened(index, store_kind, tmp_path / "g")):
        for position, item_id in enumerate(ids):
            record = again.get(item_id)
            assert (record.id, record.label) == (item_id, labels[position])
            assert type(record.id) is type(item_id) and type(record.label) is type(labels[position])
            found = again.search(vectors[position], k=1)[0]
            assert (found.id, found.label, found.distance) == (item_id, labels[position], 0.0)
        assert sorted(map(repr, again.ids())) == sorted(map(repr, ids))
        assert sorted(map(repr, again.ids(label=1))) == sorted(map(repr, [0, 'say "hi"']))
        assert again.get(latin1).metadata == {"k": len(ids) - 1}
    assert index.remove([latin1, 'say "hi"']) == 2 and latin1 not in index
    assert len(index) == len(ids) - 2


def test_metadata_that_is_not_json_is_refused_on_every_store(make_index) -> None:
    index = make_index()
    vectors, _ = _gallery(2)
    for bad in ({"score": float("nan")}, {"score": [float("inf")]}, {"when": object()}):
        with pytest.raises(ConfigError, match="metadata of item 1"):
            index.add(vectors, labels="a", metadata=[{}, bad])
    assert len(index) == 0
    index.add(vectors, labels="a", metadata=[{}, {"score": 1e308}])
    assert index.get(1).metadata == {"score": 1e308}


def test_connect_names_a_wrong_option(milvus_client) -> None:
    with pytest.raises(ConfigError, match="colection"):
        FaceIndex.connect(uri="lite", client=milvus_client, colection="faces")
    with pytest.raises(ConfigError, match="uri"):
        FaceIndex.connect(collection="faces")


GOOD_FIT = {"fnir": 0.5, "fpir": 0.1, "gallery_people": 3, "gallery_size": 12,
            "misidentified": 0.25, "num_mated": 12, "num_non_mated": 12, "reliable": False,
            "source": "leave-one-person-out", "target_fpir": 0.3, "threshold": 0.75}  # fmt: skip


@pytest.mark.parametrize(
    "edit",
    [
        {"extra": "model"},
        {"extra": [["model", "m"]]},
        {"encoder": {"fingerprint": 5}},
        {"encoder": {"fingerprint": "ab" * 32, "class": "X", "embedding_dim": DIM + 1}},
        {"identify_threshold": 0.75, "fpir_calibration": {**GOOD_FIT, "fpir": "high"}},
        {"identify_threshold": 0.5, "fpir_calibration": GOOD_FIT},  # not its threshold
        {"threshold": 0.2, "calibration": {"threshold": 0.2}},
        {"next_id": True},
    ],
)
def test_a_hand_edited_collection_record_is_a_file_error(milvus_client, edit) -> None:
    import json

    from siamkit.index.stores.milvus import META_PROPERTY

    options = {"uri": "lite", "collection": f"edited{next(_names)}", "client": milvus_client}
    index = FaceIndex(metric="euclidean", dim=DIM, store="milvus", **options)
    index.add(_gallery(12, people=3)[0], labels=[f"p{i % 3}" for i in range(12)])
    index.identify_threshold = 0.75
    assert FaceIndex.connect(**options).identify_threshold == 0.75
    meta = {**index.store.get_meta(), **edit}
    milvus_client.alter_collection_properties(
        options["collection"], properties={META_PROPERTY: json.dumps(meta)}
    )
    with pytest.raises(IndexFileError, match="edited"):
        FaceIndex.connect(**options)
    with pytest.raises(IndexFileError, match="edited"):
        index.refresh()


@pytest.mark.parametrize("version", [1, 2])
def test_faiss_indexes_saved_in_older_formats_still_load(tmp_path, version) -> None:
    """Formats 1 (no manifest checksum) and 2 (no 1:N threshold), as those siamkits wrote them."""
    import json

    from siamkit.index.stores.faiss import files as storage
    from siamkit.index.stores.faiss.manifest import CHECKSUM_KEY, with_checksum

    vectors, labels = _gallery(40, people=5)
    index = FaceIndex(metric="cosine", dim=DIM, index="hnsw")
    index.add(vectors, labels=labels, ids=[i if i % 2 else f"s{i}" for i in range(40)])
    index.remove([1, "s2"])
    index.calibrate(target_far=0.05)
    index.extra["model"] = "/models/m"
    folder = index.save(tmp_path / "old")
    path = folder / storage.MANIFEST
    manifest = json.loads(path.read_text())
    for key in ("identify_threshold", "fpir_calibration", CHECKSUM_KEY):
        del manifest[key]
    manifest["format_version"] = version
    path.write_text(json.dumps(manifest if version == 1 else with_checksum(manifest)))
    old = FaceIndex.load(folder)
    assert (len(old), old.threshold, old.identify_threshold) == (38, index.threshold, None)
    assert old.calibration == index.calibration and old.extra == {"model": "/models/m"}
    assert old.search(vectors[5], k=4) == index.search(vectors[5], k=4)
    assert old.add(vectors[:1], labels="new") == [40]  # automatic ids continue
    again = FaceIndex.load(old.save(tmp_path / "resaved"))
    assert json.loads((tmp_path / "resaved" / storage.MANIFEST).read_text())["format_version"] == 3
    assert len(again) == 39 and again.get(40).label == "new"


def test_a_store_answering_the_old_store_hits_still_works_with_a_warning() -> None:
    """A pre-0.2 third-party store whose search returns StoreHits: converted, and warned."""
    from siamkit.index import StoreHits
    from siamkit.index.stores import FaissStore

    class OldStore(FaissStore):
        persistence = "files"

        def search(self, queries, k):  # what a 0.1 store returned
            found = super().search(queries, k)
            with pytest.warns(DeprecationWarning, match="StoreHits is deprecated"):
                return StoreHits(
                    [[m.id for m in row] for row in found],
                    [[m.label for m in row] for row in found],
                    np.nan_to_num(found.distances, nan=np.inf),
                    [[m.metadata for m in row] for row in found],
                )

    vectors = np.random.default_rng(0).normal(size=(6, DIM)).astype(np.float32)
    ours = FaceIndex(metric="euclidean", store=OldStore(DIM, "euclidean"))
    reference = FaceIndex(metric="euclidean", dim=DIM)
    for each in (ours, reference):
        each.add(vectors, labels=["a", "b", "c", "a", "b", "c"])
    queries = vectors[:3] + 0.01
    mine, theirs = ours.search(queries, k=4), reference.search(queries, k=4)
    assert mine.ids.tolist() == theirs.ids.tolist()
    np.testing.assert_array_equal(mine.distances, theirs.distances)
