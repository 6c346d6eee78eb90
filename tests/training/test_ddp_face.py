"""The face preset data-parallel: 2 gloo processes on the CPU through ``--nproc-per-node``.

* every candidate trains on both processes together, the held-out choice is
  rank 0's, and every candidate's held-out result equals a single process's;
* a face-preset run interrupted in one process resumes under 2 processes and
  ends as the unbroken run;
* only rank 0 writes the kept model.

The data are synthetic patterns, not faces, behind ``--aligner none``. The face
recipe's pretrained model separates them well and no fine-tuning beats it (the
rule keeps it); at lr 1e-3 the trained candidates' held-out AUC moves well away
from the frozen model's (0.988 and 0.963 against 0.995), so equal results
under one and two processes show that they trained alike.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import siamkit
from _markers import needs_faces
from siamkit.cli.main import main
from siamkit.training import CandidateResult, FineTuneSelection, Trainer, read_fine_tuning
from siamkit.training.fine_tuning import FROZEN, FineTuneOutcome, save_face_run
from siamkit.training.recipes import FACE_ENCODER

# Measured: held-out EER frozen 5.56%, head 5.56%, stage5 11.11% (one genuine pair
# is 3.33%); AUC 0.9954, 0.9880 and 0.9630.
ARGS = [
    "--epochs", "2", "--lr", "1e-3", "--batch-size", "12", "--m-per-class", "3",
    "--val-classes", "person1", "person2", "--aligner", "none", "--threads", "1", "--quiet",
    # The synthetic "faces" are patterns no face detector finds: auto would train them from
    # scratch (tests/training/test_recipe_follows_data.py), so the face recipe is asked for.
    "--preset", "face",
]  # fmt: skip
# Adam's steps carry float rounding of the 2-process gradients into the weights
# (about 4e-6 here); the embeddings differ by under 1e-6 (9e-7 seen).
EMBEDDING_ATOL = 2e-6


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *ARGS]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(name, None)
    return env


def _two_processes(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "siamkit", *args, "--nproc-per-node", "2"]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


def _history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


def _assert_same_face_run(got: Path, want: Path, data: Path) -> None:
    a, b = read_fine_tuning(got), read_fine_tuning(want)
    assert a is not None and b is not None
    assert a.kept == b.kept == "frozen"
    for x, y in zip(a.results, b.results, strict=True):
        assert x.candidate == y.candidate and x.best_epoch == y.best_epoch
        assert x.auc == pytest.approx(y.auc, abs=1e-6)
        assert x.eer == pytest.approx(y.eer, abs=1e-6)
    # The candidates did train: their held-out AUC is not the frozen model's.
    frozen, *trained = a.results
    assert all(abs(t.auc - frozen.auc) > 1e-3 for t in trained)
    assert not (got / "candidates").exists()
    paths = sorted(glob.glob(f"{data}/*/*.png"))
    embedded = [siamkit.load_encoder(p).embed(paths) for p in (got, want)]
    np.testing.assert_allclose(embedded[0], embedded[1], rtol=0, atol=EMBEDDING_ATOL)


@pytest.fixture(scope="module")
def one_process(synthetic_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_face") / "one"
    assert main(_train_args(synthetic_faces, out)) == 0
    return out


@needs_faces
def test_the_face_preset_on_two_processes_keeps_what_one_keeps(
    synthetic_faces: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    launched = _two_processes(_train_args(synthetic_faces, out))
    assert launched.returncode == 0, launched.stderr[-3000:]
    printed = launched.stdout
    assert f"recipe: face (pretrained {FACE_ENCODER} " in printed
    assert printed.count("model written") == 1 and "x 2 processes" in printed
    assert printed.count("kept frozen: ") == 1  # rank 0 alone speaks
    _assert_same_face_run(out, one_process, synthetic_faces)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@needs_faces
def test_an_interrupted_face_run_resumes_under_two_processes(
    synthetic_faces: Path, one_process: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "resumed"
    original = Trainer._epoch

    def stop_in_stage5(self, run, epoch):
        record = original(self, run, epoch)
        if self.encoder.trainable_from == "stage5":
            raise KeyboardInterrupt
        return record

    monkeypatch.setattr(Trainer, "_epoch", stop_in_stage5)
    assert main(_train_args(synthetic_faces, out)) == 130
    monkeypatch.undo()
    done = {p.name: _history(p)["history"] for p in (out / "candidates").iterdir()}
    assert {name: len(epochs) for name, epochs in done.items()} == {"head": 2, "stage5": 1}
    launched = _two_processes([*_train_args(synthetic_faces, out), "--resume"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    # stage5's first epoch came from the checkpoint, its second from 2 processes,
    # and its held-out result is the unbroken run's.
    _assert_same_face_run(out, one_process, synthetic_faces)


def test_only_rank_0_writes_the_kept_model(tmp_path: Path) -> None:
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    results = (CandidateResult(FROZEN, auc=0.99, eer=0.02),)
    selection = FineTuneSelection("frozen", "only one", results, 10, 1.0)
    for rank in (1, 0):
        out = tmp_path / f"rank{rank}"
        (out / "candidates" / "head").mkdir(parents=True)
        save_face_run(FineTuneOutcome(encoder, selection, rank=rank, world_size=2), out)
        written = {p.name for p in out.iterdir()}
        if rank:
            assert written == {"candidates"}
        else:
            assert {"encoder.json", "history.json"} <= written and "candidates" not in written
    assert read_fine_tuning(tmp_path / "rank0") == selection
    assert read_fine_tuning(tmp_path / "rank1") is None
