"""``siamkit train``: train an encoder on a folder of people."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from siamkit._manifest import parse_json
from siamkit.cli.arguments import add_layout_argument
from siamkit.exceptions import ConfigError
from siamkit.training.config import TrainConfig
from siamkit.training.recipes import FACE_ALIGNER, FACE_ENCODER, PRESETS, SCRATCH_ENCODER


def add_parser(commands: Any) -> None:
    defaults = TrainConfig()
    parser = commands.add_parser(
        "train",
        help="train an encoder on an image folder (one sub-folder per person)",
        description="Train an encoder with the contrastive loss on a folder of people, "
        "validating on people held out of training. Two recipes: 'face' aligns each face "
        f"({FACE_ALIGNER}) and starts from dlib's pretrained face ResNet, tries a few gentle "
        "fine-tuning strengths and keeps the frozen model unless one beats it on the "
        "held-out people; 'scratch' trains an encoder from random weights. Writes a model "
        "directory that siamkit.load_encoder() loads, with history.json, loss_plot.png and "
        "split.json (and checkpoint.pt from scratch).",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="image folder: DIR/<person>/<image>, or DIR/<group>/<class>/<image> (as "
        "Omniglot's alphabets; see --layout); the AT&T faces work as they are",
    )
    add_layout_argument(parser, " with whole groups held out")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output model directory (created if missing)",
    )
    _add_recipe_args(parser)
    _add_settings_args(parser, defaults)
    _add_run_args(parser, defaults)
    _add_launcher(parser)
    parser.set_defaults(handler=run)


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """The recipe and its parts: --preset, --encoder, --aligner and their settings."""
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="auto",
        help=f"training recipe: face (pretrained {FACE_ENCODER} behind the {FACE_ALIGNER} "
        "aligner, fine-tuned "
        "only where it helps the held-out people), characters (a Conv-4 from random weights "
        "for handwritten characters and other line drawings, classes also turned as new "
        "classes), photos (pretrained efficientnet-lite0 from ImageNet, fine-tuned only where "
        "it helps the held-out classes; the imagenet extra), scratch (--encoder from random "
        "weights), or auto: with no --encoder, face when the faces extra is installed and the "
        "face detector finds a face in most of a seeded sample of the images, else characters "
        "when most of it are line drawings, else photos (scratch without the imagenet extra) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        metavar="NAME",
        help="registered encoder name, plugins included (see `siamkit list`); naming one, "
        "or giving --encoder-arg, implies --preset scratch unless --preset face is given "
        f"(default: {SCRATCH_ENCODER} from scratch, {FACE_ENCODER} for the face preset)",
    )
    parser.add_argument(
        "--encoder-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the encoder, VALUE parsed as JSON when it can be "
        "(repeatable), e.g. --encoder-arg embedding_dim=64",
    )
    parser.add_argument(
        "--aligner",
        default=None,
        metavar="NAME",
        help="face aligner applied to every image and saved with the model: none, dlib, "
        f"yunet or a plugin (default: {FACE_ALIGNER} for the face preset, none from scratch)",
    )
    parser.add_argument(
        "--aligner-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the aligner, as --encoder-arg (repeatable), e.g. "
        "--aligner-arg on_missing=skip",
    )


def _add_settings_args(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The training settings: epochs, batches, learning rate, margin (then loss and miner)."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the training people (default: {defaults.epochs} from scratch; the "
        "face and photos presets' candidates set their own, which this overrides)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="images per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--m-per-class",
        type=int,
        default=defaults.m_per_class,
        help="images of each person per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate of AdamW (default: {defaults.lr} from scratch; the face "
        "and photos presets' candidates set their own, which this overrides)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="AdamW weight decay (default: %(default)s)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="contrastive margin (default: the encoder's own, e.g. 2.0 for compact; else 0.5 "
        "for cosine encoders, 1.0 for euclidean)",
    )
    _add_loss_args(parser, defaults)


def _add_loss_args(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The loss, its miner and augmentation."""
    parser.add_argument(
        "--loss",
        default="contrastive",
        metavar="NAME",
        help="registered loss: contrastive, pml (any pytorch-metric-learning loss, named with "
        "--loss-arg loss=CLASS) or a plugin (see `siamkit list`; default: %(default)s)",
    )
    parser.add_argument(
        "--loss-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the loss, as --encoder-arg (repeatable), e.g. --loss pml "
        "--loss-arg loss=MultiSimilarityLoss",
    )
    parser.add_argument(
        "--miner",
        default=defaults.miner,
        metavar="NAME",
        help="pair miner: all, random, hard, batch-hard or a plugin (default: %(default)s)",
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="turn off augmentation (flips, small rotations, shifts and brightness changes; "
        "for characters: rotations, shears, stretches and shifts)",
    )
    parser.add_argument(
        "--flip",
        type=float,
        default=None,
        metavar="P",
        help="probability of a horizontal flip in augmentation (default: 0.5 for faces, 0 when "
        "the face detector finds none in the data: a mirrored character is another one)",
    )


