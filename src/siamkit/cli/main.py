"""The ``siamkit`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from siamkit._version import __version__
from siamkit.exceptions import SiamkitError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``siamkit`` and all its sub-commands."""
    from siamkit.cli import demo, evaluate, index, train

    parser = argparse.ArgumentParser(
        prog="siamkit",
        description="Similarity learning with Siamese networks and contrastive loss, "
        "and face search by learned embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(commands)
    index.add_parser(commands)
    evaluate.add_parser(commands)
    demo.add_parser(commands)
    listing = commands.add_parser(
        "list",
        help="list the available encoders and miners, plugins included",
        description="List the registered encoders and pair miners, including those of "
        "installed plugin packages (entry-point groups siamkit.encoders and siamkit.miners).",
    )
    listing.set_defaults(handler=_list_components)
    return parser


def _list_components(args: argparse.Namespace) -> int:
    from siamkit.encoders.base import list_encoders
    from siamkit.miners.base import list_miners

    print("encoders: " + ", ".join(list_encoders()))
    print("miners:   " + ", ".join(list_miners()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status.

    Errors siamkit raises on purpose are printed as one line (exit status 2);
    anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except SiamkitError as err:
        print(f"siamkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("siamkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
