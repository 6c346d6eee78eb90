"""The model folder's one owner: its checks hold for ``Trainer.fit`` as for ``siamkit train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import siamkit
from siamkit.exceptions import ConfigError, ModelFileError, TrainingError
from siamkit.model_folder import (
    CHECKPOINT_FILE,
    ENCODER_FILE,
    check_out_folder,
    check_resume_split,
    evaluation_folder,
    is_run_file,
    trained_threshold,
    write_split,
)
from siamkit.training import TrainConfig, Trainer

SMALL = {"channels": [8, 16], "embedding_dim": 16}
TINY = TrainConfig(epochs=1, batch_size=12, m_per_class=3, lr=3e-3, warmup_epochs=1)


def test_the_names_a_run_writes_are_run_files_and_nothing_else_is() -> None:
    written = ["encoder.json", "encoder-0123456789abcdef.pt", "checkpoint.pt", "history.json",
               "loss_plot.png", "split.json", "candidates", "evaluation",
               ".history.json.abc.tmp", ".encoder-weights.pt"]  # fmt: skip
    assert all(is_run_file(name) for name in written)
    others = ["photo.jpg", "encoder-XYZ.pt", "encoder.json.bak", "notes", ".bashrc"]
    assert not any(is_run_file(name) for name in others)


def test_an_out_folder_holding_other_files_is_refused_naming_them(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match=r"out_dir .* \(thesis\.tex\): pick a new or empty"):
        check_out_folder(tmp_path, resume=True)
    file = tmp_path / "thesis.tex"
    with pytest.raises(ConfigError, match="is a file"):
        check_out_folder(file, resume=False)


def test_a_started_run_continues_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"x")
    with pytest.raises(TrainingError, match=r"\(checkpoint\.pt\): add --resume"):
        check_out_folder(tmp_path, resume=False, out_name="--out", resume_name="--resume")
    check_out_folder(tmp_path, resume=True)  # a run's own files: nothing refused


def test_trainer_fit_refuses_a_foreign_out_dir_before_training(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not siamkit's")
    parts = siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val_classes=["person4"])
    encoder = siamkit.create_encoder("compact", **SMALL)
    with pytest.raises(ConfigError, match=r"holiday\.jpg"):
        Trainer(encoder, TINY).fit(parts.train, None, out)
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]  # nothing written


def test_resuming_with_other_held_out_people_is_refused(tmp_path: Path) -> None:
    write_split(tmp_path, {"data": "faces", "train_classes": ["a", "b"], "val_classes": ["c"]})
    check_resume_split(tmp_path, ["c"])
    with pytest.raises(TrainingError, match=r"held out \['c'\], this call \['b'\]"):
        check_resume_split(tmp_path, ["b"])
    (tmp_path / "split.json").write_text("{")
    with pytest.raises(TrainingError, match="unreadable"):
        check_resume_split(tmp_path, ["c"])


def test_the_trained_threshold_is_the_one_training_recorded(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    parts = siamkit.split_by_class(
        siamkit.FaceFolder(synthetic_faces), val_classes=["person4", "person5"]
    )
    encoder = siamkit.create_encoder("compact", **SMALL)
    result = Trainer(encoder, TINY).fit(parts.train, parts.val, tmp_path / "run")
    assert result.metrics is not None
    assert trained_threshold(tmp_path / "run") == pytest.approx(result.metrics.threshold)
    assert trained_threshold(tmp_path) is None  # not a model folder
    manifest = json.loads((tmp_path / "run" / ENCODER_FILE).read_text())
    manifest["extra"]["training"] = "edited"
    (tmp_path / "run" / ENCODER_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="training record"):
        trained_threshold(tmp_path / "run")


def test_evaluation_takes_a_given_threshold_over_the_trained_one(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    encoder = siamkit.create_encoder("compact", **SMALL)
    result = siamkit.evaluation.evaluate_encoder(encoder, synthetic_faces, threshold=1e9)
    assert result.threshold == 1e9 and result.threshold_source == "given (threshold=)"
    # Accepting every pair is right exactly on the genuine ones: all pairs are scored.
    _, counts = np.unique(siamkit.FaceFolder(synthetic_faces).targets, return_counts=True)
    genuine, total = (counts * (counts - 1) // 2).sum(), counts.sum() * (counts.sum() - 1) // 2
    assert result.num_pairs == total
    assert result.accuracy == pytest.approx(genuine / total)
    with pytest.raises(ConfigError, match="threshold"):
        siamkit.evaluation.evaluate_encoder(encoder, synthetic_faces, threshold=np.nan)


def test_evaluation_folder_is_inside_a_model_folder_and_beside_an_export() -> None:
    assert evaluation_folder("runs/m") == Path("runs/m/evaluation")
    assert evaluation_folder("out/model.onnx") == Path("out/model-evaluation")