def _add_run_args(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The run: seed, held-out people, device, threads, resume."""
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of initialisation, split, batches and augmentation (default: %(default)s)",
    )
    parser.add_argument(
        "--val-classes",
        nargs="+",
        default=None,
        metavar="NAME",
        help="people (folder names) held out for validation; default: a random "
        "--val-fraction of them",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="share of people held out for validation when --val-classes is not "
        "given; 0 trains on everyone (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=defaults.device, help="cpu, cuda or auto (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch intra-op threads (default: min(4, CPUs)); a seeded run repeats bit for "
        "bit on the same machine with the same N",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


#: Options of the local launcher, passed to torch.distributed.run (not to the processes).
LAUNCHER_OPTIONS = {
    "--nproc-per-node": "--nproc-per-node",
    "--nnodes": "--nnodes",
    "--node-rank": "--node-rank",
    "--rdzv-endpoint": "--rdzv-endpoint",
    "--rdzv-backend": "--rdzv-backend",
    "--max-restarts": "--max-restarts",
}


def _add_launcher(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several processes (torch.distributed)",
        "Train data-parallel: --nproc-per-node N starts N processes on this machine through "
        "torch.distributed.run (torchrun), each training on its share of every batch. The "
        "other options are torchrun's own, passed through for several machines. Running "
        "`torchrun ... -m siamkit train ...` yourself does the same.",
    )
    group.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        metavar="N",
        help="processes on this machine (one per GPU on a GPU machine)",
    )
    group.add_argument("--nnodes", default=None, metavar="N", help="machines (or MIN:MAX)")
    group.add_argument(
        "--node-rank", type=int, default=None, metavar="R", help="this machine's rank"
    )
    group.add_argument(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="where the machines meet (the first machine's address)",
    )
    group.add_argument(
        "--rdzv-backend", default=None, metavar="NAME", help="rendezvous backend (e.g. c10d)"
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=None,
        metavar="N",
        help="restart the group up to N times when a process fails; add --resume so a "
        "restarted group continues from the last checkpoint",
    )
    group.add_argument(
        "--dist-timeout",
        type=float,
        default=TrainConfig().dist_timeout,
        metavar="SECONDS",
        help="how long a process waits for the others before the run fails instead of "
        "hanging (default: %(default)s)",
    )


def parse_encoder_args(pairs: list[str], option: str = "--encoder-arg") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``, values parsed as JSON when possible."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = parse_json(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def run(args: argparse.Namespace) -> int:
    from siamkit.training.distributed import launched_by_torchrun

    launcher = [name for name in LAUNCHER_OPTIONS if getattr(args, _dest(name)) is not None]
    if launcher and launched_by_torchrun():
        raise ConfigError(
            f"{launcher[0]} starts processes, but this one already runs under torchrun: "
            "leave the launcher options to torchrun"
        )
    if launcher:
        return _launch(args)
    if int(os.environ.get("RANK", "0")) != 0:
        # Rank 0 speaks for the group; the others train quietly.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _run(args)
    return _run(args)


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _launch(args: argparse.Namespace) -> int:
    """Start this same command on --nproc-per-node processes through torch.distributed.run."""
    import subprocess
    import sys

    if args.nproc_per_node is None or args.nproc_per_node < 1:
        raise ConfigError("the launcher options need --nproc-per-node N (N >= 1)")
    launcher: list[str] = []
    for option in LAUNCHER_OPTIONS:
        value = getattr(args, _dest(option))
        if value is not None:
            launcher += [option, str(value)]
    if args.nnodes in (None, "1") and args.rdzv_endpoint is None:
        launcher.append("--standalone")  # one machine: torchrun picks a free port itself
    forwarded = _without_launcher_options(getattr(args, "argv", None) or [])
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "siamkit"]
    return subprocess.call([*command, *forwarded])


def _without_launcher_options(argv: list[str]) -> list[str]:
    """``argv`` less the launcher options and their values."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in LAUNCHER_OPTIONS:
            skip = "=" not in item
            continue
        kept.append(item)
    return kept


def _run(args: argparse.Namespace) -> int:
    from siamkit.training.recipes import RecipeOptions, train_recipe

    options = RecipeOptions(
        preset=args.preset, encoder=args.encoder,
        encoder_args=parse_encoder_args(args.encoder_arg), aligner=args.aligner,
        aligner_args=parse_encoder_args(args.aligner_arg, "--aligner-arg"), loss=args.loss,
        loss_args=parse_encoder_args(args.loss_arg, "--loss-arg"), config=_config(args),
        val_fraction=args.val_fraction, val_classes=args.val_classes,
        tune_lr=args.lr, tune_epochs=args.epochs, layout=args.layout,
    )  # fmt: skip
    run = train_recipe(args.data, args.out, options, resume=args.resume,
                       progress=not args.quiet, say=print)  # fmt: skip
    if not run.finished:
        print(f"model written to {args.out} (load with siamkit.load_encoder)")
    return 0


def _config(args: argparse.Namespace) -> TrainConfig:
    defaults = TrainConfig()
    # The face preset's candidates set their own lr and epochs unless these are given.
    return TrainConfig(
        epochs=defaults.epochs if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        m_per_class=args.m_per_class,
        lr=defaults.lr if args.lr is None else args.lr,
        weight_decay=args.weight_decay,
        margin=args.margin,
        miner=args.miner,
        augment=not args.no_augment,
        flip=args.flip,
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        dist_timeout=args.dist_timeout,
    )
