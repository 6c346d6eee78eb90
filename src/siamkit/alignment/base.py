"""The ``FaceAligner`` contract: find the face in a photo and cut out a canonical chip.

An aligner detects faces (:meth:`FaceAligner.detect`), each with a box and,
usually, landmarks; the largest face is warped by a similarity transform
(rotation, uniform scale, shift) that puts its landmarks on the aligner's
canonical positions (:attr:`FaceAligner.template`) in a square chip. A built-in
is just a subclass: implement ``detect`` and set ``template``; override
:meth:`FaceAligner.chip` for another warp.

When no face is found, ``on_missing`` decides: ``"fallback"`` takes the whole
image as the face's box (landmark aligners then fit landmarks inside it, which
suits photos already cropped to a face), ``"skip"`` and ``"error"`` raise
:class:`~siamkit.exceptions.NoFaceError`; collections (training, a face
index's folder, evaluation) drop the image under ``"skip"`` and count it.

Large photos: the detector sees a copy of at most ``max_detect_pixels`` pixels
(:func:`detection_copy`); the faces it finds are mapped back to the photo's
pixels (:meth:`Face.rescaled`) and the chip is cut from the full-resolution
photo. Photos within the bound are passed as they are.
"""

from __future__ import annotations

import inspect
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from siamkit._images import upright
from siamkit.exceptions import ConfigError, NoFaceError
from siamkit.registry import Registry

MISSING_POLICIES = ("fallback", "skip", "error")

#: The default bound on the pixels a detector sees: about 2309x1732, so a
#: 12-megapixel photo is scanned at 0.58 of its width. dlib's HOG detector finds
#: faces down to 80 pixels of the image it scans, so in a bounded photo of ``P``
#: pixels the smallest face found is about ``80 * sqrt(P / 4e6)`` pixels across
#: (139 in 12 megapixels), about 1/29 of a 4:3 photo's width.
DEFAULT_MAX_DETECT_PIXELS = 4_000_000

#: The smallest bound accepted: below 256x256 a detector sees no face worth finding.
MIN_DETECT_PIXELS = 65_536

_BOUND_KEY = "max_detect_pixels"


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, right, bottom)`` in pixels.
        landmarks: ``(K, 2)`` array of ``(x, y)`` points, or None for a
            detector that gives only boxes.
        score: The detector's confidence (larger is surer); 0 when unknown.
        weak: Found only by a second, more permissive look (see
            :class:`~siamkit.alignment.DlibAligner`).

    Examples:
        >>> Face((10.0, 20.0, 50.0, 80.0)).area
        2400.0
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    score: float = 0.0
    weak: bool = False

    @property
    def area(self) -> float:
        """The box's area in square pixels."""
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)

    def rescaled(self, sx: float, sy: float) -> Face:
        """This face in an image ``sx`` times as wide and ``sy`` times as tall.

        The box's edges scale as they are (the whole image's box stays the whole
        image's); a landmark is a pixel position (pixel ``i`` centred on ``i``, as
        dlib's are), so it maps as ``(x + 0.5) * sx - 0.5``: the exact inverse of a
        resize by ``1/sx``.

        Examples:
            >>> face = Face((10.0, 20.0, 50.0, 80.0), np.array([[29.5, 39.5]]))
            >>> face.rescaled(2.0, 2.0).box
            (20.0, 40.0, 100.0, 160.0)
            >>> face.rescaled(2.0, 2.0).landmarks.tolist()
            [[59.5, 79.5]]
        """
        left, top, right, bottom = self.box
        box = (left * sx, top * sy, right * sx, bottom * sy)
        landmarks = None
        if self.landmarks is not None:
            points = np.asarray(self.landmarks, dtype=np.float64)
            landmarks = (points + 0.5) * np.array([sx, sy]) - 0.5
        return Face(tuple(float(v) for v in box), landmarks, self.score, self.weak)  # type: ignore[arg-type]


