"""Within-class whitening of embeddings, fitted once training is done."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siamkit.exceptions import DataError, ShapeError


class Whitening(nn.Module):
    """A final layer that whitens embeddings by their within-person covariance.

    Directions in which photos of one person vary most (pose, expression,
    lighting) are shrunk, directions that tell people apart are kept, so one
    distance threshold suits every person better. This is within-class
    covariance normalisation (WCCN), a standard step of face and speaker
    verification. Until :meth:`fit` is called the layer is the identity (up to
    the optional L2 normalisation), so it does not change training; the
    :class:`~siamkit.training.Trainer` fits it on the training people after the
    last epoch. Its state lives in buffers, so it is saved with the weights.

    Add it as the last layer of any encoder to get the same treatment.

    Args:
        dim: Embedding size.
        normalize: L2-normalise embeddings before and after whitening (for
            encoders whose embeddings live on the unit sphere).
        shrinkage: Added to the covariance's eigenvalues, as a multiple of their
            mean; larger is gentler (0 whitens fully, infinity only centres).

    Examples:
        >>> layer = Whitening(2, normalize=False, shrinkage=0.0)
        >>> x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 1.2]])
        >>> layer.fit(x, torch.tensor([0, 0, 1, 1]))
        >>> bool(layer.fitted)
        True
    """

    mean: torch.Tensor
    matrix: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int, normalize: bool = True, shrinkage: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.normalize = normalize
        self.shrinkage = shrinkage
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = F.normalize(x, dim=-1)
        # Both branches, then a select: no Python branch on a tensor's value, so the
        # layer exports to ONNX (torch.export) with its fitted state in the graph.
        whitened = (x - self.mean) @ self.matrix
        if self.normalize:
            whitened = F.normalize(whitened, dim=-1)
        return torch.where(self.fitted, whitened, x)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the identity (before training the encoder again)."""
        self.mean.zero_()
        self.matrix.copy_(torch.eye(self.dim, device=self.matrix.device))
        self.fitted.fill_(False)

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, labels: Any) -> None:
        """Fit on the layer's *input* embeddings of labelled training images.

        Raises:
            DataError: fewer than two people, or no person with two images.
        """
        x = torch.as_tensor(embeddings, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"expected (N, {self.dim}) embeddings, got {tuple(x.shape)}")
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(x):
            raise ShapeError(f"{len(x)} embeddings but {len(y)} labels")
        if self.normalize:
            x = F.normalize(x, dim=-1)
        people, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(people) < 2 or counts.max() < 2:
            raise DataError("whitening needs at least two people, one of them with two images")
        codes_t = torch.from_numpy(codes)
        centres = torch.zeros(len(people), self.dim, dtype=torch.float64).index_add_(0, codes_t, x)
        centres /= torch.from_numpy(counts).to(torch.float64)[:, None]
        residual = x - centres[codes_t]
        within = residual.T @ residual / len(x)
        values, vectors = torch.linalg.eigh(within)
        values = values.clamp_min(0) + self.shrinkage * values.clamp_min(0).mean() + 1e-12
        matrix = vectors @ torch.diag(values.rsqrt()) @ vectors.T
        self.mean.copy_(x.mean(0).to(self.mean.dtype))
        self.matrix.copy_(matrix.to(self.matrix.dtype))
        self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, normalize={self.normalize}, shrinkage={self.shrinkage}"


def whitening_layers(module: nn.Module) -> list[Whitening]:
    """The :class:`Whitening` layers inside ``module``.

    Examples:
        >>> import siamkit
        >>> len(whitening_layers(siamkit.create_encoder("compact")))
        1
    """
    return [m for m in module.modules() if isinstance(m, Whitening)]
