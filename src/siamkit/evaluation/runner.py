"""Evaluate a trained encoder on a folder of people: metrics, pictures, JSON."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit._atomic import remove_temporaries, write_json
from siamkit._folders import SkippedFile, list_image_folder
from siamkit._images import load_image
from siamkit.alignment.base import AlignmentStats
from siamkit.alignment.counts import counts_since, snapshot
from siamkit.evaluation import plots
from siamkit.evaluation.few_shot import FewShot, FewShotResult, few_shot_results
from siamkit.evaluation.identification import (
    OpenSetResult,
    cmc_curve,
    open_set_identification,
    retrieval_metrics,
)
from siamkit.evaluation.open_set import OpenSetSearch, open_set_search
from siamkit.evaluation.verification import (
    KFoldAccuracy,
    TarAtFar,
    VerificationResult,
    accuracy_at,
    all_pairs_distances,
    kfold_accuracy,
    roc_curve,
    tar_at_far,
    verification_metrics,
)
from siamkit.exceptions import ConfigError, DataError
from siamkit.geometry import paired_distances, pairwise_distances
from siamkit.model_folder.records import trained_threshold
from siamkit.thresholds import check_threshold

if TYPE_CHECKING:
    from siamkit.encoders.base import Encoder
    from siamkit.runtime.onnx import OnnxEncoder

FARS = (1e-1, 1e-2, 1e-3)
EVALUATION_FILE = "evaluation.json"
#: Every file an evaluation report folder holds: the JSON, the pictures,
#: ``report.html`` and the picture ``siamkit demo`` adds to its report.
REPORT_FILES = frozenset({
    EVALUATION_FILE, "report.html", "roc.png", "det.png", "distance_histograms.png",
    "cmc.png", "pairs.png", "retrieval.png", "gallery_search.png",
})  # fmt: skip
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def check_report_folder(out_dir: str | os.PathLike, option: str = "out_dir") -> Path:
    """Refuse to write a report where it would overwrite files siamkit did not write there.

    ``out_dir`` may be missing, empty, or hold an earlier report (only
    :data:`REPORT_FILES`, and the temporary files a killed report left), which
    the new one replaces. ``option`` is how the message names the folder
    (``"--out"`` in the CLI).

    Raises:
        ConfigError: ``out_dir`` is a file, or a folder holding anything else
            (a model folder, say): the message names a few of its files.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "encoder.json").write_text("{}")
        >>> check_report_folder(folder)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: out_dir ... holds files that are not from an evaluation report (encoder.json): pick a new or empty folder, so nothing there is overwritten
    """  # noqa: E501
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{option} {out} is a file: pass a folder for the report (created if missing)"
        )
    if not out.exists():
        return out
    foreign = sorted(entry.name for entry in os.scandir(out) if not _is_report_file(entry))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"{option} {out} holds files that are not from an evaluation report ({shown}): "
            "pick a new or empty folder, so nothing there is overwritten"
        )
    return out


def prepare_report_folder(out_dir: str | os.PathLike) -> Path:
    """Check ``out_dir`` (:func:`check_report_folder`), create it, drop stale temporary files."""
    out = check_report_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out, REPORT_FILES)
    return out


def _is_report_file(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    temporary = _TEMPORARY.fullmatch(name)
    if temporary is not None:
        name = temporary.group("name")
    return name in REPORT_FILES and entry.is_file(follow_symlinks=False)


@dataclass(frozen=True)
class LabelledImages:
    """Image paths with integer labels and class names, from a folder, FaceFolder or Subset.

    ``skipped_files`` are the files of these people's folders the listing left
    out, with the reason (see :func:`siamkit._folders.list_image_folder`).
    """

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    root: Path
    description: str
    skipped_files: list[SkippedFile] = field(default_factory=list)
    groups: list[str] | None = None

    @classmethod
    def of(cls, data: Any, layout: str = "flat") -> LabelledImages:
        """Accept a path, a :class:`~siamkit.data.FaceFolder`, or a ``Subset`` of one.

        A path is listed without PyTorch (as ``FaceFolder`` lists it, in
        ``layout``); the others can only exist once torch is imported, so they
        are recognised through ``sys.modules``. ``groups`` is each class's group
        in the grouped layout.
        """
        indices = None
        torch_data = sys.modules.get("torch.utils.data")
        if torch_data is not None and isinstance(data, torch_data.Subset):
            data, indices = data.dataset, list(data.indices)
        if _is_face_folder(data):
            root, classes = str(data.root), list(data.classes)
            paths, labels = data.paths, np.asarray(data.targets)
            skipped, groups = data.skipped_files, data.groups
        else:
            listing = list_image_folder(data, layout=layout)
            root, classes = listing.root, listing.classes
            paths, labels = listing.paths, np.asarray(listing.labels)
            skipped, groups = listing.skipped, listing.groups
        if indices is not None:
            paths, labels = [paths[i] for i in indices], labels[indices]
        if len(paths) == 0:
            raise DataError(f"no images to evaluate in {root}")
        people = sorted({classes[y] for y in labels})
        shown = (
            f" ({len(people)} people: {', '.join(people[:12])}{'...' if len(people) > 12 else ''})"
        )
        return cls(
            paths=paths,
            labels=labels,
            classes=classes,
            root=Path(root),
            description=root + (shown if indices is not None else ""),
            skipped_files=skipped if indices is None else _of_people(skipped, root, people),
            groups=groups,
        )

    def subset(self, keep: list[int]) -> LabelledImages:
        """The same images less those not in ``keep`` (positions)."""
        return dataclasses.replace(
            self, paths=[self.paths[i] for i in keep], labels=self.labels[keep]
        )


def _of_people(skipped: list[SkippedFile], root: str, people: list[str]) -> list[SkippedFile]:
    """The files left out of these people's folders (a Subset's share of its folder's)."""
    wanted = set(people)

    def of_wanted(path: str) -> bool:
        parts = Path(os.path.relpath(path, root)).parts  # <person>/... or <group>/<class>/...
        return parts[0] in wanted or "/".join(parts[:2]) in wanted

    return [s for s in skipped if of_wanted(s.path)]


