"""Binding the user's loss and miner to the encoder's geometry, without changing them."""

from __future__ import annotations

import copy
from typing import Any

from siamkit.encoders.base import Encoder
from siamkit.exceptions import GeometryError
from siamkit.losses.base import PairLoss
from siamkit.losses.contrastive import ContrastiveLoss
from siamkit.losses.pml import as_pair_loss
from siamkit.miners.base import PairMiner, PMLPairMiner, as_pair_miner, create_miner
from siamkit.training.config import TrainConfig

#: The contrastive margin when neither the config nor the encoder gives one.
DEFAULT_MARGINS = {"cosine": 0.5, "euclidean": 1.0}


def bind_loss(loss: Any, encoder: Encoder, config: TrainConfig) -> PairLoss:
    """The loss to train with: the default contrastive loss, or ``loss`` in the encoder's
    geometry (a PML loss wrapped, a loss with weights copied so the caller's stays as it is)."""
    metric = encoder.metric
    margin = config.margin or getattr(encoder, "default_margin", None) or DEFAULT_MARGINS[metric]
    if loss is None:
        return ContrastiveLoss(margin=margin, distance=metric)
    bound = as_pair_loss(loss).bound_to(metric, margin)
    if any(True for _ in bound.parameters()):
        # Its weights train, and a wrapper (PMLLoss) still holds the caller's loss.
        bound = copy.deepcopy(bound)
    return bound


def bind_miner(
    miner: Any, metric: str, config: TrainConfig, margin: float | None = None
) -> PairMiner:
    """The miner to train with, measuring in ``metric`` (a copy when its metric was unset).

    ``config.miner="hard"`` keeps the negatives closer than ``margin`` (the
    contrastive loss's), the pairs with a loss.

    Raises:
        GeometryError: the miner measures another distance.
    """
    if miner is not None:
        miner = as_pair_miner(miner)
    elif config.miner == "hard" and margin is not None:
        miner = create_miner("hard", neg_margin=margin)
    else:
        miner = create_miner(config.miner)
    if isinstance(miner, PMLPairMiner):
        return miner
    if miner.metric is None:
        miner = copy.copy(miner)
        miner.metric = metric
    elif miner.metric != metric:
        raise GeometryError(
            f"the miner measures {miner.metric} distance but the encoder's metric is "
            f"{metric}; leave the miner's metric unset to follow the encoder"
        )
    return miner
