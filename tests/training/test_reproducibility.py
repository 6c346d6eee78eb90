"""Seeded training repeats bit for bit on the same machine and thread count.

The runs train siamkit's default encoder (``compact``) on the AT&T/ORL faces
(Olivetti Research Laboratory, Cambridge), through the path ``siamkit train``
takes: ``Trainer.fit`` with validation people and an output directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import siamkit
from siamkit.encoders.base import ENCODER_FILE
from siamkit.training import TrainConfig, Trainer, load_checkpoint

EPOCHS = 3


def orl_split(root: Path) -> siamkit.data.ClassSplit:
    # As `siamkit train` splits: a seeded quarter of the people held out.
    return siamkit.split_by_class(siamkit.FaceFolder(root, min_images_per_class=2), val=0.25)


def train_default(parts: Any, out: Path, **settings: Any) -> siamkit.training.TrainResult:
    torch.manual_seed(0)  # the encoder's initial weights, as the CLI seeds them
    encoder = siamkit.create_encoder("compact")
    config = TrainConfig(epochs=EPOCHS, seed=0, **settings)
    return Trainer(encoder, config).fit(parts.train, parts.val, out)


def saved_weights(out: Path) -> bytes:
    manifest = json.loads((out / ENCODER_FILE).read_text())
    return (out / manifest["weights"]).read_bytes()


def without_timings(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_seeded_default_encoder_runs_are_bitwise_equal(orl_root: Path, tmp_path: Path) -> None:
    parts = orl_split(orl_root)
    first = train_default(parts, tmp_path / "first")
    second = train_default(parts, tmp_path / "second")

    assert without_timings(first.history) == without_timings(second.history)
    assert first.best == second.best and first.best_epoch == second.best_epoch
    assert saved_weights(tmp_path / "first") == saved_weights(tmp_path / "second")
    a = load_checkpoint(tmp_path / "first" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "second" / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    # The validation metrics moved between epochs: the runs did train.
    assert len({record["val_auc"] for record in first.history}) > 1


class _Interrupt(Exception):
    pass


class _StopAt:
    """Raises in the middle of an epoch, as a crash would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, trainer: Trainer, epoch: int, step: int, loss: float) -> None:
        if epoch == self.epoch:
            raise _Interrupt


def test_resumed_default_encoder_run_is_bitwise_equal(orl_root: Path, tmp_path: Path) -> None:
    parts = orl_split(orl_root)
    config = TrainConfig(epochs=EPOCHS, seed=0)
    torch.manual_seed(0)
    broken = Trainer(siamkit.create_encoder("compact"), config, callbacks=[_StopAt(EPOCHS)])
    with pytest.raises(_Interrupt):
        broken.fit(parts.train, parts.val, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == EPOCHS - 1

    torch.manual_seed(123)  # the resumed weights come from the checkpoint, not from here
    resumed = Trainer(siamkit.create_encoder("compact"), config).fit(
        parts.train, parts.val, tmp_path / "resumed", resume=True
    )
    straight = train_default(parts, tmp_path / "straight")
    assert without_timings(resumed.history) == without_timings(straight.history)
    assert saved_weights(tmp_path / "resumed") == saved_weights(tmp_path / "straight")


class _ThreadProbe:
    def __init__(self) -> None:
        self.seen: set[tuple[int, bool]] = set()

    def on_batch_end(self, trainer: Trainer, epoch: int, step: int, loss: float) -> None:
        self.seen.add((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))


def test_thread_count_is_applied_recorded_and_restored(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    parts = siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val_classes=["person5"])
    torch.set_num_threads(2)
    probe = _ThreadProbe()
    config = TrainConfig(epochs=2, batch_size=12, m_per_class=3, warmup_epochs=1, num_threads=1)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    try:
        result = Trainer(encoder, config, callbacks=[probe]).fit(parts.train, None, tmp_path)
        assert probe.seen == {(1, True)}
        assert torch.get_num_threads() == 2
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(2)
    assert [record["threads"] for record in result.history] == [1, 1]
    runtime = {"num_threads": 1, "deterministic": True, "torch_version": str(torch.__version__)}
    assert json.loads((tmp_path / "history.json").read_text())["runtime"] == runtime
    assert load_checkpoint(tmp_path / "checkpoint.pt")["runtime"] == runtime
    extra = json.loads((tmp_path / ENCODER_FILE).read_text())["extra"]
    assert extra["training"]["runtime"] == runtime


def test_default_thread_count_is_fixed_and_validated() -> None:
    from siamkit.training.runtime import default_num_threads, reproducible

    assert TrainConfig().num_threads is None and TrainConfig().deterministic is True
    assert 1 <= default_num_threads() <= 4
    with reproducible() as runtime:
        assert runtime["num_threads"] == default_num_threads() == torch.get_num_threads()
    for bad in (0, -2, 1.5, "4", True):
        with pytest.raises(siamkit.ConfigError, match="num_threads"):
            TrainConfig(num_threads=bad)


def test_reproducible_restores_state_after_an_error() -> None:
    from siamkit.training.runtime import reproducible

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with pytest.raises(ZeroDivisionError), reproducible(num_threads=1):
        assert torch.are_deterministic_algorithms_enabled()
        _ = 1 / 0
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