def _is_face_folder(data: Any) -> bool:
    folder = sys.modules.get("siamkit.data.folder")
    return folder is not None and isinstance(data, folder.FaceFolder)


@dataclass
class Evaluation:
    """Everything ``siamkit eval`` measures; :meth:`to_dict` is its JSON.

    Attributes:
        metric: The encoder's geometry, in which every distance was measured.
        verification: AUC and EER over the pairs.
        tar_at_far: TAR at FAR 1e-1, 1e-2, 1e-3, each with its reliability.
        threshold: The decision threshold used for accuracy and the pair grid.
        threshold_source: Where it came from (the model's validation people, or
            the EER of these pairs when the model has none).
        accuracy: Accuracy of the pairs at ``threshold``.
        kfold: 10-fold accuracy with the threshold fitted on the other folds.
        identification: Leave-one-out rank-1, rank-5, precision@1, MAP@R and the CMC curve.
        open_set: Half the people enrolled, the others unknown (None when too few people).
        open_set_search: FNIR at FPIR 0.1, 0.01, 0.001 and the DET curve, with
            the people split into enrolled and unknown as ``siamkit demo`` does
            (seeded; None when the split leaves no known or unknown probe).
        figures: Picture names -> file names in the output directory.
        alignment: What the encoder's face aligner did with this evaluation's
            images (faces found, whole-image fallbacks, skipped, several
            faces); None when the encoder has no aligner.
        skipped_images: Images left out because no face was found in them
            (the aligner's ``on_missing="skip"``), with the pairs they were in.
        skipped_files: Files and links of the people's folders that the folder
            listing left out (not images siamkit reads, links that leave the
            folder or loop), each with its reason.
        few_shot: N-way K-shot accuracies (seeded episodes, fixed runs) when
            asked with ``few_shot=``.
        groups: How many groups of classes a grouped folder held (None: flat).

    Examples:
        >>> result = evaluate_encoder(encoder, "faces/")  # doctest: +SKIP
        >>> result.to_dict()["verification"]["auc"]  # doctest: +SKIP
        0.987
    """

    model: str
    data: str
    metric: str
    num_images: int
    num_people: int
    num_pairs: int
    verification: VerificationResult
    tar_at_far: list[TarAtFar]
    threshold: float
    threshold_source: str
    accuracy: float
    kfold: KFoldAccuracy
    identification: dict[str, Any]
    open_set: OpenSetResult | None = None
    open_set_search: OpenSetSearch | None = None
    figures: dict[str, str] = field(default_factory=dict)
    alignment: AlignmentStats | None = None
    skipped_images: list[str] = field(default_factory=list)
    skipped_files: list[SkippedFile] = field(default_factory=list)
    few_shot: list[FewShotResult] = field(default_factory=list)
    groups: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = asdict(self)
        if self.open_set_search is not None:
            data["open_set_search"] = self.open_set_search.to_dict()
        return data


