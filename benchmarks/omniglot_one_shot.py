"""Omniglot 20-way one-shot: what ``siamkit train --data .../images_background`` gives.

The data is ``--data`` (``../shared/data/omniglot``: torchvision's layout,
``omniglot-py/images_background`` with 30 alphabets, ``images_evaluation``
with 10 of the evaluation set's 20, and Lake et al.'s 20 official runs in
``one_shot_runs``). Models train on the background set only; every setting of
the recipe was chosen on held-out background alphabets, never on what is
measured here.

Two measurements of 20-way one-shot accuracy (nearest support image in the
encoder's geometry, :func:`siamkit.evaluation.evaluate_few_shot`):

* **runs**: Lake et al.'s 20 official runs (20 classes of one evaluation
  alphabet each, one drawing as the support, another drawer's as the query),
  the figure the literature quotes (Koch et al. 2015: 92.0%);
* **episodes**: 1,000 seeded 20-way 1-shot episodes (seed 0) drawn within one
  alphabet of ``images_evaluation`` (the same episodes for every row), with
  the 95% interval over episodes.

Rows, in one run:

1. **raw pixels**: nearest neighbour on the 105x105 greyscale pixels
   (Euclidean), an :class:`siamkit.Encoder` subclass of nine lines;
2. **face model**: the face recipe's encoder as ``--preset face`` starts it,
   frozen (``dlib-sface`` behind the ``yunet`` aligner): what the default
   picked before the recipe followed the data (needs the faces extra;
   ``--no-face`` leaves it out);
3. **Koch et al. 2015**: the published figure, not re-run;
4. **siamkit characters**: ``train_recipe(background, out,
   RecipeOptions(config=TrainConfig(seed=S, num_threads=T)))``, exactly
   ``siamkit train --data .../images_background --out M --seed S --threads T``
   (``--preset auto`` finds line drawings and picks the characters recipe: a
   Conv-4, the contrastive loss, turned classes), for each ``--seeds`` seed:
   the mean, the standard deviation over seeds and each seed's figures;
5. **siamkit characters + PML loss** (``--pml-seeds``, default one seed): the
   same recipe with pytorch-metric-learning's ``MultiSimilarityLoss``
   (``--loss pml --loss-arg loss=MultiSimilarityLoss --encoder-arg
   metric=cosine``), as a comparison.

Training seconds are the recipe's own (``RecipeRun.seconds``: loading the
images and training, validation included), on ``--threads`` threads.

Usage::

    python benchmarks/omniglot_one_shot.py --data ../shared/data/omniglot --threads 2

writes ``benchmarks/results/omniglot_one_shot.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import siamkit
from siamkit.evaluation import evaluate_few_shot, read_one_shot_runs
from siamkit.training import RecipeOptions, TrainConfig, train_recipe

KOCH_RUNS = 0.920
EPISODE_SEED = 0


class RawPixels(siamkit.Encoder):
    """The image's own pixels as its embedding: the nearest-neighbour baseline."""

    def __init__(self, size: int = 105) -> None:
        super().__init__()
        self.embedding_dim = size * size
        self.in_channels, self.input_size = 1, (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def measure(encoder: Any, data: Path) -> dict[str, Any]:
    """The runs' and the seeded episodes' 20-way 1-shot results of ``encoder``."""
    root = data / "omniglot-py"
    runs = evaluate_few_shot(encoder, read_one_shot_runs(data / "one_shot_runs"))
    episodes = evaluate_few_shot(
        encoder, root / "images_evaluation", 20, 1, 1000, seed=EPISODE_SEED, layout="grouped"
    )
    return {"runs": runs.to_dict(), "episodes": episodes.to_dict()}


def train_and_measure(data: Path, work: Path, seed: int, threads: int, pml: bool) -> dict[str, Any]:
    """Train by the recipe ``siamkit train`` picks, then measure the kept model."""
    out = work / f"{'pml' if pml else 'contrastive'}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    extra: dict[str, Any] = {}
    if pml:
        extra = {"loss": "pml", "loss_args": {"loss": "MultiSimilarityLoss"},
                 "encoder_args": {"metric": "cosine"}, "preset": "characters"}  # fmt: skip
    options = RecipeOptions(config=TrainConfig(seed=seed, num_threads=threads), **extra)
    lines: list[str] = []
    started = time.perf_counter()
    run = train_recipe(data / "omniglot-py" / "images_background", out, options, say=lines.append)
    wall = time.perf_counter() - started
    encoder = siamkit.load_encoder(out)
    result = measure(encoder, data)
    result.update(seed=seed, recipe=run.recipe.name, why=run.recipe.why, seconds=run.seconds,
                  wall_seconds=wall, said=lines, best_epoch=run.result.best_epoch,  # type: ignore[union-attr]
                  epochs=len(run.result.history))  # type: ignore[union-attr]  # fmt: skip
    runs, episodes = result["runs"]["accuracy"], result["episodes"]["accuracy"]
    print(f"  seed {seed}: runs {100 * runs:.2f}%, episodes {100 * episodes:.2f}%, "
          f"{run.seconds:.0f} s", flush=True)  # fmt: skip
    return result


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of each measurement."""
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in results]}
    for key in ("runs", "episodes"):
        values = [r[key]["accuracy"] for r in results]
        summary[key] = {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "each": values,
        }
    summary["seconds"] = statistics.fmean(r["seconds"] for r in results)
    return summary


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def table(report: dict[str, Any]) -> str:
    """The Markdown table of the report (the docs quote it)."""
    threads = report["threads"]
    lines = [
        "| | 20 official runs | 1,000 episodes (evaluation alphabets) | training |",
        "|---|---|---|---|",
    ]
    for name, row in report["fixed"].items():
        episodes = row["episodes"]
        lines.append(f"| {name} | {_pct(row['runs']['accuracy'])} | "
                     f"{_pct(episodes['accuracy'])} ± {_pct(episodes['ci95'])} | — |")  # fmt: skip
    lines.append(f"| Koch et al. 2015 (published) | {_pct(KOCH_RUNS)} | — | — |")
    for name, row in report["trained"].items():
        seeds = len(row["seeds"])
        spread = {k: "" if row[k]["sd"] is None else f" ± {_pct(row[k]['sd'])}"
                  for k in ("runs", "episodes")}  # fmt: skip
        each = ", ".join(_pct(v) for v in row["runs"]["each"])
        lines.append(
            f"| {name} ({seeds} seed{'s' if seeds > 1 else ''}; runs: {each}) | "
            f"**{_pct(row['runs']['mean'])}**{spread['runs']} | "
            f"{_pct(row['episodes']['mean'])}{spread['episodes']} | "
            f"{row['seconds'] / 60:.1f} min on {threads} threads |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/omniglot"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/siamkit-omniglot"),
                        help="where the trained models go")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pml-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-face", action="store_true", help="leave the face-model row out")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": "python benchmarks/omniglot_one_shot.py " + " ".join(argv or []),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "threads": args.threads, "episode_seed": EPISODE_SEED, "fixed": {}, "trained": {},
    }  # fmt: skip
    print("raw pixels", flush=True)
    report["fixed"]["raw pixels (nearest neighbour)"] = measure(RawPixels(), args.data)
    if not args.no_face:
        from siamkit.training.recipes import face_aligner, face_encoder

        print("face model", flush=True)
        face = face_encoder("none", aligner=face_aligner())
        report["fixed"]["face model (frozen dlib-sface + yunet)"] = measure(face, args.data)
    for name, seeds, pml in (
        ("siamkit characters, contrastive loss", args.seeds, False),
        ("siamkit characters, PML MultiSimilarityLoss", args.pml_seeds, True),
    ):
        if not seeds:
            continue
        print(name, flush=True)
        results = [train_and_measure(args.data, args.work, s, args.threads, pml) for s in seeds]
        report["trained"][name] = {**summarise(results), "each_seed": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "omniglot_one_shot.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "omniglot_one_shot.md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    main()
