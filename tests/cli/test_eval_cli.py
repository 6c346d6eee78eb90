"""``siamkit eval``, the evaluation runner and the HTML report, end to end on synthetic people."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from siamkit.cli.main import main
from siamkit.evaluation import evaluate_encoder, read_pairs, write_report
from siamkit.evaluation.verification import all_pairs_distances, roc_auc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_faces: Path) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    from siamkit.training import TrainConfig, Trainer

    parts = siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val=2, seed=0)
    config = TrainConfig(epochs=2, batch_size=12, m_per_class=3, warmup_epochs=1)
    Trainer(encoder, config).fit(parts.train, parts.val, out)
    return out


def test_eval_cli_writes_json_pictures_and_report(
    model_dir: Path, synthetic_faces: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model_dir), "--data", str(synthetic_faces), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    for needle in ("ROC AUC", "EER", "TAR @ FAR 0.01", "FNIR @ FPIR 0.01", "rank-1", "report:"):
        assert needle in printed
    data = json.loads((out / "evaluation.json").read_text())
    # The AUC agrees with one computed independently from the embeddings.
    encoder = siamkit.load_encoder(model_dir)
    folder = siamkit.FaceFolder(synthetic_faces)
    d, same = all_pairs_distances(encoder.embed(folder.paths), folder.targets, encoder.metric)
    assert data["verification"]["auc"] == pytest.approx(roc_auc(d, same))
    assert data["num_pairs"] == 36 * 35 // 2 and data["num_people"] == 6
    assert data["threshold_source"].startswith("fitted on the model's validation people")
    search = data["open_set_search"]  # 6 people: 2 kept out, as the demo splits them
    assert (search["enrolled_people"], search["unknown_people"]) == (4, 2)
    assert [f["target_fpir"] for f in search["fnir_at_fpir"]] == [0.1, 0.01, 0.001]
    assert data["figures"]["det"] == "det.png" and search["det"]["fnir"][0] == 1.0
    for name in data["figures"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    sections = ["Overview", "Verification (1:1)", "TAR at fixed FAR", "Identification (1:N)"]
    sections += ["Open set", "Open-set search: FNIR at fixed FPIR", "DET curve", "Pictures"]
    sections += ["Training", "Olivetti Research Laboratory"]
    for section in sections:
        assert section in html, section
    # every picture is embedded, so the file stands alone
    assert len(re.findall(r'src="data:image/png;base64,', html)) == len(data["figures"]) + 1
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verification"] == data["verification"]


def test_pairs_file(model_dir: Path, synthetic_faces: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "image_a,image_b,same\n"
        "person0/0.png,person0/1.png,1\n"
        "person1/0.png,person1/2.png,true\n"
        "# a comment\n"
        "person0/0.png,person1/0.png,0\n"
        "person2/3.png,person3/3.png,no\n"
    )
    firsts, seconds, same = read_pairs(pairs, synthetic_faces)
    assert same.tolist() == [True, True, False, False]
    encoder = siamkit.load_encoder(model_dir)
    result = evaluate_encoder(encoder, synthetic_faces, pairs=pairs)
    assert result.num_pairs == 4
    a, b = encoder.embed(firsts), encoder.embed(seconds)
    d = siamkit.geometry.paired_distances(a, b, encoder.metric)
    assert result.verification.auc == pytest.approx(roc_auc(d, same))


def test_bad_inputs_fail_cleanly(
    model_dir: Path, synthetic_faces: Path, make_image_folder, tmp_path: Path, capsys
) -> None:
    def run(*argv: str) -> str:
        assert main(["eval", *argv, "--quiet", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("siamkit: error:") and "Traceback" not in err
        return err

    assert "not a siamkit model directory" in run(
        "--model", str(tmp_path), "--data", str(synthetic_faces)
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no sub-folders" in run("--model", str(model_dir), "--data", str(empty))
    pairs = tmp_path / "bad_pairs.csv"
    pairs.write_text("person0/0.png,ghost/9.png,1\n")
    err = run("--model", str(model_dir), "--data", str(synthetic_faces), "--pairs", str(pairs))
    assert "ghost/9.png" in err
    lonely = make_image_folder({"only": 3})
    assert "single person" in run("--model", str(model_dir), "--data", str(lonely))


def test_report_without_training_curves(
    model_dir: Path, synthetic_faces: Path, tmp_path: Path
) -> None:
    encoder = siamkit.load_encoder(model_dir)
    result = evaluate_encoder(encoder, synthetic_faces, out_dir=tmp_path, seed=1)
    assert result.threshold_source.startswith("EER threshold")
    html = write_report(
        result, tmp_path, sections=[siamkit.evaluation.Section("Extra", "<p>x</p>")]
    )
    text = html.read_text()
    assert "<h2>Extra</h2><p>x</p>" in text and "<h2>Training</h2>" not in text
    assert np.isclose(result.verification.eer_threshold, result.threshold)
