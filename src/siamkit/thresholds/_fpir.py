"""1:N thresholds: a false-positive identification rate on searches by strangers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamkit.exceptions import DataError, ShapeError
from siamkit.geometry import embeddings_and_labels, pairwise_distances
from siamkit.thresholds._results import DetCurve, FpirCalibration
from siamkit.thresholds._rule import (
    accepts,
    check_rate,
    fit_reliable,
    fit_warnings,
    threshold_at_rate,
)

#: The FPIRs ``siamkit eval`` reports FNIR at.
FPIRS = (1e-1, 1e-2, 1e-3)
#: ``info()`` and the CLI warn once a gallery holds this many times the items
#: its 1:N threshold was fitted at.
GROWTH_FACTOR = 2.0
_CHUNK = 1024  # probes per block of distances, to bound memory


@dataclass(frozen=True)
class OpenSetScores:
    """The outcome of open-set searches: the nearest gallery face of each probe.

    Attributes:
        mated: Nearest gallery distance of each probe of an enrolled person.
        mated_correct: Whether that nearest face shows the probe's own person.
        non_mated: Nearest gallery distance of each probe of a stranger.

    Examples:
        >>> s = OpenSetScores([0.1, 0.4], [True, False], [0.3, 0.8])
        >>> s.fpir(0.35), s.fnir(0.35), s.misidentified(0.5)
        (0.5, 0.5, 0.5)
    """

    mated: np.ndarray
    mated_correct: np.ndarray
    non_mated: np.ndarray

    def __post_init__(self) -> None:
        mated = np.asarray(self.mated, dtype=np.float64).reshape(-1)
        correct = np.asarray(self.mated_correct, dtype=bool).reshape(-1)
        non_mated = np.asarray(self.non_mated, dtype=np.float64).reshape(-1)
        if mated.shape != correct.shape:
            raise ShapeError(f"{mated.size} mated distances but {correct.size} correct flags")
        if not (np.isfinite(mated).all() and np.isfinite(non_mated).all()):
            raise DataError("search distances contain NaN or infinity")
        object.__setattr__(self, "mated", mated)
        object.__setattr__(self, "mated_correct", correct)
        object.__setattr__(self, "non_mated", non_mated)

    def fpir(self, threshold: float) -> float:
        """Share of non-mated searches matched to someone at ``threshold``."""
        return float(accepts(self.non_mated, threshold).mean()) if self.non_mated.size else 0.0

    def fnir(self, threshold: float) -> float | None:
        """Share of mated searches not matched to their own person (None without any)."""
        if not self.mated.size:
            return None
        return float(1.0 - (self.mated_correct & accepts(self.mated, threshold)).mean())

    def misidentified(self, threshold: float) -> float | None:
        """Share of mated searches matched to the wrong person (None without any)."""
        if not self.mated.size:
            return None
        return float((~self.mated_correct & accepts(self.mated, threshold)).mean())


def open_set_scores(
    gallery: Any, gallery_labels: Any, probes: Any, probe_labels: Any, metric: str
) -> OpenSetScores:
    """Search every probe against a gallery by brute force, in ``metric``'s geometry.

    Probes whose label is in the gallery are mated, the others non-mated.

    Raises:
        ShapeError: labels and embeddings differ in number.
        DataError: an empty gallery.

    Examples:
        >>> g = np.array([[0.0], [1.0]], dtype="float32")
        >>> p = np.array([[0.1], [0.6], [5.0]], dtype="float32")
        >>> s = open_set_scores(g, ["a", "b"], p, ["a", "a", "z"], "euclidean")
        >>> s.mated.round(3).tolist(), s.mated_correct.tolist(), s.non_mated.tolist()
        ([0.1, 0.4], [True, False], [4.0])
    """
    g_emb, g_lab = embeddings_and_labels(gallery, gallery_labels, "gallery embeddings")
    p_emb, p_lab = embeddings_and_labels(probes, probe_labels, "probe embeddings")
    if not len(g_emb):
        raise DataError("the gallery is empty: enrol someone before searching it")
    nearest = np.empty(len(p_emb), dtype=np.int64)
    distance = np.empty(len(p_emb), dtype=np.float64)
    for start in range(0, len(p_emb), _CHUNK):
        block = np.asarray(pairwise_distances(p_emb[start : start + _CHUNK], g_emb, metric))
        nearest[start : start + _CHUNK] = block.argmin(1)
        distance[start : start + _CHUNK] = block.min(1)
    known = np.isin(p_lab, g_lab)
    return OpenSetScores(
        mated=distance[known],
        mated_correct=g_lab[nearest[known]] == p_lab[known],
        non_mated=distance[~known],
    )


def fit_fpir_threshold(
    scores: OpenSetScores,
    target_fpir: float,
    *,
    gallery_size: int,
    gallery_people: int,
    source: str = "probes",
) -> FpirCalibration:
    """The 1:N threshold matching at most ``target_fpir`` of the non-mated searches.

    Placed by the rule of :mod:`siamkit.thresholds` (ties, fallback): in the
    middle of the gap below the first non-mated distance that would exceed
    the target. The FNIR there is the expected share of enrolled people
    rejected or misidentified. Rates are measured with
    :func:`~siamkit.thresholds.accepts`, the rule identify decides by;
    ``warnings`` and ``reliable`` say whether the threshold separates anything.

    Raises:
        ConfigError: ``target_fpir`` is not in (0, 1).
        DataError: no non-mated search to fit on.

    Examples:
        >>> s = OpenSetScores([0.1, 0.2, 0.5], [True, True, True], [0.3, 0.6, 0.9, 1.0])
        >>> c = fit_fpir_threshold(s, 0.25, gallery_size=10, gallery_people=5)
        >>> c.threshold, c.fpir, c.fnir
        (0.55, 0.25, 0.0)
    """
    target_fpir = check_rate(target_fpir, "target_fpir")
    if not scores.non_mated.size:
        raise DataError(
            "no search by a stranger (non-mated probe) to calibrate on: enrol at least two "
            "people, or pass unknown probes"
        )
    threshold = threshold_at_rate(scores.non_mated, target_fpir, candidates=scores.mated)
    fpir = scores.fpir(threshold)
    matched = scores.mated_correct & accepts(scores.mated, threshold)
    warnings = fit_warnings(scores.non_mated, scores.mated, matched, threshold, target_fpir, "1:N")
    return FpirCalibration(
        threshold=threshold,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=scores.fnir(threshold),
        misidentified=scores.misidentified(threshold),
        num_mated=int(scores.mated.size),
        num_non_mated=int(scores.non_mated.size),
        gallery_size=int(gallery_size),
        gallery_people=int(gallery_people),
        reliable=fit_reliable(scores.non_mated.size, target_fpir, fpir, matched, scores.mated.size),
        source=source,
        warnings=warnings,
    )


def fnir_at_fpir(
    scores: OpenSetScores,
    targets: Sequence[float] = FPIRS,
    *,
    gallery_size: int,
    gallery_people: int,
) -> list[FpirCalibration]:
    """FNIR at each target FPIR (the threshold fitted on these very searches).

    Examples:
        >>> s = OpenSetScores([0.1, 0.5], [True, True], [0.3, 0.9])
        >>> [c.fnir for c in fnir_at_fpir(s, (0.5, 0.1), gallery_size=4, gallery_people=2)]
        [0.0, 0.5]
    """
    return [
        fit_fpir_threshold(scores, t, gallery_size=gallery_size, gallery_people=gallery_people)
        for t in targets
    ]


def det_curve(scores: OpenSetScores) -> DetCurve:
    """FNIR against FPIR at every distinct observed distance (see :class:`DetCurve`).

    Raises:
        DataError: no mated or no non-mated search.

    Examples:
        >>> curve = det_curve(OpenSetScores([0.1, 0.5], [True, False], [0.3]))
        >>> curve.fnir.tolist()
        [1.0, 0.5, 0.5, 0.5]
    """
    if not scores.mated.size or not scores.non_mated.size:
        raise DataError("a DET curve needs searches by enrolled people and by strangers")
    values = np.unique(np.concatenate([scores.mated, scores.non_mated]))
    non_mated = np.sort(scores.non_mated)
    hits = np.sort(scores.mated[scores.mated_correct])
    fpir = np.searchsorted(non_mated, values, side="right") / non_mated.size
    fnir = 1.0 - np.searchsorted(hits, values, side="right") / scores.mated.size
    return DetCurve(fpir=np.r_[0.0, fpir], fnir=np.r_[1.0, fnir], thresholds=np.r_[-np.inf, values])


def growth_warning(
    calibration: FpirCalibration | None, gallery_size: int, factor: float = GROWTH_FACTOR
) -> str | None:
    """A warning when a gallery has grown ``factor`` times past its 1:N calibration, else None.

    Examples:
        >>> c = FpirCalibration(0.3, 0.01, 0.01, 0.05, 0.0, 20, 100, 50, 10, True)
        >>> growth_warning(c, 80) is None, growth_warning(c, 101)[:33]
        (True, 'the gallery holds 101 items, 2.0x')
    """
    if calibration is None or gallery_size <= factor * calibration.gallery_size:
        return None
    grown = gallery_size / max(1, calibration.gallery_size)
    return (
        f"the gallery holds {gallery_size} items, {grown:.1f}x the {calibration.gallery_size} "
        f"its 1:N threshold was calibrated at (FPIR {calibration.target_fpir:g}): strangers "
        "now match someone more often; calibrate again (target_fpir=...)"
    )
