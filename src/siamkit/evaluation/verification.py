"""Verification (1:1) metrics on distances: ROC, AUC, EER, thresholds, accuracy.

Convention: a pair is accepted as "same person" when its distance is at most
the threshold; genuine pairs show one person, impostor pairs two. Thresholds
for a target FAR are fitted by :mod:`siamkit.thresholds`, as in the face index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from siamkit.exceptions import DataError, ShapeError
from siamkit.geometry import check_embeddings, pairwise_distances
from siamkit.thresholds import FarCalibration, accepts, fit_far_threshold
from siamkit.thresholds import check_scores as _check


@dataclass(frozen=True)
class RocCurve:
    """False-accept rate, true-accept rate and the distance threshold of each point.

    Examples:
        >>> curve = roc_curve([0.1, 0.9], [True, False])
        >>> curve.far.tolist(), curve.tar.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc_curve(distances: Any, same: Any) -> RocCurve:
    """ROC curve over every distinct threshold, from (0, 0) to (1, 1).

    Examples:
        >>> roc_curve([0.1, 0.4, 0.35, 0.8], [True, False, True, False]).tar.tolist()
        [0.0, 0.5, 1.0, 1.0, 1.0]
    """
    d, s = _check(distances, same)
    order = np.argsort(d, kind="mergesort")
    d, s = d[order], s[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(d)), d.size - 1]  # ties share one point
    tp = np.cumsum(s)[last_of_run]
    fp = np.cumsum(~s)[last_of_run]
    return RocCurve(
        far=np.r_[0.0, fp / (~s).sum()],
        tar=np.r_[0.0, tp / s.sum()],
        thresholds=np.r_[-np.inf, d[last_of_run]],
    )


def roc_auc(distances: Any, same: Any) -> float:
    """Area under the ROC curve: the chance a genuine pair is closer than an impostor pair.

    Ties count one half.

    Examples:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [True, False, True, False])
        1.0
    """
    curve = roc_curve(distances, same)
    return float((np.diff(curve.far) * (curve.tar[1:] + curve.tar[:-1]) / 2).sum())


def equal_error_rate(distances: Any, same: Any) -> tuple[float, float]:
    """The rate at which false accepts equal false rejects, and the threshold there.

    Interpolates linearly between the two ROC points around the crossing.

    Examples:
        >>> eer, threshold = equal_error_rate([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
        >>> eer
        0.5
    """
    curve = roc_curve(distances, same)
    frr = 1.0 - curve.tar
    gap = curve.far - frr  # rises from -1 to +1
    k = int(np.argmax(gap >= 0))  # >= 1: the curve starts at gap = -1
    g0, g1 = gap[k - 1], gap[k]
    w = 0.0 if g1 == g0 else -g0 / (g1 - g0)
    eer = curve.far[k - 1] + w * (curve.far[k] - curve.far[k - 1])
    t0 = curve.thresholds[k - 1] if np.isfinite(curve.thresholds[k - 1]) else curve.thresholds[k]
    threshold = t0 + w * (curve.thresholds[k] - t0)
    return float(eer), float(threshold)


def accuracy_at(distances: Any, same: Any, threshold: float) -> float:
    """Share of pairs classified right when accepting distances ``<= threshold``.

    Examples:
        >>> accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.6)
        1.0
    """
    d, s = _check(distances, same)
    return float((accepts(d, threshold) == s).mean())


def fit_threshold(distances: Any, same: Any) -> float:
    """The threshold of best accuracy on these pairs (a midpoint between two distances).

    Examples:
        >>> round(fit_threshold([0.1, 0.2, 0.7, 0.9], [True, True, False, False]), 6)
        0.45
    """
    d, s = _check(distances, same)
    order = np.argsort(d, kind="mergesort")
    d, s = d[order], s[order]
    # accepting the first k pairs: right = genuine among them + impostors after them
    correct = np.r_[0, np.cumsum(s)] + np.r_[(~s).sum(), (~s).sum() - np.cumsum(~s)]
    candidates = np.r_[
        0, np.flatnonzero(np.diff(d)) + 1, d.size
    ]  # cut only between distinct values
    best = int(candidates[np.argmax(correct[candidates])])
    if best == 0:
        return float(d[0] - 1e-6)
    if best == d.size:
        return float(d[-1])
    return float((d[best - 1] + d[best]) / 2)


