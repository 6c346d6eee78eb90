"""Verification (1:1) metrics on distances: ROC, AUC, EER, thresholds, accuracy.

Convention: a pair is accepted as "same person" when its distance is at most
the threshold; genuine pairs show one person, impostor pairs two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from siamkit.exceptions import DataError, ShapeError
from siamkit.geometry import check_embeddings, pairwise_distances


def _check(distances: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(same, dtype=bool).reshape(-1)
    if d.shape != s.shape:
        raise ShapeError(f"{d.size} distances but {s.size} same/different flags")
    if not np.isfinite(d).all():
        raise DataError("distances contain NaN or infinity")
    if s.all() or not s.any():
        raise DataError("need both genuine (same) and impostor (different) pairs to evaluate")
    return d, s


@dataclass(frozen=True)
class RocCurve:
    """False-accept rate, true-accept rate and the distance threshold of each point."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc_curve(distances: Any, same: Any) -> RocCurve:
    """ROC curve over every distinct threshold, from (0, 0) to (1, 1).

    Example:
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

    Example:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [True, False, True, False])
        1.0
    """
    curve = roc_curve(distances, same)
    return float((np.diff(curve.far) * (curve.tar[1:] + curve.tar[:-1]) / 2).sum())


def equal_error_rate(distances: Any, same: Any) -> tuple[float, float]:
    """The rate at which false accepts equal false rejects, and the threshold there.

    Interpolates linearly between the two ROC points around the crossing.

    Example:
        >>> eer, threshold = equal_error_rate([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
        >>> eer
        0.5
    """
    curve = roc_curve(distances, same)
    frr = 1.0 - curve.tar
    gap = curve.far - frr  # rises from -1 to +1
    k = int(np.argmax(gap >= 0))
    if k == 0:
        return 0.0, float(curve.thresholds[1])
    g0, g1 = gap[k - 1], gap[k]
    w = 0.0 if g1 == g0 else -g0 / (g1 - g0)
    eer = curve.far[k - 1] + w * (curve.far[k] - curve.far[k - 1])
    t0 = curve.thresholds[k - 1] if np.isfinite(curve.thresholds[k - 1]) else curve.thresholds[k]
    threshold = t0 + w * (curve.thresholds[k] - t0)
    return float(eer), float(threshold)


def accuracy_at(distances: Any, same: Any, threshold: float) -> float:
    """Share of pairs classified right when accepting distances ``<= threshold``.

    Example:
        >>> accuracy_at([0.1, 0.5, 0.9], [True, True, False], threshold=0.6)
        1.0
    """
    d, s = _check(distances, same)
    return float(((d <= threshold) == s).mean())


def fit_threshold(distances: Any, same: Any) -> float:
    """The threshold of best accuracy on these pairs (a midpoint between two distances).

    Example:
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

    Example:
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
    """Verification metrics over a set of pairs."""

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

    Example:
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
