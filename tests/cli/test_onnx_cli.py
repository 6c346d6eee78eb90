"""An ONNX export in place of a model folder: ``siamkit eval``, ``index``, FaceIndex.load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from _aligners import DarkIsNoFace
from siamkit.cli.main import main
from siamkit.evaluation import evaluate_encoder
from siamkit.runtime import OnnxEncoder

pytest.importorskip("onnxruntime", reason="the onnx extra (siamkit[onnx]) is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (siamkit[onnx]) is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[siamkit.Encoder, Path]:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact")
    return encoder, encoder.export_onnx(tmp_path_factory.mktemp("export") / "model.onnx")


def test_eval_takes_an_onnx_file(exported, synthetic_faces: Path, capsys) -> None:
    encoder, path = exported
    assert (path.parent / "model.onnx.json").is_file()
    assert main(["eval", "--model", str(path), "--data", str(synthetic_faces), "--quiet"]) == 0
    printed = capsys.readouterr().out
    out = path.parent / "model-evaluation"  # beside the file, not inside it
    assert f"report: {out / 'report.html'}" in printed
    data = json.loads((out / "evaluation.json").read_text())
    assert data["model"] == str(path) and data["threshold_source"].startswith("EER threshold")
    # The numbers are PyTorch's to float precision.
    expected = evaluate_encoder(encoder, synthetic_faces)
    assert data["verification"]["auc"] == pytest.approx(expected.verification.auc, abs=1e-6)
    assert data["identification"]["rank1"] == pytest.approx(expected.identification["rank1"])
    assert data["num_pairs"] == expected.num_pairs


def test_index_build_query_and_load_with_an_onnx_file(
    exported, synthetic_faces: Path, tmp_path: Path, capsys
) -> None:
    encoder, path = exported
    index_dir = tmp_path / "index"
    build = ["index", "build", "--model", str(path), "--gallery", str(synthetic_faces)]
    assert main([*build, "--out", str(index_dir), "--quiet"]) == 0
    assert "indexed 36 images of 6 people" in capsys.readouterr().out
    probe = synthetic_faces / "person3" / "2.png"
    assert main(["index", "query", "--index", str(index_dir), str(probe), "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["matches"][0]["id"] == "person3/2.png"
    assert answer["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    # The saved index opens with the export or with the PyTorch model it came from.
    for model in (siamkit.load_encoder(path), encoder):
        index = siamkit.FaceIndex.load(index_dir, encoder=model)
        assert len(index) == 36 and index.info()["extra"]["model"] == str(path.resolve())
        found = index.search(probe, k=3)
        assert found[0].id == "person3/2.png"
    onnx_index = siamkit.FaceIndex.load(index_dir, encoder=siamkit.load_encoder(path))
    assert isinstance(onnx_index.encoder, OnnxEncoder)
    queries = [synthetic_faces / f"person{p}" / "0.png" for p in range(6)]
    built = siamkit.FaceIndex(encoder)
    built.add_folder(synthetic_faces)
    got, want = onnx_index.search(queries, k=5), built.search(queries, k=5)
    for a, b in zip(got, want, strict=True):
        assert [m.id for m in a] == [m.id for m in b]
        np.testing.assert_allclose([m.distance for m in a], [m.distance for m in b], atol=1e-4)


def test_an_export_applies_its_skip_policy(make_image_folder, tmp_path: Path, capsys) -> None:
    root = make_image_folder({f"p{i}": 3 for i in range(3)})
    Image.new("L", (46, 56)).save(root / "p1" / "0.png")
    encoder = siamkit.create_encoder("compact")
    encoder.aligner = DarkIsNoFace(on_missing="skip")
    path = encoder.export_onnx(tmp_path / "skip.onnx")
    assert main(["eval", "--model", str(path), "--data", str(root), "--quiet"]) == 0
    assert "a face was found in 8 of 9 images" in capsys.readouterr().out
    index = siamkit.FaceIndex(siamkit.load_encoder(path))
    added = index.add_folder(root)
    assert len(added) == 8 and [s.id for s in added.skipped] == ["p1/0.png"]
