"""Retrieval of held-out car models: raw pixels, from scratch, ImageNet frozen and fine-tuned.

The data is ``--data``, the development part of Stanford Cars that
``../shared/data/cars-dev/build.py`` builds (classes 1-98 of the Cars196
protocol, box crops, ``<NNN>_<name>/<NNNNN>.jpg``). Classes sorted by name, the
last ``--test-classes`` (default 25) are measured here and never trained on or
chosen with; the others are the training classes, of which every recipe holds
out a seeded quarter to choose its settings (``siamkit train``'s default
split). siamkit is also measured on Cars196's classes 99-196 outside this
repository, which this copy does not hold.

The measure is Recall@1 over the test classes' photos, each the query against
all the others (the Cars196 protocol; :func:`siamkit.evaluation.rank1_leave_one_out`
in the encoder's own geometry). Rows, in one run:

1. **raw pixels**: 32x32 RGB thumbnails, Euclidean, an :class:`siamkit.Encoder`
   of ten lines;
2. **from scratch**: ``siamkit train --preset scratch`` (its compact CNN from
   random weights, ``--scratch-epochs`` epochs);
3. **ImageNet, frozen**: ``efficientnet-lite0`` with its ImageNet weights as
   they are;
4. **ImageNet, fine-tuned**: each of the photos recipe's fine-tuning
   candidates trained on its own (``--preset scratch --encoder
   efficientnet-lite0 --encoder-arg trainable_from=PART`` at the candidate's
   learning rate and epochs, no warm-up, the best held-out epoch kept);
5. **siamkit train (photos recipe)**: ``siamkit train --data TRAIN --out M``
   with no other flag (``--preset auto`` finds photos and picks the photos
   recipe), the model it keeps and why.

Usage::

    python benchmarks/cars_retrieval.py --data /path/to/cars-dev --threads 2

writes ``benchmarks/results/cars_retrieval.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

import siamkit
from siamkit.data import FaceFolder, split_by_class
from siamkit.evaluation import rank1_leave_one_out
from siamkit.training import RecipeOptions, TrainConfig, train_recipe
from siamkit.training.fine_tuning import candidate_config
from siamkit.training.photos import PHOTOS_CANDIDATES, PHOTOS_ENCODER


class RawPixels(siamkit.Encoder):
    """A 32x32 RGB thumbnail's pixels as its embedding: the nearest-neighbour baseline."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.embedding_dim, self.in_channels, self.input_size = 3 * size * size, 3, (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def recall_at_1(encoder: Any, paths: list[str], labels: list[int]) -> float:
    """Recall@1 of ``encoder`` over ``paths``, each photo querying all the others."""
    embeddings = encoder.eval().embed(paths)
    return rank1_leave_one_out(embeddings, labels, encoder.metric)


