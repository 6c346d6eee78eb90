"""Training an encoder with a pair loss, validated on held-out people, on one or many processes."""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from siamkit._atomic import remove_temporaries, write_json
from siamkit.data.sampling import ClassBalancedBatchSampler
from siamkit.encoders.base import Encoder
from siamkit.encoders.whitening import whitening_layers
from siamkit.exceptions import ConfigError, NonFiniteError, TrainingError
from siamkit.losses.base import PairLoss
from siamkit.miners.base import PairMiner
from siamkit.model_folder.layout import HISTORY_FILE, PLOT_FILE, RUN_FILES, check_out_folder
from siamkit.model_folder.records import (
    TRAINING_KEY,
    EpochRecord,
    TrainingRecord,
    ValidationMetrics,
)
from siamkit.training._binding import bind_loss, bind_miner
from siamkit.training._parallel import check_world, parallel_model
from siamkit.training._sources import ImageSource, train_source, val_source
from siamkit.training._validation import fit_whitening, validation_metrics
from siamkit.training.augment import FaceAugment, config_augment
from siamkit.training.checkpoint import (
    CHECKPOINT_FILE,
    EXECUTION_SETTINGS,
    encoder_identity,
    load_checkpoint,
    resume_state,
    write_checkpoint,
)
from siamkit.training.config import TrainConfig
from siamkit.training.distributed import (
    DistributedContext,
    all_equal,
    barrier,
    broadcast_json,
    gather_batch,
    process_group,
    resolve_device,
    shard,
    training_device,
)
from siamkit.training.runtime import reproducible


class _DivergedError(TrainingError):
    """Training produced NaN or infinite values (the face recipe drops such a candidate)."""


