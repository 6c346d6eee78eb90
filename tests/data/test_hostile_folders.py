"""Hostile and careless image folders: links, loops, odd extensions (issue 18, points 1b and 4f).

The one folder listing (:func:`siamkit._folders.list_image_folder`) is used by
FaceFolder, ``FaceIndex.add_folder``, ``siamkit eval`` and ``siamkit index
build``; each test checks what it lists and what it reports as left out, and
that the callers see the same. Each failed on siamkit before the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import siamkit
from siamkit._folders import list_image_folder
from siamkit.cli.main import main
from siamkit.evaluation.runner import LabelledImages

needs_links = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX")


def picture(path: Path, shade: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (46, 56), shade).save(path, format=fmt)
    return path


def small_encoder() -> siamkit.Encoder:
    torch.manual_seed(0)
    return siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)


@pytest.fixture
def linked_gallery(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two people with two real images each, and every kind of link a gallery can hold.

    Returns the gallery and, for each link (relative to it), a word its reason must hold.
    """
    root, elsewhere = tmp_path / "gallery", tmp_path / "elsewhere"
    for person in ("ann", "bob"):
        for i in range(2):
            picture(root / person / f"{i}.png", 40 * i)
    picture(root / "ann" / "deep" / "2.png", 200)
    picture(elsewhere / "secret.png", 99)
    links = {
        "ann/again.png": ("0.png", "listed already"),
        "ann/bob": ("../bob", "outside the folder of ann"),  # bob's faces would become ann's
        "bob/ann.png": ("../ann/1.png", "outside the folder of bob"),
        "bob/stolen.png": (str(elsewhere / "secret.png"), "outside the folder of bob"),
        "bob/out": (str(elsewhere), "outside the folder of bob"),
        "bob/gone.png": ("nothing-here.png", "broken"),
        "ann2": ("ann", "listed already"),  # the same person twice
    }
    for name, (target, _) in links.items():
        os.symlink(target, root / name)
    return root, {name: word for name, (_, word) in links.items()}


REAL = ["ann/0.png", "ann/1.png", "ann/deep/2.png", "bob/0.png", "bob/1.png"]


@needs_links
def test_links_are_followed_once_and_only_inside_the_folder(linked_gallery) -> None:
    root, links = linked_gallery
    listing = list_image_folder(root)
    assert listing.classes == ["ann", "bob"]
    assert [Path(p).relative_to(root).as_posix() for p in listing.paths] == REAL
    assert listing.labels == [0, 0, 0, 1, 1]
    reasons = {Path(s.path).relative_to(root).as_posix(): s.reason for s in listing.skipped}
    assert sorted(reasons) == sorted(links)
    wrong = {name: reasons[name] for name, word in links.items() if word not in reasons[name]}
    assert not wrong, wrong

    # Every caller lists the folder alike.
    faces = siamkit.FaceFolder(root)
    assert faces.paths == listing.paths and faces.skipped_files == listing.skipped
    assert LabelledImages.of(root).skipped_files == listing.skipped
    index = siamkit.FaceIndex(small_encoder())
    added = index.add_folder(root)
    assert sorted(added) == REAL and len(index) == 5
    by_path = {Path(s.path).relative_to(root).as_posix(): s for s in added.skipped}
    assert sorted(by_path) == sorted(links)
    assert all(s.position is None and s.reason == reasons[k] for k, s in by_path.items())
    assert by_path["bob/stolen.png"].label == "bob"


@needs_links
def test_a_link_loop_lists_each_image_once_and_says_so(tmp_path: Path) -> None:
    # Back to the gallery, and back to the person's folder: each alone made the
    # listing walk 40 links deep (41 copies of each image); both at once, 2**40 paths.
    for loop, target in [("ann/loop", ".."), ("ann/deep/up", "..")]:
        root = tmp_path / loop.replace("/", "-")
        for name in ["ann/0.png", "ann/deep/1.png", "bob/0.png"]:
            picture(root / name)
        os.symlink(target, root / loop)
        listing = list_image_folder(root)
        assert [Path(p).relative_to(root).as_posix() for p in listing.paths] == [
            "ann/0.png", "ann/deep/1.png", "bob/0.png"
        ]  # fmt: skip
        back = "ann" if "deep" in loop else str(root)
        reasons = [(Path(s.path).relative_to(root).as_posix(), s.reason) for s in listing.skipped]
        assert reasons == [(loop, f"a link loop: it leads back to {back}, which holds it")]
        index = siamkit.FaceIndex(small_encoder())
        assert len(index.add_folder(root)) == 3 and len(index) == 3


