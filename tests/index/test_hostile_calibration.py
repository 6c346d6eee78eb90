"""Hostile review, issue 18 (4e, 4f): calibration on degenerate galleries, one distance per
pair whatever computes it, Milvus's collection-name rule, Milvus Lite kept off stderr.

(Zero vectors, refused alike by every store, are in ``test_store_contract.py``.)
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamkit.cli.main import main
from siamkit.exceptions import ConfigError, IndexFileError
from siamkit.geometry import index_distances, prepare
from siamkit.index import FaceIndex
from siamkit.index.calibration import gallery_pairs
from siamkit.index.stores.faiss import files as storage
from siamkit.index.stores.faiss.manifest import with_checksum
from siamkit.thresholds import (
    OpenSetScores,
    fit_far_threshold,
    fit_fpir_threshold,
    unreliable_reason,
)

DIM = 8
METRICS = ("cosine", "euclidean")
_names = itertools.count()


@pytest.fixture(scope="module")
def milvus_client(tmp_path_factory):
    pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
    from siamkit.index.stores.milvus import connect_client

    client = connect_client(str(tmp_path_factory.mktemp("milvus") / "hostile.db"))
    yield client
    client.close()


def _index(kind: str, metric: str, request: pytest.FixtureRequest) -> FaceIndex:
    if kind != "milvus":
        return FaceIndex(metric=metric, dim=DIM, index=kind)
    client = request.getfixturevalue("milvus_client")
    return FaceIndex(metric=metric, dim=DIM, store="milvus", uri="lite",
                     collection=f"h{next(_names)}", client=client)  # fmt: skip


def _identical_gallery(people: int = 12, per: int = 5) -> tuple[np.ndarray, list[int]]:
    """Every image of every person the same embedding (a broken encoder, a blank gallery)."""
    row = np.random.default_rng(0).normal(size=(1, DIM)) * 3
    return np.repeat(row, people * per, axis=0).astype(np.float32), np.repeat(
        np.arange(people), per
    ).tolist()


def _aliased_gallery() -> tuple[np.ndarray, list[str]]:
    """Six people, four photos each, and p0's photos filed again under a second name."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, DIM))
    vectors = np.repeat(centres, 4, axis=0) + 0.1 * rng.normal(size=(24, DIM))
    labels = [f"p{i // 4}" for i in range(24)] + ["p0_alias"] * 4
    return np.concatenate([vectors, vectors[:4]]).astype(np.float32), labels


# -- 1. calibration on degenerate galleries ---------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
def test_identical_embeddings_report_what_verify_and_identify_do(metric: str) -> None:
    vectors, labels = _identical_gallery()
    index = FaceIndex(metric=metric, dim=DIM)
    index.add(vectors, labels=labels)
    far = index.calibrate(target_far=0.01)
    assert far.num_impostor >= 1000  # enough pairs: only the degeneracy can make it unreliable
    # Every impostor pair is at distance 0, which every threshold accepts: FAR 1, not 0.
    assert (far.threshold, far.far, far.tar) == (0.0, 1.0, 1.0)
    assert not far.reliable and unreliable_reason(far).startswith("the target FAR was missed")
    assert "1650 of the 1650 impostor pairs are at distance 0" in far.warnings[0]
    assert "look like one person" in far.warnings[-1]
    # The rate reported is the one verify decides by, impostor pair by impostor pair.
    assert all(index.verify(vectors[0], vectors[i]).same for i in range(5, 60, 5))
    fit = index.calibrate(target_fpir=0.1)
    assert (fit.threshold, fit.fpir, fit.reliable) == (0.0, 1.0, False)
    assert "searches by strangers are at distance 0" in fit.warnings[0]
    # ... and the one identify decides by: another person's image matches someone.
    assert index.identify(vectors[7]) is not None


