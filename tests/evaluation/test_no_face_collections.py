"""Images without a face in collections: the index, ``siamkit eval`` and ``siamkit index``.

Under the aligner's ``on_missing="skip"`` they are dropped (with their labels,
ids, metadata and pairs) and counted; under ``"error"`` the first stops the
job, naming the file; under ``"fallback"`` they are aligned whole. Every count
is checked against the images actually written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from _aligners import DarkIsNoFace
from _markers import needs_faces
from siamkit.cli.main import main
from siamkit.evaluation import evaluate_encoder
from siamkit.exceptions import DataError, NoFaceError
from siamkit.index import Enrolled, SkippedImage


def encoder_with(policy: str | None) -> siamkit.Encoder:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    encoder.aligner = None if policy is None else DarkIsNoFace(on_missing=policy)
    return encoder


def blank(path: Path) -> Path:
    Image.new("L", (46, 56)).save(path)
    return path


@pytest.fixture
def gallery(make_image_folder) -> tuple[Path, list[Path]]:
    """4 people x 4 images, 3 of them replaced by black images."""
    root = make_image_folder({f"p{i}": 4 for i in range(4)})
    blanks = [blank(root / "p0" / "1.png"), blank(root / "p2" / "3.png"), blank(root / "p3/0.png")]
    return root, blanks


# -- FaceIndex -------------------------------------------------------------------------
def test_add_folder_skips_faceless_images_and_says_which(gallery) -> None:
    root, blanks = gallery
    encoder = encoder_with("skip")
    index = siamkit.FaceIndex(encoder)
    added = index.add_folder(root)
    assert isinstance(added, Enrolled) and isinstance(added, list)
    skipped_ids = {p.relative_to(root).as_posix() for p in blanks}
    assert [s.id for s in added.skipped] == sorted(skipped_ids)
    assert {s.path for s in added.skipped} == {str(p) for p in blanks}
    assert [s.label for s in added.skipped] == ["p0", "p2", "p3"]
    assert len(added) == len(index) == 16 - 3 and not skipped_ids & set(index.ids())
    assert (encoder.aligner.stats.aligned, encoder.aligner.stats.missing) == (13, 3)
    # What was kept is exactly the other images, each under its own id and label.
    kept = sorted(p for p in root.glob("*/*.png") if p not in blanks)
    assert added == [p.relative_to(root).as_posix() for p in kept]
    for path in kept[:3]:
        record = index.get(path.relative_to(root).as_posix())
        assert record.label == path.parent.name and record.metadata == {"path": str(path)}
        np.testing.assert_allclose(
            record.embedding, encoder.embed(path)[0], atol=1e-6, rtol=0
        )  # euclidean: stored as embedded


def test_add_drops_labels_ids_and_metadata_with_the_image(make_image_folder) -> None:
    root = make_image_folder({"ann": 3})
    images = [root / "ann" / "0.png", blank(root / "ann" / "dark.png"), root / "ann" / "2.png"]
    items = [images[0], Image.open(images[1]), str(images[2])]  # a path, a PIL image, a str
    index = siamkit.FaceIndex(encoder_with("skip"))
    added = index.add(items, labels=["a", "b", "c"], ids=["i0", "i1", "i2"],
                      metadata=[{"n": 0}, {"n": 1}, {"n": 2}])  # fmt: skip
    assert added == ["i0", "i2"]
    assert added.skipped == (SkippedImage(1, None, "b", "i1"),)
    assert [index.get(i).metadata for i in added] == [{"n": 0}, {"n": 2}]
    assert [index.get(i).label for i in added] == ["a", "c"]
    # Automatic ids stay consecutive over what was enrolled.
    more = index.add([Image.open(images[1]), images[0]], labels="x")
    assert more == [0] and [s.position for s in more.skipped] == [0]
    nothing = index.add(images[1], labels="x")
    assert nothing == [] and len(nothing.skipped) == 1 and len(index) == 3


def test_error_refuses_naming_the_file_and_fallback_keeps_everything(gallery) -> None:
    root, _ = gallery
    refusing = siamkit.FaceIndex(encoder_with("error"))
    with pytest.raises(NoFaceError, match=r"no face found in .*p0/1\.png"):
        refusing.add_folder(root)
    assert len(refusing) == 0  # nothing half-added
    encoder = encoder_with("fallback")
    keeping = siamkit.FaceIndex(encoder)
    added = keeping.add_folder(root)
    assert len(added) == 16 and added.skipped == ()
    assert (encoder.aligner.stats.aligned, encoder.aligner.stats.fallback) == (13, 3)


def test_queries_are_not_dropped_but_refused(gallery) -> None:
    root, blanks = gallery
    index = siamkit.FaceIndex(encoder_with("skip"))
    index.add_folder(root)
    with pytest.raises(NoFaceError, match=r"no face found in .*p0/1\.png"):
        index.search([root / "p1" / "0.png", blanks[0]])
    # Strangers to calibrate against form a collection: the faceless ones drop out.
    strangers = [root / "p1" / "0.png", blanks[0]]
    report = index.calibrate(target_fpir=0.1, unknown=strangers)
    assert report.num_non_mated == 1
    with pytest.raises(DataError, match=r"no probe \(1 without a face\)"):
        index.calibrate(target_fpir=0.1, unknown=[blanks[0]])


@needs_faces
def test_dlib_counts_on_real_faces(orl_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "gallery"
    for person in ("s1", "s2"):
        (root / person).mkdir(parents=True)
        shutil.copy(orl_root / person / "1.pgm", root / person / "1.pgm")
    blank_path = blank(root / "s2" / "blank.png")
    encoder = siamkit.create_encoder("compact")
    encoder.aligner = siamkit.create_aligner("dlib", on_missing="skip")
    index = siamkit.FaceIndex(encoder)
    added = index.add_folder(root)
    assert added == ["s1/1.pgm", "s2/1.pgm"]
    assert [s.path for s in added.skipped] == [str(blank_path)]
    stats = encoder.aligner.stats
    assert (stats.aligned, stats.fallback, stats.missing, stats.several) == (2, 0, 1, 0)
    encoder.aligner = siamkit.create_aligner("dlib", on_missing="error")
    with pytest.raises(NoFaceError, match=r"blank\.png"):
        siamkit.FaceIndex(encoder).add_folder(root)


# -- evaluation ------------------------------------------------------------------------
def test_evaluation_leaves_faceless_images_out_and_counts_them(gallery, tmp_path) -> None:
    root, blanks = gallery
    result = evaluate_encoder(encoder_with("skip"), root, out_dir=tmp_path / "eval")
    assert sorted(result.skipped_images) == sorted(str(p) for p in blanks)
    assert (result.num_images, result.num_pairs) == (13, 13 * 12 // 2)
    stats = result.alignment
    assert (stats.aligned, stats.fallback, stats.missing, stats.several) == (13, 0, 3, 0)
    # The metrics are those of the folder without the black images.
    clean = tmp_path / "clean"
    shutil.copytree(root, clean)
    for path in blanks:
        (clean / path.relative_to(root)).unlink()
    expected = evaluate_encoder(encoder_with(None), clean)
    assert result.verification.auc == pytest.approx(expected.verification.auc, abs=1e-12)
    assert result.identification == expected.identification
    assert expected.alignment is None and expected.skipped_images == []
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert (saved["alignment"]["aligned"], saved["alignment"]["missing"]) == (13, 3)
    with pytest.raises(NoFaceError, match=r"p0/1\.png"):
        evaluate_encoder(encoder_with("error"), root)


def test_a_pair_with_a_faceless_image_is_dropped(gallery, tmp_path) -> None:
    root, _ = gallery
    outside = blank(tmp_path / "outside.png")
    shutil.copy(outside, root / "outside.png")
    pairs = tmp_path / "pairs.csv"
    usable = [f"p1/{i}.png,p1/{i + 1}.png,1\np1/{i}.png,p2/{i}.png,0\n" for i in range(3)]
    dropped = "p0/1.png,p0/0.png,1\np1/2.png,outside.png,0\n"
    pairs.write_text("".join(usable) + dropped)
    result = evaluate_encoder(encoder_with("skip"), root, pairs=pairs)
    assert result.num_pairs == 6 and result.verification.num_genuine == 3
    assert str(root / "outside.png") in result.skipped_images and len(result.skipped_images) == 4
    assert result.alignment.missing == 4  # each image looked at once


def test_too_few_people_left_is_a_data_error(make_image_folder) -> None:
    root = make_image_folder({"a": 2, "b": 2})
    blank(root / "b" / "0.png")
    blank(root / "b" / "1.png")
    with pytest.raises(DataError, match="2 images without a face were skipped"):
        evaluate_encoder(encoder_with("skip"), root)


# -- the CLI ---------------------------------------------------------------------------
def test_eval_and_index_print_the_alignment_counts(gallery, tmp_path, capsys) -> None:
    root, blanks = gallery
    model = encoder_with("skip").save(tmp_path / "model")
    assert main(["eval", "--model", str(model), "--data", str(root), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "alignment           a face was found in 13 of 16 images; 0 aligned whole" in printed
    assert "3 skipped (no face found)" in printed
    html = (model / "evaluation" / "report.html").read_text()
    assert "Face alignment" in html and "1.png" in html
    index = tmp_path / "index"
    argv = ["index", "build", "--model", str(model), "--gallery", str(root), "--out", str(index)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 13 images of 4 people" in printed
    assert "alignment: a face was found in 13 of 16 images" in printed
    assert printed.count("skipped (no face found): ") == 3 and str(blanks[0]) in printed
    add = ["index", "add", "--index", str(index), "--label", "p9", "--quiet"]
    assert main([*add, str(blanks[1]), str(root / "p1" / "0.png"), "--ids", "x", "y"]) == 0
    printed = capsys.readouterr().out
    assert "added 1 items" in printed and "a face was found in 1 of 2 images" in printed
    assert main(["index", "query", "--index", str(index), str(blanks[2]), "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["no_face"] is True and answer["match"] is None
    query = ["index", "query", "--index", str(index), str(blanks[2]), str(root / "p1/0.png")]
    assert main(query) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("-> no face found (skipped: the aligner's on_missing=skip)")
    assert lines[1].startswith(f"{root / 'p1/0.png'} -> ")


def test_no_aligner_no_alignment_line(synthetic_faces, tmp_path, capsys) -> None:
    model = encoder_with(None).save(tmp_path / "model")
    assert main(["eval", "--model", str(model), "--data", str(synthetic_faces), "--quiet"]) == 0
    assert "  alignment " not in capsys.readouterr().out
    assert "Face alignment" not in (model / "evaluation" / "report.html").read_text()
