"""One detection pass per uploaded picture: the face the model embeds, and its box.

The service must say "no face found" on its own and show where the face was,
and the model must embed that same face. Detecting once and cutting the chip
here (instead of checking for a face, then letting the encoder's aligner detect
again) halves the detector's work per request and cannot disagree with itself.

Examples:
    >>> import siamkit
    >>> from PIL import Image
    >>> encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    >>> found = locate_face(encoder, Image.new("RGB", (46, 56)))
    >>> found.face is None, tuple(found.model_input.shape)  # no aligner: the whole picture
    (True, (1, 56, 46))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from siamkit.alignment import Face, FaceAligner
from siamkit.alignment.base import choose_face
from siamkit.exceptions import NoFaceError


@dataclass(frozen=True)
class FoundFace:
    """What the model embeds for one picture.

    Attributes:
        model_input: The preprocessed model input (the encoder's ``embed`` takes it as is).
        face: The detected face it was cut from, in the upright picture's pixels; None
            when the model has no face detector (the whole picture is embedded).
    """

    model_input: Any
    face: Face | None


def locate_face(encoder: Any, picture: Image.Image) -> FoundFace:
    """The face ``encoder``'s aligner would embed in ``picture``, found once.

    Args:
        encoder: A :class:`siamkit.Encoder` or an ONNX one (``siamkit.load_encoder``).
        picture: An upright RGB picture (:func:`~siamkit.serve.uploads.decode_upload`).

    Raises:
        NoFaceError: the aligner detects faces and found none, whatever its
            ``on_missing`` policy (a service answers that on its own).
    """
    aligner = getattr(encoder, "aligner", None)
    if aligner is None:
        return FoundFace(encoder.preprocess(picture), None)
    faces = aligner.find_faces(picture)
    if not faces:
        raise NoFaceError("no face found in the image: send a clearer or larger photo")
    face = choose_face(faces, aligner.choose)
    if type(aligner).align is not FaceAligner.align:
        # An aligner with its own align (such as "none") is left to cut its own chip.
        return FoundFace(encoder.preprocess(picture), face)
    return FoundFace(_chip_input(encoder, aligner.chip(picture, face)), face)


def _chip_input(encoder: Any, chip: Image.Image) -> Any:
    """A chip preprocessed as the encoder preprocesses its aligner's chips."""
    if hasattr(encoder, "transform"):  # siamkit.Encoder
        return encoder.transform(chip.convert(encoder.image_mode))
    return encoder.preprocessing.apply(chip)  # the ONNX Runtime encoder
