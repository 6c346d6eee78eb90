"""``siamkit demo`` end to end: download, split, train, evaluate, index, unknown people, report."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit
from siamkit.cli.main import main
from siamkit.demo import run_demo


@pytest.fixture(scope="module")
def att_like_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive with the AT&T layout (s1..s40 x 10 .pgm) of small, learnable faces."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for person in range(1, 41):
            base = rng.uniform(0, 255, (8, 7))
            face = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((46, 56)), dtype=float)
            for image in range(1, 11):
                noisy = np.clip(face + rng.normal(0, 12, face.shape), 0, 255).astype(np.uint8)
                data = io.BytesIO()
                Image.fromarray(noisy, "L").save(data, format="PPM")  # greyscale PPM is PGM
                zf.writestr(f"att_faces/s{person}/{image}.pgm", data.getvalue())
    path = tmp_path_factory.mktemp("archive") / "att_faces.zip"
    path.write_bytes(buffer.getvalue())
    return path


def test_demo_downloads_trains_and_rejects_strangers(
    att_like_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--url", att_like_zip.as_uri(), "--epochs", "2", "--quiet",
            "--preset", "scratch"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "answered 'unknown'" in printed and "report:" in printed
    assert printed.startswith("recipe: scratch (compact from random weights): --preset scratch")
    assert "alignment" not in printed  # no aligner, nothing to count
    assert len(list((out / "data" / "att_faces").glob("s*/*.pgm"))) == 400

    summary = json.loads((out / "demo.json").read_text())
    train, val = set(summary["train_people"]), set(summary["val_people"])
    gallery, unknown = set(summary["gallery_people"]), set(summary["unknown_people"])
    assert (len(train), len(val), len(gallery), len(unknown)) == (26, 4, 6, 4)
    assert not (train | val) & (gallery | unknown) and not gallery & unknown
    assert summary["known_probes"] == 6 * 5 and summary["unknown_probes"] == 4 * 10
    for rate in ("known_identified", "unknown_rejected"):
        assert 0.0 <= summary[rate] <= 1.0

    encoder = siamkit.load_encoder(out / "model")
    index = siamkit.FaceIndex.load(out / "index", encoder=encoder)
    assert len(index) == 30 and set(index.labels()) == gallery
    assert index.threshold == pytest.approx(summary["threshold"])
    # identify uses the 1:N threshold, calibrated for FPIR 0.01 by leaving people out.
    fit = summary["fpir_calibration"]
    assert (fit["target_fpir"], fit["source"], fit["gallery_size"]) == (
        0.01, "leave-one-person-out", 30)  # fmt: skip
    assert index.identify_threshold == pytest.approx(summary["identify_threshold"])
    assert index.fpir_calibration.to_dict() == fit
    assert "FPIR 0.01" in printed
    # The recorded rejection rate is what the saved index answers for the strangers.
    strangers = sorted((out / "data" / "att_faces").glob("s*/*.pgm"))
    strangers = [p for p in strangers if p.parent.name in unknown]
    answers = index.identify([str(p) for p in strangers])
    assert np.mean([a is None for a in answers]) == pytest.approx(summary["unknown_rejected"])

    assert (summary["recipe"], summary["fine_tuning"], summary["training_alignment"]) == (
        "scratch", None, None)  # fmt: skip
    html = (out / "report" / "report.html").read_text()
    assert "Gallery search with a FaceIndex" in html and "Training" in html
    assert "Training recipe" in html and "Face alignment" not in html
    assert "target FPIR" in html and "expected FNIR" in html

    # A second run reuses the download and the finished training.
    assert main(argv) == 0
    assert "trained on 26 people" in capsys.readouterr().out


def test_demo_needs_enough_people(make_image_folder, tmp_path: Path, capsys) -> None:
    few = make_image_folder({"a": 3, "b": 3, "c": 3})
    assert main(["demo", "--data", str(few), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "at least 6 people" in capsys.readouterr().err


def test_the_demo_follows_the_train_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    from siamkit.training import recipes

    monkeypatch.setattr(recipes, "face_extra_missing", lambda: "dlib is not installed")
    with pytest.raises(siamkit.MissingExtraError, match="dlib is not installed"):
        run_demo("unused", preset="face")
    with pytest.raises(siamkit.ConfigError, match="unknown preset"):
        run_demo("unused", preset="fast")


@pytest.mark.slow
def test_demo_on_orl_with_the_default_recipe(orl_root: Path, tmp_path: Path) -> None:
    from siamkit.training.recipes import face_extra_missing

    result = run_demo(tmp_path / "demo", data=orl_root)
    assert result.evaluation.verification.auc > 0.97
    if face_extra_missing() is not None:  # the from-scratch recipe
        assert result.recipe == "scratch" and result.fine_tuning is None
        assert result.unknown_rejected >= 0.7 and result.known_identified >= 0.7
        return
    # The face recipe, as `siamkit train` runs it: aligned, pretrained, strength chosen on
    # the 4 validation people (measured: 100% of 40 strangers rejected, 30 of 30 known
    # identified at the FPIR 0.01 threshold; 40 searches cannot show FPIR 0.01 itself).
    assert result.recipe == "face" and result.fine_tuning is not None
    assert [r.candidate.name for r in result.fine_tuning.results] == ["frozen", "head", "stage5"]
    assert result.training_alignment.total == 300 and result.evaluation.alignment.total == 100
    assert result.evaluation.verification.auc > 0.995
    assert result.unknown_rejected >= 0.95 and result.known_identified >= 0.95
    loaded = siamkit.load_encoder(tmp_path / "demo" / "model")
    assert type(loaded.aligner).__name__ == "YuNetAligner" and loaded.flip_average
