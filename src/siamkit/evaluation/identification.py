"""Identification (1:N) metrics: rank-k and CMC, precision@1, MAP@R, open-set rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from siamkit.exceptions import DataError
from siamkit.geometry import check_metric, embeddings_and_labels, pairwise_distances
from siamkit.thresholds import accepts, check_rate, threshold_at_rate


def _distances(probes: np.ndarray, gallery: np.ndarray | None, metric: str) -> np.ndarray:
    dist = np.asarray(pairwise_distances(probes, gallery, metric), dtype=np.float64)
    if gallery is None:
        np.fill_diagonal(dist, np.inf)  # leave-one-out: an item never matches itself
    return dist


def rank1_leave_one_out(embeddings: Any, labels: Any, metric: str) -> float:
    """Share of items whose nearest *other* item has the same label.

    Each item in turn is the probe and all the others the gallery.

    Examples:
        >>> emb = np.array([[0.0], [0.1], [1.0], [1.2]], dtype="float32")
        >>> rank1_leave_one_out(emb, [0, 0, 1, 1], "euclidean")
        1.0
    """
    emb, lab = embeddings_and_labels(embeddings, labels, "embeddings")
    dist = _distances(emb, None, metric)
    return float((lab[dist.argmin(1)] == lab).mean())


def cmc_curve(
    probes: Any,
    probe_labels: Any,
    gallery: Any | None = None,
    gallery_labels: Any | None = None,
    metric: str = "euclidean",
    max_rank: int = 20,
) -> np.ndarray:
    """Cumulative match characteristic: ``cmc[k-1]`` is the rank-k identification rate.

    A probe is identified at rank k when the k-th nearest *identity* in the
    gallery is its own (several images of one person count as one identity, at
    the rank of the closest). Without a gallery each probe is searched among the
    other probes (leave-one-out). Probes whose identity is not in the gallery
    are left out (closed-set identification).

    Examples:
        >>> g = np.array([[0.0], [1.0], [2.0]], dtype="float32")
        >>> p = np.array([[0.1], [1.9], [1.4]], dtype="float32")
        >>> cmc_curve(p, ["a", "c", "a"], g, ["a", "b", "c"], max_rank=3).tolist()
        [0.6666666666666666, 0.6666666666666666, 1.0]
    """
    check_metric(metric)
    p_emb, p_lab = embeddings_and_labels(probes, probe_labels, "probe embeddings")
    if gallery is None:
        g_emb, g_lab, dist = p_emb, p_lab, _distances(p_emb, None, metric)
    else:
        g_emb, g_lab = embeddings_and_labels(gallery, gallery_labels, "gallery embeddings")
        dist = _distances(p_emb, g_emb, metric)
    identities, inverse = np.unique(g_lab, return_inverse=True)
    # distance from each probe to each identity = to its closest image of that identity
    per_identity = np.full((len(p_emb), len(identities)), np.inf)
    for column, identity in enumerate(range(len(identities))):
        per_identity[:, column] = dist[:, inverse == identity].min(1)
    known = np.isin(p_lab, identities)
    if not known.any():
        raise DataError("no probe's identity is in the gallery")
    own = np.searchsorted(identities, p_lab[known])
    own_distance = per_identity[known, own]
    ranks = (per_identity[known] < own_distance[:, None]).sum(1) + 1
    max_rank = min(max_rank, len(identities))
    return np.array([(ranks <= k).mean() for k in range(1, max_rank + 1)])


def retrieval_metrics(embeddings: Any, labels: Any, metric: str) -> dict[str, float]:
    """Leave-one-out precision@1 and MAP@R, as pytorch-metric-learning defines them.

    Each item in turn searches all the others, nearest first. With ``R`` the
    number of other items of its label, its average precision at ``R`` is the
    mean over the ``R`` nearest of ``precision@k`` at each ``k`` that is a
    match (0 for the others). Items alone with their label are left out, as
    pytorch-metric-learning's ``AccuracyCalculator`` leaves them; with none
    left, both are NaN. Computed in NumPy (no torch).

    Examples:
        >>> emb = np.array([[0.0], [0.1], [1.0], [1.2]], dtype="float32")
        >>> retrieval_metrics(emb, [0, 0, 1, 1], "euclidean")
        {'mean_average_precision_at_r': 1.0, 'precision_at_1': 1.0}
        >>> retrieval_metrics(emb, [0, 1, 0, 1], "euclidean")  # everyone's nearest is another
        {'mean_average_precision_at_r': 0.0, 'precision_at_1': 0.0}
    """
    emb, lab = embeddings_and_labels(embeddings, labels, "embeddings")
    _, codes, counts = np.unique(lab, return_inverse=True, return_counts=True)
    others = counts[codes] - 1  # R of each item
    queries = np.flatnonzero(others > 0)
    if len(queries) == 0:
        return {"mean_average_precision_at_r": float("nan"), "precision_at_1": float("nan")}
    dist = _distances(emb[queries], emb, metric)
    dist[np.arange(len(queries)), queries] = np.inf  # a query never finds itself
    width = int(others.max())
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :width]
    match = codes[nearest] == codes[queries][:, None]
    r = others[queries]
    within_r = np.arange(1, width + 1)[None, :] <= r[:, None]
    hits = match & within_r
    precision = np.cumsum(hits, axis=1) / np.arange(1, width + 1)
    average_precision = (precision * hits).sum(1) / r
    return {
        "mean_average_precision_at_r": float(average_precision.mean()),
        "precision_at_1": float(match[:, 0].mean()),
    }


@dataclass(frozen=True)
class OpenSetResult:
    """How a gallery search treats enrolled and never-enrolled people.

    Attributes:
        threshold: Distance beyond which a probe is declared unknown.
        detection_identification_rate: Share of enrolled probes whose nearest
            gallery match is their own identity and within the threshold (DIR).
        false_alarm_rate: Share of never-enrolled probes matched to someone (within threshold).
        unknown_rejection_rate: ``1 - false_alarm_rate``.
        num_known: Probes of enrolled people.
        num_unknown: Probes of never-enrolled people.

    Examples:
        >>> OpenSetResult(0.5, 0.9, 0.05, 0.95, 100, 40).unknown_rejection_rate
        0.95
    """

    threshold: float
    detection_identification_rate: float
    false_alarm_rate: float
    unknown_rejection_rate: float
    num_known: int
    num_unknown: int


def _nearest(probes: np.ndarray, gallery: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    dist = _distances(probes, gallery, metric)
    nearest = dist.argmin(1)
    return nearest, dist[np.arange(len(probes)), nearest]


def open_set_identification(
    gallery: Any,
    gallery_labels: Any,
    probes: Any,
    probe_labels: Any,
    metric: str,
    threshold: float | None = None,
    false_alarm_rate: float | None = None,
) -> OpenSetResult:
    """Open-set identification at a given threshold or at a target false-alarm rate.

    Probes whose label is not in the gallery are the "unknown" people. Give
    ``threshold`` (e.g. a face index's calibrated one) to measure what share of
    unknown probes it rejects, or ``false_alarm_rate`` to pick the threshold that
    lets through at most that share of unknown probes and report the DIR there
    (fitted by the rule of :mod:`siamkit.thresholds`; for the FNIR at several
    rates and the DET curve, see :func:`siamkit.evaluation.open_set_search`).

    Examples:
        >>> g = np.array([[0.0], [1.0]], dtype="float32")
        >>> p = np.array([[0.1], [0.95], [5.0]], dtype="float32")
        >>> labels = ["a", "b", "z"]
        >>> r = open_set_identification(g, ["a", "b"], p, labels, "euclidean", threshold=0.5)
        >>> r.detection_identification_rate, r.unknown_rejection_rate
        (1.0, 1.0)
    """
    g_emb, g_lab = embeddings_and_labels(gallery, gallery_labels, "gallery embeddings")
    p_emb, p_lab = embeddings_and_labels(probes, probe_labels, "probe embeddings")
    if (threshold is None) == (false_alarm_rate is None):
        raise DataError("give exactly one of threshold and false_alarm_rate")
    nearest, distance = _nearest(p_emb, g_emb, metric)
    known = np.isin(p_lab, g_lab)
    if not known.any() or known.all():
        raise DataError(
            "open-set evaluation needs probes of both enrolled and never-enrolled people"
        )
    if threshold is None:  # the rule of siamkit.thresholds, as the face index fits it
        rate = check_rate(false_alarm_rate, "false_alarm_rate")
        threshold = threshold_at_rate(distance[~known], rate, candidates=distance[known])
    accepted = accepts(distance, threshold)
    correct = g_lab[nearest] == p_lab
    far = float(accepted[~known].mean())
    return OpenSetResult(
        threshold=float(threshold),
        detection_identification_rate=float((accepted & correct)[known].mean()),
        false_alarm_rate=far,
        unknown_rejection_rate=1.0 - far,
        num_known=int(known.sum()),
        num_unknown=int((~known).sum()),
    )
