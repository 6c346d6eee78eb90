"""``siamkit train``: train an encoder on a folder of people."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from siamkit._atomic import write_json
from siamkit.exceptions import ConfigError, TrainingError
from siamkit.training.config import TrainConfig

SPLIT_FILE = "split.json"
#: Where `siamkit eval --model DIR` writes its report by default.
EVAL_FOLDER = "evaluation"


def add_parser(commands: Any) -> None:
    defaults = TrainConfig()
    parser = commands.add_parser(
        "train",
        help="train an encoder on an image folder (one sub-folder per person)",
        description="Train an encoder with the contrastive loss on a folder of people, "
        "validating every epoch on people held out of training. Writes a model directory "
        "that siamkit.load_encoder() loads, with checkpoint.pt, history.json, loss_plot.png "
        "and split.json.",
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
        "--encoder",
        default="compact",
        metavar="NAME",
        help="registered encoder name, plugins included (default: %(default)s; see `siamkit list`)",
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
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="passes over the training people (default: %(default)s)",
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
        default=defaults.lr,
        help="peak learning rate of AdamW (default: %(default)s)",
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
    parser.set_defaults(handler=run)


def parse_encoder_args(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``, values parsed as JSON when possible."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--encoder-arg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def run(args: argparse.Namespace) -> int:
    import torch

    from siamkit.data.folder import FaceFolder
    from siamkit.data.splits import split_by_class
    from siamkit.encoders.base import create_encoder
    from siamkit.training.trainer import Trainer

    _check_out_folder(args.out, resume=args.resume)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        m_per_class=args.m_per_class,
        lr=args.lr,
        weight_decay=args.weight_decay,
        margin=args.margin,
        miner=args.miner,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
    )
    dataset = FaceFolder(args.data, min_images_per_class=2)
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
    torch.manual_seed(args.seed)  # the encoder's initial weights
    encoder = create_encoder(args.encoder, **parse_encoder_args(args.encoder_arg))
    trainer = Trainer(encoder, config, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / SPLIT_FILE, split_info)
    result = trainer.fit(split.train, split.val if len(split.val) else None, args.out, args.resume)
    last = result.history[-1]
    print(
        f"trained {args.encoder} for {len(result.history)} epochs in {result.seconds:.0f} s "
        f"on {trainer.runtime.get('num_threads', '?')} threads; "
        f"final loss {last['loss']:.4f}"
    )
    if result.best:
        print(
            f"best epoch {result.best_epoch}: held-out AUC {result.best['auc']:.4f}, "
            f"EER {100 * result.best['eer']:.2f}%, rank-1 {result.best['rank1']:.3f}"
        )
    print(f"model written to {args.out} (load with siamkit.load_encoder)")
    return 0


def _check_out_folder(out: Path, resume: bool) -> None:
    """Refuse an --out that holds anything but a training run (or a run without --resume)."""
    from siamkit.training.trainer import CHECKPOINT_FILE

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
    if (out / CHECKPOINT_FILE).exists() and not resume:
        raise TrainingError(
            f"{out} already holds a training run: add --resume to continue it, "
            "or pick another --out"
        )


def _is_run_file(name: str) -> bool:
    from siamkit.encoders.base import ENCODER_FILE, WEIGHTS_FILE
    from siamkit.training.trainer import CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE

    written = {ENCODER_FILE, CHECKPOINT_FILE, HISTORY_FILE, PLOT_FILE, SPLIT_FILE, EVAL_FOLDER}
    temporary = name.startswith(".") and (name.endswith(".tmp") or name == ".encoder-weights.pt")
    return name in written or bool(WEIGHTS_FILE.fullmatch(name)) or temporary


def _check_resume_split(args: argparse.Namespace, split_info: dict[str, Any]) -> None:
    path = args.out / SPLIT_FILE
    if not args.resume or not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
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
