"""Subject-disjoint face verification and open-set search on the AT&T/ORL faces.

Protocol: the 40 people are permuted with ``numpy.random.default_rng(0)``; fold
k holds out people ``perm[10k:10k+10]`` (100 images) and trains on the other
30. On the held-out people all 4,950 pairs (450 genuine, 4,500 impostor) give
ROC AUC, EER and TAR at FAR 1e-3; the decision threshold is fitted on the
training people's pairs only and its accuracy reported on the held-out pairs;
rank-1 is leave-one-out nearest neighbour among the held-out images. Open-set
search: the held-out people are split as ``siamkit demo`` splits them (4 of 10
kept out of the gallery, half of each enrolled person's images enrolled,
seeded by the fold) and FNIR is read at FPIR 0.01 (threshold fitted on those
very searches: the DET curve's point). Seconds are wall time on this machine
(``--threads``, 2 by default): training per fold, and images per second of
the method's whole embedding pipeline (reading, alignment, network) on the
held-out images.

Every learned method is trained once per fold and per seed (``--seeds``, 0 1 2
by default); the table gives, for each metric, the mean over seeds of the
mean over folds, and its spread: the standard deviation of that fold mean
over the seeds (``std``, ddof 1). Methods without randomness run once per fold.

Methods, in one run on the same folds:

* ``siamkit``: exactly what a user runs, ``siamkit train --data DIR --out M``
  with no other flag (only ``--seed`` and ``--threads``), through the CLI's own
  code path, on a folder holding the fold's 30 training people. It holds a
  quarter of them out for validation, as the CLI always does. With the faces
  extra installed this is the face recipe: its aligner, the pretrained face
  ResNet, fine-tuned only if that beats the frozen model on the held-out
  people;
* ``frozen``: the face recipe's pretrained face ResNet behind its aligner, not trained;
* ``frozen-dlib``: the face recipe before YuNet: ``dlib-face`` without flip
  averaging behind the ``dlib`` aligner (its defaults), not trained;
* ``dlib``: the anchor, dlib's own Python API as the ``face_recognition``
  package uses it (HOG detector with one upsampling, 5-point landmarks,
  ``compute_face_descriptor``); images where no face is found use the whole
  image as the face's box, as siamkit's ``fallback`` policy does;
* ``scratch``: ``siamkit train --preset scratch`` (CompactCNN from random weights);
* ``pml``: a plain pytorch-metric-learning pipeline as a user would write it
  without siamkit (small CNN, ContrastiveLoss, PairMarginMiner, MPerClassSampler);
* ``pixels``: raw pixels (56x46 greyscale), a floor;
* ``tutorial`` and ``eigenfaces`` (not run by default): the classic tutorial's
  recipe, and PCA on pixels.

The faces are from the Olivetti Research Laboratory, Cambridge (AT&T).

Usage::

    python benchmarks/orl_verification.py [--data ../shared/data/att_faces]
        [--methods siamkit frozen frozen-dlib dlib scratch pml pixels]
        [--folds 0 1 2 3] [--seeds 0 1 2]

A smoke test of the script itself, in a few minutes::

    python benchmarks/orl_verification.py --folds 0 --seeds 0 \
        --methods frozen dlib pixels --out /tmp/orl-smoke
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import siamkit
from siamkit.cli.main import main as siamkit_cli
from siamkit.data import dataset_labels, make_pairs
from siamkit.evaluation import (
    accuracy_at,
    all_pairs_distances,
    fit_threshold,
    rank1_leave_one_out,
    tar_at_far,
    verification_metrics,
)
from siamkit.evaluation.open_set import open_set_search

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "att_faces"
METHODS = (
    "siamkit", "frozen", "frozen-dlib", "dlib", "scratch", "pml", "pixels", "tutorial",
    "eigenfaces",
)  # fmt: skip
DEFAULT_METHODS = ("siamkit", "frozen", "frozen-dlib", "dlib", "scratch", "pml", "pixels")
#: Methods without randomness: one run per fold whatever the seeds.
DETERMINISTIC = frozenset({"frozen", "frozen-dlib", "dlib", "pixels", "eigenfaces"})
METRICS = (
    "auc", "eer", "tar_at_far_1e-3", "fnir_at_fpir_0.01", "accuracy", "rank1",
    "train_seconds", "images_per_second",
)  # fmt: skip
TARGET_FAR = 1e-3
TARGET_FPIR = 0.01

Embedder = Callable[[list[str]], np.ndarray]


def fold_people(fold: int, num_people: int = 40) -> list[str]:
    perm = np.random.default_rng(0).permutation(num_people)
    return [f"s{int(p) + 1}" for p in perm[10 * fold : 10 * fold + 10]]


# -- methods: each trains on (paths, labels) and returns (embed, metric) -------------------


def train_siamkit_cli(
    paths: list[str], labels: np.ndarray, seed: int, extra: tuple[str, ...] = ()
) -> tuple[Embedder, str]:
    """Train through ``siamkit train`` itself, on a folder of the training people."""
    wanted = set(paths)
    with tempfile.TemporaryDirectory(prefix="orl-bench-") as folder:
        work = Path(folder)
        for path in sorted(wanted):
            link = work / "data" / Path(path).parent.name / Path(path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, link)  # a copy: siamkit follows no link out of a folder
        argv = ["train", "--data", str(work / "data"), "--out", str(work / "model")]
        argv += ["--seed", str(seed), "--threads", str(torch.get_num_threads()), "--quiet"]
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            code = siamkit_cli([*argv, *extra])
        if code != 0:
            raise RuntimeError(f"siamkit {' '.join(argv)} failed: {said.getvalue()}")
        LAST_CLI_OUTPUT[:] = said.getvalue().strip().splitlines()
        encoder = siamkit.load_encoder(work / "model")  # fully in memory: the folder can go
    return encoder.embed, encoder.metric


#: What the latest CLI run printed (the recipe it used, the strength it kept).
LAST_CLI_OUTPUT: list[str] = []


def train_siamkit(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    return train_siamkit_cli(paths, labels, seed)


def train_scratch(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    return train_siamkit_cli(paths, labels, seed, ("--preset", "scratch"))


def frozen_face_model(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    from siamkit.training.recipes import face_aligner, face_encoder

    encoder = face_encoder("none", face_aligner())
    return encoder.embed, encoder.metric


def frozen_dlib_aligner(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    """The face recipe before YuNet: ``dlib-face`` (no flip) behind the ``dlib`` aligner."""
    encoder = siamkit.create_encoder("dlib-face", trainable_from="none", flip_average=False)
    encoder.aligner = siamkit.create_aligner("dlib")
    return encoder.embed, encoder.metric


def dlib_anchor(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    """dlib's own pipeline, as the ``face_recognition`` package drives it."""
    import dlib
    from PIL import Image

    from siamkit._model_files import LANDMARK_MODEL, RECOGNITION_MODEL, face_model_file

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(face_model_file(LANDMARK_MODEL)))
    recogniser = dlib.face_recognition_model_v1(str(face_model_file(RECOGNITION_MODEL)))

    def embed(items: list[str]) -> np.ndarray:
        out = []
        for path in items:
            image = np.asarray(Image.open(path).convert("RGB"))
            faces = detector(image, 1)
            box = (
                max(faces, key=lambda r: r.area())
                if faces
                else dlib.rectangle(0, 0, image.shape[1], image.shape[0])
            )
            shape = landmarks(image, box)
            out.append(np.array(recogniser.compute_face_descriptor(image, shape, 0)))
        return np.asarray(out, dtype=np.float32)

    return embed, "euclidean"


