"""Training: the :class:`Trainer`, its settings and batch augmentation."""

from siamkit.training.augment import FaceAugment
from siamkit.training.config import TrainConfig
from siamkit.training.plots import plot_history
from siamkit.training.runtime import reproducible
from siamkit.training.trainer import Callback, Trainer, TrainResult, fit, load_checkpoint

__all__ = [
    "Callback",
    "FaceAugment",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "fit",
    "load_checkpoint",
    "plot_history",
    "reproducible",
]
