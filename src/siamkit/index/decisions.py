"""Decisions a face index makes from distances: verify (1:1) and identify (1:N).

Whatever store holds the gallery, these run on the distances it reports,
with the one acceptance rule of :func:`siamkit.thresholds.accepts` that
fitting and evaluation use too, so a threshold means the same everywhere.

Examples:
    >>> from siamkit.index.results import Match
    >>> matches = [Match(1, "ann", 0.2), Match(2, "bob", 0.3), Match(3, "bob", 0.4)]
    >>> vote(matches, threshold=0.35).label
    'ann'
    >>> vote(matches, threshold=0.45).label
    'bob'
"""

from __future__ import annotations

from collections import Counter

from siamkit.exceptions import NotCalibratedError
from siamkit.index.results import Match, Verification
from siamkit.thresholds import accepts, check_threshold


def decision_threshold(given: float | None, calibrated: float | None) -> float:
    """The threshold a decision uses: ``given``, else the calibrated one.

    Raises:
        NotCalibratedError: neither is set.
        ConfigError: the threshold is negative or not a finite number.

    Examples:
        >>> decision_threshold(None, 0.4), decision_threshold(0.2, 0.4)
        (0.4, 0.2)
    """
    threshold = calibrated if given is None else given
    if threshold is None:
        raise NotCalibratedError(
            "no decision threshold: call index.calibrate(target_fpir=...) for identify or "
            "index.calibrate(target_far=...) for verify on a gallery with several images "
            "per person, or pass threshold="
        )
    return check_threshold(threshold)


def vote(matches: list[Match], threshold: float) -> Match | None:
    """Identify from one query's matches, nearest first: None for a stranger.

    The labels of the matches within the threshold vote; ties go to the label
    of the nearest match, and the nearest match of the winning label is returned.

    Examples:
        >>> vote([Match(1, "ann", 0.9)], threshold=0.5) is None
        True
    """
    within = [m for m in matches if accepts(m.distance, threshold)]
    if not within:
        return None
    votes = Counter(m.label for m in within)
    best = max(votes.values())
    # Ties go to the label of the nearest match, which comes first.
    return next(m for m in within if votes[m.label] == best)


def verification(distance: float, threshold: float) -> Verification:
    """The 1:1 answer for two faces ``distance`` apart.

    Examples:
        >>> verification(0.3, 0.5).same
        True
    """
    return Verification(
        same=bool(accepts(distance, threshold)), distance=distance, threshold=threshold
    )