def read_pairs(
    path: str | os.PathLike, root: str | os.PathLike
) -> tuple[list[str], list[str], np.ndarray]:
    """Read a pair list: CSV lines ``image_a,image_b,same`` (paths relative to ``root``).

    ``same`` is 1/0, true/false or yes/no; a header line is allowed; ``#``
    starts a comment.

    Raises:
        DataError: a line is malformed or names an image that does not exist
            (the message lists them).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a.png").touch(); (d / "b.png").touch()
        >>> _ = (d / "pairs.csv").write_text("a.png,b.png,1\\n")
        >>> read_pairs(d / "pairs.csv", d)[2].tolist()
        [True]
    """
    root = Path(root)
    firsts, seconds, flags, missing = [], [], [], []
    truth = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read pair file {path}: {err}") from None
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or row[0].strip().startswith("#"):
            continue
        if len(row) != 3:
            raise DataError(f"{path}:{number}: expected image_a,image_b,same, got {row!r}")
        a, b, flag = (cell.strip() for cell in row)
        if flag.lower() not in truth:
            if number == 1:
                continue  # a header
            raise DataError(f"{path}:{number}: same must be 1/0 or true/false, got {flag!r}")
        for image in (a, b):
            if not (root / image).is_file():
                missing.append(image)
        firsts.append(str(root / a))
        seconds.append(str(root / b))
        flags.append(truth[flag.lower()])
    if missing:
        shown = ", ".join(sorted(set(missing))[:10])
        raise DataError(f"the pair file {path} names images missing under {root}: {shown}")
    if not flags:
        raise DataError(f"the pair file {path} holds no pairs")
    return firsts, seconds, np.asarray(flags, dtype=bool)


def _given_threshold(threshold: Any) -> float:
    try:
        return check_threshold(threshold)
    except ConfigError:
        raise ConfigError(
            f"threshold must be a finite, non-negative distance (e.g. 0.5), got {threshold!r}; "
            "pass the one fitted on held-out people, or none to use these pairs' EER threshold"
        ) from None