@needs_links
def test_a_persons_folder_may_be_a_link_to_one_kept_elsewhere(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "gallery", tmp_path / "photos"
    picture(root / "ann" / "0.png")
    for i in range(2):
        picture(elsewhere / "cy" / f"{i}.png", i)
    picture(elsewhere / "secret.png", 9)
    os.symlink("../secret.png", elsewhere / "cy" / "escape.png")
    os.symlink(elsewhere / "cy", root / "cy")  # a gallery put together from folders
    os.symlink(elsewhere / "cy", root / "cy2")  # the same person twice
    os.symlink("..", root / "up")  # the folder that holds the gallery
    listing = list_image_folder(root)
    assert listing.classes == ["ann", "cy"]
    assert [Path(p).relative_to(root).as_posix() for p in listing.paths] == [
        "ann/0.png", "cy/0.png", "cy/1.png"
    ]  # fmt: skip
    reasons = {Path(s.path).relative_to(root).as_posix(): s.reason for s in listing.skipped}
    assert sorted(reasons) == ["cy/escape.png", "cy2", "up"]
    assert "outside the folder of cy" in reasons["cy/escape.png"]
    assert reasons["cy2"].startswith("a link to the folder cy, listed already")
    assert reasons["up"].startswith("a link loop")


@needs_links
def test_index_build_reports_the_links_it_left_out(
    linked_gallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, links = linked_gallery
    model = small_encoder().save(tmp_path / "model")
    out = tmp_path / "index"
    argv = ["index", "build", "--model", str(model), "--gallery", str(root), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 5 images of 2 people" in printed
    skipped = [line for line in printed.splitlines() if line.startswith("  skipped (")]
    assert len(skipped) == len(links)
    assert any("outside" in line and "bob/stolen.png" in line for line in skipped)


def test_files_pillow_reads_are_listed_and_the_others_reported(tmp_path: Path) -> None:
    root = tmp_path / "gallery"
    listed = [
        picture(root / "ann" / "0.png"),
        picture(root / "ann" / "1.jfif", 10, "JPEG"),
        picture(root / "ann" / "2.JPE", 20, "JPEG"),
        picture(root / "ann" / "3.HEIC", 30, "JPEG"),  # a phone's JPEG, named .HEIC
        picture(root / "ann" / "4", 40, "PNG"),  # no extension at all
        picture(root / "bob" / "0.pnm", 50, "PPM"),
        picture(root / "bob" / "1.dib", 60, "BMP"),
        picture(root / "bob" / "2.tiff.orig", 70, "TIFF"),
    ]
    heif = root / "bob" / "real.heic"
    heif.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    (root / "bob" / "notes.txt").write_text("taken in 2019")
    (root / "bob" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # the system's: silent
    (root / "bob" / "Thumbs.db").write_bytes(bytes(16))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "bob" / "pipe.png")  # opening it would hang

    listing = list_image_folder(root)
    assert sorted(listing.paths) == sorted(str(p) for p in listed)
    reasons = {Path(s.path).name: s.reason for s in listing.skipped}
    expected = {"real.heic": "HEIF", "notes.txt": "not an image siamkit reads (.txt"}
    if hasattr(os, "mkfifo"):
        expected["pipe.png"] = "not a regular file"
    assert sorted(reasons) == sorted(expected)
    assert all(expected[name] in reasons[name] for name in expected), reasons
    faces = siamkit.FaceFolder(root, mode="L")
    assert [tuple(faces[i][0].size) for i in range(len(faces))] == [(46, 56)] * len(listed)

    index = siamkit.FaceIndex(small_encoder())
    added = index.add_folder(root)
    assert len(added) == len(listed)
    assert sorted(Path(s.path).name for s in added.skipped) == sorted(expected)


def test_eval_summary_lists_what_the_folder_left_out(make_image_folder) -> None:
    from siamkit.cli.evaluate import summary_lines
    from siamkit.evaluation import evaluate_encoder

    root = make_image_folder({"ann": 3, "bob": 3, "cy": 3})
    (root / "ann" / "notes.txt").write_text("no face here")
    result = evaluate_encoder(small_encoder(), root)
    assert [Path(s.path).name for s in result.skipped_files] == ["notes.txt"]
    assert result.to_dict()["skipped_files"][0]["reason"].startswith("not an image")
    lines = summary_lines(result)
    assert "  left out           1 file of the folder:" in lines
    assert any(line.endswith(".txt; it reads .jpg, .png, .pgm, .bmp, .tif, .webp, "
                             ".gif and their aliases)") for line in lines)  # fmt: skip
    # A Subset reports only its own people's folders.
    parts = siamkit.split_by_class(siamkit.FaceFolder(root), val_classes=["ann"])
    assert LabelledImages.of(parts.train).skipped_files == []
    assert len(LabelledImages.of(parts.val).skipped_files) == 1
