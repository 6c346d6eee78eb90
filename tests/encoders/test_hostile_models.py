"""Hostile saved models and face model files: what an edited or damaged file can make siamkit do.

A model folder or a dlib file may come from anyone. Whatever it holds, loading
reads no file outside the folder, reaches no network, takes no memory the
saved weights do not bound, never loads garbage, and fails with a siamkit error
naming the file (and the field). Impossible encoder settings fail where the
encoder is built.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import siamkit
from siamkit import _model_files
from siamkit._model_files import LANDMARK_MODEL, RECOGNITION_MODEL
from siamkit.cli.main import main
from siamkit.encoders import _dlib_format
from siamkit.encoders import base as encoder_base
from siamkit.encoders.face_resnet import DlibFaceResNet, load_dlib_weights
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError, SiamkitError

MANIFEST = "encoder.json"


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: Any) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _installed_model(name: str) -> Path:
    try:
        return _model_files.face_model_file(name)
    except MissingExtraError:
        pytest.skip("the face extra (siamkit[faces]) is not installed")


def _with_deadline(call: Callable[[], Any], fifo: Path | None = None, seconds: float = 5.0) -> Any:
    """What ``call()`` raised or returned, failing the test if it blocks past ``seconds``.

    A call blocked opening or reading ``fifo`` is released by opening its other end.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    blocked = thread.is_alive()
    if blocked and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # EOF for the blocked reader
        thread.join(seconds)
    assert not blocked, f"the call blocked for more than {seconds} s"
    return outcome[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


# -- 1. the config names a file: a saved model's weights are in its folder -----------
@pytest.fixture
def saved_face(tmp_path: Path) -> tuple[DlibFaceResNet, Path]:
    torch.manual_seed(0)
    encoder = DlibFaceResNet(pretrained=False).eval()
    return encoder, encoder.save(tmp_path / "face")


@pytest.mark.parametrize("named", ["/etc/passwd", "fifo", "/dev/zero", "folder"])
def test_a_face_model_config_naming_any_file_reads_nothing(
    saved_face, tmp_path, monkeypatch, fifo, named
) -> None:
    encoder, folder = saved_face
    target = {"fifo": str(fifo), "folder": str(tmp_path)}.get(named, named)
    manifest = _manifest(folder)
    manifest["config"].update(pretrained=True, weights_file=target)
    _write_manifest(folder, manifest)
    opened: list[str] = []
    real_read = getattr(_dlib_format, "read_model_file", None)
    monkeypatch.setattr(
        _dlib_format,
        "read_model_file",
        lambda path, **kw: opened.append(path) or real_read(path, **kw),
        raising=False,
    )
    loaded = _with_deadline(lambda: siamkit.load_encoder(folder), fifo=fifo)
    assert isinstance(loaded, DlibFaceResNet), loaded
    assert opened == []
    chips = torch.rand(2, 3, 150, 150) * 255
    np.testing.assert_array_equal(loaded.embed(chips), encoder.embed(chips))
    assert loaded.fingerprint() == encoder.fingerprint()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "folder", "symlink to /dev/zero"])
def test_the_dlib_reader_refuses_what_is_not_a_regular_file(tmp_path, fifo, kind) -> None:
    if kind == "symlink to /dev/zero":
        path = tmp_path / "model.dat"
        path.symlink_to("/dev/zero")
    else:
        path = {"fifo": fifo, "folder": tmp_path}.get(kind, Path(kind))
    err = _with_deadline(lambda: DlibFaceResNet(weights_file=str(path)), fifo=fifo)
    assert isinstance(err, ModelFileError), err
    assert str(path) in str(err) and "not a regular file" in str(err)


