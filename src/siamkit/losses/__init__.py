"""Losses for pairs of embeddings: the :class:`PairLoss` contract, its registry,
the contrastive loss, and the adapter for pytorch-metric-learning losses."""

from siamkit.losses.base import (
    PairIndices,
    PairLoss,
    create_loss,
    list_losses,
    loss_registry,
    register_loss,
)
from siamkit.losses.contrastive import ContrastiveLoss
from siamkit.losses.pml import PMLLoss, as_pair_loss, pml_metric

__all__ = [
    "ContrastiveLoss",
    "PMLLoss",
    "PairIndices",
    "PairLoss",
    "as_pair_loss",
    "create_loss",
    "list_losses",
    "loss_registry",
    "pml_metric",
    "register_loss",
]
