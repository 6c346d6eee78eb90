"""Large photos: detection on a bounded copy, the chip cut from the full-resolution photo.

Issue 19: a 12-megapixel photo took 45 s and 3.4 GB because dlib's HOG detector
scanned it at full resolution, upsampled, and the second look upsampled again.
These tests spy on what the detector is given (sizes, never seconds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import siamkit
from siamkit.alignment import DlibAligner, Face, FaceAligner, aligner_from_description
from siamkit.alignment import builtin as builtin_module
from siamkit.alignment.base import (
    DEFAULT_MAX_DETECT_PIXELS,
    detection_copy,
    fit_within,
)
from siamkit.alignment.builtin import SECOND_LOOK
from siamkit.exceptions import ConfigError, ModelFileError

dlib = pytest.importorskip("dlib", reason="the face extra (siamkit[faces]) is not installed")

BOUND = DEFAULT_MAX_DETECT_PIXELS


class _SpyDetector:
    """dlib's detector, recording each scan's image shape, upsampling and threshold."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.scans: list[tuple[tuple[int, ...], int, float]] = []

    def run(self, pixels: np.ndarray, upsample: int, threshold: float):
        self.scans.append((pixels.shape, upsample, threshold))
        return self.detector.run(pixels, upsample, threshold)

    def scanned_pixels(self) -> list[int]:
        """The pixels each scan looked at, dlib's upsampling included."""
        return [shape[0] * shape[1] * 4**upsample for shape, upsample, _ in self.scans]


_MODELS: list = []


def _aligner(**kwargs) -> DlibAligner:
    """A DlibAligner sharing one copy of dlib's models (each load takes half a second)."""
    aligner = DlibAligner(**kwargs)
    if not _MODELS:
        _MODELS.extend(aligner._dlib())
    aligner._models = tuple(_MODELS)
    return aligner


def _spied(aligner: DlibAligner) -> _SpyDetector:
    dlib_module, detector, predictor = aligner._dlib()
    spy = _SpyDetector(detector)
    aligner._models = (dlib_module, spy, predictor)
    return spy


