"""Fine-tuning on people in the wild: does ``siamkit train`` beat its frozen model on unseen people?

The set and folds are those of ``faces_in_the_wild.py`` (the photos
``../shared/data/celeba-wild-dev/build.py`` builds, 97 people, 4 subject-disjoint
folds: identities sorted as strings, ``fold = position % 4``). For each fold k:

1. a folder of the other three folds' people (symbolic links to their photo
   folders) is trained on with the README's command, ``siamkit train --data DIR
   --out M --threads T`` (the face recipe: ``dlib-sface`` behind ``yunet``; it
   holds out some of those people itself, tries its gentle fine-tuning
   candidates and keeps the frozen model unless one wins there);
2. the kept model is loaded (``siamkit.load_encoder(M)``, its saved aligner
   included) and fold k's photos are embedded through ``encoder.embed``;
3. on fold k, for the trained model and for the frozen recipe (its embeddings
   from the ``faces_in_the_wild`` cache, or computed here the same way): AUC and
   EER over all pairs, TAR at FAR 1e-3 with the threshold fitted on fold k's own
   pairs (the other folds are the trained model's training people, so their
   threshold would be biased; both rows use the same rule), rank-1 leave-one-out.

The figures say what fine-tuning brings on people the model never saw, and which
candidate the rule kept in each fold (with every candidate's held-out EER, as
``siamkit train`` printed it). Runs take about 10-20 minutes per fold on 2 cores;
a fold whose model folder is complete is not trained again (``--retrain``
forces it).

Writes ``benchmarks/results/wild_fine_tuning.json`` and ``.md``.

Usage::

    python benchmarks/wild_fine_tuning.py --data /work/data/celeba-wild-dev
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faces_in_the_wild as wild  # the set, the folds and the frozen row

NAME = "wild_fine_tuning"
DEFAULT_WORK = Path(tempfile.gettempdir()) / "siamkit-bench-cache" / NAME
TARGET_FAR = wild.TARGET_FAR
METRIC = "euclidean"


def fold_metrics(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, EER, TAR at FAR 1e-3 (threshold from these pairs) and rank-1 of one fold."""
    from siamkit.evaluation import (
        all_pairs_distances,
        rank1_leave_one_out,
        tar_at_far,
        verification_metrics,
    )

    d, same = all_pairs_distances(emb, labels, METRIC)
    verification = verification_metrics(d, same)
    fit = tar_at_far(d, same, TARGET_FAR)
    return {
        "auc": verification.auc,
        "eer": verification.eer,
        "tar": fit.tar,
        "rank1": rank1_leave_one_out(emb, labels, METRIC),
        "genuine_pairs": verification.num_genuine,
        "impostor_pairs": verification.num_impostor,
    }


def training_folder(photos: wild.PhotoSet, fold: int, root: Path) -> Path:
    """A folder of links to every person's photo folder outside ``fold``."""
    folder = root / f"train-without-fold-{fold}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path, person_fold in zip(photos.paths, photos.folds, strict=True):
        person = path.parent
        link = folder / person.name
        if person_fold != fold and not link.exists():
            link.symlink_to(person.resolve(), target_is_directory=True)
    return folder


def train(data: Path, out: Path, threads: int, retrain: bool) -> dict[str, Any]:
    """``siamkit train`` on ``data`` into ``out`` (skipped when ``out`` holds a finished run)."""
    from siamkit.training.fine_tuning import read_fine_tuning

    if not retrain and read_fine_tuning(out) is not None:
        return {"trained_here": False, "seconds": None, "output": "(a finished run, reused)"}
    shutil.rmtree(out, ignore_errors=True)
    command = ["siamkit", "train", "--data", str(data), "--out", str(out)]
    command += ["--threads", str(threads), "--quiet"]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"siamkit train failed ({done.returncode}): {done.stderr.strip()}")
    print(done.stdout.strip(), flush=True)
    return {"trained_here": True, "seconds": round(seconds, 1), "output": done.stdout.strip()}


def embed_fold(model: Path, paths: list[Path], threads: int) -> np.ndarray:
    """Fold photos through the saved model and its saved aligner, one photo at a time."""
    import torch

    import siamkit

    torch.set_num_threads(threads)
    encoder = siamkit.load_encoder(model).eval()
    rows = [encoder.embed(str(p))[0] for p in wild.progress(paths, model.name)]
    return np.stack(rows)


