"""Renders the CLI reference page of the documentation from the parser itself."""

from __future__ import annotations

import argparse
import os
from unittest import mock

from siamkit.cli.main import build_parser

HEADER = """# CLI reference

Generated from the command line itself (`python -m siamkit.cli.reference > docs/cli.md`);
a test keeps this page in sync. Every command also answers `--help`.
"""


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _subcommands(sub, f"{prefix} {name}")
    return found


def render_cli_reference() -> str:
    """The Markdown of ``docs/cli.md``: the help of ``siamkit`` and every sub-command."""
    sections = [HEADER]
    with mock.patch.dict(os.environ, {"COLUMNS": "96"}):
        for name, parser in _subcommands(build_parser(), "siamkit"):
            sections.append(f"## `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(render_cli_reference(), end="")
