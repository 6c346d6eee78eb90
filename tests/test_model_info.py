"""``siamkit.model_info`` and ``siamkit info``: what a saved model is, read back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import siamkit
from siamkit.cli.main import main
from siamkit.model_info import ModelInfo, model_info
from siamkit.training.fine_tuning import CandidateResult, FineTuneCandidate, FineTuneSelection


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[siamkit.Encoder, Path, Path]:
    folder = tmp_path_factory.mktemp("info")
    encoder = siamkit.create_encoder("compact", embedding_dim=16)
    encoder.aligner = siamkit.create_aligner("dlib", size=120, on_missing="skip")
    model = encoder.save(folder / "model")
    export = encoder.export_onnx(folder / "model.onnx")
    return encoder, model, export


def test_a_model_folder_is_described_by_its_saved_fields(saved) -> None:
    encoder, model, _ = saved
    info = model_info(model)
    manifest = json.loads((model / "encoder.json").read_text())
    assert info == ModelInfo(
        path=model,
        kind="pytorch",
        encoder="compact",
        config=manifest["config"],
        embedding_dim=16,
        metric=manifest["metric"],
        fingerprint=encoder.fingerprint(),
        aligner="dlib",
        aligner_config=manifest["aligner"]["config"],
        fine_tuning=None,
    )
    assert (info.aligner_config["size"], info.aligner_config["on_missing"]) == (120, "skip")


def test_an_export_is_described_like_its_model(saved) -> None:
    _, model, export = saved
    folder, onnx = model_info(model), model_info(export)
    assert onnx.kind == "onnx" and onnx.config == {}
    for name in ("encoder", "embedding_dim", "metric", "fingerprint", "aligner", "aligner_config"):
        assert getattr(onnx, name) == getattr(folder, name), name


def test_the_face_recipes_choice_is_shown(tmp_path) -> None:
    result = CandidateResult(FineTuneCandidate("frozen", "none"), auc=0.99, eer=0.0123)
    selection = FineTuneSelection("frozen", "no candidate beat it", (result,), 100, 1.0)
    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    model = encoder.save(tmp_path / "m", extra={"fine_tuning": selection.to_dict()})
    info = model_info(model)
    assert info.fine_tuning == selection.summary()
    assert info.lines()[-1] == f"recipe:      {selection.summary()}"


def test_the_cli_prints_the_lines_and_one_line_for_a_non_model(saved, tmp_path, capsys) -> None:
    _, model, export = saved
    assert main(["info", str(model)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == model_info(model).lines()
    assert any(line.startswith("aligner:     dlib (") for line in printed)
    assert main(["info", str(export)]) == 0
    assert "(onnx)" in capsys.readouterr().out
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "encoder.json is missing" in err


def test_an_edited_model_is_refused_as_loading_would(saved, tmp_path) -> None:
    _, model, _ = saved
    copy = tmp_path / "edited"
    copy.mkdir()
    for path in model.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((copy / "encoder.json").read_text())
    manifest["embedding_dim"] = 17
    (copy / "encoder.json").write_text(json.dumps(manifest))
    with pytest.raises(siamkit.ModelFileError, match="embedding_dim"):
        model_info(copy)


def test_an_export_is_described_without_torch(saved) -> None:
    _, _, export = saved
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = sys.modules["torchvision"] = None
        from siamkit.cli.main import main
        assert main(["info", {str(export)!r}]) == 0
        assert not [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m]]
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == model_info(export).lines()


def test_list_names_the_face_recipes_aligner(capsys) -> None:
    from siamkit.training.recipes import FACE_ALIGNER, FACE_ENCODER

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (
        f"face recipe (train's default): {FACE_ENCODER} behind the {FACE_ALIGNER} aligner"
    )
    assert FACE_ALIGNER in lines[-2]
