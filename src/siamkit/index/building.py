"""Building a face index from a folder of people: the flow ``siamkit index build`` runs.

:func:`build_index` loads nothing itself: it takes the encoder, makes (or with
``resume`` reopens) the gallery where :class:`BuildTarget` says, enrols the
folder (:mod:`siamkit.index.enrolment`: in chunks, saved as it grows; under
``torchrun`` every process embeds its share), calibrates the 1:1 and 1:N
thresholds and saves. A FAISS folder is written under its lock, by the main
process alone. Nothing here needs torch unless the build runs under
``torchrun`` or on a GPU.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamkit._torchrun import launched_by_torchrun
from siamkit.alignment.base import AlignmentStats
from siamkit.alignment.counts import counts_since, snapshot
from siamkit.exceptions import ConfigError, DataError, GeometryError
from siamkit.index.enrolment import PeriodicSave, enrol_folder_gathered
from siamkit.index.face_index import FaceIndex
from siamkit.index.results import Enrolled
from siamkit.index.stores.faiss.files import (
    LOCK_TIMEOUT,
    MANIFEST,
    check_index_folder,
    folder_lock,
)
from siamkit.thresholds import unreliable_reason

DEFAULT_FAR = 0.001
DEFAULT_FPIR = 0.01
DEFAULT_COLLECTION = "faces"


@dataclass(frozen=True)
class BuildTarget:
    """Where a built gallery lives: a FAISS index folder, or a Milvus collection.

    Attributes:
        store: ``"faiss"`` (the folder ``out``) or ``"milvus"`` (``uri`` and ``collection``).
        out: The FAISS index folder.
        uri: A Milvus Lite file or ``http://host:19530``.
        collection: The Milvus collection.
        index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or (FAISS) a factory string.

    Examples:
        >>> BuildTarget(out=Path("gallery-index")).describe()
        'gallery-index'
        >>> BuildTarget("milvus", uri="faces.db").describe()
        "the collection 'faces' at faces.db"
    """

    store: str = "faiss"
    out: Path | None = None
    uri: str | None = None
    collection: str = DEFAULT_COLLECTION
    index: str = "flat"

    def __post_init__(self) -> None:
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))

    def check(self) -> None:
        """Refuse, before any work, a target no gallery can be written to.

        Raises:
            ConfigError: a FAISS target without a folder; for Milvus, no ``uri``,
                a bad collection name or an index kind it has not.
            IndexFileError: the FAISS folder holds something else than a face index.
        """
        if self.store == "faiss":
            if self.out is None:
                raise ConfigError("a faiss build needs target.out, the index folder to write")
            check_index_folder(self.out)
            return
        from siamkit.index.stores.milvus import INDEX_KINDS, check_collection_name

        if self.uri is None:
            raise ConfigError(
                "a milvus build needs target.uri: a Milvus Lite file or http://host:19530"
            )
        check_collection_name(self.collection)
        if self.index not in INDEX_KINDS:
            raise ConfigError(
                f"--index for --store milvus is flat, hnsw or ivf, got {self.index!r} (FAISS "
                "factory strings are for the faiss store)"
            )

    def describe(self) -> str:
        """The gallery's place in words."""
        if self.store == "faiss":
            return str(self.out)
        return f"the collection {self.collection!r} at {self.uri}"

    def milvus_options(self) -> dict[str, Any]:
        """The connection :meth:`FaceIndex.connect` takes."""
        return {"uri": self.uri, "collection": self.collection}


@dataclass(frozen=True)
class BuildSettings:
    """How a build runs.

    Attributes:
        resume: Continue an interrupted build: keep what is stored, enrol the rest.
        batch_size: Images embedded at once.
        save_every: FAISS: save the growing folder at most this often (seconds).
        lock_timeout: FAISS: seconds to wait for another writer of the folder.
        device: Where a PyTorch model embeds (``cpu``, ``cuda``, ``auto``).
        calibrate_far: Target FAR of the 1:1 threshold; 0 or None skips it.
        calibrate_fpir: Target FPIR of the 1:N threshold; 0 or None skips it.
        progress: Show a progress bar (the main process only).

    Examples:
        >>> BuildSettings(resume=True).calibrate_far
        0.001
        >>> BuildSettings(save_every=-1)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: --save-every must be 0 or more seconds, got -1
    """

    resume: bool = False
    batch_size: int = 64
    save_every: float = 300.0
    lock_timeout: float = LOCK_TIMEOUT
    device: str = "cpu"
    calibrate_far: float | None = DEFAULT_FAR
    calibrate_fpir: float | None = DEFAULT_FPIR
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.save_every >= 0:  # also refuses NaN
            raise ConfigError(f"--save-every must be 0 or more seconds, got {self.save_every}")
        if not (math.isfinite(self.lock_timeout) and self.lock_timeout >= 0):
            raise ConfigError(f"--lock-timeout must be 0 or more seconds, got {self.lock_timeout}")


