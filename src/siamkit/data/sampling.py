"""Class-balanced batches: M images of each of several classes per batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from siamkit.exceptions import ConfigError, DataError


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields batches of ``m_per_class`` items from each of ``batch_size // m_per_class`` classes.

    Every batch then holds positive and negative pairs for a miner to choose
    from. Classes with fewer than ``m_per_class`` items are sampled with
    replacement. An epoch has as many batches as it takes to show about every
    item once. Shuffling is seeded by ``seed`` and :meth:`set_epoch`, so an
    epoch's batches are the same whether training ran straight through or was
    resumed (pytorch-metric-learning's ``MPerClassSampler`` works too, but draws
    from a global random state).

    Examples:
        >>> sampler = ClassBalancedBatchSampler([0, 0, 1, 1, 2, 2], m_per_class=2, batch_size=4)
        >>> [len(batch) for batch in sampler]
        [4, 4]
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        m_per_class: int = 4,
        batch_size: int = 32,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if m_per_class < 2:
            raise ConfigError("m_per_class must be at least 2 so a batch holds matching pairs")
        self.classes = np.unique(self.labels)
        if len(self.classes) < 2:
            raise DataError("class-balanced batches need at least two classes")
        self.m_per_class = m_per_class
        self.classes_per_batch = min(len(self.classes), max(2, batch_size // m_per_class))
        self.batch_size = self.classes_per_batch * m_per_class
        self.seed = seed
        self.epoch = 0
        self.members = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.batches_per_epoch = batches_per_epoch or max(
            1, round(len(self.labels) / self.batch_size)
        )

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches_per_epoch):
            batch: list[int] = []
            for c in rng.choice(len(self.classes), self.classes_per_batch, replace=False):
                pool = self.members[c]
                take = rng.choice(pool, self.m_per_class, replace=len(pool) < self.m_per_class)
                batch.extend(int(i) for i in take)
            yield batch
