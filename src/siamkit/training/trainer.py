"""Training an encoder with the contrastive loss, validated on held-out people."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from siamkit._atomic import write_json, write_with
from siamkit.data.pairs import dataset_labels
from siamkit.data.sampling import ClassBalancedBatchSampler
from siamkit.encoders.base import Encoder
from siamkit.encoders.whitening import whitening_layers
from siamkit.evaluation.identification import rank1_leave_one_out
from siamkit.evaluation.verification import all_pairs_distances, verification_metrics
from siamkit.exceptions import (
    ConfigError,
    DataError,
    GeometryError,
    ModelFileError,
    NonFiniteError,
    TrainingError,
)
from siamkit.losses.contrastive import ContrastiveLoss
from siamkit.miners.base import PairMiner, PMLPairMiner, as_pair_miner, create_miner
from siamkit.training.augment import FaceAugment
from siamkit.training.config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
PLOT_FILE = "loss_plot.png"
CHECKPOINT_FORMAT = "siamkit-checkpoint"
DEFAULT_MARGINS = {"cosine": 0.5, "euclidean": 1.0}


class Callback(Protocol):
    """Hooks called by :class:`Trainer`; implement any subset of them.

    Example:
        >>> class PrintLoss:
        ...     def on_epoch_end(self, trainer, record):
        ...         print(record["epoch"], round(record["loss"], 3))
        >>> trainer = Trainer(encoder, callbacks=[PrintLoss()])  # doctest: +SKIP
    """

    def on_batch_end(self, trainer: Trainer, epoch: int, step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        history: One record per epoch: loss, lr, seconds and validation metrics.
        best_epoch: The epoch whose weights the encoder holds at the end.
        best: Validation metrics of that epoch (empty without validation data).
        out_dir: Where the model, checkpoint, history and plot were written.
        seconds: Wall time of this call.

    Example:
        >>> result = Trainer(encoder).fit(train, val, out_dir="runs/faces")  # doctest: +SKIP
        >>> result.best_epoch, result.best["auc"]  # doctest: +SKIP
        (150, 0.987)
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    seconds: float = 0.0


class _ImageSource:
    """The model-input tensors of a dataset, cached in memory when they fit."""

    def __init__(
        self, dataset: Any, encoder: Encoder, cache_limit_mb: int, progress: bool, desc: str
    ) -> None:
        self.labels = dataset_labels(dataset)
        self.items = _dataset_items(dataset)
        self.encoder = encoder
        self.cache: torch.Tensor | None = None
        if len(self.items) == 0:
            return
        first = encoder.preprocess(self._item(0))
        if first.element_size() * first.numel() * len(self.items) <= cache_limit_mb * 2**20:
            from tqdm.auto import tqdm

            loaded = [
                encoder.preprocess(self._item(i))
                for i in tqdm(range(len(self.items)), desc=desc, disable=not progress, leave=False)
            ]
            self.cache = torch.stack(loaded)

    def _item(self, index: int) -> Any:
        item = self.items[index]
        return item() if callable(item) else item

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[torch.as_tensor(list(indices), dtype=torch.long)]
        return torch.stack([self.encoder.preprocess(self._item(int(i))) for i in indices])


def _dataset_items(dataset: Any) -> list[Any]:
    """File paths when the dataset is an ImageFolder (or a Subset of one), else loaders."""
    base, indices = dataset, None
    if isinstance(dataset, torch.utils.data.Subset):
        base, indices = dataset.dataset, list(dataset.indices)
    samples = getattr(base, "samples", None)
    if samples is not None and getattr(base, "transform", None) is None:
        paths = [path for path, _ in samples]
        return [paths[i] for i in indices] if indices is not None else paths
    return [lambda i=i: dataset[i][0] for i in range(len(dataset))]


def _check_trainable(labels: np.ndarray, classes: Sequence[str] | None) -> None:
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise DataError("training needs images of at least two people (classes)")
    single = [int(v) for v, c in zip(values, counts, strict=True) if c < 2]
    if single:
        names = [classes[v] if classes else str(v) for v in single]
        raise DataError(
            f"classes with a single image cannot form a matching pair: {', '.join(names[:10])}. "
            "Add images or remove these classes"
        )


def _classes_of(dataset: Any) -> list[str] | None:
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    return getattr(base, "classes", None)


class Trainer:
    """Trains an :class:`~siamkit.Encoder` with the contrastive loss on class-balanced batches.

    Each epoch draws batches of ``m_per_class`` images of several people,
    augments them, mines pairs, and steps AdamW on a warm-up + cosine learning
    rate. When validation data (other people) is given it is evaluated every
    epoch (verification AUC and EER over all pairs, leave-one-out rank-1) and
    the best epoch's weights are kept. With ``out_dir`` every epoch ends with
    a checkpoint, so ``fit(..., resume=True)`` continues after a crash and
    loses at most the epoch in progress.

    The loss and miner take their geometry from the encoder (``encoder.metric``);
    passing ones that measure distance differently raises ``GeometryError``.

    Args:
        encoder: The encoder to train (in place).
        config: Settings; see :class:`TrainConfig`.
        loss: A :class:`~siamkit.ContrastiveLoss`; default from the config's margin.
        miner: A :class:`~siamkit.miners.PairMiner`, a pytorch-metric-learning
            pair miner, or None for the config's ``miner``.
        augment: A module applied to training batches; default :class:`FaceAugment`
            when ``config.augment``.
        callbacks: Objects with ``on_batch_end`` / ``on_epoch_end`` methods.
        progress: Show progress bars (the CLI does; the library is quiet).

    Example:
        >>> import siamkit
        >>> from siamkit.training import Trainer, TrainConfig
        >>> encoder = siamkit.create_encoder("compact")
        >>> trainer = Trainer(encoder, TrainConfig(epochs=1))
        >>> trainer.loss
        ContrastiveLoss(margin=2.0, distance='euclidean')
    """

    def __init__(
        self,
        encoder: Encoder,
        config: TrainConfig | None = None,
        loss: ContrastiveLoss | None = None,
        miner: PairMiner | Any | None = None,
        augment: torch.nn.Module | None = None,
        callbacks: Sequence[Any] = (),
        progress: bool = False,
    ) -> None:
        if not isinstance(encoder, Encoder):
            raise ConfigError(f"Trainer needs a siamkit Encoder, got {type(encoder).__name__}")
        self.config = config or TrainConfig()
        self.encoder = encoder
        self.metric = encoder.metric
        self.loss = self._bind_loss(loss)
        self.miner = self._bind_miner(miner)
        self.augment = (
            augment if augment is not None else (FaceAugment() if self.config.augment else None)
        )
        self.callbacks = list(callbacks)
        self.progress = progress
        self.device = _resolve_device(self.config.device)

    def _bind_loss(self, loss: ContrastiveLoss | None) -> ContrastiveLoss:
        if loss is None:
            margin = (
                self.config.margin
                or getattr(self.encoder, "default_margin", None)
                or DEFAULT_MARGINS[self.metric]
            )
            return ContrastiveLoss(margin=margin, distance=self.metric)
        if loss.distance is None:
            loss = copy.copy(loss)
            loss.distance = self.metric
        elif loss.distance != self.metric:
            raise GeometryError(
                f"the loss measures {loss.distance} distance but the encoder's metric is "
                f"{self.metric}: build ContrastiveLoss(distance={self.metric!r}) or change the "
                "encoder's metric, so training, thresholds and search agree"
            )
        return loss

    def _bind_miner(self, miner: Any) -> PairMiner:
        miner = as_pair_miner(miner) if miner is not None else create_miner(self.config.miner)
        if isinstance(miner, PMLPairMiner):
            return miner
        if miner.metric is None:
            miner = copy.copy(miner)
            miner.metric = self.metric
        elif miner.metric != self.metric:
            raise GeometryError(
                f"the miner measures {miner.metric} distance but the encoder's metric is "
                f"{self.metric}; leave the miner's metric unset to follow the encoder"
            )
        return miner

    # -- public ----------------------------------------------------------------------
    def fit(
        self,
        train: Any,
        val: Any | None = None,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> TrainResult:
        """Train on ``train``, validate on ``val`` (other people), write to ``out_dir``.

        Args:
            train: A labelled dataset: a :class:`~siamkit.data.FaceFolder`, a
                ``Subset`` of one (see :func:`~siamkit.data.split_by_class`), or
                any dataset returning ``(image_or_tensor, label)``.
            val: Held-out people, same kinds as ``train``; optional.
            out_dir: Directory for the best model (``load_encoder(out_dir)``),
                ``checkpoint.pt``, ``history.json`` and ``loss_plot.png``.
            resume: Continue from ``out_dir/checkpoint.pt``.

        Raises:
            DataError: fewer than two people, or a person with a single image.
            TrainingError: the loss became NaN, or ``out_dir`` holds another run
                and ``resume`` is False.
        """
        started = time.perf_counter()
        cfg = self.config
        out = Path(out_dir) if out_dir is not None else None
        state = self._start_state(out, resume)
        train_labels = dataset_labels(train)
        _check_trainable(train_labels, _classes_of(train))
        train_source = _ImageSource(
            train, self.encoder, cfg.cache_limit_mb, self.progress, "loading training images"
        )
        val_source = self._val_source(val)
        sampler = ClassBalancedBatchSampler(
            train_labels, m_per_class=cfg.m_per_class, batch_size=cfg.batch_size, seed=cfg.seed
        )
        self.encoder.to(self.device)
        for layer in whitening_layers(self.encoder):
            layer.reset()  # training sees the identity; refitted after the last epoch
        optimizer = torch.optim.AdamW(
            self.encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        if state is not None:
            self.encoder.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        history: list[dict[str, Any]] = list(state["history"]) if state else []
        best = dict(state["best"]) if state else {"epoch": 0, "value": None}
        best_weights = None
        start_epoch = len(history) + 1
        epochs = range(start_epoch, cfg.epochs + 1)
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc="training", unit="epoch", disable=not self.progress)
        for epoch in bar:
            record = self._train_epoch(epoch, train_source, sampler, optimizer)
            if val_source is not None:
                record.update(self.evaluate_source(val_source))
            history.append(record)
            if self._improved(record, best):
                best = {"epoch": epoch, "value": record.get(f"val_{cfg.monitor}")}
                best_weights = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
                if out is not None:
                    self.encoder.save(out, extra=self._model_extra(record, epoch))
            if out is not None:
                self._save_checkpoint(out, epoch, optimizer, history, best)
            bar.set_postfix(_postfix(record))
            for callback in self.callbacks:
                if hasattr(callback, "on_epoch_end"):
                    callback.on_epoch_end(self, record)
        bar.close()
        if best_weights is not None:
            self.encoder.load_state_dict(best_weights)
        elif best["epoch"] and out is not None and best["epoch"] != len(history):
            self._restore_saved_best(out)
        final = self._fit_whitening(train_source, val_source)
        if final is not None and out is not None:
            self.encoder.save(out, extra=self._model_extra(final, best["epoch"], whitened=True))
        if out is not None:
            from siamkit.training.plots import plot_history

            plot_history(history, out / PLOT_FILE)
        best_record = history[best["epoch"] - 1] if best["epoch"] else {}
        if final is not None:
            best_record = final
        return TrainResult(
            history=history,
            best_epoch=int(best["epoch"]),
            best={k[4:]: v for k, v in best_record.items() if k.startswith("val_")},
            out_dir=out,
            seconds=time.perf_counter() - started,
        )

    @torch.no_grad()
    def evaluate(self, data: Any) -> dict[str, float]:
        """Verification AUC and EER over all pairs, and leave-one-out rank-1, of ``data``.

        Returns a dict with keys ``val_auc``, ``val_eer``, ``val_rank1``.
        """
        return self.evaluate_source(self._val_source(data))

    # -- epochs ----------------------------------------------------------------------
    def _train_epoch(
        self,
        epoch: int,
        source: _ImageSource,
        sampler: ClassBalancedBatchSampler,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        # Seeding per epoch makes a resumed run draw exactly what an unbroken one would.
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        sampler.set_epoch(epoch)
        self.encoder.train()
        steps_per_epoch = len(sampler)
        losses = []
        for step, indices in enumerate(sampler):
            global_step = (epoch - 1) * steps_per_epoch + step
            lr = self._learning_rate(global_step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = source.batch(indices).to(self.device)
            labels = torch.as_tensor(source.labels[indices], device=self.device)
            if self.augment is not None:
                images = self.augment(images)
            embeddings = self.encoder(images)
            try:
                pairs = self.miner(embeddings, labels)
                loss = self.loss.batch(embeddings, labels, pairs)
            except NonFiniteError:
                raise TrainingError(
                    f"training diverged at epoch {epoch}, batch {step + 1}: the embeddings "
                    f"became NaN or infinite. Lower the learning rate (now {cfg.lr})"
                ) from None
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at epoch {epoch}, batch {step + 1}: lower "
                    f"the learning rate (now {cfg.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            for callback in self.callbacks:
                if hasattr(callback, "on_batch_end"):
                    callback.on_batch_end(self, epoch, step, losses[-1])
        return {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }

    def _learning_rate(self, step: int, steps_per_epoch: int) -> float:
        cfg = self.config
        total = cfg.epochs * steps_per_epoch
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _val_source(self, val: Any | None) -> _ImageSource | None:
        if val is None or len(val) == 0:
            return None
        labels = dataset_labels(val)
        if len(np.unique(labels)) < 2:
            raise DataError("validation data needs at least two people to form impostor pairs")
        if np.unique(labels, return_counts=True)[1].max() < 2:
            raise DataError("validation data needs a person with two images for genuine pairs")
        return _ImageSource(
            val,
            self.encoder,
            self.config.cache_limit_mb,
            self.progress,
            "loading validation images",
        )

    @torch.no_grad()
    def evaluate_source(self, source: _ImageSource) -> dict[str, float]:
        """Validation metrics of a preprocessed source (see :meth:`evaluate`)."""
        indices = list(range(len(source)))
        embeddings = np.concatenate(
            [
                self.encoder.embed(source.batch(indices[i : i + 256]).to(self.device))
                for i in range(0, len(indices), 256)
            ]
        )
        distances, same = all_pairs_distances(embeddings, source.labels, self.metric)
        result = verification_metrics(distances, same)
        return {
            "val_auc": result.auc,
            "val_eer": result.eer,
            "val_threshold": result.eer_threshold,
            "val_rank1": rank1_leave_one_out(embeddings, source.labels, self.metric),
        }

    def _improved(self, record: dict[str, Any], best: dict[str, Any]) -> bool:
        key = f"val_{self.config.monitor}"
        if key not in record:
            return True  # without validation the latest epoch is the best we know
        if best["value"] is None:
            return True
        if self.config.monitor == "eer":
            return record[key] < best["value"]
        return record[key] > best["value"]

    # -- persistence -----------------------------------------------------------------
    @torch.no_grad()
    def _fit_whitening(
        self, train: _ImageSource, val: _ImageSource | None
    ) -> dict[str, Any] | None:
        """Fit the encoder's Whitening layers on the training people; new val metrics."""
        layers = whitening_layers(self.encoder) if self.config.whiten else []
        if not layers:
            return None
        indices = list(range(len(train)))
        for layer in layers:
            captured: list[torch.Tensor] = []
            hook = layer.register_forward_hook(
                lambda _m, inputs, _o, store=captured: store.append(inputs[0])
            )
            try:
                for start in range(0, len(indices), 256):
                    self.encoder.embed(train.batch(indices[start : start + 256]).to(self.device))
            finally:
                hook.remove()
            layer.fit(torch.cat(captured).cpu(), train.labels)
        return self.evaluate_source(val) if val is not None else {}

    def _model_extra(
        self, record: dict[str, Any], epoch: int, whitened: bool = False
    ) -> dict[str, Any]:
        return {
            "training": {
                "config": self.config.to_dict(),
                "whitened": whitened,
                "epoch": epoch,
                "metrics": {k: v for k, v in record.items() if k.startswith("val_")},
                "margin": self.loss.margin,
                "miner": repr(self.miner),
            }
        }

    def _start_state(self, out: Path | None, resume: bool) -> dict[str, Any] | None:
        if out is None:
            if resume:
                raise ConfigError("resume=True needs the out_dir of the run to resume")
            return None
        checkpoint = out / CHECKPOINT_FILE
        if not checkpoint.exists():
            return None
        if not resume:
            raise TrainingError(
                f"{out} already holds a training run ({CHECKPOINT_FILE}); pass resume=True "
                "(CLI: --resume) to continue it, or choose another output directory"
            )
        state = load_checkpoint(checkpoint)
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        current = self.config.to_dict()
        differ = sorted(k for k in current if saved.get(k) != current[k])
        if differ:
            raise TrainingError(
                f"cannot resume {out}: its settings differ in {', '.join(differ)}; "
                "resume with the same settings"
            )
        return state

    def _save_checkpoint(
        self,
        out: Path,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        history: list[dict[str, Any]],
        best: dict[str, Any],
    ) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": 1,
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
            "config": self.config.to_dict(),
        }
        write_with(out / CHECKPOINT_FILE, lambda handle: torch.save(state, handle))
        write_json(out / HISTORY_FILE, {"history": history, "best_epoch": best["epoch"]})

    def _restore_saved_best(self, out: Path) -> None:
        from siamkit.encoders.base import load_encoder

        saved = load_encoder(out, encoder_class=type(self.encoder))
        self.encoder.load_state_dict(saved.state_dict())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``).

    Raises:
        ModelFileError: the file is missing, truncated or not a siamkit checkpoint.

    Example:
        >>> state = load_checkpoint("runs/faces/checkpoint.pt")  # doctest: +SKIP
        >>> state["epoch"], len(state["history"])  # doctest: +SKIP
        (150, 150)
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise ModelFileError(
            f"cannot read checkpoint {path}: {err}. Delete it to start training afresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a siamkit training checkpoint")
    return state


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    shown = {"loss": f"{record['loss']:.4f}"}
    if "val_auc" in record:
        shown["val_auc"] = f"{record['val_auc']:.4f}"
        shown["val_eer"] = f"{record['val_eer']:.3f}"
    return shown


def fit(
    encoder: Encoder,
    train: Any,
    val: Any | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train ``encoder`` in one call; ``settings`` are :class:`TrainConfig` fields.

    Example:
        >>> import siamkit
        >>> from siamkit.training import fit
        >>> encoder = siamkit.create_encoder("compact")
        >>> result = fit(encoder, train_set, val_set, epochs=30)  # doctest: +SKIP
    """
    return Trainer(encoder, TrainConfig(**settings)).fit(train, val, out_dir, resume)


__all__ = ["Callback", "TrainResult", "Trainer", "fit", "load_checkpoint"]