def test_the_dlib_reader_refuses_a_file_past_its_size_bound(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.dat"
    path.write_bytes(b"\x01\x01" * 600)
    monkeypatch.setattr(_dlib_format, "MAX_DLIB_FILE_BYTES", 1000)
    with pytest.raises(ModelFileError, match=r"big\.dat holds 1200 bytes, more than the 1000"):
        DlibFaceResNet(weights_file=str(path))


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_face_model_files_named_by_the_environment_must_be_regular(
    tmp_path, monkeypatch, fifo, kind
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in (RECOGNITION_MODEL, LANDMARK_MODEL):
        if kind == "fifo":
            os.mkfifo(models / name)
        else:
            (models / name).mkdir()
    monkeypatch.setenv("SIAMKIT_FACE_MODELS", str(models))
    for name in (RECOGNITION_MODEL, LANDMARK_MODEL):
        err = _with_deadline(lambda n=name: _model_files.face_model_file(n), fifo=models / name)
        assert isinstance(err, ModelFileError), err
        assert str(models / name) in str(err) and "not a regular file" in str(err)
    err = _with_deadline(DlibFaceResNet, fifo=models / RECOGNITION_MODEL)
    assert isinstance(err, ModelFileError), err


def test_a_weights_file_that_is_not_a_regular_file_is_refused(tmp_path, fifo) -> None:
    encoder = siamkit.create_encoder("mlp", input_dim=5, embedding_dim=3)
    folder = encoder.save(tmp_path / "mlp")
    weights = folder / _manifest(folder)["weights"]
    weights.unlink()
    weights.symlink_to(fifo)
    err = _with_deadline(lambda: siamkit.load_encoder(folder), fifo=fifo)
    assert isinstance(err, ModelFileError), err
    assert str(weights) in str(err) and "not a regular file" in str(err)


# -- 2. starting weights: loading never downloads ---------------------------------------
def test_a_resnet_from_imagenet_weights_loads_offline_without_downloading(
    tmp_path, monkeypatch
) -> None:
    from torchvision.models._api import WeightsEnum

    torch.manual_seed(3)
    fake_imagenet = torchvision.models.resnet18().state_dict()
    downloads: list[str] = []

    def download(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        downloads.append(self.url)
        return fake_imagenet

    monkeypatch.setattr(WeightsEnum, "get_state_dict", download)
    encoder = siamkit.ResNetEncoder(
        "resnet18", embedding_dim=8, in_channels=3, input_size=(32, 32), weights="DEFAULT"
    ).eval()
    assert len(downloads) == 1
    assert torch.equal(
        encoder.backbone.layer1[0].conv1.weight, fake_imagenet["layer1.0.conv1.weight"]
    )
    folder = encoder.save(tmp_path / "resnet")

    def offline(self: WeightsEnum, *args: Any, **kwargs: Any) -> None:
        downloads.append(self.url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    loaded = siamkit.load_encoder(folder)
    assert len(downloads) == 1  # none at load
    assert loaded.get_config()["weights"] == "DEFAULT"  # as saved: same fingerprint
    assert loaded.fingerprint() == encoder.fingerprint()
    x = torch.rand(3, 3, 32, 32)
    np.testing.assert_array_equal(loaded.embed(x), encoder.embed(x))


def test_a_plugin_declares_its_starting_weights(tmp_path, clean_encoder_registry) -> None:
    reads: list[str] = []

    @siamkit.register_encoder("test-pretrained-plugin")
    class Pretrained(siamkit.Encoder):
        starting_weights: ClassVar[dict[str, Any]] = {"pretrained_path": None}

        def __init__(self, pretrained_path: str | None = None) -> None:
            super().__init__()
            self.embedding_dim = 2
            self.fc = nn.Linear(3, 2)
            if pretrained_path is not None:
                reads.append(pretrained_path)
                self.fc.load_state_dict(torch.load(pretrained_path, weights_only=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    start = tmp_path / "start.pt"
    torch.save(nn.Linear(3, 2).state_dict(), start)
    encoder = Pretrained(str(start))
    folder = encoder.save(tmp_path / "plugin")
    start.unlink()  # gone: loading must not need it
    loaded = siamkit.load_encoder(folder)
    assert reads == [str(start)]
    assert loaded.fingerprint() == encoder.fingerprint()
    with pytest.raises(ConfigError, match="starting_weights names"):

        class Wrong(siamkit.Encoder):
            starting_weights: ClassVar[dict[str, Any]] = {"no_such_argument": None}

            def __init__(self) -> None:
                super().__init__()
                self.embedding_dim = 2

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x


def test_a_config_asking_for_a_huge_model_is_refused_before_any_memory(
    tmp_path, clean_encoder_registry
) -> None:
    devices: list[str] = []

    @siamkit.register_encoder("test-sized-plugin")
    class Sized(siamkit.Encoder):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.embedding_dim = 2
            self.fc = nn.Sequential(nn.Linear(3, width), nn.Linear(width, 2))
            devices.append(self.fc[0].weight.device.type)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    folder = Sized().save(tmp_path / "sized")
    manifest = _manifest(folder)
    manifest["config"]["width"] = 5_000_000  # 120 MB of weights the file does not hold
    _write_manifest(folder, manifest)
    devices.clear()
    with pytest.raises(ModelFileError, match="do not fit the saved config"):
        siamkit.load_encoder(folder)
    assert devices == ["meta"]  # built once, on the meta device, never for real


# -- 3. the manifest's schema --------------------------------------------------------------
@pytest.fixture
def saved_mlp(tmp_path: Path) -> tuple[siamkit.Encoder, Path]:
    torch.manual_seed(2)
    encoder = siamkit.create_encoder("mlp", input_dim=5, embedding_dim=3).eval()
    return encoder, encoder.save(tmp_path / "mlp")


def _edit(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        if value is _DELETE:
            del manifest[field]
        else:
            manifest[field] = value

    return edit


_DELETE = object()
_SCHEMA_CASES = {
    "embedding_dim 10**12": ("embedding_dim", _edit("embedding_dim", 10**12)),
    "embedding_dim -1": ("embedding_dim", _edit("embedding_dim", -1)),
    "embedding_dim true": ("embedding_dim", _edit("embedding_dim", True)),
    "embedding_dim of another size": ("embedding_dim", _edit("embedding_dim", 4)),
    "no name": ("'name'", _edit("name", _DELETE)),
    "no embedding_dim": ("'embedding_dim'", _edit("embedding_dim", _DELETE)),
    "no config": ("'config'", _edit("config", _DELETE)),
    "bogus fingerprint": ("fingerprint", _edit("fingerprint", "x")),
    "another model's fingerprint": ("fingerprint", _edit("fingerprint", "ab" * 32)),
    "unknown metric": ("metric", _edit("metric", "manhattan")),
    "the other metric": ("metric", _edit("metric", "cosine")),
    "unknown key": ("unknown field 'evil'", _edit("evil", 1)),
    "config a list": ("config", _edit("config", [])),
    "bogus checksum": ("weights_sha256", _edit("weights_sha256", "0" * 63)),
    "an aligner in version 1": ("unknown field 'aligner'", _edit("aligner", {"name": "none"})),
    "extra a string": ("extra", _edit("extra", "notes")),
}


@pytest.mark.parametrize("case", sorted(_SCHEMA_CASES))
def test_every_manifest_field_is_checked_and_named(saved_mlp, case) -> None:
    _, folder = saved_mlp
    field, edit = _SCHEMA_CASES[case]
    manifest = _manifest(folder)
    edit(manifest)
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFileError) as caught:
        siamkit.load_encoder(folder)
    message = str(caught.value)
    assert str(folder / MANIFEST) in message and field in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("embedding_dim", 10**12), ("embedding_dim", -1), ("input_dim", 0), ("hidden", "x"),
     ("hidden", [-3]), ("dropout", 2.0), ("metric", "manhattan")],
)  # fmt: skip
def test_an_impossible_saved_config_is_a_model_file_error(saved_mlp, field, value) -> None:
    _, folder = saved_mlp
    manifest = _manifest(folder)
    manifest["config"][field] = value
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match=rf"encoder\.json: cannot rebuild .*{field}"):
        siamkit.load_encoder(folder)


def test_json_nested_100000_deep_is_a_model_file_error(saved_mlp) -> None:
    _, folder = saved_mlp
    deep = '{"format": "siamkit-encoder", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (folder / MANIFEST).write_text(deep)
    with pytest.raises(ModelFileError, match="nested deeper than 64"):
        siamkit.load_encoder(folder)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(saved_mlp) -> None:
    _, folder = saved_mlp
    manifest = _manifest(folder)
    manifest["extra"] = {"padding": "x" * (17 << 20)}
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match=r"encoder\.json holds \d+ bytes, more than"):
        siamkit.load_encoder(folder)


def test_models_written_as_format_1_and_2_load(tmp_path) -> None:
    torch.manual_seed(4)
    plain = siamkit.create_encoder("compact", embedding_dim=8, channels=[4, 8]).eval()
    aligned = siamkit.create_encoder("compact", embedding_dim=8, channels=[4, 8]).eval()
    aligned.aligner = siamkit.create_aligner("none")
    x = torch.rand(2, 1, 56, 46)
    for encoder, version in ((plain, 1), (aligned, 2)):
        folder = encoder.save(tmp_path / f"v{version}")
        manifest = _manifest(folder)
        assert manifest["format_version"] == version
        assert set(manifest) == {
            "format", "format_version", "name", "class", "config", "embedding_dim", "metric",
            "weights", "weights_sha256", "fingerprint", "siamkit_version", "torch_version",
            "extra", *(["aligner"] if version == 2 else []),
        }  # fmt: skip
        manifest.update(siamkit_version="0.1.0", torch_version="2.1.0")  # older writers
        _write_manifest(folder, manifest)
        loaded = siamkit.load_encoder(folder)
        assert loaded.fingerprint() == encoder.fingerprint()
        np.testing.assert_array_equal(loaded.embed(x), encoder.embed(x))


_FUZZ_VALUES = [None, True, -1, 0, 2**63, 1.5, float("nan"), "", "x", [], {}, [1], {"a": 1}]


def _mutated(manifest: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``manifest`` with one field deleted, replaced or type-swapped, maybe inside a block."""
    out = json.loads(json.dumps(manifest))
    target = out
    blocks = [key for key in ("config", "aligner", "extra") if isinstance(out.get(key), dict)]
    if blocks and rng.random() < 0.4:
        target = out[blocks[rng.integers(len(blocks))]]
        if not target:
            target["added"] = 1
            return out
    key = sorted(target)[rng.integers(len(target))]
    move = rng.integers(4)
    if move == 0:
        del target[key]
    elif move == 1:
        target[key] = _FUZZ_VALUES[rng.integers(len(_FUZZ_VALUES))]
    elif move == 2:  # the same value as another type
        value = target[key]
        target[key] = [value] if not isinstance(value, list) else {"0": value}
    else:
        target[key] = json.dumps(target[key])
    return out


def test_manifest_fuzz_never_loads_garbage_nor_escapes_untyped(tmp_path) -> None:
    torch.manual_seed(5)
    encoder = siamkit.create_encoder("mlp", input_dim=5, embedding_dim=3, hidden=[4]).eval()
    encoder.aligner = siamkit.create_aligner("none")
    folder = encoder.save(tmp_path / "mlp", extra={"note": "fuzz"})
    original = _manifest(folder)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    want = encoder.embed(x)
    rng = np.random.default_rng(0)
    loaded_keys = set()
    for _ in range(150):
        manifest = _mutated(original, rng)
        if manifest == original:
            continue
        _write_manifest(folder, manifest)
        try:
            loaded = siamkit.load_encoder(folder)
        except SiamkitError:
            continue
        # What loads is the saved model, exactly: only descriptive fields changed.
        assert loaded.fingerprint() == encoder.fingerprint()
        np.testing.assert_array_equal(loaded.embed(x), want)
        loaded_keys |= {k for k in original if manifest.get(k) != original[k]}
    assert loaded_keys <= {"class", "siamkit_version", "torch_version", "extra"}


# -- 4. the dlib weight reader -------------------------------------------------------------
def _first_tensor(data: bytes) -> tuple[int, int]:
    """Where the first tensor's four sizes start and its float data begins, in ``data``."""
    found: list[tuple[int, int]] = []
    reader = _dlib_format._Reader(data, "model")
    real_shape = _dlib_format._Reader.shape

    def shape(self: Any) -> Any:
        start = self.pos
        dims = real_shape(self)
        if not found:
            found.append((start, self.pos))
        return dims

    reader.shape = shape.__get__(reader)  # type: ignore[method-assign]
    reader.version((1,), "loss layer")
    _dlib_format._loss(reader)
    from siamkit.encoders.face_resnet import dlib_network_stack

    _dlib_format._layer_stack(dlib_network_stack()[1:], reader, [])
    return found[0]


def _dlib_int(value: int) -> bytes:
    size = max(1, (value.bit_length() + 7) // 8)
    return bytes([size]) + value.to_bytes(size, "little")


def test_tensor_sizes_whose_product_overflows_int64_are_refused(tmp_path) -> None:
    data = _installed_model(RECOGNITION_MODEL).read_bytes()
    start, end = _first_tensor(data)
    sizes = b"".join(_dlib_int(d) for d in (2**32, 2**32, 1, 1))
    path = tmp_path / "overflow.dat"
    path.write_bytes(data[:start] + sizes + data[end:])
    with pytest.raises(ModelFileError, match=r"overflow\.dat.*tensor shape \(4294967296"):
        DlibFaceResNet(weights_file=str(path))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_weights_are_refused_at_load(tmp_path, value) -> None:
    data = bytearray(_installed_model(RECOGNITION_MODEL).read_bytes())
    _, weights = _first_tensor(bytes(data))
    data[weights + 40 : weights + 44] = np.float32(value).tobytes()
    path = tmp_path / "nan.dat"
    path.write_bytes(bytes(data))
    with pytest.raises(
        ModelFileError, match=r"nan\.dat: the weight of layer 1 \(a con\) holds NaN"
    ):
        DlibFaceResNet(weights_file=str(path))


def test_damaged_dlib_files_only_ever_raise_model_file_errors(tmp_path) -> None:
    data = _installed_model(RECOGNITION_MODEL).read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.dat"
    model = DlibFaceResNet(pretrained=False)
    for trial in range(10):
        damaged = bytearray(data)
        if trial % 2:
            damaged = damaged[: rng.integers(len(data))]
        else:  # overwrite bytes among the first layers' headers and sizes
            for pos in rng.integers(0, 4096, size=8):
                damaged[pos] = int(rng.integers(256))
        path.write_bytes(bytes(damaged))
        try:
            load_dlib_weights(model, path)
        except ModelFileError as err:
            assert "damaged.dat" in str(err)
            continue
        assert all(torch.isfinite(p).all() for p in model.parameters())


# -- 5. a damaged landmark model -------------------------------------------------------------
def test_a_damaged_landmark_model_names_the_file_and_the_fix(tmp_path, monkeypatch) -> None:
    pytest.importorskip("dlib", reason="the face extra (siamkit[faces]) is not installed")
    recognition = _installed_model(RECOGNITION_MODEL)
    landmarks = _installed_model(LANDMARK_MODEL)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(recognition, models / RECOGNITION_MODEL)
    (models / LANDMARK_MODEL).write_bytes(landmarks.read_bytes()[:100_000])
    monkeypatch.setenv("SIAMKIT_FACE_MODELS", str(models))
    from PIL import Image

    aligner = siamkit.create_aligner("dlib")
    with pytest.raises(ModelFileError) as caught:
        aligner.align(Image.new("RGB", (80, 80)))
    message = str(caught.value)
    assert str(models / LANDMARK_MODEL) in message and r"reinstall siamkit[faces]" in message
    assert "\n" not in message


# -- 6. impossible encoder settings fail where the encoder is built ------------------------
_IMPOSSIBLE = [
    ("compact", {"embedding_dim": 0}, "embedding_dim"),
    ("compact", {"embedding_dim": -1}, "embedding_dim"),
    ("compact", {"embedding_dim": 10**12}, "embedding_dim"),
    ("compact", {"embedding_dim": 1.5}, "embedding_dim"),
    ("compact", {"embedding_dim": True}, "embedding_dim"),
    ("compact", {"channels": [8, -1]}, "channels"),
    ("compact", {"channels": []}, "channels"),
    ("compact", {"channels": [4] * 7}, "stages"),
    ("compact", {"input_size": [0, 46]}, "input_size"),
    ("compact", {"input_size": [56]}, "input_size"),
    ("compact", {"in_channels": 2}, "in_channels"),
    ("compact", {"dropout": 1.5}, "dropout"),
    ("compact", {"whitening": "no"}, "whitening"),
    ("mlp", {"input_dim": 0}, "input_dim"),
    ("mlp", {"input_dim": 4, "embedding_dim": 0}, "embedding_dim"),
    ("mlp", {"input_dim": 4, "hidden": [-3]}, "hidden"),
    ("tutorial", {"embedding_dim": 0}, "embedding_dim"),
    ("tutorial", {"input_size": [10_000, 10_000]}, "input_size"),
    ("resnet", {"embedding_dim": 0}, "embedding_dim"),
    ("resnet", {"input_size": [-1, 32]}, "input_size"),
    ("resnet", {"weights": 5}, "weights"),
    ("dlib-face", {"pretrained": "yes"}, "pretrained"),
    ("dlib-face", {"weights_file": 5}, "weights_file"),
    ("dlib-face", {"trainable_from": 3}, "trainable_from"),
]


@pytest.mark.parametrize(("name", "kwargs", "argument"), _IMPOSSIBLE)
def test_impossible_builtin_settings_fail_when_built(name, kwargs, argument) -> None:
    with pytest.raises(ConfigError, match=argument):
        siamkit.create_encoder(name, **kwargs)
    if argument not in siamkit.encoders.encoder_registry.get(name).starting_weights:
        # What `siamkit train` checks first; starting weights are only checked when used.
        with pytest.raises(ConfigError, match=argument):
            encoder_base.check_encoder_arguments(name, **kwargs)


def test_the_embedding_size_is_part_of_the_contract(clean_encoder_registry) -> None:
    @siamkit.register_encoder("test-sized")
    class Sized(siamkit.Encoder):
        def __init__(self, embedding_dim: int = 4) -> None:
            super().__init__()
            self.embedding_dim = embedding_dim
            self.fc = nn.Linear(3, embedding_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    for value in (0, -2, 65_537, "8"):
        with pytest.raises(ConfigError, match="Sized: embedding_dim must be an integer from 1 to"):
            siamkit.create_encoder("test-sized", embedding_dim=value)
    encoder = Sized(np.int64(6))
    assert encoder.embedding_dim == 6 and type(encoder.embedding_dim) is int
    with pytest.raises(ConfigError, match="embedding_dim"):
        encoder.embedding_dim = 0  # no later edit makes it impossible either
    assert encoder.embedding_dim == 6

    class Unset(siamkit.Encoder):
        def __init__(self) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(ConfigError, match="did not set embedding_dim"):
        Unset()
    with pytest.raises(ConfigError, match="Zero: embedding_dim"):

        class Zero(siamkit.Encoder):
            embedding_dim = 0

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x


def test_train_refuses_an_impossible_encoder_argument_before_any_work(
    synthetic_faces: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "model"
    for argument, shown in (("embedding_dim=0", "embedding_dim"), ("channels=[8,-1]", "channels")):
        argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--epochs", "1",
                "--quiet", "--encoder-arg", argument]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("siamkit: error:") and shown in err and "Traceback" not in err
        assert not out.exists()  # nothing written, nothing trained
