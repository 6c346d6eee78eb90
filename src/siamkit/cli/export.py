"""``siamkit export``: a trained model as an ONNX graph that runs without PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="export a trained model to ONNX, for ONNX Runtime without PyTorch",
        description="Export the encoder in MODEL_DIR to an ONNX graph with a dynamic batch "
        "axis. Everything after the input tensor (the network, flip averaging, "
        "normalisation, the fitted whitening) is in the graph; the preprocessing before it "
        "(face alignment, colour mode, size, pixel scale) and the encoder's fingerprint go "
        "to a manifest beside it (OUT.json). The export is checked against PyTorch before "
        "it is written. siamkit.load_encoder(OUT) then runs it with ONNX Runtime, and face "
        "indexes built with the PyTorch model accept it. OUT may replace an earlier export, "
        "nothing else; the files are written aside first and moved into place last, so a "
        "failed export (a full disk: exit status 1) leaves the earlier one as it was.",
    )
    parser.add_argument(
        "--model", required=True, type=Path, metavar="MODEL_DIR", help="a saved model directory"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="OUT",
        help="the .onnx file to write (new, or an earlier export), or a folder (new, empty "
        "or holding an earlier export), which gets encoder.onnx",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: siamkit's, 18)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from siamkit.encoders.base import Encoder, load_encoder
    from siamkit.exceptions import ConfigError

    encoder = load_encoder(args.model)
    if not isinstance(encoder, Encoder):
        raise ConfigError(f"{args.model} is already an ONNX export; pass a saved model directory")
    path = encoder.export_onnx(args.out, opset=args.opset)
    print(f"exported {type(encoder).__name__} to {path} (manifest {path.name}.json)")
    return 0
