"""``--preset auto`` looks at the data: characters by the characters recipe, faces by the face
recipe, and scratch without flips on characters (on small samples of the real Omniglot and AT&T
images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from _markers import needs_faces
from siamkit.training import TrainConfig
from siamkit.training.face_share import FaceShare, face_share, training_paths
from siamkit.training.recipes import (
    RecipeOptions,
    follow_data,
    resolve_preset,
    train_recipe,
)


def _characters(omniglot_root: Path, out: Path) -> Path:
    """Three characters of two alphabets, four drawings each: DIR/<alphabet>/<character>."""
    background = omniglot_root / "omniglot-py" / "images_background"
    for alphabet in ("Latin", "Greek"):
        for character in ("character01", "character02", "character03"):
            source = background / alphabet / character
            target = out / alphabet / character
            target.mkdir(parents=True)
            for image in sorted(source.iterdir())[:4]:
                shutil.copy(image, target / image.name)
    return out


def _faces(orl_root: Path, out: Path) -> Path:
    for person in ("s1", "s2", "s3", "s4"):
        (out / person).mkdir(parents=True)
        for image in sorted((orl_root / person).iterdir())[:3]:
            shutil.copy(image, out / person / image.name)
    return out


@needs_faces
def test_characters_are_not_faces_and_faces_are(omniglot_root, orl_root, tmp_path) -> None:
    chars = face_share(training_paths(_characters(omniglot_root, tmp_path / "c")))
    faces = face_share(training_paths(_faces(orl_root, tmp_path / "f")))
    assert chars.looked == 24 and chars.found == 0 and not chars.most
    assert faces.looked == 12 and faces.found == 12 and faces.most
    assert FaceShare(12, 24).most is False and FaceShare(13, 24).most is True  # more than half


@needs_faces
def test_auto_picks_the_characters_recipe_for_characters_and_says_why(omniglot_root, tmp_path):
    data = _characters(omniglot_root, tmp_path / "chars")
    told: list[str] = []
    recipe, chosen = follow_data(resolve_preset("auto"), data, RecipeOptions(), told.append)
    assert recipe.name == "characters"
    assert recipe.why == (
        "a face in 0 of 24 sampled training images: not faces; line drawings in 24 of 24 "
        "sampled training images: line drawings, so the characters recipe (--preset scratch "
        "trains another)"
    )
    # Omniglot is black ink on white paper: the Conv-4 turns it around (strokes 1 on 0).
    assert chosen.encoder_args == {"invert": True} and chosen.encoder_name(recipe.name) == "conv4"
    assert told == [
        "images: dark strokes on light paper (line drawings in 24 of 24 sampled training images;"
        " --encoder-arg invert=false says otherwise)"
    ]
    assert chosen.config.flip is None  # the shape augmentation flips nothing unless asked


@needs_faces
def test_scratch_on_characters_turns_flips_off_and_keeps_what_is_set(omniglot_root, tmp_path):
    data = _characters(omniglot_root, tmp_path / "chars")
    told: list[str] = []
    scratch = RecipeOptions(preset="scratch")
    recipe, chosen = follow_data(resolve_preset("scratch"), data, scratch, told.append)
    shape = (
        "input: 1 channel at 51x51 (colour in 0 of 24 sampled training images; median aspect "
        "1.00); --encoder-arg in_channels=... / input_size=... say otherwise"
    )
    assert (
        recipe.name == "scratch"
        and chosen.config.flip == 0.0
        and told
        == [shape, "augmentation: no horizontal flips (a face in 0 of 24 sampled training images)"]
    )
    # Omniglot's 105x105 greyscale drawings: one channel, square
    assert chosen.encoder_args == {"in_channels": 1, "input_size": [51, 51]}
    # A flip the user sets is kept; --preset face is not second-guessed.
    mine = RecipeOptions(preset="scratch", config=TrainConfig(flip=0.25))
    assert follow_data(resolve_preset("scratch"), data, mine, told.append)[1].config.flip == 0.25
    still = RecipeOptions(preset="scratch", config=TrainConfig(augment=False))
    told.clear()
    assert follow_data(resolve_preset("scratch"), data, still, told.append)[1].config.flip is None
    assert told == [shape]  # no augmentation: no flip line
    forced = RecipeOptions(preset="face")
    assert follow_data(resolve_preset("face"), data, forced, told.append)[0].name == "face"
    # An encoder the user names is trained from scratch, whatever the images.
    named = RecipeOptions(encoder="compact")
    assert follow_data(resolve_preset("auto", "compact"), data, named, print)[0].name == "scratch"


@needs_faces
def test_auto_keeps_the_face_recipe_for_the_att_faces(orl_root, tmp_path) -> None:
    data = _faces(orl_root, tmp_path / "faces")
    recipe, chosen = follow_data(resolve_preset("auto"), data, RecipeOptions(), print)
    assert recipe.name == "face" and recipe.why.startswith("a face in 12 of 12 sampled")
    assert chosen.config.flip is None  # the face recipe's candidates keep their own settings
    scratch = RecipeOptions(preset="scratch")
    _, options = follow_data(resolve_preset("scratch"), data, scratch, print)
    assert options.config.flip == 0.5  # faces: flips on


@needs_faces
def test_a_character_run_trains_grouped_without_flips_and_saves_it(omniglot_root, tmp_path):
    data = _characters(omniglot_root, tmp_path / "chars")
    told: list[str] = []
    config = TrainConfig(epochs=1, batch_size=8, m_per_class=2, warmup_epochs=0, whiten=False)
    options = RecipeOptions(preset="scratch", encoder_args={"channels": [4, 8]}, config=config,
                            val_fraction=0.5)  # fmt: skip
    run = train_recipe(data, tmp_path / "model", options, say=told.append)
    assert run.recipe.name == "scratch"
    assert any(line.startswith("layout: 6 classes in 2 groups") for line in told)
    split = json.loads((tmp_path / "model" / "split.json").read_text())
    assert split["layout"] == "grouped"
    held = {name.split("/")[0] for name in split["val_classes"]}
    assert len(held) == 1 and not held & {n.split("/")[0] for n in split["train_classes"]}
    saved = json.loads((tmp_path / "model" / "encoder.json").read_text())
    assert saved["extra"]["training"]["config"]["flip"] == 0.0  # saved with the model


def test_scratch_input_follows_colour_and_shape_unless_set(orl_root, tmp_path) -> None:
    from PIL import Image

    faces = _faces(orl_root, tmp_path / "faces")
    scratch = RecipeOptions(preset="scratch", config=TrainConfig(augment=False))
    _, chosen = follow_data(resolve_preset("scratch"), faces, scratch, print)
    # The AT&T faces (92x112 greyscale) ask for the compact encoder's own default.
    assert chosen.encoder_args == {"in_channels": 1, "input_size": [56, 46]}
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c in range(3):
        (photos / f"c{c}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (100, 160, 3), dtype=np.uint8)  # wide colour photos
            Image.fromarray(pixels).save(photos / f"c{c}" / f"{i}.png")
    _, chosen = follow_data(resolve_preset("scratch"), photos, scratch, print)
    assert chosen.encoder_args == {"in_channels": 3, "input_size": [40, 64]}  # 2,560 pixels
    mine = RecipeOptions(preset="scratch", encoder_args={"in_channels": 1},
                         config=TrainConfig(augment=False))  # fmt: skip
    assert follow_data(resolve_preset("scratch"), photos, mine, print)[1].encoder_args == {
        "in_channels": 1
    }  # what the user sets is kept, and nothing else is guessed beside it
