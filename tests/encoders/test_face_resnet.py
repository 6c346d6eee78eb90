"""dlib's face ResNet ported to torch: the file reader, the weights, parity with dlib."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import siamkit
from siamkit._model_files import RECOGNITION_MODEL, face_model_file
from siamkit.encoders._dlib_format import read_dlib_network
from siamkit.encoders.face_resnet import (
    DLIB_MEAN,
    DlibFaceResNet,
    _zero_filled_sum,
    dlib_network_stack,
)
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError

# The face extra is part of `make test`; without it these tests cannot say anything.
try:
    MODEL = face_model_file(RECOGNITION_MODEL)
except MissingExtraError:
    pytest.skip("the face extra is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def pretrained() -> DlibFaceResNet:
    return DlibFaceResNet(flip_average=False).eval()  # the network itself, as dlib runs it


def test_the_file_holds_29_convolutions_and_a_128_d_head() -> None:
    layers = read_dlib_network(MODEL, dlib_network_stack())
    kinds = [layer.kind for layer in layers]
    assert kinds.count("con") == 29
    assert kinds[0] == "input" and kinds[-2:] == ["fc", "loss_metric"]
    assert np.allclose(layers[0].arrays["mean"], DLIB_MEAN, atol=1e-4)
    assert layers[-2].arrays["weight"].size == 256 * 128


def test_a_truncated_or_foreign_file_is_a_model_file_error(tmp_path) -> None:
    data = MODEL.read_bytes()
    for name, content in [("cut.dat", data[: len(data) // 2]), ("junk.dat", b"\x01\x02" * 50)]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match=name):
            DlibFaceResNet(weights_file=str(path))
    landmarks = face_model_file("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(ModelFileError):
        DlibFaceResNet(weights_file=str(landmarks))


def test_trailing_bytes_are_refused(tmp_path) -> None:
    path = tmp_path / "long.dat"
    path.write_bytes(MODEL.read_bytes() + b"\x00")
    with pytest.raises(ModelFileError, match="1 bytes left"):
        DlibFaceResNet(weights_file=str(path))


def test_zero_filled_sum_pads_channels_and_the_bottom_right() -> None:
    a = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    b = torch.ones(1, 3, 4, 4)
    out = _zero_filled_sum(a, b)
    expected = torch.ones(1, 3, 4, 4)
    expected[:, :2, :3, :3] += a
    assert torch.equal(out, expected)


def test_missing_package_is_a_missing_extra_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SIAMKIT_FACE_MODELS", str(tmp_path))
    with pytest.raises(MissingExtraError, match="reinstall"):
        DlibFaceResNet()
    monkeypatch.delenv("SIAMKIT_FACE_MODELS")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r"siamkit\[faces\]"):
        DlibFaceResNet()


def test_saved_and_loaded_gives_the_same_embeddings_without_the_package(
    pretrained, tmp_path, monkeypatch
) -> None:
    chips = torch.rand(3, 3, 150, 150) * 255
    before = pretrained.embed(chips)
    directory = pretrained.save(tmp_path / "model")
    monkeypatch.setenv("SIAMKIT_FACE_MODELS", str(tmp_path / "nowhere"))
    loaded = siamkit.load_encoder(directory)
    assert loaded.fingerprint() == pretrained.fingerprint()
    np.testing.assert_array_equal(loaded.embed(chips), before)


def test_trainable_from_freezes_everything_before_it() -> None:
    model = DlibFaceResNet(pretrained=False, trainable_from="stage5")
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("stages") else "")
                 for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"stages.4", "head"}
    frozen = DlibFaceResNet(pretrained=False, trainable_from="none")
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ConfigError, match="trainable_from"):
        DlibFaceResNet(pretrained=False, trainable_from="stage9")


def test_transform_gives_dlib_pixels() -> None:
    from PIL import Image

    image = Image.new("L", (75, 75), color=200)
    tensor = DlibFaceResNet(pretrained=False).transform(image)
    assert tensor.shape == (3, 150, 150)
    assert torch.all(tensor == 200.0)


def test_embeddings_equal_dlibs_own_on_the_same_chips(pretrained, orl_root) -> None:
    dlib = pytest.importorskip("dlib", reason="dlib (siamkit[faces]) is needed for parity")
    rng = np.random.default_rng(0)
    files = sorted(orl_root.glob("s*/*.pgm"))
    chips = [_dlib_chip(dlib, files[i]) for i in rng.choice(len(files), 12, replace=False)]
    recogniser = dlib.face_recognition_model_v1(str(MODEL))
    reference = np.array([recogniser.compute_face_descriptor(chip) for chip in chips])
    ours = pretrained.embed(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float())
    assert np.abs(ours - reference).max() < 1e-4


def _dlib_chip(dlib, path) -> np.ndarray:
    from PIL import Image

    from siamkit._model_files import LANDMARK_MODEL

    image = np.asarray(Image.open(path).convert("RGB"))
    detections = dlib.get_frontal_face_detector()(image, 1)
    box = detections[0] if detections else dlib.rectangle(0, 0, image.shape[1], image.shape[0])
    shape = dlib.shape_predictor(str(face_model_file(LANDMARK_MODEL)))(image, box)
    return dlib.get_face_chip(image, shape, 150, 0.25)


def test_flip_average_is_the_mean_of_the_chip_and_its_mirror(pretrained, tmp_path) -> None:
    flipping = siamkit.create_encoder("dlib-face", flip_average=True).eval()
    chips = torch.rand(3, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        plain, mirrored = pretrained(chips), pretrained(torch.flip(chips, dims=[-1]))
        averaged = flipping(chips)
    assert torch.allclose(averaged, (plain + mirrored) / 2, atol=1e-6)
    assert (averaged - plain).norm(dim=1).min() > 1e-3  # the option changes something
    flipping.train()  # training sees the chip alone
    with torch.no_grad():
        assert torch.allclose(flipping(chips), plain, atol=1e-6)
    flipping.eval()
    loaded = siamkit.load_encoder(flipping.save(tmp_path / "m"))
    assert loaded.flip_average and loaded.fingerprint() == flipping.fingerprint()
    with torch.no_grad():
        assert torch.equal(loaded(chips), averaged)


def test_flip_average_off_keeps_the_config_and_fingerprint_of_older_models(pretrained) -> None:
    assert "flip_average" not in pretrained.get_config()
    flipping = siamkit.create_encoder("dlib-face", flip_average=True)
    assert flipping.get_config()["flip_average"] is True
    assert flipping.fingerprint() != pretrained.fingerprint()
    with pytest.raises(ConfigError, match="flip_average"):
        siamkit.create_encoder("dlib-face", pretrained=False, flip_average="yes")


def test_flip_average_is_on_by_default_and_older_models_load_as_saved(tmp_path) -> None:
    assert siamkit.create_encoder("dlib-face", pretrained=False).flip_average
    assert siamkit.create_encoder("dlib-sface", pretrained=False).flip_average
    torch.manual_seed(0)
    # What every model saved before the default changed holds: no flip_average at all.
    older = DlibFaceResNet(pretrained=False, flip_average=False).eval()
    folder = older.save(tmp_path / "older")
    assert "flip_average" not in json.loads((folder / "encoder.json").read_text())["config"]
    loaded = siamkit.load_encoder(folder)
    assert loaded.flip_average is False and loaded.fingerprint() == older.fingerprint()
    chips = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        assert torch.equal(loaded(chips), older(chips))


def test_flip_average_is_in_the_onnx_graph(tmp_path) -> None:
    pytest.importorskip("onnxruntime")  # part of `make test`; the ONNX tests check it is there
    from PIL import Image

    flipping = siamkit.create_encoder("dlib-face", flip_average=True).eval()
    exported = siamkit.load_encoder(flipping.export_onnx(tmp_path / "m.onnx"))
    rng = np.random.default_rng(1)
    chips = [Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)) for _ in range(2)]
    assert np.abs(exported.embed(chips) - flipping.embed(chips)).max() < 1e-5
