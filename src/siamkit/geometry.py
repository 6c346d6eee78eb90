"""The one place that decides what "distance" means.

siamkit knows two geometries, chosen by the encoder (``Encoder.metric``) and used
unchanged by the loss, the miners, evaluation thresholds and the face index:

* ``"euclidean"``: ``D = ||a - b||``, embeddings used as they are;
* ``"cosine"``: ``D = 1 - cos(a, b)``, embeddings L2-normalised first, so ``D`` is
  in ``[0, 2]``.

Mixing them (training with one, thresholding with the other) is the most common
mistake in similarity search; routing every distance through this module makes
it impossible inside siamkit.

Example:
    >>> import torch
    >>> from siamkit.geometry import paired_distances
    >>> a = torch.tensor([[3.0, 0.0]]); b = torch.tensor([[0.0, 4.0]])
    >>> paired_distances(a, b, "euclidean").item()
    5.0
    >>> paired_distances(a, b, "cosine").item()
    1.0
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch

from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

# sqrt has an infinite gradient at 0; identical embeddings (a positive pair of
# one image seen twice) would otherwise poison training with NaN.
_EPS = 1e-12


def check_metric(metric: str) -> Metric:
    """Return ``metric`` lower-cased if siamkit knows it, else raise ``ConfigError``.

    Example:
        >>> check_metric("Cosine")
        'cosine'
    """
    name = str(metric).lower()
    if name not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return name  # type: ignore[return-value]


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def _like(result: torch.Tensor, template: ArrayT) -> ArrayT:
    if isinstance(template, torch.Tensor):
        return result
    return result.detach().cpu().numpy().astype(np.float32, copy=False)


def check_embeddings(x: torch.Tensor | np.ndarray, name: str = "embeddings") -> None:
    """Raise if ``x`` is not a 2-D matrix of finite numbers.

    Example:
        >>> check_embeddings(np.zeros((2, 3)))
    """
    t = _as_tensor(x)
    if t.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D (N, D) matrix, got shape {tuple(t.shape)}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise NonFiniteError(
            f"{name} contain NaN or infinity: check the model's inputs and learning rate"
        )


def prepare(x: ArrayT, metric: str) -> ArrayT:
    """Put embeddings in the form the geometry compares: L2-normalised for cosine.

    Example:
        >>> prepare(np.array([[3.0, 4.0]], dtype=np.float32), "cosine").tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    if check_metric(metric) == "euclidean":
        return x
    if isinstance(x, np.ndarray):
        # NumPy directly: a search of one query should not pay for a trip through torch.
        x32 = np.asarray(x, dtype=np.float32)
        norms = np.sqrt(np.einsum("...i,...i->...", x32, x32))[..., None]
        return x32 / np.maximum(norms, _EPS)
    return torch.nn.functional.normalize(x, dim=-1, eps=_EPS)


def paired_distances(a: ArrayT, b: ArrayT, metric: str) -> ArrayT:
    """Distance between each row of ``a`` and the same row of ``b``.

    Args:
        a: ``(N, D)`` embeddings.
        b: ``(N, D)`` embeddings.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``(N,)`` distances, a tensor or an array like ``a``.

    Example:
        >>> paired_distances(np.ones((2, 2)), np.zeros((2, 2)), "euclidean")
        array([1.4142135, 1.4142135], dtype=float32)
    """
    metric = check_metric(metric)
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta.shape != tb.shape:
        raise ShapeError(
            f"paired embeddings differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}"
        )
    if metric == "euclidean":
        d = ((ta - tb) ** 2).sum(-1).clamp_min(_EPS).sqrt()
    else:
        d = 1.0 - (prepare(ta, metric) * prepare(tb, metric)).sum(-1)
    return _like(d, a)


def pairwise_distances(a: ArrayT, b: ArrayT | None, metric: str) -> ArrayT:
    """All distances between the rows of ``a`` and the rows of ``b`` (``a`` itself if None).

    Example:
        >>> pairwise_distances(np.eye(2), None, "cosine").tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    metric = check_metric(metric)
    ta = _as_tensor(a)
    tb = ta if b is None else _as_tensor(b)
    if ta.shape[-1] != tb.shape[-1]:
        raise ShapeError(f"embedding sizes differ: {ta.shape[-1]} vs {tb.shape[-1]}")
    if metric == "euclidean":
        sq = (ta * ta).sum(-1, keepdim=True) - 2 * ta @ tb.T + (tb * tb).sum(-1)
        d = sq.clamp_min(_EPS).sqrt()
    else:
        d = 1.0 - prepare(ta, metric) @ prepare(tb, metric).T
    if b is None:
        d = d - torch.diag_embed(torch.diagonal(d))  # self-distance is exactly zero
    return _like(d, a)
