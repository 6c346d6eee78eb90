"""Training checkpoints: reading them safely, and the identity of the encoder they trained."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from siamkit._atomic import write_with
from siamkit._load_errors import load_error_reason
from siamkit.encoders.base import Encoder, encoder_registry
from siamkit.exceptions import ConfigError, ModelFileError, TrainingError
from siamkit.model_folder.layout import CHECKPOINT_FILE
from siamkit.training.config import TrainConfig

CHECKPOINT_FORMAT = "siamkit-checkpoint"
#: Version 2 adds the encoder's identity (name, class, constructor arguments) and
#: the runtime (thread count, deterministic kernels); version 3 the loss's own
#: state (e.g. ArcFace class weights) and the world size. Versions 1 and 2 are
#: still read.
CHECKPOINT_VERSION = 3


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
        f"cannot read checkpoint {path}: {load_error_reason(err)} ({type(err).__name__}). "
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
    if version >= 3:
        kinds.update(loss=dict)
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
    for part in ("model", "loss"):
        weights = state.get(part, {}).items()
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights):
            return f"{part} weights are not tensors"
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


def check_same_encoder(state: dict[str, Any], encoder: Encoder, out: Path) -> None:
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


__all__ = ["CHECKPOINT_FILE", "encoder_identity", "load_checkpoint"]


#: Settings that change only how a run executes, not what it computes up to the
#: last bits: a resume may change them.
EXECUTION_SETTINGS = frozenset({"num_threads", "deterministic", "cache_limit_mb", "dist_timeout"})


def resume_state(
    out: Path | None, resume: bool, config: TrainConfig, encoder: Encoder
) -> dict[str, Any] | None:
    """The checkpoint a run in ``out`` starts from: None for a fresh run.

    Raises:
        ConfigError: ``resume`` without an output folder.
        TrainingError: a checkpoint is there but ``resume`` is False, or its
            settings or encoder differ from these.
        ModelFileError: the checkpoint is unreadable or its settings invalid.
    """
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
    current = _as_run(config.to_dict())
    saved = _as_run(saved)
    differ = sorted(
        k for k in current if k not in EXECUTION_SETTINGS and saved.get(k) != current[k]
    )
    if differ:
        raise TrainingError(
            f"cannot resume {out}: its settings differ in {', '.join(differ)}; "
            "resume with the same settings"
        )
    check_same_encoder(state, encoder, out)
    return state


def _as_run(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as the run used them: a run saved before 0.3 augmented as for faces
    (no ``augmentation`` key), and ``flip=None`` (or no key) is 0.5 there, 0 for shapes."""
    kind = settings.get("augmentation") or "face"
    flip = settings.get("flip")
    flip = (0.5 if kind == "face" else 0.0) if flip is None else flip
    return {**settings, "augmentation": kind, "flip": flip}


def write_checkpoint(
    out: Path,
    *,
    epoch: int,
    encoder: Encoder,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    config: TrainConfig,
    runtime: dict[str, Any],
    world_size: int,
) -> None:
    """Write ``out/checkpoint.pt`` atomically: everything a resume needs, no pickled objects."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "loss": {k: v.detach().cpu() for k, v in loss.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": history,
        "best": best,
        "config": config.to_dict(),
        "encoder": encoder_identity(encoder),
        "runtime": runtime,
        "world_size": world_size,
    }
    write_with(out / CHECKPOINT_FILE, lambda handle: torch.save(state, handle))
