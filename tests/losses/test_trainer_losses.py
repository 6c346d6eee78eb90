"""The Trainer on the loss contract: PML losses end to end, ArcFace weights trained,
checkpointed and resumed exactly, nothing the user passed is modified; the typed
training record and its reader."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses

import siamkit
from siamkit.exceptions import ConfigError, ModelFileError
from siamkit.losses import ContrastiveLoss, PMLLoss
from siamkit.miners import RandomPairMiner
from siamkit.training import (
    EpochRecord,
    TrainConfig,
    Trainer,
    TrainingRecord,
    ValidationMetrics,
    load_checkpoint,
    read_training_record,
)

SMALL = {"channels": [8, 16], "embedding_dim": 16, "metric": "cosine"}


def _config(**overrides) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 12, "m_per_class": 3, "warmup_epochs": 1}
    return TrainConfig(**{**settings, **overrides})


def _split(root: Path) -> siamkit.data.ClassSplit:
    return siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["person4", "person5"])


def _encoder() -> siamkit.Encoder:
    torch.manual_seed(0)
    return siamkit.create_encoder("compact", **SMALL)


def test_a_pml_loss_trains_end_to_end(synthetic_faces: Path, tmp_path: Path) -> None:
    parts = _split(synthetic_faces)
    given = losses.MultiSimilarityLoss()
    trainer = Trainer(_encoder(), _config(), loss=given)
    assert isinstance(trainer.loss, PMLLoss) and trainer.loss.loss is given
    untrained = trainer.evaluate(parts.val)["val_auc"]
    result = trainer.fit(parts.train, parts.val, tmp_path / "ms")
    assert result.history[-1].loss < result.history[0].loss
    assert result.metrics is not None and result.metrics.auc >= untrained
    record = read_training_record(tmp_path / "ms")
    assert record is not None and "MultiSimilarityLoss" in (record.loss or "")
    assert record.margin is None  # MultiSimilarity has no single margin: read generically
    assert record.threshold == pytest.approx(result.metrics.threshold)


def _arcface() -> losses.ArcFaceLoss:
    torch.manual_seed(5)
    return losses.ArcFaceLoss(num_classes=6, embedding_size=16)


class _StopAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, record) -> None:
        if record.epoch == self.epoch:
            raise KeyboardInterrupt


def test_arcface_weights_train_checkpoint_and_resume_exactly(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    parts = _split(synthetic_faces)
    given = _arcface()
    before = given.W.detach().clone()
    straight = Trainer(_encoder(), _config(), loss=given)
    straight.fit(parts.train, parts.val, tmp_path / "straight")
    torch.testing.assert_close(given.W, before, rtol=0, atol=0)  # the user's loss is untouched
    trained = straight.loss.loss.W.detach()
    assert (trained - before).abs().max() > 1e-4  # the class weights learned
    saved = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    torch.testing.assert_close(saved["loss"]["loss.W"], trained, rtol=0, atol=0)

    broken = Trainer(_encoder(), _config(), loss=_arcface(), callbacks=[_StopAfter(2)])
    with pytest.raises(KeyboardInterrupt):
        broken.fit(parts.train, parts.val, tmp_path / "resumed")
    resumed = Trainer(_encoder(), _config(), loss=_arcface())
    resumed.fit(parts.train, parts.val, tmp_path / "resumed", resume=True)
    torch.testing.assert_close(resumed.loss.loss.W, trained, rtol=0, atol=0)
    for key, value in straight.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[key], value, rtol=0, atol=0)


def test_the_trainer_binds_copies_and_never_mutates(synthetic_faces: Path) -> None:
    loss, miner = ContrastiveLoss(margin=0.7), RandomPairMiner(seed=3)
    snapshot = (copy.deepcopy(loss.__dict__["distance"]), miner.metric)
    trainer = Trainer(_encoder(), _config(), loss=loss, miner=miner)
    assert trainer.loss is not loss and trainer.loss.distance == "cosine"
    assert trainer.loss.margin == 0.7 and trainer.miner.metric == "cosine"
    assert (loss.distance, miner.metric) == snapshot == (None, None)
    with pytest.raises(ConfigError, match="PairLoss"):
        Trainer(_encoder(), _config(), loss=torch.nn.MSELoss())


def test_the_trainer_sets_the_miner_epoch(synthetic_faces: Path) -> None:
    seen: list[int] = []

    class Recording(RandomPairMiner):
        def set_epoch(self, epoch: int) -> None:
            seen.append(epoch)
            super().set_epoch(epoch)

    parts = _split(synthetic_faces)
    Trainer(_encoder(), _config(epochs=2), miner=Recording(seed=1)).fit(parts.train)
    assert seen == [0, 1]


def test_records_round_trip_and_old_models_still_read(tmp_path: Path) -> None:
    metrics = ValidationMetrics(auc=0.9, eer=0.1, threshold=0.4, rank1=0.8)
    epoch = EpochRecord(
        epoch=2, loss=0.3, lr=1e-3, seconds=1.0, threads=2, world_size=2, val=metrics
    )
    assert EpochRecord.from_dict(json.loads(json.dumps(epoch.to_dict()))) == epoch
    assert epoch["val_auc"] == 0.9 and dict(epoch)["world_size"] == 2
    # What siamkit wrote before the records were typed (no loss, no world size).
    old = {
        "config": {"epochs": 3}, "whitened": True, "epoch": 3, "margin": 2.0,
        "metrics": {"val_auc": 0.95, "val_eer": 0.05, "val_threshold": 0.61, "val_rank1": 1.0},
        "miner": "AllPairsMiner(metric='euclidean')", "runtime": {"num_threads": 2},
    }  # fmt: skip
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "encoder.json").write_text(json.dumps({"extra": {"training": old}}))
    record = read_training_record(folder)
    assert record == TrainingRecord.from_dict(record.to_dict())  # type: ignore[union-attr]
    assert record is not None and record.threshold == 0.61 and record.world_size == 1
    assert record.loss is None and record.metrics == ValidationMetrics(0.95, 0.05, 0.61, 1.0)
    (folder / "encoder.json").write_text(json.dumps({"extra": {"fine_tuning": {}}}))
    assert read_training_record(folder) is None
    assert read_training_record(tmp_path / "nothing") is None
    bad = {**old, "metrics": {"val_auc": "high"}}
    (folder / "encoder.json").write_text(json.dumps({"extra": {"training": bad}}))
    with pytest.raises(ModelFileError, match="malformed"):
        read_training_record(folder)
