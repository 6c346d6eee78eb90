"""The ``siamkit`` command-line interface."""

from siamkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
