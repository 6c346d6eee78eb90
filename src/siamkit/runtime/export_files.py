"""The files of an exported encoder: ``NAME.onnx``, its manifest ``NAME.onnx.json``, and its data.

An export may come from anywhere, so its manifest is checked completely before
anything else is read: every field's type and range, no unknown or missing
key, the file names it gives (plain names in its own folder). Format version 2
added ``external_data``, the size and SHA-256 of every file besides the graph
that ONNX Runtime reads (a graph over 2 GB keeps its weights in ``NAME.onnx.data``);
version 1 manifests still load, for graphs that read no other file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit.exceptions import ConfigError, ModelFileError
from siamkit.geometry import METRICS
from siamkit.model_folder.layout import ENCODER_FILE
from siamkit.runtime.preprocessing import Preprocessing

FORMAT_NAME = "siamkit-onnx"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = frozenset({1, 2})
MANIFEST_SUFFIX = ".json"
#: The graph file name a folder export uses.
FOLDER_GRAPH = "encoder.onnx"
#: What a manifest may name as its graph: a plain name of this shape in its own folder.
GRAPH_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.onnx")
#: What it may name as an external-data file: a plain name in the same folder.
DATA_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
#: The largest embedding size accepted from a manifest (as for a face index).
MAX_DIM = 1 << 16
#: The most external-data files a manifest may list (an export writes at most one).
MAX_DATA_FILES = 1024
#: The manifest of a saved PyTorch model: a folder holding one is that model,
#: whatever else it holds.
PYTORCH_MANIFEST = ENCODER_FILE
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[^\x00-\x1f]{1,200}")


def graph_path(path: str | Path) -> Path:
    """The ``.onnx`` file an export path means (the file, or ``encoder.onnx`` in a folder)."""
    path = Path(path)
    return path / FOLDER_GRAPH if path.is_dir() else path


def manifest_path(graph: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return graph.with_name(graph.name + MANIFEST_SUFFIX)


def is_export(path: str | Path) -> bool:
    """True for a ``.onnx`` file or a folder holding an export (:func:`load_encoder` takes both).

    A folder that also holds a saved PyTorch model (``encoder.json``; older
    siamkit exported into model folders) is that model: the export in it is a
    copy that re-saving the model does not update. Load ``FOLDER/encoder.onnx``
    for the export.
    """
    path = Path(path)
    if path.is_dir():
        return (
            manifest_path(path / FOLDER_GRAPH).is_file() and not (path / PYTORCH_MANIFEST).exists()
        )
    return path.suffix == ".onnx"


def check_export_target(path: str | Path) -> Path:
    """Where an export to ``path`` writes its graph; refuses names that are not ``*.onnx``."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return Path(path) / FOLDER_GRAPH
    if path.suffix != ".onnx" or not GRAPH_FILE.fullmatch(path.name):
        raise ModelFileError(
            f"cannot export to {path}: name a .onnx file (letters, digits, . _ -) or a folder"
        )
    return path


def data_file_names(manifest: dict[str, Any]) -> list[str]:
    """The external-data files a checked manifest lists (none before format version 2)."""
    return [entry["name"] for entry in manifest.get("external_data", [])]


# -- the manifest's schema -------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_text(value: Any, limit: int = 200) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _valid_preprocessing(value: Any) -> bool:
    if value is None:
        return True
    try:
        Preprocessing.from_dict(value)
    except ConfigError:
        return False
    return True


def _valid_aligner(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict)
        and set(value) == {"name", "config"}
        and isinstance(value["name"], str)
        and _NAME.fullmatch(value["name"]) is not None
        and isinstance(value["config"], dict)
    )


def _valid_encoder(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"name"}
        and (value["name"] is None or _is_text(value["name"]))
    )


def _valid_data_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and set(entry) == {"name", "bytes", "sha256"}
        and isinstance(entry["name"], str)
        and DATA_FILE.fullmatch(entry["name"]) is not None
        and _is_int(entry["bytes"])
        and 0 <= entry["bytes"] < 1 << 53
        and _is_hex64(entry["sha256"])
    )


def _valid_data_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_DATA_FILES
        and all(_valid_data_entry(entry) for entry in value)
    )


#: Each field: (its check, what it must be).
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: v == FORMAT_NAME, repr(FORMAT_NAME)),
    "format_version": (lambda v: _is_int(v) and v in SUPPORTED_VERSIONS, "1 or 2"),
    "graph": (
        lambda v: isinstance(v, str) and GRAPH_FILE.fullmatch(v) is not None,
        "a plain .onnx file name in the manifest's folder",
    ),
    "graph_sha256": (_is_hex64, "64 lowercase hex digits"),
    "embedding_dim": (lambda v: _is_int(v) and 0 < v <= MAX_DIM, f"a whole number 1..{MAX_DIM}"),
    "metric": (lambda v: v in METRICS, " or ".join(METRICS)),
    "fingerprint": (_is_hex64, "64 lowercase hex digits"),
    "preprocessing": (_valid_preprocessing, "null or {mode, size, scale, offset} in range"),
    "aligner": (_valid_aligner, "null or {name, config}"),
    "encoder": (_valid_encoder, "{name: null or text}"),
    "opset": (lambda v: _is_int(v) and 1 <= v <= 1000, "a whole number 1..1000"),
    "input": (lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None, "a name"),
    "output": (lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None, "a name"),
    "siamkit_version": (_is_text, "text"),
    "torch_version": (_is_text, "text"),
}
#: Fields added by format version 2.
_FIELDS_V2: dict[str, tuple[Callable[[Any], bool], str]] = {
    "external_data": (
        _valid_data_list,
        f"a list (at most {MAX_DATA_FILES}) of {{name, bytes, sha256}}, each name a plain "
        "file name in the manifest's folder",
    ),
}


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest with a missing, unknown, mistyped or out-of-range field.

    Raises:
        ModelFileError: naming the file and the first problems found.

    Examples:
        >>> check_manifest({"format": FORMAT_NAME, "format_version": 2}, Path("m.onnx.json"))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ModelFileError: m.onnx.json is damaged or was edited: missing field ...
    """
    problems = manifest_problems(manifest)
    if problems:
        raise ModelFileError(
            f"{path} is damaged or was edited: {'; '.join(problems[:3])}. Export the model again"
        )


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with an export manifest, field by field (empty when nothing is)."""
    checks = {**_FIELDS, **(_FIELDS_V2 if manifest.get("format_version") != 1 else {})}
    problems = [f"unknown field {key!r}" for key in sorted(set(manifest) - set(checks), key=str)]
    problems += [f"missing field {key!r}" for key in sorted(set(checks) - set(manifest))]
    for key, (ok, expected) in checks.items():
        if key in manifest and not ok(manifest[key]):
            problems.append(f"invalid {key} {_short(manifest[key])} (expected {expected})")
    if problems:
        return problems
    names = data_file_names(manifest)
    own = {manifest["graph"], manifest["graph"] + MANIFEST_SUFFIX}
    if len(set(names)) != len(names) or own & set(names):
        return [f"external_data names a file twice, or the graph or manifest: {names[:5]}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
