"""The schema of ``encoder.json``, a saved model's manifest, checked field by field.

A model folder may come from anywhere, so everything in its manifest is
checked before any of it is used: each field's type and range, no unknown or
missing field, the weights file's name against its checksum. What the fields
claim about the model (its size, metric and fingerprint) is checked against
the rebuilt model once it is loaded (:func:`~siamkit.encoders.load_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit._manifest import field_problems, is_int, is_sha256
from siamkit.encoders._checks import MAX_EMBEDDING_DIM
from siamkit.exceptions import ModelFileError
from siamkit.geometry import METRICS
from siamkit.model_folder.layout import WEIGHTS_FILE

FORMAT_NAME = "siamkit-encoder"
#: Version 2 added the face aligner (``aligner``); version 1 files still load.
FORMAT_VERSION = 2
_MAX_TEXT = 500


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_TEXT


_FIELDS: dict[str, Callable[[Any], bool]] = {
    "format": lambda v: v == FORMAT_NAME,
    "format_version": lambda v: is_int(v) and 1 <= v <= FORMAT_VERSION,
    "name": _text,
    "class": _text,
    "config": lambda v: isinstance(v, dict),
    "embedding_dim": lambda v: is_int(v) and 1 <= v <= MAX_EMBEDDING_DIM,
    "metric": lambda v: v in METRICS,
    "weights": lambda v: isinstance(v, str) and WEIGHTS_FILE.fullmatch(v) is not None,
    "weights_sha256": is_sha256,
    "fingerprint": is_sha256,
    "siamkit_version": _text,
    "torch_version": _text,
    "extra": lambda v: isinstance(v, dict),
}


def _aligner_block(value: Any) -> bool:
    # What FaceAligner.describe() writes; the aligner checks its own config.
    return (
        isinstance(value, dict)
        and set(value) == {"name", "config"}
        and _text(value["name"])
        and isinstance(value["config"], dict)
    )


#: Fields of format version 2 that a model without an aligner leaves out.
_OPTIONAL_V2: dict[str, Callable[[Any], bool]] = {"aligner": _aligner_block}


def check_encoder_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest with a missing, unknown, mistyped or inconsistent field.

    Raises:
        ModelFileError: naming the file and the first problems found.

    Examples:
        >>> check_encoder_manifest({"format": FORMAT_NAME, "format_version": 1}, Path("e.json"))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ModelFileError: e.json is damaged or was edited: missing field 'name'...
    """
    optional = _OPTIONAL_V2 if manifest.get("format_version") == 2 else {}
    problems = field_problems(manifest, _FIELDS, optional)
    if not problems and manifest["weights"] != f"encoder-{manifest['weights_sha256'][:16]}.pt":
        problems.append(
            f"the weights file {manifest['weights']!r} is not named by its checksum "
            f"{manifest['weights_sha256'][:16]}..."
        )
    if problems:
        raise ModelFileError(
            f"{path} is damaged or was edited: {'; '.join(problems[:3])}. Nothing was loaded; "
            "save the model again from the original"
        )
