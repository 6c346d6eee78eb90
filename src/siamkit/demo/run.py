"""The end-to-end demo: data, training, evaluation, a face index, unknown people, a report."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from siamkit._atomic import write_json
from siamkit.alignment.base import AlignmentStats
from siamkit.data.att import ATTFaces, find_att_folder
from siamkit.data.folder import FaceFolder
from siamkit.data.images import load_image
from siamkit.data.splits import ClassSplit, split_by_class
from siamkit.encoders.base import Encoder, load_encoder
from siamkit.evaluation import plots
from siamkit.evaluation.open_set import open_set_split
from siamkit.evaluation.report import Section, embedded_image, table, write_report
from siamkit.evaluation.runner import Evaluation, evaluate_encoder
from siamkit.exceptions import DataError
from siamkit.index.face_index import FaceIndex
from siamkit.thresholds import FarCalibration, FpirCalibration
from siamkit.training.config import TrainConfig
from siamkit.training.fine_tuning import FineTuneSelection
from siamkit.training.recipes import (
    FACE_ALIGNER,
    FACE_ENCODER,
    Recipe,
    RecipeOptions,
    face_candidates,
    resolve_preset,
    train_recipe,
)


@dataclass
class DemoResult:
    """What :func:`run_demo` did and measured.

    Attributes:
        out_dir: Where everything was written.
        report: The HTML report.
        train_people, val_people, gallery_people, unknown_people: Who was where.
        evaluation: Verification and identification on all held-out people.
        threshold: The face index's 1:1 threshold (verify), calibrated for ``target_far``.
        calibration: Its report.
        identify_threshold: The 1:N threshold (identify), calibrated for ``target_fpir``
            by leaving each enrolled person out in turn.
        fpir_calibration: Its report, with the FNIR it predicts.
        known_probes: Queries of enrolled people.
        known_identified: Share of them identified as the right person (at the 1:N threshold).
        unknown_probes: Queries of people kept out of the gallery.
        unknown_rejected: Share of them answered "unknown" (at the 1:N threshold).
        train_seconds: Wall time of training.
        recipe: The training recipe used, as ``siamkit train`` chooses it:
            ``"face"`` or ``"scratch"``.
        recipe_why: Why that recipe (the preset asked for, or whether the
            face extra is installed).
        fine_tuning: With the face recipe, which fine-tuning strength was kept
            on the validation people, and why; else None.
        training_alignment: With an aligner, its counts over the training and
            validation images (None when training was reused from an earlier run).

    Examples:
        >>> result = run_demo("demo-out", data="data/att_faces")  # doctest: +SKIP
        >>> result.unknown_rejected  # doctest: +SKIP
        0.825
    """

    out_dir: Path
    report: Path
    train_people: list[str]
    val_people: list[str]
    gallery_people: list[str]
    unknown_people: list[str]
    evaluation: Evaluation
    threshold: float
    calibration: FarCalibration
    identify_threshold: float
    fpir_calibration: FpirCalibration
    known_probes: int
    known_identified: float
    unknown_probes: int
    unknown_rejected: float
    train_seconds: float
    recipe: str = "scratch"
    recipe_why: str = ""
    fine_tuning: FineTuneSelection | None = None
    training_alignment: AlignmentStats | None = None

    def summary(self) -> str:
        """A few lines for the terminal."""
        v = self.evaluation.verification
        return "\n".join(
            [
                self.recipe_line(),
                f"trained on {len(self.train_people)} people in {self.train_seconds:.0f} s; "
                f"evaluated on {len(self.gallery_people) + len(self.unknown_people)} people never "
                "seen in training:",
                f"  verification   ROC AUC {v.auc:.4f}, EER {100 * v.eer:.2f}%",
                f"  identification rank-1 {self.evaluation.identification['rank1']:.3f}",
                f"  face index     {len(self.gallery_people)} people enrolled, identify threshold "
                f"{self.identify_threshold:.4f} (FPIR {self.fpir_calibration.target_fpir:g}, "
                f"expected FNIR {_percent(self.fpir_calibration.fnir)}), verify threshold "
                f"{self.threshold:.4f} (FAR {self.calibration.target_far:g})",
                f"  known faces    {100 * self.known_identified:.1f}% of {self.known_probes} "
                "identified correctly",
                f"  unknown faces  {100 * self.unknown_rejected:.1f}% of {self.unknown_probes} "
                f"answered 'unknown' ({len(self.unknown_people)} people kept out of the gallery)",
                *self.alignment_lines(),
                f"report: {self.report}",
            ]
        )

    def recipe_line(self) -> str:
        """Which training recipe ran, and why."""
        if self.recipe == "face":
            kept = f"; {self.fine_tuning.summary()}" if self.fine_tuning else ""
            return (
                f"recipe: face (pretrained {FACE_ENCODER} behind the {FACE_ALIGNER} aligner, "
                f"fine-tuning strength chosen on {len(self.val_people)} validation people): "
                f"{self.recipe_why}{kept}"
            )
        return f"recipe: scratch (compact from random weights): {self.recipe_why}"

    def alignment_lines(self) -> list[str]:
        """The aligner's counts in training and on the held-out people (none without one)."""
        lines = []
        if self.training_alignment is not None:
            lines.append(f"  alignment      training: {self.training_alignment.summary()}")
        if self.evaluation.alignment is not None:
            lines.append(f"  alignment      held-out: {self.evaluation.alignment.summary()}")
        return lines


