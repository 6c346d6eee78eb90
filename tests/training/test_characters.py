"""The characters recipe: line drawings told from photographs, its settings, its augmentation,
its miner, and a small run of it on real Omniglot characters."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from siamkit.exceptions import ConfigError
from siamkit.miners.builtin import HardPairMiner
from siamkit.training import ShapeAugment, TrainConfig, Trainer
from siamkit.training.augment import FaceAugment, config_augment
from siamkit.training.characters import CHARACTERS_STEPS, characters_config
from siamkit.training.checkpoint import _as_run
from siamkit.training.drawings import DrawingShare, drawing_share, drawing_tone
from siamkit.training.face_share import training_paths
from siamkit.training.recipes import RecipeOptions, train_recipe


def test_line_drawings_are_told_from_photographs_and_colour(omniglot_root, orl_root) -> None:
    chars = omniglot_root / "omniglot-py" / "images_background" / "Latin"
    share = drawing_share(training_paths(chars))
    assert share.looked == 24 and share.found >= 20 and share.dark_ink == share.found
    faces = drawing_share(training_paths(orl_root))
    assert faces == DrawingShare(found=0, looked=24, dark_ink=0)
    page = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(page).ellipse([10, 10, 50, 50], outline=255, width=3)
    assert drawing_tone(page) == "light"  # chalk on a blackboard
    assert drawing_tone(page.convert("RGB")) == "light"  # grey saved as RGB is still grey
    red = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(red).line([(0, 0), (63, 63)], fill=(255, 0, 0), width=4)
    assert drawing_tone(red) is None  # colour
    ramp = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1)))
    assert drawing_tone(ramp) is None  # all half-tones
    assert drawing_tone(Image.new("L", (64, 64), 255)) is None  # blank: no ink
    assert not DrawingShare(12, 24, 12).most and DrawingShare(13, 24, 0).most


def test_the_recipe_settings_follow_the_data_size_and_yield_to_the_user() -> None:
    config = characters_config(TrainConfig(), train_images=57_600)  # 225 steps an epoch
    assert (config.epochs, config.warmup_epochs, config.batch_size) == (18, 1, 256)
    assert math.ceil(CHARACTERS_STEPS / 225) == 18
    assert (config.lr, config.weight_decay, config.miner, config.augmentation) == (
        1e-3,
        0.0,
        "hard",
        "shape",
    )
    small = characters_config(TrainConfig(), train_images=1_280)  # 5 steps: 800 epochs, capped
    assert small.epochs == 400 and small.warmup_epochs == 20
    tiny = characters_config(TrainConfig(), train_images=10**7)  # at least 10 epochs
    assert tiny.epochs == 10
    mine = characters_config(
        TrainConfig(epochs=5, lr=0.01, miner="batch-hard", batch_size=64), 57_600
    )
    assert (mine.epochs, mine.lr, mine.miner, mine.batch_size, mine.warmup_epochs) == (
        5,
        0.01,
        "batch-hard",
        64,
        1,
    )


def test_shape_augment_is_the_affine_map_it_draws() -> None:
    assert isinstance(ShapeAugment(), FaceAugment)
    x = torch.rand(5, 1, 12, 12)
    still = ShapeAugment(rotation=0, shear=0, scale=0, shift=0)
    assert torch.allclose(still(x), x, atol=1e-5)  # no change drawn: the images themselves
    # A horizontal shear of s maps output (u, v) to input (u + s v, v): a pure shear of one
    # column shift per row in 'align_corners=False' units moves row r by s * (2r+1-H)/2 px.
    augment = ShapeAugment(rotation=0, shear=0.5, scale=0, shift=0)
    params = {"angle": torch.zeros(1), "shear": torch.tensor([0.5]), "zoom_x": torch.ones(1),
              "zoom_y": torch.ones(1), "mirror": torch.ones(1), "shift_x": torch.zeros(1),
              "shift_y": torch.zeros(1)}  # fmt: skip
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 8, 4] = 1.0  # bottom row, centre column: v = 8/9 in [-1, 1] coordinates
    moved = augment._apply(dot, params)
    # Input column u + 0.5 * v: the dot at column 4 shows at output column 4 - 0.5 * 4 = 2.
    assert moved[0, 0, 8].argmax().item() == 2
    blank = torch.zeros(4, 1, 28, 28)
    assert torch.equal(ShapeAugment()(blank), blank)  # uncovered space is blank paper
    torch.manual_seed(3)
    whole = ShapeAugment(flip=0.5)(x)
    torch.manual_seed(3)
    part = ShapeAugment(flip=0.5).forward_shard(x[2:], 2, 5)
    assert torch.allclose(whole[2:], part)
    shape = config_augment(
        TrainConfig(augmentation="shape"), type("E", (), {"input_range": (0, 1)})
    )
    assert isinstance(shape, ShapeAugment) and shape.flip == 0.0 and shape.value_range == (0, 1)
    face = config_augment(TrainConfig(), type("E", (), {"input_range": (-1, 1)}))
    assert type(face) is FaceAugment and face.flip == 0.5
    with pytest.raises(ConfigError, match="augmentation must be one of face, shape"):
        TrainConfig(augmentation="text")


def test_resuming_reads_older_runs_as_face_augmented() -> None:
    assert _as_run({"flip": None})["flip"] == 0.5
    assert _as_run({})["augmentation"] == "face"
    assert _as_run({"augmentation": "shape", "flip": None})["flip"] == 0.0


def test_the_hard_miner_mines_inside_the_contrastive_margin() -> None:
    from siamkit import create_encoder

    trainer = Trainer(create_encoder("conv4"), TrainConfig(miner="hard"))
    assert isinstance(trainer.miner, HardPairMiner) and trainer.loss.margin == 0.7
    assert trainer.miner.neg_margin == 0.7 and trainer.miner.pos_margin == 0.0
    emb = torch.tensor([[0.0], [0.1], [0.6], [0.8]])
    _, _, a2, n = trainer.miner(emb, torch.tensor([0, 0, 1, 2]))
    # Negatives 0.6, 0.5 and 0.2 apart have a loss; 0.8 and 0.7 (at the margin) have none.
    assert sorted(zip(a2.tolist(), n.tolist(), strict=True)) == [(0, 2), (1, 2), (2, 3)]


def _characters(omniglot_root: Path, out: Path) -> Path:
    background = omniglot_root / "omniglot-py" / "images_background"
    for alphabet in ("Latin", "Greek"):
        for character in ("character01", "character02", "character03"):
            target = out / alphabet / character
            target.mkdir(parents=True)
            for image in sorted((background / alphabet / character).iterdir())[:4]:
                shutil.copy(image, target / image.name)
    return out


def test_a_characters_run_trains_turned_classes_and_saves_its_settings(omniglot_root, tmp_path):
    data = _characters(omniglot_root, tmp_path / "chars")
    told: list[str] = []
    config = TrainConfig(epochs=1, batch_size=8, m_per_class=2, num_threads=1)
    options = RecipeOptions(preset="characters", encoder_args={"width": 8}, config=config,
                            val_fraction=0.5)  # fmt: skip
    run = train_recipe(data, tmp_path / "model", options, say=told.append)
    assert run.recipe.name == "characters"
    assert any(line.startswith("recipe: characters (conv4 from random weights, each class also "
                               "turned 90/180/270 degrees as 3 more") for line in told)  # fmt: skip
    saved = json.loads((tmp_path / "model" / "encoder.json").read_text())
    trained = saved["extra"]["training"]["config"]
    assert trained["augmentation"] == "shape" and trained["miner"] == "hard"
    assert saved["config"]["invert"] is True  # from the sample: black ink on white
    history = json.loads((tmp_path / "model" / "history.json").read_text())["history"]
    assert [record["epoch"] for record in history] == [1]
    assert run.result is not None and run.result.metrics is not None  # validated on Greek/Latin
