"""``siamkit eval``: measure a trained encoder on a folder of people.

An ONNX export is evaluated without PyTorch: nothing on that path imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from siamkit._folders import skipped_lines
from siamkit.cli.arguments import add_layout_argument


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a trained model on a folder of people: metrics, pictures, HTML report",
        description="Evaluate a trained encoder on an image folder (one sub-folder per person): "
        "ROC AUC, EER, TAR at FAR 1e-1/1e-2/1e-3, accuracy, 10-fold accuracy, rank-k/CMC, "
        "precision@1, MAP@R, open-set rates, and FNIR at FPIR 0.1/0.01/0.001 with a DET "
        "curve (the people split into enrolled and unknown, seeded). Writes evaluation.json, "
        "the pictures and report.html to --out.",
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="MODEL",
        help="model directory written by `siamkit train` or Encoder.save(), or an ONNX "
        "export (a .onnx file or folder from `siamkit export`)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="image folder of the people to evaluate on (ideally not seen in training)",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=None,
        metavar="FILE",
        help="CSV of image_a,image_b,same (paths relative to --data); default: "
        "all pairs of the folder's images",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output directory: new, empty or an earlier report's, never another folder "
        "(default: MODEL/evaluation; for a .onnx file, MODEL-evaluation beside it)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the example pairs and of the open-set split into enrolled and unknown "
        "people (default: %(default)s)",
    )
    _add_few_shot_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def _add_few_shot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--few-shot",
        default=None,
        metavar="NxK",
        help="also measure N-way K-shot classification (e.g. 20x1) on seeded episodes of "
        "--data's classes, drawn within one group when the folder is grouped "
        "(DIR/<group>/<class>/<image>, as Omniglot's alphabets)",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=1000,
        metavar="N",
        help="seeded few-shot episodes (default: %(default)s; 0 with --runs: only the runs)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        metavar="DIR",
        help="also score fixed one-shot runs: DIR/runNN/class_labels.txt, as Lake et al.'s "
        "20 official Omniglot runs",
    )
    add_layout_argument(parser, "")


def summary_lines(result: Any) -> list[str]:
    """The human-readable table ``siamkit eval`` prints."""
    from siamkit.thresholds import unreliable_reason

    v = result.verification
    lines = [
        f"{result.num_images} images of {result.num_people} people, {result.num_pairs} pairs "
        f"({v.num_genuine} genuine), {result.metric} distance",
        f"  ROC AUC             {v.auc:.4f}",
        f"  EER                 {100 * v.eer:.2f}%",
        f"  accuracy            {100 * result.accuracy:.2f}% at threshold {result.threshold:.4f} "
        f"({result.threshold_source})",
        f"  10-fold accuracy    {100 * result.kfold.mean:.2f}% ± {100 * result.kfold.std:.2f}",
    ]
    for t in result.tar_at_far:
        note = "" if t.reliable else f"  (unreliable: {unreliable_reason(t)})"
        lines.append(f"  TAR @ FAR {t.target_far:<8g}  {100 * t.tar:.2f}%{note}")
    ident = result.identification
    lines += [
        f"  rank-1 / rank-5     {ident['rank1']:.3f} / {ident['rank5']:.3f}",
        f"  precision@1, MAP@R  {ident['precision_at_1']:.3f}, "
        f"{ident['mean_average_precision_at_r']:.3f}",
    ]
    if result.open_set is not None:
        lines.append(
            f"  open set            DIR {result.open_set.detection_identification_rate:.3f}, "
            f"unknown rejected {100 * result.open_set.unknown_rejection_rate:.1f}%"
        )
    search = result.open_set_search
    for f in [] if search is None else search.fnir_at_fpir:
        note = "" if f.reliable else f"  (unreliable: {unreliable_reason(f)})"
        fnir = "n/a" if f.fnir is None else f"{100 * f.fnir:.2f}%"
        lines.append(f"  FNIR @ FPIR {f.target_fpir:<6g}  {fnir}{note}")
    if result.groups is not None:
        lines.append(f"  layout              grouped: {result.num_people} classes in "
                     f"{result.groups} groups (--layout flat: a class per top folder)")  # fmt: skip
    for few in result.few_shot:
        lines.append(f"  few-shot            {few.summary()}")
    if result.alignment is not None:
        lines.append(f"  alignment           {result.alignment.summary()}")
    return lines + skipped_lines(result.skipped_files)


def run(args: argparse.Namespace) -> int:
    from siamkit import load_encoder  # without torch: ONNX exports only
    from siamkit.evaluation.report import write_report
    from siamkit.evaluation.runner import check_report_folder, evaluate_encoder
    from siamkit.model_folder import evaluation_folder

    few_shot = _few_shot(args)  # a bad NxK fails before anything is loaded
    out = args.out or evaluation_folder(args.model)
    # Before the model is loaded and the images embedded: a refused --out costs nothing.
    check_report_folder(out, "--out" if args.out else "the report folder")
    encoder = load_encoder(args.model)
    result = evaluate_encoder(
        encoder, args.data, pairs=args.pairs, out_dir=out, model_dir=args.model, seed=args.seed,
        progress=not (args.quiet or args.json), few_shot=few_shot, layout=args.layout,
    )  # fmt: skip
    report = write_report(result, out, model_dir=args.model)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"report: {report}")
    return 0


def _few_shot(args: argparse.Namespace) -> Any:
    from siamkit.evaluation.few_shot import FewShot, parse_few_shot
    from siamkit.exceptions import ConfigError

    if args.few_shot is None and args.runs is None:
        return None
    if args.episodes < 0:
        raise ConfigError(f"--episodes must be 0 or more, got {args.episodes}")
    if args.few_shot is None:  # the runs alone
        return FewShot(episodes=0, runs=args.runs)
    n_way, k_shot = parse_few_shot(args.few_shot)
    return FewShot(n_way, k_shot, args.episodes, args.runs)
