"""Training end to end on small synthetic people: results, files, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_metric_learning.miners import PairMarginMiner

import siamkit
from conftest import write_face_folder
from siamkit.training import TrainConfig, Trainer, load_checkpoint

SMALL = {"channels": [8, 16], "embedding_dim": 16}


def small_config(**overrides) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 12, "m_per_class": 3, "lr": 3e-3, "warmup_epochs": 1}
    settings.update(overrides)
    return TrainConfig(**settings)


def split(root: Path) -> siamkit.data.ClassSplit:
    return siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["person4", "person5"])


@siamkit.register_encoder("test-user-cnn", overwrite=True)
class UserCNN(siamkit.Encoder):
    """A user's own encoder: nothing but the public contract."""

    def __init__(self, width: int = 8, embedding_dim: int = 12) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.in_channels, self.input_size = 1, (28, 23)
        self.metric = "euclidean"
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, width, 3, padding=1),
            torch.nn.BatchNorm2d(width),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(16 * width, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_user_encoder_trains_end_to_end(synthetic_faces: Path, tmp_path: Path) -> None:
    parts = split(synthetic_faces)
    torch.manual_seed(0)
    encoder = UserCNN(width=6)
    before = encoder.embed(parts.val.dataset.paths[:4]).copy()
    result = Trainer(encoder, small_config(epochs=4)).fit(parts.train, parts.val, tmp_path / "run")
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert 0.0 <= result.best["eer"] <= 1.0 and 0.0 <= result.best["auc"] <= 1.0
    assert result.best == {
        k[4:]: v for k, v in result.history[result.best_epoch - 1].items() if k.startswith("val_")
    }
    # The encoder holds the best epoch's weights, and so does the saved model.
    paths = parts.val.dataset.paths[:8]
    loaded = siamkit.load_encoder(tmp_path / "run")
    assert isinstance(loaded, UserCNN) and loaded.get_config()["width"] == 6
    np.testing.assert_array_equal(loaded.embed(paths), encoder.embed(paths))
    assert not np.allclose(before, encoder.embed(parts.val.dataset.paths[:4]))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["history"]) == 4 and history["best_epoch"] == result.best_epoch
    assert (tmp_path / "run" / "loss_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_generalises_to_held_out_people(synthetic_faces: Path) -> None:
    parts = split(synthetic_faces)
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", **SMALL)
    trainer = Trainer(encoder, small_config(epochs=8))
    untrained = trainer.evaluate(parts.val)["val_auc"]
    result = trainer.fit(parts.train, parts.val)
    assert result.best["auc"] > 0.9
    assert result.best["auc"] >= untrained


def test_seeded_runs_are_identical(synthetic_faces: Path) -> None:
    parts = split(synthetic_faces)
    prints = []
    for _ in range(2):
        torch.manual_seed(1)
        encoder = siamkit.create_encoder("compact", **SMALL)
        Trainer(encoder, small_config(epochs=2, seed=5)).fit(parts.train)
        prints.append(encoder.fingerprint())
    assert prints[0] == prints[1]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch, siamkit
    from siamkit.training import Trainer, TrainConfig

    class KillMidEpoch:
        def on_batch_end(self, trainer, epoch, step, loss):
            if epoch == 3 and step == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(2)
    parts = siamkit.split_by_class(
        siamkit.FaceFolder(sys.argv[1]), val_classes=["person4", "person5"])
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    config = TrainConfig(epochs=4, batch_size=12, m_per_class=3, warmup_epochs=1)
    Trainer(encoder, config, callbacks=[KillMidEpoch()]).fit(parts.train, parts.val, sys.argv[2])
    """
)


def test_resume_after_kill_9_matches_an_unbroken_run(synthetic_faces: Path, tmp_path: Path) -> None:
    script = tmp_path / "train_and_die.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), str(synthetic_faces), str(out)],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2  # epoch 3 was lost, no more
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    parts = split(synthetic_faces)
    config = small_config(epochs=4)
    torch.manual_seed(0)
    resumed_encoder = siamkit.create_encoder("compact", **SMALL)
    resumed = Trainer(resumed_encoder, config).fit(parts.train, parts.val, out, resume=True)
    torch.manual_seed(0)
    straight_encoder = siamkit.create_encoder("compact", **SMALL)
    straight = Trainer(straight_encoder, config).fit(parts.train, parts.val, tmp_path / "straight")

    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_auc"] == pytest.approx(b["val_auc"], abs=1e-6)
    assert resumed.best_epoch == straight.best_epoch
    paths = parts.val.dataset.paths[:6]
    np.testing.assert_allclose(
        resumed_encoder.embed(paths), straight_encoder.embed(paths), rtol=1e-4, atol=1e-5
    )


def test_existing_run_is_not_overwritten(synthetic_faces: Path, tmp_path: Path) -> None:
    parts = split(synthetic_faces)
    encoder = siamkit.create_encoder("compact", **SMALL)
    Trainer(encoder, small_config(epochs=1)).fit(parts.train, None, tmp_path)
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(siamkit.TrainingError, match="resume"):
        Trainer(encoder, small_config(epochs=1)).fit(parts.train, None, tmp_path)
    with pytest.raises(siamkit.TrainingError, match="lr"):
        Trainer(encoder, small_config(epochs=1, lr=0.1)).fit(
            parts.train, None, tmp_path, resume=True
        )
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved


def test_truncated_checkpoint_is_refused(synthetic_faces: Path, tmp_path: Path) -> None:
    parts = split(synthetic_faces)
    encoder = siamkit.create_encoder("compact", **SMALL)
    Trainer(encoder, small_config(epochs=1)).fit(parts.train, None, tmp_path)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(siamkit.ModelFileError, match="checkpoint"):
        Trainer(encoder, small_config(epochs=2)).fit(parts.train, None, tmp_path, resume=True)


def test_geometry_must_agree() -> None:
    cosine_encoder = siamkit.create_encoder("compact", metric="cosine", **SMALL)
    with pytest.raises(siamkit.GeometryError, match="cosine"):
        Trainer(cosine_encoder, loss=siamkit.ContrastiveLoss(distance="euclidean"))
    with pytest.raises(siamkit.GeometryError):
        Trainer(cosine_encoder, miner=siamkit.HardPairMiner(metric="euclidean"))
    trainer = Trainer(cosine_encoder, loss=siamkit.ContrastiveLoss(margin=0.3))
    assert trainer.loss.distance == "cosine" and trainer.loss.margin == 0.3
    assert trainer.miner.metric == "cosine"
    assert Trainer(cosine_encoder).loss.margin == 0.5  # no default_margin: the metric's
    sphere = Trainer(siamkit.create_encoder("compact", **SMALL))
    assert (sphere.loss.distance, sphere.loss.margin) == ("euclidean", 2.0)
    assert Trainer(UserCNN()).loss.distance == "euclidean"


def test_pml_miner_trains(synthetic_faces: Path) -> None:
    parts = split(synthetic_faces)
    encoder = siamkit.create_encoder("compact", **SMALL)
    miner = PairMarginMiner(pos_margin=0.0, neg_margin=1.0)
    result = Trainer(encoder, small_config(epochs=2), miner=miner).fit(parts.train, parts.val)
    assert np.isfinite(result.history[-1]["loss"])


class NaNAfterAWhile(siamkit.Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.embedding_dim, self.input_size = 4, (8, 8)
        self.fc = torch.nn.Linear(64, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls > 2 else out


def test_diverging_training_gives_a_clear_error(synthetic_faces: Path) -> None:
    parts = split(synthetic_faces)
    with pytest.raises(siamkit.TrainingError, match=r"epoch \d+, batch \d+.*learning rate"):
        Trainer(NaNAfterAWhile(), small_config(epochs=3)).fit(parts.train)


def test_bad_training_data(make_image_folder, tmp_path: Path) -> None:
    encoder = siamkit.create_encoder("compact", **SMALL)
    trainer = Trainer(encoder, small_config(epochs=1))
    lonely = make_image_folder({"ann": 3, "bob": 1, "cat": 3})
    with pytest.raises(siamkit.DataError, match="bob"):
        trainer.fit(siamkit.FaceFolder(lonely))
    single = make_image_folder({"ann": 4})
    with pytest.raises(siamkit.DataError, match="two people"):
        trainer.fit(siamkit.FaceFolder(single))
    broken = make_image_folder({"ann": 3, "bob": 3})
    bad_file = broken / "bob" / "broken.png"
    bad_file.write_bytes(b"not really a png")
    with pytest.raises(siamkit.ImageReadError, match=r"broken\.png"):
        trainer.fit(siamkit.FaceFolder(broken))
    good = make_image_folder({"ann": 3, "bob": 3})
    with pytest.raises(siamkit.DataError, match="validation data needs at least two people"):
        trainer.fit(siamkit.FaceFolder(good), siamkit.FaceFolder(single))


def test_mixed_modes_and_sizes_train(make_image_folder) -> None:
    root = make_image_folder({"ann": 3, "bob": 3}, size=(60, 70), mode="RGB")
    write_face_folder(root, {"cat": 3}, size=(30, 40), mode="L")
    encoder = siamkit.create_encoder("compact", **SMALL)
    result = Trainer(encoder, small_config(epochs=1, batch_size=6, m_per_class=2)).fit(
        siamkit.FaceFolder(root)
    )
    assert np.isfinite(result.history[0]["loss"])


def test_config_validation() -> None:
    with pytest.raises(siamkit.ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(siamkit.ConfigError, match="m_per_class"):
        TrainConfig(m_per_class=1)
    with pytest.raises(siamkit.ConfigError, match="batch_size"):
        TrainConfig(batch_size=4, m_per_class=4)
    with pytest.raises(siamkit.ConfigError, match="monitor"):
        TrainConfig(monitor="loss")
