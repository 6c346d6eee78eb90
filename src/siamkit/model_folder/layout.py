"""The model folder: what a training run writes, and the checks before one writes there.

One module owns the layout, so training, evaluation, export, the CLI and the
demo agree on it without importing each other. A model folder holds::

    encoder.json            the manifest (load_encoder reads it; Encoder.save writes it)
    encoder-<hash>.pt       the weights it names
    checkpoint.pt           the last epoch, to resume from (Trainer)
    history.json            one record per epoch (Trainer)
    loss_plot.png           the history drawn (Trainer)
    split.json              which people trained and which were held out (siamkit train)
    candidates/             the face recipe's fine-tuning candidates, while it runs
    evaluation/             siamkit eval's report, by default

Nothing here imports torch: ``siamkit eval`` reads a model folder beside an
ONNX export too.

Examples:
    >>> is_run_file("history.json"), is_run_file("holiday.jpg")
    (True, False)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from siamkit._atomic import remove_temporaries, write_json
from siamkit._manifest import parse_json
from siamkit.exceptions import ConfigError, ModelFileError, TrainingError

ENCODER_FILE = "encoder.json"
#: The only weights file names a manifest may name: what ``Encoder.save`` writes.
WEIGHTS_FILE = re.compile(r"encoder-[0-9a-f]{16}\.pt")
#: Where ``Encoder.save`` stages the weights before renaming them into place.
WEIGHTS_STAGING_FILE = ".encoder-weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
PLOT_FILE = "loss_plot.png"
SPLIT_FILE = "split.json"
CANDIDATES_FOLDER = "candidates"
EVAL_FOLDER = "evaluation"
#: The files of a run in progress, whose temporaries a save killed midway leaves.
RUN_FILES = (CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE, SPLIT_FILE)
#: What says a run was started there (and is continued only when asked).
STARTED_FILES = (CHECKPOINT_FILE, HISTORY_FILE, CANDIDATES_FOLDER)
#: The key of ``encoder.json``'s ``extra`` that holds the training record.
TRAINING_KEY = "training"

_WRITTEN = {ENCODER_FILE, CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE, SPLIT_FILE, EVAL_FOLDER,
            CANDIDATES_FOLDER}  # fmt: skip


def is_run_file(name: str) -> bool:
    """Whether a training run writes a file or folder of this name (temporaries included).

    Examples:
        >>> is_run_file("encoder-0123456789abcdef.pt"), is_run_file(".history.json.x1.tmp")
        (True, True)
    """
    temporary = name.startswith(".") and (name.endswith(".tmp") or name == WEIGHTS_STAGING_FILE)
    return name in _WRITTEN or bool(WEIGHTS_FILE.fullmatch(name)) or temporary


def check_out_folder(
    out: str | os.PathLike, resume: bool, *, out_name: str = "out_dir",
    resume_name: str = "resume=True",
) -> None:  # fmt: skip
    """Refuse an output folder a run must not write into, before any work.

    A run writes only into a new or empty folder, or one holding a run's own
    files; a started run there is continued only with ``resume``.

    Args:
        out: The model folder.
        resume: Whether the caller continues a run there.
        out_name: How the caller names the folder in errors (``--out`` for the CLI).
        resume_name: How the caller asks to resume (``--resume`` for the CLI).

    Raises:
        ConfigError: ``out`` is a file, or holds files no run writes.
        TrainingError: ``out`` holds a started run and ``resume`` is False.

    Examples:
        >>> import tempfile
        >>> check_out_folder(tempfile.mkdtemp(), resume=False)
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out_name} {out} is a file: pass a folder for the model")
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if not is_run_file(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"{out_name} {out} holds files that are not from a training run ({shown}): pick a "
            "new or empty folder, so nothing there is overwritten or deleted"
        )
    started = [name for name in STARTED_FILES if (out / name).exists()]
    if started and not resume:
        raise TrainingError(
            f"{out} already holds a training run ({started[0]}): add {resume_name} to "
            f"continue it, or pick another {out_name}"
        )


def write_split(out: str | os.PathLike, split: dict[str, Any]) -> None:
    """Write ``split.json`` (the data and which people trained and were held out)."""
    remove_temporaries(out, [SPLIT_FILE])  # of a run killed while writing it
    write_json(Path(out) / SPLIT_FILE, split)


def check_resume_split(
    out: str | os.PathLike, val_classes: list[Any], *, advice: str = "hold out the same people"
) -> None:
    """Refuse to resume a run in ``out`` that held out other people than ``val_classes``.

    Raises:
        TrainingError: ``split.json`` is unreadable, or names other held-out people.

    Examples:
        >>> import tempfile
        >>> check_resume_split(tempfile.mkdtemp(), ["ann"])  # no split.json: nothing to check
    """
    path = Path(out) / SPLIT_FILE
    if not path.exists():
        return
    try:
        saved = parse_json(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(
            f"cannot resume {out}: {path} is unreadable ({err}); restore it, or start "
            "a new run in another folder"
        ) from None
    held_out = saved.get("val_classes") if isinstance(saved, dict) else saved
    if held_out != val_classes:
        raise TrainingError(
            f"cannot resume {out}: it held out {held_out}, this call {val_classes}; {advice}"
        )


def read_model_manifest(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``encoder.json`` of a model folder; None where there is none.

    Raises:
        ModelFileError: ``encoder.json`` is unreadable or not a JSON object.
    """
    path = Path(model_dir) / ENCODER_FILE
    if not path.is_file():
        return None
    try:
        manifest = parse_json(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"cannot read {path}: {err}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path} is not a siamkit model manifest (not a JSON object)")
    return manifest


def evaluation_folder(model: str | os.PathLike) -> Path:
    """Where ``siamkit eval`` writes without ``--out``: inside a model folder, beside a file.

    Examples:
        >>> evaluation_folder("runs/faces").as_posix()
        'runs/faces/evaluation'
        >>> evaluation_folder("exports/model.onnx").as_posix()
        'exports/model-evaluation'
    """
    model = Path(model)
    if model.suffix == ".onnx" and not model.is_dir():
        return model.with_name(f"{model.stem}-{EVAL_FOLDER}")
    return model / EVAL_FOLDER


__all__ = [
    "CANDIDATES_FOLDER",
    "CHECKPOINT_FILE",
    "ENCODER_FILE",
    "EVAL_FOLDER",
    "HISTORY_FILE",
    "PLOT_FILE",
    "RUN_FILES",
    "SPLIT_FILE",
    "STARTED_FILES",
    "TRAINING_KEY",
    "WEIGHTS_FILE",
    "WEIGHTS_STAGING_FILE",
    "check_out_folder",
    "check_resume_split",
    "evaluation_folder",
    "is_run_file",
    "read_model_manifest",
    "write_split",
]
