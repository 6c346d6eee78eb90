"""Any pytorch-metric-learning loss as a siamkit :class:`~siamkit.losses.PairLoss`."""

from __future__ import annotations

from typing import Any

import torch

from siamkit.exceptions import ConfigError, GeometryError
from siamkit.losses.base import (
    PairIndices,
    PairLoss,
    check_batch_inputs,
    check_pair_inputs,
    register_loss,
)


def pml_metric(loss: Any) -> str:
    """The siamkit metric whose ranking a PML loss's distance follows.

    Cosine similarity, and Euclidean distance on L2-normalised embeddings
    (a monotone function of it), are ``"cosine"``; Euclidean distance on raw
    embeddings is ``"euclidean"``.

    Raises:
        GeometryError: the loss uses another distance (Lp with p != 2, dot product...).

    Examples:
        >>> from pytorch_metric_learning import distances, losses
        >>> pml_metric(losses.MultiSimilarityLoss())
        'cosine'
        >>> raw = distances.LpDistance(normalize_embeddings=False)
        >>> pml_metric(losses.ContrastiveLoss(distance=raw))
        'euclidean'
    """
    from pytorch_metric_learning import distances

    distance = getattr(loss, "distance", None)
    if isinstance(distance, distances.CosineSimilarity) and distance.normalize_embeddings:
        return "cosine"
    if isinstance(distance, distances.LpDistance) and distance.p == 2:
        return "cosine" if distance.normalize_embeddings else "euclidean"
    raise GeometryError(
        f"{type(loss).__name__} measures {type(distance).__name__}, which is neither of "
        "siamkit's geometries: give it CosineSimilarity() or LpDistance(p=2)"
    )


@register_loss("pml")
class PMLLoss(PairLoss):
    """Use a pytorch-metric-learning loss wherever siamkit expects a loss.

    Pair-based PML losses (ContrastiveLoss, MultiSimilarityLoss, CircleLoss...)
    score the pairs siamkit's miners return; classification losses
    (ArcFaceLoss, CosFaceLoss...) take labels and train their own weights,
    which the :class:`~siamkit.training.Trainer` optimises with the encoder's.
    The loss's geometry comes from its PML ``distance`` (:func:`pml_metric`)
    and must match the encoder's metric.

    Args:
        loss: A PML loss object, or the name of a class in
            ``pytorch_metric_learning.losses`` (what ``--loss pml
            --loss-arg loss=MultiSimilarityLoss`` passes).
        **kwargs: Arguments for that class when ``loss`` is a name.

    Examples:
        >>> import torch
        >>> from pytorch_metric_learning import losses
        >>> loss = PMLLoss(losses.MultiSimilarityLoss())
        >>> loss.metric
        'cosine'
        >>> loss.batch(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])).ndim
        0
    """

    def __init__(self, loss: Any = "ContrastiveLoss", **kwargs: Any) -> None:
        super().__init__()
        self.loss = _build(loss, kwargs)
        self.loss_name = type(self.loss).__name__
        self.distance = pml_metric(self.loss)
        self.margin = _margin_of(self.loss)

    @property
    def is_classification(self) -> bool:
        """True for losses with their own class weights (ArcFace-style)."""
        return any(True for _ in self.loss.parameters())

    def forward(self, e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Mean loss over the pairs ``(e1[i], e2[i])`` (pair-based PML losses only)."""
        same = check_pair_inputs(e1, e2, same)
        if self.is_classification:
            raise ConfigError(
                f"{self.loss_name} is a classification loss: it needs class labels, so use "
                "the batch form, loss.batch(embeddings, labels)"
            )
        count = e1.shape[0]
        rows = torch.arange(count, device=e1.device)
        # Labels that agree with the flags, so label-based PML code sees the same pairs.
        labels = torch.cat([rows, torch.where(same, rows, rows + count)])
        pairs = (rows[same], rows[same] + count, rows[~same], rows[~same] + count)
        return self.loss(torch.cat([e1, e2]), labels, indices_tuple=pairs)

    def batch(
        self, embeddings: torch.Tensor, labels: torch.Tensor, pairs: PairIndices | None = None
    ) -> torch.Tensor:
        """The PML loss of the batch, on ``pairs`` when given (pair-based losses)."""
        labels = check_batch_inputs(embeddings, labels)
        if pairs is None or self.is_classification:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, indices_tuple=tuple(pairs))

    def bound_to(self, metric: str, margin: float | None = None) -> PairLoss:
        """Itself when its geometry is ``metric`` (PML losses carry their own margins)."""
        return super().bound_to(metric)

    def extra_repr(self) -> str:
        return f"loss={self.loss_name}, metric={self.distance!r}"


def as_pair_loss(loss: Any) -> PairLoss:
    """A :class:`PairLoss` as it is; a pytorch-metric-learning loss wrapped in :class:`PMLLoss`.

    Raises:
        ConfigError: ``loss`` is neither.

    Examples:
        >>> from pytorch_metric_learning import losses
        >>> type(as_pair_loss(losses.CircleLoss())).__name__
        'PMLLoss'
    """
    if isinstance(loss, PairLoss):
        return loss
    module = type(loss).__module__ or ""
    if isinstance(loss, torch.nn.Module) and module.startswith("pytorch_metric_learning"):
        return PMLLoss(loss)
    raise ConfigError(
        f"expected a siamkit PairLoss or a pytorch-metric-learning loss, got "
        f"{type(loss).__name__}: subclass siamkit.losses.PairLoss to write your own"
    )


def _build(loss: Any, kwargs: dict[str, Any]) -> Any:
    if not isinstance(loss, str):
        if kwargs:
            raise ConfigError("pass arguments to the PML loss itself, not to PMLLoss")
        if not isinstance(loss, torch.nn.Module):
            raise ConfigError(f"PMLLoss expects a pytorch-metric-learning loss, got {loss!r}")
        return loss
    from pytorch_metric_learning import losses

    cls = getattr(losses, loss, None)
    if not isinstance(cls, type) or not issubclass(cls, losses.BaseMetricLossFunction):
        raise ConfigError(
            f"pytorch_metric_learning.losses has no loss named {loss!r}: use a class name "
            "such as ContrastiveLoss, MultiSimilarityLoss, CircleLoss or ArcFaceLoss"
        )
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build {loss} with {kwargs}: {err}") from None


def _margin_of(loss: Any) -> float | None:
    for name in ("neg_margin", "margin"):
        value = getattr(loss, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None
