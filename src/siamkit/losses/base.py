"""The ``PairLoss`` contract, its registry, and geometry binding without mutation.

A pair loss scores pairs of embeddings. It has two forms, as
:class:`~siamkit.ContrastiveLoss` always had:

* pair form, ``loss(e1, e2, same)``: row ``i`` of ``e1`` and ``e2`` is a pair;
* batch form, ``loss.batch(embeddings, labels, pairs)``: ``pairs`` are the
  ``(a1, p, a2, n)`` indices a :class:`~siamkit.miners.PairMiner` (or any
  pytorch-metric-learning pair miner) returns; all pairs when omitted.

A subclass implements :meth:`PairLoss.pair_losses` (per-pair loss from
distances) and gets both forms, or overrides :meth:`PairLoss.batch` for a
loss that needs the whole batch (the PML adapter does). ``distance`` is the
geometry the loss measures in; ``None`` means "the encoder's", which the
:class:`~siamkit.training.Trainer` resolves with :meth:`PairLoss.bound_to`
into a new object: the user's loss is never changed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from siamkit.exceptions import GeometryError, NonFiniteError, ShapeError
from siamkit.geometry import check_metric, paired_distances
from siamkit.registry import Registry

PairIndices = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class PairLoss(nn.Module):
    """Base class of every siamkit loss (see the module's docstring).

    Args:
        distance: ``"euclidean"``, ``"cosine"``, or None to follow the encoder.

    Examples:
        >>> import torch
        >>> class Squared(PairLoss):
        ...     def pair_losses(self, distances, same):
        ...         return torch.where(same, distances**2, torch.zeros_like(distances))
        >>> e1, e2 = torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [3.0, 4.0]])
        >>> Squared()(e1, e2, torch.tensor([True, False])).item()  # (5² + 0) / 2
        12.5
    """

    #: The margin in distance units, for losses that have one (reported in runs).
    margin: float | None = None

    def __init__(self, distance: str | None = None) -> None:
        super().__init__()
        self.distance = None if distance is None else check_metric(distance)

    @property
    def metric(self) -> str:
        """The distance actually used (``distance``, or Euclidean when unset)."""
        return self.distance or "euclidean"

    def pair_losses(self, distances: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Per-pair loss for ``distances`` and same/different flags ``same``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement pair_losses() or override forward() and batch()"
        )

    def forward(self, e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Mean loss over the pairs ``(e1[i], e2[i])``; ``same[i]`` True for a matching pair."""
        same = check_pair_inputs(e1, e2, same)
        losses = self.pair_losses(paired_distances(e1, e2, self.metric), same)
        return checked_mean(losses, e1)

    def batch(
        self, embeddings: torch.Tensor, labels: torch.Tensor, pairs: PairIndices | None = None
    ) -> torch.Tensor:
        """Mean loss over the mined pairs of a batch (all pairs when ``pairs`` is None)."""
        labels = check_batch_inputs(embeddings, labels)
        a1, p, a2, n = resolve_pairs(labels, pairs, embeddings.device)
        distances = torch.cat(
            [
                paired_distances(embeddings[a1], embeddings[p], self.metric),
                paired_distances(embeddings[a2], embeddings[n], self.metric),
            ]
        )
        same = torch.cat(
            [torch.ones_like(a1, dtype=torch.bool), torch.zeros_like(a2, dtype=torch.bool)]
        )
        return checked_mean(self.pair_losses(distances, same), embeddings)

    def bound_to(self, metric: str, margin: float | None = None) -> PairLoss:
        """This loss for an encoder of ``metric``: itself if it already fits, else a copy.

        ``margin`` fills an unset margin. The original is never modified.

        Raises:
            GeometryError: the loss measures another distance than ``metric``.
        """
        metric = check_metric(metric)
        if self.distance is not None and self.distance != metric:
            raise GeometryError(
                f"the loss measures {self.distance} distance but the encoder's metric is "
                f"{metric}: build the loss with distance={metric!r} or change the encoder's "
                "metric, so training, thresholds and search agree"
            )
        if self.distance == metric:
            return self
        bound = copy.deepcopy(self)
        bound.distance = metric
        return bound


def check_pair_inputs(e1: torch.Tensor, e2: torch.Tensor, same: Any) -> torch.Tensor:
    """``same`` as a bool tensor, after checking shapes and finiteness of a pair batch."""
    same = torch.as_tensor(same, device=e1.device)
    if e1.shape != e2.shape or e1.ndim != 2:
        raise ShapeError(
            f"e1 and e2 must both be (N, D) matrices, got {tuple(e1.shape)} and {tuple(e2.shape)}"
        )
    if same.shape != (e1.shape[0],):
        raise ShapeError(
            f"same must hold one flag per pair ({e1.shape[0]}), got {tuple(same.shape)}"
        )
    check_finite(e1, e2)
    return same.to(torch.bool)


def check_batch_inputs(embeddings: torch.Tensor, labels: Any) -> torch.Tensor:
    """``labels`` as a tensor, after checking they fit ``embeddings`` (finite, ``(N, D)``)."""
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise ShapeError(
            f"expected (N, D) embeddings and N labels, got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)} labels"
        )
    check_finite(embeddings)
    return labels


def resolve_pairs(labels: torch.Tensor, pairs: Any, device: torch.device) -> PairIndices:
    """``pairs`` as long tensors on ``device``; every pair of the batch when None."""
    if pairs is None:
        from siamkit.miners.builtin import all_pairs

        pairs = all_pairs(labels)
    return tuple(torch.as_tensor(t, device=device).long() for t in pairs)  # type: ignore[return-value]


def check_finite(*tensors: torch.Tensor) -> None:
    """Raise ``NonFiniteError`` if a tensor holds NaN or infinity."""
    for tensor in tensors:
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(
                "embeddings contain NaN or infinity: lower the learning rate or check the inputs"
            )


def checked_mean(losses: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mean of ``losses``; a zero joined to ``like``'s graph when there is none."""
    if losses.numel() == 0:
        # No pair to learn from: a zero that still joins the graph, as PML does.
        return (like * 0).sum()
    return losses.mean()


loss_registry: Registry[PairLoss] = Registry("loss", group="siamkit.losses", base=PairLoss)


def register_loss(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering a :class:`PairLoss` subclass under a name.

    Examples:
        >>> "contrastive" in list_losses()
        True
    """
    return loss_registry.register(name, overwrite=overwrite)


def create_loss(name: str, **kwargs: Any) -> PairLoss:
    """Build the loss registered as ``name`` with ``kwargs``.

    Examples:
        >>> create_loss("contrastive", margin=2.0)
        ContrastiveLoss(margin=2.0, distance=None)
    """
    return loss_registry.create(name, **kwargs)


def list_losses() -> list[str]:
    """Names of all available losses, plugins included.

    Examples:
        >>> list_losses()[:1]
        ['contrastive']
    """
    return loss_registry.names()