def _open_set(
    embeddings: np.ndarray, labels: np.ndarray, metric: str, threshold: float, seed: int
) -> OpenSetResult | None:
    people = np.unique(labels)
    if len(people) < 4:
        return None
    enrolled = np.random.default_rng(seed).permutation(people)[: len(people) // 2]
    first_image = np.zeros(len(labels), dtype=bool)
    for person in enrolled:
        first_image[np.flatnonzero(labels == person)[0]] = True
    probes = ~first_image
    if np.isin(labels[probes], enrolled).sum() == 0:
        return None
    return open_set_identification(
        embeddings[first_image], labels[first_image], embeddings[probes], labels[probes], metric,
        threshold=threshold,
    )  # fmt: skip


def evaluate_encoder(
    encoder: Encoder | OnnxEncoder,
    data: str | os.PathLike,
    pairs: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = False,
    examples: int = 12,
    *,
    threshold: float | None = None,
    few_shot: FewShot | None = None,
    layout: str = "flat",
) -> Evaluation:
    """Measure an encoder on a folder of people and (with ``out_dir``) draw the pictures.

    Verification over all pairs (or ``pairs``), leave-one-out identification,
    open-set identification and search, and (``few_shot``) N-way K-shot accuracy.

    Args:
        encoder: The trained encoder, or its ONNX export (:class:`~siamkit.runtime.OnnxEncoder`).
        data: A folder of people, a :class:`~siamkit.data.FaceFolder`, or a ``Subset`` of one.
        pairs, out_dir: A pair list (:func:`read_pairs`); where ``evaluation.json`` and
            the pictures go (:func:`check_report_folder`).
        model_dir: The model's folder: its name, and its trained threshold.
        seed: Seeds the example pairs, the enrolled people, the few-shot episodes.
        progress, examples: Progress bars; the pairs in the pair grid.
        threshold: Of accuracy and open-set results (before the trained one); without
            either, the EER threshold of these pairs, which is optimistic.
        few_shot, layout: N-way K-shot settings (:class:`~siamkit.evaluation.FewShot`);
            how a folder is read (``"auto"``, ``"flat"``, ``"grouped"``).

    Raises:
        ConfigError: ``out_dir`` holds files that are not a report's (or is a file).
        DataError: fewer than two people, no pair left, or too few few-shot classes.
        NoFaceError: no face in an image under the aligner's policy ``"error"``.

    Examples:
        >>> result = evaluate_encoder(encoder, "faces/", out_dir="eval/")  # doctest: +SKIP
        >>> result.verification.auc  # doctest: +SKIP
        0.997
    """
    if out_dir is not None:
        check_report_folder(out_dir)  # before the work, not after it
    threshold = None if threshold is None else _given_threshold(threshold)
    before = snapshot(encoder)
    folder, embeddings, skipped = _embed_folder(encoder, LabelledImages.of(data, layout), progress)
    scored = _scored_pairs(encoder, folder, embeddings, pairs, skipped, progress)
    name = str(model_dir) if model_dir else type(encoder).__name__
    result = _measure(folder, embeddings, scored, encoder.metric, name, seed,
                      _decision_threshold(threshold, model_dir, scored[0], scored[1]))  # fmt: skip
    result.alignment, result.skipped_images = counts_since(encoder, before), skipped + scored[3]
    result.few_shot = _few_shot(encoder, folder, embeddings, few_shot, (seed, progress))
    if out_dir is not None:
        out = prepare_report_folder(out_dir)
        distances, same, pair_paths, _ = scored
        result.figures = _draw(out, folder, embeddings, folder.labels, distances, same,
                               pair_paths, result, seed, examples)  # fmt: skip
        write_json(out / EVALUATION_FILE, result.to_dict())
    return result


def _measure(
    folder: LabelledImages,
    embeddings: np.ndarray,
    scored: tuple[np.ndarray, np.ndarray, Any, list[str]],
    metric: str,
    model: str,
    seed: int,
    decision: tuple[VerificationResult, float, str],
) -> Evaluation:
    """Every figure of :func:`evaluate_encoder` from the embeddings and the scored pairs."""
    distances, same, _, _ = scored
    verification, threshold, source = decision
    labels = folder.labels
    return Evaluation(
        model=model,
        data=folder.description,
        metric=metric,
        num_images=len(folder.paths),
        num_people=len(np.unique(labels)),
        num_pairs=len(distances),
        verification=verification,
        tar_at_far=[tar_at_far(distances, same, far) for far in FARS],
        threshold=float(threshold),
        threshold_source=source,
        accuracy=accuracy_at(distances, same, threshold),
        kfold=kfold_accuracy(distances, same, folds=min(10, len(distances)), seed=seed),
        identification=_identification(embeddings, labels, metric),
        open_set=_open_set(embeddings, labels, metric, threshold, seed),
        open_set_search=open_set_search(embeddings, labels, metric, seed=seed),
        skipped_files=folder.skipped_files,
        groups=None if folder.groups is None else len(set(folder.groups)),
    )


def _few_shot(
    encoder: Any, folder: LabelledImages, embeddings: np.ndarray, few_shot: FewShot | None,
    run: tuple[int, bool],
) -> list[FewShotResult]:  # fmt: skip
    if few_shot is None:
        return []
    groups = None if folder.groups is None else [folder.groups[y] for y in folder.labels]
    return few_shot_results(encoder, few_shot, (embeddings, folder.labels, groups), *run)


def _decision_threshold(
    given: float | None, model_dir: str | os.PathLike | None, distances: Any, same: Any
) -> tuple[VerificationResult, float, str]:
    """The verification figures, and the threshold of accuracy and open-set results with
    where it came from."""
    verification = verification_metrics(distances, same)
    if given is not None:
        return verification, given, "given (threshold=)"
    trained = trained_threshold(model_dir)
    if trained is not None:
        return verification, trained, "fitted on the model's validation people (EER)"
    return verification, verification.eer_threshold, "EER threshold of these pairs (optimistic)"


def _identification(embeddings: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, Any]:
    cmc = cmc_curve(embeddings, labels, metric=metric, max_rank=20)
    return {
        "rank1": float(cmc[0]),
        "rank5": float(cmc[min(4, len(cmc) - 1)]),
        **retrieval_metrics(embeddings, labels, metric),
        "cmc": cmc.tolist(),
    }


def _embed_folder(
    encoder: Encoder | OnnxEncoder, folder: LabelledImages, progress: bool
) -> tuple[LabelledImages, np.ndarray, list[str]]:
    """The folder's embeddings, less the images without a face under ``on_missing="skip"``."""
    if len(np.unique(folder.labels)) < 2:
        raise DataError(
            f"{folder.description} holds a single person: evaluation needs at least two"
        )
    from siamkit._embedding import embed_items

    embedded = embed_items(folder.paths, encoder, None, progress=progress)
    skipped = [folder.paths[i] for i in embedded.skipped]
    if skipped:
        folder = folder.subset(embedded.kept)
        if len(np.unique(folder.labels)) < 2:
            raise DataError(
                f"{len(skipped)} images without a face were skipped, leaving fewer than two "
                "people to evaluate; use clearer photos or the aligner's on_missing=fallback"
            )
    return folder, embedded.embeddings, skipped


def _scored_pairs(
    encoder: Encoder | OnnxEncoder,
    folder: LabelledImages,
    embeddings: np.ndarray,
    pairs: str | os.PathLike | None,
    skipped: list[str],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], list[str]]:
    """Distances, same-person flags and paths of the pairs; images skipped outside the folder."""
    metric = encoder.metric
    if pairs is None:
        distances, same = all_pairs_distances(embeddings, folder.labels, metric)
        i, j = np.triu_indices(len(folder.paths), k=1)
        paths = np.asarray(folder.paths)
        return distances, same, (paths[i], paths[j]), []
    firsts, seconds, same = read_pairs(pairs, folder.root)
    vectors, extra_skipped = _pair_vectors(
        encoder, folder.paths, embeddings, firsts + seconds, skipped, progress
    )
    usable = np.array(
        [os.path.abspath(a) in vectors and os.path.abspath(b) in vectors
         for a, b in zip(firsts, seconds, strict=True)], dtype=bool,
    )  # fmt: skip
    if not usable.any():
        raise DataError(f"every pair of {pairs} holds an image without a face (skipped)")
    firsts = [p for p, keep in zip(firsts, usable, strict=True) if keep]
    seconds = [p for p, keep in zip(seconds, usable, strict=True) if keep]
    distances = np.asarray(
        paired_distances(
            np.stack([vectors[os.path.abspath(p)] for p in firsts]),
            np.stack([vectors[os.path.abspath(p)] for p in seconds]),
            metric,
        ),
        dtype=np.float64,
    )
    return distances, same[usable], (np.asarray(firsts), np.asarray(seconds)), extra_skipped