def _load_faces(
    data: str | os.PathLike | None, out: Path, url: str | None, progress: bool
) -> FaceFolder:
    if data is not None and find_att_folder(data) is None and Path(data).is_dir():
        return FaceFolder(data, min_images_per_class=2)  # any folder of people works too
    return ATTFaces(
        data if data is not None else out / "data", download=True, url=url, progress=progress
    )


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _gallery_and_probes(
    faces: FaceFolder, people: list[str], unknown_share: float, seed: int
) -> tuple[list[str], list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The people split as ``siamkit eval`` splits them (:func:`open_set_split`)."""
    chosen = set(people)
    samples = [(p, faces.classes[y]) for p, y in faces.samples if faces.classes[y] in chosen]
    split = open_set_split([person for _, person in samples], unknown_share, seed)
    gallery = [samples[i] for i in split.gallery.tolist()]
    probes = [samples[i] for i in [*split.known_probes.tolist(), *split.unknown_probes.tolist()]]
    return split.enrolled, split.unknown, gallery, probes


def run_demo(
    out_dir: str | os.PathLike = "siamkit-demo",
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int = 0,
    target_far: float = 1e-3,
    target_fpir: float = 1e-2,
    url: str | None = None,
    progress: bool = False,
    preset: str = "auto",
) -> DemoResult:
    """Run siamkit end to end on the AT&T faces (or any folder of people).

    It gets the faces (the AT&T archive, into ``out_dir/data``, without
    ``data``), holds a quarter of the people out and a tenth for validation,
    trains by ``siamkit train``'s recipe for ``preset`` (``epochs``: the
    scratch run's, or each fine-tuning candidate's; a finished run in
    ``out_dir/model`` is reused), evaluates on the held-out people, enrols
    some of them in a calibrated :class:`FaceIndex` (``target_far``,
    ``target_fpir``), identifies the rest and writes ``report.html``
    (the steps: the tutorial's demo section).

    Raises:
        DataError: fewer than 6 people.
        MissingExtraError: ``preset="face"`` without the faces extra.

    Examples:
        >>> result = run_demo("demo-out", data="data/att_faces")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
    """
    resolve_preset(preset)  # a bad preset, or "face" without the extra, fails before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    faces = _load_faces(data, out, url, progress)
    if len(faces.classes) < 6:
        raise DataError(f"the demo needs at least 6 people, {faces.root} has {len(faces.classes)}")
    split = split_by_class(faces, val=0.1, test=0.25, seed=seed)
    model_dir = out / "model"
    started = time.perf_counter()
    trained = _train(preset, split, seed, epochs, model_dir, progress)
    recipe = trained.recipe  # what the preset became once the data was looked at
    train_seconds = time.perf_counter() - started
    report_dir = out / "report"
    evaluation = evaluate_encoder(
        trained.encoder, split.test, out_dir=report_dir, model_dir=model_dir, seed=seed,
        progress=progress,
    )  # fmt: skip
    searched = _search_held_out(faces, split, trained.encoder, model_dir, out,
                                (target_far, target_fpir), seed, progress)  # fmt: skip
    report = write_report(
        evaluation, report_dir, model_dir=model_dir,
        sections=[_recipe_section(recipe, trained, split),
                  _gallery_section(searched, report_dir, seed)],
        title="siamkit demo: the AT&T faces, people never seen in training",
    )  # fmt: skip
    result = _result(out, report, split, evaluation, searched, (recipe, trained, train_seconds))
    _write_summary(result, out)
    return result


class _Searched(NamedTuple):
    enrolled: list[str]
    unknown: list[str]
    probes: list[tuple[str, str]]
    answers: list[Any]
    calibration: FarCalibration
    fpir: FpirCalibration
    outcome: dict[str, int]


def _search_held_out(
    faces: FaceFolder,
    split: ClassSplit,
    encoder: Any,
    model_dir: Path,
    out: Path,
    targets: tuple[float, float],
    seed: int,
    progress: bool,
) -> _Searched:
    """Step 5 of :func:`run_demo`: enrol, calibrate (FAR, FPIR), save, identify the probes."""
    enrolled, unknown, gallery, probes = _gallery_and_probes(faces, split.test_classes, 0.4, seed)
    index = FaceIndex(encoder)
    index.add(
        [p for p, _ in gallery], labels=[person for _, person in gallery],
        ids=[os.path.relpath(p, faces.root) for p, _ in gallery], progress=progress,
    )  # fmt: skip
    calibration = index.calibrate(target_far=targets[0])
    fpir_calibration = index.calibrate(target_fpir=targets[1])
    index.extra["model"] = str(model_dir.resolve())
    index.save(out / "index")
    answers = index.identify([p for p, _ in probes])
    outcome = _score(probes, answers, set(enrolled))
    return _Searched(enrolled, unknown, probes, answers, calibration, fpir_calibration, outcome)


def _result(
    out: Path,
    report: Path,
    split: ClassSplit,
    evaluation: Evaluation,
    searched: _Searched,
    training: tuple[Recipe, Any, float],
) -> DemoResult:
    recipe, trained, train_seconds = training
    calibration, fpir_calibration, outcome = searched.calibration, searched.fpir, searched.outcome
    return DemoResult(
        out_dir=out,
        report=report,
        train_people=split.train_classes,
        val_people=split.val_classes,
        gallery_people=searched.enrolled,
        unknown_people=searched.unknown,
        evaluation=evaluation,
        threshold=calibration.threshold,
        calibration=calibration,
        identify_threshold=fpir_calibration.threshold,
        fpir_calibration=fpir_calibration,
        known_probes=outcome["known"],
        known_identified=outcome["known_identified"],
        unknown_probes=outcome["unknown"],
        unknown_rejected=outcome["unknown_rejected"],
        train_seconds=train_seconds,
        recipe=recipe.name,
        recipe_why=recipe.why,
        fine_tuning=trained.selection,
        training_alignment=trained.alignment,
    )


def _write_summary(result: DemoResult, out: Path) -> None:
    skip = ("evaluation", "out_dir", "report", "fine_tuning")
    summary = {k: v for k, v in asdict(result).items() if k not in skip}
    fine_tuning = None if result.fine_tuning is None else result.fine_tuning.to_dict()
    write_json(
        out / "demo.json",
        {**summary, "fine_tuning": fine_tuning, "evaluation_alignment":
         None if result.evaluation.alignment is None else asdict(result.evaluation.alignment),
         "report": str(result.report)},
    )  # fmt: skip


@dataclass
class _Trained:
    recipe: Recipe
    encoder: Encoder
    selection: FineTuneSelection | None = None
    alignment: AlignmentStats | None = None


def _train(
    preset: str,
    split: Any,
    seed: int,
    epochs: int | None,
    model_dir: Path,
    progress: bool,
) -> _Trained:
    """Train by ``preset`` through ``siamkit train``'s flow, or reuse a finished run there."""
    config = TrainConfig(seed=seed) if epochs is None else TrainConfig(seed=seed, epochs=epochs)
    candidates = face_candidates(epochs=epochs)
    options = RecipeOptions(preset=preset, config=config, candidates=candidates)
    run = train_recipe(split, model_dir, options, resume=True, progress=progress)
    if run.encoder is None:  # a finished run: its kept model is on disk
        return _Trained(run.recipe, load_encoder(model_dir), run.selection)
    aligner = run.encoder.aligner
    trained = run.result is None and aligner is not None
    return _Trained(run.recipe, run.encoder, run.selection,
                    aligner.reset_stats() if trained else None)  # fmt: skip


def _recipe_section(recipe: Recipe, trained: _Trained, split: Any) -> Section:
    rows: list[tuple[str, object]] = [
        ("recipe", recipe.name),
        ("why", recipe.why),
        ("people: training / validation", f"{len(split.train_classes)} / {len(split.val_classes)}"),
    ]
    selection = trained.selection
    if selection is not None:
        rows.append(("kept", f"{selection.kept}: {selection.reason}"))
        rows += [
            (
                f"candidate {r.candidate.name} ({r.candidate.describe()})",
                f"validation EER {100 * r.eer:.2f}%, AUC {r.auc:.5f}"
                if r.measured
                else (r.error or "not measured"),
            )
            for r in selection.results
        ]
    if trained.alignment is not None:
        rows.append(("alignment in training", trained.alignment.summary()))
    return Section("Training recipe", table(["", ""], rows))


def _score(probes: list[tuple[str, str]], answers: list[Any], enrolled: set[str]) -> dict[str, Any]:
    known = [
        (person, a) for (_, person), a in zip(probes, answers, strict=True) if person in enrolled
    ]
    strangers = [
        a for (_, person), a in zip(probes, answers, strict=True) if person not in enrolled
    ]
    return {
        "known": len(known),
        "known_identified": float(np.mean([a is not None and a.label == p for p, a in known])),
        "known_rejected": float(np.mean([a is None for _, a in known])),
        "unknown": len(strangers),
        "unknown_rejected": float(np.mean([a is None for a in strangers])),
    }


def _gallery_section(searched: _Searched, report_dir: Path, seed: int) -> Section:
    c, o, enrolled, unknown = searched.fpir, searched.outcome, searched.enrolled, searched.unknown
    probes, answers = searched.probes, searched.answers
    rows = [
        ("people enrolled (half their images in the gallery)", ", ".join(enrolled)),
        ("people kept out of the gallery", ", ".join(unknown)),
        ("identify threshold (1:N)", c.threshold),
        ("target FPIR (strangers matched to someone)", f"{c.target_fpir:g}"),
        (
            "calibration: each enrolled person left out in turn",
            f"{c.num_non_mated} stranger / {c.num_mated} known searches"
            + ("" if c.reliable else " (too few for that FPIR: use with care)"),
        ),
        ("expected FNIR (known faces rejected or misnamed)", _percent(c.fnir)),
        (
            "known queries identified correctly",
            f"{100 * o['known_identified']:.1f}% of {o['known']}",
        ),
        ("known queries wrongly answered unknown", f"{100 * o['known_rejected']:.1f}%"),
        (
            "unknown queries answered unknown",
            f"{100 * o['unknown_rejected']:.1f}% of {o['unknown']}",
        ),
    ]
    picture = report_dir / "gallery_search.png"
    plots.plot_retrieval_grid(_search_examples(probes, answers, set(enrolled), seed), picture)
    caption = (
        "Queries and the index's answer: known people should be named, people kept out of the "
        "gallery should come back unknown (green frame: right answer, red: wrong)"
    )
    body = table(["", ""], rows) + embedded_image(picture, caption)
    return Section("Gallery search with a FaceIndex", body)


def _search_examples(
    probes: list[tuple[str, str]], answers: list[Any], enrolled: set[str], seed: int, count: int = 6
) -> list[plots.RetrievalExample]:
    rng = np.random.default_rng(seed)
    known = [i for i, (_, p) in enumerate(probes) if p in enrolled]
    strangers = [i for i, (_, p) in enumerate(probes) if p not in enrolled]
    chosen = list(rng.choice(known, min(len(known), count // 2), replace=False))
    chosen += list(rng.choice(strangers, min(len(strangers), count - len(chosen)), replace=False))
    examples = []
    for i in chosen:
        path, person = probes[i]
        answer = answers[i]
        decision = "unknown" if answer is None else str(answer.label)
        right = (
            (answer is None)
            if person not in enrolled
            else (answer is not None and answer.label == person)
        )
        match = [] if answer is None else [
            (load_image(answer.metadata["path"]), str(answer.label), float(answer.distance))
        ]  # fmt: skip
        examples.append(
            plots.RetrievalExample(
                query=load_image(path),
                query_label=person,
                matches=match,
                caption=f"{person} -> {decision}",
                colour=plots.GOOD if right else plots.BAD,
            )
        )
    return examples
