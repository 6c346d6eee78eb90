"""Grouped folders and Omniglot: the layout, the reader, splits by group, the download."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import siamkit
from siamkit._folders import list_image_folder
from siamkit.data import FaceFolder, Omniglot, download_omniglot
from siamkit.data.omniglot import omniglot_folder
from siamkit.exceptions import ConfigError, DataError

ALPHABETS = {"Latin": 3, "Greek": 2, "Korean": 4}  # alphabet -> characters
DRAWERS = 3


def _png(seed: int) -> bytes:
    image = Image.new("1", (8, 8))
    image.putpixel((seed % 8, (seed // 8) % 8), 1)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _write_set(folder: Path) -> None:
    """``folder/<alphabet>/characterNN/<NNNN_DD>.png``, as Omniglot's sets are laid out."""
    for a, (alphabet, characters) in enumerate(ALPHABETS.items()):
        for c in range(1, characters + 1):
            character = folder / alphabet / f"character{c:02d}"
            character.mkdir(parents=True)
            for d in range(1, DRAWERS + 1):
                (character / f"{a:02d}{c:02d}_{d:02d}.png").write_bytes(_png(a * 20 + c * 3 + d))


@pytest.fixture
def torchvision_root(tmp_path: Path) -> Path:
    _write_set(omniglot_folder(tmp_path, background=True))
    return tmp_path


def test_the_reader_makes_one_class_per_character_grouped_by_alphabet(torchvision_root) -> None:
    data = Omniglot(torchvision_root)
    assert data.layout == "grouped"
    assert len(data.classes) == sum(ALPHABETS.values()) == 9
    assert len(data) == 9 * DRAWERS
    assert data.classes[0] == "Greek/character01"  # sorted, as ImageFolder sorts classes
    assert data.groups == ["Greek"] * 2 + ["Korean"] * 4 + ["Latin"] * 3
    image, label = data[0]
    assert image.mode == "L" and label == 0
    # The characters torchvision's Omniglot lists (its own helper, as its reader calls it).
    from torchvision.datasets.utils import list_dir

    target = omniglot_folder(torchvision_root)
    theirs = [f"{a}/{c}" for a in list_dir(str(target)) for c in list_dir(str(target / a))]
    assert sorted(theirs) == data.classes


def test_a_missing_set_says_how_to_get_it(tmp_path) -> None:
    with pytest.raises(DataError, match="download=True"):
        Omniglot(tmp_path, background=False)


def test_auto_layout_reads_grouped_folders_grouped_and_people_flat(tmp_path, synthetic_faces):
    _write_set(tmp_path / "chars")
    assert list_image_folder(tmp_path / "chars", layout="auto").layout == "grouped"
    assert list_image_folder(tmp_path / "chars").classes == sorted(ALPHABETS)  # flat: as before
    people = list_image_folder(synthetic_faces, layout="auto")
    assert people.layout == "flat" and people.groups is None
    with pytest.raises(ConfigError, match="layout"):
        list_image_folder(synthetic_faces, layout="nested")


def test_a_loose_image_in_a_group_folder_is_refused_in_the_grouped_layout(tmp_path) -> None:
    _write_set(tmp_path)
    (tmp_path / "Latin" / "stray.png").write_bytes(_png(1))
    assert list_image_folder(tmp_path, layout="auto").layout == "flat"  # not grouped, then
    with pytest.raises(DataError, match="directly in the group folder Latin"):
        list_image_folder(tmp_path, layout="grouped")


def test_splits_of_grouped_data_hold_out_whole_groups(torchvision_root) -> None:
    data = Omniglot(torchvision_root)
    for seed in range(5):
        split = siamkit.split_by_class(data, val=1, seed=seed)
        held = {name.split("/")[0] for name in split.val_classes}
        trained = {name.split("/")[0] for name in split.train_classes}
        assert len(held) == 1 and not held & trained
        assert len(split.val_classes) == ALPHABETS[held.pop()]
    again = siamkit.split_by_class(data, val=1, seed=3)
    assert again.val_classes == siamkit.split_by_class(data, val=1, seed=3).val_classes


def test_flat_splits_are_unchanged_by_groups(synthetic_faces) -> None:
    # What split_by_class gave before groups existed: a seeded permutation of the classes.
    import numpy as np

    folder = FaceFolder(synthetic_faces)
    order = [folder.classes[c] for c in np.random.default_rng(7).permutation(6)]
    split = siamkit.split_by_class(folder, val=2, test=1, seed=7)
    assert split.test_classes == sorted(order[:1]) and split.val_classes == sorted(order[1:3])


def _archive() -> bytes:
    staging = Path(__import__("tempfile").mkdtemp())
    _write_set(staging / "images_evaluation")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(staging.rglob("*.png")):
            zf.write(path, path.relative_to(staging).as_posix())
    return buffer.getvalue()


def test_download_from_a_local_server_then_read(tmp_path, server) -> None:
    body = _archive()
    url = server.serve("/omniglot/images_evaluation.zip", body).rsplit("/", 1)[0]
    md5 = hashlib.md5(body).hexdigest()  # the checksum torchvision checks
    data = Omniglot(tmp_path, background=False, download=True, url=url, md5=md5)
    assert len(data.classes) == 9 and len(data) == 27
    # torchvision asks once for redirects, then fetches
    assert set(server.requests) == {"/omniglot/images_evaluation.zip"}
    assert sorted(p.name for p in (tmp_path / "omniglot-py").iterdir()) == ["images_evaluation"]
    asked = len(server.requests)
    Omniglot(tmp_path, background=False, download=True, url=url)  # present: no second fetch
    assert len(server.requests) == asked


def test_a_wrong_or_broken_download_leaves_nothing_behind(tmp_path, server) -> None:
    body = _archive()
    url = server.serve("/o/images_evaluation.zip", body).rsplit("/", 1)[0]
    with pytest.raises(DataError, match="could not download Omniglot"):
        download_omniglot(tmp_path, background=False, url=url, md5="0" * 32)
    cut = server.serve("/cut/images_evaluation.zip", body, truncated=True).rsplit("/", 1)[0]
    with pytest.raises(DataError, match="could not download Omniglot"):
        download_omniglot(tmp_path, background=False, url=cut)
    with pytest.raises(DataError, match="could not download Omniglot"):
        download_omniglot(tmp_path, background=False, url=server.url("/missing"))
    assert list((tmp_path / "omniglot-py").iterdir()) == []  # no half archive, no half set
