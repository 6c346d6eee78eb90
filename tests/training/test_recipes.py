"""``train_recipe``: the flow ``siamkit train`` and the demo both run, from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import siamkit
from siamkit.cli.main import main
from siamkit.model_folder import read_training_record
from siamkit.training import TrainConfig
from siamkit.training.recipes import RecipeOptions, face_candidates, train_recipe

SMALL = {"channels": [8, 16], "embedding_dim": 16}
FAST = TrainConfig(epochs=2, batch_size=12, m_per_class=3, lr=3e-3, warmup_epochs=1)


def test_the_scratch_recipe_from_python_is_the_cli_s(synthetic_faces: Path, tmp_path: Path) -> None:
    said: list[str] = []
    options = RecipeOptions(preset="scratch", encoder_args=SMALL, config=FAST,
                            val_classes=["person0", "person3"])  # fmt: skip
    run = train_recipe(synthetic_faces, tmp_path / "m", options, say=said.append)
    assert run.recipe.name == "scratch" and run.result is not None and not run.finished
    # Before it: the flips chosen from the data (the synthetic patterns hold no face).
    recipe_line = next(line for line in said if line.startswith("recipe:"))
    assert recipe_line.startswith("recipe: scratch (compact from random weights, 2 epochs")
    assert any(line.startswith("best epoch") for line in said)
    split = json.loads((tmp_path / "m" / "split.json").read_text())
    assert split["val_classes"] == ["person0", "person3"]
    assert split["data"] == str(synthetic_faces.resolve())
    # The default contrastive loss takes the encoder's own margin (compact: 2.0), as
    # Trainer does; before the flow moved here `siamkit train` trained with 1.0.
    record = read_training_record(tmp_path / "m")
    assert record is not None and record.margin == 2.0
    loaded = siamkit.load_encoder(tmp_path / "m")
    paths = sorted((synthetic_faces / "person0").iterdir())[:2]
    assert (loaded.embed(paths) == run.encoder.embed(paths)).all()


def test_the_cli_s_margin_reaches_the_loss(synthetic_faces: Path, tmp_path: Path) -> None:
    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "m"),
            "--preset", "scratch", "--epochs", "1", "--batch-size", "12", "--m-per-class", "3",
            "--encoder-arg", "channels=[8,16]", "--encoder-arg", "embedding_dim=16",
            "--margin", "0.7", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = read_training_record(tmp_path / "m")
    assert record is not None and record.margin == 0.7


def test_a_split_is_trained_as_given_and_writes_no_split_file(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    split = siamkit.split_by_class(
        siamkit.FaceFolder(synthetic_faces), val_classes=["person4", "person5"]
    )
    options = RecipeOptions(preset="scratch", encoder_args=SMALL, config=FAST)
    run = train_recipe(split, tmp_path / "m", options)
    assert run.result is not None and not (tmp_path / "m" / "split.json").exists()
    assert run.result.history[-1].epoch == 2


def test_bad_settings_are_refused_before_any_work(synthetic_faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    with pytest.raises(siamkit.ConfigError, match="--aligner-arg needs --aligner"):
        lone = RecipeOptions(preset="scratch", aligner_args={"on_missing": "skip"})
        train_recipe(synthetic_faces, out, lone)
    with pytest.raises(siamkit.ConfigError, match="unknown preset"):
        train_recipe(synthetic_faces, out, RecipeOptions(preset="fast"))
    assert not out.exists()  # nothing written for a refused call


def test_face_candidates_take_the_lr_and_epochs_given_and_keep_their_own_otherwise() -> None:
    assert [(c.epochs, c.lr) for c in face_candidates()] == [(0, 0.0), (5, 1e-5), (5, 1e-5)]
    changed = face_candidates(lr=1e-4, epochs=2)
    assert [(c.epochs, c.lr) for c in changed] == [(0, 0.0), (2, 1e-4), (2, 1e-4)]
    assert [c.epochs for c in face_candidates(epochs=3)] == [0, 3, 3]
