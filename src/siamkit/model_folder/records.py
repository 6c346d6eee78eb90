"""Typed records of a training run, and the one reader of what a run saved with its model.

A run leaves three things behind: the epoch records (``history.json`` and the
checkpoint), the model (``encoder.json``, whose ``extra["training"]`` says how
it was trained), and :class:`~siamkit.training.TrainResult`. These dataclasses
are the only shape in which training results travel between modules;
:func:`read_training_record` is the only code that reads ``extra["training"]``
back (:func:`trained_threshold`, for ``siamkit eval``, takes the model's
threshold from it). Their JSON
is what earlier versions wrote, so older model directories still read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from siamkit.exceptions import ModelFileError
from siamkit.model_folder.layout import ENCODER_FILE, TRAINING_KEY, read_model_manifest

_VAL = "val_"


@dataclass(frozen=True)
class ValidationMetrics:
    """Verification and identification on the held-out people at one epoch.

    Attributes:
        auc: ROC AUC over all pairs.
        eer: Equal error rate.
        threshold: The distance at the EER point (a decision threshold fitted
            on people the model never trained on).
        rank1: Leave-one-out rank-1 identification rate.

    Examples:
        >>> m = ValidationMetrics(auc=0.99, eer=0.03, threshold=0.7, rank1=0.95)
        >>> m.to_record()["val_auc"]
        0.99
        >>> ValidationMetrics.from_record(m.to_record()) == m
        True
    """

    auc: float
    eer: float
    threshold: float
    rank1: float

    def to_record(self) -> dict[str, float]:
        """The flat ``val_*`` keys of an epoch record."""
        return {f"{_VAL}{f.name}": float(getattr(self, f.name)) for f in fields(self)}

    def to_dict(self) -> dict[str, float]:
        """``{"auc": ..., "eer": ..., "threshold": ..., "rank1": ...}``."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ValidationMetrics | None:
        """Read the ``val_*`` keys of a record; None when it has none.

        Raises:
            ModelFileError: some keys are there but not all, or not numbers.
        """
        names = [f.name for f in fields(cls)]
        present = [name for name in names if f"{_VAL}{name}" in record]
        if not present:
            return None
        values = [record.get(f"{_VAL}{name}") for name in names]
        if len(present) != len(names) or not all(_is_number(v) for v in values):
            raise ModelFileError(f"malformed validation metrics {dict(record)!r}")
        return cls(*(float(v) for v in values))  # type: ignore[arg-type]


