"""Export an encoder to ONNX: the graph, checked against PyTorch, and its manifest."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from siamkit._atomic import sha256_file, write_json
from siamkit._version import __version__
from siamkit.exceptions import ExportError, MissingExtraError, ModelFileError
from siamkit.export._files import Target, check_target, move_into_place, staging, writing
from siamkit.runtime.export_files import (
    DATA_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INPUT_NAME,
    OUTPUT_NAME,
    manifest_path,
    manifest_problems,
)
from siamkit.runtime.external_data import external_data_files
from siamkit.runtime.onnx import check_signature, inference_session
from siamkit.runtime.preprocessing import Preprocessing

if TYPE_CHECKING:
    from siamkit.encoders.base import Encoder

#: A current opset that ONNX Runtime 1.17+ runs.
DEFAULT_OPSET = 18
#: Largest difference from PyTorch's embeddings an export may show on its check batch.
TOLERANCE = 1e-4


def export_onnx(encoder: Encoder, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write ``encoder`` as an ONNX graph with a dynamic batch axis, and its manifest.

    The files are written to a staging folder beside the target, then moved
    into place with the manifest last: a failure (a full disk) leaves the
    earlier export there, if any, as it was.

    Args:
        encoder: Any siamkit encoder whose :meth:`~siamkit.Encoder.preprocessing`
            describes its transform (or, for encoders of vectors, whose
            :meth:`~siamkit.Encoder.example_input` gives inputs).
        path: A ``.onnx`` file (new, or an earlier export), or a folder (new,
            empty, or holding an earlier export), which gets ``encoder.onnx``.
        opset: The ONNX opset (default :data:`DEFAULT_OPSET`).

    Returns:
        The path of the ``.onnx`` file; its manifest is the same name plus ``.json``.

    Raises:
        ConfigError: ``path`` holds files that are not a siamkit export (a
            model folder, another ``.onnx`` file); nothing is written.
        ExportError: no example input, an operation ONNX cannot
            express (named in the message), or outputs that differ from PyTorch's.
        WriteError: a file could not be written (full disk, no permission).
        MissingExtraError: ``onnx``/``onnxruntime`` are not installed
            (``pip install 'siamkit[onnx]'``).

    Examples:
        >>> import tempfile, siamkit
        >>> enc = siamkit.create_encoder("compact")
        >>> path = enc.export_onnx(tempfile.mkdtemp())  # doctest: +SKIP
        >>> siamkit.load_encoder(path).embedding_dim  # doctest: +SKIP
        128
    """
    spec = encoder.preprocessing()
    target = check_target(path)
    opset = opset or DEFAULT_OPSET
    example = encoder.example_input(2)
    was_training = encoder.training
    encoder.eval()
    try:
        program = _export_program(encoder, example, opset)
        with staging(target) as folder:
            _write_export(encoder, program, folder / target.graph.name, target, spec, opset)
    finally:
        encoder.train(was_training)
    return target.graph


def _write_export(
    encoder: Encoder,
    program: Any,
    graph: Path,
    target: Target,
    spec: Preprocessing | None,
    opset: int,
) -> None:
    """Save, check and describe the graph in the staging folder, then move it all into place."""
    with writing(target.graph), _silenced():
        program.save(str(graph), external_data=False)  # over 2 GB: weights in NAME.onnx.data
    session = _check_against_torch(encoder, graph)
    data = _data_files(graph)
    manifest = _manifest(encoder, graph, data, spec, opset)
    problems = manifest_problems(manifest)
    if problems:
        raise ExportError(
            f"cannot describe {type(encoder).__name__} in an export manifest: "
            f"{'; '.join(problems[:3])}"
        )
    try:
        check_signature(session, manifest, graph, spec)
    except ModelFileError as err:
        raise ExportError(
            f"the ONNX graph of {type(encoder).__name__} would not load: {err}"
        ) from None
    manifest_name = manifest_path(target.graph).name
    with writing(target.folder / manifest_name):
        write_json(graph.with_name(manifest_name), manifest)
    move_into_place(target, [*(entry["name"] for entry in data), graph.name, manifest_name])


