"""Phone photos: EXIF orientation applied wherever siamkit reads an image (issue 19).

A photo stored sideways carries an EXIF orientation tag (2..8) saying how a
viewer turns it upright. Each test writes a face stored as the camera would
(its pixels transformed by the EXIF definition below, written here in NumPy,
independently of Pillow's table) with that tag, and checks siamkit sees the
upright face: the pixels, the embeddings, the index, the ONNX runtime.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import siamkit
from siamkit._images import load_image, upright
from siamkit.alignment import Face, FaceAligner
from siamkit.exceptions import ImageReadError
from siamkit.geometry import pairwise_distances

ORIENTATION = 0x0112

#: How a camera stores the upright picture ``u`` under each orientation (EXIF 2.3,
#: tag 274: where the stored 0th row and 0th column lie in the upright view).
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # 0th row top, 0th column right: mirrored
    3: lambda u: u[::-1, ::-1],  # bottom, right: half turn
    4: lambda u: u[::-1, :],  # bottom, left: upside-down mirror
    5: lambda u: u.swapaxes(0, 1),  # left, top: transposed
    6: lambda u: np.rot90(u, 1),  # right, top: phone turned clockwise
    7: lambda u: np.rot90(u, 1)[:, ::-1],  # right, bottom
    8: lambda u: np.rot90(u, -1),  # left, bottom: phone turned counter-clockwise
}
TURNED = range(2, 9)


def _face(seed: int = 3, size: tuple[int, int] = (48, 64), mode: str = "L") -> np.ndarray:
    """A smooth, asymmetric stand-in face, ``(H, W)`` (or ``(H, W, 3)`` for RGB)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    coarse = rng.uniform(0, 255, size=(8, 6, channels)).astype(np.uint8).squeeze()
    return np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC))


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def _photo(path: Path, upright_pixels: np.ndarray, orientation: int, **save) -> Path:
    """Write ``upright_pixels`` as a camera stores them under ``orientation``, tagged."""
    stored = np.ascontiguousarray(STORED[orientation](upright_pixels))
    Image.fromarray(stored).save(path, exif=_exif(orientation), **save)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


# -- (a) load_image: the pixels ------------------------------------------------------------
@pytest.mark.parametrize("orientation", TURNED)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_tagged_png_loads_as_the_upright_pixels_exactly(tmp_path, orientation, mode) -> None:
    face = _face(mode=mode)
    photo = load_image(_photo(tmp_path / "photo.png", face, orientation))
    assert photo.size == (48, 64)
    assert np.array_equal(np.asarray(photo), face)
    # The tag is consumed: turning the result again changes nothing.
    assert np.array_equal(np.asarray(upright(photo)), face)


@pytest.mark.parametrize("orientation", TURNED)
def test_a_tagged_jpeg_loads_as_the_upright_jpeg(tmp_path, orientation) -> None:
    face = _face(mode="RGB")
    reference = _pixels(load_image(_photo(tmp_path / "upright.jpg", face, 1, quality=95)))
    photo = load_image(_photo(tmp_path / "photo.jpg", face, orientation, quality=95))
    assert photo.size == (48, 64)
    # Blocks of 8 (48x64) fall alike either way: only the DCT rounding differs.
    assert np.abs(_pixels(photo) - reference).mean() < 1.5
    # The pixels as stored are far from upright (what the reader gave before).
    stored = np.ascontiguousarray(STORED[orientation](reference))
    if stored.shape == reference.shape:
        assert np.abs(stored - reference).mean() > 20


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_every_mode_and_format_is_turned(tmp_path, orientation) -> None:
    face = _face()
    for suffix in ("webp", "tiff"):  # a TIFF Pillow turns itself, on load
        save = {"lossless": True} if suffix == "webp" else {}
        photo = load_image(_photo(tmp_path / f"p.{suffix}", face, orientation, **save), mode="L")
        assert np.array_equal(np.asarray(photo), face), suffix
    # 16-bit PNG: turned, then scaled to 8 bits.
    deep = face.astype(np.uint16) * 257
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](deep)))
    stored.save(tmp_path / "deep.png", exif=_exif(orientation))
    assert np.array_equal(np.asarray(load_image(tmp_path / "deep.png")), face)


def test_an_xmp_orientation_is_applied_too(tmp_path) -> None:
    face = _face()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/>')
    Image.fromarray(np.ascontiguousarray(STORED[6](face))).save(tmp_path / "x.png", pnginfo=info)
    assert np.array_equal(np.asarray(load_image(tmp_path / "x.png")), face)