def _rgb(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _old_dlib_align(image: Image.Image, upsample: int = 1):
    """What DlibAligner did before the bound, in raw dlib: every face's landmarks
    (largest first) and the chip of the largest (or of the whole image)."""
    _, detector, predictor = _aligner()._dlib()
    pixels = _rgb(image)
    boxes, _, _ = detector.run(pixels, upsample, 0.0)
    boxes = list(boxes)
    if not boxes:
        for extra, threshold in SECOND_LOOK:
            found, scores, _ = detector.run(pixels, upsample + extra, threshold)
            if len(found):
                boxes = [found[int(np.argmax(scores))]]
                break
    boxes.sort(key=lambda box: (box.right() - box.left()) * (box.bottom() - box.top()))
    shapes = [predictor(pixels, box) for box in reversed(boxes)]
    if not shapes:
        shapes_for_chip = predictor(pixels, dlib.rectangle(0, 0, image.width, image.height))
    else:
        shapes_for_chip = shapes[0]
    landmarks = [np.array([[p.x, p.y] for p in shape.parts()], float) for shape in shapes]
    return landmarks, dlib.get_face_chip(pixels, shapes_for_chip, 150, 0.25)


@pytest.fixture(scope="module")
def orl(orl_root):
    def load(name: str) -> Image.Image:
        return Image.open(orl_root / f"{name}.pgm")

    return load


def _cases(orl) -> dict[str, Image.Image]:
    two = Image.new("L", (400, 260), 0)
    two.paste(orl("s1/1").resize((184, 224)), (10, 10))
    two.paste(orl("s23/1"), (280, 60))
    return {
        "s1/1": orl("s1/1"),
        "s7/5": orl("s7/5"),
        "s23/1": orl("s23/1"),
        "weak at the first threshold (s1/2)": orl("s1/2"),
        "weak at the first threshold (s33/2)": orl("s33/2"),
        "weak after upsampling (s35/2)": orl("s35/2"),
        "weak at the last threshold (s2 turned 45)": orl("s2/1").rotate(45),
        "none (s2 turned 60)": orl("s2/1").rotate(60),
        "none (s20 at 18 px)": orl("s20/1").resize((18, 21)),
        "two faces": two,
        "blank": Image.new("RGB", (120, 120), (90, 90, 90)),
    }


def test_small_photos_align_exactly_as_before(orl) -> None:
    # Within the bound nothing changes: the same scans' answers, landmarks and chips
    # as the code before it, bit for bit, on every path of the second look.
    aligner = _aligner()
    for name, image in _cases(orl).items():
        landmarks, chip = _old_dlib_align(image)
        faces = sorted(aligner.find_faces(image), key=lambda face: face.area, reverse=True)
        assert len(faces) == len(landmarks), name
        for face, expected in zip(faces, landmarks, strict=True):
            np.testing.assert_array_equal(face.landmarks, expected, err_msg=name)
        np.testing.assert_array_equal(np.asarray(aligner.align(image)), chip, err_msg=name)


def test_small_photos_are_scanned_with_dlibs_own_upsampling(orl) -> None:
    aligner = _aligner()
    spy = _spied(aligner)
    aligner.align(orl("s2/1").rotate(60))  # no face: the first look and the whole second look
    # One scan per upsampling, each at the lowest threshold asked of it.
    assert spy.scans == [((112, 92, 3), 1, -0.05), ((112, 92, 3), 2, 0.3)]


def test_a_face_ten_times_larger_gives_the_same_landmarks_and_chip(orl) -> None:
    small = orl("s1/1")
    big = small.resize((920, 1120), Image.Resampling.BICUBIC)
    bound = 500_000  # 640x780: 0.70 of the photo's width
    aligner = _aligner(max_detect_pixels=bound)
    spy = _spied(aligner)
    face = aligner.find_faces(big)[0]
    assert spy.scans and max(spy.scanned_pixels()) <= bound
    assert {shape[:2] for shape, _, _ in spy.scans} == {(780, 640)}  # the copy, not the photo
    # The landmarks, mapped back by the exact factor, are where they are in the
    # original (in its pixels) within a pixel.
    original = _aligner().find_faces(small)[0]
    np.testing.assert_allclose((face.landmarks + 0.5) / 10 - 0.5, original.landmarks, atol=1.0)
    chip = np.asarray(aligner.align(big), dtype=np.float64)
    unbounded = np.asarray(_aligner(max_detect_pixels=None).align(big), dtype=np.float64)
    assert np.abs(chip - unbounded).mean() < 2.0
    before = np.asarray(_aligner().align(small), dtype=np.float64)
    inside = before.min(axis=2) > 0  # the chip's pixels that lie inside the small photo
    assert np.abs(chip - before)[inside].mean() < 5.0
    # And the chip puts the landmarks on the template, as the small photo's chip does.
    template = aligner.template * aligner.size
    refit = aligner.locate(Image.fromarray(chip.astype(np.uint8)), (0, 0, 150, 150)).landmarks
    assert np.abs(refit - template).max() < 8


def test_a_24_megapixel_photo_is_scanned_within_the_bound(orl, monkeypatch) -> None:
    small = orl("s23/1")
    photo = Image.new("L", (6000, 4000), 110)
    photo.paste(small.resize((1840, 2240), Image.Resampling.BICUBIC), (2000, 900))
    converted: list[int] = []

    def recording_rgb(image: Image.Image) -> np.ndarray:
        converted.append(image.width * image.height)
        return _rgb(image)

    monkeypatch.setattr(builtin_module, "_rgb", recording_rgb)
    aligner = _aligner()
    spy = _spied(aligner)
    face = aligner.find_faces(photo)[0]
    chip = aligner.chip(photo, face)
    assert max(spy.scanned_pixels()) <= BOUND
    assert {shape[:2] for shape, _, _ in spy.scans} == {(1632, 2449)}
    # Neither the detector nor the chip ever had the 24-megapixel photo as an array.
    assert max(converted) <= BOUND
    original = _aligner().find_faces(small)[0]
    mapped = (face.landmarks - (2000, 900) + 0.5) / 20 - 0.5
    np.testing.assert_allclose(mapped, original.landmarks, atol=1.0)
    before = np.asarray(_aligner().align(small), dtype=np.float64)
    inside = before.min(axis=2) > 0
    assert np.abs(np.asarray(chip, dtype=np.float64) - before)[inside].mean() < 12.0


def test_a_blank_24_megapixel_photo_costs_one_bounded_scan(monkeypatch) -> None:
    converted: list[int] = []

    def recording_rgb(image: Image.Image) -> np.ndarray:
        converted.append(image.width * image.height)
        return _rgb(image)

    monkeypatch.setattr(builtin_module, "_rgb", recording_rgb)
    aligner = _aligner()
    spy = _spied(aligner)
    chip = aligner.align(Image.new("RGB", (6000, 4000), (90, 100, 110)))
    assert chip.size == (150, 150) and aligner.stats.fallback == 1
    # The first look and the whole second look collapse onto the one bounded copy:
    # no upsampling of a large photo, one scan at the lowest threshold.
    assert spy.scans == [((1632, 2449, 3), 0, -0.05)]
    assert max(converted) <= BOUND


def test_upsampling_past_the_bound_is_one_resize_to_it(orl) -> None:
    # 1.5 megapixels upsampled once is 6: scanned instead resized to the bound.
    photo = Image.new("L", (1500, 1000), 100)
    photo.paste(orl("s7/5"), (700, 400))
    aligner = _aligner()
    spy = _spied(aligner)
    aligner.align(photo)
    assert spy.scans and all(upsample == 0 for _, upsample, _ in spy.scans)
    assert {shape[:2] for shape, _, _ in spy.scans} == {(1632, 2449)}
    # Already about at the bound (3.9 megapixels): scanned as it is, not upsampled.
    aligner, near = _aligner(), Image.new("L", (2400, 1620), 100)
    spy = _spied(aligner)
    aligner.align(near)
    assert {(shape[:2], upsample) for shape, upsample, _ in spy.scans} == {((1620, 2400), 0)}
    # Without a bound, dlib upsamples as before.
    aligner = _aligner(max_detect_pixels=None, second_look=False)
    spy = _spied(aligner)
    aligner.align(Image.new("L", (1500, 1000), 100))
    assert spy.scans == [((1000, 1500, 3), 1, 0.0)]


class _Recorder(FaceAligner):
    """A plugin without the bound in its constructor: finds one face in the middle
    and records the size of every image it is given."""

    template = np.array([[0.35, 0.4], [0.65, 0.4]])

    def __init__(self, on_missing: str = "fallback", find: bool = True) -> None:
        super().__init__(size=32, on_missing=on_missing)
        self.find = find
        self.seen: list[tuple[int, int]] = []

    def detect(self, image: Image.Image) -> list[Face]:
        self.seen.append(image.size)
        if not self.find:
            return []
        w, h = image.size
        eyes = np.array([[0.4 * w, 0.45 * h], [0.6 * w, 0.45 * h]])
        return [Face((0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h), eyes)]

    def locate(self, image, box):
        self.seen.append(image.size)
        return Face(box)


def test_every_aligner_detects_on_the_bounded_copy() -> None:
    photo = Image.new("L", (4000, 3000), 0)
    photo.paste(255, (1500, 1300, 2500, 1400))  # a bar between the "eyes" at 0.4 and 0.6
    aligner = _Recorder()
    faces = aligner.find_faces(photo)
    assert aligner.seen == [(2309, 1732)]
    np.testing.assert_allclose(faces[0].box, (1200, 900, 2800, 2100), atol=1.0)
    np.testing.assert_allclose(faces[0].landmarks, [[1600, 1350], [2400, 1350]], atol=1.0)
    chip = np.asarray(aligner.align(photo))  # cut from the photo: the bar is in it
    assert chip.shape == (32, 32) and chip.max() == 255
    assert len(aligner.align_all(photo)) == 1 and aligner.seen[-1] == (2309, 1732)
    missing = _Recorder(find=False)
    assert missing.align(photo).size == (32, 32)
    assert missing.seen == [(2309, 1732), (2309, 1732)]  # detect, then locate on the copy
    unbounded = _Recorder()
    unbounded.max_detect_pixels = None
    unbounded.align(photo)
    assert unbounded.seen == [(4000, 3000)]


@pytest.fixture
def registered_recorder():
    from siamkit.alignment.base import aligner_registry

    before = dict(aligner_registry._classes)
    siamkit.register_aligner("test-recorder", overwrite=True)(_Recorder)
    yield
    aligner_registry._classes.clear()
    aligner_registry._classes.update(before)


def test_the_bound_is_saved_and_old_descriptions_mean_no_bound(registered_recorder) -> None:
    aligner = _aligner()
    assert aligner.describe()["config"]["max_detect_pixels"] == BOUND
    rebuilt = aligner_from_description(aligner.describe())
    assert rebuilt.max_detect_pixels == BOUND
    custom = aligner_from_description(_aligner(max_detect_pixels=10**6).describe())
    assert custom.max_detect_pixels == 10**6
    # A description saved before the bound existed has no key: no bound, as then, and
    # re-described exactly as it was (so the model's fingerprint is unchanged).
    old = {
        "name": "dlib",
        "config": {
            "size": 150,
            "padding": 0.25,
            "upsample": 1,
            "on_missing": "fallback",
            "second_look": True,
        },
    }
    loaded = aligner_from_description(old)
    assert loaded.max_detect_pixels is None
    assert loaded.describe() == old
    # An aligner whose constructor does not take the bound still saves and restores it.
    plugin = _Recorder()
    assert plugin.describe()["config"] == {"on_missing": "fallback", "find": True} | {
        "max_detect_pixels": BOUND
    }
    assert aligner_from_description(plugin.describe()).max_detect_pixels == BOUND
    assert (
        aligner_from_description({"name": "test-recorder", "config": {}}).max_detect_pixels is None
    )
    assert siamkit.create_aligner("none").describe() == {"name": "none", "config": {}}


def test_bad_bounds_are_config_errors() -> None:
    for bad in (100, 0, -5, True, 2.5e6, "4000000"):
        with pytest.raises(ConfigError, match="max_detect_pixels"):
            _aligner(max_detect_pixels=bad)
        with pytest.raises(ConfigError, match="max_detect_pixels"):
            aligner_from_description({"name": "dlib", "config": {"max_detect_pixels": bad}})
    with pytest.raises(ConfigError, match="max_detect_pixels"):
        _Recorder().max_detect_pixels = 10


def test_old_saved_models_keep_their_fingerprint(tmp_path) -> None:
    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    encoder.aligner = DlibAligner()
    directory = encoder.save(tmp_path / "bounded")
    manifest = json.loads((directory / "encoder.json").read_text())
    assert manifest["aligner"]["config"]["max_detect_pixels"] == BOUND
    assert siamkit.load_encoder(directory).aligner.max_detect_pixels == BOUND
    bounded_print = encoder.fingerprint()
    # No bound is saved as siamkit before it saved every aligner: without the key.
    encoder.aligner = DlibAligner(max_detect_pixels=None)
    assert encoder.fingerprint() != bounded_print  # the bound changes the embeddings
    old = encoder.save(tmp_path / "old")
    manifest = json.loads((old / "encoder.json").read_text())
    assert set(manifest["aligner"]["config"]) == {
        "size",
        "padding",
        "upsample",
        "on_missing",
        "second_look",
    }
    loaded = siamkit.load_encoder(old)
    assert loaded.aligner.max_detect_pixels is None
    assert loaded.fingerprint() == encoder.fingerprint()
    manifest["aligner"]["config"]["max_detect_pixels"] = "lots"
    (old / "encoder.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="max_detect_pixels"):
        siamkit.load_encoder(old)


def test_fit_within_is_the_largest_size_within_the_bound() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        size = (int(rng.integers(1, 20000)), int(rng.integers(1, 20000)))
        bound = int(rng.integers(65_536, 30_000_000))
        width, height = fit_within(size, bound)
        assert width * height <= bound
        # One pixel more on both sides would exceed it; the aspect ratio is kept.
        assert (width + 1) * (height + 1) > bound or (width, height) == size
        assert (
            abs(width / height - size[0] / size[1])
            <= size[0] / size[1] * (1 / height + 1 / width) + 1e-9
        )
    assert detection_copy(Image.new("L", (2000, 2000)), BOUND).size == (2000, 2000)
    assert detection_copy(Image.new("L", (2001, 2000)), BOUND).size == (2000, 1999)
