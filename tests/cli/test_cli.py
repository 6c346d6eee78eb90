"""The ``siamkit`` command line, in-process and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import siamkit
from siamkit.cli.main import build_parser, main

TRAIN_FAST = [
    "--epochs", "2", "--batch-size", "12", "--m-per-class", "3", "--quiet",
    "--encoder-arg", "channels=[8, 16]", "--encoder-arg", "embedding_dim=16",
]  # fmt: skip


def test_version_from_module_and_script() -> None:
    for command in ([sys.executable, "-m", "siamkit", "--version"], ["siamkit", "--version"]):
        bin_dir = Path(sys.executable).parent
        if command[0] == "siamkit":
            command[0] = str(bin_dir / "siamkit")
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"siamkit {siamkit.__version__}"


def test_train_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    train = next(
        a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train"
    )[1]
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
            assert action.option_strings[-1] in text


def test_train_writes_a_loadable_model(synthetic_faces: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), *TRAIN_FAST]
    assert main([*argv, "--val-classes", "person0", "person3"]) == 0
    printed = capsys.readouterr().out
    assert "best epoch" in printed and "held-out AUC" in printed
    split = json.loads((out / "split.json").read_text())
    assert split["val_classes"] == ["person0", "person3"]
    assert sorted(split["train_classes"]) == ["person1", "person2", "person4", "person5"]
    encoder = siamkit.load_encoder(out)
    assert encoder.embedding_dim == 16
    emb = encoder.embed(sorted((synthetic_faces / "person0").iterdir())[:3])
    assert emb.shape == (3, 16) and np.isfinite(emb).all()
    assert (out / "loss_plot.png").stat().st_size > 0
    history = json.loads((out / "history.json").read_text())["history"]
    assert len(history) == 2 and "val_auc" in history[0]

    # Same command again: refused, nothing lost; with --resume: nothing left to do.
    before = (out / "checkpoint.pt").read_bytes()
    assert main([*argv, "--val-classes", "person0", "person3"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main([*argv, "--val-classes", "person0", "person3", "--resume"]) == 0
    assert main([*argv, "--val-classes", "person1", "person3", "--resume"]) == 2
    assert "held out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--encoder", "nope"], "no encoder named 'nope'"),
        (["--miner", "nope"], "no miner named 'nope'"),
        (["--val-classes", "stranger"], "unknown val classes: stranger"),
        (["--encoder-arg", "oops"], "KEY=VALUE"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_train_bad_options_fail_cleanly(
    synthetic_faces: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "m"), *TRAIN_FAST]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siamkit: error:") and message in err
    assert "Traceback" not in err


def test_train_on_missing_or_empty_folder(tmp_path: Path) -> None:
    for data in (tmp_path / "missing", tmp_path):
        proc = subprocess.run(
            [sys.executable, "-m", "siamkit", "train", "--data", str(data), "--out",
             str(tmp_path / "out"), "--quiet"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert str(data) in proc.stderr


def test_list_shows_builtins(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "compact" in out and "tutorial" in out and "batch-hard" in out
    assert "dlib-face" in out and "aligners: dlib, none" in out
    assert "losses:   contrastive, pml" in out


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 1
    assert "train" in capsys.readouterr().out