def markdown(report: dict[str, Any]) -> str:
    """The results as a markdown table, with each fold's kept candidate."""

    def cells(m: dict[str, float]) -> str:
        return f"{m['auc']:.4f} | {100 * m['eer']:.2f}% | {100 * m['tar']:.1f}% | {m['rank1']:.3f}"

    lines = [
        "# Fine-tuning on people in the wild",
        "",
        "`python benchmarks/wild_fine_tuning.py --data <celeba-wild-dev>`: per fold, "
        "`siamkit train` on the other three folds' people, tested on this fold's "
        f"({report['people']} people, {report['photos']} photos, 4 subject-disjoint folds; "
        "TAR at FAR 1e-3 with the threshold fitted on the fold's own pairs, for both rows).",
        "",
        "| model | AUC | EER | TAR @ FAR 1e-3 | rank-1 |",
        "|---|---|---|---|---|",
        f"| frozen recipe (`dlib-sface` behind `yunet`) | {cells(report['mean']['frozen'])} |",
        f"| `siamkit train` on the other folds | {cells(report['mean']['trained'])} |",
        "",
        "| fold | kept | held-out EER of each candidate (inside training) | "
        "test EER frozen | test EER trained | train s |",
        "|---|---|---|---|---|---|",
    ]
    for f in report["folds"]:
        seconds = "-" if f["train_seconds"] is None else f"{f['train_seconds']:.0f}"
        lines.append(
            f"| {f['fold']} | {f['kept']} | {f['candidates']} | "
            f"{100 * f['frozen']['eer']:.2f}% | {100 * f['trained']['eer']:.2f}% | {seconds} |"
        )
    lines += [
        "",
        "train s: `siamkit train`'s wall time in this run; '-' for a fold whose finished "
        "model folder was reused.",
        "",
        f"Machine: {report['machine']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder build.py wrote")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="models and links")
    parser.add_argument("--cache", type=Path, default=wild.DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=wild.RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(wild.FOLDS)))
    parser.add_argument("--retrain", action="store_true", help="train folds that have a model")
    args = parser.parse_args(argv)

    from siamkit.training.fine_tuning import read_fine_tuning

    photos = wild.read_set(args.data)
    if photos.listing != wild.EXPECTED_LISTING:
        print(f"note: the set's listing is {photos.listing}, not build.py's", flush=True)
    frozen, source = wild.cached("fusion", photos, args.cache, lambda: wild.pipeline("fusion"))
    if wild.recipe_row({"fusion": source}) != "fusion":
        raise SystemExit("the fusion row is no longer the face recipe; update this benchmark")
    folds = []
    for fold in args.folds:
        model = args.work / f"model-without-fold-{fold}"
        data = training_folder(photos, fold, args.work)
        run = train(data, model, args.threads, args.retrain)
        selection = read_fine_tuning(model)
        index = np.flatnonzero(photos.folds == fold)
        labels = photos.labels[index]
        trained = embed_fold(model, [photos.paths[i] for i in index], args.threads)
        folds.append(
            {
                "fold": fold,
                "people": len(set(labels.tolist())),
                "kept": selection.kept,
                "reason": selection.reason,
                "candidates": selection.summary(),
                "train_seconds": run["seconds"],
                "train_output": run["output"],
                "frozen": fold_metrics(frozen["embeddings"][index], labels),
                "trained": fold_metrics(trained, labels),
            }
        )
        print(
            f"fold {fold}: kept {selection.kept}; test EER frozen "
            f"{100 * folds[-1]['frozen']['eer']:.2f}%, trained "
            f"{100 * folds[-1]['trained']['eer']:.2f}%",
            flush=True,
        )
    mean = {
        row: {
            key: float(np.mean([f[row][key] for f in folds]))
            for key in ("auc", "eer", "tar", "rank1")
        }
        for row in ("frozen", "trained")
    }
    report = {
        "benchmark": NAME,
        "command": "python benchmarks/wild_fine_tuning.py --data <celeba-wild-dev>",
        "people": photos.people,
        "photos": len(photos.paths),
        "listing": photos.listing,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "mean": mean,
        "folds": folds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{NAME}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
