"""Arguments that several commands take alike."""

from __future__ import annotations

import argparse

from siamkit._folders import LAYOUTS


def add_layout_argument(parser: argparse.ArgumentParser, grouped: str) -> None:
    """``--layout``: how ``--data`` is read (``grouped`` says what the grouped layout adds)."""
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help=f"how --data is read: one class per folder (flat), per DIR/<group>/<class>{grouped} "
        "(grouped), or whichever the folder shows (default: %(default)s)",
    )
