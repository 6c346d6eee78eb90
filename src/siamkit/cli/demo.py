"""``siamkit demo``: the whole story on the AT&T faces in a few minutes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="train, evaluate and search faces end to end on the AT&T faces, with a report",
        description="Get the AT&T faces (downloaded when --data is not given), train by "
        "`siamkit train`'s default recipe on some people (with the faces extra: the aligned, "
        "pretrained dlib-face, its fine-tuning strength chosen on validation people; else a "
        "compact encoder from scratch), evaluate it on people never seen in training, enrol "
        "half of those in a face index calibrated for a target FPIR (strangers matched to "
        "someone), query it with their other images and with people kept out of the gallery "
        "(who should come back unknown), then write an HTML report.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="an existing copy of the AT&T faces (the folder of s1..s40) or any "
        "folder of people; default: download into OUT/data",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("siamkit-demo"),
        metavar="DIR",
        help="output directory (default: %(default)s)",
    )
    parser.add_argument(
        "--preset",
        choices=["auto", "face", "scratch"],
        default="auto",
        help="training recipe, as `siamkit train --preset`: auto is face when the faces extra "
        "is installed and finds faces in the images, else scratch (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of the scratch recipe, or of each fine-tuning candidate of the "
        "face recipe (default: the recipe's)",
    )
    _add_run_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """The seed, the targets of the index's thresholds, and where the data comes from."""
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, training and examples (default: %(default)s)",
    )
    parser.add_argument(
        "--fpir",
        type=float,
        default=1e-2,
        help="false-positive identification rate (share of strangers matched to someone) the "
        "index's identify threshold is calibrated for (default: %(default)s)",
    )
    parser.add_argument(
        "--far",
        type=float,
        default=1e-3,
        help="false-accept rate the index's 1:1 verify threshold is calibrated for "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="where to download the AT&T archive from (default: the official "
        "address, or $SIAMKIT_ATT_URL)",
    )


def run(args: argparse.Namespace) -> int:
    from siamkit.demo.run import run_demo

    result = run_demo(
        out_dir=args.out, data=args.data, epochs=args.epochs, seed=args.seed,
        target_far=args.far, target_fpir=args.fpir, url=args.url, progress=not args.quiet,
        preset=args.preset,
    )  # fmt: skip
    print(result.summary())
    return 0