@dataclass
class BuiltIndex:
    """What :func:`build_index` built.

    Attributes:
        index: The gallery, saved.
        where: Its place in words.
        enrolled: The ids this build added, and the images it skipped.
        alignment: The aligner's counts over this build (None without one).
        calibration: One line per threshold: what was fitted, kept or why not.

    Examples:
        >>> target = BuildTarget(out=Path("idx"))
        >>> built = build_index("runs/faces", "gallery/", target)  # doctest: +SKIP
        >>> len(built.index), built.where  # doctest: +SKIP
        (400, 'idx')
    """

    index: FaceIndex
    where: str
    enrolled: Enrolled
    alignment: AlignmentStats | None
    calibration: list[str]


@dataclass(frozen=True)
class _OneProcess:
    """What a build outside torchrun knows of the process group (none), without torch."""

    rank: int = 0
    world_size: int = 1
    enabled: bool = False
    is_main: bool = True


def build_index(
    model: str | os.PathLike | Any, gallery: str | os.PathLike, target: BuildTarget,
    settings: BuildSettings | None = None,
) -> BuiltIndex | None:  # fmt: skip
    """Enrol ``gallery`` (``DIR/<person>/<image>``) into the index ``target`` names, calibrated.

    Every process of a ``torchrun`` group must call it; the other processes
    get None once their share is enrolled.

    Args:
        model: The model folder (or ONNX export), loaded once the target is
            checked and recorded with the gallery (``extra["model"]``), or an
            encoder object (nothing recorded).
        gallery: The image folder.
        target: Where the gallery goes.
        settings: How the build runs.

    Raises:
        IndexFileError: ``target.out`` holds something that is not a face index.
        ConfigError: bad settings, or a Milvus collection that holds a gallery
            already (without ``resume``).
        DuplicateIdError: an image is already enrolled (without ``resume``).

    Examples:
        >>> target = BuildTarget(out=Path("gallery-index"))
        >>> built = build_index("runs/faces", "gallery/", target)  # doctest: +SKIP
        >>> built.calibration  # doctest: +SKIP
        ['threshold 0.4811 at FAR 0.001 ...', 'identify threshold 0.4302 ...']
    """
    settings = settings or BuildSettings()
    target.check()  # before the model is loaded or an image embedded
    recorded, encoder = None, model
    if isinstance(model, (str, os.PathLike)):
        from siamkit import load_encoder  # the ONNX Runtime one where torch is missing

        recorded, encoder = str(Path(model).resolve()), load_encoder(model)
    ctx = _process_group()
    _place(encoder, settings.device, ctx)
    # Only the main process writes the folder: the others would wait for its lock forever.
    writing = target.out if ctx.is_main and target.store == "faiss" else None
    with gallery_writing(writing, settings.lock_timeout, create=True):
        index = _open_target(encoder, target, settings.resume, ctx, recorded)
        before = snapshot(encoder)
        added = _enrol(index, gallery, target, settings, ctx)
        alignment = counts_since(encoder, before)
        if not ctx.is_main:
            _leave(ctx)
            return None
        notes = calibrate_lines(index, settings.calibrate_far, settings.calibrate_fpir)
        index.save(target.out if target.store == "faiss" else None)
    _leave(ctx)
    return BuiltIndex(index, target.describe(), added, alignment, notes)


@contextlib.contextmanager
def gallery_writing(
    folder: Path | None, timeout: float, create: bool = False
) -> Iterator[None]:  # fmt: skip
    """Hold a FAISS index folder's write lock up to ``timeout`` s (``folder=None``: no lock).

    Raises:
        ConfigError: ``timeout`` is negative or not finite.
        LockTimeoutError: another writer held the lock too long.
    """
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ConfigError(f"--lock-timeout must be 0 or more seconds, got {timeout}")
    if folder is None:
        yield
        return
    with folder_lock(folder, timeout, create=create):
        yield


def calibrate_lines(
    index: FaceIndex, target_far: float | None, target_fpir: float | None
) -> list[str]:
    """Calibrate ``index`` for each target given, and say what came of it, one line per kind.

    A target of 0 or None keeps the threshold there is; a gallery that cannot
    be calibrated (a single person, say) gets its reason, not an error.
    """
    return [_calibrate_far(index, target_far), _calibrate_fpir(index, target_fpir)]


def _open_target(
    encoder: Any, target: BuildTarget, resume: bool, ctx: Any, model: str | None
) -> FaceIndex:
    """The index a build fills: new, or the interrupted one with ``resume``."""
    if target.store == "faiss":
        if resume and (target.out / MANIFEST).exists():
            index = FaceIndex.load(target.out, encoder)
        else:
            index = FaceIndex(encoder, index=target.index)
        if model is not None:
            index.extra["model"] = model
        return index
    options = target.milvus_options()
    if ctx.is_main and not resume:
        try:
            index = FaceIndex(encoder, index=target.index, store="milvus", **options)
        except GeometryError:
            raise  # a collection of another metric: --resume would not help
        except ConfigError:  # target.check() passed the kind: the collection holds a gallery
            raise ConfigError(
                f"the collection {target.collection!r} at {target.uri} already holds a "
                "gallery: pass --resume to continue enrolling into it, or choose another "
                "--collection"
            ) from None
        if model is not None:
            index.extra["model"] = model
        index.save()
    _barrier(ctx)  # the collection exists before the other processes connect
    if ctx.is_main and not resume:
        return index
    index = FaceIndex.connect(encoder, **options)
    if ctx.is_main and model is not None:
        index.extra["model"] = model
    return index


