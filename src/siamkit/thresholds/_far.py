"""1:1 thresholds: a false-accept rate on impostor pairs."""

from __future__ import annotations

from typing import Any

from siamkit.thresholds._results import FarCalibration
from siamkit.thresholds._rule import (
    accepts,
    check_rate,
    check_scores,
    reliable,
    threshold_at_rate,
)


def fit_far_threshold(
    distances: Any, same: Any, target_far: float, source: str = "pairs"
) -> FarCalibration:
    """The 1:1 threshold accepting at most ``target_far`` of the impostor pairs.

    Placed by the rule of :mod:`siamkit.thresholds` (ties, fallback): in the
    middle of the gap below the first impostor distance that would exceed the
    target.

    Args:
        distances: One distance per pair.
        same: True for a genuine pair (one person), False for an impostor pair.
        target_far: The false-accept rate to allow, in (0, 1).
        source: Recorded in the result: ``"gallery"`` or ``"pairs"``.

    Raises:
        ConfigError: ``target_far`` is not in (0, 1).
        DataError: no genuine or no impostor pair, or non-finite distances.

    Examples:
        >>> c = fit_far_threshold([0.1, 0.2, 0.3, 0.6, 0.7], [1, 1, 0, 0, 0], target_far=0.5)
        >>> round(c.threshold, 6), round(c.far, 3), c.tar
        (0.45, 0.333, 1.0)
    """
    target_far = check_rate(target_far, "target_far")
    d, s = check_scores(distances, same)
    impostor, genuine = d[~s], d[s]
    threshold = threshold_at_rate(impostor, target_far, candidates=genuine)
    return FarCalibration(
        threshold=threshold,
        target_far=target_far,
        far=float(accepts(impostor, threshold).mean()),
        tar=float(accepts(genuine, threshold).mean()),
        num_genuine=int(genuine.size),
        num_impostor=int(impostor.size),
        reliable=reliable(impostor.size, target_far),
        source=source,
    )
