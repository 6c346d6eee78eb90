"""1:1 thresholds: a false-accept rate on impostor pairs."""

from __future__ import annotations

from typing import Any

from siamkit.thresholds._results import FarCalibration
from siamkit.thresholds._rule import (
    accepts,
    check_rate,
    check_scores,
    fit_reliable,
    fit_warnings,
    threshold_at_rate,
)


def fit_far_threshold(
    distances: Any, same: Any, target_far: float, source: str = "pairs"
) -> FarCalibration:
    """The 1:1 threshold accepting at most ``target_far`` of the impostor pairs.

    Placed by the rule of :mod:`siamkit.thresholds` (ties, fallback): in the
    middle of the gap below the first impostor distance that would exceed the
    target. The FAR and TAR are measured with :func:`~siamkit.thresholds.accepts`,
    the rule verify decides by; ``warnings`` and ``reliable`` say whether the
    threshold separates anything.

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
        >>> round(c.threshold, 6), round(c.far, 3), c.tar, c.warnings
        (0.45, 0.333, 1.0, ())
        >>> same_image = fit_far_threshold([0.0, 0.0, 0.5], [1, 0, 0], target_far=0.1)
        >>> same_image.threshold, same_image.far, same_image.reliable
        (0.0, 0.5, False)
        >>> same_image.warnings[0][:46]
        '1 of the 2 impostor pairs are at distance 0 (i'
    """
    target_far = check_rate(target_far, "target_far")
    d, s = check_scores(distances, same)
    impostor, genuine = d[~s], d[s]
    threshold = threshold_at_rate(impostor, target_far, candidates=genuine)
    far = float(accepts(impostor, threshold).mean())
    accepted = accepts(genuine, threshold)
    return FarCalibration(
        threshold=threshold,
        target_far=target_far,
        far=far,
        tar=float(accepted.mean()),
        num_genuine=int(genuine.size),
        num_impostor=int(impostor.size),
        reliable=fit_reliable(impostor.size, target_far, far, accepted, genuine.size),
        source=source,
        warnings=fit_warnings(impostor, genuine, accepted, threshold, target_far, "1:1"),
    )