@pytest.mark.parametrize("metric", METRICS)
def test_one_person_under_two_names_is_named_and_enrolled_faces_stay_known(metric: str) -> None:
    vectors, labels = _aliased_gallery()
    index = FaceIndex(metric=metric, dim=DIM)
    index.add(vectors, labels=labels)
    named = "labels 'p0' and 'p0_alias' look like one person"
    far = index.calibrate(target_far=0.05)
    assert far.far <= 0.05 and any(w.startswith(named) for w in far.warnings)
    fit = index.calibrate(target_fpir=0.1)
    # p0's photos searched as strangers find p0_alias's copies at 0: no threshold rejects them.
    assert fit.threshold == 0.0 and fit.fpir > 0.1 and not fit.reliable
    assert any(w.startswith(named) for w in fit.warnings)
    # Even at 0, an enrolled photo is at distance 0 from itself and so still identified.
    assert [m.label for m in index.identify(vectors[4:12])] == ["p1"] * 4 + ["p2"] * 4


def test_a_threshold_that_separates_nothing_is_never_reliable() -> None:
    # Genuine and impostor pairs all 0.5 apart: the threshold sits below all of them.
    distances, same = np.full(2100, 0.5), np.arange(2100) < 100
    far = fit_far_threshold(distances, same, target_far=0.01)
    assert (far.threshold, far.far, far.tar, far.num_impostor) == (0.25, 0.0, 0.0, 2000)
    assert not far.reliable and unreliable_reason(far) == "it accepts no genuine pair"
    assert any("accepts none of the 100 genuine pairs" in w for w in far.warnings)
    assert any("100 of the genuine pairs are at exactly the distance" in w for w in far.warnings)
    scores = OpenSetScores(np.full(50, 0.5), np.ones(50, bool), np.full(200, 0.5))
    fit = fit_fpir_threshold(scores, 0.1, gallery_size=250, gallery_people=50)
    assert (fit.fpir, fit.fnir, fit.reliable) == (0.0, 1.0, False)
    assert unreliable_reason(fit) == "it matches no enrolled person"
    # A sound fit has no warning and stays reliable.
    sound = fit_far_threshold(np.r_[np.full(100, 0.2), np.full(2000, 0.8)], same, 0.01)
    assert sound.reliable and sound.warnings == () and unreliable_reason(sound) is None


def test_calibration_warnings_are_saved_and_older_files_still_load(tmp_path: Path) -> None:
    vectors, labels = _identical_gallery(people=4, per=3)
    index = FaceIndex(metric="cosine", dim=DIM)
    index.add(vectors, labels=labels)
    far, fit = index.calibrate(target_far=0.1), index.calibrate(target_fpir=0.1)
    loaded = FaceIndex.load(index.save(tmp_path / "index"))
    assert loaded.calibration == far and loaded.fpir_calibration == fit
    assert loaded.calibration.warnings and isinstance(loaded.calibration.warnings, tuple)
    # A manifest from before the warnings (no such key) loads, without them.
    path = tmp_path / "index" / storage.MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["calibration"]["warnings"], manifest["fpir_calibration"]["warnings"]
    path.write_text(json.dumps(with_checksum(manifest)))
    old = FaceIndex.load(tmp_path / "index")
    assert old.calibration.warnings == () and old.calibration.threshold == far.threshold
    # Warnings that are not a list of strings are refused like any edited field.
    manifest["calibration"]["warnings"] = "all fine"
    path.write_text(json.dumps(with_checksum(manifest)))
    with pytest.raises(IndexFileError, match="warnings"):
        FaceIndex.load(tmp_path / "index")


