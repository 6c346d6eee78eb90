"""Finding the model files that registry packages ship, without importing them.

The face models come from ``face-recognition-models`` (public-domain dlib
models). Importing that package runs ``pkg_resources``, which recent
setuptools no longer ships, so siamkit locates its folder with
``importlib.util.find_spec`` (which does not run the package) instead.
``SIAMKIT_FACE_MODELS`` may name a folder holding the same files.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from siamkit.exceptions import MissingExtraError

FACE_MODELS_PACKAGE = "face_recognition_models"
FACE_MODELS_ENV = "SIAMKIT_FACE_MODELS"
#: dlib's face ResNet: 150x150 RGB chips to 128-d descriptors (public domain).
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's 5-point landmark model (public domain; the 68-point one is not used).
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


def face_models_folder() -> Path:
    """The folder holding the face model files.

    Raises:
        MissingExtraError: neither ``SIAMKIT_FACE_MODELS`` nor the
            ``face-recognition-models`` package is there.
    """
    override = os.environ.get(FACE_MODELS_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(FACE_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "the face models are not installed: pip install 'siamkit[faces]' (it brings "
            f"face-recognition-models), or set {FACE_MODELS_ENV} to a folder holding "
            f"{RECOGNITION_MODEL} and {LANDMARK_MODEL}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def face_model_file(name: str) -> Path:
    """The path of one face model file (``RECOGNITION_MODEL``, ``LANDMARK_MODEL``).

    Raises:
        MissingExtraError: the file is not installed.
    """
    path = face_models_folder() / name
    if not path.is_file():
        raise MissingExtraError(
            f"the face model file {path} is missing: reinstall with "
            "pip install --force-reinstall face-recognition-models"
        )
    return path
