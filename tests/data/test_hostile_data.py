"""Hostile data: images, archives and numbers that used to crash or give garbage (issue 9).

Every test here failed before the fix: an untyped exception escaped, a file was
written outside its folder, or a number came back wrong.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit import FaceIndex, ImageReadError, NonFiniteError, geometry
from siamkit.data import FaceFolder, att, download_att_faces
from siamkit.data.images import load_image
from siamkit.exceptions import DownloadError
from siamkit.geometry import paired_distances, pairwise_distances, prepare


# -- images --------------------------------------------------------------------------
def _png_claiming(width: int, height: int) -> bytes:
    """A greyscale PNG whose header claims ``width`` x ``height``, with one row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_header_is_an_image_read_error(tmp_path):
    bomb = tmp_path / "people" / "ann" / "bomb.png"
    bomb.parent.mkdir(parents=True)
    bomb.write_bytes(_png_claiming(30_000, 30_000))  # 900 million pixels in 150 bytes
    with pytest.raises(ImageReadError, match=r"bomb\.png.*too large.*MAX_IMAGE_PIXELS"):
        load_image(bomb, mode="L")
    # the other ways siamkit opens images go through the same door
    with pytest.raises(ImageReadError, match="too large"):
        FaceFolder(tmp_path / "people")[0]
    encoder = siamkit.create_encoder("compact", embedding_dim=4, channels=(4,))
    with pytest.raises(ImageReadError, match="too large"):
        encoder.embed([str(bomb)])


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    # PIL itself only warns between its limit and twice that, then decodes anyway.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("L", (40, 40)).save(path)  # 1600 pixels: over the limit, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageReadError, match=r"big\.png.*1600 pixels, above 1000"):
            load_image(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # python -W error
            with pytest.raises(ImageReadError, match="too large"):
                load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert load_image(path).size == (40, 40)


@pytest.mark.parametrize(
    "error",
    [struct.error("unpack requires a buffer"), EOFError(), IndexError("tuple index"),
     MemoryError(), KeyError("tag"), ZeroDivisionError("division by zero")],
    ids=["struct.error", "EOFError", "IndexError", "MemoryError", "KeyError", "ZeroDivision"],
)  # fmt: skip
def test_any_decoder_failure_is_an_image_read_error(tmp_path, monkeypatch, error):
    # Fuzzed files have made PIL's decoders raise each of these.
    path = tmp_path / "face.png"
    Image.new("L", (4, 4)).save(path)

    def broken_open(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", broken_open)
    with pytest.raises(ImageReadError, match=r"face\.png"):
        load_image(path)


def _gradient16(height: int = 112, width: int = 92) -> np.ndarray:
    ramp = np.linspace(0, 65535, height * width).reshape(height, width)
    return np.rint(ramp).astype(np.uint16)


def _as_8bit(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_image_is_scaled_not_clipped(tmp_path, suffix):
    pixels = _gradient16()
    path = tmp_path / f"face16{suffix}"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode == "I;16"  # really a 16-bit file
    expected = _as_8bit(pixels)
    for mode in (None, "L"):
        image = load_image(path, mode=mode)
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), expected)
    rgb = np.asarray(load_image(path, mode="RGB"))
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    assert (expected == 255).mean() < 0.01  # was 99.6% white when clipped


@pytest.mark.parametrize("maxval", [65535, 1023])
def test_16_bit_pgm_is_scaled_by_its_maxval(tmp_path, maxval):
    values = np.array([[0, maxval // 2, maxval, 1]], dtype=">u2")
    path = tmp_path / "face.pgm"
    path.write_bytes(f"P5\n4 1\n{maxval}\n".encode() + values.tobytes())
    got = np.asarray(load_image(path, mode="L")).astype(int)
    expected = np.rint(values.astype(np.float64) * 255 / maxval).astype(int)
    np.testing.assert_allclose(got, expected, atol=1)  # PIL stretches to 16 bits first
    assert got[0, 2] == 255 and got[0, 0] == 0


def test_float_and_32_bit_images_follow_the_documented_rule(tmp_path):
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "unit.tif"
    Image.fromarray(unit).save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path, "L")), [[0, 64, 128, 255]])
    wide = np.array([[0.0, 1000.0, 65535.0]], dtype=np.float32)  # a 16-bit scale in floats
    Image.fromarray(wide).save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path, "L")), [[0, 4, 255]])
    for bad in (np.array([[0.0, np.nan]], np.float32), np.array([[-1.0, 0.5]], np.float32)):
        Image.fromarray(bad).save(path)
        with pytest.raises(ImageReadError, match=r"unit\.tif.*float pixels"):
            load_image(path, "L")
    wide_int = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 70_000]], dtype=np.int32)).save(wide_int)
    with pytest.raises(ImageReadError, match=r"int32\.tif.*outside 0\.\.65535"):
        load_image(wide_int, "L")


