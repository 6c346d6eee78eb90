"""The contrastive loss of Hadsell, Chopra & LeCun (2006)."""

from __future__ import annotations

import torch

from siamkit.exceptions import ConfigError
from siamkit.losses.base import PairIndices, PairLoss, register_loss

__all__ = ["ContrastiveLoss", "PairIndices"]


@register_loss("contrastive")
class ContrastiveLoss(PairLoss):
    r"""Pulls similar pairs together and pushes dissimilar ones beyond a margin.

    For a pair at distance :math:`D` with :math:`Y = 1` when the pair is
    dissimilar, the loss is

    .. math:: L = (1 - Y)\,\tfrac12 D^2 + Y\,\tfrac12 \max(0, m - D)^2,

    averaged over pairs. Two ways to call it:

    * pair form, ``loss(e1, e2, same)``: row ``i`` of ``e1`` and ``e2`` is a
      pair and ``same[i]`` is True when both show the same person;
    * batch form, ``loss.batch(embeddings, labels, pairs)``: ``pairs`` are the
      ``(a1, p, a2, n)`` indices a :class:`~siamkit.miners.PairMiner` (or any
      pytorch-metric-learning pair miner) returns; all pairs if omitted.

    Args:
        margin: :math:`m`, how far apart dissimilar pairs must be.
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``). ``None`` means
            the encoder's metric when used by :class:`~siamkit.training.Trainer`,
            and Euclidean otherwise, as in the paper.

    Examples:
        >>> import torch
        >>> loss = ContrastiveLoss(margin=2.0)
        >>> e1 = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
        >>> e2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
        >>> # same pair at D=5: ½·25; different pair at D=1: ½·(2-1)²
        >>> loss(e1, e2, torch.tensor([True, False])).item()
        6.5
    """

    def __init__(self, margin: float = 1.0, distance: str | None = None) -> None:
        super().__init__(distance=distance)
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not margin > 0:
            raise ConfigError(f"margin must be a positive number, got {margin!r}")
        self.margin = float(margin)

    def pair_losses(self, distances: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Per-pair loss for given distances and same/different flags."""
        same = same.to(torch.bool)
        similar = 0.5 * distances**2
        dissimilar = 0.5 * torch.clamp(self.margin - distances, min=0) ** 2
        return torch.where(same, similar, dissimilar)

    def batch(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        pairs: PairIndices | None = None,
    ) -> torch.Tensor:
        """Mean loss over mined pairs of a batch (all pairs when ``pairs`` is None).

        Examples:
            >>> import torch
            >>> emb = torch.tensor([[0.0], [1.0], [3.0]])
            >>> ContrastiveLoss(margin=1.0).batch(emb, torch.tensor([0, 0, 1])).item()
            0.1666666716337204
        """
        return super().batch(embeddings, labels, pairs)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}"