def all_pairs_distances(embeddings: Any, labels: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Distances and same-person flags of every unordered pair of embeddings.

    Examples:
        >>> d, same = all_pairs_distances(np.eye(3, dtype="float32"), [0, 0, 1], "cosine")
        >>> d.tolist(), same.tolist()
        ([1.0, 1.0, 1.0], [True, False, False])
    """
    check_embeddings(embeddings)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(embeddings):
        raise ShapeError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    dist = np.asarray(pairwise_distances(np.asarray(embeddings, dtype=np.float32), None, metric))
    i, j = np.triu_indices(len(labels), k=1)
    return dist[i, j].astype(np.float64), labels[i] == labels[j]


@dataclass(frozen=True)
class VerificationResult:
    """Verification metrics over a set of pairs.

    Examples:
        >>> verification_metrics([0.1, 0.9], [True, False]).to_dict()["eer"]
        0.0
    """

    auc: float
    eer: float
    eer_threshold: float
    num_genuine: int
    num_impostor: int

    def to_dict(self) -> dict[str, float | int]:
        """The metrics as a JSON-able dict."""
        return asdict(self)


def verification_metrics(distances: Any, same: Any) -> VerificationResult:
    """AUC and EER of a set of pairs.

    Examples:
        >>> verification_metrics([0.1, 0.2, 0.7, 0.9], [True, True, False, False]).auc
        1.0
    """
    d, s = _check(distances, same)
    eer, threshold = equal_error_rate(d, s)
    return VerificationResult(
        auc=roc_auc(d, s),
        eer=eer,
        eer_threshold=threshold,
        num_genuine=int(s.sum()),
        num_impostor=int((~s).sum()),
    )


#: TAR at a target FAR: the :class:`siamkit.thresholds.FarCalibration` that
#: :func:`tar_at_far` returns (the same class as a face index's ``Calibration``).
TarAtFar = FarCalibration


def tar_at_far(distances: Any, same: Any, target_far: float) -> FarCalibration:
    """TAR at the largest threshold whose FAR does not exceed ``target_far``.

    The threshold follows the rule of :mod:`siamkit.thresholds`, as the face
    index's calibration does; ``reliable`` is False below ``10 / target_far``
    impostor pairs.

    Raises:
        ConfigError: ``target_far`` is not in (0, 1).

    Examples:
        >>> d = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        >>> r = tar_at_far(d, [True, True, False, True, False, False], target_far=0.34)
        >>> r.tar, round(r.far, 3), r.threshold, r.reliable
        (1.0, 0.333, 0.45, False)
    """
    return fit_far_threshold(distances, same, target_far, source="pairs")


@dataclass(frozen=True)
class KFoldAccuracy:
    """LFW-style accuracy: threshold fitted on k-1 folds, scored on the last, rotated.

    Examples:
        >>> KFoldAccuracy(mean=0.9, std=0.05, folds=(0.85, 0.95), thresholds=(0.4, 0.5)).mean
        0.9
    """

    mean: float
    std: float
    folds: tuple[float, ...]
    thresholds: tuple[float, ...]


def kfold_accuracy(distances: Any, same: Any, folds: int = 10, seed: int = 0) -> KFoldAccuracy:
    """Accuracy with the threshold always fitted on pairs other than those scored.

    Pairs are shuffled (seeded) and cut into ``folds`` parts; each part is scored
    with the threshold of best accuracy on the others.

    Examples:
        >>> d = np.r_[np.linspace(0, 0.4, 10), np.linspace(0.6, 1, 10)]
        >>> kfold_accuracy(d, np.r_[[True] * 10, [False] * 10], folds=5).mean
        1.0
    """
    d, s = _check(distances, same)
    if folds < 2 or folds > d.size:
        raise DataError(f"folds must be between 2 and the number of pairs ({d.size}), got {folds}")
    order = np.random.default_rng(seed).permutation(d.size)
    parts = np.array_split(order, folds)
    scores, thresholds = [], []
    for k, held in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
        if s[rest].all() or not s[rest].any():
            raise DataError(
                "a fold's training pairs are all genuine or all impostor: use fewer folds"
            )
        threshold = fit_threshold(d[rest], s[rest])
        thresholds.append(threshold)
        scores.append(float((accepts(d[held], threshold) == s[held]).mean()))
    return KFoldAccuracy(
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
        folds=tuple(scores),
        thresholds=tuple(thresholds),
    )
