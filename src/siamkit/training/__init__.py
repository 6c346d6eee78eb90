"""Training: the :class:`Trainer`, its settings, batch augmentation and the recipes."""

from siamkit.training.augment import FaceAugment
from siamkit.training.config import TrainConfig
from siamkit.training.plots import plot_history
from siamkit.training.presets import (
    FACE_CANDIDATES,
    CandidateResult,
    FineTuneCandidate,
    FineTuneOutcome,
    FineTuneSelection,
    choose_candidate,
    face_encoder,
    read_fine_tuning,
    save_face_run,
    select_fine_tuning,
)
from siamkit.training.runtime import reproducible
from siamkit.training.trainer import Callback, Trainer, TrainResult, fit, load_checkpoint

__all__ = [
    "FACE_CANDIDATES",
    "Callback",
    "CandidateResult",
    "FaceAugment",
    "FineTuneCandidate",
    "FineTuneOutcome",
    "FineTuneSelection",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "choose_candidate",
    "face_encoder",
    "fit",
    "load_checkpoint",
    "plot_history",
    "read_fine_tuning",
    "reproducible",
    "save_face_run",
    "select_fine_tuning",
]
