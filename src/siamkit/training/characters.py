"""The ``characters`` recipe's settings: handwritten characters and other line drawings.

Chosen on five held-out Omniglot background alphabets (never on the evaluation
alphabets or Lake's runs; ``docs/benchmarks.md``): the Conv-4
(:data:`CHARACTERS_ENCODER`) from random weights, every class also turned by
90°, 180° and 270° as classes of their own (:class:`~siamkit.data.RotatedClasses`),
the augmentation of handwriting (:class:`~siamkit.training.ShapeAugment`, no
flips), the contrastive loss at the encoder's margin on the negatives inside
it (the ``hard`` miner), batches of 64 classes x 4 images, Adam at 1e-3 with a
short warm-up and a cosine decay over about :data:`CHARACTERS_STEPS` steps.
"""

from __future__ import annotations

import dataclasses
import math

from siamkit.training.config import TrainConfig

CHARACTERS_ENCODER = "conv4"
#: Orientations of every training class (:class:`~siamkit.data.RotatedClasses`).
CHARACTERS_TURNS = 4
#: Optimiser steps the recipe's epochs add up to, whatever the data's size.
CHARACTERS_STEPS = 4000
#: The fewest and most epochs those steps are spread over.
CHARACTERS_EPOCHS = (10, 400)
#: The recipe's settings, each taken where the config keeps TrainConfig's default.
CHARACTERS_SETTINGS = {
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "miner": "hard",
    "augmentation": "shape",
}


def characters_config(config: TrainConfig, train_images: int) -> TrainConfig:
    """``config`` with the characters recipe's settings where it keeps TrainConfig's defaults.

    The epochs (unless set) are those that add up to about
    :data:`CHARACTERS_STEPS` steps on ``train_images`` images (all
    orientations counted), the warm-up (unless set) 5% of them.

    Examples:
        >>> config = characters_config(TrainConfig(), train_images=57_600)
        >>> config.epochs, config.warmup_epochs, config.lr, config.augmentation
        (18, 1, 0.001, 'shape')
        >>> characters_config(TrainConfig(epochs=3, lr=0.01), 57_600).lr
        0.01
    """
    defaults = TrainConfig()
    changes = {
        key: value
        for key, value in CHARACTERS_SETTINGS.items()
        if getattr(config, key) == getattr(defaults, key)
    }
    epochs = config.epochs
    if epochs == defaults.epochs:
        batch = changes.get("batch_size", config.batch_size)
        per_epoch = max(1, round(train_images / batch))  # the batch sampler's epoch
        low, high = CHARACTERS_EPOCHS
        epochs = min(high, max(low, math.ceil(CHARACTERS_STEPS / per_epoch)))
        changes["epochs"] = epochs
    if config.warmup_epochs == defaults.warmup_epochs:
        changes["warmup_epochs"] = max(1, round(0.05 * epochs))
    return dataclasses.replace(config, **changes)


__all__ = [
    "CHARACTERS_ENCODER",
    "CHARACTERS_EPOCHS",
    "CHARACTERS_SETTINGS",
    "CHARACTERS_STEPS",
    "CHARACTERS_TURNS",
    "characters_config",
]
