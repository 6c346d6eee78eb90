"""The contrastive loss of Hadsell, Chopra & LeCun (2006)."""

from __future__ import annotations

import torch
from torch import nn

from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError
from siamkit.geometry import check_metric, paired_distances

PairIndices = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class ContrastiveLoss(nn.Module):
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
        super().__init__()
        if not margin > 0:
            raise ConfigError(f"margin must be positive, got {margin}")
        self.margin = float(margin)
        self.distance = None if distance is None else check_metric(distance)

    @property
    def metric(self) -> str:
        """The distance actually used (``distance``, or Euclidean when unset)."""
        return self.distance or "euclidean"

    def pair_losses(self, distances: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Per-pair loss for given distances and same/different flags."""
        same = same.to(torch.bool)
        similar = 0.5 * distances**2
        dissimilar = 0.5 * torch.clamp(self.margin - distances, min=0) ** 2
        return torch.where(same, similar, dissimilar)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Mean loss over the pairs ``(e1[i], e2[i])``; ``same[i]`` True for a matching pair."""
        same = torch.as_tensor(same, device=e1.device)
        if e1.shape != e2.shape or e1.ndim != 2:
            raise ShapeError(
                f"e1 and e2 must both be (N, D) matrices, got {tuple(e1.shape)} and "
                f"{tuple(e2.shape)}"
            )
        if same.shape != (e1.shape[0],):
            raise ShapeError(
                f"same must hold one flag per pair ({e1.shape[0]}), got {tuple(same.shape)}"
            )
        _check_finite(e1, e2)
        losses = self.pair_losses(paired_distances(e1, e2, self.metric), same)
        return _checked_mean(losses, e1)

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
        labels = torch.as_tensor(labels, device=embeddings.device)
        if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
            raise ShapeError(
                f"expected (N, D) embeddings and N labels, got {tuple(embeddings.shape)} and "
                f"{tuple(labels.shape)} labels"
            )
        _check_finite(embeddings)
        if pairs is None:
            from siamkit.miners.builtin import all_pairs

            pairs = all_pairs(labels)
        a1, p, a2, n = (torch.as_tensor(t, device=embeddings.device).long() for t in pairs)
        distances = torch.cat(
            [
                paired_distances(embeddings[a1], embeddings[p], self.metric),
                paired_distances(embeddings[a2], embeddings[n], self.metric),
            ]
        )
        same = torch.cat(
            [torch.ones_like(a1, dtype=torch.bool), torch.zeros_like(a2, dtype=torch.bool)]
        )
        return _checked_mean(self.pair_losses(distances, same), embeddings)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}"


def _check_finite(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(
                "embeddings contain NaN or infinity: lower the learning rate or check the inputs"
            )


def _checked_mean(losses: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if losses.numel() == 0:
        # No pair to learn from: a zero that still joins the graph, as PML does.
        return (like * 0).sum()
    return losses.mean()
