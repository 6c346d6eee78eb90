"""The typed results of threshold fitting: one family for 1:1 and 1:N decisions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ThresholdFit:
    """A fitted decision threshold: a distance is a match when it is at most ``threshold``.

    The base of :class:`FarCalibration` (1:1) and :class:`FpirCalibration` (1:N).

    Examples:
        >>> ThresholdFit(0.4).to_dict()
        {'threshold': 0.4}
    """

    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The fit as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class FarCalibration(ThresholdFit):
    """A 1:1 threshold fitted for a target false-accept rate, and what it rests on.

    Attributes:
        threshold: The largest observed distance whose false-accept rate on
            the impostor pairs is at most ``target_far`` (see :mod:`siamkit.thresholds`).
        target_far: The false-accept rate asked for.
        far: The false-accept rate reached on the impostor pairs.
        tar: The true-accept rate on the genuine pairs at the threshold.
        num_genuine: Genuine (same person) pairs used.
        num_impostor: Impostor (different people) pairs used.
        reliable: At least ``10 / target_far`` impostor pairs: fewer cannot
            measure such a small rate.
        source: ``"gallery"`` (a face index's own pairs) or ``"pairs"`` (given).

    Examples:
        >>> c = FarCalibration(0.4, 0.01, 0.008, 0.97, 200, 4750, False, "gallery")
        >>> c.to_dict()["threshold"], c.target_far
        (0.4, 0.01)
    """

    target_far: float
    far: float
    tar: float
    num_genuine: int
    num_impostor: int
    reliable: bool
    source: str = "gallery"


@dataclass(frozen=True)
class FpirCalibration(ThresholdFit):
    """A 1:N (open-set search) threshold fitted for a target false-positive identification rate.

    A search is a *match* when the nearest gallery face is within ``threshold``.
    A *non-mated* search (a person not in the gallery) that matches is a false
    positive; a *mated* search (an enrolled person) that does not match its own
    person (rejected, or the nearest face is someone else) is a false negative.

    Attributes:
        threshold: The largest observed distance at which at most ``target_fpir``
            of the non-mated searches match (see :mod:`siamkit.thresholds`).
        target_fpir: The false-positive identification rate asked for.
        fpir: The rate reached on the non-mated searches.
        fnir: Expected false-negative identification rate at the threshold:
            mated searches rejected or misidentified (None without mated searches).
        misidentified: The part of ``fnir`` matched to the wrong person (None likewise).
        num_mated: Mated searches used (known probes).
        num_non_mated: Non-mated searches used (unknown probes).
        gallery_size: Items in the gallery the threshold was fitted at: the
            chance that a stranger matches someone grows with it.
        gallery_people: People in that gallery.
        reliable: At least ``10 / target_fpir`` non-mated searches.
        source: ``"leave-one-person-out"`` (each enrolled person searched as a
            stranger against the others) or ``"probes"`` (given unknown probes).

    Examples:
        >>> c = FpirCalibration(0.3, 0.01, 0.008, 0.05, 0.01, 200, 1000, 600, 60, True, "probes")
        >>> c.fnir, c.gallery_size
        (0.05, 600)
    """

    target_fpir: float
    fpir: float
    fnir: float | None
    misidentified: float | None
    num_mated: int
    num_non_mated: int
    gallery_size: int
    gallery_people: int
    reliable: bool
    source: str = "leave-one-person-out"


@dataclass(frozen=True)
class DetCurve:
    """Detection error trade-off of open-set search: FNIR against FPIR at every threshold.

    Point ``i`` is the search at ``thresholds[i]``; the first point (threshold
    ``-inf``) matches nothing: FPIR 0, FNIR 1.

    Examples:
        >>> from siamkit.thresholds import OpenSetScores, det_curve
        >>> curve = det_curve(OpenSetScores([0.1, 0.5], [True, True], [0.3]))
        >>> curve.fpir.tolist(), curve.fnir.tolist()
        ([0.0, 0.0, 1.0, 1.0], [1.0, 0.5, 0.5, 0.0])
    """

    fpir: np.ndarray
    fnir: np.ndarray
    thresholds: np.ndarray
