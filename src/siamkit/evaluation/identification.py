"""Identification (1:N) metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from siamkit.exceptions import ShapeError
from siamkit.geometry import check_embeddings, pairwise_distances


def rank1_leave_one_out(embeddings: Any, labels: Any, metric: str) -> float:
    """Share of items whose nearest *other* item has the same label.

    Each item in turn is the probe and all the others the gallery.

    Example:
        >>> emb = np.array([[0.0], [0.1], [1.0], [1.2]], dtype="float32")
        >>> rank1_leave_one_out(emb, [0, 0, 1, 1], "euclidean")
        1.0
    """
    check_embeddings(embeddings)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(embeddings):
        raise ShapeError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    dist = np.asarray(pairwise_distances(np.asarray(embeddings, dtype=np.float32), None, metric))
    np.fill_diagonal(dist, np.inf)
    return float((labels[dist.argmin(1)] == labels).mean())
