"""The ``PairMiner`` contract and the adapter for pytorch-metric-learning miners."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from siamkit.exceptions import ConfigError, ShapeError
from siamkit.geometry import check_embeddings, check_metric
from siamkit.registry import Registry

PairIndices = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class PairMiner(ABC):
    """Chooses which pairs of a batch to learn from.

    ``mine(embeddings, labels)`` returns ``(a1, p, a2, n)``, four 1-D long
    tensors, the pair format of pytorch-metric-learning: ``(a1[i], p[i])`` are
    positive pairs (same label), ``(a2[j], n[j])`` negative pairs. Implement
    :meth:`mine`; call the miner (``miner(embeddings, labels)``) to get input
    validation too.

    ``metric`` is the geometry the miner measures distances in; the
    :class:`~siamkit.training.Trainer` sets it to the encoder's when unset.

    Examples:
        >>> import torch
        >>> class SameAndNext(PairMiner):
        ...     def mine(self, embeddings, labels):
        ...         i = torch.arange(len(labels) - 1)
        ...         same = labels[i] == labels[i + 1]
        ...         return i[same], i[same] + 1, i[~same], i[~same] + 1
        >>> SameAndNext()(torch.zeros(3, 2), torch.tensor([0, 0, 1]))
        (tensor([0]), tensor([1]), tensor([1]), tensor([2]))
    """

    def __init__(self, metric: str | None = None) -> None:
        self.metric = None if metric is None else check_metric(metric)

    @property
    def distance_metric(self) -> str:
        """``metric``, or Euclidean when unset."""
        return self.metric or "euclidean"

    @abstractmethod
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        """Return ``(a1, p, a2, n)`` index tensors into the batch."""

    def set_epoch(self, epoch: int) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called by the Trainer before each epoch (0-based): a miner with its own
        random state reseeds it here, so a resumed run draws what an unbroken one
        would. The default does nothing."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        labels = torch.as_tensor(labels, device=embeddings.device)
        check_embeddings(embeddings)
        if labels.shape != (embeddings.shape[0],):
            raise ShapeError(
                f"got {embeddings.shape[0]} embeddings but labels of shape {tuple(labels.shape)}: "
                "pass one label per embedding"
            )
        with torch.no_grad():
            pairs = self.mine(embeddings.detach(), labels)
        return _check_pairs(pairs, embeddings.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(metric={self.metric!r})"


def _check_pairs(pairs: Any, size: int) -> PairIndices:
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 4:
        raise ConfigError("a pair miner must return four index tensors (a1, p, a2, n)")
    out = tuple(torch.as_tensor(t).long().reshape(-1) for t in pairs)
    if out[0].shape != out[1].shape or out[2].shape != out[3].shape:
        raise ShapeError("a1 and p (and a2 and n) returned by the miner differ in length")
    for tensor in out:
        if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= size):
            raise ShapeError(f"the miner returned an index outside the batch of {size}")
    return out  # type: ignore[return-value]


class PMLPairMiner(PairMiner):
    """Use any pytorch-metric-learning pair miner wherever a :class:`PairMiner` is expected.

    PML miners measure distances with their own ``distance`` object (by default
    Euclidean on L2-normalised embeddings); pass one that matches your encoder's
    metric, e.g. ``CosineSimilarity()`` for a cosine encoder, so margins mean
    what the loss means.

    Examples:
        >>> import torch
        >>> from pytorch_metric_learning.miners import PairMarginMiner
        >>> miner = PMLPairMiner(PairMarginMiner(pos_margin=0.0, neg_margin=10.0))
        >>> a1, p, a2, n = miner(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))
        >>> len(a1), len(a2)  # PML counts both orders of a pair
        (4, 8)
    """

    def __init__(self, miner: Any) -> None:
        super().__init__(metric=None)
        if not callable(miner):
            raise ConfigError("PMLPairMiner expects a pytorch-metric-learning miner instance")
        self.miner = miner

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        pairs = self.miner(embeddings, labels)
        if len(pairs) == 3:
            raise ConfigError(
                f"{type(self.miner).__name__} is a triplet miner; siamkit needs a pair miner "
                "(one returning a1, p, a2, n)"
            )
        return pairs

    def __repr__(self) -> str:
        return f"PMLPairMiner({self.miner!r})"


def as_pair_miner(miner: Any) -> PairMiner | None:
    """Wrap a PML pair miner in :class:`PMLPairMiner`; pass PairMiners and None through.

    Examples:
        >>> from pytorch_metric_learning.miners import PairMarginMiner
        >>> type(as_pair_miner(PairMarginMiner())).__name__
        'PMLPairMiner'
    """
    if miner is None or isinstance(miner, PairMiner):
        return miner
    return PMLPairMiner(miner)


miner_registry: Registry[PairMiner] = Registry("miner", group="siamkit.miners", base=PairMiner)


def register_miner(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering a :class:`PairMiner` subclass under a name.

    Examples:
        >>> import siamkit
        >>> "batch-hard" in siamkit.list_miners()
        True
    """
    return miner_registry.register(name, overwrite=overwrite)


def create_miner(name: str, **kwargs: Any) -> PairMiner:
    """Build the miner registered as ``name`` with ``kwargs``.

    Examples:
        >>> import siamkit
        >>> siamkit.create_miner("hard", neg_margin=0.5)
        HardPairMiner(metric=None, pos_margin=0.0, neg_margin=0.5)
    """
    return miner_registry.create(name, **kwargs)


def list_miners() -> list[str]:
    """Names of all available miners, plugins included.

    Examples:
        >>> import siamkit
        >>> siamkit.list_miners()[:2]
        ['all', 'batch-hard']
    """
    return miner_registry.names()