@dataclass(frozen=True)
class EpochRecord(Mapping[str, Any]):
    """One epoch of training: loss, learning rate, time and validation metrics.

    Also a read-only mapping over its JSON form (``record["loss"]``,
    ``record["val_auc"]``), which is what callbacks and ``history.json`` have
    always seen.

    Attributes:
        epoch: 1-based epoch number.
        loss: Mean training loss over the epoch's batches.
        lr: Learning rate of the epoch's last batch.
        seconds: Wall time of the epoch's training (validation excluded).
        threads: torch intra-op threads of each process.
        world_size: Processes that trained together (1 without torch.distributed).
        val: Validation metrics, None without validation people.

    Examples:
        >>> record = EpochRecord(epoch=1, loss=0.5, lr=0.001, seconds=2.0, threads=2)
        >>> record["loss"], record.val is None
        (0.5, True)
        >>> EpochRecord.from_dict(record.to_dict()) == record
        True
    """

    epoch: int
    loss: float
    lr: float
    seconds: float
    threads: int
    world_size: int = 1
    val: ValidationMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON of ``history.json`` (``world_size`` only when above 1)."""
        data: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": self.loss,
            "lr": self.lr,
            "seconds": self.seconds,
            "threads": self.threads,
        }
        if self.world_size > 1:
            data["world_size"] = self.world_size
        if self.val is not None:
            data.update(self.val.to_record())
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """Read a record written by any siamkit version.

        Raises:
            ModelFileError: the record lacks the epoch or the loss.
        """
        if not isinstance(data.get("epoch"), int) or not _is_number(data.get("loss")):
            raise ModelFileError(f"malformed epoch record {dict(data)!r}")
        return cls(
            epoch=int(data["epoch"]),
            loss=float(data["loss"]),
            lr=float(data.get("lr") or 0.0),
            seconds=float(data.get("seconds") or 0.0),
            threads=int(data.get("threads") or 0),
            world_size=int(data.get("world_size") or 1),
            val=ValidationMetrics.from_record(data),
        )

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True)
class TrainingRecord:
    """How a saved model was trained: ``encoder.json``'s ``extra["training"]``.

    Attributes:
        epoch: The epoch whose weights the model holds.
        metrics: Its validation metrics (None without validation people).
        whitened: Whitening layers were fitted after training (``metrics``
            are then measured after whitening).
        config: The :class:`~siamkit.training.TrainConfig` as a dict.
        margin: The loss's margin, None for losses without one.
        loss: The loss, as ``repr`` shows it (None in models from before losses
            were pluggable).
        miner: The pair miner, as ``repr`` shows it.
        runtime: Thread count, deterministic kernels and torch version.
        world_size: Processes that trained together.

    Examples:
        >>> record = TrainingRecord(epoch=3, metrics=None)
        >>> TrainingRecord.from_dict(record.to_dict()) == record
        True
    """

    epoch: int
    metrics: ValidationMetrics | None
    whitened: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    loss: str | None = None
    miner: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1

    @property
    def threshold(self) -> float | None:
        """The EER threshold fitted on the validation people, if there were any."""
        return None if self.metrics is None else self.metrics.threshold

    def to_dict(self) -> dict[str, Any]:
        """The JSON saved in ``extra["training"]`` (metrics as flat ``val_*`` keys)."""
        return {
            "config": dict(self.config),
            "whitened": self.whitened,
            "epoch": self.epoch,
            "metrics": {} if self.metrics is None else self.metrics.to_record(),
            "margin": self.margin,
            "loss": self.loss,
            "miner": self.miner,
            "runtime": dict(self.runtime),
            "world_size": self.world_size,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TrainingRecord:
        """Read the record of any siamkit version (missing newer fields take defaults).

        Raises:
            ModelFileError: the record is not a dict of the expected kinds.
        """
        kinds = {"config": dict, "metrics": dict, "runtime": dict}
        if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
            raise ModelFileError(f"malformed training record {data!r}")
        bad = [k for k, kind in kinds.items() if not isinstance(data.get(k, {}), kind)]
        margin = data.get("margin")
        if bad or not (margin is None or _is_number(margin)):
            raise ModelFileError(f"malformed training record: {', '.join(bad) or 'margin'}")
        return cls(
            epoch=data["epoch"],
            metrics=ValidationMetrics.from_record(data.get("metrics", {})),
            whitened=bool(data.get("whitened", False)),
            config=dict(data.get("config", {})),
            margin=None if margin is None else float(margin),
            loss=_optional_str(data.get("loss")),
            miner=_optional_str(data.get("miner")),
            runtime=dict(data.get("runtime", {})),
            world_size=int(data.get("world_size") or 1),
        )


def read_training_record(model_dir: str | os.PathLike) -> TrainingRecord | None:
    """How the model in ``model_dir`` was trained; None for a model not trained by siamkit.

    Reads models saved by every siamkit version (and face-preset models,
    which hold a fine-tuning record instead, give None).

    Raises:
        ModelFileError: ``encoder.json`` is unreadable, or its training record
            is malformed.

    Examples:
        >>> record = read_training_record("runs/faces")  # doctest: +SKIP
        >>> record.epoch, record.threshold  # doctest: +SKIP
        (150, 0.83)
    """
    manifest = read_model_manifest(model_dir)
    extra = manifest.get("extra") if manifest is not None else None
    if not isinstance(extra, dict) or extra.get(TRAINING_KEY) is None:
        return None
    try:
        return TrainingRecord.from_dict(extra[TRAINING_KEY])
    except ModelFileError as err:
        raise ModelFileError(f"{Path(model_dir) / ENCODER_FILE}: {err}") from None


def trained_threshold(model_dir: str | os.PathLike | None) -> float | None:
    """The decision threshold fitted on the model's held-out people in training, if any.

    What ``siamkit eval`` passes to :func:`~siamkit.evaluation.evaluate_encoder`;
    None for a folder that is no siamkit model (an ONNX export) or was trained
    without held-out people.

    Raises:
        ModelFileError: ``encoder.json`` or its training record is malformed.

    Examples:
        >>> import tempfile
        >>> trained_threshold(tempfile.mkdtemp()) is None
        True
    """
    if model_dir is None or not (Path(model_dir) / ENCODER_FILE).is_file():
        return None
    record = read_training_record(model_dir)
    return None if record is None else record.threshold


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


__all__ = [
    "TRAINING_KEY",
    "EpochRecord",
    "TrainingRecord",
    "ValidationMetrics",
    "read_training_record",
    "trained_threshold",
]
