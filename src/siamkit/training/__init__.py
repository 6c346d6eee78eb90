"""Training: the :class:`Trainer`, its settings, batch augmentation, the recipes
(:func:`train_recipe`, what ``siamkit train`` runs), the typed records of a run, and
data-parallel training on ``torch.distributed``."""

from siamkit.model_folder.records import (
    EpochRecord,
    TrainingRecord,
    ValidationMetrics,
    read_training_record,
)
from siamkit.training.augment import FaceAugment, ShapeAugment
from siamkit.training.config import TrainConfig
from siamkit.training.fine_tuning import (
    FACE_CANDIDATES,
    CandidateResult,
    FineTuneCandidate,
    FineTuneOutcome,
    FineTuneSelection,
    choose_candidate,
    read_fine_tuning,
    save_face_run,
    select_fine_tuning,
)
from siamkit.training.plots import plot_history
from siamkit.training.recipes import (
    RecipeOptions,
    RecipeRun,
    face_aligner,
    face_encoder,
    train_recipe,
)
from siamkit.training.runtime import reproducible
from siamkit.training.trainer import Callback, Trainer, TrainResult, fit, load_checkpoint

__all__ = [
    "FACE_CANDIDATES",
    "Callback",
    "CandidateResult",
    "EpochRecord",
    "FaceAugment",
    "FineTuneCandidate",
    "FineTuneOutcome",
    "FineTuneSelection",
    "RecipeOptions",
    "RecipeRun",
    "ShapeAugment",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingRecord",
    "ValidationMetrics",
    "choose_candidate",
    "face_aligner",
    "face_encoder",
    "fit",
    "load_checkpoint",
    "plot_history",
    "read_fine_tuning",
    "read_training_record",
    "reproducible",
    "save_face_run",
    "select_fine_tuning",
    "train_recipe",
]
