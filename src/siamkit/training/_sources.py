"""The training data: a dataset's model-input tensors, labels and the checks before training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from siamkit.data.pairs import dataset_labels
from siamkit.encoders.base import Encoder
from siamkit.exceptions import DataError, NoFaceError


class ImageSource:
    """The model-input tensors of a dataset, cached in memory when they fit.

    Preprocessing goes through ``encoder.preprocess``, so the encoder's face
    aligner runs once per image. Under the aligner's ``on_missing="skip"``
    policy, images without a face are dropped and counted in ``skipped``;
    under ``"error"`` the :class:`~siamkit.exceptions.NoFaceError` propagates.
    """

    def __init__(
        self, dataset: Any, encoder: Encoder, cache_limit_mb: int, progress: bool, desc: str
    ) -> None:
        self.labels = dataset_labels(dataset)
        self.items = dataset_items(dataset)
        self.classes = classes_of(dataset)
        self.encoder = encoder
        self.cache: torch.Tensor | None = None
        self.skipped = 0
        if len(self.items) == 0:
            return
        limit = cache_limit_mb * 2**20
        if skips_missing_faces(encoder):
            # Every image is looked at once, to know which ones to keep.
            self._load(limit, skipping=True, first=None, progress=progress, desc=desc)
            return
        first = encoder.preprocess(self._item(0))
        if first.element_size() * first.numel() * len(self.items) <= limit:
            self._load(limit, skipping=False, first=first, progress=progress, desc=desc)

    def _load(
        self,
        limit: int,
        skipping: bool,
        first: torch.Tensor | None,
        progress: bool,
        desc: str,
    ) -> None:
        from tqdm.auto import tqdm

        kept: list[int] = []
        tensors: list[torch.Tensor] | None = []
        used = 0
        for i in tqdm(range(len(self.items)), desc=desc, disable=not progress, leave=False):
            try:
                # Item 0 was already preprocessed to size the cache: an aligner runs once.
                tensor = first if i == 0 and first is not None else self._preprocess(i)
            except NoFaceError:
                if not skipping:
                    raise
                self.skipped += 1
                continue
            kept.append(i)
            used += tensor.element_size() * tensor.numel()
            if tensors is not None and used <= limit:
                tensors.append(tensor)
            else:
                tensors = None  # too large to keep: batches preprocess on the fly
        self.items = [self.items[i] for i in kept]
        self.labels = self.labels[kept]
        if tensors:
            self.cache = torch.stack(tensors)

    def _preprocess(self, index: int) -> torch.Tensor:
        return self.encoder.preprocess(self._item(index))

    def _item(self, index: int) -> Any:
        item = self.items[index]
        return item() if callable(item) else item

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[torch.as_tensor(list(indices), dtype=torch.long)]
        return torch.stack([self.encoder.preprocess(self._item(int(i))) for i in indices])


def skips_missing_faces(encoder: Encoder) -> bool:
    aligner = encoder.aligner
    return aligner is not None and getattr(aligner, "on_missing", None) == "skip"


def dataset_items(dataset: Any) -> list[Any]:
    """File paths when the dataset is an ImageFolder (or a Subset of one), else loaders."""
    base, indices = dataset, None
    if isinstance(dataset, torch.utils.data.Subset):
        base, indices = dataset.dataset, list(dataset.indices)
    samples = getattr(base, "samples", None)
    if samples is not None and getattr(base, "transform", None) is None:
        paths = [path for path, _ in samples]
        return [paths[i] for i in indices] if indices is not None else paths
    return [lambda i=i: dataset[i][0] for i in range(len(dataset))]


def check_trainable(labels: np.ndarray, classes: Sequence[str] | None, skipped: int = 0) -> None:
    why = skipped_note(skipped)
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise DataError(f"training needs images of at least two people (classes){why}")
    single = [int(v) for v, c in zip(values, counts, strict=True) if c < 2]
    if single:
        names = [classes[v] if classes else str(v) for v in single]
        raise DataError(
            f"classes with a single image cannot form a matching pair: {', '.join(names[:10])}"
            f"{why}. Add images or remove these classes"
        )


def check_validation(labels: np.ndarray, skipped: int) -> None:
    why = skipped_note(skipped)
    if len(np.unique(labels)) < 2:
        raise DataError(f"validation data needs at least two people to form impostor pairs{why}")
    if len(labels) == 0 or np.unique(labels, return_counts=True)[1].max() < 2:
        raise DataError(f"validation data needs a person with two images for genuine pairs{why}")


def skipped_note(skipped: int) -> str:
    return f" ({skipped} images without a face were skipped)" if skipped else ""


def classes_of(dataset: Any) -> list[str] | None:
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    return getattr(base, "classes", None)


def train_source(train: Any, encoder: Encoder, cache_limit_mb: int, progress: bool) -> ImageSource:
    """The training images of ``train`` (a dataset or an ImageSource), checked to be trainable.

    Raises:
        DataError: fewer than two people, or a person with a single image.
    """
    if isinstance(train, ImageSource):
        source = train
    else:
        check_trainable(dataset_labels(train), classes_of(train))  # before any loading
        source = ImageSource(train, encoder, cache_limit_mb, progress, "loading training images")
    check_trainable(source.labels, source.classes, source.skipped)
    return source


def val_source(
    val: Any | None, encoder: Encoder, cache_limit_mb: int, progress: bool
) -> ImageSource | None:
    """The validation images of ``val``; None when there are none.

    Raises:
        DataError: fewer than two people, or nobody with two images.
    """
    if val is None or len(val) == 0:
        return None
    if isinstance(val, ImageSource):
        source = val
    else:
        check_validation(dataset_labels(val), 0)
        source = ImageSource(val, encoder, cache_limit_mb, progress, "loading validation images")
    check_validation(source.labels, source.skipped)
    return source
