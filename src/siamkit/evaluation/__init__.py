"""Evaluation metrics of the face field."""

from siamkit.evaluation.identification import rank1_leave_one_out
from siamkit.evaluation.verification import (
    RocCurve,
    VerificationResult,
    accuracy_at,
    all_pairs_distances,
    equal_error_rate,
    fit_threshold,
    roc_auc,
    roc_curve,
    verification_metrics,
)

__all__ = [
    "RocCurve",
    "VerificationResult",
    "accuracy_at",
    "all_pairs_distances",
    "equal_error_rate",
    "fit_threshold",
    "rank1_leave_one_out",
    "roc_auc",
    "roc_curve",
    "verification_metrics",
]
