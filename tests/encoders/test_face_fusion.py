"""``dlib-sface``: dlib-face and SFace on one chip, one embedding, one geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.encoders import face_fusion
from siamkit.encoders.face_fusion import (
    DEFAULT_DLIB_WEIGHT,
    FUSION_CHIP,
    DlibSFaceFusion,
    fusion_aligner,
)
from siamkit.encoders.sface import sface_model_path
from siamkit.exceptions import ConfigError, MissingExtraError

cv2 = pytest.importorskip("cv2", reason="the face extra (siamkit[faces]) is not installed")
pytest.importorskip("onnx", reason="the face extra (siamkit[faces]) is not installed")
try:
    sface_model_path()
    siamkit.create_encoder("dlib-face")
except MissingExtraError:
    pytest.skip("the face extra (siamkit[faces]) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def fused() -> DlibSFaceFusion:
    return DlibSFaceFusion(flip_average=False).eval()


@pytest.fixture(scope="module")
def orl_photos(orl_root) -> list[Image.Image]:
    return [Image.open(orl_root / f"s{p}/{i}.pgm").convert("RGB") for p in (1, 9) for i in (1, 4)]


def test_its_dlib_part_is_dlib_face_on_dlibs_own_chip(fused, orl_photos) -> None:
    """The wide chip's centre is the 150x150 chip of padding 0.25, pixel for pixel."""
    wide, narrow = fusion_aligner("yunet"), siamkit.create_aligner("yunet")
    dlib_face = siamkit.create_encoder("dlib-face", flip_average=False).eval()
    for photo in orl_photos:
        face = wide.detect(photo)[0]
        chip, own = np.asarray(wide.chip(photo, face)), np.asarray(narrow.chip(photo, face))
        assert chip.shape == (FUSION_CHIP, FUSION_CHIP, 3)
        # Measured: identical; one grey level is allowed for the rounding of the two warps.
        assert np.abs(chip[35:185, 35:185].astype(int) - own.astype(int)).max() <= 1
        with torch.no_grad():
            part = fused(fused.transform(Image.fromarray(chip))[None])[0, :128]
            reference = dlib_face(dlib_face.transform(Image.fromarray(own))[None])[0]
        # Measured: identical; same-person distances are 0.3-0.5.
        assert torch.abs(part / DEFAULT_DLIB_WEIGHT - reference).max() < 1e-3


def test_its_sface_part_is_close_to_opencvs_pipeline(fused, orl_photos) -> None:
    """SFace on the warped wide chip against OpenCV's alignCrop of the photo itself."""
    recognizer = cv2.FaceRecognizerSF.create(str(sface_model_path()), "")
    aligner = fusion_aligner("yunet")
    distances = []
    for photo in orl_photos:
        face = aligner.detect(photo)[0]
        left, top, right, bottom = face.box
        row = np.array([[left, top, right - left, bottom - top, *face.landmarks.ravel(), 1.0]])
        bgr = np.ascontiguousarray(np.asarray(photo)[:, :, ::-1])
        reference = recognizer.feature(recognizer.alignCrop(bgr, row.astype(np.float32)))
        reference = reference.ravel() / np.linalg.norm(reference)
        with torch.no_grad():
            mine = fused(fused.transform(aligner.chip(photo, face))[None])[0, 128:].numpy()
        distances.append(float(np.linalg.norm(mine - reference)))
    # Two resamplings instead of one: measured median 0.11 on in-the-wild photos and
    # 0.09-0.16 here, where unit vectors of different people lie about 1.3 apart.
    assert max(distances) < 0.3


def test_the_distance_is_the_weighted_sum_of_both(fused) -> None:
    chips = torch.rand(2, 3, FUSION_CHIP, FUSION_CHIP) * 255
    with torch.no_grad():
        a, b = fused(chips)
    dlib = torch.norm(a[:128] - b[:128]) / DEFAULT_DLIB_WEIGHT
    sface = torch.norm(a[128:] - b[128:])
    assert torch.isclose(torch.norm(a[128:]), torch.tensor(1.0), atol=1e-5)
    expected = (DEFAULT_DLIB_WEIGHT * dlib) ** 2 + sface**2
    assert torch.isclose(torch.sum((a - b) ** 2), expected, rtol=1e-5)
    assert fused.metric == "euclidean" and fused.embedding_dim == 256


def test_flip_average_is_dlib_faces_mean_of_both_mirrors(fused) -> None:
    chips = torch.rand(2, 3, FUSION_CHIP, FUSION_CHIP) * 255
    flipping = DlibSFaceFusion(pretrained=False, flip_average=True)
    flipping.load_state_dict(fused.state_dict())
    flipping.eval()
    with torch.no_grad():
        both, plain = flipping(chips), fused(chips)
        dlib = fused.dlib(chips[..., 35:185, 35:185])
        dlib_mirror = fused.dlib(torch.flip(chips[..., 35:185, 35:185], dims=[-1]))
    expected = DEFAULT_DLIB_WEIGHT * (dlib + dlib_mirror) / 2
    assert torch.allclose(both[:, :128], expected, atol=1e-4)
    assert not torch.allclose(both[:, :128], plain[:, :128], atol=1e-3)
    # SFace sees the chip once, flip or not (its mirror brought nothing in the fusion).
    assert torch.allclose(both[:, 128:], plain[:, 128:], atol=1e-6)


