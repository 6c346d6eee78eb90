"""TAR@FAR, k-fold accuracy, CMC, retrieval and open-set metrics against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import siamkit
from siamkit.evaluation import (
    cmc_curve,
    kfold_accuracy,
    open_set_identification,
    retrieval_metrics,
    tar_at_far,
)
from siamkit.geometry import pairwise_distances


def random_pairs(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.3
    d = np.where(same, rng.normal(0.4, 0.15, n), rng.normal(0.9, 0.2, n))
    return np.round(d, 2), same  # rounding makes ties


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.1, 0.01, 0.003])
def test_tar_at_far_brute_force(seed: int, target: float) -> None:
    d, same = random_pairs(seed)
    result = tar_at_far(d, same, target)
    # brute force: among all thresholds with FAR <= target, the one with highest TAR
    best_tar = 0.0
    for t in np.unique(d):
        far = (d[~same] <= t).mean()
        if far <= target and (d[same] <= t).mean() >= best_tar:
            best_tar = (d[same] <= t).mean()
    assert result.tar == pytest.approx(best_tar)
    assert result.far <= target
    assert result.far == pytest.approx((d[~same] <= result.threshold).mean())
    # The rule of siamkit.thresholds: the middle of the gap below the first impostor
    # that would exceed the target.
    impostor = np.sort(d[~same])
    allowed = int(np.floor(target * impostor.size + 1e-9))
    ceiling = impostor[allowed]
    low = d[d < ceiling].max() if (d < ceiling).any() else 0.0
    assert result.threshold == pytest.approx((low + ceiling) / 2)
    assert ((d <= result.threshold) == (d < ceiling)).all()
    assert result.num_impostor == int((~same).sum())
    assert result.reliable == (result.num_impostor >= 10 / target)


def test_tar_at_far_hand_computed_and_errors() -> None:
    d = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    same = [True, True, False, True, False, False]
    r = tar_at_far(d, same, 0.34)
    assert (r.tar, r.threshold) == (1.0, 0.45)
    r = tar_at_far(d, same, 0.3)  # no impostor may pass
    assert r.tar == pytest.approx(2 / 3) and r.far == 0.0 and r.threshold == 0.25
    r = tar_at_far([0.0, 0.0, 0.5], [True, False, False], 0.4)  # an impostor at 0: missed
    assert r.threshold == 0.0 and r.far == 0.5
    # One rule for every rate: out of (0, 1) is a ConfigError (an argument, not the data).
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(siamkit.ConfigError, match="target_far"):
            tar_at_far(d, same, bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_accuracy_never_scores_with_its_own_threshold(seed: int) -> None:
    d, same = random_pairs(seed)
    result = kfold_accuracy(d, same, folds=10, seed=seed)
    order = np.random.default_rng(seed).permutation(len(d))
    parts = np.array_split(order, 10)
    for k, held in enumerate(parts):
        rest = np.setdiff1d(order, held)
        t = siamkit.evaluation.fit_threshold(d[rest], same[rest])
        assert result.thresholds[k] == pytest.approx(t)
        assert result.folds[k] == pytest.approx(((d[held] <= t) == same[held]).mean())
    assert result.mean == pytest.approx(np.mean(result.folds))
    assert result.std == pytest.approx(np.std(result.folds))
    with pytest.raises(siamkit.DataError, match="folds"):
        kfold_accuracy(d, same, folds=1)


def brute_force_cmc(dist: np.ndarray, p_lab, g_lab, max_rank: int) -> np.ndarray:
    ranks = []
    for i, label in enumerate(p_lab):
        if label not in set(g_lab):
            continue
        closest = {}
        for j in np.argsort(dist[i], kind="stable"):
            closest.setdefault(g_lab[j], dist[i, j])
        ordered = sorted(closest.values())
        ranks.append(sum(v < closest[label] for v in ordered) + 1)
    ranks = np.array(ranks)
    return np.array([(ranks <= k).mean() for k in range(1, max_rank + 1)])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_cmc_against_brute_force(metric: str) -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(30, 5)).astype(np.float32)
    g_lab = rng.integers(0, 10, 30)
    probes = rng.normal(size=(25, 5)).astype(np.float32)
    p_lab = rng.integers(0, 12, 25)  # some identities are not enrolled
    dist = np.asarray(pairwise_distances(probes, gallery, metric))
    expected = brute_force_cmc(dist, p_lab, g_lab, max_rank=len(set(g_lab)))
    got = cmc_curve(probes, p_lab, gallery, g_lab, metric, max_rank=50)
    np.testing.assert_allclose(got, expected)
    assert np.all(np.diff(got) >= 0) and got[-1] == 1.0


def test_cmc_leave_one_out_rank1_equals_rank1() -> None:
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(40, 3)).astype(np.float32)
    labels = rng.integers(0, 8, 40)
    cmc = cmc_curve(emb, labels, metric="euclidean")
    assert cmc[0] == pytest.approx(siamkit.evaluation.rank1_leave_one_out(emb, labels, "euclidean"))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_retrieval_metrics_against_brute_force(metric: str) -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(6, 8))
    labels = np.repeat(np.arange(6), 5)
    emb = (centres[labels] + rng.normal(scale=0.9, size=(30, 8))).astype(np.float32)
    dist = np.asarray(pairwise_distances(emb, None, metric), dtype=np.float64)
    np.fill_diagonal(dist, np.inf)
    p_at_1 = (labels[dist.argmin(1)] == labels).mean()
    aps = []
    for i in range(len(emb)):
        r = int((labels == labels[i]).sum()) - 1
        hits = labels[np.argsort(dist[i], kind="stable")[:r]] == labels[i]
        aps.append(sum(hits[: k + 1].mean() for k in range(r) if hits[k]) / r)
    got = retrieval_metrics(emb, labels, metric)
    assert got["precision_at_1"] == pytest.approx(p_at_1)
    assert got["mean_average_precision_at_r"] == pytest.approx(np.mean(aps), abs=1e-6)


def test_open_set_at_threshold_and_at_false_alarm_rate() -> None:
    gallery = np.array([[0.0], [10.0], [20.0]], dtype=np.float32)
    g_lab = ["a", "b", "c"]
    probes = np.array([[0.5], [10.2], [18.0], [5.0], [14.0], [30.0], [22.5]], dtype=np.float32)
    p_lab = ["a", "b", "c", "x", "y", "z", "a"]  # x, y, z never enrolled; last "a" is misidentified
    r = open_set_identification(gallery, g_lab, probes, p_lab, "euclidean", threshold=3.0)
    # known: a@0.5 ok, b@0.2 ok, c@2.0 ok, a@2.5 nearest is c (wrong) -> DIR 3/4
    assert r.detection_identification_rate == pytest.approx(3 / 4)
    # unknown nearest distances: 5, 4, 10 -> none within 3
    assert r.unknown_rejection_rate == 1.0 and r.false_alarm_rate == 0.0
    assert (r.num_known, r.num_unknown) == (4, 3)
    r = open_set_identification(gallery, g_lab, probes, p_lab, "euclidean", false_alarm_rate=1 / 3)
    assert r.false_alarm_rate == pytest.approx(1 / 3)  # lets y (4.0) through, not x (5.0)
    assert 4.0 <= r.threshold < 5.0
    assert r.detection_identification_rate == pytest.approx(3 / 4)
    with pytest.raises(siamkit.DataError, match="exactly one"):
        open_set_identification(gallery, g_lab, probes, p_lab, "euclidean")
    with pytest.raises(siamkit.DataError, match="never-enrolled"):
        open_set_identification(gallery, g_lab, probes[:3], p_lab[:3], "euclidean", threshold=1.0)
    with pytest.raises(siamkit.ShapeError):
        open_set_identification(gallery, g_lab[:2], probes, p_lab, "euclidean", threshold=1.0)
