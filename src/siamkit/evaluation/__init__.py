"""Evaluation metrics of the face field."""

from siamkit.evaluation.identification import (
    OpenSetResult,
    cmc_curve,
    open_set_identification,
    rank1_leave_one_out,
    retrieval_metrics,
)
from siamkit.evaluation.open_set import (
    OpenSetSearch,
    OpenSetSplit,
    open_set_search,
    open_set_split,
)
from siamkit.evaluation.report import Section, write_report
from siamkit.evaluation.runner import Evaluation, evaluate_encoder, read_pairs
from siamkit.evaluation.verification import (
    KFoldAccuracy,
    RocCurve,
    TarAtFar,
    VerificationResult,
    accuracy_at,
    all_pairs_distances,
    equal_error_rate,
    fit_threshold,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_metrics,
)

__all__ = [
    "Evaluation",
    "KFoldAccuracy",
    "OpenSetResult",
    "OpenSetSearch",
    "OpenSetSplit",
    "RocCurve",
    "Section",
    "TarAtFar",
    "VerificationResult",
    "accuracy_at",
    "all_pairs_distances",
    "cmc_curve",
    "equal_error_rate",
    "evaluate_encoder",
    "fit_threshold",
    "kfold_accuracy",
    "open_set_identification",
    "open_set_search",
    "open_set_split",
    "rank1_leave_one_out",
    "read_pairs",
    "retrieval_metrics",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "verification_metrics",
    "write_report",
]
