"""Training an encoder with the contrastive loss, validated on held-out people."""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from siamkit._atomic import write_json, write_with
from siamkit.data.pairs import dataset_labels
from siamkit.data.sampling import ClassBalancedBatchSampler
from siamkit.encoders.base import Encoder, encoder_registry
from siamkit.encoders.whitening import whitening_layers
from siamkit.evaluation.identification import rank1_leave_one_out
from siamkit.evaluation.verification import all_pairs_distances, verification_metrics
from siamkit.exceptions import (
    ConfigError,
    DataError,
    GeometryError,
    ModelFileError,
    NoFaceError,
    NonFiniteError,
    TrainingError,
)
from siamkit.losses.contrastive import ContrastiveLoss
from siamkit.miners.base import PairMiner, PMLPairMiner, as_pair_miner, create_miner
from siamkit.training.augment import FaceAugment
from siamkit.training.config import TrainConfig
from siamkit.training.runtime import reproducible

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
PLOT_FILE = "loss_plot.png"
CHECKPOINT_FORMAT = "siamkit-checkpoint"
#: Version 2 adds the encoder's identity (name, class, constructor arguments) and
#: the runtime (thread count, deterministic kernels); version 1 is still read.
CHECKPOINT_VERSION = 2
#: Settings that change only how a run executes, not what it computes up to the
#: last bits: a resume may change them.
EXECUTION_SETTINGS = frozenset({"num_threads", "deterministic", "cache_limit_mb"})
DEFAULT_MARGINS = {"cosine": 0.5, "euclidean": 1.0}


class _DivergedError(TrainingError):
    """Training produced NaN or infinite values (the face recipe drops such a candidate)."""