def test_folder_of_16_bit_faces_loads_scaled(tmp_path):
    pixels = _gradient16(8, 8)
    for person in ("ann", "bob"):
        (tmp_path / person).mkdir()
        Image.fromarray(pixels).save(tmp_path / person / "0.png")
    image, _ = FaceFolder(tmp_path)[0]
    np.testing.assert_array_equal(np.asarray(image), _as_8bit(pixels))


# -- archives ------------------------------------------------------------------------
def _pgm(person: int, image: int) -> bytes:
    return b"P5\n3 2\n255\n" + bytes((person * 10 + image + k) % 256 for k in range(6))


def _faces_zip(extra: list[tuple[str, bytes]] | None = None, first: list[str] = ()) -> bytes:
    """The 40 x 10 layout; ``first`` names are written (as small files) before the faces."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(buffer, "w") as zf:
            for name in first:
                zf.writestr(name, b"not a folder")
            for person in range(1, 41):
                for image in range(1, 11):
                    zf.writestr(f"s{person}/{image}.pgm", _pgm(person, image))
            for name, data in extra or []:
                zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _outside(tmp_path: Path, root: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}


def _download(tmp_path: Path, archive: bytes) -> tuple[Path, str]:
    source = tmp_path / "mirror" / "att_faces.zip"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(archive)
    return tmp_path / "data", source.as_uri()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """The faces plus a README of 200 MB of zeros, in about 200 KB."""
    buffer = io.BytesIO(_faces_zip())
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("README", "w") as out:
        block = bytes(1 << 20)
        for _ in range(200):
            out.write(block)
    return buffer.getvalue()


def test_zip_bomb_is_refused_before_extraction(tmp_path, zip_bomb):
    assert len(zip_bomb) < 300_000
    root, url = _download(tmp_path, zip_bomb)
    with pytest.raises(DownloadError, match=r"README.*compresses"):
        download_att_faces(root, url=url)
    assert not (root / "att_faces").exists()
    assert sorted(p.name for p in root.iterdir()) == ["att_faces.zip"]  # no staging left


def test_highly_compressed_member_is_refused(tmp_path):
    archive = _faces_zip(extra=[("s1/notes.txt", bytes(2 * 2**20))])  # 2 MiB of zeros, 2 KB
    root, url = _download(tmp_path, archive)
    with pytest.raises(DownloadError, match=r"notes\.txt.*compresses \d+:1"):
        download_att_faces(root, url=url)
    assert not (root / "att_faces").exists()


def test_total_extracted_size_is_capped(tmp_path, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    root, url = _download(tmp_path, _faces_zip(extra=[("s1/noise.bin", noise)]))
    monkeypatch.setattr(att, "MAX_EXTRACTED_BYTES", 150_000)
    with pytest.raises(DownloadError, match=r"would extract to .* more than 150000"):
        download_att_faces(root, url=url)
    assert not (root / "att_faces").exists()


def test_bytes_written_are_counted_whatever_the_directory_says(tmp_path, monkeypatch):
    # zipfile stops at the declared size today; the count holds even if it did not.
    root, url = _download(tmp_path, _faces_zip())
    real_open = zipfile.ZipFile.open

    def lying_open(self, member, *args, **kwargs):
        if getattr(member, "filename", member) == "s3/4.pgm":
            return io.BytesIO(bytes(1_000_000))  # far more than the 17 bytes declared
        return real_open(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    monkeypatch.setattr(zipfile.ZipFile, "testzip", lambda self: None)
    with pytest.raises(DownloadError, match=r"s3/4\.pgm.*extracts to more than 17 bytes"):
        download_att_faces(root, url=url)
    assert not (root / "att_faces").exists()
    assert sorted(p.name for p in root.iterdir()) == ["att_faces.zip"]


def test_download_larger_than_the_cap_is_refused(tmp_path, monkeypatch):
    root, url = _download(tmp_path, _faces_zip())
    monkeypatch.setattr(att, "MAX_ARCHIVE_BYTES", 10_000)
    with pytest.raises(DownloadError, match="larger than 10000 bytes"):
        download_att_faces(root, url=url)
    assert list(root.iterdir()) == []  # no partial file either


@pytest.mark.parametrize(
    "first", [["s1"], ["s1/1.pgm"], ["s2/3.pgm/x"]], ids=["file-s1", "duplicate", "file-in-file"]
)
def test_colliding_members_are_refused(tmp_path, first):
    root, url = _download(tmp_path, _faces_zip(first=first))
    before = _outside(tmp_path, root)
    with pytest.raises(DownloadError, match=r"both as a file and as a folder|twice"):
        download_att_faces(root, url=url)
    assert not (root / "att_faces").exists()
    assert _outside(tmp_path, root) == before


def test_dangling_link_where_the_folder_goes_is_refused(tmp_path):
    root, url = _download(tmp_path, _faces_zip())
    root.mkdir()
    nowhere = tmp_path / "elsewhere" / "faces"
    (root / "att_faces").symlink_to(nowhere)
    before = _outside(tmp_path, root)
    with pytest.raises(DownloadError, match=r"att_faces is a link.*remove it"):
        download_att_faces(root, url=url)
    assert not nowhere.parent.exists()
    assert _outside(tmp_path, root) == before
    assert (root / "att_faces").is_symlink()  # left as it was


def test_planted_link_at_the_partial_download_is_not_followed(tmp_path):
    root, url = _download(tmp_path, _faces_zip())
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    (root / "att_faces.zip.part").symlink_to(victim)
    folder = download_att_faces(root, url=url)
    assert victim.read_bytes() == b"keep me"
    assert len(list(folder.glob("s*/*.pgm"))) == 400


def test_unusable_paths_under_root_are_download_errors(tmp_path):
    root, url = _download(tmp_path, _faces_zip())
    root.write_text("not a folder")
    with pytest.raises(DownloadError, match="cannot create the folder"):
        download_att_faces(root, url=url)
    root.unlink()
    (root / "att_faces.zip").mkdir(parents=True)  # a folder where the archive goes
    with pytest.raises(DownloadError, match="Is a directory"):
        download_att_faces(root, url=url)
    assert [p.name for p in root.iterdir()] == ["att_faces.zip"]  # no partial file left


# -- numbers -------------------------------------------------------------------------
def _gallery(n: int = 12, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_huge_embeddings_are_refused_by_every_index_path(metric, kind):
    index = FaceIndex(metric=metric, index=kind, dim=16)
    index.add(_gallery(), labels="x")
    huge = np.full(16, 1e30, dtype=np.float32)  # finite; its float32 square is inf
    over = np.full(16, 3e17, dtype=np.float32)  # norm 1.2e18: squares fine, sums overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way either
        for query in (huge, over):
            with pytest.raises(NonFiniteError, match=r"norm above 1e\+18"):
                index.add(query, labels="y")
            with pytest.raises(NonFiniteError, match=r"norm above 1e\+18"):
                index.search(query, k=3)  # the single-query fast path
            with pytest.raises(NonFiniteError, match=r"norm above 1e\+18"):
                index.search(np.stack([query, query]), k=3)
            with pytest.raises(NonFiniteError, match=r"norm above 1e\+18"):
                index.verify(query, _gallery()[0], threshold=1.0)
    assert len(index) == 12
    assert np.isfinite(index.store.rows.vectors).all()


def test_embeddings_up_to_the_bound_give_right_distances():
    index = FaceIndex(metric="euclidean", dim=16)
    assert geometry.MAX_EMBEDDING_NORM == 1e18  # the documented bound
    side = np.float32(1e18 / 4 * 0.99)  # norm 0.99e18, on the edge
    gallery = np.stack([np.full(16, side), -np.full(16, side), np.zeros(16)]).astype(np.float32)
    index.add(gallery, labels=["plus", "minus", "zero"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = index.search(gallery[0], k=3)
        batch = index.search(gallery[:1].copy(), k=3)[0]
    for matches in (single, batch):
        assert [m.label for m in matches] == ["plus", "zero", "minus"]
        got = [m.distance for m in matches]
        want = [0.0, 4 * float(side), 8 * float(side)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(side))
    # cosine: the stored vectors are unit length, never zeros
    cosine = FaceIndex(metric="cosine", dim=16)
    cosine.add(gallery[:2], labels=["plus", "minus"])
    np.testing.assert_allclose(np.linalg.norm(cosine.store.rows.vectors, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(NonFiniteError, match="norm above"):
        FaceIndex(metric="euclidean", dim=16).add(np.full(16, 1e20, np.float32), labels="a")


class _Blaring(siamkit.Encoder):
    """An encoder whose embeddings are finite but enormous."""

    metric = "cosine"

    def __init__(self) -> None:
        super().__init__()
        self.embedding_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 4), 1e30)


def test_encoder_with_huge_output_is_refused_by_the_index():
    index = FaceIndex(encoder=_Blaring(), metric="cosine")
    with pytest.raises(NonFiniteError, match=r"_Blaring produced.*norm above"):
        index.add(torch.zeros(3, 1, 8, 8), labels="x")
    assert len(index) == 0


@pytest.mark.parametrize("to_input", [np.asarray, torch.from_numpy], ids=["numpy", "torch"])
def test_geometry_of_huge_embeddings_is_finite_and_right(to_input):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 16)) * np.array([[1e20], [1e30], [1.0], [3e37]])
    b = rng.normal(size=(4, 16)) * np.array([[1e20], [1e30], [1.0], [3e37]])
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    x, y = a32.astype(np.float64), b32.astype(np.float64)  # the reference, in float64
    euclid = np.linalg.norm(x - y, axis=1)
    cos = 1 - (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    got = np.asarray(paired_distances(to_input(a32), to_input(b32), "euclidean"))
    np.testing.assert_allclose(got, euclid, rtol=1e-5)
    got = np.asarray(paired_distances(to_input(a32), to_input(b32), "cosine"))
    np.testing.assert_allclose(got, cos, atol=1e-5)
    unit = np.asarray(prepare(to_input(a32), "cosine"))
    np.testing.assert_allclose(unit, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)
    # pairwise shares one scale for all rows: rows of one size, to compare them closely
    same = a32[:1] * np.float32(1e10)
    pair = np.asarray(pairwise_distances(to_input(a32[:1]), to_input(same), "euclidean"))
    want = np.linalg.norm(x[0] - same[0].astype(np.float64))
    np.testing.assert_allclose(pair[0, 0], want, rtol=1e-5)
    small = a32[:2] * np.float32(1e-8)  # rows of 1e12 and 1e22
    self_pairs = np.asarray(pairwise_distances(to_input(small), None, "euclidean"))
    want = np.linalg.norm(small[0].astype(np.float64) - small[1])
    np.testing.assert_allclose(self_pairs, [[0, want], [want, 0]], rtol=1e-4)
    cosine_pairs = np.asarray(pairwise_distances(to_input(a32), to_input(b32), "cosine"))
    np.testing.assert_allclose(np.diagonal(cosine_pairs), cos, atol=1e-5)


def test_geometry_gradients_stay_finite_for_huge_embeddings():
    a = torch.full((2, 8), 1e25, requires_grad=True)
    b = torch.zeros(2, 8)
    distance = paired_distances(a, b, "euclidean")
    torch.testing.assert_close(distance, torch.full((2,), 1e25 * 8**0.5))
    distance.sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, torch.full((2, 8), 8**-0.5))