def _data_files(graph: Path) -> list[dict[str, Any]]:
    """Name, size and SHA-256 of each file besides the graph that the graph reads."""
    entries = []
    for name in external_data_files(graph.read_bytes()):
        path = graph.with_name(name)
        if not DATA_FILE.fullmatch(name) or not path.is_file():
            raise ExportError(f"the ONNX exporter wrote weights to {name!r}, not beside {graph}")
        entries.append({"name": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return entries


def _export_program(encoder: Encoder, example: torch.Tensor, opset: int) -> Any:
    """The ``torch.onnx.ONNXProgram`` of ``encoder``, in memory (nothing written yet)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingExtraError("ONNX export needs onnx: pip install 'siamkit[onnx]'") from None
    batch = torch.export.Dim("batch", min=1)
    # The exporter prints its progress, dumps graphs and logs about internals; the
    # library stays quiet (a failure is raised with its cause instead).
    with _silenced():
        try:
            return torch.onnx.export(
                encoder,
                (example,),
                None,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
            )
        except Exception as err:  # the exporter raises many types; name the cause
            raise ExportError(
                f"cannot export {type(encoder).__name__} to ONNX: {_cause(err)}. Rewrite that "
                "operation in forward() or override export_onnx()"
            ) from None


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.CRITICAL)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_logger.setLevel(level)


def _cause(err: BaseException) -> str:
    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(str(e) for e in chain)
    operation = re.search(r"target=(torch\.ops\.[\w.]+)", text)
    if operation:
        return f"the operation {operation.group(1)} has no ONNX translation"
    # torch.export quotes the line of user code it could not trace (a Python branch on
    # a tensor's value, say): "The following call raised this error: File ..., line N".
    call = re.search(r'File "([^"]+)", line (\d+), in (\w+)\n\s*([^\n]+)', text)
    if call:
        where, number, function, line = call.groups()
        return f"{where}:{number} in {function} cannot be traced: `{line.strip()}`"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(err).__name__}: {(lines or ['no message'])[0][:300]}"


def _check_against_torch(encoder: Encoder, graph: Path) -> Any:
    """The ONNX Runtime session of ``graph``, once its embeddings are PyTorch's."""
    batch = encoder.example_input(3)  # another size than the traced one: the axis is dynamic
    with torch.no_grad():
        expected = encoder(batch).float().cpu().numpy()
    session = inference_session(graph)
    try:
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    except Exception as err:  # ORT's own types
        raise ExportError(
            f"the ONNX graph of {type(encoder).__name__} fails in ONNX Runtime "
            f"({str(err).strip()[:300]}); override export_onnx() for this encoder"
        ) from None
    if got.shape != expected.shape or not np.allclose(got, expected, atol=TOLERANCE, rtol=0):
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else "shape"
        raise ExportError(
            f"the ONNX graph of {type(encoder).__name__} gives other embeddings than PyTorch "
            f"(largest difference {diff}); override export_onnx() for this encoder"
        )
    return session


def _manifest(
    encoder: Encoder,
    graph: Path,
    data: list[dict[str, Any]],
    spec: Preprocessing | None,
    opset: int,
) -> dict[str, Any]:
    aligner = encoder.aligner
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "graph": graph.name,
        "graph_sha256": sha256_file(graph),
        "external_data": data,
        "embedding_dim": int(encoder.embedding_dim),
        "metric": encoder.metric,
        "fingerprint": encoder.fingerprint(),
        "preprocessing": spec.to_dict() if spec is not None else None,
        "aligner": aligner.describe() if aligner is not None else None,
        "encoder": {"name": getattr(type(encoder), "registry_name", None)},
        "opset": opset,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "siamkit_version": __version__,
        "torch_version": torch.__version__,
    }