def _trained(split: Any, out: Path, options: RecipeOptions, test: tuple) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    lines: list[str] = []
    started = time.perf_counter()
    run = train_recipe(split, out, options, say=lines.append)
    seconds = time.perf_counter() - started
    recall = recall_at_1(siamkit.load_encoder(out), *test)
    row: dict[str, Any] = {"recall_at_1": recall, "seconds": seconds, "recipe": run.recipe.name,
                           "why": run.recipe.why, "said": lines}  # fmt: skip
    if run.selection is not None:
        row["kept"] = run.selection.kept
        row["selection"] = run.selection.to_dict()
    print(f"  Recall@1 {100 * recall:.2f}%, {seconds:.0f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="cars-dev (build.py's OUT)")
    parser.add_argument("--test-classes", type=int, default=25)
    parser.add_argument("--work", type=Path, default=Path("/tmp/siamkit-cars"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch-epochs", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                        help="measure only these rows and keep the others of the saved report "
                        "(same data, seed and test classes)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = FaceFolder(args.data, min_images_per_class=2)
    test_classes = folder.classes[-args.test_classes :]
    split = split_by_class(folder, val=0.25, test_classes=test_classes, seed=args.seed)
    test_paths = [folder.paths[i] for i in split.test.indices]
    test_labels = [folder.targets[i] for i in split.test.indices]
    test = (test_paths, test_labels)
    config = TrainConfig(seed=args.seed, num_threads=args.threads)
    report: dict[str, Any] = {
        "command": "python benchmarks/cars_retrieval.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "threads": args.threads, "seed": args.seed, "test_classes": test_classes,
        "test_images": len(test_paths), "train_classes": split.train_classes,
        "val_classes": split.val_classes, "rows": {},
    }  # fmt: skip
    rows = report["rows"] = _kept_rows(args, report)
    print(f"{len(test_classes)} test classes, {len(test_paths)} photos", flush=True)
    if "raw" in args.rows:
        rows["raw pixels (32x32 RGB)"] = {"recall_at_1": recall_at_1(RawPixels(), *test)}
    if "frozen" in args.rows:
        from siamkit.encoders import EfficientNetLite0

        frozen = recall_at_1(EfficientNetLite0(trainable_from="none"), *test)
        rows[f"{PHOTOS_ENCODER}, ImageNet, frozen"] = {"recall_at_1": frozen}
        print(f"  frozen: Recall@1 {100 * frozen:.2f}%", flush=True)
    if "scratch" in args.rows:
        print("from scratch", flush=True)
        scratch = dataclasses.replace(config, epochs=args.scratch_epochs)
        rows[f"from scratch (compact, {args.scratch_epochs} epochs)"] = _trained(
            split, args.work / "scratch", RecipeOptions(preset="scratch", config=scratch), test
        )
    for candidate in PHOTOS_CANDIDATES:
        if candidate.frozen or "fine-tuned" not in args.rows:
            continue
        print(f"fine-tuned: {candidate.describe()}", flush=True)
        options = RecipeOptions(
            preset="scratch", encoder=PHOTOS_ENCODER, config=candidate_config(
                dataclasses.replace(config, flip=0.5), candidate),
            encoder_args={"trainable_from": candidate.trainable_from},
        )  # fmt: skip
        rows[f"{PHOTOS_ENCODER}, ImageNet, fine-tuned: {candidate.describe()}"] = _trained(
            split, args.work / candidate.name, options, test
        )
    if "recipe" in args.rows:
        print("siamkit train (the photos recipe)", flush=True)
        rows["siamkit train --data TRAIN (auto: photos recipe)"] = _trained(
            split, args.work / "recipe", RecipeOptions(config=config), test
        )
    rows = report["rows"] = {name: rows[name] for name in sorted(rows, key=_row_order)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cars_retrieval.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cars_retrieval.md").write_text(table(report))
    print(table(report))


ROWS = ("raw", "frozen", "scratch", "fine-tuned", "recipe")


def _row_order(name: str) -> int:
    """Rows in the order of :data:`ROWS`, whichever run measured them."""
    keys = ("raw pixels", "frozen", "from scratch", "fine-tuned", "siamkit train")
    return next(i for i, key in enumerate(keys) if key in name)


def _kept_rows(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """The saved report's rows that this run does not measure (all of them: none kept)."""
    saved = args.out / "cars_retrieval.json"
    if set(args.rows) == set(ROWS) or not saved.is_file():
        return {}
    old = json.loads(saved.read_text())
    same = all(old.get(k) == report[k] for k in ("seed", "test_classes", "val_classes"))
    if not same:
        raise SystemExit(f"{saved} measured other classes or another seed: run every row")
    measured = {"raw": "raw pixels", "frozen": "frozen", "scratch": "from scratch",
                "fine-tuned": "fine-tuned", "recipe": "siamkit train"}  # fmt: skip
    gone = [measured[row] for row in args.rows]
    return {name: row for name, row in old["rows"].items() if not any(g in name for g in gone)}


def table(report: dict[str, Any]) -> str:
    """The Markdown table of the report (the docs quote it)."""
    lines = [
        f"| {report['test_images']} photos of {len(report['test_classes'])} held-out car models "
        "| Recall@1 | training |",
        "|---|---|---|",
    ]
    for name, row in report["rows"].items():
        seconds = row.get("seconds")
        took = "—" if seconds is None else f"{seconds / 60:.1f} min on {report['threads']} threads"
        kept = f" (kept: {row['kept']})" if "kept" in row else ""
        lines.append(f"| {name}{kept} | {100 * row['recall_at_1']:.1f}% | {took} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