@dataclass
class AlignmentStats:
    """What an aligner did since it was created or last reset.

    Attributes:
        aligned: Images whose face was found.
        fallback: Images without a face that were aligned as a whole (``"fallback"``).
        missing: Images without a face that were refused (``"skip"`` or ``"error"``).
        several: Images with more than one face (the aligner's ``choose`` rule took one).
        weak: Images whose face was found only by a second, more permissive
            look (counted in ``aligned`` too).

    Examples:
        >>> AlignmentStats(aligned=9, fallback=1).total
        10
    """

    aligned: int = 0
    fallback: int = 0
    missing: int = 0
    several: int = 0
    weak: int = 0

    @property
    def total(self) -> int:
        """Images seen."""
        return self.aligned + self.fallback + self.missing

    def summary(self) -> str:
        """The counts in one line: the wording every command, report and the demo print.

        Examples:
            >>> line = AlignmentStats(aligned=97, fallback=1, missing=2, several=3).summary()
            >>> line.split("; ")[:2]
            ['a face was found in 97 of 100 images', '1 aligned whole (no face found)']
        """
        second = f" ({self.weak} only on a second, more permissive look)" if self.weak else ""
        return (
            f"a face was found in {self.aligned} of {self.total} images{second}; "
            f"{self.fallback} aligned whole (no face found); {self.missing} skipped (no face "
            f"found); {self.several} had several faces (the aligner's rule chose one)"
        )


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform (Umeyama) mapping ``source`` onto ``target``.

    Args:
        source: ``(K, 2)`` points.
        target: ``(K, 2)`` points, ``K >= 2``.

    Returns:
        A ``(2, 3)`` matrix ``M`` with ``target ≈ source @ M[:, :2].T + M[:, 2]``.

    Examples:
        >>> src = np.array([[0.0, 0.0], [1.0, 0.0]])
        >>> (similarity_transform(src, 2 * src + 1).round(6) + 0.0).tolist()  # + 0.0: no -0.0
        [[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]
    """
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float((singular * np.diag(sign)).sum() / variance) if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def fit_within(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """The largest ``(width, height)`` of ``size``'s aspect ratio with at most ``pixels`` pixels.

    Examples:
        >>> fit_within((6000, 4000), 4_000_000)
        (2449, 1632)
        >>> fit_within((100, 50), 20_000)  # scales up too
        (200, 100)
    """
    width, height = size
    scale = math.sqrt(pixels / (width * height))
    new_width, new_height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    # Rounding can land a pixel over the bound: trim the side that is relatively longer.
    while new_width * new_height > pixels and new_width + new_height > 2:
        if new_width * height >= new_height * width and new_width > 1:
            new_width -= 1
        else:
            new_height -= 1
    return new_width, new_height


def resize_for_detection(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` for a detector: antialiased, in a fast two-step reduce.

    Pillow's bilinear filter widens with the scale factor, so a shrunk copy has no
    aliasing that a gradient detector would take for edges; ``reducing_gap``
    first box-reduces by an integer factor, which is several times faster on a
    large photo and indistinguishable at the end.

    Examples:
        >>> resize_for_detection(Image.new("L", (4000, 3000)), (400, 300)).size
        (400, 300)
    """
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def detection_copy(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """What a detector sees of ``image``: the image itself within ``max_pixels``, else a copy
    shrunk to fit (:func:`fit_within`, :func:`resize_for_detection`). None: no bound.

    Examples:
        >>> photo = Image.new("RGB", (6000, 4000))
        >>> detection_copy(photo, 4_000_000).size
        (2449, 1632)
        >>> small = Image.new("L", (92, 112))
        >>> detection_copy(small, 4_000_000) is small
        True
    """
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    return resize_for_detection(image, fit_within(image.size, max_pixels))


def check_detect_pixels(value: Any) -> int | None:
    """``value`` if it is a valid ``max_detect_pixels`` (None, or an integer of at least
    :data:`MIN_DETECT_PIXELS`); else :class:`~siamkit.exceptions.ConfigError`.

    Examples:
        >>> check_detect_pixels(4_000_000)
        4000000
        >>> check_detect_pixels(100)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: max_detect_pixels must be None (no bound) or an integer of at least 65536, got 100
    """  # noqa: E501
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_DETECT_PIXELS:
        raise ConfigError(
            f"max_detect_pixels must be None (no bound) or an integer of at least "
            f"{MIN_DETECT_PIXELS}, got {value!r}"
        )
    return value


def warp_to_chip(image: Image.Image, landmarks: np.ndarray, template: np.ndarray, size: int):
    """Warp ``image`` so ``landmarks`` land on ``template * size`` in a ``size`` square chip.

    Examples:
        >>> img = Image.new("RGB", (100, 100))
        >>> pts = np.array([[30.0, 40.0], [70.0, 40.0]])
        >>> warp_to_chip(img, pts, np.array([[0.3, 0.4], [0.7, 0.4]]), 50).size
        (50, 50)
    """
    # PIL maps each chip pixel back into the image: the inverse direction.
    chip_to_image = similarity_transform(np.asarray(template) * size, landmarks)
    coefficients = tuple(chip_to_image.reshape(-1))
    return image.transform(
        (size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )


#: The rules :meth:`FaceAligner.align` may pick one face by: the largest box, or the
#: detector's highest score (which, for YuNet on in-the-wild photos, is more often the
#: person the photo is of: ``benchmarks/faces_in_the_wild.py``).
CHOICES = ("largest", "score")


def check_choice(value: Any) -> str:
    """``value`` if it is one of :data:`CHOICES`, else a :class:`ConfigError`."""
    if value not in CHOICES:
        raise ConfigError(f"choose must be one of {', '.join(CHOICES)}, got {value!r}")
    return value


def choose_face(faces: list[Face], rule: str) -> Face:
    """The face ``rule`` picks: the largest, or the highest score (ties: the larger).

    Examples:
        >>> small, large = Face((0, 0, 10, 10), score=0.9), Face((0, 0, 50, 50), score=0.7)
        >>> choose_face([small, large], "largest") is large
        True
        >>> choose_face([small, large], "score") is small
        True
    """
    if rule == "score":
        return max(faces, key=lambda face: (face.score, face.area))
    return max(faces, key=lambda face: face.area)


class FaceAligner(ABC):
    """Base class of every face aligner (see the module's docstring).

    Args:
        size: The chip's side in pixels.
        on_missing: ``"fallback"``, ``"skip"`` or ``"error"`` when no face is found.
        max_detect_pixels: The most pixels :meth:`detect` is given: a larger photo
            is detected on a copy shrunk to fit (:func:`detection_copy`) and the
            chip cut from the photo itself. None: detect at full resolution,
            whatever the size, as siamkit did before the bound existed (an
            aligner saved without the key rebuilds so).

    Examples:
        >>> class Centre(FaceAligner):
        ...     template = np.array([[0.5, 0.5]])
        ...     def detect(self, image):
        ...         w, h = image.size
        ...         return [Face((w / 4, h / 4, 3 * w / 4, 3 * h / 4))]
        >>> Centre(size=32).align(Image.new("L", (64, 64))).size
        (32, 32)
        >>> face = Centre().find_faces(Image.new("L", (4000, 3000)))[0]  # found on 2309x1732
        >>> [round(v) for v in face.box]  # in the photo's pixels
        [1000, 750, 3000, 2250]
    """

    #: Canonical landmark positions as fractions of the chip's side, ``(K, 2)``.
    template: ClassVar[np.ndarray | None] = None
    #: Which face :meth:`align` takes among several (one of ``CHOICES``): an aligner
    #: may take it as a constructor argument, and so save it.
    choose: str = "largest"
    registry_name: ClassVar[str]

    def __init__(
        self,
        size: int = 150,
        on_missing: str = "fallback",
        max_detect_pixels: int | None = DEFAULT_MAX_DETECT_PIXELS,
    ) -> None:
        if on_missing not in MISSING_POLICIES:
            raise ConfigError(
                f"on_missing must be one of {', '.join(MISSING_POLICIES)}, got {on_missing!r}"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ConfigError(f"the chip size must be an integer of at least 8, got {size!r}")
        self.size = size
        self.on_missing = on_missing
        self.max_detect_pixels = max_detect_pixels
        self.stats = AlignmentStats()
        self._lock = threading.Lock()

    @property
    def max_detect_pixels(self) -> int | None:
        """The most pixels the detector sees (None: no bound); settable, and saved."""
        return self._max_detect_pixels

    @max_detect_pixels.setter
    def max_detect_pixels(self, value: int | None) -> None:
        self._max_detect_pixels = check_detect_pixels(value)

    # -- the contract -------------------------------------------------------------
    @abstractmethod
    def detect(self, image: Image.Image) -> list[Face]:
        """All faces in ``image`` (an RGB or greyscale PIL image), in any order.

        Callers go through :meth:`find_faces`, which passes a copy of at most
        :attr:`max_detect_pixels`; a detector that enlarges its input (dlib's
        upsampling) should keep within the same bound.
        """

    def locate(self, image: Image.Image, box: tuple[float, float, float, float]) -> Face:
        """The face inside a given ``box``: used when detection finds nothing and the
        policy is ``"fallback"``. Landmark aligners override it to fit landmarks."""
        return Face(box)

    def chip(self, image: Image.Image, face: Face) -> Image.Image:
        """The canonical chip of ``face``: a similarity warp of its landmarks onto
        :attr:`template`, or, without landmarks, its box resized to a square."""
        if face.landmarks is not None and self.template is not None:
            return warp_to_chip(image, face.landmarks, self.template, self.size)
        # A box may reach past the edges (by rounding, or a detector's choice).
        left, top, right, bottom = face.box
        box = (max(0.0, left), max(0.0, top), min(right, image.width), min(bottom, image.height))
        return image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)

    # -- what callers use ---------------------------------------------------------
    def find_faces(self, image: Image.Image) -> list[Face]:
        """All faces in ``image``, detected on its bounded copy, in ``image``'s pixels.

        ``image`` is first turned upright by its EXIF orientation (a photo opened with
        ``Image.open`` keeps it), so boxes are in the upright photo's pixels.
        """
        image = upright(image)
        view = detection_copy(image, self.max_detect_pixels)
        return [self._on_photo(face, image, view) for face in self.detect(view)]

    def align(self, image: Image.Image, name: str = "image") -> Image.Image:
        """The chip of one face in ``image`` (:attr:`choose`), following ``on_missing``.

        ``image`` is first turned upright by its EXIF orientation.

        Raises:
            NoFaceError: no face was found and the policy is ``"skip"`` or ``"error"``
                (the message names ``name``).
        """
        image = upright(image)
        view = detection_copy(image, self.max_detect_pixels)
        faces = self.detect(view)
        if faces:
            face = choose_face(faces, self.choose)
            self._count(aligned=1, several=int(len(faces) > 1), weak=int(face.weak))
            return self.chip(image, self._on_photo(face, image, view))
        if self.on_missing == "fallback":
            self._count(fallback=1)
            whole = (0.0, 0.0, float(view.width), float(view.height))
            return self.chip(image, self._on_photo(self.locate(view, whole), image, view))
        self._count(missing=1)
        raise NoFaceError(
            f"no face found in {name} (on_missing={self.on_missing!r}); use a clearer or "
            "larger photo, or on_missing='fallback' to align the whole image"
        )

    def align_all(self, image: Image.Image) -> list[Image.Image]:
        """The chips of every face in ``image``, largest first (possibly none)."""
        image = upright(image)  # once, for find_faces and the chips
        faces = sorted(self.find_faces(image), key=lambda face: face.area, reverse=True)
        return [self.chip(image, face) for face in faces]

    def reset_stats(self) -> AlignmentStats:
        """Return the counts so far and start new ones."""
        with self._lock:
            stats, self.stats = self.stats, AlignmentStats()
        return stats

    def _count(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self.stats, key, getattr(self.stats, key) + value)

    @staticmethod
    def _on_photo(face: Face, image: Image.Image, view: Image.Image) -> Face:
        if view is image:
            return face
        return face.rescaled(image.width / view.width, image.height / view.height)

    # -- persistence --------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this aligner (its constructor's, by name)."""
        names = inspect.signature(type(self)).parameters
        return {name: getattr(self, name) for name in names}

    def describe(self) -> dict[str, Any]:
        """Name and config, as saved with an encoder (and so part of its fingerprint).

        The config always records :attr:`max_detect_pixels`, also for an aligner
        whose constructor does not take it, except when it is None: an aligner
        saved before the bound existed has no such key and rebuilds unbounded
        (:func:`aligner_from_description`), so its model keeps its fingerprint.
        """
        config = self.get_config()
        config.pop(_BOUND_KEY, None)
        if self.max_detect_pixels is not None:
            config[_BOUND_KEY] = self.max_detect_pixels
        return {"name": aligner_registry.name_of(type(self)), "config": config}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


aligner_registry: Registry[FaceAligner] = Registry(
    "aligner", group="siamkit.aligners", base=FaceAligner
)


def register_aligner(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering a :class:`FaceAligner` subclass under a name.

    Examples:
        >>> @register_aligner("doc-centre")
        ... class Centre(FaceAligner):
        ...     def detect(self, image):
        ...         return []
        >>> "doc-centre" in list_aligners()
        True
    """
    return aligner_registry.register(name, overwrite=overwrite)


def create_aligner(name: str, **kwargs: Any) -> FaceAligner:
    """Build the aligner registered as ``name`` with ``kwargs``.

    Examples:
        >>> create_aligner("none")
        NoAligner()
    """
    return aligner_registry.create(name, **kwargs)


def list_aligners() -> list[str]:
    """Names of all available aligners, plugins included.

    Examples:
        >>> {"none", "dlib"} <= set(list_aligners())
        True
    """
    return aligner_registry.names()


def aligner_from_description(description: Any) -> FaceAligner | None:
    """Rebuild an aligner from :meth:`FaceAligner.describe`'s output (None for none).

    Examples:
        >>> aligner_from_description({"name": "none", "config": {}})
        NoAligner()
    """
    if description is None:
        return None
    if not isinstance(description, dict) or not isinstance(description.get("name"), str):
        raise ConfigError(f"an aligner description needs a name and a config, got {description!r}")
    config = description.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"an aligner's config must be a mapping, got {config!r}")
    config = dict(config)
    # No key: saved before the bound existed, when detection ran at full resolution.
    bound = check_detect_pixels(config.pop(_BOUND_KEY, None))
    cls = aligner_registry.get(description["name"])
    if _BOUND_KEY in inspect.signature(cls).parameters:
        return create_aligner(description["name"], **config, **{_BOUND_KEY: bound})
    aligner = create_aligner(description["name"], **config)
    aligner.max_detect_pixels = bound
    return aligner
