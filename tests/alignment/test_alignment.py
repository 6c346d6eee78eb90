"""Face alignment: the contract, the similarity warp, dlib's aligner and the policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import siamkit
from siamkit.alignment import (
    DlibAligner,
    Face,
    FaceAligner,
    NoAligner,
    aligner_from_description,
    create_aligner,
    register_aligner,
    similarity_transform,
    warp_to_chip,
)
from siamkit.alignment import builtin as builtin_aligners
from siamkit.exceptions import ConfigError, ModelFileError, NoFaceError, UnknownComponentError

dlib = pytest.importorskip("dlib", reason="the face extra (siamkit[faces]) is not installed")


def _rotation(points: np.ndarray, angle: float, scale: float, shift: tuple) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return scale * points @ np.array([[c, -s], [s, c]]).T + np.asarray(shift)


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, size=(5, 2))
    target = _rotation(source, 0.3, 1.7, (12.0, -4.0))
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(source @ matrix[:, :2].T + matrix[:, 2], target, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(matrix[:, :2]), 1.7**2, rtol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    source = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = source * np.array([-1.0, 1.0])
    assert np.linalg.det(similarity_transform(source, mirrored)[:, :2]) > 0


def _dots(size: tuple[int, int], points: np.ndarray) -> Image.Image:
    canvas = np.zeros((size[1], size[0]), dtype=np.uint8)
    for x, y in points.round().astype(int):
        canvas[y - 2 : y + 3, x - 2 : x + 3] = 255
    return Image.fromarray(canvas)


def _centroids(chip: Image.Image, near: np.ndarray) -> np.ndarray:
    pixels = np.asarray(chip, dtype=np.float64)
    ys, xs = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    found = []
    for x, y in near:
        mask = (np.abs(xs - x) < 8) & (np.abs(ys - y) < 8)
        weight = pixels * mask
        found.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(found)


def test_warp_puts_landmarks_on_the_template() -> None:
    template = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.7]])
    size = 120
    landmarks = _rotation(template * 200, 0.4, 0.9, (60.0, 30.0))
    chip = warp_to_chip(_dots((320, 320), landmarks), landmarks, template, size)
    assert chip.size == (size, size)
    np.testing.assert_allclose(_centroids(chip, template * size), template * size, atol=0.75)


class _Boxes(FaceAligner):
    """Gives fixed boxes: a stand-in detector for testing the policies."""

    def __init__(self, boxes: list = (), on_missing: str = "fallback") -> None:
        super().__init__(size=16, on_missing=on_missing)
        self.boxes = list(boxes)

    def detect(self, image):
        return [Face(tuple(box)) for box in self.boxes]


def test_policies_and_counts() -> None:
    image = Image.new("L", (40, 30), 128)
    assert _Boxes([]).align(image).size == (16, 16)
    for policy in ("skip", "error"):
        aligner = _Boxes([], on_missing=policy)
        with pytest.raises(NoFaceError, match=r"photo\.png"):
            aligner.align(image, name="photo.png")
        assert aligner.stats.missing == 1
    aligner = _Boxes([(0, 0, 10, 10), (5, 5, 35, 25)])
    aligner.align(image)
    assert (aligner.stats.aligned, aligner.stats.several) == (1, 1)
    assert len(aligner.align_all(image)) == 2
    assert aligner.reset_stats().total == 1 and aligner.stats.total == 0
    with pytest.raises(ConfigError, match="on_missing"):
        _Boxes([], on_missing="ignore")


def test_the_largest_face_is_used() -> None:
    pixels = np.zeros((40, 60), dtype=np.uint8)
    pixels[20:40, 30:60] = 255  # only the larger box is white
    chip = _Boxes([(0, 0, 10, 10), (30, 20, 60, 40)]).align(Image.fromarray(pixels))
    assert np.asarray(chip).mean() > 240  # the smaller, black box would give 0


def test_registry_and_description_round_trip() -> None:
    aligner = create_aligner("dlib", upsample=0, on_missing="skip")
    rebuilt = aligner_from_description(aligner.describe())
    assert isinstance(rebuilt, DlibAligner) and rebuilt.get_config() == aligner.get_config()
    assert aligner_from_description(None) is None
    with pytest.raises(UnknownComponentError):
        create_aligner("nope")
    with pytest.raises(ConfigError):
        create_aligner("dlib", upsample=9)
    with pytest.raises(ConfigError):
        aligner_from_description({"name": "dlib", "config": "x"})


def test_plugin_aligner_registers(clean_aligner_registry) -> None:
    @register_aligner("test-boxes")
    class Plugin(_Boxes):
        pass

    assert "test-boxes" in siamkit.list_aligners()


@pytest.fixture
def clean_aligner_registry():
    from siamkit.alignment.base import aligner_registry

    before = dict(aligner_registry._classes)
    yield
    aligner_registry._classes.clear()
    aligner_registry._classes.update(before)


@pytest.fixture(scope="module")
def orl_faces(orl_root) -> list[Image.Image]:
    return [Image.open(orl_root / f"s{p}" / f"{i}.pgm") for p in (1, 7, 23) for i in (1, 5)]


def test_dlib_landmarks_land_where_the_chip_puts_them(orl_faces) -> None:
    aligner = DlibAligner()
    errors = []
    for image in orl_faces:
        face = aligner.detect(image)[0]
        chip = aligner.chip(image, face)
        assert chip.size == (150, 150) and chip.mode == "RGB"
        # Where the best similarity fit onto the template puts this face's landmarks
        # (a face never matches the template exactly)...
        fit = similarity_transform(face.landmarks, aligner.template * aligner.size)
        expected = face.landmarks @ fit[:, :2].T + fit[:, 2]
        assert np.abs(expected - aligner.template * aligner.size).max() < 15
        # ...is where the landmark model finds them again in the chip.
        found = (aligner.detect(chip) or [aligner.locate(chip, (0, 0, 150, 150))])[0].landmarks
        errors.append(np.linalg.norm(found - expected, axis=1).mean())
    # The landmark model's own jitter on a re-found face is a pixel or two at this scale.
    assert np.mean(errors) < 2.5, errors


def test_dlib_chip_equals_dlibs_own(orl_faces) -> None:
    aligner = DlibAligner()
    image = orl_faces[0]
    pixels = np.asarray(image.convert("RGB"))
    face = aligner.detect(image)[0]
    shape = aligner._dlib()[2](pixels, dlib.rectangle(*(int(v) for v in face.box)))
    np.testing.assert_array_equal(
        np.asarray(aligner.chip(image, face)), dlib.get_face_chip(pixels, shape, 150, 0.25)
    )


def test_dlib_policies_on_images_without_faces(orl_faces) -> None:
    blank = Image.new("RGB", (120, 120), (90, 90, 90))
    with pytest.raises(NoFaceError):
        DlibAligner(on_missing="error").align(blank)
    assert DlibAligner().align(blank).size == (150, 150)  # fallback: the whole image
    tiny = orl_faces[0].resize((12, 14))
    assert DlibAligner().align(tiny).size == (150, 150)
    assert DlibAligner().align(orl_faces[0].convert("L")).mode == "RGB"


def test_two_faces_the_largest_then_all(orl_faces) -> None:
    big = orl_faces[0].resize((184, 224))
    small = orl_faces[2]
    canvas = Image.new("L", (400, 260), 0)
    canvas.paste(big, (10, 10))
    canvas.paste(small, (280, 60))
    aligner = DlibAligner()
    faces = aligner.detect(canvas)
    assert len(faces) == 2
    chips = aligner.align_all(canvas)
    assert len(chips) == 2
    np.testing.assert_array_equal(np.asarray(aligner.align(canvas)), np.asarray(chips[0]))
    assert aligner.stats.several == 1


def test_encoder_applies_saves_and_fingerprints_its_aligner(orl_root, tmp_path) -> None:
    encoder = siamkit.create_encoder("compact", in_channels=1)
    paths = [orl_root / "s1" / "1.pgm", orl_root / "s2" / "1.pgm"]
    plain = encoder.embed(paths)
    plain_print = encoder.fingerprint()
    encoder.aligner = DlibAligner(size=96)
    aligned = encoder.embed(paths)
    assert not np.allclose(plain, aligned)
    assert encoder.fingerprint() != plain_print
    loaded = siamkit.load_encoder(encoder.save(tmp_path / "m"))
    assert isinstance(loaded.aligner, DlibAligner) and loaded.aligner.size == 96
    np.testing.assert_array_equal(loaded.embed(paths), aligned)
    # A model without an aligner is still written in the format older siamkit reads.
    encoder.aligner = None
    import json

    manifest = json.loads((encoder.save(tmp_path / "plain") / "encoder.json").read_text())
    assert manifest["format_version"] == 1 and "aligner" not in manifest
    with pytest.raises(ConfigError, match="FaceAligner"):
        encoder.aligner = "dlib"  # type: ignore[assignment]


def test_a_bad_aligner_block_is_a_model_file_error(tmp_path) -> None:
    import json

    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    encoder.aligner = NoAligner()
    directory = encoder.save(tmp_path / "m")
    manifest = json.loads((directory / "encoder.json").read_text())
    manifest["aligner"] = {"name": "dlib", "config": {"upsample": "many"}}
    (directory / "encoder.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="aligner"):
        siamkit.load_encoder(directory)


def test_tensors_skip_alignment() -> None:
    encoder = siamkit.create_encoder("compact", in_channels=1)
    encoder.aligner = _Boxes([], on_missing="error")
    batch = torch.zeros(2, 1, *encoder.input_size)
    assert encoder.embed(batch).shape == (2, encoder.embedding_dim)


def test_the_second_look_takes_no_noise(monkeypatch) -> None:
    # Measured on these 48 seeded images: the second look's thresholds before
    # calibration, -0.5 and -1.0 (benchmarks/face_detector_threshold.py), took 17.
    rng = np.random.default_rng(0)
    images = []
    for _ in range(12):
        for width, height in ((160, 120), (320, 240)):
            noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            images += [noise, noise.filter(ImageFilter.GaussianBlur(3))]
    skipping = DlibAligner(on_missing="skip")
    for number, image in enumerate(images):
        assert skipping.detect(image) == [], number
        with pytest.raises(NoFaceError):
            skipping.align(image)
    assert skipping.stats.missing == len(images)
    monkeypatch.setattr(builtin_aligners, "SECOND_LOOK", ((0, -0.5), (1, -0.5), (1, -1.0)))
    assert sum(bool(DlibAligner().detect(image)) for image in images) == 17


def test_a_second_look_finds_faces_just_under_the_threshold(orl_root) -> None:
    # An ORL face (s33/2) that dlib's HOG detector scores just under its threshold.
    image = Image.open(orl_root / "s33" / "2.pgm")
    strict = DlibAligner(second_look=False)
    assert strict.detect(image) == []
    found = DlibAligner().detect(image)
    assert len(found) == 1 and found[0].weak and found[0].score < 0
    aligner = DlibAligner()
    aligner.align(image)
    assert (aligner.stats.aligned, aligner.stats.weak, aligner.stats.fallback) == (1, 1, 0)
    strict.align(image)
    assert (strict.stats.aligned, strict.stats.fallback) == (0, 1)
