"""``build_index``: the flow ``siamkit index build`` runs, from Python, against doing it by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from siamkit.exceptions import ConfigError, IndexFileError
from siamkit.index import FaceIndex
from siamkit.index.building import BuildSettings, BuildTarget, build_index


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16).save(folder)
    return folder


def test_a_built_index_is_the_one_made_by_hand(
    model: Path, synthetic_faces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    built = build_index(model, synthetic_faces, BuildTarget(out=out),
                        BuildSettings(save_every=0))  # fmt: skip
    assert built is not None and built.where == str(out)
    encoder = siamkit.load_encoder(model)
    by_hand = FaceIndex(encoder)
    by_hand.add_folder(synthetic_faces)
    far = by_hand.calibrate(target_far=0.001)
    fpir = by_hand.calibrate(target_fpir=0.01)
    loaded = FaceIndex.load(out, encoder)
    assert loaded.ids() == by_hand.ids() == built.enrolled
    for item in by_hand.ids():
        np.testing.assert_array_equal(loaded.get(item).embedding, by_hand.get(item).embedding)
    assert loaded.threshold == far.threshold and loaded.identify_threshold == fpir.threshold
    assert loaded.extra["model"] == str(model.resolve())
    assert built.calibration[0].startswith(f"threshold {far.threshold:.4f} at FAR")
    assert built.calibration[1].startswith(f"identify threshold {fpir.threshold:.4f} at FPIR")


def test_a_resumed_build_enrols_only_what_is_missing(
    model: Path, synthetic_faces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    first = build_index(model, synthetic_faces, BuildTarget(out=out))
    assert first is not None
    again = build_index(model, synthetic_faces, BuildTarget(out=out), BuildSettings(resume=True))
    assert again is not None and list(again.enrolled) == []
    assert len(again.index) == len(first.index)


def test_a_refused_target_costs_no_model_load(synthetic_faces: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    missing_model = tmp_path / "no-model"  # loading it would fail: the folder check comes first
    with pytest.raises(IndexFileError, match="holds no face index"):
        build_index(missing_model, synthetic_faces, BuildTarget(out=tmp_path))
    with pytest.raises(ConfigError, match=r"target\.out"):
        build_index(missing_model, synthetic_faces, BuildTarget())
    with pytest.raises(ConfigError, match="--save-every"):
        build_index(missing_model, synthetic_faces, BuildTarget(out=tmp_path / "new"),
                    BuildSettings(save_every=float("nan")))  # fmt: skip
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "new").exists()
