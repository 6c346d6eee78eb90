"""Rotated copies of every class as classes of their own: four times the classes to learn from."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from siamkit.data.pairs import dataset_labels
from siamkit.exceptions import ConfigError

_TURNS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


class RotatedClasses(Dataset):
    """``dataset`` in ``turns`` orientations (0°, 90°, 180°, 270° anticlockwise), each a class.

    A character turned on its side is not the same character, so turning the
    training characters multiplies the classes a network learns to tell apart
    (Santoro et al. 2016, Vinyals et al. 2016): on Omniglot, three points of
    20-way one-shot accuracy (``docs/benchmarks.md``). Only for training data,
    and only where a turned class never looks like another class (a 6 turned
    twice is a 9: not for digits).

    Item ``k * len(dataset) + i`` is item ``i`` turned ``k`` times, of class
    ``label * turns + k``, named ``"<class>"`` for ``k=0`` and
    ``"<class>@<90k>"`` otherwise. Images are PIL images or tensors (turned
    in their last two dimensions).

    Args:
        dataset: A dataset of ``(image, label)`` items (a
            :class:`~siamkit.data.FaceFolder`, a ``Subset`` of one...).
        turns: How many orientations, 1 to 4.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> base = TensorDataset(torch.arange(4.0).view(1, 1, 2, 2), torch.tensor([3]))
        >>> rotated = RotatedClasses(base)
        >>> len(rotated), rotated.targets
        (4, [12, 13, 14, 15])
        >>> rotated[1][0].flatten().tolist()  # a quarter turn anticlockwise
        [1.0, 3.0, 0.0, 2.0]
    """

    def __init__(self, dataset: Any, turns: int = 4) -> None:
        if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= 4:
            raise ConfigError(f"turns must be a whole number from 1 to 4, got {turns!r}")
        self.dataset = dataset
        self.turns = turns
        labels = dataset_labels(dataset)
        self._size = len(labels)
        self.targets = [int(label) * turns + k for k in range(turns) for label in labels]
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        names = getattr(base, "classes", None)
        if names is not None:
            self.classes: list[str] | None = [
                name if k == 0 else f"{name}@{90 * k}" for name in names for k in range(turns)
            ]
        else:
            self.classes = None

    def __len__(self) -> int:
        return self._size * self.turns

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        turn, item = divmod(index % len(self), self._size)
        image, _ = self.dataset[item]
        return turned(image, turn), self.targets[index]


def turned(image: Any, turns: int) -> Any:
    """``image`` turned ``turns`` quarter turns anticlockwise (a PIL image or a tensor).

    Examples:
        >>> turned(Image.new("L", (3, 2)), 1).size
        (2, 3)
    """
    if turns % 4 == 0:
        return image
    if isinstance(image, Image.Image):
        return image.transpose(_TURNS[turns % 4])
    if isinstance(image, torch.Tensor):
        return torch.rot90(image, turns, dims=(-2, -1))
    raise ConfigError(f"RotatedClasses turns PIL images or tensors, got {type(image).__name__}")


__all__ = ["RotatedClasses", "turned"]