def raw_pixels(paths: list[str], labels: np.ndarray, seed: int) -> tuple[Embedder, str]:
    from PIL import Image

    def embed(items: list[str]) -> np.ndarray:
        return np.stack(
            [
                np.asarray(Image.open(p).convert("L").resize((46, 56)), dtype=np.float32).ravel()
                / 255
                for p in items
            ]
        )

    return embed, "euclidean"


def train_tutorial(
    paths: list[str], labels: np.ndarray, seed: int, epochs: int = 100
) -> tuple[Embedder, str]:
    torch.manual_seed(seed)
    encoder = siamkit.create_encoder("tutorial")
    loss_fn = siamkit.ContrastiveLoss(margin=2.0, distance="euclidean")
    optimizer = torch.optim.Adam(encoder.parameters(), lr=5e-4)
    images = torch.stack([encoder.preprocess(p) for p in paths])
    encoder.train()
    for epoch in range(epochs):
        # The tutorial draws a fresh random pair per image each epoch, 50/50 same/different.
        pairs, same = make_pairs(labels, num_pairs=len(paths), seed=seed * 1000 + epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
        for start in range(0, len(order), 64):
            chosen = order[start : start + 64]
            e1 = encoder(images[pairs[chosen, 0]])
            e2 = encoder(images[pairs[chosen, 1]])
            loss = loss_fn(e1, e2, torch.as_tensor(same[chosen]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return encoder.embed, encoder.metric


class _SmallCNN(nn.Module):
    """The kind of small CNN a user writes for 56x46 greyscale faces."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.net = nn.Sequential(
            block(1, 32), block(32, 64), block(64, 128), nn.Flatten(), nn.Linear(128 * 7 * 5, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_pml(
    paths: list[str], labels: np.ndarray, seed: int, epochs: int = 60
) -> tuple[Embedder, str]:
    from PIL import Image
    from pytorch_metric_learning import losses, miners, samplers
    from torchvision import transforms

    torch.manual_seed(seed)
    np.random.seed(seed)  # MPerClassSampler draws from numpy's global generator
    prep = transforms.Compose(
        [transforms.Resize((56, 46)), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    )
    augment = transforms.Compose(
        [transforms.RandomHorizontalFlip(), transforms.RandomAffine(10, translate=(0.05, 0.05))]
    )
    images = [Image.open(p).convert("L") for p in paths]
    model = _SmallCNN()
    loss_fn = losses.ContrastiveLoss()
    miner = miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8)
    sampler = samplers.MPerClassSampler(labels, m=4, length_before_new_iter=len(labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.as_tensor(labels)
    for _ in range(epochs):
        model.train()
        order = list(iter(sampler))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            batch = torch.stack([prep(augment(images[i])) for i in idx])
            emb = model(batch)
            loss = loss_fn(emb, target[idx], miner(emb, target[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def embed(items: list[str]) -> np.ndarray:
        model.eval()
        batch = torch.stack([prep(Image.open(p).convert("L")) for p in items])
        # PML's default distance is Euclidean between L2-normalised embeddings.
        return nn.functional.normalize(model(batch), dim=1).numpy()

    return embed, "euclidean"


def train_eigenfaces(
    paths: list[str], labels: np.ndarray, seed: int, components: int = 60
) -> tuple[Embedder, str]:
    from PIL import Image

    def pixels(items: list[str]) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in items]
        )

    train = pixels(paths)
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:components].T

    def embed(items: list[str]) -> np.ndarray:
        return ((pixels(items) - mean) @ basis).astype(np.float32)

    return embed, "euclidean"


TRAINERS = {
    "siamkit": train_siamkit,
    "frozen": frozen_face_model,
    "frozen-dlib": frozen_dlib_aligner,
    "dlib": dlib_anchor,
    "scratch": train_scratch,
    "pml": train_pml,
    "pixels": raw_pixels,
    "tutorial": train_tutorial,
    "eigenfaces": train_eigenfaces,
}


# -- protocol ----------------------------------------------------------------------------


def evaluate_fold(
    method: str, faces: siamkit.FaceFolder, fold: int, seed: int, epochs: int | None = None
) -> dict[str, float]:
    """Train ``method`` on the fold's 30 training people and measure it on its 10 others."""
    held_out = set(fold_people(fold))
    labels = dataset_labels(faces)
    is_test = np.array([faces.classes[y] in held_out for y in labels])
    paths = np.array(faces.paths)
    train_paths, train_labels = paths[~is_test].tolist(), labels[~is_test]
    test_paths, test_labels = paths[is_test].tolist(), labels[is_test]
    kwargs = {"epochs": epochs} if epochs and method in ("tutorial", "pml") else {}
    LAST_CLI_OUTPUT.clear()
    started = time.perf_counter()
    embed, metric = TRAINERS[method](train_paths, train_labels, seed, **kwargs)
    seconds = time.perf_counter() - started
    train_d, train_same = all_pairs_distances(embed(train_paths), train_labels, metric)
    threshold = fit_threshold(train_d, train_same)
    started = time.perf_counter()
    test_emb = embed(test_paths)
    images_per_second = len(test_paths) / (time.perf_counter() - started)
    test_d, test_same = all_pairs_distances(test_emb, test_labels, metric)
    result = verification_metrics(test_d, test_same)
    search = open_set_search(test_emb, test_labels, metric, seed=fold, targets=(TARGET_FPIR,))
    return {
        "fold": fold,
        "seed": seed,
        "auc": result.auc,
        "eer": result.eer,
        "tar_at_far_1e-3": tar_at_far(test_d, test_same, TARGET_FAR).tar,
        "fnir_at_fpir_0.01": search.fnir_at_fpir[0].fnir,
        "accuracy": accuracy_at(test_d, test_same, threshold),
        "rank1": rank1_leave_one_out(test_emb, test_labels, metric),
        "train_seconds": seconds,
        "images_per_second": images_per_second,
        "cli": list(LAST_CLI_OUTPUT),
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and spread over seeds of each metric's mean over folds.

    Example:
        >>> runs = [{"fold": f, "seed": s, "auc": 0.9 + 0.01 * s} for f in (0, 1) for s in (0, 2)]
        >>> row = summarise(runs)["auc"]
        >>> round(row["mean"], 3), round(row["std"], 4), row["seeds"]
        (0.91, 0.0141, 2)
    """
    seeds = sorted({row["seed"] for row in runs})
    summary = {}
    for key in (k for k in METRICS if k in runs[0]):
        per_seed = [np.mean([r[key] for r in runs if r["seed"] == seed]) for seed in seeds]
        summary[key] = {
            "mean": float(np.mean(per_seed)),
            "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
            "seeds": len(seeds),
        }
    return summary


def _cell(stats: dict[str, float], scale: float, digits: int, unit: str = "") -> str:
    mean = f"{scale * stats['mean']:.{digits}f}{unit}"
    if stats["seeds"] < 2:
        return mean
    return f"{mean} ± {scale * stats['std']:.{digits}f}{unit}"


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per method: mean ± std over seeds of the fold means."""
    lines = [
        "| method | seeds | ROC AUC | EER | TAR @ FAR 1e-3 | FNIR @ FPIR 0.01 "
        "| accuracy @ train threshold | rank-1 | training s / fold | images / s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in summary.items():
        lines.append(
            f"| {method} | {m['auc']['seeds']} | {_cell(m['auc'], 1, 4)} "
            f"| {_cell(m['eer'], 100, 2, '%')} | {_cell(m['tar_at_far_1e-3'], 100, 1, '%')} "
            f"| {_cell(m['fnir_at_fpir_0.01'], 100, 1, '%')} "
            f"| {_cell(m['accuracy'], 100, 2, '%')} | {_cell(m['rank1'], 1, 3)} "
            f"| {m['train_seconds']['mean']:.0f} | {m['images_per_second']['mean']:.0f} |"
        )
    return "\n".join(lines)


def plot_summary(report: dict, path: Path) -> None:
    """AUC and EER of every run (fold × seed) of every method, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    runs = report.get("runs") or report["per_fold"]  # "per_fold": reports before --seeds
    methods = list(runs)
    figure = Figure(figsize=(10, 4), dpi=100)
    axes = figure.subplots(1, 2)
    for ax, key, label in ((axes[0], "auc", "ROC AUC"), (axes[1], "eer", "EER (%)")):
        scale = 100 if key == "eer" else 1
        for position, method in enumerate(methods):
            values = [scale * row[key] for row in runs[method]]
            ax.scatter([position] * len(values), values, alpha=0.6)
            ax.hlines(np.mean(values), position - 0.3, position + 0.3, color="black")
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    figure.suptitle("ORL, people held out of training: each dot a fold and seed, each bar the mean")
    figure.tight_layout()
    figure.savefig(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS, metavar="METHOD"
    )
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="train every learned method once per seed; the table shows mean ± std over them",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tutorial-epochs", type=int, default=100)
    parser.add_argument("--pml-epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the figure from the saved JSON and stop"
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="REPORT",
        help="train nothing: table saved orl_verification.json reports of the same folds "
        "together (for methods run in parallel processes); later reports win",
    )
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    return args


def run_all(args: argparse.Namespace, faces: siamkit.FaceFolder) -> dict[str, list[dict]]:
    epochs = {"pml": args.pml_epochs, "tutorial": args.tutorial_epochs}
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
    for method in args.methods:
        seeds = args.seeds[:1] if method in DETERMINISTIC else args.seeds
        for seed in seeds:
            for fold in args.folds:
                row = evaluate_fold(method, faces, fold, seed, epochs.get(method))
                runs[method].append(row)
                print(
                    f"{method:>10} seed {seed} fold {fold}: AUC {row['auc']:.4f}  "
                    f"EER {100 * row['eer']:.2f}%  TAR@1e-3 {100 * row['tar_at_far_1e-3']:.1f}%  "
                    f"FNIR@0.01 {100 * row['fnir_at_fpir_0.01']:.1f}%  "
                    f"train {row['train_seconds']:.0f} s  {row['images_per_second']:.0f} img/s"
                    + (f"  [{row['cli'][-1]}]" if row["cli"] else ""),
                    flush=True,
                )
    return runs


def combined_report(paths: list[Path]) -> dict:
    """Saved reports of the same protocol as one: later reports' methods replace earlier ones'.

    Lets methods run in parallel processes (``--methods a b --out A``,
    ``--methods c --out B``) and be tabled together with ``--combine A/... B/...``.
    Each method keeps its own seeds (the table's "seeds" column says how many).

    Raises:
        SystemExit: the reports used other folds.
    """
    reports = [json.loads(Path(path).read_text()) for path in paths]
    first = reports[0]
    if any(report["folds"] != first["folds"] for report in reports[1:]):
        raise SystemExit("--combine needs reports of the same folds")
    runs: dict[str, list[dict]] = {}
    for report in reports:
        runs.update(report["runs"])
    ordered = {method: runs[method] for method in METHODS if method in runs}
    seeds = sorted({seed for report in reports for seed in report["seeds"]})
    summary = {m: summarise(r) for m, r in ordered.items()}
    return {**first, "seeds": seeds, "runs": ordered, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        saved = json.loads((args.out / "orl_verification.json").read_text())
        plot_summary(saved, args.out / "orl_verification.png")
        return 0
    if args.combine:
        report = combined_report(args.combine)
        write_report(report, args.out)
        print(markdown_table(report["summary"]))
        return 0
    torch.set_num_threads(args.threads)
    runs = run_all(args, siamkit.ATTFaces(args.data))
    summary = {m: summarise(rows) for m, rows in runs.items()}
    table = markdown_table(summary)
    seeds = ", ".join(map(str, args.seeds))
    folds = ", ".join(map(str, args.folds))
    print(f"\nMean ± std over seeds {seeds} of the mean over folds {folds}:\n{table}")
    report = {
        "protocol": "ORL, 4 folds of 10 held-out people, all pairs; "
        "threshold fitted on training people; open-set search on a demo-like split of the "
        "held-out people; mean and std over seeds of the fold means",
        "folds": args.folds,
        "seeds": args.seeds,
        "threads": args.threads,
        "epochs": {"pml": args.pml_epochs, "tutorial": args.tutorial_epochs},
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "siamkit_version": siamkit.__version__,
        "summary": summary,
        "runs": runs,
    }
    write_report(report, args.out)
    return 0


def write_report(report: dict, out: Path) -> None:
    """The JSON, the figure and the Markdown table of a report, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "orl_verification.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_summary(report, out / "orl_verification.png")
    (out / "orl_verification.md").write_text(
        "# ORL subject-disjoint verification\n\n"
        f"Folds {report['folds']}, seeds {report['seeds']}, {report['threads']} threads; each "
        "cell is the mean over seeds of the mean over folds, ± its standard deviation over "
        "seeds. Faces: Olivetti Research Laboratory (AT&T).\n\n"
        + markdown_table(report["summary"])
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
