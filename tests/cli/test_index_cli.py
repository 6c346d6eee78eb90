"""``siamkit index build / query / add / remove / info``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import siamkit
from siamkit.cli.main import build_parser, main


@siamkit.register_encoder("test-index-pixels", overwrite=True)
class Pixels(siamkit.Encoder):
    """Pooled, centred pixels: the synthetic people are told apart on raw pixels."""

    def __init__(self, grid: int = 6) -> None:
        super().__init__()
        self.grid = grid
        self.embedding_dim = grid * grid
        self.metric = "cosine"
        self.in_channels, self.input_size = 1, (56, 46)
        self.scale = torch.nn.Parameter(torch.ones(1))  # gives the model weights to save

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, self.grid).flatten(1)
        return (pooled - pooled.mean(dim=1, keepdim=True)) * self.scale


@pytest.fixture
def setup(make_image_folder: Callable[..., Path], tmp_path: Path) -> dict[str, Path]:
    """A model, a gallery of 5 people (6 images each), a held-out image of each, a stranger."""
    gallery = make_image_folder({f"person{i}": 7 for i in range(5)})
    probes = tmp_path / "probes"
    probes.mkdir()
    for i in range(5):
        (gallery / f"person{i}" / "6.png").rename(probes / f"person{i}.png")
    stranger = make_image_folder({"stranger": 3})
    model = Pixels().save(tmp_path / "model")
    return {"gallery": gallery, "probes": probes, "stranger": stranger, "model": model,
            "index": tmp_path / "faces.index"}  # fmt: skip


def build(setup: dict[str, Path], *extra: str) -> int:
    return main([
        "index", "build", "--model", str(setup["model"]), "--gallery", str(setup["gallery"]),
        "--out", str(setup["index"]), "--quiet", *extra,
    ])  # fmt: skip


def test_build_then_query_names_known_people_and_rejects_strangers(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(setup, "--index", "hnsw", "--calibrate-far", "0.001") == 0
    out = capsys.readouterr().out
    assert "indexed 30 images of 5 people" in out and "threshold" in out and "hnsw" in out
    probes = sorted(setup["probes"].iterdir())
    strangers = sorted(setup["stranger"].glob("*/*.png"))
    argv = ["index", "query", "--index", str(setup["index"]), "--quiet"]
    assert main([*argv, *map(str, probes + strangers), "--k", "3", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["image"] for a in answers] == list(map(str, probes + strangers))
    for answer, probe in zip(answers[:5], probes, strict=True):
        assert answer["match"]["label"] == probe.stem
        assert answer["match"]["metadata"]["path"].startswith(str(setup["gallery"]))
        assert len(answer["matches"]) == 3
        assert answer["match"]["distance"] <= answer["threshold"]
    assert [a["match"] for a in answers[5:]] == [None, None, None]
    assert main([*argv, str(probes[2]), str(strangers[0]), "--k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{probes[2]} -> person2 (id person2/")
    assert lines[1].startswith(f"{strangers[0]} -> unknown (nearest ")


def test_query_with_a_threshold_and_without_calibration(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(setup, "--calibrate-far", "0", "--calibrate-fpir", "0") == 0
    out = capsys.readouterr().out
    assert "no 1:1 threshold" in out and "no 1:N threshold" in out
    probe = str(sorted(setup["probes"].iterdir())[0])
    argv = ["index", "query", "--index", str(setup["index"]), probe, "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{probe} -> ?" in out and "1. person0" in out and "no threshold" in out
    assert main([*argv, "--threshold", "2.0", "--model", str(setup["model"])]) == 0
    assert f"{probe} -> person0" in capsys.readouterr().out


def test_add_remove_and_info(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert build(setup) == 0
    index = str(setup["index"])
    strangers = sorted(setup["stranger"].glob("*/*.png"))
    assert main(["index", "add", "--index", index, *map(str, strangers[:2]), "--label", "new",
                 "--quiet"]) == 0  # fmt: skip
    assert "added 2 items" in capsys.readouterr().out
    assert main(["index", "add", "--index", index, "--gallery", str(setup["stranger"]),
                 "--calibrate-far", "0.01", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "added 3 items" in out and "35 images of 7 people" in out
    loaded = siamkit.FaceIndex.load(setup["index"])
    assert loaded.ids(label="new") == [0, 1] and "stranger/0.png" in loaded
    assert main(["index", "remove", "--index", index, "0", "stranger/1.png"]) == 0
    assert "removed 2 items" in capsys.readouterr().out
    assert main(["index", "remove", "--index", index, "--label", "person3"]) == 0
    assert "removed 6 items" in capsys.readouterr().out
    assert main(["index", "info", "--index", index, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 27 and info["people"] == 6 and info["dim"] == 36
    assert info["metric"] == "cosine" and info["index"] == "flat"
    assert info["extra"]["model"] == str(setup["model"].resolve())
    assert info["encoder_fingerprint"] == siamkit.load_encoder(setup["model"]).fingerprint()
    assert main(["index", "info", "--index", index]) == 0
    text = capsys.readouterr().out
    assert "27 images of 6 people" in text and "cosine, 36-d" in text


def test_info_and_query_warn_when_the_gallery_outgrows_its_1n_threshold(
    setup: dict[str, Path], make_image_folder: Callable[..., Path], capsys
) -> None:
    assert build(setup) == 0
    out = capsys.readouterr().out
    assert "identify threshold" in out and "expected FNIR" in out
    index, probe = str(setup["index"]), str(sorted(setup["probes"].iterdir())[0])
    assert main(["index", "info", "--index", index]) == 0
    text = capsys.readouterr().out
    assert "identify:  " in text and "leave-one-person-out" in text and "warning" not in text
    more = make_image_folder({f"new{i}": 7 for i in range(5)})  # 30 + 35 items: past 2x
    assert main(["index", "add", "--index", index, "--gallery", str(more), "--quiet"]) == 0
    assert "1:N threshold" in capsys.readouterr().out  # kept, not silently refitted
    assert main(["index", "info", "--index", index]) == 0
    assert "warning:   the gallery holds 65 items, 2.2x the 30" in capsys.readouterr().out
    assert main(["index", "query", "--index", index, probe, "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the warning stays off the JSON
    assert "siamkit: warning: the gallery holds 65 items" in captured.err
    assert main(["index", "add", "--index", index, "--gallery", str(more), "--upsert",
                 "--calibrate-fpir", "0.01", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["index", "info", "--index", index, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["warnings"] == [] and info["fpir_calibration"]["gallery_size"] == 65


def test_errors_are_one_line_and_name_the_fix(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert build(setup) == 0
    capsys.readouterr()
    index = str(setup["index"])
    probe = str(sorted(setup["probes"].iterdir())[0])
    cases = [
        (["index", "query", "--index", str(tmp_path / "none"), probe], "does not exist"),
        (["index", "query", "--index", index, probe, "--k", "0"], "--k must be positive"),
        (["index", "query", "--index", index, str(tmp_path / "x.png")], "not found"),
        (["index", "add", "--index", index], "either --gallery"),
        (["index", "add", "--index", index, probe], "--label"),
        (["index", "remove", "--index", index, "no-such-id"], "not in the index"),
        (["index", "remove", "--index", index, "--label", "nobody"], "no person"),
    ]
    again = ["index", "add", "--index", index, "--gallery", str(setup["gallery"]), "--quiet"]
    cases.append((again, "upsert"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("siamkit: error:") and message in err, (argv, err)
    other = Pixels(grid=4).save(tmp_path / "other-model")
    assert main(["index", "query", "--index", index, probe, "--model", str(other)]) == 2
    assert "16-d" in capsys.readouterr().err  # the model is not the index's
    records = next(setup["index"].glob("records-*.json"))
    records.write_text(records.read_text()[:-3])
    assert main(["index", "info", "--index", index]) == 2
    assert "truncated" in capsys.readouterr().err


def test_index_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index"]) == 1
    assert "build" in capsys.readouterr().out


def test_every_index_option_is_explained() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices
    actions = commands["index"]._subparsers._group_actions[0].choices
    assert set(actions) == {"build", "query", "add", "remove", "info"}
    for parser in actions.values():
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, f"{parser.prog} {action.option_strings or action.dest}"


def test_an_interrupted_build_saves_as_it_goes_and_resumes(setup, monkeypatch) -> None:
    from siamkit.index import enrolment

    monkeypatch.setattr(enrolment, "FOLDER_CHUNK", 8)
    real, calls = enrolment.embed_items, []

    def killed_at_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C, or a kill the CLI sees, does mid-build
        return real(*args, **kwargs)

    monkeypatch.setattr(enrolment, "embed_items", killed_at_the_third_chunk)
    assert build(setup, "--save-every", "0", "--batch-size", "4") == 130
    saved = siamkit.FaceIndex.load(setup["index"])
    assert len(saved) == 16  # the two chunks stored before the kill
    monkeypatch.setattr(enrolment, "embed_items", real)
    assert build(setup, "--resume") == 0
    resumed = siamkit.FaceIndex.load(setup["index"])
    straight = setup["index"].with_name("straight.index")
    assert main(["index", "build", "--model", str(setup["model"]), "--gallery",
                 str(setup["gallery"]), "--out", str(straight), "--quiet"]) == 0  # fmt: skip
    reference = siamkit.FaceIndex.load(straight)
    assert sorted(resumed.ids()) == sorted(reference.ids()) and len(resumed) == 30
    for item_id in reference.ids():
        assert resumed.get(item_id).embedding.tolist() == reference.get(item_id).embedding.tolist()


def test_build_device_is_checked(setup, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be seen")
    assert build(setup, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert build(setup, "--device", "auto") == 0  # the CPU here
