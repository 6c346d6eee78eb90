"""Fine-tuning a pretrained model, judged on held-out people: the candidates and the rule.

Fine-tuning a strong pretrained model on a few people easily makes it worse
on everyone else. So the face recipe tries a short, documented list of
strengths (:data:`FACE_CANDIDATES`, gentlest first, the frozen model among
them), measures each on people held out of training, and keeps a fine-tuned
model only when it beats the frozen one there clearly (:func:`choose_candidate`):
its equal error rate lower by at least one genuine pair's worth and its AUC
no lower. Otherwise, and whenever nobody is held out, it keeps the frozen
model. What it kept, and why, is a :class:`FineTuneSelection`, saved with the
model (:func:`save_face_run`, :func:`read_fine_tuning`).

Under ``torchrun`` every process trains each candidate together (data-parallel,
as :class:`~siamkit.training.Trainer` does), the held-out people are embedded
by all processes and gathered, and rank 0's choice is every rank's; rank 0
alone writes the kept model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamkit._atomic import remove_temporaries, write_json
from siamkit._manifest import parse_json
from siamkit.encoders.base import Encoder
from siamkit.exceptions import ConfigError, NonFiniteError
from siamkit.model_folder.layout import CANDIDATES_FOLDER, ENCODER_FILE, HISTORY_FILE, PLOT_FILE
from siamkit.model_folder.records import EpochRecord
from siamkit.training._sources import ImageSource
from siamkit.training.config import TrainConfig
from siamkit.training.distributed import (
    DistributedContext,
    broadcast_json,
    process_group,
    resolve_device,
)
from siamkit.training.trainer import Trainer, _DivergedError


@dataclass(frozen=True)
class FineTuneCandidate:
    """One fine-tuning strength the face recipe tries.

    Attributes:
        name: A short label (``"frozen"``, ``"head"``, ``"stage5"``).
        trainable_from: The first part of the network training may change
            (``DlibFaceResNet``'s ``trainable_from``); ``"none"`` is the frozen
            pretrained model, which is not trained at all.
        lr: Peak learning rate of AdamW (cosine decay, no warm-up).
        epochs: Passes over the training people.

    Examples:
        >>> FineTuneCandidate("stage5", "stage5", lr=1e-5, epochs=5).describe()
        'stage5 to the head trained at lr 1e-05 for 5 epochs'
        >>> FROZEN.frozen, FROZEN.describe()
        (True, 'the pretrained model, frozen')
    """

    name: str
    trainable_from: str
    lr: float = 0.0
    epochs: int = 0

    def __post_init__(self) -> None:
        if not self.frozen and (not self.lr > 0 or self.epochs < 1):
            raise ConfigError(
                f"fine-tuning candidate {self.name!r} needs a positive lr and at least one "
                f"epoch (got lr={self.lr}, epochs={self.epochs}); use trainable_from='none' "
                "for the frozen model"
            )

    @property
    def frozen(self) -> bool:
        """True for the pretrained model as it is."""
        return self.trainable_from == "none"

    def describe(self) -> str:
        """The candidate in words."""
        if self.frozen:
            return "the pretrained model, frozen"
        first = self.trainable_from
        parts = "the head" if first == "head" else f"{first} to the head"
        return f"{parts} trained at lr {self.lr:g} for {self.epochs} epochs"


FROZEN = FineTuneCandidate("frozen", "none")
#: The face recipe's candidates, gentlest first. Only about 1e-5 on the last
#: parts for a few epochs has been seen to help dlib's model on small sets;
#: stronger fine-tuning (1e-4 and up, or more of the network) made unseen
#: people worse, so it is not tried.
FACE_CANDIDATES: tuple[FineTuneCandidate, ...] = (
    FROZEN,
    FineTuneCandidate("head", "head", lr=1e-5, epochs=5),
    FineTuneCandidate("stage5", "stage5", lr=1e-5, epochs=5),
)


@dataclass(frozen=True)
class CandidateResult:
    """How one candidate did on the held-out people.

    Attributes:
        candidate: What was tried.
        auc: Verification AUC over all held-out pairs (None: not measured).
        eer: Equal error rate over the same pairs (None: not measured).
        rank1: Leave-one-out rank-1 identification rate (None: not measured).
        best_epoch: The epoch kept (0 for the frozen model).
        seconds: Wall time of its training and evaluation.
        error: Why it has no result (it diverged), else None.

    Examples:
        >>> CandidateResult(FROZEN, auc=0.999, eer=0.005).measured
        True
        >>> CandidateResult(FACE_CANDIDATES[1], error="diverged").measured
        False
    """

    candidate: FineTuneCandidate
    auc: float | None = None
    eer: float | None = None
    rank1: float | None = None
    best_epoch: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def measured(self) -> bool:
        """True when it has held-out metrics."""
        return self.auc is not None and self.eer is not None


@dataclass(frozen=True)
class FineTuneSelection:
    """Which fine-tuning strength the face recipe kept, and why.

    Attributes:
        kept: The kept candidate's name.
        reason: One sentence on why.
        results: Every candidate's held-out result, in the order tried.
        genuine_pairs: Same-person pairs among the held-out people.
        min_gain_pairs: How many genuine pairs' worth of EER a fine-tuned
            candidate had to gain over the frozen model.
        skipped_images: Images dropped because no face was found (policy ``"skip"``).

    Examples:
        >>> results = (CandidateResult(FROZEN, auc=0.999, eer=0.01),)
        >>> selection = FineTuneSelection("frozen", "only one", results, 100, 1.0)
        >>> FineTuneSelection.from_dict(selection.to_dict()) == selection
        True
        >>> selection.kept_result.eer
        0.01
    """

    kept: str
    reason: str
    results: tuple[CandidateResult, ...]
    genuine_pairs: int
    min_gain_pairs: float
    skipped_images: int = 0

    @property
    def kept_result(self) -> CandidateResult:
        """The kept candidate's result."""
        return next(r for r in self.results if r.candidate.name == self.kept)

    def summary(self) -> str:
        """One line: what was kept, and the held-out EER of every candidate."""
        measured = [
            f"{r.candidate.name} {100 * r.eer:.2f}%" if r.measured else f"{r.candidate.name} -"
            for r in self.results
        ]
        shown = f" (held-out EER: {', '.join(measured)})" if len(self.results) > 1 else ""
        return f"kept {self.kept}: {self.reason}{shown}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (:meth:`from_dict` reads it back)."""
        data = dataclasses.asdict(self)
        data["results"] = list(data["results"])  # as JSON gives it back
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneSelection:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: ``data`` is not such a record.
        """
        try:
            results = tuple(
                CandidateResult(**{**r, "candidate": FineTuneCandidate(**r["candidate"])})
                for r in data["results"]
            )
            return cls(**{**data, "results": results})
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a fine-tuning selection record: {err}") from None


@dataclass
class FineTuneOutcome:
    """What :func:`select_fine_tuning` returns.

    Attributes:
        encoder: The kept model (the frozen one, or the fine-tuned one's best epoch).
        selection: What was kept and why.
        history: The kept run's epoch records (empty for the frozen model).
        best_epoch: The kept run's best epoch (0 for the frozen model).
        rank: This process's rank under torch.distributed (0 alone writes
            with :func:`save_face_run`).
        world_size: How many processes trained the candidates together.

    Examples:
        >>> outcome = select_fine_tuning(face_encoder, split.train, split.val)  # doctest: +SKIP
        >>> outcome.selection.kept, outcome.best_epoch  # doctest: +SKIP
        ('frozen', 0)
    """

    encoder: Encoder
    selection: FineTuneSelection
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    rank: int = 0
    world_size: int = 1


def genuine_pair_count(labels: Sequence[int] | np.ndarray) -> int:
    """Same-person pairs among ``labels``: the sum of ``n (n - 1) / 2`` over people.

    Examples:
        >>> genuine_pair_count([0, 0, 0, 1, 1, 2])
        4
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def choose_candidate(
    results: Sequence[CandidateResult], genuine_pairs: int, min_gain_pairs: float = 1.0
) -> tuple[str, str]:
    """The candidate to keep, and why: the frozen one unless another clearly beats it.

    A fine-tuned candidate qualifies when its held-out EER is lower than the
    frozen model's by more than zero and by at least ``min_gain_pairs`` genuine
    pairs' worth (``min_gain_pairs / genuine_pairs``), and its AUC is no lower.
    Among those, the lowest EER wins, then the highest AUC, then the earliest
    (gentlest) in the list. Ties keep the frozen model.

    Raises:
        ConfigError: no frozen candidate, or it has no metrics.

    Examples:
        >>> frozen = CandidateResult(FROZEN, auc=0.99, eer=0.02)
        >>> tuned = FineTuneCandidate("head", "head", lr=1e-5, epochs=3)
        >>> choose_candidate([frozen, CandidateResult(tuned, auc=0.995, eer=0.01)], 100)[0]
        'head'
        >>> choose_candidate([frozen, CandidateResult(tuned, auc=0.98, eer=0.01)], 100)[0]
        'frozen'
    """
    baseline = next((r for r in results if r.candidate.frozen), None)
    if baseline is None or not baseline.measured:
        raise ConfigError("choosing a fine-tuning strength needs the frozen model's metrics")
    assert baseline.eer is not None and baseline.auc is not None
    needed = min_gain_pairs / max(1, genuine_pairs)
    better = [
        r
        for r in results
        if r.measured
        and not r.candidate.frozen
        and baseline.eer - r.eer > 0  # type: ignore[operator]
        and baseline.eer - r.eer >= needed - 1e-12  # type: ignore[operator]
        and r.auc >= baseline.auc  # type: ignore[operator]
    ]
    if not better:
        return baseline.candidate.name, (
            f"no fine-tuning lowered the held-out EER by {min_gain_pairs:g} genuine pair(s) "
            f"({100 * needed:.2f}%) or more without lowering AUC"
        )
    best = min(better, key=lambda r: (r.eer, -r.auc))  # min() keeps the earliest of ties
    return best.candidate.name, (
        f"{best.candidate.describe()} lowered the held-out EER from {100 * baseline.eer:.2f}% "
        f"to {100 * best.eer:.2f}% (AUC {baseline.auc:.5f} to {best.auc:.5f})"
    )


def candidate_config(base: TrainConfig, candidate: FineTuneCandidate) -> TrainConfig:
    """``base`` with the candidate's learning rate and epochs, and no warm-up.

    Examples:
        >>> config = candidate_config(TrainConfig(), FACE_CANDIDATES[1])
        >>> config.lr, config.epochs, config.warmup_epochs
        (1e-05, 5, 0)
    """
    return dataclasses.replace(base, lr=candidate.lr, epochs=candidate.epochs, warmup_epochs=0)


def select_fine_tuning(
    make_encoder: Callable[[str], Encoder],
    train: Any,
    val: Any | None,
    config: TrainConfig | None = None,
    candidates: Sequence[FineTuneCandidate] = FACE_CANDIDATES,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    min_gain_pairs: float = 1.0,
    progress: bool = False,
) -> FineTuneOutcome:
    """Try every candidate, judge them on ``val`` (other people), keep the best or the frozen one.

    Images are preprocessed (aligned) once and shared by all candidates.
    Under ``torchrun`` (or a process group the caller initialised) every
    process must make this call: each candidate trains data-parallel, and all
    processes return the same selection and kept weights (rank 0 decides).

    Args:
        make_encoder: Builds the starting model for a ``trainable_from``, the
            same weights every call (e.g. :func:`~siamkit.training.recipes.face_encoder`).
        train: The training people (a dataset, as for :meth:`Trainer.fit`).
        val: Held-out people; None (or empty) keeps the frozen model untried.
        config: Settings shared by the runs (batch size, seed, device...); each
            candidate sets its own learning rate and epochs.
        candidates: What to try; must include a frozen one.
        out_dir: Each run checkpoints in ``out_dir/candidates/<name>``.
        resume: Continue those runs.
        min_gain_pairs: See :func:`choose_candidate`.
        progress: Show progress bars.

    Raises:
        ConfigError: no frozen candidate, or two with one name.
        TrainingError: under torch.distributed, another process died or hung.

    Examples:
        >>> outcome = select_fine_tuning(face_encoder, split.train, split.val)  # doctest: +SKIP
        >>> outcome.selection.kept  # doctest: +SKIP
        'frozen'
    """
    config = config or TrainConfig()
    _check_candidates(candidates)
    frozen = next(c for c in candidates if c.frozen)
    with _process_group(config) as ctx:
        judge = _judge(make_encoder(frozen.trainable_from), config, ctx, progress)
        train_source = judge.prepare_train(train)
        val_source = judge.prepare_val(val) if val is not None and len(val) else None
        skipped = train_source.skipped + (val_source.skipped if val_source else 0)
        if val_source is None:
            return _frozen_untried(judge, frozen, min_gain_pairs, skipped, ctx)
        results, runs = _try_candidates(
            make_encoder, judge, candidates, (train_source, val_source), out_dir, resume
        )
        pairs = genuine_pair_count(val_source.labels)
        kept, reason = choose_candidate(results, pairs, min_gain_pairs)
        selection = FineTuneSelection(kept, reason, tuple(results), pairs, min_gain_pairs, skipped)
        # Rank 0's record (its timings) and choice are every rank's.
        selection = FineTuneSelection.from_dict(broadcast_json(selection.to_dict(), ctx))
        encoder, history, best_epoch = runs[selection.kept]
        return FineTuneOutcome(encoder, selection, history, best_epoch, ctx.rank, ctx.world_size)


def _frozen_untried(
    judge: Trainer, frozen: FineTuneCandidate, min_gain_pairs: float, skipped: int,
    ctx: DistributedContext,
) -> FineTuneOutcome:  # fmt: skip
    """Nobody held out: the frozen model is kept, and nothing is tried."""
    why = "no people were held out to judge fine-tuning by"
    alone = (CandidateResult(frozen),)
    selection = FineTuneSelection(frozen.name, why, alone, 0, min_gain_pairs, skipped)
    return FineTuneOutcome(judge.encoder, selection, rank=ctx.rank, world_size=ctx.world_size)


@contextlib.contextmanager
def _process_group(config: TrainConfig) -> Iterator[DistributedContext]:
    """The torch.distributed group for the whole selection (every candidate's fit joins it).

    A group created here outlives each candidate's :meth:`Trainer.fit`, which
    would otherwise create and destroy one per candidate, and is destroyed at
    the end; a group the caller created is left open.
    """
    timeout = datetime.timedelta(seconds=config.dist_timeout)
    with process_group(resolve_device(config.device), timeout) as ctx:
        yield ctx


def _judge(base: Encoder, config: TrainConfig, ctx: DistributedContext, progress: bool) -> Trainer:
    """A trainer that preprocesses the images once and measures the frozen model.

    It embeds the held-out people the way a candidate's validation does: each
    rank its share, gathered, so every rank computes the same metrics.
    """
    judge = Trainer(base, config, progress=progress)
    judge.join(ctx)
    return judge


def _try_candidates(
    make_encoder: Callable[[str], Encoder],
    judge: Trainer,
    candidates: Sequence[FineTuneCandidate],
    sources: tuple[ImageSource, ImageSource],
    out_dir: str | os.PathLike | None,
    resume: bool,
) -> tuple[list[CandidateResult], dict[str, tuple[Encoder, list[EpochRecord], int]]]:
    """Every candidate's held-out result, in order, and the runs that have one."""
    train_source, val_source = sources
    frozen = next(c for c in candidates if c.frozen)
    started = time.perf_counter()
    results = [_measured(frozen, judge.evaluate(val_source), 0, time.perf_counter() - started)]
    runs: dict[str, tuple[Encoder, list[EpochRecord], int]] = {frozen.name: (judge.encoder, [], 0)}
    for candidate in (c for c in candidates if not c.frozen):
        folder = Path(out_dir) / CANDIDATES_FOLDER / candidate.name if out_dir else None
        result, run = _run_candidate(
            make_encoder, candidate, judge.config, train_source, val_source, folder, resume,
            judge.progress,
        )  # fmt: skip
        results.append(result)
        if run is not None:
            runs[candidate.name] = run
    return results, runs


def _check_candidates(candidates: Sequence[FineTuneCandidate]) -> None:
    names = [c.name for c in candidates]
    if not any(c.frozen for c in candidates):
        raise ConfigError("the candidates must include the frozen model (trainable_from='none')")
    if len(set(names)) != len(names):
        raise ConfigError(f"candidate names must differ, got {names}")


def _measured(
    candidate: FineTuneCandidate, metrics: dict[str, float], best_epoch: int, seconds: float
) -> CandidateResult:
    return CandidateResult(
        candidate,
        auc=float(metrics["val_auc"]),
        eer=float(metrics["val_eer"]),
        rank1=float(metrics["val_rank1"]),
        best_epoch=best_epoch,
        seconds=seconds,
    )


def _run_candidate(
    make_encoder: Callable[[str], Encoder],
    candidate: FineTuneCandidate,
    config: TrainConfig,
    train: ImageSource,
    val: ImageSource,
    folder: Path | None,
    resume: bool,
    progress: bool,
) -> tuple[CandidateResult, tuple[Encoder, list[EpochRecord], int] | None]:
    started = time.perf_counter()
    encoder = make_encoder(candidate.trainable_from)
    trainer = Trainer(encoder, candidate_config(config, candidate), progress=progress)
    try:
        fit = trainer.fit(train, val, folder, resume=resume)
    except (_DivergedError, NonFiniteError) as err:
        # A strength that blows up is a strength not to keep, not a failed run.
        failed = CandidateResult(candidate, seconds=time.perf_counter() - started, error=str(err))
        return failed, None
    metrics = {f"val_{k}": v for k, v in fit.best.items()}
    result = _measured(candidate, metrics, fit.best_epoch, time.perf_counter() - started)
    return result, (encoder, fit.history, fit.best_epoch)


def save_face_run(
    outcome: FineTuneOutcome, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write the kept model to ``out_dir`` with its selection, then drop the candidate runs.

    ``encoder.json``'s ``extra["fine_tuning"]`` and ``history.json``'s
    ``"fine_tuning"`` hold :meth:`FineTuneSelection.to_dict`; ``history.json``
    also holds the kept run's epochs, and ``loss_plot.png`` their curve.
    Under torch.distributed only rank 0 (``outcome.rank``) writes; the other
    ranks return at once.

    Examples:
        >>> save_face_run(outcome, "runs/faces")  # doctest: +SKIP
        PosixPath('runs/faces')
    """
    out = Path(out_dir)
    if outcome.rank != 0:
        return out
    record = outcome.selection.to_dict()
    remove_temporaries(out, (HISTORY_FILE, PLOT_FILE))  # of a save killed midway
    outcome.encoder.save(out, extra={**(extra or {}), "fine_tuning": record})
    write_json(
        out / HISTORY_FILE,
        {
            "history": [dict(epoch) for epoch in outcome.history],
            "best_epoch": outcome.best_epoch,
            "fine_tuning": record,
        },
    )
    if outcome.history:
        from siamkit.training.plots import plot_history

        plot_history(outcome.history, out / PLOT_FILE)
    shutil.rmtree(out / CANDIDATES_FOLDER, ignore_errors=True)
    return out


def read_fine_tuning(model_dir: str | os.PathLike) -> FineTuneSelection | None:
    """The fine-tuning selection saved with a model, or None if it has none.

    Raises:
        ConfigError: the record is malformed.

    Examples:
        >>> read_fine_tuning("runs/faces").kept  # doctest: +SKIP
        'frozen'
    """
    path = Path(model_dir) / ENCODER_FILE
    if not path.is_file():
        return None
    try:
        record = parse_json(path.read_text()).get("extra", {}).get("fine_tuning")
    except (OSError, ValueError, AttributeError):
        return None
    return None if record is None else FineTuneSelection.from_dict(record)


__all__ = [
    "FACE_CANDIDATES",
    "FROZEN",
    "CandidateResult",
    "FineTuneCandidate",
    "FineTuneOutcome",
    "FineTuneSelection",
    "candidate_config",
    "choose_candidate",
    "genuine_pair_count",
    "read_fine_tuning",
    "save_face_run",
    "select_fine_tuning",
]
