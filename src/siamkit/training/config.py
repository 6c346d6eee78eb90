"""Training settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from siamkit.exceptions import ConfigError
from siamkit.training.runtime import resolve_num_threads

#: The kinds of augmentation (:data:`siamkit.training.augment.AUGMENTATIONS`).
AUGMENTATION_KINDS = ("face", "shape")


@dataclass
class TrainConfig:
    """Settings of :class:`~siamkit.training.Trainer`, with defaults tuned for small face sets.

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per batch (``m_per_class`` of each of several people).
        m_per_class: Images of each person in a batch.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up before the cosine decay.
        margin: Contrastive margin; None takes the encoder's ``default_margin``
            if it has one, else 0.5 for cosine and 1.0 for Euclidean encoders.
        miner: Name of a registered pair miner (``"all"``, ``"hard"``...); ``"hard"``
            keeps the negatives closer than the contrastive margin, the pairs
            the loss learns from.
        augment: Apply :class:`~siamkit.training.FaceAugment` to training batches.
        flip: Its probability of a horizontal flip: 0.5 suits faces; 0 for
            classes a mirror image changes (characters, text). None: 0.5,
            unless a recipe chooses (``siamkit train`` turns flips off for
            data that holds no faces, and saves its choice with the run).
            For ``augmentation="shape"``, None means 0.
        augmentation: What the augmentation suits: ``"face"``
            (:class:`~siamkit.training.FaceAugment`: flips, rotations, zooms,
            shifts, brightness and contrast) or ``"shape"``
            (:class:`~siamkit.training.ShapeAugment`: rotations, shears,
            stretches and shifts of line drawings, no lighting changes).
        whiten: After training, fit the encoder's
            :class:`~siamkit.encoders.Whitening` layers (if it has any) on the
            training people.
        seed: Seeds initialisation, batches and augmentation.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``.
        monitor: Validation metric that picks the best checkpoint (``"auc"`` or ``"eer"``).
        cache_limit_mb: Keep the preprocessed training images in memory up to this size.
        num_threads: torch intra-op threads during training; None takes
            ``min(4, CPUs available)``. A seeded run repeats bit for bit on the
            same machine with the same thread count; the count used is recorded
            with the run. Resuming with another count is allowed.
        deterministic: Use torch's deterministic kernels during training;
            without them, multi-threaded gradient sums vary from run to run in
            the last bits. No measurable cost on a CPU; deterministic cuDNN
            kernels can be slower on a GPU.
        sync_batchnorm: Under torch.distributed, normalise BatchNorm layers
            with the statistics of the global batch (all ranks), as one process
            would; the saved encoder keeps its plain layers.
        dist_timeout: Seconds a process waits for the others in a collective
            before the run fails with an error (a dead or hung peer), instead
            of hanging.

    Examples:
        >>> TrainConfig(epochs=5).epochs
        5
    """

    epochs: int = 150
    batch_size: int = 120
    m_per_class: int = 4
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 15
    margin: float | None = None
    miner: str = "all"
    augment: bool = True
    flip: float | None = None
    augmentation: str = "face"
    whiten: bool = True
    seed: int = 0
    device: str = "cpu"
    monitor: str = "auc"
    cache_limit_mb: int = 2048
    num_threads: int | None = None
    deterministic: bool = True
    sync_batchnorm: bool = True
    dist_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.m_per_class < 2:
            raise ConfigError("m_per_class must be at least 2, so batches hold matching pairs")
        if self.batch_size < 2 * self.m_per_class:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must hold at least two people: "
                f"use >= {2 * self.m_per_class}"
            )
        if self.flip is not None and not 0 <= self.flip <= 1:
            raise ConfigError(f"flip is a probability in [0, 1], got {self.flip}")
        if self.augmentation not in AUGMENTATION_KINDS:
            raise ConfigError(
                f"augmentation must be one of {', '.join(AUGMENTATION_KINDS)}, "
                f"got {self.augmentation!r}"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.margin is not None and not self.margin > 0:
            raise ConfigError(f"margin must be positive, got {self.margin}")
        if self.monitor not in ("auc", "eer"):
            raise ConfigError(f"monitor must be 'auc' or 'eer', got {self.monitor!r}")
        if not self.dist_timeout > 0:
            raise ConfigError(f"dist_timeout must be positive seconds, got {self.dist_timeout}")
        if self.num_threads is not None:
            resolve_num_threads(self.num_threads)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
