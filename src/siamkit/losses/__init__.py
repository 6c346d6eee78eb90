"""Losses for pairs of embeddings."""

from siamkit.losses.contrastive import ContrastiveLoss, PairIndices

__all__ = ["ContrastiveLoss", "PairIndices"]
