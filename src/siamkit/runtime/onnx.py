"""An exported encoder run by ONNX Runtime: embeddings without PyTorch.

:class:`OnnxEncoder` reads what :meth:`siamkit.Encoder.export_onnx` wrote,
replays the preprocessing (face alignment included) with Pillow and NumPy,
and runs the graph with ONNX Runtime. It embeds like the PyTorch encoder it
came from (to about 1e-6) and carries the same fingerprint, so a face index
built with either accepts the other. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamkit._atomic import sha256_file
from siamkit._batching import PICTURE_DTYPES, as_item_list, embed_in_batches
from siamkit._images import load_image, to_8bit, upright
from siamkit._manifest import read_manifest
from siamkit.alignment.base import FaceAligner, aligner_from_description
from siamkit.exceptions import (
    ConfigError,
    MissingExtraError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
    UnknownComponentError,
)
from siamkit.runtime.export_files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    check_manifest,
    graph_path,
    manifest_path,
)
from siamkit.runtime.external_data import external_data_files
from siamkit.runtime.preprocessing import Preprocessing

#: Protobuf cannot serialize a message over 2 GiB, so no ONNX graph file is larger.
MAX_GRAPH_BYTES = 2**31
#: The most input bytes one ONNX Runtime call is given: batches of large images
#: are split further, so memory stays bounded whatever ``batch_size`` asks.
MAX_BATCH_BYTES = 256 * 2**20


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
    # Fatal only: a failure is raised with its cause, so the library stays quiet.
    options.log_severity_level = 4
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
        self.path = graph.with_name(manifest["graph"])
        _check_files(self.path, manifest, manifest_path(graph))
        self.embedding_dim: int = manifest["embedding_dim"]
        self.metric: str = manifest["metric"]
        self._fingerprint: str = manifest["fingerprint"]
        spec = manifest["preprocessing"]
        self.preprocessing = None if spec is None else Preprocessing.from_dict(spec)
        self.aligner: FaceAligner | None = _aligner(manifest, manifest_path(graph))
        self.input_name: str = manifest["input"]
        self.output_name: str = manifest["output"]
        self.manifest = manifest
        self._session = inference_session(self.path, threads)
        self._input_dims = check_signature(self._session, manifest, self.path, self.preprocessing)

    def fingerprint(self) -> str:
        """The fingerprint of the PyTorch encoder this was exported from."""
        return self._fingerprint

    @property
    def image_mode(self) -> str | None:
        """PIL mode images are converted to (None: the model takes vectors, not images)."""
        return self.preprocessing.mode if self.preprocessing is not None else None

    def preprocess(self, item: Any) -> np.ndarray:
        """One image, path or array as the graph input ``(C, H, W)`` (as Encoder.preprocess).

        Files and PIL images are turned upright by their EXIF orientation first.
        """
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
        elif isinstance(item, Image.Image):
            item = upright(item)  # one opened with Image.open keeps its EXIF orientation
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
            ShapeError: a preprocessed input is not of the shape the graph takes.
            NonFiniteError: the graph produced NaN or infinity.
            ModelFileError: the graph failed, or returned something other
                than ``(batch, embedding_dim)`` floats (a broken or edited export).
        """
        items = as_item_list(images)
        return embed_in_batches(
            items,
            self._batch_size(batch_size),
            lambda batch: self._run([self.preprocess(item) for item in batch]),
            self.embedding_dim,
        )

    def _batch_size(self, asked: Any) -> Any:
        if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
            return asked  # embed_in_batches says what is wrong with it
        if any(dim is None for dim in self._input_dims):
            return asked
        per_item = 4 * math.prod(self._input_dims)  # type: ignore[arg-type]
        return max(1, min(asked, MAX_BATCH_BYTES // per_item))

    def _run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        self._check_inputs(inputs)
        batch = np.stack(inputs).astype(np.float32, copy=False)
        try:
            # InferenceSession.run is thread-safe: concurrent queries need no lock.
            (out,) = self._session.run([self.output_name], {self.input_name: batch})
        except MemoryError:
            raise
        except Exception as err:  # ORT raises its own types (Fail, InvalidArgument...)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ModelFileError(
                f"the ONNX graph {self.path} failed on a batch of {len(batch)} inputs "
                f"({first}): the export is broken or was edited; export the model again"
            ) from None
        return self._checked_output(out, len(batch))

    def _check_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        dims = self._input_dims
        shapes = {np.shape(array) for array in inputs}
        for shape in sorted(shapes):
            fits = len(shape) == len(dims) and all(
                want is None or got == want for got, want in zip(shape, dims, strict=True)
            )
            if not fits or len(shapes) > 1:
                expected = ", ".join(["N", *(str(d) if d is not None else "?" for d in dims)])
                raise ShapeError(
                    f"{self.path.name} takes inputs of shape ({expected}), all alike; got "
                    f"{sorted(shapes)[:3]}: pass images, or arrays preprocessed for this model"
                )

    def _checked_output(self, out: Any, count: int) -> np.ndarray:
        """The graph's output if it is ``count`` finite embeddings of the manifest's size."""
        expected = (count, self.embedding_dim)
        if not isinstance(out, np.ndarray) or out.dtype.kind != "f" or out.shape != expected:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ModelFileError(
                f"the ONNX graph {self.path} returned {got} for {count} inputs, not float "
                f"embeddings of shape {expected} as its manifest says: the export is broken or "
                "was edited; export the model again"
            )
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused
            out = out.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise NonFiniteError(
                f"the ONNX graph {self.path} produced NaN or infinite embeddings (from NaN or "
                "infinite inputs, or a broken export)"
            )
        return out

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
    path = manifest_path(graph)
    manifest = read_manifest(
        path,
        format_name=FORMAT_NAME,
        max_version=FORMAT_VERSION,
        error=ModelFileError,
        what="ONNX export manifest",
        missing=f"{graph} is not a siamkit export: {path.name} is missing. "
        "Export with `siamkit export` or Encoder.export_onnx()",
        resave="export the model again",
    )
    check_manifest(manifest, path)
    return manifest


def _check_files(graph: Path, manifest: dict[str, Any], manifest_file: Path) -> None:
    """Every file ONNX Runtime will read is the one the manifest's checksums describe."""
    if not graph.is_file():
        raise ModelFileError(f"the ONNX graph {graph} is missing; export the model again")
    with _mapped(graph) as data:
        if hashlib.sha256(data).hexdigest() != manifest["graph_sha256"]:
            raise ModelFileError(
                f"{graph} does not match its checksum in {manifest_file.name}: it is "
                "corrupted or was replaced; export the model again"
            )
        try:
            read = external_data_files(data)
        except ValueError as err:
            raise ModelFileError(f"{graph} is not an ONNX graph ({err}); export again") from None
    listed = {entry["name"]: entry for entry in manifest.get("external_data", [])}
    uncovered = [name for name in read if name not in listed]
    if uncovered or set(listed) - set(read):
        raise ModelFileError(
            f"{graph} reads the files {read[:5]} besides itself, but {manifest_file.name} "
            f"covers {sorted(listed)[:5]} by its checksums: the files were edited or "
            "replaced; export the model again"
        )
    for name, entry in listed.items():
        _check_data_file(graph.parent / name, entry, manifest_file)


def _check_data_file(path: Path, entry: dict[str, Any], manifest_file: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"the graph's data file {path} is missing; export the model again")
    if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        raise ModelFileError(
            f"{path} does not match its size and checksum in {manifest_file.name}: it is "
            "corrupted or was replaced; export the model again"
        )


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[memoryview | bytes]:
    """The bytes of ``path``, mapped rather than read (a graph may be near 2 GiB)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_GRAPH_BYTES:
            raise ModelFileError(f"{path} is {size} bytes, larger than any ONNX graph can be")
        if size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                yield view
            finally:
                view.release()


def _aligner(manifest: dict[str, Any], manifest_file: Path) -> FaceAligner | None:
    try:
        return aligner_from_description(manifest["aligner"])
    except UnknownComponentError as err:
        raise UnknownComponentError(f"{manifest_file} needs an aligner: {err}") from None
    except (ConfigError, TypeError, ValueError) as err:
        raise ModelFileError(f"{manifest_file}: bad aligner block: {err}") from None


def check_signature(
    session: Any, manifest: dict[str, Any], graph: Path, spec: Preprocessing | None
) -> tuple[int | None, ...]:
    """Refuse a graph whose input or output is not what the manifest describes.

    Returns the dimensions of one input (None where neither the graph nor the
    preprocessing fixes one).
    """
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [manifest["input"]]:
        _signature_error(graph, f"takes the inputs {[i.name for i in inputs]}", manifest)
    named = [o for o in session.get_outputs() if o.name == manifest["output"]]
    if not named:
        outputs = [o.name for o in session.get_outputs()]
        _signature_error(graph, f"has the outputs {outputs}", manifest)
    _check_output(named[0], manifest, graph)
    # Images are (C, H, W) as the preprocessing makes them; vectors (D,), D the graph's.
    wanted = (None,) if spec is None else (spec.channels, *(spec.size or (None, None)))
    shape = list(inputs[0].shape or [])
    if (
        inputs[0].type != "tensor(float)"
        or len(shape) != 1 + len(wanted)
        or _fixed(shape[0])  # the batch axis must be free
        or any(
            _fixed(got) and want not in (None, got)
            for got, want in zip(shape[1:], wanted, strict=True)
        )
    ):
        _signature_error(graph, f"takes {inputs[0].type} of shape {shape}", manifest)
    return tuple(got if _fixed(got) else want for got, want in zip(shape[1:], wanted, strict=True))


def _check_output(output: Any, manifest: dict[str, Any], graph: Path) -> None:
    shape = output.shape  # what the graph declares; _checked_output checks what it returns
    floats = ("tensor(float)", "tensor(double)", "tensor(float16)")
    wrong_size = bool(shape) and (
        len(shape) != 2 or (_fixed(shape[1]) and shape[1] != manifest["embedding_dim"])
    )
    if output.type not in floats or wrong_size:
        _signature_error(graph, f"returns {output.type} of shape {shape}", manifest)


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _signature_error(graph: Path, found: str, manifest: dict[str, Any]) -> None:
    spec = manifest["preprocessing"]
    takes = "float (N, input_dim) vectors" if spec is None else "float (N, C, H, W) images"
    raise ModelFileError(
        f"{graph} {found}, but its manifest describes a graph taking {takes} as "
        f"{manifest['input']!r} and returning (N, {manifest['embedding_dim']}) embeddings as "
        f"{manifest['output']!r}: the files were edited or mixed up; export the model again"
    )