def _pair_vectors(
    encoder: Encoder | OnnxEncoder,
    paths: list[str],
    embeddings: np.ndarray,
    wanted: list[str],
    skipped: list[str],
    progress: bool,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Embeddings by absolute path of the ``wanted`` images that have one, and the new skips."""
    from siamkit._embedding import embed_items

    vectors = {os.path.abspath(p): e for p, e in zip(paths, embeddings, strict=True)}
    known = set(vectors) | {os.path.abspath(p) for p in skipped}
    extra = sorted({os.path.abspath(p) for p in wanted} - known)
    if not extra:
        return vectors, []
    # Pair images outside the class folders.
    embedded = embed_items(extra, encoder, None, progress=progress)
    vectors.update(zip([extra[i] for i in embedded.kept], embedded.embeddings, strict=True))
    return vectors, [extra[i] for i in embedded.skipped]


def _example_pairs(distances: np.ndarray, same: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Half genuine, half impostor pairs, mistakes first, the rest at random."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for flag in (True, False):
        candidates = np.flatnonzero(same == flag)
        if len(candidates) == 0:
            continue
        order = candidates[np.argsort(-distances[candidates] if flag else distances[candidates])]
        hardest = order[:1]
        rest = rng.permutation(np.setdiff1d(candidates, hardest))[: count // 2 - 1]
        chosen += hardest.tolist() + rest.tolist()
    return np.asarray(chosen[:count], dtype=np.int64)


def _draw(
    out: Path,
    folder: LabelledImages,
    embeddings: np.ndarray,
    labels: np.ndarray,
    distances: np.ndarray,
    same: np.ndarray,
    pair_paths: tuple[np.ndarray, np.ndarray],
    result: Evaluation,
    seed: int,
    examples: int,
) -> dict[str, str]:
    figures = {
        "roc": "roc.png",
        "histograms": "distance_histograms.png",
        "cmc": "cmc.png",
        "pairs": "pairs.png",
        "retrieval": "retrieval.png",
    }
    if result.open_set_search is not None:
        figures["det"] = "det.png"
        plots.plot_det(
            {"model": result.open_set_search.det}, out / figures["det"],
            points=result.open_set_search.fnir_at_fpir,
        )  # fmt: skip
    plots.plot_roc({"model": roc_curve(distances, same)}, out / figures["roc"])
    plots.plot_distance_histograms(distances, same, result.threshold, out / figures["histograms"])
    plots.plot_cmc(result.identification["cmc"], out / figures["cmc"])
    grid = [
        plots.PairExample(
            image_a=load_image(pair_paths[0][k]),
            image_b=load_image(pair_paths[1][k]),
            distance=float(distances[k]),
            same=bool(same[k]),
            predicted_same=bool(distances[k] <= result.threshold),
        )
        for k in _example_pairs(distances, same, examples, seed)
    ]
    plots.plot_pair_grid(grid, out / figures["pairs"])
    plots.plot_retrieval_grid(
        _retrieval_examples(folder, embeddings, labels, result.metric, seed),
        out / figures["retrieval"],
    )
    return figures


def _retrieval_examples(
    folder: LabelledImages, embeddings: np.ndarray, labels: np.ndarray, metric: str, seed: int,
    queries: int = 6, k: int = 5,
) -> list[plots.RetrievalExample]:  # fmt: skip
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(labels))[:queries]
    dist = np.asarray(pairwise_distances(embeddings, None, metric), dtype=np.float64)
    np.fill_diagonal(dist, np.inf)
    rows = []
    for person in people:
        query = int(rng.choice(np.flatnonzero(labels == person)))
        nearest = np.argsort(dist[query], kind="stable")[:k]
        rows.append(
            plots.RetrievalExample(
                query=load_image(folder.paths[query]),
                query_label=folder.classes[labels[query]],
                matches=[
                    (load_image(folder.paths[m]), folder.classes[labels[m]], float(dist[query, m]))
                    for m in nearest
                ],
            )
        )
    return rows
