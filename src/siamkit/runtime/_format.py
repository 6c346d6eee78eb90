"""The files of an exported encoder: ``NAME.onnx`` and its manifest ``NAME.onnx.json``."""

from __future__ import annotations

import re
from pathlib import Path

from siamkit.exceptions import ModelFileError

FORMAT_NAME = "siamkit-onnx"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
#: The graph file name a folder export uses.
FOLDER_GRAPH = "encoder.onnx"
#: What a manifest may name as its graph: a plain name of this shape in its own folder.
GRAPH_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.onnx")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def graph_path(path: str | Path) -> Path:
    """The ``.onnx`` file an export path means (the file, or ``encoder.onnx`` in a folder)."""
    path = Path(path)
    return path / FOLDER_GRAPH if path.is_dir() else path


def manifest_path(graph: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return graph.with_name(graph.name + MANIFEST_SUFFIX)


def is_export(path: str | Path) -> bool:
    """True for a ``.onnx`` file or a folder holding an export (:func:`load_encoder` takes both)."""
    path = Path(path)
    if path.is_dir():
        return manifest_path(path / FOLDER_GRAPH).is_file()
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