# -- 2. one geometry, one number ----------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", ["flat", "hnsw", "milvus"])
def test_one_pair_has_one_distance_whatever_computes_it(kind: str, metric: str, request) -> None:
    rng = np.random.default_rng(3)
    vectors = (3 * rng.normal(size=(40, DIM))).astype(np.float32)
    vectors[1] = vectors[0]  # one photo enrolled twice
    vectors[3] = vectors[2] + np.float32(1e-3)  # nearly the same
    index = _index(kind, metric, request)
    index.add(vectors, labels=[f"p{i % 8}" for i in range(40)], ids=list(range(40)))
    gallery = index.store.gallery()
    d, _ = gallery_pairs(gallery.vectors, gallery.labels, metric)
    i, j = np.triu_indices(40, k=1)
    pair = {
        frozenset((int(gallery.ids[a]), int(gallery.ids[b]))): x
        for a, b, x in zip(i, j, d, strict=True)
    }
    k = 39  # below the size: the single query takes its short path
    batch = index.knn(vectors[:25], k=k)  # 20+ queries: FAISS's BLAS kernel
    for a, b in [(0, 1), (2, 3), (0, 2), (5, 17), (30, 31)]:
        single = {m.id: m.distance for m in index.search(vectors[a], k=k)}
        one_row = {m.id: m.distance for m in index.search(vectors[a : a + 1], k=k)[0]}
        if b not in single:  # an approximate index may leave out the farthest
            continue
        found = [
            single[b],
            one_row[b],
            float(batch.distances[a][batch.ids[a] == b][0]) if a < 25 else single[b],
            index.verify(vectors[a], vectors[b], threshold=0.5).distance,
            float(pair[frozenset((a, b))]),
            float(
                index_distances(prepare(vectors[a], metric), prepare(vectors[b], metric), metric)
            ),
        ]
        assert len(set(found)) == 1, (a, b, found)
    # The same photo twice is exactly 0 apart everywhere: ties at 0 are ties.
    assert index.verify(vectors[0], vectors[1], threshold=0.5).distance == 0.0
    assert {m.distance for m in index.search(vectors[0], k=2)} == {0.0}


# -- 3. Milvus collection names, and Milvus Lite's tracebacks ----------------------------
BAD_NAMES = ["a b", "faces;drop", "héllo", "1faces", "faces-2", "", "x" * 256]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_collection_names_a_server_refuses_are_refused_before_anything_is_made(
    name: str, tmp_path: Path
) -> None:
    pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
    from siamkit.index import MilvusStore

    uri = tmp_path / "gallery.db"
    rule = "letter or an underscore first, then letters, digits and underscores"
    with pytest.raises(ConfigError, match=rule):
        MilvusStore(str(uri), name, dim=DIM, metric="cosine")
    with pytest.raises(ConfigError, match=rule):
        FaceIndex(metric="cosine", dim=DIM, store="milvus", uri=str(uri), collection=name)
    with pytest.raises(ConfigError, match=rule):
        FaceIndex.connect(uri=str(uri), collection=name)
    assert not uri.exists()  # no Lite file was made


def test_collection_names_a_server_takes_are_taken(milvus_client) -> None:
    from siamkit.index import MilvusStore

    for name in ("_faces", "Faces_2024", "f" * 255):
        store = MilvusStore("lite", name, dim=DIM, metric="cosine", client=milvus_client)
        assert store.collection == name and store.count() == 0
        store.drop()


@pytest.mark.parametrize("command", ["info", "build"])
def test_the_cli_refuses_a_bad_collection_name_in_one_line(command, tmp_path, capsys) -> None:
    pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
    uri = tmp_path / "gallery.db"
    extra = ["--model", str(tmp_path / "no-model"), "--gallery", str(tmp_path)]
    argv = ["index", command, "--store", "milvus", "--uri", str(uri), "--collection",
            "faces;drop", *(extra if command == "build" else [])]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("siamkit: error: 'faces;drop' is not a Milvus")
    assert not uri.exists()  # refused before the model was loaded or a file made


def test_milvus_lite_tracebacks_stay_off_stderr(tmp_path: Path, caplog) -> None:
    pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")
    from siamkit.index.stores.milvus import connect_client

    junk = tmp_path / "old.db"  # a file where Milvus Lite wants its folder
    junk.write_text("not a Milvus Lite database")
    with pytest.raises(IndexFileError, match=r"old\.db is not a Milvus URI"):
        connect_client(str(junk), retries=1)
    assert not [r for r in caplog.records if r.name.split(".")[0] in ("milvus_lite", "pymilvus")]
    # The CLI in a process of its own (pytest catches log records that would reach stderr).
    done = subprocess.run(
        [sys.executable, "-m", "siamkit", "index", "info", "--store", "milvus", "--uri",
         str(junk)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siamkit: error:"), done.stderr
