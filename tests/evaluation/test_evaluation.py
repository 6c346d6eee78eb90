"""Verification and identification metrics, against scikit-learn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from siamkit.evaluation import (
    accuracy_at,
    all_pairs_distances,
    equal_error_rate,
    fit_threshold,
    rank1_leave_one_out,
    roc_auc,
    roc_curve,
    verification_metrics,
)
from siamkit.exceptions import DataError, NonFiniteError, ShapeError
from siamkit.geometry import METRICS


def _scores(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    distances = rng.normal(loc=np.where(same, 0.8, 1.3), scale=0.35)
    if ties:
        distances = np.round(distances, 1)  # many equal distances across both classes
    return distances, same


def _brute_distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return float(np.linalg.norm(a - b))
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- ROC and AUC ---------------------------------------------------------------------
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn(seed, ties):
    d, same = _scores(seed, ties=ties)
    if ties:
        assert len(np.unique(d)) < len(d) / 4
    assert roc_auc(d, same) == pytest.approx(roc_auc_score(same, -d), abs=1e-12)


def test_roc_auc_hand_computed():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [True, False, True, False]) == 1.0
    assert roc_auc([0.9, 0.1], [True, False]) == 0.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5  # a tie counts one half
    # genuine {0.2, 0.6}, impostor {0.4, 0.6}: pairs (0.2<0.4) 1, (0.2<0.6) 1, (0.6>0.4) 0, tie 1/2
    assert roc_auc([0.2, 0.6, 0.4, 0.6], [True, True, False, False]) == pytest.approx(2.5 / 4)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(ties):
    d, same = _scores(3, n=120, ties=ties)
    curve = roc_curve(d, same)
    fpr, tpr, thresholds = sk_roc_curve(same, -d, drop_intermediate=False)
    np.testing.assert_allclose(curve.far, fpr, atol=1e-12)
    np.testing.assert_allclose(curve.tar, tpr, atol=1e-12)
    np.testing.assert_allclose(curve.thresholds[1:], -thresholds[1:])
    assert curve.thresholds[0] == -np.inf
    assert (curve.far[0], curve.tar[0], curve.far[-1], curve.tar[-1]) == (0, 0, 1, 1)
    assert (np.diff(curve.far) >= 0).all() and (np.diff(curve.tar) >= 0).all()


# -- EER ----------------------------------------------------------------------------------
def test_eer_hand_computed():
    eer, threshold = equal_error_rate([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
    assert eer == 0.5
    # sorted: .1G .2G .3G .5I .6G .7I .8I .9I ; accepting d <= 0.5: FAR 1/4 = FRR 1/4
    d = [0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8, 0.9]
    same = [True] * 4 + [False] * 4
    eer, threshold = equal_error_rate(d, same)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.5)


def test_eer_interpolates_between_roc_points():
    # genuine .1 .4 ; impostor .2 .3  -> ROC (far, tar): (0,0) (0,.5) (.5,.5) (1,.5) (1,1)
    # far - frr: -1, -.5, 0 ... reached at (.5,.5), threshold .2
    eer, threshold = equal_error_rate([0.1, 0.4, 0.2, 0.3], [True, True, False, False])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.2)
    # genuine .1 .2 .3 ; impostor .15 .4 .5: points (0,0) (0,1/3) (1/3,1/3) (1/3,2/3) (1/3,1) ...
    # gap = far - frr: -1, -2/3, -1/3, 0 -> crossing exactly at (1/3, 2/3), threshold 0.2
    eer, threshold = equal_error_rate(
        [0.1, 0.2, 0.3, 0.15, 0.4, 0.5], [True, True, True, False, False, False]
    )
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.2)
    # genuine .1 .5 ; impostor .2 .3 .6: gap -1, -1/2, -1/6 (at .2), +1/6 (at .3)
    # -> half-way between (1/3, 1/2) and (2/3, 1/2): EER 1/2 at threshold .25
    eer, threshold = equal_error_rate([0.1, 0.5, 0.2, 0.3, 0.6], [True, True, False, False, False])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.25)


def test_eer_of_separable_pairs_is_zero():
    eer, threshold = equal_error_rate([0.1, 0.2, 0.7, 0.9], [True, True, False, False])
    assert eer == 0.0
    assert threshold == pytest.approx(0.2)
    assert accuracy_at([0.1, 0.2, 0.7, 0.9], [True, True, False, False], threshold) == 1.0


def _sklearn_eer(d: np.ndarray, same: np.ndarray) -> float:
    fpr, tpr, _ = sk_roc_curve(same, -d, drop_intermediate=False)
    fnr = 1 - tpr
    gap = fpr - fnr
    k = int(np.argmax(gap >= 0))
    if k == 0:
        return 0.0
    w = -gap[k - 1] / (gap[k] - gap[k - 1])
    return float(fpr[k - 1] + w * (fpr[k] - fpr[k - 1]))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_eer_consistent_with_sklearn_roc_curve(seed, ties):
    d, same = _scores(seed, n=400, ties=ties)
    eer, threshold = equal_error_rate(d, same)
    assert eer == pytest.approx(_sklearn_eer(d, same), abs=1e-12)
    assert 0.1 < eer < 0.45
    if not ties:  # at the threshold false accepts and false rejects nearly balance
        far = np.mean(d[~same] <= threshold)
        frr = np.mean(d[same] > threshold)
        assert abs(far - eer) < 0.02 and abs(frr - eer) < 0.02


# -- thresholds and accuracy --------------------------------------------------------------
def test_accuracy_at_hand_computed():
    assert accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.6) == 1.0
    assert accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.3) == pytest.approx(2 / 3)
    assert accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.5) == 1.0  # inclusive
    assert accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.0) == pytest.approx(1 / 3)
    assert accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=1.0) == pytest.approx(2 / 3)


def _brute_best_accuracy(d: np.ndarray, same: np.ndarray) -> float:
    values = np.unique(d)
    candidates = np.r_[values[0] - 1, (values[1:] + values[:-1]) / 2, values[-1]]
    return max(float(((d <= t) == same).mean()) for t in candidates)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [7, 8, 9, 10])
def test_fit_threshold_maximises_accuracy(seed, ties):
    d, same = _scores(seed, n=150, ties=ties)
    threshold = fit_threshold(d, same)
    best = _brute_best_accuracy(d, same)
    assert accuracy_at(d, same, threshold) == pytest.approx(best, abs=1e-12)
    assert 0.6 < best < 1.0
    # a midpoint between two observed distances (or at an end)
    values = np.unique(d)
    midpoints = (values[1:] + values[:-1]) / 2
    assert (
        np.isclose(midpoints, threshold).any() or threshold >= values[-1] or threshold < values[0]
    )


def test_fit_threshold_hand_computed_and_edges():
    assert fit_threshold([0.1, 0.2, 0.7, 0.9], [True, True, False, False]) == pytest.approx(0.45)
    # all genuine pairs are the farthest: accepting nothing is best
    low = fit_threshold([0.1, 0.2, 0.9, 0.95], [False, False, False, True])
    assert low < 0.1
    assert accuracy_at([0.1, 0.2, 0.9, 0.95], [False, False, False, True], low) == 0.75
    # genuine pairs are the majority and mixed: accepting everything is best
    high = fit_threshold([0.1, 0.2, 0.3, 0.4], [True, False, True, True])
    assert high >= 0.4
    assert accuracy_at([0.1, 0.2, 0.3, 0.4], [True, False, True, True], high) == 0.75


# -- pairs from embeddings ------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
def test_all_pairs_distances_brute_force(metric):
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(9, 4)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 3])
    d, same = all_pairs_distances(emb, labels, metric)
    want_d, want_same = [], []
    for i in range(9):
        for j in range(i + 1, 9):
            want_d.append(_brute_distance(emb[i], emb[j], metric))
            want_same.append(labels[i] == labels[j])
    assert d.dtype == np.float64 and same.dtype == bool
    assert len(d) == 36
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(same, want_same)


def test_all_pairs_distances_documented():
    d, same = all_pairs_distances(np.eye(3, dtype="float32"), [0, 0, 1], "cosine")
    np.testing.assert_allclose(d, [1.0, 1.0, 1.0])
    assert same.tolist() == [True, False, False]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [12, 13])
def test_rank1_leave_one_out_brute_force(metric, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=30)
    centres = rng.normal(size=(5, 6))
    emb = (centres[labels] + rng.normal(scale=0.9, size=(30, 6))).astype(np.float32)
    hits = 0
    for i in range(30):
        others = [j for j in range(30) if j != i]
        nearest = min(others, key=lambda j: _brute_distance(emb[i], emb[j], metric))
        hits += labels[nearest] == labels[i]
    want = hits / 30
    assert 0.0 < want < 1.0  # neither trivial nor hopeless
    assert rank1_leave_one_out(emb, labels, metric) == pytest.approx(want)


def test_rank1_hand_computed():
    emb = np.array([[0.0], [0.1], [1.0], [1.2]], dtype="float32")
    assert rank1_leave_one_out(emb, [0, 0, 1, 1], "euclidean") == 1.0
    assert rank1_leave_one_out(emb, [0, 1, 0, 1], "euclidean") == 0.0
    # item 2's nearest other is 3 (0.2 away), not itself
    assert rank1_leave_one_out(emb, [0, 0, 1, 2], "euclidean") == 0.5


def test_verification_metrics():
    d, same = _scores(14)
    result = verification_metrics(d, same)
    assert result.auc == pytest.approx(roc_auc_score(same, -d))
    assert (result.eer, result.eer_threshold) == equal_error_rate(d, same)
    assert result.num_genuine == same.sum() and result.num_impostor == (~same).sum()
    assert set(result.to_dict()) == {"auc", "eer", "eer_threshold", "num_genuine", "num_impostor"}


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "function", [roc_auc, equal_error_rate, fit_threshold, verification_metrics, roc_curve]
)
def test_single_class_input_is_an_error(function):
    with pytest.raises(DataError, match="genuine"):
        function([0.1, 0.2, 0.3], [True, True, True])
    with pytest.raises(DataError, match="impostor"):
        function([0.1, 0.2, 0.3], [False, False, False])


def test_accuracy_single_class_and_bad_input():
    with pytest.raises(DataError):
        accuracy_at([0.1, 0.2], [True, True], 0.5)
    with pytest.raises(ShapeError):
        roc_auc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(DataError, match="NaN"):
        roc_auc([0.1, np.nan, 0.3], [True, False, True])
    with pytest.raises(DataError):
        fit_threshold([0.1, np.inf], [True, False])


def test_embedding_errors():
    emb = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ShapeError):
        all_pairs_distances(emb, [0, 1], "euclidean")
    with pytest.raises(ShapeError):
        rank1_leave_one_out(emb, [0, 1, 1, 0], "euclidean")
    emb[1, 1] = np.nan
    with pytest.raises(NonFiniteError):
        rank1_leave_one_out(emb, [0, 1, 1], "euclidean")
    with pytest.raises(NonFiniteError):
        all_pairs_distances(emb, [0, 1, 1], "cosine")