def _enrol(
    index: FaceIndex, gallery: Any, target: BuildTarget, settings: BuildSettings, ctx: Any
) -> Enrolled:
    existing = "skip" if settings.resume else "error"
    progress = settings.progress and ctx.is_main
    if target.store != "faiss":  # every process writes its share into the collection
        shard = (ctx.rank, ctx.world_size) if ctx.enabled else None
        added = index.add_folder(gallery, existing=existing, batch_size=settings.batch_size,
                                 progress=progress, shard=shard)  # fmt: skip
        _barrier(ctx)
        if ctx.is_main:
            index.compact()  # seal the inserts: searches right after a bulk insert are slow
        return added
    if ctx.enabled:  # each process embeds its share for the main one, which holds the store
        return enrol_folder_gathered(index, gallery, ctx, existing=existing,
                                     batch_size=settings.batch_size, progress=progress)  # fmt: skip
    saver = PeriodicSave(index, target.out, settings.save_every)  # type: ignore[arg-type]
    return index.add_folder(gallery, existing=existing, batch_size=settings.batch_size,
                            progress=progress, on_chunk=saver)  # fmt: skip


def _place(encoder: Any, device: str, ctx: Any) -> None:
    """Move the model to ``device`` (one GPU per process under torchrun)."""
    if device == "cpu":
        return  # nothing to import: an ONNX export builds without torch
    if not hasattr(encoder, "to"):
        raise ConfigError(
            "an ONNX export embeds with ONNX Runtime on the CPU: drop --device, or build "
            "with the PyTorch model"
        )
    from siamkit.training.distributed import resolve_device, training_device

    encoder.to(training_device(resolve_device(device), ctx))


def _process_group() -> Any:
    """The torchrun process group when launched by it, else a one-process context."""
    if not launched_by_torchrun():
        return _OneProcess()
    import torch

    from siamkit.training.distributed import init_distributed

    return init_distributed(torch.device("cpu"))


def _barrier(ctx: Any) -> None:
    if ctx.enabled:
        from siamkit.training.distributed import barrier

        barrier(ctx)


def _leave(ctx: Any) -> None:
    if ctx.enabled:
        from siamkit.training.distributed import barrier, shutdown

        barrier(ctx)
        shutdown(ctx)


def _trust(report: Any) -> str:
    """What a fresh calibration's line adds: why not to trust it, or its first warning."""
    reason = unreliable_reason(report)
    first = f"; {report.warnings[0]}" if report.warnings else ""
    if reason is not None:
        return f"; unreliable ({reason}), use with care{first}"
    return first


def _calibrate_far(index: FaceIndex, target_far: float | None) -> str:
    if not target_far:
        if index.threshold is None:
            return "no 1:1 threshold (calibrate with --calibrate-far)"
        return f"1:1 threshold {index.threshold:.4f} kept (recalibrate with --calibrate-far)"
    try:
        report = index.calibrate(target_far=target_far)
    except DataError as err:
        return f"1:1 not calibrated ({err})"
    return (
        f"threshold {report.threshold:.4f} at FAR {report.far:.4g} (target {target_far:g}), "
        f"TAR {report.tar:.3f} on {report.num_genuine} genuine / {report.num_impostor} "
        f"impostor pairs{_trust(report)}"
    )


def _calibrate_fpir(index: FaceIndex, target_fpir: float | None) -> str:
    if not target_fpir:
        if index.identify_threshold is None:
            return "no 1:N threshold (calibrate with --calibrate-fpir)"
        return (
            f"1:N threshold {index.identify_threshold:.4f} kept (recalibrate with --calibrate-fpir)"
        )
    try:
        report = index.calibrate(target_fpir=target_fpir)
    except DataError as err:
        return f"1:N not calibrated ({err})"
    fnir = "n/a" if report.fnir is None else f"{report.fnir:.3f}"
    return (
        f"identify threshold {report.threshold:.4f} at FPIR {report.fpir:.4g} (target "
        f"{target_fpir:g}), expected FNIR {fnir} on {report.num_non_mated} stranger / "
        f"{report.num_mated} known searches{_trust(report)}"
    )


__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_FAR",
    "DEFAULT_FPIR",
    "BuildSettings",
    "BuildTarget",
    "BuiltIndex",
    "build_index",
    "calibrate_lines",
    "gallery_writing",
]
