"""Pairs of images for Siamese training and verification."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from siamkit.exceptions import DataError


def dataset_labels(dataset: Any) -> np.ndarray:
    """The integer label of every item, without loading images when possible.

    Works for ImageFolders (``targets``), ``Subset``s of them, and any dataset
    returning ``(x, label)``.

    Examples:
        >>> from torch.utils.data import Subset, TensorDataset
        >>> data = TensorDataset(torch.zeros(3), torch.tensor([4, 5, 6]))
        >>> dataset_labels(Subset(data, [2, 0])).tolist()
        [6, 4]
    """
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def make_pairs(
    labels: Sequence[int] | np.ndarray, num_pairs: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced positive and negative index pairs, seeded.

    Half the pairs show one class twice (never the same item twice), half two
    different classes. ``num_pairs`` defaults to the number of items.

    Returns:
        ``(pairs, same)``: an ``(n, 2)`` index array and an ``(n,)`` bool array.

    Raises:
        DataError: no class has two items, or there is only one class.

    Examples:
        >>> pairs, same = make_pairs([0, 0, 1, 1], num_pairs=4, seed=0)
        >>> same.tolist()
        [True, False, True, False]
    """
    labels = np.asarray(labels)
    num_pairs = len(labels) if num_pairs is None else int(num_pairs)
    classes, counts = np.unique(labels, return_counts=True)
    pairable = classes[counts >= 2]
    if len(pairable) == 0:
        raise DataError("no class has two images, so no matching pair can be formed")
    if len(classes) < 2:
        raise DataError("only one class: a non-matching pair needs two classes")
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    pairs = np.empty((num_pairs, 2), dtype=np.int64)
    same = np.zeros(num_pairs, dtype=bool)
    for k in range(num_pairs):
        if k % 2 == 0:
            cls = rng.choice(pairable)
            pairs[k] = rng.choice(members[cls], size=2, replace=False)
            same[k] = True
        else:
            c1, c2 = rng.choice(classes, size=2, replace=False)
            pairs[k] = (rng.choice(members[c1]), rng.choice(members[c2]))
    return pairs, same


class PairDataset(Dataset):
    """Balanced matching / non-matching pairs drawn from a labelled dataset.

    Each item is ``(x1, x2, same)`` with ``same`` a bool tensor. The pairs are
    fixed at construction from ``seed``, so two datasets with one seed agree.

    Args:
        dataset: Returns ``(x, label)``; an ImageFolder, a Subset, ...
        num_pairs: How many pairs (default: as many as items).
        seed: Seeds the pair draw.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> base = TensorDataset(torch.arange(4.0), torch.tensor([0, 0, 1, 1]))
        >>> x1, x2, same = PairDataset(base, num_pairs=2)[0]
        >>> bool(same), x1 != x2
        (True, tensor(True))
    """

    def __init__(self, dataset: Any, num_pairs: int | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.pairs, self.same = make_pairs(dataset_labels(dataset), num_pairs, seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Any, Any, torch.Tensor]:
        i, j = self.pairs[index]
        return (
            self.dataset[int(i)][0],
            self.dataset[int(j)][0],
            torch.tensor(bool(self.same[index])),
        )
