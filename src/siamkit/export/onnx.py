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
from siamkit.exceptions import ExportError, MissingExtraError
from siamkit.runtime._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INPUT_NAME,
    OUTPUT_NAME,
    check_export_target,
    manifest_path,
)

if TYPE_CHECKING:
    from siamkit.encoders.base import Encoder

#: A current opset that ONNX Runtime 1.17+ runs.
DEFAULT_OPSET = 18
#: Largest difference from PyTorch's embeddings an export may show on its check batch.
TOLERANCE = 1e-4


def export_onnx(encoder: Encoder, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write ``encoder`` as an ONNX graph with a dynamic batch axis, and its manifest.

    Args:
        encoder: Any siamkit encoder whose :meth:`~siamkit.Encoder.preprocessing`
            describes its transform (or, for encoders of vectors, whose
            :meth:`~siamkit.Encoder.example_input` gives inputs).
        path: A ``.onnx`` file, or a folder (which gets ``encoder.onnx``).
        opset: The ONNX opset (default :data:`DEFAULT_OPSET`).

    Returns:
        The path of the ``.onnx`` file; its manifest is the same name plus ``.json``.

    Raises:
        ExportError: no example input, an operation ONNX cannot
            express (named in the message), or outputs that differ from PyTorch's.
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
    target = check_export_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    example = encoder.example_input(2)
    staging = target.with_name(f".{target.name}.tmp")
    was_training = encoder.training
    encoder.eval()
    try:
        _export_graph(encoder, example, staging, opset or DEFAULT_OPSET)
        _check_against_torch(encoder, staging)
        os.replace(staging, target)
    finally:
        encoder.train(was_training)
        staging.unlink(missing_ok=True)
    write_json(manifest_path(target), _manifest(encoder, target, spec, opset or DEFAULT_OPSET))
    return target


def _export_graph(encoder: Encoder, example: torch.Tensor, path: Path, opset: int) -> None:
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
            torch.onnx.export(
                encoder,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
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


def _check_against_torch(encoder: Encoder, graph: Path) -> None:
    from siamkit.runtime.onnx import inference_session

    batch = encoder.example_input(3)  # another size than the traced one: the axis is dynamic
    with torch.no_grad():
        expected = encoder(batch).float().cpu().numpy()
    got = inference_session(graph).run(None, {INPUT_NAME: batch.numpy()})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=TOLERANCE, rtol=0):
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else "shape"
        raise ExportError(
            f"the ONNX graph of {type(encoder).__name__} gives other embeddings than PyTorch "
            f"(largest difference {diff}); override export_onnx() for this encoder"
        )


def _manifest(encoder: Encoder, graph: Path, spec: Any, opset: int) -> dict[str, Any]:
    aligner = encoder.aligner
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "graph": graph.name,
        "graph_sha256": sha256_file(graph),
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
