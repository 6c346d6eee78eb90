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
        """The fit as a JSON-able dict (tuples as lists, as JSON gives them back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


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
        reliable: The threshold can be trusted: at least ``10 / target_far``
            impostor pairs (fewer cannot measure such a small rate), the target
            reached, and some genuine pair accepted. False whenever ``warnings``
            says the target was missed or nothing is separated.
        source: ``"gallery"`` (a face index's own pairs) or ``"pairs"`` (given).
        warnings: What makes the threshold untrustworthy, one sentence each
            with its fix (:func:`siamkit.thresholds.fit_warnings`): impostor
            pairs at distance 0, a threshold that accepts no genuine pair,
            genuine pairs tied with the impostor pairs it rejects, and for a
            gallery labels that look like one person (images of two labels
            nearer than any two of one). Empty for a sound fit.

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
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", _texts(self.warnings))


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
        reliable: The threshold can be trusted: at least ``10 / target_fpir``
            non-mated searches, the target reached, and some mated search
            matched to its own person. False whenever ``warnings`` says the
            target was missed or nothing is separated.
        source: ``"leave-one-person-out"`` (each enrolled person searched as a
            stranger against the others) or ``"probes"`` (given unknown probes).
        warnings: What makes the threshold untrustworthy, one sentence each
            with its fix, as for :class:`FarCalibration`: strangers' searches at
            distance 0, no enrolled person matched, ties, and people of two
            labels nearer than any two images of one (duplicate identities).

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
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", _texts(self.warnings))


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


def unreliable_reason(fit: FarCalibration | FpirCalibration) -> str | None:
    """Why a fit is not ``reliable``, in a few words; None when it is.

    Examples:
        >>> few = FarCalibration(0.4, 0.01, 0.0, 0.9, 20, 50, False)
        >>> unreliable_reason(few)
        'too few impostor pairs (fewer than 1000)'
        >>> unreliable_reason(FarCalibration(0.0, 0.01, 0.5, 1.0, 20, 5000, False))
        'the target FAR was missed (impostor pairs at distance 0)'
    """
    if fit.reliable:
        return None
    if isinstance(fit, FarCalibration):
        rate, target, separated = fit.far, fit.target_far, fit.tar > 0
        words = ("FAR", "impostor pairs", "it accepts no genuine pair")
    else:
        rate, target, separated = fit.fpir, fit.target_fpir, fit.fnir is None or fit.fnir < 1
        words = ("FPIR", "stranger searches", "it matches no enrolled person")
    if rate > target:
        return f"the target {words[0]} was missed ({words[1]} at distance 0)"
    if not separated:
        return words[2]
    return f"too few {words[1]} (fewer than {10 / target:.0f})"


def _texts(values: Any) -> tuple[str, ...]:
    """Warnings as a tuple of strings (JSON gives a list back)."""
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"warnings must be a list of strings, got {values!r}")
    return tuple(values)