def test_no_exif_or_orientation_1_or_an_invalid_one_loads_as_stored(tmp_path) -> None:
    face = _face()
    Image.fromarray(face).save(tmp_path / "plain.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "plain.png")), face)
    for value in (1, 0, 9, 65535):
        Image.fromarray(face).save(tmp_path / f"{value}.png", exif=_exif(value))
        assert np.array_equal(np.asarray(load_image(tmp_path / f"{value}.png")), face), value
    plain = Image.fromarray(face)
    assert upright(plain) is plain  # nothing to turn: not even a copy


def _tiff_block(*entries: tuple[int, int, int, bytes]) -> bytes:
    """An EXIF block (little-endian TIFF): one IFD of ``(tag, type, count, 4 value bytes)``."""
    body = b"II*\x00\x08\x00\x00\x00" + len(entries).to_bytes(2, "little")
    for tag, kind, count, value in entries:
        body += tag.to_bytes(2, "little") + kind.to_bytes(2, "little")
        body += count.to_bytes(4, "little") + value
    return b"Exif\x00\x00" + body + b"\x00\x00\x00\x00"


DAMAGED = {
    "not TIFF at all": b"Exif\x00\x00garbage, not a TIFF header",
    "truncated IFD": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01",
    "orientation as text": _tiff_block((ORIENTATION, 2, 2, b"6\x00\x00\x00")),
    "orientation as a fraction": _tiff_block((ORIENTATION, 5, 1, b"\xff\x00\x00\x00")),
    "offset past the end": _tiff_block((0x010F, 2, 4000, b"\xff\xff\x00\x00")),
}


@pytest.mark.parametrize("name", DAMAGED)
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_a_damaged_exif_block_loads_as_the_plain_image(tmp_path, name, suffix) -> None:
    face = _face()
    path = tmp_path / f"d.{suffix}"
    Image.fromarray(face).save(path, exif=DAMAGED[name], quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some blocks
        expected = _pixels(Image.open(path))
        assert np.array_equal(_pixels(load_image(path)), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's warnings raised as errors
        if suffix == "png":  # read only for the orientation: still loads
            assert np.array_equal(_pixels(load_image(path)), expected)
        else:  # Pillow's JPEG reader reads the block itself, on opening
            try:
                assert np.array_equal(_pixels(load_image(path)), expected)
            except ImageReadError as err:
                assert "d.jpg" in str(err)


def test_a_readable_orientation_beside_a_damaged_tag_still_turns(tmp_path) -> None:
    face = _face()
    block = _tiff_block((ORIENTATION, 3, 1, b"\x06\x00\x00\x00"), (0x8769, 4, 1, b"\xff\xff\0\0"))
    stored = Image.fromarray(np.ascontiguousarray(STORED[6](face)))
    stored.save(tmp_path / "d.png", exif=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(np.asarray(load_image(tmp_path / "d.png")), face)


def test_when_pillow_fails_to_turn_the_image_loads_as_stored(tmp_path, monkeypatch) -> None:
    face = _face()
    path = _photo(tmp_path / "p.png", face, 6)

    def broken(image):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr("PIL.ImageOps.exif_transpose", broken)
    assert np.array_equal(np.asarray(load_image(path)), STORED[6](face))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_checked_before_any_turn(tmp_path, monkeypatch) -> None:
    path = _photo(tmp_path / "big.png", _face(), 6)
    turns = []
    monkeypatch.setattr("PIL.ImageOps.exif_transpose", lambda image: turns.append(1) or image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 64 - 1)
    with pytest.raises(ImageReadError, match="too large to decode safely"):
        load_image(path)
    assert turns == []


def test_a_truncated_tagged_photo_is_an_image_read_error(tmp_path) -> None:
    path = _photo(tmp_path / "p.jpg", _face(), 6)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"p\.jpg"):
        load_image(path)


def test_no_exif_costs_nothing_measurable() -> None:
    # What orientation adds to a file with no EXIF: looking for the tag, once per image
    # (load_image looks after decoding: Pillow would decode a PNG to look before).
    data = _png_bytes(_face())
    per_image = []
    for _ in range(3):
        fresh = [Image.open(io.BytesIO(data)) for _ in range(200)]
        for image in fresh:
            image.load()  # decoded, the tag not yet looked for
        start = time.perf_counter()
        for image in fresh:
            assert upright(image) is image
        per_image.append((time.perf_counter() - start) / len(fresh))
    # About 3 microseconds (decoding this 48x64 PNG: about 16; a phone photo: 0.15 s).
    assert min(per_image) < 30e-6, per_image


def _png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


# -- (b) the encoder ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def compact() -> siamkit.Encoder:
    torch.manual_seed(0)
    return siamkit.create_encoder("compact")


def _distances(encoder, reference, items) -> np.ndarray:
    embeddings = encoder.embed([reference, *items])
    return pairwise_distances(embeddings[:1], embeddings[1:], encoder.metric)[0]


@pytest.mark.parametrize("orientation", TURNED)
def test_embed_sees_a_tagged_photo_upright(tmp_path, compact, orientation) -> None:
    face = _face()
    upright_file = _photo(tmp_path / "u.jpg", face, 1, quality=95)
    photo = _photo(tmp_path / "p.jpg", face, orientation, quality=95)
    stored = np.ascontiguousarray(STORED[orientation](np.asarray(Image.open(upright_file))))
    # The path, and the same file opened by the user (PIL keeps its EXIF).
    near, opened, sideways = _distances(compact, upright_file, [photo, Image.open(photo), stored])
    assert near < 2e-3 and opened == pytest.approx(near, abs=1e-6)
    if orientation != 2:  # the compact encoder averages a face with its mirror image
        assert sideways > 10 * near and sideways > 0.01


def test_arrays_and_tensors_are_taken_as_they_are(compact) -> None:
    stored = np.ascontiguousarray(STORED[6](_face()))
    as_array = compact.embed(stored)
    assert np.array_equal(compact.embed(Image.fromarray(stored)), as_array)


class _Recorder(FaceAligner):
    """A stand-in aligner that records the size of every image it is given."""

    def __init__(self) -> None:
        super().__init__(size=16)
        self.sizes: list[tuple[int, int]] = []

    def detect(self, image: Image.Image) -> list[Face]:
        self.sizes.append(image.size)
        return [Face((0.0, 0.0, float(image.width), float(image.height)))]


def test_the_aligner_is_given_the_upright_photo(tmp_path) -> None:
    encoder = siamkit.create_encoder("compact")
    encoder.aligner = _Recorder()
    photo = _photo(tmp_path / "p.jpg", _face(), 6)
    encoder.embed([photo, Image.open(photo), os.fspath(photo)])
    assert encoder.aligner.sizes == [(48, 64)] * 3


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_aligner_called_directly_turns_the_photo_upright(tmp_path, orientation) -> None:
    upright_pixels = _face()
    photo = Image.open(_photo(tmp_path / "p.png", upright_pixels, orientation))
    aligner = _Recorder()
    aligner.size = 48
    (face,) = aligner.find_faces(photo)
    assert face.box == (0.0, 0.0, 48.0, 64.0)
    chips = [aligner.align(photo), *aligner.align_all(photo)]
    expected = aligner.align(Image.fromarray(upright_pixels))
    for chip in chips:
        assert np.array_equal(_pixels(chip), _pixels(expected))
    assert aligner.sizes == [(48, 64)] * 4


# -- (c) the face index and the ONNX runtime ---------------------------------------------------
def test_the_index_enrols_and_identifies_tagged_photos_upright(tmp_path, compact) -> None:
    ann, bob = _face(seed=3), _face(seed=11)
    index = siamkit.FaceIndex(compact)
    index.add([_photo(tmp_path / "ann.jpg", ann, 1), _photo(tmp_path / "bob.jpg", bob, 8)],
              labels=["ann", "bob"])  # fmt: skip
    for orientation in (3, 6, 8):
        match = index.identify(_photo(tmp_path / f"ann{orientation}.jpg", ann, orientation), 0.5)
        assert match.label == "ann" and match.distance < 2e-3, orientation
        query = Image.open(_photo(tmp_path / f"bob{orientation}.jpg", bob, orientation))
        match = index.identify(query, 0.5)
        assert match.label == "bob" and match.distance < 2e-3, orientation


def test_the_onnx_runtime_sees_tagged_photos_upright(tmp_path, compact) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra (siamkit[onnx]) is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra (siamkit[onnx]) is not installed")
    exported = siamkit.load_encoder(compact.export_onnx(tmp_path / "model.onnx"))
    face = _face()
    upright_file = _photo(tmp_path / "u.png", face, 1)
    for orientation in (3, 5, 6, 8):
        photo = _photo(tmp_path / f"p{orientation}.png", face, orientation)
        stored = np.ascontiguousarray(STORED[orientation](face))
        near, opened, sideways = _distances(
            exported, upright_file, [photo, Image.open(photo), stored]
        )
        assert near < 1e-3 and opened < 1e-3, orientation
        assert sideways > 0.01, orientation


# -- dlib's face encoder behind dlib's aligner, on a real face --------------------------------
def test_dlib_face_embeds_a_sideways_phone_photo_like_the_upright_one(tmp_path, orl_root) -> None:
    pytest.importorskip("dlib", reason="the face extra (siamkit[faces]) is not installed")
    encoder = siamkit.create_encoder("dlib-face")
    encoder.aligner = siamkit.create_aligner("dlib")
    # ORL faces are 92x112; twice that, dlib's HOG detector finds them upright.
    face = np.asarray(Image.open(orl_root / "s1" / "1.pgm").convert("RGB").resize((184, 224)))
    upright_file = _photo(tmp_path / "u.jpg", face, 1, quality=95)
    photos = [_photo(tmp_path / f"p{o}.jpg", face, o, quality=95) for o in (3, 6, 8)]
    distances = _distances(encoder, upright_file, photos)
    assert distances.max() < 0.1, distances  # dlib's same-person threshold is 0.6
    sideways = np.ascontiguousarray(STORED[6](np.asarray(Image.open(upright_file))))
    assert _distances(encoder, upright_file, [sideways])[0] > 0.3
