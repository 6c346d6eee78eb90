"""Turned classes: labels, names, and the turned pixels of PIL images and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from siamkit.data import RotatedClasses
from siamkit.data.rotations import turned
from siamkit.exceptions import ConfigError


class _Pictures(Dataset):
    def __init__(self) -> None:
        self.classes = ["a", "b"]
        rng = np.random.default_rng(0)
        self.pixels = [rng.integers(0, 256, (3, 5), dtype=np.uint8) for _ in range(3)]
        self.targets = [0, 1, 1]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        return Image.fromarray(self.pixels[index]), self.targets[index]


def test_every_turn_is_a_class_of_its_own() -> None:
    data = RotatedClasses(_Pictures())
    assert len(data) == 12
    assert data.targets == [0, 4, 4, 1, 5, 5, 2, 6, 6, 3, 7, 7]
    assert data.classes == ["a", "a@90", "a@180", "a@270", "b", "b@90", "b@180", "b@270"]
    for k in range(4):
        for i in range(3):
            image, label = data[k * 3 + i]
            # PIL's anticlockwise quarter turns are numpy's rot90.
            np.testing.assert_array_equal(np.asarray(image), np.rot90(data.dataset.pixels[i], k))
            assert data.classes[label] == ["a", "b"][data.dataset.targets[i]] + (
                f"@{90 * k}" if k else ""
            )
    assert RotatedClasses(_Pictures(), turns=2).targets == [0, 2, 2, 1, 3, 3]
    with pytest.raises(IndexError):
        data[12]


def test_subsets_and_tensors() -> None:
    base = TensorDataset(torch.arange(8.0).view(2, 1, 2, 2), torch.tensor([5, 7]))
    data = RotatedClasses(Subset(base, [1]), turns=3)
    assert data.targets == [21, 22, 23] and data.classes is None
    image, label = data[2]
    assert label == 23 and torch.equal(image, torch.rot90(base[1][0], 2, dims=(-2, -1)))
    named = RotatedClasses(Subset(_Pictures(), [2]), turns=2)
    assert named.targets == [2, 3] and named.classes[3] == "b@90"


def test_bad_turns_and_items() -> None:
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ConfigError, match="turns must be a whole number from 1 to 4"):
            RotatedClasses(_Pictures(), turns=bad)
    with pytest.raises(ConfigError, match="PIL images or tensors"):
        turned([[1, 2]], 1)
    assert turned("anything", 4) == "anything"
