"""An exported encoder run by ONNX Runtime: embeddings without PyTorch.

:class:`OnnxEncoder` reads what :meth:`siamkit.Encoder.export_onnx` wrote,
replays the preprocessing (face alignment included) with Pillow and NumPy,
and runs the graph with ONNX Runtime. It embeds like the PyTorch encoder it
came from (to about 1e-6) and carries the same fingerprint, so a face index
built with either accepts the other. This module imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamkit._atomic import sha256_file
from siamkit._batching import PICTURE_DTYPES, as_item_list, embed_in_batches
from siamkit._images import load_image, to_8bit
from siamkit._manifest import plain_file_name, read_manifest
from siamkit.alignment.base import FaceAligner, aligner_from_description
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError
from siamkit.runtime._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GRAPH_FILE,
    graph_path,
    manifest_path,
)
from siamkit.runtime.preprocessing import Preprocessing


def inference_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, None: ORT's).

    Raises:
        MissingExtraError: onnxruntime is not installed.
        ModelFileError: the graph cannot be loaded.

    Examples:
        >>> session = inference_session("model.onnx", threads=2)  # doctest: +SKIP
        >>> session.get_inputs()[0].name  # doctest: +SKIP
        'images'
    """
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError(
            "running an exported encoder needs ONNX Runtime: pip install 'siamkit[onnx]'"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the library stays quiet
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own types for bad graphs
        raise ModelFileError(f"ONNX Runtime cannot load {path}: {err}") from None


class OnnxEncoder:
    """An exported siamkit encoder, run by ONNX Runtime.

    It has the parts of :class:`siamkit.Encoder` that inference uses:
    :meth:`embed`, :meth:`preprocess`, :meth:`fingerprint`, ``embedding_dim``,
    ``metric`` and ``aligner``. Build it with :func:`siamkit.load_encoder`
    (or :func:`load_onnx_encoder`) on the ``.onnx`` file or its folder.

    Args:
        path: The ``.onnx`` file (its manifest ``.onnx.json`` beside it) or a
            folder holding ``encoder.onnx``.
        threads: ONNX Runtime's intra-op threads (None: its default).

    Examples:
        >>> enc = OnnxEncoder("model.onnx")  # doctest: +SKIP
        >>> enc.embed(["face.jpg"]).shape  # doctest: +SKIP
        (1, 128)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        graph = graph_path(path)
        manifest = _read(graph)
        self.path = graph.with_name(_graph_name(manifest, graph))
        if not self.path.is_file():
            raise ModelFileError(f"the ONNX graph {self.path} is missing; export the model again")
        if sha256_file(self.path) != manifest.get("graph_sha256"):
            raise ModelFileError(
                f"{self.path} does not match its checksum in {manifest_path(graph).name}: it is "
                "corrupted or was replaced; export the model again"
            )
        try:
            self.embedding_dim = int(manifest["embedding_dim"])
            self.metric = str(manifest["metric"])
            self._fingerprint = str(manifest["fingerprint"])
            spec = manifest["preprocessing"]
            self.preprocessing = None if spec is None else Preprocessing.from_dict(spec)
            self.aligner: FaceAligner | None = aligner_from_description(manifest.get("aligner"))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise ModelFileError(f"{manifest_path(graph)} is malformed: {err}") from None
        self.input_name = str(manifest.get("input", "images"))
        self.manifest = manifest
        self._session = inference_session(self.path, threads)

    def fingerprint(self) -> str:
        """The fingerprint of the PyTorch encoder this was exported from."""
        return self._fingerprint

    @property
    def image_mode(self) -> str | None:
        """PIL mode images are converted to (None: the model takes vectors, not images)."""
        return self.preprocessing.mode if self.preprocessing is not None else None

    def preprocess(self, item: Any) -> np.ndarray:
        """One image, path or array as the graph input ``(C, H, W)`` (as Encoder.preprocess)."""
        if isinstance(item, np.ndarray) and item.dtype in PICTURE_DTYPES:
            item = Image.fromarray(item)
        elif isinstance(item, np.ndarray):
            return np.ascontiguousarray(item, dtype=np.float32)
        if self.preprocessing is None:
            raise ConfigError(
                "this exported model takes vectors, not images: pass float arrays of shape "
                "(N, input_dim)"
            )
        name = str(item) if isinstance(item, (str, os.PathLike)) else "image"
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item, mode=self.image_mode)
        if not isinstance(item, Image.Image):
            raise ConfigError(
                f"cannot embed an object of type {type(item).__name__}: pass PIL images, "
                "file paths, or preprocessed float arrays"
            )
        image = to_8bit(item)
        if self.aligner is not None:
            image = self.aligner.align(image, name=name)
        return self.preprocessing.apply(image)

    def embed(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Embed images in batches: a float32 ``(N, embedding_dim)`` array.

        Raises:
            ImageReadError: a path is not a readable image.
            NonFiniteError: the graph produced NaN or infinity.
        """
        items = as_item_list(images)
        return embed_in_batches(
            items,
            batch_size,
            lambda batch: self._run([self.preprocess(item) for item in batch]),
            self.embedding_dim,
        )

    def _run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack(inputs).astype(np.float32, copy=False)
        # InferenceSession.run is thread-safe: concurrent queries need no lock.
        return self._session.run(None, {self.input_name: batch})[0]

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.path)!r}, dim={self.embedding_dim}, metric={self.metric!r})"


def load_onnx_encoder(path: str | os.PathLike, threads: int | None = None) -> OnnxEncoder:
    """Load an exported encoder (a ``.onnx`` file or its folder) for ONNX Runtime.

    Raises:
        ModelFileError: a file is missing, corrupted or from a newer siamkit.
        MissingExtraError: onnxruntime (or the aligner's extra) is not installed.

    Examples:
        >>> encoder = load_onnx_encoder("model.onnx")  # doctest: +SKIP
        >>> encoder.embed(["face.jpg"]).shape  # doctest: +SKIP
        (1, 128)
    """
    return OnnxEncoder(path, threads=threads)


def _read(graph: Path) -> dict[str, Any]:
    return read_manifest(
        manifest_path(graph),
        format_name=FORMAT_NAME,
        max_version=FORMAT_VERSION,
        error=ModelFileError,
        what="ONNX export manifest",
        missing=f"{graph} is not a siamkit export: {manifest_path(graph).name} is missing. "
        "Export with `siamkit export` or Encoder.export_onnx()",
        resave="export the model again",
    )


def _graph_name(manifest: dict[str, Any], graph: Path) -> str:
    return plain_file_name(
        manifest.get("graph"), GRAPH_FILE, error=ModelFileError, manifest=manifest_path(graph)
    )
