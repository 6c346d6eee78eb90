"""Encoders: output shapes, embed(), preprocessing, saving and loading, Siamese twins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import siamkit
from siamkit.encoders import default_transform
from siamkit.exceptions import ConfigError, ModelFileError, NonFiniteError, ShapeError
from siamkit.geometry import paired_distances

# Small configurations of every built-in encoder, so the suite stays fast.
BUILTIN_CONFIGS: dict[str, dict] = {
    "compact": {"embedding_dim": 16, "channels": (8, 16)},
    "tutorial": {"embedding_dim": 5, "input_size": (20, 16)},
    "resnet": {"arch": "resnet18", "embedding_dim": 8, "input_size": (32, 32)},
    "mlp": {"input_dim": 10, "embedding_dim": 4, "hidden": (16, 8)},
}


def _inputs(name: str, encoder: siamkit.Encoder, faces: Path, n: int = 4):
    """Raw inputs an encoder embeds: image paths, or float vectors for the MLP."""
    if name == "mlp":
        return np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
    return sorted(faces.rglob("*.png"))[:n]


def _batch_tensor(name: str, encoder: siamkit.Encoder, n: int = 3) -> torch.Tensor:
    if name == "mlp":
        return torch.randn(n, 10)
    return torch.randn(n, encoder.in_channels, *encoder.input_size)


def _face_paths(faces: Path) -> list[Path]:
    return sorted(faces.rglob("*.png"))


@pytest.fixture(scope="module")
def compact() -> siamkit.Encoder:
    torch.manual_seed(0)
    return siamkit.create_encoder("compact", embedding_dim=16, channels=(8, 16))


# -- shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_builtin_forward_shape(name):
    torch.manual_seed(0)
    encoder = siamkit.create_encoder(name, **BUILTIN_CONFIGS[name])
    assert isinstance(encoder, siamkit.Encoder)
    dim = BUILTIN_CONFIGS[name]["embedding_dim"]
    assert encoder.embedding_dim == dim
    out = encoder(_batch_tensor(name, encoder, n=3))
    assert out.shape == (3, dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_builtin_defaults():
    compact = siamkit.CompactCNN()
    assert (compact.embedding_dim, compact.metric, compact.input_size) == (
        128,
        "euclidean",
        (56, 46),
    )
    assert compact.default_margin == 2.0 and compact.whitening is not None
    out = compact.eval()(torch.randn(2, 1, 56, 46))
    assert out.shape == (2, 128)
    np.testing.assert_allclose(out.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)  # unit sphere
    mlp = siamkit.MLPEncoder(input_dim=3)
    assert (mlp.embedding_dim, mlp.metric, mlp.input_size) == (32, "euclidean", None)
    tutorial = siamkit.TutorialCNN(input_size=(12, 10))
    assert (tutorial.embedding_dim, tutorial.metric) == (5, "euclidean")
    rgb = siamkit.ResNetEncoder(in_channels=3, embedding_dim=4, input_size=(32, 32))
    assert rgb.image_mode == "RGB"
    assert rgb(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_builtin_argument_errors():
    with pytest.raises(ConfigError, match="resnet9"):
        siamkit.ResNetEncoder(arch="resnet9")
    with pytest.raises(ConfigError, match="in_channels"):
        siamkit.ResNetEncoder(in_channels=2)
    with pytest.raises(ConfigError):
        siamkit.CompactCNN(metric="manhattan")


# -- embed -----------------------------------------------------------------------------
def test_embed_pil_images(compact, synthetic_faces):
    images = [Image.open(p) for p in _face_paths(synthetic_faces)[:5]]
    out = compact.embed(images)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (5, 16)
    assert np.isfinite(out).all()
    # different faces, different embeddings
    assert np.abs(out[0] - out[-1]).max() > 1e-4


def test_embed_path_equals_embed_of_pil_image(compact, synthetic_faces):
    paths = _face_paths(synthetic_faces)[:4]
    from_paths = compact.embed(paths)
    from_strings = compact.embed([str(p) for p in paths])
    from_images = compact.embed([Image.open(p) for p in paths])
    np.testing.assert_array_equal(from_paths, from_images)
    np.testing.assert_array_equal(from_strings, from_images)


def test_embed_uint8_arrays(compact, synthetic_faces):
    paths = _face_paths(synthetic_faces)[:3]
    arrays = [np.asarray(Image.open(p)) for p in paths]
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (56, 46)
    np.testing.assert_array_equal(compact.embed(arrays), compact.embed(paths))
    # one uint8 array is one picture, not a batch of rows
    single = compact.embed(arrays[0])
    assert single.shape == (1, 16)
    # batch size changes the convolution's summation order, so not bit-identical
    np.testing.assert_allclose(single[0], compact.embed(paths)[0], rtol=1e-5, atol=1e-6)
    # RGB pictures are converted to the encoder's greyscale
    rgb = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert compact.embed(rgb).shape == (1, 16)


def test_embed_tensor_batch_matches_forward(compact):
    batch = torch.randn(5, 1, 56, 46)
    out = compact.embed(batch)
    assert out.shape == (5, 16) and out.dtype == np.float32
    was_training = compact.training
    compact.eval()
    with torch.no_grad():
        want = compact(batch).numpy()
    compact.train(was_training)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    # a list of preprocessed tensors is the same batch
    np.testing.assert_allclose(compact.embed(list(batch)), want, rtol=1e-5, atol=1e-6)


def test_embed_single_items(compact, synthetic_faces):
    path = _face_paths(synthetic_faces)[0]
    for item in (path, str(path), Image.open(path), torch.randn(1, 56, 46)):
        out = compact.embed(item)
        assert out.shape == (1, 16)
        assert out.dtype == np.float32


def test_embed_empty(compact):
    for empty in ([], ()):
        out = compact.embed(empty)
        assert out.shape == (0, 16)
        assert out.dtype == np.float32


def test_embed_in_batches_equals_one_batch(compact, synthetic_faces):
    paths = _face_paths(synthetic_faces)[:7]
    np.testing.assert_allclose(
        compact.embed(paths, batch_size=2),
        compact.embed(paths, batch_size=64),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ConfigError, match="batch_size"):
        compact.embed(paths, batch_size=0)


def test_embed_vectors_with_mlp():
    mlp = siamkit.create_encoder("mlp", input_dim=10, embedding_dim=4)
    x = np.random.default_rng(1).normal(size=(6, 10)).astype(np.float32)
    out = mlp.embed(x)
    assert out.shape == (6, 4)
    np.testing.assert_allclose(out, mlp.embed(torch.from_numpy(x)), rtol=1e-6)
    np.testing.assert_allclose(out[2:3], mlp.embed(x[2:3]), rtol=1e-5, atol=1e-6)


def test_embed_unsupported_type(compact):
    with pytest.raises(ConfigError, match="dict"):
        compact.embed([{"not": "an image"}])


def test_embed_unreadable_path_names_it(compact, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(siamkit.ImageReadError, match=r"broken\.png"):
        compact.embed(bad)


class _Spy(siamkit.Encoder):
    def __init__(self):
        super().__init__()
        self.embedding_dim = 2
        self.fc = nn.Linear(3, 2)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.fc(x)


def test_embed_runs_in_eval_mode_without_grad_and_restores_mode():
    spy = _Spy()
    spy.train()
    out = spy.embed(torch.randn(5, 3), batch_size=2)
    assert out.shape == (5, 2)
    assert spy.seen == [(False, False)] * 3  # three batches, all eval and no grad
    assert spy.training is True
    spy.eval()
    spy.embed(torch.randn(1, 3))
    assert spy.training is False


def test_embed_does_not_touch_batchnorm_statistics():
    encoder = siamkit.create_encoder("compact", embedding_dim=8, channels=(4,))
    encoder.train()
    bn = encoder.features[1]
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    encoder.embed(torch.randn(4, 1, 56, 46) * 5 + 3)
    assert torch.equal(bn.running_mean, before[0])
    assert torch.equal(bn.num_batches_tracked, before[1])
    assert encoder.training
    encoder(torch.randn(4, 1, 56, 46) * 5 + 3)  # a training forward does change them
    assert not torch.equal(bn.running_mean, before[0])


class _WrongShape(siamkit.Encoder):
    def __init__(self, out_shape=(3,)):
        super().__init__()
        self.embedding_dim = 4
        self.out_shape = tuple(out_shape)

    def forward(self, x):
        return torch.zeros(len(x), *self.out_shape)


@pytest.mark.parametrize("out_shape", [(3,), (4, 1), ()])
def test_wrong_forward_shape_is_a_shape_error(out_shape):
    encoder = _WrongShape(out_shape)
    encoder.train()
    with pytest.raises(ShapeError, match=r"_WrongShape\.forward"):
        encoder.embed(torch.zeros(2, 5))
    assert encoder.training  # restored even on error


class _NaN(siamkit.Encoder):
    def __init__(self, value: float = float("nan")):
        super().__init__()
        self.embedding_dim = 2
        self.value = value

    def forward(self, x):
        out = torch.ones(len(x), 2)
        out[-1, 0] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_output_is_an_error(value):
    with pytest.raises(NonFiniteError):
        _NaN(value).embed(torch.zeros(3, 5))


def test_transform_resizes_converts_and_scales():
    encoder = siamkit.create_encoder("compact", embedding_dim=4, channels=(4,), input_size=(20, 10))
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    tensor = encoder.transform(image)
    assert tensor.shape == (1, 20, 10)
    torch.testing.assert_close(tensor, torch.ones(1, 20, 10))
    black = default_transform(Image.new("L", (5, 4)), mode="L", size=None)
    assert black.shape == (1, 4, 5)
    torch.testing.assert_close(black, -torch.ones(1, 4, 5))
    rgb = default_transform(Image.new("RGB", (5, 4), (255, 0, 0)), mode="RGB")
    assert rgb.shape == (3, 4, 5)
    assert rgb[0].min().item() == 1.0 and rgb[1].max().item() == -1.0


# -- saving and loading ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_builtin_save_load_round_trip(name, tmp_path, synthetic_faces):
    torch.manual_seed(1)
    encoder = siamkit.create_encoder(name, **BUILTIN_CONFIGS[name])
    encoder.train()
    with torch.no_grad():  # move BatchNorm statistics away from their defaults
        encoder(_batch_tensor(name, encoder, n=4) * 3 + 1)
    inputs = _inputs(name, encoder, synthetic_faces)
    want = encoder.embed(inputs)

    directory = encoder.save(tmp_path / "model", extra={"note": "round trip"})
    loaded = siamkit.load_encoder(directory)
    assert type(loaded) is type(encoder)
    assert loaded.training is False
    assert loaded.get_config() == encoder.get_config()
    assert loaded.metric == encoder.metric
    assert loaded.fingerprint() == encoder.fingerprint()
    np.testing.assert_array_equal(loaded.embed(inputs), want)

    manifest = json.loads((directory / "encoder.json").read_text())
    assert manifest["name"] == name
    assert manifest["format_version"] == 1
    assert manifest["embedding_dim"] == BUILTIN_CONFIGS[name]["embedding_dim"]
    assert manifest["fingerprint"] == encoder.fingerprint()
    assert manifest["extra"] == {"note": "round trip"}


def test_fingerprint_tracks_weights_and_config():
    torch.manual_seed(0)
    a = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    torch.manual_seed(0)
    b = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    with torch.no_grad():
        b.net[0].weight[0, 0] += 1e-3
    assert a.fingerprint() != b.fingerprint()
    torch.manual_seed(0)
    c = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2, dropout=0.1)
    assert a.fingerprint() != c.fingerprint()  # same weights, other config


def test_user_encoder_round_trip(tmp_path, clean_encoder_registry):
    @siamkit.register_encoder("test-scaled-linear")
    class ScaledLinear(siamkit.Encoder):
        def __init__(self, input_dim: int, scale: float = 1.0, label: str = "x", dims=(3,)):
            super().__init__()
            self.embedding_dim = dims[-1]
            self.scale = scale
            self.label = label
            self.fc = nn.Linear(input_dim, dims[-1])
            self.metric = "cosine"

        def forward(self, x):
            return self.fc(x) * self.scale

    encoder = ScaledLinear(6, scale=2.5, label="custom", dims=(5, 4))
    assert encoder.get_config() == {"input_dim": 6, "scale": 2.5, "label": "custom", "dims": [5, 4]}
    x = torch.randn(3, 6)
    loaded = siamkit.load_encoder(encoder.save(tmp_path / "m"))
    assert isinstance(loaded, ScaledLinear)
    assert (loaded.scale, loaded.label, loaded.embedding_dim) == (2.5, "custom", 4)
    np.testing.assert_array_equal(loaded.embed(x), encoder.embed(x))
    assert loaded.fingerprint() == encoder.fingerprint()


def test_unregistered_encoder_refuses_to_save(tmp_path):
    class Unregistered(siamkit.CompactCNN):  # a subclass does not inherit the name
        pass

    encoder = Unregistered(embedding_dim=4, channels=(4,))
    with pytest.raises(ConfigError, match="not registered"):
        encoder.save(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_unsaveable_configs(tmp_path, clean_encoder_registry):
    @siamkit.register_encoder("test-varargs")
    class VarArgs(siamkit.Encoder):
        def __init__(self, *dims):
            super().__init__()
            self.embedding_dim = dims[-1] if dims else 2

        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="args"):
        VarArgs(3, 4).save(tmp_path / "a")
    assert VarArgs().get_config() == {}  # no positional extras: fine

    @siamkit.register_encoder("test-module-arg")
    class ModuleArg(siamkit.Encoder):
        def __init__(self, head: nn.Module):
            super().__init__()
            self.embedding_dim = 2
            self.head = head

        def forward(self, x):
            return self.head(x)

    with pytest.raises(ConfigError, match="JSON"):
        ModuleArg(nn.Linear(3, 2)).save(tmp_path / "b")


@pytest.fixture
def saved_mlp(tmp_path) -> tuple[siamkit.Encoder, Path]:
    torch.manual_seed(2)
    encoder = siamkit.create_encoder("mlp", input_dim=5, embedding_dim=3)
    return encoder, encoder.save(tmp_path / "mlp")


def test_load_non_model_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match=r"encoder\.json"):
        siamkit.load_encoder(tmp_path / "empty")
    with pytest.raises(ModelFileError):
        siamkit.load_encoder(tmp_path / "missing")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "encoder.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupted"):
        siamkit.load_encoder(tmp_path / "garbage")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "encoder.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelFileError, match="not a siamkit encoder"):
        siamkit.load_encoder(tmp_path / "other")


def test_load_corrupted_weights(saved_mlp):
    _, directory = saved_mlp
    (weights,) = directory.glob("encoder-*.pt")
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        siamkit.load_encoder(directory)


def test_load_missing_weights(saved_mlp):
    _, directory = saved_mlp
    (weights,) = directory.glob("encoder-*.pt")
    weights.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        siamkit.load_encoder(directory)


def test_load_newer_format_version(saved_mlp):
    _, directory = saved_mlp
    manifest_path = directory / "encoder.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="999"):
        siamkit.load_encoder(directory)


def test_load_incompatible_config(saved_mlp):
    _, directory = saved_mlp
    manifest_path = directory / "encoder.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["no_such_argument"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="rebuild"):
        siamkit.load_encoder(directory)
    manifest["config"] = {"input_dim": 7, "embedding_dim": 3}  # other weight shapes
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="cannot load weights"):
        siamkit.load_encoder(directory)


def test_load_with_explicit_class(saved_mlp):
    encoder, directory = saved_mlp
    loaded = siamkit.load_encoder(directory, encoder_class=siamkit.MLPEncoder)
    assert loaded.fingerprint() == encoder.fingerprint()


def test_saving_twice_leaves_one_weights_file(saved_mlp):
    encoder, directory = saved_mlp
    (first,) = directory.glob("encoder-*.pt")
    with torch.no_grad():
        encoder.net[0].weight.mul_(2)
    encoder.save(directory)
    files = sorted(p.name for p in directory.iterdir())
    weights = [f for f in files if f.endswith(".pt")]
    assert len(weights) == 1
    assert weights[0] != first.name
    assert files == sorted(["encoder.json", weights[0]])  # no staging or temporary files
    loaded = siamkit.load_encoder(directory)
    assert loaded.fingerprint() == encoder.fingerprint()
    # saving unchanged weights again keeps that one file
    encoder.save(directory)
    assert sorted(p.name for p in directory.iterdir()) == files


# -- Siamese twins -------------------------------------------------------------------------
def test_siamese_network_shares_one_encoder():
    torch.manual_seed(3)
    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=3, metric="cosine")
    net = siamkit.SiameseNetwork(encoder).eval()
    assert net.metric == "cosine"
    assert sum(1 for _ in net.parameters()) == sum(1 for _ in encoder.parameters())
    x1, x2 = torch.randn(5, 4), torch.randn(5, 4)
    e1, e2 = net(x1, x2)
    torch.testing.assert_close(e1, encoder(x1))
    torch.testing.assert_close(e2, encoder(x2))
    torch.testing.assert_close(net.distance(x1, x2), paired_distances(e1, e2, "cosine"))
    assert net.distance(x1, x1).abs().max().item() < 1e-5


def test_siamese_network_needs_an_encoder():
    with pytest.raises(ConfigError, match="Encoder"):
        siamkit.SiameseNetwork(nn.Linear(3, 2))
