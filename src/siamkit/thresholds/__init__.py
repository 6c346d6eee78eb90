"""Decision thresholds for 1:1 verification (FAR) and 1:N search (FPIR), fitted one way.

The face index and the evaluation both fit their thresholds here, by one rule
(documented in :mod:`siamkit.thresholds._rule`): a distance is a match when it
is *at most* the threshold; the threshold sits in the middle of the gap below
the first negative distance (impostor pair, stranger's search) that would take
the rate past the target, so tied negatives go out together; it is never below
0, so a negative at distance 0 stays accepted and the reported rate shows the miss.
Every fit reports the rate actually reached, measured with :func:`accepts` (the
rule the face index decides by), what makes it untrustworthy (``warnings``:
negatives at distance 0, a threshold that separates nothing, ties), and whether
it can be trusted (``reliable``: at least ``10 / target`` negatives, the target
reached, some positive matched).

* 1:1: :func:`fit_far_threshold` on impostor pairs, giving a :class:`FarCalibration`.
* 1:N: :func:`fit_fpir_threshold` on searches by strangers (non-mated), giving
  a :class:`FpirCalibration` with the expected FNIR of enrolled people.

Examples:
    >>> from siamkit.thresholds import OpenSetScores, fit_fpir_threshold
    >>> scores = OpenSetScores(mated=[0.1, 0.2], mated_correct=[True, True],
    ...                        non_mated=[0.15, 0.5, 0.6, 0.7])
    >>> fit_fpir_threshold(scores, 0.25, gallery_size=8, gallery_people=4).threshold
    0.35
"""

from siamkit.thresholds._far import fit_far_threshold
from siamkit.thresholds._fpir import (
    FPIRS,
    GROWTH_FACTOR,
    OpenSetScores,
    det_curve,
    fit_fpir_threshold,
    fnir_at_fpir,
    growth_warning,
    open_set_scores,
)
from siamkit.thresholds._results import (
    DetCurve,
    FarCalibration,
    FpirCalibration,
    ThresholdFit,
    unreliable_reason,
)
from siamkit.thresholds._rule import (
    accepts,
    allowed_count,
    check_rate,
    check_scores,
    check_threshold,
    fit_reliable,
    fit_warnings,
    reliable,
    threshold_at_rate,
)

__all__ = [
    "FPIRS",
    "GROWTH_FACTOR",
    "DetCurve",
    "FarCalibration",
    "FpirCalibration",
    "OpenSetScores",
    "ThresholdFit",
    "accepts",
    "allowed_count",
    "check_rate",
    "check_scores",
    "check_threshold",
    "det_curve",
    "fit_far_threshold",
    "fit_fpir_threshold",
    "fit_reliable",
    "fit_warnings",
    "fnir_at_fpir",
    "growth_warning",
    "open_set_scores",
    "reliable",
    "threshold_at_rate",
    "unreliable_reason",
]
