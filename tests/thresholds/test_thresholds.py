"""siamkit.thresholds and 1:N calibration: the rule, FPIR on fresh strangers, DET, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import siamkit
from siamkit.geometry import pairwise_distances
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss import files as storage
from siamkit.index.stores.faiss.manifest import with_checksum
from siamkit.thresholds import (
    OpenSetScores,
    allowed_count,
    det_curve,
    fit_far_threshold,
    fit_fpir_threshold,
    fnir_at_fpir,
    growth_warning,
    open_set_scores,
    threshold_at_rate,
)


def people(rng: np.random.Generator, n: int, per: int, dim: int = 16, noise: float = 0.5):
    centres = rng.normal(size=(n, dim))
    vectors = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n * per, dim))
    return vectors.astype(np.float32), np.repeat(np.arange(n), per)


# -- the rule ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.3, 0.05, 0.01])
def test_rule_against_brute_force(seed: int, target: float) -> None:
    rng = np.random.default_rng(seed)
    negatives = np.round(rng.normal(0.8, 0.2, 300), 2)  # rounding makes ties
    positives = np.round(rng.normal(0.4, 0.2, 100), 2)
    t = threshold_at_rate(negatives, target, candidates=positives)
    assert (negatives <= t).mean() <= target
    # The first negative past the target and the largest observed distance below it.
    ceiling = np.sort(negatives)[allowed_count(target, negatives.size)]
    assert (negatives <= ceiling).mean() > target
    every = np.r_[negatives, positives]
    low = every[every < ceiling].max()
    assert t == pytest.approx((low + ceiling) / 2)
    assert ((every <= t) == (every < ceiling)).all()  # ties at the ceiling go out together


def test_allowed_count_is_exact_where_floor_rounds_low() -> None:
    for total in range(1, 300):
        for target in (0.29, 0.07, 0.1, 1 / 3):
            k = allowed_count(target, total)
            assert k / total <= target and (k + 1) / total > target


def test_far_and_fpir_fits_share_the_rule() -> None:
    rng = np.random.default_rng(0)
    impostor, genuine = rng.random(200) + 0.3, rng.random(50)
    far = fit_far_threshold(np.r_[genuine, impostor], np.r_[[True] * 50, [False] * 200], 0.05)
    scores = OpenSetScores(genuine, np.ones(50, bool), impostor)
    fpir = fit_fpir_threshold(scores, 0.05, gallery_size=10, gallery_people=5)
    assert far.threshold == fpir.threshold == threshold_at_rate(impostor, 0.05, genuine)
    assert far.far == fpir.fpir and far.tar == pytest.approx(1 - fpir.fnir)
    assert isinstance(far, siamkit.thresholds.ThresholdFit)
    assert isinstance(fpir, siamkit.thresholds.ThresholdFit)
    assert siamkit.Calibration is siamkit.thresholds.FarCalibration
    assert siamkit.evaluation.TarAtFar is siamkit.thresholds.FarCalibration


# -- 1:N calibration of a face index -------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.05, 0.01])
def test_fpir_calibration_meets_its_target_on_fresh_strangers(seed: int, target: float) -> None:
    rng = np.random.default_rng(seed)
    vectors, labels = people(rng, 500, 2)
    index = FaceIndex(metric="cosine", dim=16)
    index.add(vectors, labels=labels.tolist())
    report = index.calibrate(target_fpir=target)
    assert report.source == "leave-one-person-out" and report.reliable
    assert (report.num_non_mated, report.num_mated, report.gallery_size) == (1000, 1000, 1000)
    strangers, _ = people(rng, 3000, 1)
    nearest = index.search(strangers, k=1).distances[:, 0]
    fresh = float((nearest <= report.threshold).mean())
    assert np.mean([m is not None for m in index.identify(strangers)]) == pytest.approx(fresh)
    # Binomial error of the 500 people calibrated on and the 3000 fresh ones, 3 sigma.
    sigma = np.sqrt(target * (1 - target) * (1 / 500 + 1 / 3000))
    assert abs(fresh - target) <= 3 * sigma
    # The 1:1 threshold at the same rate lets most strangers through a gallery of 1000.
    loose = index.calibrate(target_far=target)
    assert (nearest <= loose.threshold).mean() > 10 * target


def test_leave_one_person_out_equals_brute_force_and_explicit_probes() -> None:
    rng = np.random.default_rng(3)
    vectors, labels = people(rng, 12, 4, dim=8, noise=0.6)
    for metric in ("cosine", "euclidean"):
        index = FaceIndex(metric=metric, dim=8)
        index.add(vectors, labels=labels.tolist())
        report = index.calibrate(target_fpir=0.1)
        d = pairwise_distances(vectors, None, metric).astype(np.float64)
        same = labels[:, None] == labels[None, :]
        non_mated = np.where(same, np.inf, d).min(1)  # nearest image of anyone else
        np.fill_diagonal(d, np.inf)
        mated, correct = d.min(1), labels[d.argmin(1)] == labels
        expected = fit_fpir_threshold(OpenSetScores(mated, correct, non_mated), 0.1,
                                      gallery_size=48, gallery_people=12)  # fmt: skip
        assert report.threshold == pytest.approx(expected.threshold, abs=1e-5)
        assert (report.fpir, report.fnir) == pytest.approx((expected.fpir, expected.fnir))
        # Leaving each person out = searching them as unknown probes against the others.
        fpirs = []
        for person in range(12):
            others = FaceIndex(metric=metric, dim=8)
            others.add(vectors[labels != person], labels=labels[labels != person].tolist())
            found = others.search(vectors[labels == person], k=1).distances[:, 0]
            fpirs += (found <= report.threshold).tolist()
        assert np.mean(fpirs) == pytest.approx(report.fpir)


def test_calibration_from_given_unknown_probes() -> None:
    rng = np.random.default_rng(4)
    vectors, labels = people(rng, 300, 2)
    strangers, _ = people(rng, 2000, 1)
    index = FaceIndex(metric="euclidean", dim=16)
    index.add(vectors, labels=labels.tolist())
    report = index.calibrate(target_fpir=0.05, unknown=strangers)
    nearest = pairwise_distances(strangers, vectors, "euclidean").min(1)
    assert report.source == "probes" and report.num_non_mated == 2000
    assert report.fpir == pytest.approx((nearest <= report.threshold).mean())
    assert report.fpir <= 0.05
    assert index.identify_threshold == report.threshold == index.fpir_calibration.threshold
    # Leaving people out estimates the same threshold, within the binomial error
    # of 300 people and 2000 strangers (3 sigma).
    lopo = index.calibrate(target_fpir=0.05)
    sigma = np.sqrt(0.05 * 0.95 * (1 / 300 + 1 / 2000))
    assert (nearest <= lopo.threshold).mean() == pytest.approx(0.05, abs=3 * sigma)
    assert lopo.threshold == pytest.approx(report.threshold, rel=0.1)
    # A gallery of one person still calibrates against given strangers.
    alone = FaceIndex(metric="euclidean", dim=16)
    alone.add(vectors[:3], labels="ann")
    assert alone.calibrate(target_fpir=0.1, unknown=strangers).num_mated == 3


def test_removed_items_and_approximate_indexes_calibrate() -> None:
    rng = np.random.default_rng(5)
    vectors, labels = people(rng, 30, 4, dim=8)
    flat = FaceIndex(metric="cosine", dim=8)
    hnsw = FaceIndex(metric="cosine", dim=8, index="hnsw")
    for index in (flat, hnsw):
        index.add(vectors, labels=labels.tolist())
        index.remove(list(range(0, 120, 7)))
    exact = flat.calibrate(target_fpir=0.05)
    assert exact.gallery_size == 120 - len(range(0, 120, 7))
    assert hnsw.calibrate(target_fpir=0.05).threshold == pytest.approx(exact.threshold, 1e-5)


def test_duplicate_across_people_misses_the_target_honestly() -> None:
    vectors = np.array([[0, 1], [0, 1], [1, 0], [1, 0.1]], dtype=np.float32)
    index = FaceIndex(metric="cosine", dim=2)
    index.add(vectors, labels=["ann", "bob", "bob", "cy"])  # ann and bob share an image
    report = index.calibrate(target_fpir=0.1)
    assert report.threshold == 0.0 and report.fpir > 0.1


def test_identify_threshold_precedence() -> None:
    index = FaceIndex(metric="euclidean", dim=1)
    index.add(np.array([[0.0], [1.0]], dtype=np.float32), labels=["a", "b"])
    query = np.array([0.3], dtype=np.float32)
    index.threshold = 0.5  # 1:1 only: identify falls back to it
    assert index.identify(query).label == "a"
    index.identify_threshold = 0.2  # the 1:N threshold wins
    assert index.identify(query) is None and index.search_threshold == 0.2
    assert index.identify(query, threshold=0.4).label == "a"  # the argument wins over both
    assert index.verify(query, np.array([0.0], np.float32)).threshold == 0.5  # verify: 1:1


def test_bad_input_is_typed() -> None:
    rng = np.random.default_rng(6)
    vectors, labels = people(rng, 5, 3, dim=4)
    index = FaceIndex(metric="cosine", dim=4)
    with pytest.raises(siamkit.EmptyIndexError):
        index.calibrate(target_fpir=0.01)
    index.add(vectors[:3], labels="ann")
    with pytest.raises(siamkit.DataError, match="at least two"):
        index.calibrate(target_fpir=0.01)
    index.add(vectors[3:], labels=labels[3:].tolist())
    for bad in (0, 1, 1.5, -0.1, True, "0.01", float("nan")):
        with pytest.raises(siamkit.ConfigError, match="target_fpir"):
            index.calibrate(target_fpir=bad)
    with pytest.raises(siamkit.ConfigError, match="one threshold per call"):
        index.calibrate(target_far=0.01, target_fpir=0.01)
    with pytest.raises(siamkit.ConfigError, match="target_fpir"):
        index.calibrate(unknown=vectors)
    with pytest.raises(siamkit.DataError, match="no probe"):
        index.calibrate(target_fpir=0.1, unknown=np.zeros((0, 4), np.float32))
    with pytest.raises(siamkit.ShapeError):
        index.calibrate(target_fpir=0.1, unknown=np.zeros((2, 5), np.float32))
    with pytest.raises(siamkit.ConfigError, match="threshold"):
        index.identify_threshold = -1.0
    with pytest.raises(siamkit.DataError, match="stranger"):
        fit_fpir_threshold(OpenSetScores([0.1], [True], []), 0.1, gallery_size=1,
                           gallery_people=1)  # fmt: skip
    with pytest.raises(siamkit.DataError, match="NaN"):
        OpenSetScores([np.nan], [True], [0.2])
    with pytest.raises(siamkit.ShapeError):
        OpenSetScores([0.1, 0.2], [True], [0.2])


# -- DET and FNIR at FPIR ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_det_and_fnir_at_fpir_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gallery, g_lab = people(rng, 20, 2, dim=8, noise=0.7)
    known, k_lab = people(np.random.default_rng(seed), 20, 2, dim=8, noise=0.7)
    strangers, _ = people(rng, 50, 2, dim=8, noise=0.7)
    probes = np.r_[known, strangers]
    p_lab = np.r_[k_lab, np.full(100, 99)]
    scores = open_set_scores(gallery, g_lab, probes, p_lab, "euclidean")
    d = pairwise_distances(probes, gallery, "euclidean").astype(np.float64)
    nearest = d.min(1)
    right = g_lab[d.argmin(1)] == p_lab
    mated = np.isin(p_lab, g_lab)
    curve = det_curve(scores)
    for t, fpir, fnir in zip(curve.thresholds, curve.fpir, curve.fnir, strict=True):
        assert fpir == pytest.approx((nearest[~mated] <= t).mean())
        assert fnir == pytest.approx(1 - (right & (nearest <= t))[mated].mean())
    assert np.all(np.diff(curve.fpir) >= 0) and np.all(np.diff(curve.fnir) <= 0)
    for fit in fnir_at_fpir(scores, (0.1, 0.01), gallery_size=40, gallery_people=20):
        # The lowest FNIR of any threshold whose FPIR is within the target.
        ok = curve.fpir <= fit.target_fpir
        assert fit.fnir == pytest.approx(curve.fnir[ok].min())
        assert fit.fpir <= fit.target_fpir


def test_growth_warning_threshold() -> None:
    rng = np.random.default_rng(7)
    vectors, labels = people(rng, 10, 2, dim=8)
    index = FaceIndex(metric="cosine", dim=8)
    index.add(vectors, labels=labels.tolist())
    index.calibrate(target_fpir=0.1)
    assert index.info()["warnings"] == []
    more, more_labels = people(rng, 10, 2, dim=8)
    index.add(more, labels=(more_labels + 100).tolist())
    assert index.info()["warnings"] == []  # 40 items: twice the 20, not past it
    index.add(more[:1], labels=[500])
    (warning,) = index.info()["warnings"]
    assert "41 items" in warning and "calibrate again" in warning
    assert growth_warning(index.fpir_calibration, 41, factor=3.0) is None
    index.identify_threshold = None  # identify now falls back to nothing: no warning either
    assert index.info()["warnings"] == []
    index.threshold = 0.3
    assert "1:1 threshold" in index.info()["warnings"][0]


# -- persistence --------------------------------------------------------------------------
def test_round_trip_and_version_2_files_still_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    vectors, labels = people(rng, 10, 3, dim=8)
    index = FaceIndex(metric="cosine", dim=8)
    index.add(vectors, labels=labels.tolist())
    far, fpir = index.calibrate(target_far=0.01), index.calibrate(target_fpir=0.05)
    loaded = FaceIndex.load(index.save(tmp_path / "index"))
    assert loaded.calibration == far and loaded.fpir_calibration == fpir
    assert loaded.identify_threshold == fpir.threshold and loaded.threshold == far.threshold
    assert loaded.identify(vectors) == index.identify(vectors)
    assert loaded.info()["fpir_calibration"]["gallery_size"] == 30
    # A version 2 manifest (before the 1:N threshold) still loads, without one.
    manifest_path = tmp_path / "index" / storage.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["identify_threshold"], manifest["fpir_calibration"]
    manifest["format_version"] = 2
    manifest_path.write_text(json.dumps(with_checksum(manifest)))
    old = FaceIndex.load(tmp_path / "index")
    assert old.fpir_calibration is None and old.identify_threshold is None
    assert old.calibration == far and old.search_threshold == far.threshold
    # ... but a version 2 manifest carrying version 3 fields is refused.
    manifest_path.write_text(json.dumps(with_checksum({**manifest, "identify_threshold": 0.1})))
    with pytest.raises(siamkit.IndexFileError, match="unknown field"):
        FaceIndex.load(tmp_path / "index")
