"""Subject-disjoint splits: nobody in the validation or test set is seen in training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Subset

from siamkit.data.pairs import dataset_labels
from siamkit.exceptions import ConfigError


@dataclass(frozen=True)
class ClassSplit:
    """Train / validation / test subsets whose classes do not overlap.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.zeros(6), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> split = split_by_class(data, val=1, seed=0)
        >>> len(split.train_classes), len(split.val_classes), len(split.test)
        (2, 1, 0)
    """

    train: Subset
    val: Subset
    test: Subset
    train_classes: list[str]
    val_classes: list[str]
    test_classes: list[str]


def _pick(
    explicit: Sequence[str] | None,
    share: float | int,
    taken: set[str],
    what: str,
    units: list[list[str]],
) -> list[str]:
    """The named classes of one part (checked), or the next ``share`` of the seeded ``units``
    (classes, or the classes of each group), none of them ``taken``."""
    if explicit is not None:
        unknown = sorted(set(explicit) - {name for unit in units for name in unit})
        if unknown:
            raise ConfigError(f"unknown {what} classes: {', '.join(unknown)}")
        overlap = sorted(set(explicit) & taken)
        if overlap:
            raise ConfigError(f"classes in more than one split: {', '.join(overlap)}")
        return list(explicit)
    free = [unit for unit in units if not taken.intersection(unit)]
    return [name for unit in free[: _count(share, len(units), what)] for name in unit]


def _units(dataset: Any, names: list[str], present: np.ndarray, seed: int) -> list[list[str]]:
    """The seeded order of what is held out: classes, or whole groups when the data has them."""
    order = [names[int(c)] for c in np.random.default_rng(seed).permutation(present)]
    groups = getattr(dataset, "groups", None)
    if not groups:
        return [[name] for name in order]
    group_of = {names[int(c)]: groups[int(c)] for c in present}
    members: dict[str, list[str]] = {}
    for name in sorted(group_of):
        members.setdefault(group_of[name], []).append(name)
    chosen = np.random.default_rng(seed).permutation(len(members))
    kinds = sorted(members)
    return [members[kinds[i]] for i in chosen]


def _count(share: float | int, total: int, what: str) -> int:
    if (isinstance(share, float) and not share.is_integer()) or 0 < share < 1:
        count = round(share * total)
    else:
        count = int(share)
    if count < 0 or count > total:
        raise ConfigError(f"{what}={share!r} classes is impossible with {total} classes")
    return count


def split_by_class(
    dataset: Any,
    val: float | int = 0.25,
    test: float | int = 0.0,
    seed: int = 0,
    val_classes: Sequence[str] | None = None,
    test_classes: Sequence[str] | None = None,
) -> ClassSplit:
    """Split a labelled dataset by class (person), never by image.

    Each person is in exactly one part: evaluating on people seen in training
    measures memory, not generalisation. When the data has groups (a grouped
    :class:`~siamkit.data.FaceFolder`, :class:`~siamkit.data.Omniglot`),
    ``val`` and ``test`` count groups and hold out whole ones (new alphabets).

    Args:
        dataset: A dataset with ``targets`` (an ImageFolder) or returning ``(x, label)``.
        val: Validation classes: a fraction (``0.25``) or a count (``10``).
        test: Test classes, likewise.
        seed: Seeds which classes go where.
        val_classes: Explicit validation class names (overrides ``val``).
        test_classes: Explicit test class names (overrides ``test``).

    Raises:
        ConfigError: unknown class names, overlapping explicit lists, or no
            class left for training.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import torch
        >>> data = TensorDataset(torch.zeros(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> split = split_by_class(data, val=1, test=1, seed=0)
        >>> len(split.train), len(split.val), len(split.test)
        (4, 2, 2)
    """
    labels = dataset_labels(dataset)
    present = np.unique(labels)
    names = getattr(dataset, "classes", None) or [str(c) for c in range(int(present.max()) + 1)]
    by_name = {names[int(c)]: int(c) for c in present}  # classes present, by name
    units = _units(dataset, names, present, seed)
    # Classes named explicitly for validation are not free for a random test draw.
    chosen_test = _pick(test_classes, test, set(val_classes or ()), "test", units)
    chosen_val = _pick(val_classes, val, set(chosen_test), "val", units)
    held_out = {*chosen_test, *chosen_val}
    train_names = [name for unit in units for name in unit if name not in held_out]
    if not train_names:
        raise ConfigError("no class is left for training: hold out fewer classes")

    def subset(class_names: list[str]) -> Subset:
        wanted = np.isin(labels, [by_name[n] for n in class_names])
        return Subset(dataset, np.flatnonzero(wanted).tolist())

    return ClassSplit(
        train=subset(train_names),
        val=subset(chosen_val),
        test=subset(chosen_test),
        train_classes=sorted(train_names),
        val_classes=sorted(chosen_val),
        test_classes=sorted(chosen_test),
    )