def test_training_moves_only_dlib_face(orl_root) -> None:
    model = DlibSFaceFusion(pretrained=False, trainable_from="head")
    sface_before = {k: v.clone() for k, v in model.sface.state_dict().items()}
    model.train()
    assert not model.sface.training and model.dlib.training
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"dlib"}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.rand(4, 3, FUSION_CHIP, FUSION_CHIP) * 255).pow(2).sum()
    loss.backward()
    optimiser.step()
    for name, value in model.sface.state_dict().items():  # running statistics included
        assert torch.equal(value, sface_before[name]), name
    assert model.dlib.head.weight.grad is not None


def test_saved_and_loaded_gives_the_same_embeddings_without_reading_a_file(
    fused, tmp_path, monkeypatch
) -> None:
    fused.aligner = fusion_aligner("yunet")
    try:
        chips = torch.rand(3, 3, FUSION_CHIP, FUSION_CHIP) * 255
        before = fused.embed(chips)
        directory = fused.save(tmp_path / "model")
    finally:
        fused.aligner = None

    def refuse(*args, **kwargs):
        raise AssertionError("loading a saved model read SFace's file")

    monkeypatch.setattr(face_fusion, "load_sface_weights", refuse)
    loaded = siamkit.load_encoder(directory)
    assert isinstance(loaded, DlibSFaceFusion)
    assert loaded.aligner.describe() == fusion_aligner("yunet").describe()
    np.testing.assert_array_equal(loaded.embed(chips), before)


@pytest.mark.parametrize("bad", [0, -1.0, 1000.0, True, "2"])
def test_a_bad_weight_is_a_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="dlib_weight"):
        DlibSFaceFusion(pretrained=False, dlib_weight=bad)


def test_it_exports_to_onnx(fused, tmp_path) -> None:
    pytest.importorskip("onnxruntime")  # part of `make test`; the ONNX tests check it is there
    rng = np.random.default_rng(1)
    size = (FUSION_CHIP, FUSION_CHIP, 3)
    chips = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for _ in range(2)]
    exported = siamkit.load_encoder(fused.export_onnx(tmp_path / "m.onnx"))
    assert np.abs(exported.embed(chips) - fused.embed(chips)).max() < 1e-4


def test_an_aligner_cutting_other_chips_is_refused_with_the_fix(fused, tmp_path) -> None:
    """A 150-px chip would be resized to 220 and embedded without error, only worse."""
    from siamkit.training import face_aligner

    with pytest.raises(ConfigError, match=r"size=220, padding=0.6.*size=150, padding=0.25"):
        fused.aligner = siamkit.create_aligner("yunet")  # dlib-face's chips
    fused.aligner = face_aligner("yunet", encoder="dlib-sface")
    assert (fused.aligner.size, fused.aligner.padding) == (220, 0.6)
    dlib = siamkit.create_encoder("dlib-face", trainable_from="none")
    dlib.aligner = siamkit.create_aligner("yunet")  # its own chips: accepted
    with pytest.raises(ConfigError, match="DlibFaceResNet takes chips"):
        dlib.aligner = face_aligner("yunet", encoder="dlib-sface")
    # A model saved with other chips before the check loads as it was saved.
    dlib.__dict__["_siamkit_aligner"] = siamkit.create_aligner("dlib", size=200)
    loaded = siamkit.load_encoder(dlib.save(tmp_path / "old"))
    assert loaded.aligner.size == 200 and loaded.fingerprint() == dlib.fingerprint()
    fused.aligner = None


@pytest.mark.parametrize(
    ("recipe", "encoder", "size"),
    [
        ("face", None, 220),
        ("face", "dlib-face", 150),
        ("scratch", "dlib-sface", 220),
        ("scratch", "compact", 150),
    ],
)
def test_siamkit_train_cuts_the_chips_of_the_encoder_it_trains(recipe, encoder, size) -> None:
    from siamkit.training.recipes import RecipeOptions, recipe_aligner

    options = RecipeOptions(aligner="yunet", encoder=encoder)
    assert recipe_aligner(recipe, options).size == size  # compact declares none: yunet's 150


def test_an_aligner_that_cuts_no_chips_is_accepted(fused) -> None:
    """``none`` passes images as they are: its size is unused, nothing to check."""
    fused.aligner = siamkit.create_aligner("none")
    assert fused.aligner.__class__.__name__ == "NoAligner"
    fused.aligner = None
