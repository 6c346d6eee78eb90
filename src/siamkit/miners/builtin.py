"""Built-in pair miners: all pairs, balanced random pairs, hard pairs, batch-hard pairs."""

from __future__ import annotations

import torch

from siamkit.exceptions import ConfigError
from siamkit.geometry import pairwise_distances
from siamkit.miners.base import PairIndices, PairMiner, register_miner


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper-triangular masks of positive and negative pairs ``(i < j)``.

    Examples:
        >>> pos, neg = pair_masks(torch.tensor([0, 0, 1]))
        >>> pos.nonzero().tolist(), neg.nonzero().tolist()
        ([[0, 1]], [[0, 2], [1, 2]])
    """
    same = labels[:, None] == labels[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)
    return same & upper, ~same & upper


def _split(pos: torch.Tensor, neg: torch.Tensor) -> PairIndices:
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = neg.nonzero(as_tuple=True)
    return a1, p, a2, n


def all_pairs(labels: torch.Tensor) -> PairIndices:
    """Every unordered pair of the batch, as ``(a1, p, a2, n)``.

    Examples:
        >>> [t.tolist() for t in all_pairs(torch.tensor([0, 0, 1]))]
        [[0], [1], [0, 1], [2, 2]]
    """
    return _split(*pair_masks(labels))


@register_miner("all")
class AllPairsMiner(PairMiner):
    """Every positive and every negative pair of the batch, each once.

    Examples:
        >>> a1, p, a2, n = AllPairsMiner()(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
        >>> len(a1), len(a2)
        (2, 4)
    """

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        return all_pairs(labels)


@register_miner("random")
class RandomPairMiner(PairMiner):
    """All positive pairs and as many randomly chosen negative pairs: balanced 50/50.

    Args:
        negatives_per_positive: How many negatives to draw per positive pair.
        seed: Seeds a private generator; None uses torch's global one (which
            the Trainer seeds every epoch, so runs stay reproducible). The
            private generator is reseeded from ``(seed, epoch)`` at every
            :meth:`set_epoch`, so a resumed run draws what an unbroken one would.

    Examples:
        >>> miner = RandomPairMiner(seed=0)
        >>> a1, p, a2, n = miner(torch.zeros(6, 2), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> len(a1), len(a2)
        (3, 3)
    """

    def __init__(
        self,
        negatives_per_positive: float = 1.0,
        seed: int | None = None,
        metric: str | None = None,
    ) -> None:
        super().__init__(metric)
        if negatives_per_positive <= 0:
            raise ConfigError("negatives_per_positive must be positive")
        self.negatives_per_positive = negatives_per_positive
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed * 100_003 + epoch)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        a1, p, a2, n = all_pairs(labels)
        wanted = min(len(a2), max(1, round(len(a1) * self.negatives_per_positive)))
        chosen = torch.randperm(len(a2), generator=self.generator)[:wanted].to(a2.device)
        return a1, p, a2[chosen], n[chosen]


@register_miner("hard")
class HardPairMiner(PairMiner):
    """Positive pairs farther apart than ``pos_margin`` and negatives closer than ``neg_margin``.

    These are exactly the pairs the contrastive loss still has something to
    learn from when ``neg_margin`` is the loss's margin.

    Examples:
        >>> emb = torch.tensor([[0.0], [2.0], [0.5]])
        >>> HardPairMiner(pos_margin=1.0, neg_margin=1.0)(emb, torch.tensor([0, 0, 1]))
        (tensor([0]), tensor([1]), tensor([0]), tensor([2]))
    """

    def __init__(
        self, pos_margin: float = 0.0, neg_margin: float = 1.0, metric: str | None = None
    ) -> None:
        super().__init__(metric)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        pos, neg = pair_masks(labels)
        dist = pairwise_distances(embeddings, None, self.distance_metric)
        return _split(pos & (dist > self.pos_margin), neg & (dist < self.neg_margin))

    def __repr__(self) -> str:
        return (
            f"HardPairMiner(metric={self.metric!r}, pos_margin={self.pos_margin}, "
            f"neg_margin={self.neg_margin})"
        )


@register_miner("batch-hard")
class BatchHardPairMiner(PairMiner):
    """For every anchor, its farthest positive and its closest negative in the batch.

    Anchors without a positive or a negative in the batch are skipped.

    Examples:
        >>> emb = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
        >>> a1, p, a2, n = BatchHardPairMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> p.tolist(), n.tolist()
        ([1, 0, 3, 2], [2, 2, 1, 1])
    """

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        dist = pairwise_distances(embeddings, None, self.distance_metric)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive, negative = same & ~eye, ~same
        anchors = (positive.any(1) & negative.any(1)).nonzero(as_tuple=True)[0]
        hardest_pos = dist.masked_fill(~positive, float("-inf")).argmax(1)
        hardest_neg = dist.masked_fill(~negative, float("inf")).argmin(1)
        return anchors, hardest_pos[anchors], anchors, hardest_neg[anchors]
