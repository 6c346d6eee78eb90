"""Deprecated: the recipes moved to :mod:`siamkit.training.recipes`, fine-tuning to
:mod:`siamkit.training.fine_tuning`. This module re-exports both until siamkit 0.3."""

import warnings

from siamkit._moved import REMOVED_IN
from siamkit.model_folder.layout import CANDIDATES_FOLDER
from siamkit.training.fine_tuning import (
    FACE_CANDIDATES,
    FROZEN,
    CandidateResult,
    FineTuneCandidate,
    FineTuneOutcome,
    FineTuneSelection,
    candidate_config,
    choose_candidate,
    genuine_pair_count,
    read_fine_tuning,
    save_face_run,
    select_fine_tuning,
)
from siamkit.training.recipes import (
    FACE_ALIGNER,
    FACE_ENCODER,
    FACE_ENCODER_SETTINGS,
    PRESETS,
    Recipe,
    face_aligner,
    face_encoder,
    face_extra_missing,
    resolve_preset,
)

warnings.warn(
    "siamkit.training.presets was split into siamkit.training.recipes and "
    f"siamkit.training.fine_tuning; import from those (the old path goes in siamkit {REMOVED_IN})",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CANDIDATES_FOLDER",
    "FACE_ALIGNER",
    "FACE_CANDIDATES",
    "FACE_ENCODER",
    "FACE_ENCODER_SETTINGS",
    "FROZEN",
    "PRESETS",
    "CandidateResult",
    "FineTuneCandidate",
    "FineTuneOutcome",
    "FineTuneSelection",
    "Recipe",
    "candidate_config",
    "choose_candidate",
    "face_aligner",
    "face_encoder",
    "face_extra_missing",
    "genuine_pair_count",
    "read_fine_tuning",
    "resolve_preset",
    "save_face_run",
    "select_fine_tuning",
]