class Callback(Protocol):
    """Hooks called by :class:`Trainer`; implement any subset of them.

    Examples:
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
        skipped_images: Images dropped because the encoder's aligner found no
            face in them and its policy is ``"skip"`` (training and validation).

    Examples:
        >>> result = Trainer(encoder).fit(train, val, out_dir="runs/faces")  # doctest: +SKIP
        >>> result.best_epoch, result.best["auc"]  # doctest: +SKIP
        (150, 0.987)
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    seconds: float = 0.0
    skipped_images: int = 0


class _ImageSource:
    """The model-input tensors of a dataset, cached in memory when they fit.

    Preprocessing goes through ``encoder.preprocess``, so the encoder's face
    aligner runs once per image. Under the aligner's ``on_missing="skip"``
    policy, images without a face are dropped and counted in ``skipped``;
    under ``"error"`` the :class:`~siamkit.exceptions.NoFaceError` propagates.
    """

    def __init__(
        self, dataset: Any, encoder: Encoder, cache_limit_mb: int, progress: bool, desc: str
    ) -> None:
        self.labels = dataset_labels(dataset)
        self.items = _dataset_items(dataset)
        self.classes = _classes_of(dataset)
        self.encoder = encoder
        self.cache: torch.Tensor | None = None
        self.skipped = 0
        if len(self.items) == 0:
            return
        limit = cache_limit_mb * 2**20
        if _skips_missing_faces(encoder):
            # Every image is looked at once, to know which ones to keep.
            self._load(limit, skipping=True, first=None, progress=progress, desc=desc)
            return
        first = encoder.preprocess(self._item(0))
        if first.element_size() * first.numel() * len(self.items) <= limit:
            self._load(limit, skipping=False, first=first, progress=progress, desc=desc)

    def _load(
        self,
        limit: int,
        skipping: bool,
        first: torch.Tensor | None,
        progress: bool,
        desc: str,
    ) -> None:
        from tqdm.auto import tqdm

        kept: list[int] = []
        tensors: list[torch.Tensor] | None = []
        used = 0
        for i in tqdm(range(len(self.items)), desc=desc, disable=not progress, leave=False):
            try:
                # Item 0 was already preprocessed to size the cache: an aligner runs once.
                tensor = first if i == 0 and first is not None else self._preprocess(i)
            except NoFaceError:
                if not skipping:
                    raise
                self.skipped += 1
                continue
            kept.append(i)
            used += tensor.element_size() * tensor.numel()
            if tensors is not None and used <= limit:
                tensors.append(tensor)
            else:
                tensors = None  # too large to keep: batches preprocess on the fly
        self.items = [self.items[i] for i in kept]
        self.labels = self.labels[kept]
        if tensors:
            self.cache = torch.stack(tensors)

    def _preprocess(self, index: int) -> torch.Tensor:
        return self.encoder.preprocess(self._item(index))

    def _item(self, index: int) -> Any:
        item = self.items[index]
        return item() if callable(item) else item

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[torch.as_tensor(list(indices), dtype=torch.long)]
        return torch.stack([self.encoder.preprocess(self._item(int(i))) for i in indices])


def _skips_missing_faces(encoder: Encoder) -> bool:
    aligner = encoder.aligner
    return aligner is not None and getattr(aligner, "on_missing", None) == "skip"


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


def _check_trainable(labels: np.ndarray, classes: Sequence[str] | None, skipped: int = 0) -> None:
    why = _skipped_note(skipped)
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise DataError(f"training needs images of at least two people (classes){why}")
    single = [int(v) for v, c in zip(values, counts, strict=True) if c < 2]
    if single:
        names = [classes[v] if classes else str(v) for v in single]
        raise DataError(
            f"classes with a single image cannot form a matching pair: {', '.join(names[:10])}"
            f"{why}. Add images or remove these classes"
        )


def _check_validation(labels: np.ndarray, skipped: int) -> None:
    why = _skipped_note(skipped)
    if len(np.unique(labels)) < 2:
        raise DataError(f"validation data needs at least two people to form impostor pairs{why}")
    if len(labels) == 0 or np.unique(labels, return_counts=True)[1].max() < 2:
        raise DataError(f"validation data needs a person with two images for genuine pairs{why}")


def _skipped_note(skipped: int) -> str:
    return f" ({skipped} images without a face were skipped)" if skipped else ""


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

    Examples:
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
        if augment is None and self.config.augment:
            augment = FaceAugment(value_range=encoder.input_range)
        self.augment = augment
        self.callbacks = list(callbacks)
        self.progress = progress
        self.device = _resolve_device(self.config.device)
        #: How the latest :meth:`fit` ran (thread count, deterministic kernels).
        self.runtime: dict[str, Any] = {}

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

        A seeded run repeats bit for bit on the same machine with the same
        ``config.num_threads``: training runs under
        :func:`~siamkit.training.runtime.reproducible`, and the thread count is
        recorded in every epoch's record (``"threads"``) and with the run.

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
            TrainingError: the loss became NaN, ``out_dir`` holds another run
                and ``resume`` is False, or the run to resume used another
                encoder, other encoder arguments or other settings.
            ModelFileError: the checkpoint to resume is corrupt or not siamkit's.
            NoFaceError: the encoder's aligner found no face in an image and its
                policy is ``"error"`` (under ``"skip"`` the image is dropped and
                counted in ``TrainResult.skipped_images``).
        """
        started = time.perf_counter()
        out = Path(out_dir) if out_dir is not None else None
        with reproducible(self.config.num_threads, self.config.deterministic) as runtime:
            self.runtime = runtime
            result = self._fit(train, val, out, resume)
        result.seconds = time.perf_counter() - started
        return result

    def _fit(self, train: Any, val: Any | None, out: Path | None, resume: bool) -> TrainResult:
        cfg = self.config
        state = self._start_state(out, resume)
        train_source = self._train_source(train)
        val_source = self._val_source(val)
        sampler = ClassBalancedBatchSampler(
            train_source.labels,
            m_per_class=cfg.m_per_class,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        optimizer = self._prepare(state)
        history: list[dict[str, Any]] = list(state["history"]) if state else []
        best = dict(state["best"]) if state else {"epoch": 0, "value": None}
        best, best_weights = self._run_epochs(
            train_source, val_source, sampler, optimizer, history, best, out
        )
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
            skipped_images=train_source.skipped + (val_source.skipped if val_source else 0),
        )

    def _prepare(self, state: dict[str, Any] | None) -> torch.optim.Optimizer:
        """Move the encoder to the device, build AdamW, and load a resumed state."""
        cfg = self.config
        self.encoder.to(self.device)
        for layer in whitening_layers(self.encoder):
            layer.reset()  # training sees the identity; refitted after the last epoch
        optimizer = torch.optim.AdamW(
            self.encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        if state is not None:
            try:
                self.encoder.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
                raise TrainingError(
                    f"the checkpoint's weights do not fit this {type(self.encoder).__name__}: "
                    f"{str(err).splitlines()[0]}. Resume with the encoder and arguments the "
                    "run was started with, or start afresh in another output directory"
                ) from None
        return optimizer

    def _run_epochs(
        self,
        train_source: _ImageSource,
        val_source: _ImageSource | None,
        sampler: ClassBalancedBatchSampler,
        optimizer: torch.optim.Optimizer,
        history: list[dict[str, Any]],
        best: dict[str, Any],
        out: Path | None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """The remaining epochs; returns the best epoch and its weights if it is one of them."""
        from tqdm.auto import tqdm

        best_weights = None
        epochs = range(len(history) + 1, self.config.epochs + 1)
        bar = tqdm(epochs, desc="training", unit="epoch", disable=not self.progress)
        for epoch in bar:
            record = self._train_epoch(epoch, train_source, sampler, optimizer)
            if val_source is not None:
                record.update(self.evaluate_source(val_source))
            history.append(record)
            if self._improved(record, best):
                best = {"epoch": epoch, "value": record.get(f"val_{self.config.monitor}")}
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
        return best, best_weights

    @torch.no_grad()
    def evaluate(self, data: Any) -> dict[str, float]:
        """Verification AUC and EER over all pairs, and leave-one-out rank-1, of ``data``.

        Returns a dict with keys ``val_auc``, ``val_eer``, ``val_threshold``, ``val_rank1``.
        """
        with reproducible(self.config.num_threads, self.config.deterministic):
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
                raise _DivergedError(
                    f"training diverged at epoch {epoch}, batch {step + 1}: the embeddings "
                    f"became NaN or infinite. Lower the learning rate (now {cfg.lr})"
                ) from None
            if not torch.isfinite(loss):
                raise _DivergedError(
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
            "threads": torch.get_num_threads(),
        }

    def _learning_rate(self, step: int, steps_per_epoch: int) -> float:
        cfg = self.config
        total = cfg.epochs * steps_per_epoch
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _train_source(self, train: Any) -> _ImageSource:
        if isinstance(train, _ImageSource):
            source = train
        else:
            _check_trainable(dataset_labels(train), _classes_of(train))  # before any loading
            source = _ImageSource(
                train,
                self.encoder,
                self.config.cache_limit_mb,
                self.progress,
                "loading training images",
            )
        _check_trainable(source.labels, source.classes, source.skipped)
        return source

    def _val_source(self, val: Any | None) -> _ImageSource | None:
        if val is None or len(val) == 0:
            return None
        if isinstance(val, _ImageSource):
            source = val
        else:
            _check_validation(dataset_labels(val), 0)
            source = _ImageSource(
                val,
                self.encoder,
                self.config.cache_limit_mb,
                self.progress,
                "loading validation images",
            )
        _check_validation(source.labels, source.skipped)
        return source

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
                "runtime": dict(self.runtime),
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
        try:
            saved = TrainConfig.from_dict(state["config"]).to_dict()
        except (ConfigError, TypeError, ValueError) as err:
            raise ModelFileError(
                f"{checkpoint} holds invalid settings ({err}); delete it to start afresh"
            ) from None
        current = self.config.to_dict()
        differ = sorted(
            k for k in current if k not in EXECUTION_SETTINGS and saved.get(k) != current[k]
        )
        if differ:
            raise TrainingError(
                f"cannot resume {out}: its settings differ in {', '.join(differ)}; "
                "resume with the same settings"
            )
        _check_same_encoder(state, self.encoder, out)
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
            "format_version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
            "config": self.config.to_dict(),
            "encoder": encoder_identity(self.encoder),
            "runtime": dict(self.runtime),
        }
        write_with(out / CHECKPOINT_FILE, lambda handle: torch.save(state, handle))
        write_json(
            out / HISTORY_FILE,
            {"history": history, "best_epoch": best["epoch"], "runtime": dict(self.runtime)},
        )

    def _restore_saved_best(self, out: Path) -> None:
        from siamkit.encoders.base import load_encoder

        saved = load_encoder(out, encoder_class=type(self.encoder))
        self.encoder.load_state_dict(saved.state_dict())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint safely: ``weights_only=True``, so nothing in it is run.

    Only what :meth:`Trainer.fit` writes is accepted: an uncompressed zip
    archive (so a small file cannot expand to gigabytes in memory) holding a
    dict of the expected layout.

    Raises:
        ModelFileError: the file is missing, truncated, corrupt, hostile (a
            pickle that would run code, a compressed archive), from a newer
            siamkit, or not a siamkit checkpoint.

    Examples:
        >>> state = load_checkpoint("runs/faces/checkpoint.pt")  # doctest: +SKIP
        >>> state["epoch"], len(state["history"])  # doctest: +SKIP
        (150, 150)
    """
    _check_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "unusual pickle protocol": refused below
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # Untrusted bytes make torch.load fail in many ways, all meaning "not a
        # usable checkpoint". Seen fuzzing real checkpoints: pickle.UnpicklingError
        # (garbage, or a payload the weights-only unpickler refuses to run),
        # RuntimeError from the zip reader, UnicodeDecodeError, OSError, EOFError,
        # IndexError, struct.error, AssertionError, KeyError, ValueError, TypeError.
        raise _unreadable(path, err) from None
    _check_checkpoint(state, path)
    return state


def _unreadable(path: str | os.PathLike, err: BaseException) -> ModelFileError:
    return ModelFileError(
        f"cannot read checkpoint {path}: {_first_line(err)} ({type(err).__name__}). "
        "It is corrupt or not a siamkit checkpoint: delete it to start training afresh"
    )


def _check_archive(path: str | os.PathLike) -> None:
    """Refuse what torch.load would inflate: siamkit writes uncompressed zip archives."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except Exception as err:  # zipfile, like torch.load, fails in many ways on garbage
        raise _unreadable(path, err) from None
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed or sum(e.file_size for e in entries) > size:
        raise ModelFileError(
            f"{path} is not a checkpoint siamkit wrote: its records are compressed or claim "
            "more bytes than the file holds. Delete it to start training afresh"
        )


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # torch's refusal of a pickle is a page of advice; the reason is on one line.
    reason = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    line = (reason or lines or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_checkpoint(state: Any, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose structure is not what :meth:`Trainer.fit` writes."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a siamkit training checkpoint")
    version = state.get("format_version")
    if not _is_int(version) or version < 1:
        raise ModelFileError(f"{path} has an invalid format_version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer siamkit (checkpoint format {version}, this one "
            f"reads up to {CHECKPOINT_VERSION}): upgrade siamkit to resume it"
        )
    kinds = {"model": dict, "optimizer": dict, "history": list, "best": dict, "config": dict}
    if version >= 2:
        kinds.update(encoder=dict, runtime=dict)
    bad = [key for key, kind in kinds.items() if not isinstance(state.get(key), kind)]
    problem = f"{', '.join(bad)} missing or of the wrong type" if bad else _content_problem(state)
    if problem:
        raise ModelFileError(
            f"{path} is a damaged siamkit checkpoint ({problem}); delete it to start afresh"
        )


def _content_problem(state: dict[str, Any]) -> str | None:
    epoch, history, best = state.get("epoch"), state["history"], state["best"]
    if not _is_int(epoch) or epoch < 1 or epoch != len(history):
        return f"epoch {epoch!r} for {len(history)} history records"
    scalar = (int, float, str, bool, type(None))
    for number, record in enumerate(history, start=1):
        if (
            not isinstance(record, dict)
            or record.get("epoch") != number
            or not all(isinstance(k, str) and isinstance(v, scalar) for k, v in record.items())
        ):
            return f"history record {number} is malformed"
    if not _is_int(best.get("epoch")) or not 0 <= best["epoch"] <= epoch:
        return f"best epoch {best.get('epoch')!r}"
    if not isinstance(best.get("value"), (int, float, type(None))):
        return "best value is not a number"
    weights = state["model"].items()
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights):
        return "model weights are not tensors"
    return None


def encoder_identity(encoder: Encoder) -> dict[str, Any]:
    """The registered name, class and constructor arguments of ``encoder``, as plain values.

    Checkpoints store it, so that resuming with another encoder, the same
    one built with other arguments, or with another face aligner (which
    changes every training image) is refused.

    Examples:
        >>> import siamkit
        >>> identity = encoder_identity(siamkit.create_encoder("compact", embedding_dim=64))
        >>> identity["name"], identity["config"]["embedding_dim"]
        ('compact', 64)
    """
    cls = type(encoder)
    try:
        config: dict[str, Any] | None = encoder.get_config()
    except ConfigError:
        config = None  # built with *args: only the weights' shapes can be compared
    aligner = encoder.aligner
    return {
        "name": encoder_registry.name_of(cls),
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": None if config is None else json.loads(_canonical(config)),
        "aligner": None if aligner is None else json.loads(_canonical(aligner.describe())),
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _check_same_encoder(state: dict[str, Any], encoder: Encoder, out: Path) -> None:
    """Refuse to resume ``out`` with an encoder other than the one it trained."""
    current = encoder_identity(encoder)
    saved = state.get("encoder")
    differences = _identity_differences(saved, current) if isinstance(saved, dict) else []
    differences = differences or _shape_differences(state["model"], encoder.state_dict())
    if differences:
        raise TrainingError(
            f"cannot resume {out}: the encoder differs from the one it trained: "
            f"{'; '.join(differences)}. Resume with the same encoder and arguments "
            "(CLI: --encoder, --encoder-arg), or start a new run in another output directory"
        )


def _identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    key = "name" if saved.get("name") or current["name"] else "class"
    if saved.get(key) != current[key]:
        return [f"{key} {saved.get(key)!r} in the checkpoint, {current[key]!r} now"]
    # Checkpoints from before aligners existed trained without one.
    if saved.get("aligner") != current.get("aligner"):
        return [
            f"aligner {_canonical(saved.get('aligner'))} in the checkpoint, "
            f"{_canonical(current.get('aligner'))} now"
        ]
    before, now = saved.get("config"), current["config"]
    if not isinstance(before, dict) or now is None:
        return []  # arguments not recorded (*args): the weights' shapes are still compared
    missing = "(not set)"
    # Both sides went through JSON, so == compares values: 0 and 0.0 are the same dropout.
    return [
        f"{name}={_canonical(before.get(name, missing))} in the checkpoint, "
        f"{_canonical(now.get(name, missing))} now"
        for name in sorted(set(before) | set(now))
        if before.get(name, missing) != now.get(name, missing)
    ]


def _shape_differences(saved: dict[str, Any], current: dict[str, torch.Tensor]) -> list[str]:
    found = [f"{k} is not in the checkpoint" for k in sorted(set(current) - set(saved))]
    found += [f"the checkpoint has {k}, the encoder not" for k in sorted(set(saved) - set(current))]
    found += [
        f"{k} has shape {tuple(saved[k].shape)} in the checkpoint, {tuple(v.shape)} now"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    return found[:3] + ([f"{len(found) - 3} more"] if len(found) > 3 else [])


def _resolve_device(name: Any) -> torch.device:
    """The torch device for ``TrainConfig.device``, checked to be usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"unknown device {name!r}: use 'cpu', 'cuda', 'cuda:N' (the N-th GPU) or 'auto'"
        ) from None
    if device.type == "cuda":
        _check_cuda(name, device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: Apple MPS is not available here; use 'cpu'")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"device {name!r} is not supported: use 'cpu', 'cuda' or 'auto'")
    return device


def _check_cuda(name: Any, device: torch.device) -> None:
    if not torch.cuda.is_available():
        why = (
            "this torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA GPU or driver is usable"
        )
        raise ConfigError(
            f"device {name!r} needs CUDA, but {why} (torch {torch.__version__}): train on "
            "the CPU with device 'cpu' (CLI: --device cpu), or 'auto' to use a GPU when present"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {name!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}"
        )


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

    Examples:
        >>> import siamkit
        >>> from siamkit.training import fit
        >>> encoder = siamkit.create_encoder("compact")
        >>> result = fit(encoder, train_set, val_set, epochs=30)  # doctest: +SKIP
    """
    return Trainer(encoder, TrainConfig(**settings)).fit(train, val, out_dir, resume)


__all__ = ["Callback", "TrainResult", "Trainer", "encoder_identity", "fit", "load_checkpoint"]
