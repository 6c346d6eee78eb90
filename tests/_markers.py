"""Markers several test modules share."""

from __future__ import annotations

import pytest

from siamkit.training.recipes import face_extra_missing

#: Tests that run the face models or the face detector (the faces extra, which `make` installs).
needs_faces = pytest.mark.skipif(
    face_extra_missing() is not None, reason="the faces extra (dlib, face models) is missing"
)
