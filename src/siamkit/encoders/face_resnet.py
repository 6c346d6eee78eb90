"""dlib's face ResNet, ported to PyTorch, with its public-domain pretrained weights.

The network behind dlib's ``face_recognition_model_v1`` (and the
``face_recognition`` package): 29 convolutions in residual blocks, 150x150
RGB face chips in, 128-d descriptors out, trained by Davis King on about 3
million faces with a pairwise hinge loss on Euclidean distance (same person
below 0.6). The weights are read from the file that the
``face-recognition-models`` package ships (``pip install 'siamkit[faces]'``);
dlib itself is not needed to load or run it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from siamkit._model_files import RECOGNITION_MODEL, face_model_file
from siamkit.encoders._checks import check_flag, check_optional_path, freeze_before
from siamkit.encoders._dlib_format import DlibLayer, read_dlib_network
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.exceptions import ConfigError, ModelFileError
from siamkit.runtime.preprocessing import Preprocessing

#: (channels, blocks, first block downsamples) of each stage, in forward order.
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
#: Names of the parts that can be trained or frozen, in forward order.
PARTS: tuple[str, ...] = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "head")
CHIP_SIZE = 150
#: dlib's per-channel pixel means (R, G, B); inputs are ``(pixel - mean) / 256``.
DLIB_MEAN = (122.782, 117.001, 104.298)
#: dlib's decision distance for "same person" on these descriptors.
DLIB_THRESHOLD = 0.6


class _Affine(nn.Module):
    """dlib's ``affine`` layer: a batch norm frozen into a per-channel scale and shift."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _zero_filled_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # dlib's add_prev: where sizes differ, the smaller tensor counts as zero-filled
    # at the end of each axis (channels, bottom rows, right columns).
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

    def grown(t: torch.Tensor) -> torch.Tensor:
        pad = [0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]]
        return F.pad(t, pad) if any(pad) else t

    return grown(a) + grown(b)


class _Block(nn.Module):
    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=padding)
        self.affine1 = _Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)
        self.affine2 = _Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_zero_filled_sum(branch, shortcut))


@register_encoder("dlib-face")
class DlibFaceResNet(Encoder):
    """dlib's face ResNet (150x150 RGB chips to 128-d), optionally pretrained.

    Feed it aligned face chips: pair it with the ``dlib`` face aligner, which
    is what ``siamkit train --encoder dlib-face`` and the face preset do. On
    whole, unaligned images it is much weaker.

    Args:
        pretrained: Load dlib's public-domain weights from the
            ``face-recognition-models`` package (or from ``weights_file``).
            ``False`` starts from random weights.
        weights_file: A dlib model file to read instead of the packaged one
            (a regular file of at most 256 MB; NaN or infinite weights are refused).
            Both are starting weights: :func:`~siamkit.load_encoder` reads the
            saved weights and never a dlib file.
        trainable_from: The first part that training may change, one of
            ``PARTS`` (``"stem"``: everything; ``"stage5"``: the last stage and
            the head; ``"none"``: nothing, a frozen feature extractor).
        flip_average: At inference (eval mode), embed the chip and its mirror
            image and take the mean: twice the compute, for a face seen from
            both sides (on by default: it lowered the EER on in-the-wild photos
            of held-out people, ``benchmarks/faces_in_the_wild.py``). Training
            always sees the chip alone. Saved with the model and part of its
            fingerprint only when on; a model saved without it loads with it
            off, as it was saved (:attr:`saved_defaults`).

    Examples:
        >>> import torch
        >>> enc = DlibFaceResNet(pretrained=False)
        >>> enc(torch.zeros(2, 3, 150, 150)).shape
        torch.Size([2, 128])
    """

    embedding_dim = 128
    metric = "euclidean"
    in_channels = 3
    input_size = (CHIP_SIZE, CHIP_SIZE)
    #: dlib's own pair rule: same person below 0.6, different above it plus
    #: its 0.04 hinge margin.
    default_margin = 0.64
    #: The transform gives dlib's pixel scale, not ``[-1, 1]``.
    input_range = (0.0, 255.0)
    #: A saved model carries its weights: loading reads no dlib file.
    starting_weights: ClassVar[dict[str, Any]] = {"pretrained": False, "weights_file": None}
    #: The aligner settings that cut the chips it was trained on (dlib's own).
    chip_settings: ClassVar[dict[str, Any]] = {"size": CHIP_SIZE, "padding": 0.25}
    #: Saved configs leave ``flip_average`` out when off (so fingerprints of models
    #: saved before it existed stay), and its default was off until 0.1.
    saved_defaults: ClassVar[dict[str, Any]] = {"flip_average": False}

    def __init__(
        self,
        pretrained: bool = True,
        weights_file: str | None = None,
        trainable_from: str = "stem",
        flip_average: bool = True,
    ) -> None:
        super().__init__()
        check_flag("pretrained", pretrained)
        self.flip_average = check_flag("flip_average", flip_average)
        check_optional_path("weights_file", weights_file)
        if not isinstance(trainable_from, str) or trainable_from not in (*PARTS, "none"):
            raise ConfigError(
                f"trainable_from must be one of {', '.join(PARTS)} or none, got {trainable_from!r}"
            )
        self.stem_conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem_affine = _Affine(32)
        stages, channels = [], 32
        for width, blocks, down in STAGES:
            layers = [_Block(channels, width, down)]
            layers += [_Block(width, width, False) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(channels, self.embedding_dim, bias=False)
        self.register_buffer("mean", torch.tensor(DLIB_MEAN).view(1, 3, 1, 1))
        self.trainable_from = trainable_from
        if pretrained:
            load_dlib_weights(self, weights_file or face_model_file(RECOGNITION_MODEL))
        freeze_before(self.parts(), trainable_from)

    def get_config(self) -> dict:
        # The weights travel in the saved state dict: rebuilding must not need the
        # packaged file (nor read it twice). Saved models have always recorded this,
        # so their fingerprints stay what they were.
        config = super().get_config()
        config.update(pretrained=False, weights_file=None)
        if not config.get("flip_average"):
            config.pop("flip_average", None)
        return config

    def parts(self) -> dict[str, list[nn.Module]]:
        """The trainable parts by name, in forward order (``PARTS``)."""
        stages = {f"stage{i + 1}": [stage] for i, stage in enumerate(self.stages)}
        return {"stem": [self.stem_conv, self.stem_affine], **stages, "head": [self.head]}

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """RGB, resized to 150x150 if needed, pixels as floats 0..255 (dlib's)."""
        return functools.partial(chip_tensor, size=CHIP_SIZE)

    def preprocessing(self) -> Preprocessing:
        """RGB 150x150 pixels as they are (the mean is subtracted in the graph)."""
        return Preprocessing("RGB", (CHIP_SIZE, CHIP_SIZE), 1.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_average and not self.training:
            return (self._embed(x) + self._embed(torch.flip(x, dims=[-1]))) / 2
        return self._embed(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, 2)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))