class Callback(Protocol):
    """Hooks called by :class:`Trainer` (on every rank); implement any subset of them.

    Examples:
        >>> class PrintLoss:
        ...     def on_epoch_end(self, trainer, record):
        ...         print(record.epoch, round(record.loss, 3))
        >>> trainer = Trainer(encoder, callbacks=[PrintLoss()])  # doctest: +SKIP
    """

    def on_batch_end(self, trainer: Trainer, epoch: int, step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None: ...


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        history: One :class:`~siamkit.training.EpochRecord` per epoch.
        best_epoch: The epoch whose weights the encoder holds at the end.
        best: Validation metrics of that epoch as a dict (``{"auc": ...}``;
            empty without validation data). ``metrics`` is the typed form.
        out_dir: Where the model, checkpoint, history and plot were written.
        seconds: Wall time of this call.
        skipped_images: Images dropped because the encoder's aligner found no
            face in them and its policy is ``"skip"`` (training and validation).
        metrics: The kept model's validation metrics (after whitening, when
            whitening layers were fitted); None without validation data.
        world_size: How many processes trained together.

    Examples:
        >>> result = Trainer(encoder).fit(train, val, out_dir="runs/faces")  # doctest: +SKIP
        >>> result.best_epoch, result.metrics.auc  # doctest: +SKIP
        (150, 0.987)
    """

    history: list[EpochRecord]
    best_epoch: int
    best: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    seconds: float = 0.0
    skipped_images: int = 0
    metrics: ValidationMetrics | None = None
    world_size: int = 1


@dataclass
class _Run:
    """The state of a :meth:`Trainer.fit` in progress, passed between its steps."""

    ctx: DistributedContext
    model: torch.nn.Module
    train: ImageSource
    val: ImageSource | None
    sampler: ClassBalancedBatchSampler
    optimizer: torch.optim.Optimizer
    out: Path | None
    history: list[EpochRecord]
    best_epoch: int = 0
    best_value: float | None = None
    best_weights: dict[str, torch.Tensor] | None = None


class Trainer:
    """Trains an :class:`~siamkit.Encoder` with a pair loss on class-balanced batches.

    Each epoch draws batches of ``m_per_class`` images of several people,
    augments them, mines pairs, and steps AdamW on a warm-up + cosine learning
    rate. When validation data (other people) is given it is evaluated every
    epoch (verification AUC and EER over all pairs, leave-one-out rank-1) and
    the best epoch's weights are kept. With ``out_dir`` every epoch ends with
    a checkpoint, so ``fit(..., resume=True)`` continues after a crash and
    loses at most the epoch in progress.

    Under ``torchrun`` (or a process group the caller initialised) the same
    call trains data-parallel: each process draws its share of every global
    batch, embeddings are gathered so pairs span all processes, and rank 0
    alone writes files. See the how-to "Train on several processes or machines".

    The loss and miner take their geometry from the encoder (``encoder.metric``);
    passing ones that measure distance differently raises ``GeometryError``.
    Neither is modified: geometry defaults are resolved into new objects.

    Args:
        encoder: The encoder to train (in place).
        config: Settings; see :class:`TrainConfig`.
        loss: A :class:`~siamkit.losses.PairLoss` or a pytorch-metric-learning
            loss; default a :class:`~siamkit.ContrastiveLoss` with the config's
            margin. A loss with its own weights (ArcFace) is trained on a copy.
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
        loss: PairLoss | Any | None = None,
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
        self.loss = bind_loss(loss, self.encoder, self.config)
        margin = getattr(self.loss, "margin", None)
        self.miner = bind_miner(miner, self.encoder.metric, self.config, margin)
        self.augment = augment if augment is not None else config_augment(self.config, encoder)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.device = resolve_device(self.config.device)
        #: How the latest :meth:`fit` ran (thread count, deterministic kernels).
        self.runtime: dict[str, Any] = {}
        #: Where this process sits among those training together (set by :meth:`fit`).
        self.context = DistributedContext()

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
            resume: Continue from ``out_dir/checkpoint.pt`` (and start afresh
                when there is none yet).

        Raises:
            DataError: fewer than two people, or a person with a single image.
            ConfigError: under torch.distributed, the batch does not split over
                the processes, or the processes were given different settings.
            ConfigError: ``out_dir`` is a file or holds files that no run writes
                (:func:`siamkit.model_folder.check_out_folder`).
            TrainingError: the loss became NaN, ``out_dir`` holds another run
                and ``resume`` is False, the run to resume used another
                encoder, other encoder arguments or other settings, or another
                process of the group died or hung.
            ModelFileError: the checkpoint to resume is corrupt or not siamkit's.
            NoFaceError: the encoder's aligner found no face in an image and its
                policy is ``"error"`` (under ``"skip"`` the image is dropped and
                counted in ``TrainResult.skipped_images``).
        """
        started = time.perf_counter()
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:  # on every process before any joins the group: none wrote yet
            check_out_folder(out, resume)
        timeout = datetime.timedelta(seconds=self.config.dist_timeout)
        with reproducible(self.config.num_threads, self.config.deterministic) as runtime:
            self.runtime = runtime
            with process_group(self.device, timeout) as ctx:
                self.context = ctx
                result = self._fit(train, val, out, resume, ctx)
        result.seconds = time.perf_counter() - started
        return result

    @torch.no_grad()
    def evaluate(self, data: Any) -> dict[str, float]:
        """Verification AUC and EER over all pairs, and leave-one-out rank-1, of ``data``.

        Returns a dict with keys ``val_auc``, ``val_eer``, ``val_threshold``, ``val_rank1``.
        """
        with reproducible(self.config.num_threads, self.config.deterministic):
            return self.evaluate_source(self.prepare_val(data))

    def prepare_train(self, train: Any) -> ImageSource:
        """``train``'s images preprocessed (aligned) once: one source for several fits."""
        return train_source(train, self.encoder, self.config.cache_limit_mb, self._shows())

    def prepare_val(self, val: Any | None) -> ImageSource | None:
        """The held-out people preprocessed once (None stays None), for :meth:`evaluate_source`."""
        return val_source(val, self.encoder, self.config.cache_limit_mb, self._shows())

    def join(self, ctx: DistributedContext) -> None:
        """Work in the torchrun group ``ctx`` a caller holds (:meth:`fit` joins its own)."""
        self.context = ctx
        self.device = training_device(self.device, ctx)

    @torch.no_grad()
    def evaluate_source(self, source: ImageSource) -> dict[str, float]:
        """Validation metrics of a preprocessed source (see :meth:`evaluate`)."""
        return self._metrics(source, self.context).to_record()

    # -- the steps of fit ------------------------------------------------------------
    def _fit(
        self, train: Any, val: Any | None, out: Path | None, resume: bool, ctx: DistributedContext
    ) -> TrainResult:
        from tqdm.auto import tqdm

        with ExitStack() as stack:
            run = self._setup(train, val, out, resume, ctx, stack)
            epochs = range(len(run.history) + 1, self.config.epochs + 1)
            bar = tqdm(epochs, desc="training", unit="epoch", disable=not self._shows(ctx))
            for epoch in bar:
                record = self._epoch(run, epoch)
                bar.set_postfix(_postfix(record))
            bar.close()
        return self._finish(run)

    def _setup(
        self,
        train: Any,
        val: Any | None,
        out: Path | None,
        resume: bool,
        ctx: DistributedContext,
        stack: ExitStack,
    ) -> _Run:
        """Check the group, read the checkpoint, load the data, build model and optimiser."""
        cfg = self.config
        computed = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_SETTINGS}
        if not all_equal([computed, repr(self.loss), repr(self.miner)], ctx):
            raise ConfigError(
                "the processes were given different settings, losses or miners: start every "
                "rank with the same arguments"
            )
        self.device = training_device(self.device, ctx)
        state = self._start_state(out, resume)
        if not all_equal(0 if state is None else state["epoch"], ctx):
            raise TrainingError(
                f"the processes see different checkpoints in {out}: every rank must read the "
                "same output folder (on several machines, a shared filesystem)"
            )
        sources = (self.prepare_train(train), self.prepare_val(val))
        sampler = ClassBalancedBatchSampler(
            sources[0].labels, m_per_class=cfg.m_per_class, batch_size=cfg.batch_size, seed=cfg.seed
        )
        check_world(sampler, ctx)
        optimizer = self._prepare(state)
        model = parallel_model(self.encoder, ctx, self.device, cfg.sync_batchnorm, stack)
        history = [EpochRecord.from_dict(r) for r in state["history"]] if state else []
        run = _Run(ctx, model, sources[0], sources[1], sampler, optimizer, out, history)
        if state is not None:
            run.best_epoch, run.best_value = state["best"]["epoch"], state["best"]["value"]
        return run

    def _epoch(self, run: _Run, epoch: int) -> EpochRecord:
        """Train one epoch, validate, keep the best weights, checkpoint."""
        record = self._train_epoch(run, epoch)
        if run.val is not None:
            record = replace(record, val=self._metrics(run.val, run.ctx))
        # Rank 0's record (its timings) is the run's: every rank decides alike.
        record = EpochRecord.from_dict(broadcast_json(record.to_dict(), run.ctx))
        run.history.append(record)
        if self._improved(record, run.best_value, run.best_epoch):
            run.best_epoch, run.best_value = epoch, _monitored(record, self.config.monitor)
            run.best_weights = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
            if run.out is not None and run.ctx.is_main:
                self.encoder.save(run.out, extra=self._model_extra(record.val, epoch))
        if run.out is not None and run.ctx.is_main:
            self._save_checkpoint(run, epoch)
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(self, record)
        return record

    def _finish(self, run: _Run) -> TrainResult:
        """Put the best weights back, fit whitening, write the model and the plot."""
        out, ctx = run.out, run.ctx
        if run.best_weights is not None:
            self.encoder.load_state_dict(run.best_weights)
        elif run.best_epoch and out is not None and run.best_epoch != len(run.history):
            self._restore_saved_best(out)
        metrics = run.history[run.best_epoch - 1].val if run.best_epoch else None
        if self._fit_whitening(run.train, ctx):
            metrics = self._metrics(run.val, ctx) if run.val is not None else None
            if out is not None and ctx.is_main:
                extra = self._model_extra(metrics, run.best_epoch, whitened=True)
                self.encoder.save(out, extra=extra)
        if out is not None and ctx.is_main:
            from siamkit.training.plots import plot_history

            plot_history(run.history, out / PLOT_FILE)
        barrier(ctx)  # every file is written before any rank returns
        return TrainResult(
            history=run.history,
            best_epoch=int(run.best_epoch),
            best={} if metrics is None else metrics.to_dict(),
            out_dir=out,
            skipped_images=run.train.skipped + (run.val.skipped if run.val else 0),
            metrics=metrics,
            world_size=ctx.world_size,
        )

    # -- training --------------------------------------------------------------------
    def _prepare(self, state: dict[str, Any] | None) -> torch.optim.Optimizer:
        """Move encoder and loss to the device, build AdamW, and load a resumed state."""
        cfg = self.config
        self.encoder.to(self.device)
        self.loss.to(self.device)
        for layer in whitening_layers(self.encoder):
            layer.reset()  # training sees the identity; refitted after the last epoch
        # The loss's own weights (ArcFace's class centres) train with the encoder's.
        params = list(self.encoder.parameters()) + list(self.loss.parameters())
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None:
            try:
                self.encoder.load_state_dict(state["model"])
                if "loss" in state:
                    self.loss.load_state_dict(state["loss"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
                raise TrainingError(
                    f"the checkpoint's weights do not fit this {type(self.encoder).__name__} "
                    f"and {type(self.loss).__name__}: {str(err).splitlines()[0]}. Resume with "
                    "the encoder, arguments and loss the run was started with, or start afresh "
                    "in another output directory"
                ) from None
        return optimizer

    def _train_epoch(self, run: _Run, epoch: int) -> EpochRecord:
        started = time.perf_counter()
        # Seeding per epoch makes a resumed run draw exactly what an unbroken one would.
        torch.manual_seed(self.config.seed * 100_003 + epoch)
        run.sampler.set_epoch(epoch)
        self.miner.set_epoch(epoch - 1)
        self.encoder.train()
        self.loss.train()
        steps = len(run.sampler)
        losses, lr = [], 0.0
        for step, indices in enumerate(run.sampler):
            lr = self._learning_rate((epoch - 1) * steps + step, steps)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            losses.append(self._step(run, indices, epoch, step))
            for callback in self.callbacks:
                if hasattr(callback, "on_batch_end"):
                    callback.on_batch_end(self, epoch, step, losses[-1])
        return EpochRecord(
            epoch=epoch,
            loss=float(np.mean(losses)),
            lr=lr,
            seconds=time.perf_counter() - started,
            threads=torch.get_num_threads(),
            world_size=run.ctx.world_size,
        )

    def _step(self, run: _Run, indices: list[int], epoch: int, step: int) -> float:
        """One optimiser step on a global batch; this rank embeds its share of it."""
        ctx = run.ctx
        mine = shard(indices, ctx)
        images = run.train.batch(mine).to(self.device)
        labels = torch.as_tensor(run.train.labels[mine], device=self.device)
        if isinstance(self.augment, FaceAugment) and ctx.enabled:
            images = self.augment.forward_shard(images, ctx.rank * len(mine), len(indices))
        elif self.augment is not None:
            images = self.augment(images)
        embeddings, labels = gather_batch(run.model(images), labels, ctx)
        try:
            pairs = self.miner(embeddings, labels)
            loss = self.loss.batch(embeddings, labels, pairs)
        except NonFiniteError:
            raise _DivergedError(
                f"training diverged at epoch {epoch}, batch {step + 1}: the embeddings "
                f"became NaN or infinite. Lower the learning rate (now {self.config.lr})"
            ) from None
        if not torch.isfinite(loss):
            raise _DivergedError(
                f"the loss became {loss.item()} at epoch {epoch}, batch {step + 1}: lower "
                f"the learning rate (now {self.config.lr})"
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        return float(loss.item())

    def _learning_rate(self, step: int, steps_per_epoch: int) -> float:
        cfg = self.config
        total = cfg.epochs * steps_per_epoch
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _shows(self, ctx: DistributedContext | None = None) -> bool:
        return self.progress and (ctx or self.context).is_main

    # -- validation ------------------------------------------------------------------
    def _metrics(self, source: ImageSource, ctx: DistributedContext) -> ValidationMetrics:
        return validation_metrics(self.encoder, source, ctx, self.device, self.metric)

    def _improved(self, record: EpochRecord, best: float | None, best_epoch: int) -> bool:
        value = _monitored(record, self.config.monitor)
        if value is None or best is None or not best_epoch:
            return True  # without validation the latest epoch is the best we know
        return value < best if self.config.monitor == "eer" else value > best

    def _fit_whitening(self, train: ImageSource, ctx: DistributedContext) -> bool:
        """Fit the encoder's Whitening layers on the training people (all ranks' shares)."""
        return fit_whitening(self.encoder, train, ctx, self.device, self.config.whiten)

    # -- persistence -----------------------------------------------------------------
    def _model_extra(
        self, metrics: ValidationMetrics | None, epoch: int, whitened: bool = False
    ) -> dict[str, Any]:
        record = TrainingRecord(
            epoch=epoch,
            metrics=metrics,
            whitened=whitened,
            config=self.config.to_dict(),
            margin=self.loss.margin,
            loss=repr(self.loss),
            miner=repr(self.miner),
            runtime=dict(self.runtime),
            world_size=self.context.world_size,
        )
        return {TRAINING_KEY: record.to_dict()}

    def _start_state(self, out: Path | None, resume: bool) -> dict[str, Any] | None:
        return resume_state(out, resume, self.config, self.encoder)

    def _save_checkpoint(self, run: _Run, epoch: int) -> None:
        assert run.out is not None
        remove_temporaries(run.out, RUN_FILES)  # of a save killed midway; rank 0 alone writes
        history = [record.to_dict() for record in run.history]
        runtime = dict(self.runtime)
        best = {"epoch": run.best_epoch, "value": run.best_value}
        write_checkpoint(
            run.out, epoch=epoch, encoder=self.encoder, loss=self.loss, optimizer=run.optimizer,
            history=history, best=best, config=self.config, runtime=runtime,
            world_size=run.ctx.world_size,
        )  # fmt: skip
        write_json(
            run.out / HISTORY_FILE,
            {"history": history, "best_epoch": run.best_epoch, "runtime": runtime},
        )

    def _restore_saved_best(self, out: Path) -> None:
        from siamkit.encoders.base import load_encoder

        saved = load_encoder(out, encoder_class=type(self.encoder))
        self.encoder.load_state_dict(saved.state_dict())


def _monitored(record: EpochRecord, monitor: str) -> float | None:
    return None if record.val is None else float(getattr(record.val, monitor))


def _postfix(record: EpochRecord) -> dict[str, str]:
    shown = {"loss": f"{record.loss:.4f}"}
    if record.val is not None:
        shown["val_auc"] = f"{record.val.auc:.4f}"
        shown["val_eer"] = f"{record.val.eer:.3f}"
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


__all__ = [
    "CHECKPOINT_FILE",
    "Callback",
    "TrainResult",
    "Trainer",
    "encoder_identity",
    "fit",
    "load_checkpoint",
]
