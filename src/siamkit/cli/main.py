"""The ``siamkit`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from siamkit._version import __version__
from siamkit.exceptions import LockTimeoutError, MissingExtraError, SiamkitError, WriteError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``siamkit`` and all its sub-commands."""
    from siamkit.cli import demo, evaluate, export, index, serve

    parser = argparse.ArgumentParser(
        prog="siamkit",
        description="Similarity learning with Siamese networks and contrastive loss, "
        "and face search by learned embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands)
    index.add_parser(commands)
    evaluate.add_parser(commands)
    demo.add_parser(commands)
    export.add_parser(commands)
    serve.add_parser(commands)
    listing = commands.add_parser(
        "list",
        help="list the available encoders, miners, losses and face aligners, plugins included",
        description="List the registered encoders, pair miners, losses and face aligners, "
        "including those of installed plugin packages (entry-point groups siamkit.encoders, "
        "siamkit.miners, siamkit.losses and siamkit.aligners), and the encoder and aligner of "
        "the face recipe that siamkit train uses by default.",
    )
    listing.set_defaults(handler=_list_components)
    info = commands.add_parser(
        "info",
        help="describe a saved model: encoder, distance, face aligner, recipe choice",
        description="Describe a model folder (siamkit train, Encoder.save) or an ONNX export "
        "(siamkit export): its encoder and settings, embedding size and distance, the face "
        "aligner saved with it (detector and settings), its fingerprint, and the choice the "
        "face recipe made. The model is checked as loading it would be; an export is read "
        "without PyTorch.",
    )
    info.add_argument("model", type=Path, metavar="MODEL", help="a model folder or .onnx export")
    info.set_defaults(handler=_model_info)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    """``siamkit train``; without PyTorch, a stand-in that says so (eval and index still run)."""
    try:
        from siamkit.cli import train
    except ModuleNotFoundError as err:
        if str(err.name).split(".")[0] not in ("torch", "torchvision"):
            raise
        # Any arguments, even --help, reach the handler: its one line is the answer.
        stand_in = commands.add_parser(
            "train", help="train an encoder (needs PyTorch)", prefix_chars="+", add_help=False
        )
        stand_in.add_argument("arguments", nargs="*", help=argparse.SUPPRESS)
        stand_in.set_defaults(handler=_needs_torch)
        return
    train.add_parser(commands)


def _needs_torch(args: argparse.Namespace) -> int:
    raise MissingExtraError(
        "siamkit train needs PyTorch, which is not installed here (pip install torch "
        "torchvision); ONNX exports run `siamkit eval` and `siamkit index` without it"
    )


def _list_components(args: argparse.Namespace) -> int:
    from siamkit.alignment.base import list_aligners
    from siamkit.encoders.base import list_encoders
    from siamkit.losses.base import list_losses
    from siamkit.miners.base import list_miners

    print("encoders: " + ", ".join(list_encoders()))
    print("miners:   " + ", ".join(list_miners()))
    print("losses:   " + ", ".join(list_losses()))
    print("aligners: " + ", ".join(list_aligners()))
    try:
        from siamkit.training.recipes import FACE_ALIGNER, FACE_ENCODER
    except ModuleNotFoundError:  # no PyTorch: no training recipes
        return 0
    print(f"face recipe (train's default): {FACE_ENCODER} behind the {FACE_ALIGNER} aligner")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from siamkit.model_info import model_info

    for line in model_info(args.model).lines():
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status.

    Every failure is printed as one line, never a traceback: errors siamkit
    raises on purpose (exit status 2), the system's (a full disk, a folder
    without write permission: 1) and, as a last resort, anything else, which
    is a bug in siamkit (1; ``SIAMKIT_DEBUG=1`` shows its traceback).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    # The local launcher (`siamkit train --nproc-per-node N`) restarts this very command.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except (WriteError, LockTimeoutError) as err:  # the system's, not the input's
        print(f"siamkit: error: {err}", file=sys.stderr)
        return 1
    except SiamkitError as err:
        print(f"siamkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("siamkit: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"siamkit: error: {err}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as err:
        if str(err.name).split(".")[0] not in ("torch", "torchvision"):
            return _internal_error(err)
        print(
            "siamkit: error: this command needs PyTorch, which is not installed here (pip "
            "install torch torchvision); ONNX exports run `siamkit eval` and `siamkit index` "
            "without it",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        return _internal_error(err)


def _internal_error(err: Exception) -> int:
    """The last resort: one line, unless ``SIAMKIT_DEBUG`` asks for the traceback."""
    if os.environ.get("SIAMKIT_DEBUG"):
        raise err
    print(
        f"siamkit: internal error: {type(err).__name__}: {err}. This is a bug in siamkit: "
        "please report it with the command you ran (SIAMKIT_DEBUG=1 shows the traceback)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