def chip_tensor(image: Image.Image, size: int) -> torch.Tensor:
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).contiguous()


def dlib_network_stack() -> list[str]:
    """The layers of dlib's ``anet_type``, outermost first, as the file nests them."""
    block = ["affine", "con", "relu", "affine", "con"]
    plain = ["relu", "add_prev", *block, "tag"]
    down = ["relu", "add_prev", "avg_pool", "skip", "tag", *block, "tag"]
    stack = ["loss_metric", "fc", "avg_pool"]
    for _width, blocks, has_down in reversed(STAGES):
        stack += plain * (blocks - 1) + (down if has_down else plain)
    return [*stack, "max_pool", "relu", "affine", "con", "input"]


def load_dlib_weights(model: DlibFaceResNet, path: str | os.PathLike) -> None:
    """Copy the weights of a dlib face ResNet file into ``model``.

    Raises:
        ModelFileError: the file is unreadable, not a regular file, too large,
            holds another network or NaN or infinite weights.
    """
    layers = read_dlib_network(path, dlib_network_stack())
    try:
        _copy_network(model, layers, path)
    except (KeyError, ValueError, StopIteration) as err:  # a layer without a part we need
        raise ModelFileError(
            f"{path}: the network's layers do not fit the face ResNet ({type(err).__name__}: "
            f"{err}); the file holds another network"
        ) from None


def _copy_network(model: DlibFaceResNet, layers: list[DlibLayer], path: str | os.PathLike) -> None:
    weighted = iter(layer for layer in layers if layer.kind in ("con", "affine", "fc"))
    with torch.no_grad():
        _copy_conv(model.stem_conv, next(weighted), path)
        _copy_affine(model.stem_affine, next(weighted), path)
        for stage in model.stages:
            for block in stage:
                _copy_conv(block.conv1, next(weighted), path)
                _copy_affine(block.affine1, next(weighted), path)
                _copy_conv(block.conv2, next(weighted), path)
                _copy_affine(block.affine2, next(weighted), path)
        fc = next(weighted)
        _copy(model.head.weight, fc.arrays["weight"].reshape(-1, 128).T, path, "fc")
        mean = layers[0].arrays["mean"]
        model.mean.copy_(torch.from_numpy(mean).view(1, 3, 1, 1))


def _copy(target: torch.Tensor, source: np.ndarray, path: str | os.PathLike, what: str) -> None:
    if tuple(source.shape) != tuple(target.shape):
        raise ModelFileError(
            f"{path}: {what} has shape {tuple(source.shape)}, the face ResNet needs "
            f"{tuple(target.shape)}; the file holds another network"
        )
    target.copy_(torch.from_numpy(np.ascontiguousarray(source)))


def _copy_conv(conv: nn.Conv2d, layer: DlibLayer, path: str | os.PathLike) -> None:
    _expect(layer, "con", path)
    stride, padding = conv.stride[0], conv.padding[0]
    if (layer.settings["stride"], layer.settings["pad"]) != (stride, padding):
        raise ModelFileError(f"{path}: a convolution's stride or padding differs from dlib's")
    _copy(conv.weight, layer.arrays["weight"], path, "a convolution")
    _copy(conv.bias, layer.arrays["bias"].reshape(-1), path, "a convolution bias")


def _copy_affine(affine: _Affine, layer: DlibLayer, path: str | os.PathLike) -> None:
    _expect(layer, "affine", path)
    _copy(affine.weight, layer.arrays["gamma"].reshape(-1), path, "an affine scale")
    _copy(affine.bias, layer.arrays["beta"].reshape(-1), path, "an affine shift")


def _expect(layer: DlibLayer, kind: str, path: str | os.PathLike) -> None:
    if layer.kind != kind:
        raise ModelFileError(f"{path}: found a {layer.kind} layer where a {kind} was expected")
