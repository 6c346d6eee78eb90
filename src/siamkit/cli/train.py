"""``siamkit train``: train an encoder on a folder of people."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from siamkit._atomic import remove_temporaries, write_json
from siamkit._manifest import parse_json
from siamkit.cli.evaluate import EVAL_FOLDER, skipped_lines
from siamkit.exceptions import ConfigError, TrainingError
from siamkit.training.config import TrainConfig
from siamkit.training.presets import FACE_ALIGNER, FACE_ENCODER, PRESETS

SPLIT_FILE = "split.json"
#: The encoder of the from-scratch recipe when --encoder is not given.
SCRATCH_ENCODER = "compact"


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
        help="image folder: DIR/<person>/<image>; the AT&T faces work as they are",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output model directory (created if missing)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="auto",
        help=f"training recipe: face (pretrained {FACE_ENCODER} behind the {FACE_ALIGNER} "
        "aligner, fine-tuned "
        "only where it helps the held-out people), scratch (--encoder from random weights), "
        "or auto: face when the faces extra is installed and no --encoder is given, else "
        "scratch (default: %(default)s)",
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
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the training people (default: {defaults.epochs} from scratch; the "
        "face preset's candidates set their own, which this overrides)",
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
        "preset's candidates set their own, which this overrides)",
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
        help="turn off flips, small rotations, shifts and brightness changes",
    )
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
    _add_launcher(parser)
    parser.set_defaults(handler=run)


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
    from siamkit.data.folder import FaceFolder
    from siamkit.data.splits import split_by_class
    from siamkit.training.presets import resolve_preset

    recipe = resolve_preset(args.preset, args.encoder, bool(args.encoder_arg))
    _check_encoder_settings(args, recipe.name)
    _check_out_folder(args.out, resume=args.resume)
    if args.resume and _report_finished(args.out):
        return 0
    config = _config(args)
    dataset = FaceFolder(args.data, min_images_per_class=2)
    for line in skipped_lines(dataset.skipped_files, heading="left out "):
        print(line)
    split = split_by_class(
        dataset,
        val=args.val_fraction if args.val_classes is None else 0,
        val_classes=args.val_classes,
        seed=args.seed,
    )
    split_info = {
        "data": str(args.data.resolve()),
        "train_classes": split.train_classes,
        "val_classes": split.val_classes,
    }
    _check_resume_split(args, split_info)
    aligner = _aligner(args, recipe.name)
    args.out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        remove_temporaries(args.out, [SPLIT_FILE])  # of a run killed while writing it
        write_json(args.out / SPLIT_FILE, split_info)
    if recipe.name == "face":
        _train_face(args, recipe, config, split, aligner)
    else:
        _train_scratch(args, recipe, config, split, aligner)
    print(f"model written to {args.out} (load with siamkit.load_encoder)")
    return 0


def _check_encoder_settings(args: argparse.Namespace, recipe: str) -> None:
    """Refuse --encoder-arg values no encoder can be built with, before any work."""
    from siamkit.encoders.base import check_encoder_arguments

    name = FACE_ENCODER if recipe == "face" else args.encoder or SCRATCH_ENCODER
    check_encoder_arguments(name, **parse_encoder_args(args.encoder_arg))


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
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        dist_timeout=args.dist_timeout,
    )


def _aligner(args: argparse.Namespace, recipe: str) -> Any:
    from siamkit.training.presets import face_aligner

    settings = parse_encoder_args(args.aligner_arg, "--aligner-arg")
    if recipe == "face":  # any aligner cuts the chips the face recipe's encoder takes
        return face_aligner(args.aligner, encoder=args.encoder, **settings)
    if args.aligner is None:
        if args.aligner_arg:
            raise ConfigError("--aligner-arg needs --aligner NAME")
        return None
    # The chips the encoder declares (dlib-face's, dlib-sface's), else the aligner's own.
    return face_aligner(args.aligner, encoder=args.encoder or SCRATCH_ENCODER, **settings)


def _train_scratch(
    args: argparse.Namespace, recipe: Any, config: TrainConfig, split: Any, aligner: Any
) -> None:
    import torch

    from siamkit.encoders.base import create_encoder
    from siamkit.losses.base import create_loss
    from siamkit.training.trainer import Trainer

    name = args.encoder or SCRATCH_ENCODER
    torch.manual_seed(args.seed)  # the encoder's initial weights
    encoder = create_encoder(name, **parse_encoder_args(args.encoder_arg))
    encoder.aligner = aligner
    print(
        f"recipe: scratch ({name} from random weights, {config.epochs} epochs at lr "
        f"{config.lr:g}): {recipe.why}"
    )
    loss = create_loss(args.loss, **parse_encoder_args(args.loss_arg, "--loss-arg"))
    trainer = Trainer(encoder, config, loss=loss, progress=not args.quiet)
    result = trainer.fit(split.train, split.val if len(split.val) else None, args.out, args.resume)
    _print_alignment(aligner, result.skipped_images)
    last = result.history[-1]
    processes = f" x {result.world_size} processes" if result.world_size > 1 else ""
    print(
        f"trained {name} for {len(result.history)} epochs in {result.seconds:.0f} s "
        f"on {trainer.runtime.get('num_threads', '?')} threads{processes}; "
        f"final loss {last.loss:.4f}"
    )
    if result.metrics is not None:
        print(
            f"best epoch {result.best_epoch}: held-out AUC {result.metrics.auc:.4f}, "
            f"EER {100 * result.metrics.eer:.2f}%, rank-1 {result.metrics.rank1:.3f}"
        )


def _train_face(
    args: argparse.Namespace, recipe: Any, config: TrainConfig, split: Any, aligner: Any
) -> None:
    import functools
    import time

    from siamkit.training.presets import (
        face_encoder,
        save_face_run,
        select_fine_tuning,
    )

    encoder_args = parse_encoder_args(args.encoder_arg)
    if args.loss != "contrastive" or args.loss_arg:
        raise ConfigError(
            "the face preset trains with the contrastive loss; --loss and --loss-arg apply "
            "to --preset scratch"
        )
    if "trainable_from" in encoder_args:
        raise ConfigError(
            "--preset face chooses trainable_from itself; to fix it, train with "
            f"--preset scratch --encoder {FACE_ENCODER} --encoder-arg trainable_from=PART"
        )
    candidates = _face_candidates(args)
    held_out = len(split.val_classes)
    print(
        f"recipe: face (pretrained {FACE_ENCODER} behind the {_aligner_name(aligner)} aligner; "
        f"fine-tuning strength chosen on {held_out} held-out people among "
        f"{', '.join(c.name for c in candidates)}): {recipe.why}"
    )
    started = time.perf_counter()
    outcome = select_fine_tuning(
        functools.partial(face_encoder, aligner=aligner, **encoder_args),
        split.train,
        split.val if len(split.val) else None,
        config=config,
        candidates=candidates,
        out_dir=args.out,
        resume=args.resume,
        progress=not args.quiet,
    )
    save_face_run(outcome, args.out, extra={"preset": "face"})
    _print_alignment(aligner, outcome.selection.skipped_images)
    processes = f" x {outcome.world_size} processes" if outcome.world_size > 1 else ""
    print(f"{outcome.selection.summary()}; {time.perf_counter() - started:.0f} s{processes}")
    kept = outcome.selection.kept_result
    if kept.measured:
        print(
            f"kept model: held-out AUC {kept.auc:.5f}, EER {100 * kept.eer:.2f}%, "  # type: ignore[operator]
            f"rank-1 {kept.rank1:.3f}"
        )


def _face_candidates(args: argparse.Namespace) -> tuple[Any, ...]:
    import dataclasses

    from siamkit.training.presets import FACE_CANDIDATES

    changes = {k: v for k, v in (("lr", args.lr), ("epochs", args.epochs)) if v is not None}
    return tuple(c if c.frozen else dataclasses.replace(c, **changes) for c in FACE_CANDIDATES)


def _aligner_name(aligner: Any) -> str:
    if aligner is None:
        return "no"
    from siamkit.alignment.base import aligner_registry

    return aligner_registry.name_of(type(aligner)) or type(aligner).__name__


def _print_alignment(aligner: Any, skipped: int) -> None:
    if aligner is None:
        return
    line = f"alignment: {aligner.stats.summary()}"
    if skipped:  # every process's, where the counts are this process's
        line += f"; training left out {skipped} without a face (--aligner-arg on_missing=skip)"
    print(line)


def _report_finished(out: Path) -> bool:
    """A finished face-preset run has nothing to resume: say what it kept."""
    from siamkit.training.presets import CANDIDATES_FOLDER, read_fine_tuning

    selection = read_fine_tuning(out)
    if selection is None or (out / CANDIDATES_FOLDER).exists():
        return False
    print(f"{out} holds a finished face-preset run, nothing to resume: {selection.summary()}")
    return True


def _check_out_folder(out: Path, resume: bool) -> None:
    """Refuse an --out that holds anything but a training run (or a run without --resume)."""
    from siamkit.training.presets import CANDIDATES_FOLDER
    from siamkit.training.trainer import CHECKPOINT_FILE, HISTORY_FILE

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: pass a folder for the model")
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _is_run_file(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"--out {out} holds files that are not from a training run ({shown}): pick a "
            "new or empty folder, so nothing there is overwritten or deleted"
        )
    started = [CHECKPOINT_FILE, HISTORY_FILE, CANDIDATES_FOLDER]
    if any((out / name).exists() for name in started) and not resume:
        raise TrainingError(
            f"{out} already holds a training run: add --resume to continue it, "
            "or pick another --out"
        )


def _is_run_file(name: str) -> bool:
    from siamkit.encoders.base import ENCODER_FILE, WEIGHTS_FILE
    from siamkit.training.presets import CANDIDATES_FOLDER
    from siamkit.training.trainer import CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE

    written = {ENCODER_FILE, CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE, SPLIT_FILE, EVAL_FOLDER}
    written.add(CANDIDATES_FOLDER)
    temporary = name.startswith(".") and (name.endswith(".tmp") or name == ".encoder-weights.pt")
    return name in written or bool(WEIGHTS_FILE.fullmatch(name)) or temporary


def _check_resume_split(args: argparse.Namespace, split_info: dict[str, Any]) -> None:
    path = args.out / SPLIT_FILE
    if not args.resume or not path.exists():
        return
    try:
        saved = parse_json(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(
            f"cannot resume {args.out}: {path} is unreadable ({err}); restore it, or start "
            "a new run in another --out"
        ) from None
    if not isinstance(saved, dict) or saved.get("val_classes") != split_info["val_classes"]:
        raise TrainingError(
            f"cannot resume {args.out}: it held out {_held_out(saved)}, this call "
            f"{split_info['val_classes']}; use the same --seed and --val-classes"
        )


def _held_out(saved: object) -> object:
    return saved.get("val_classes") if isinstance(saved, dict) else saved
