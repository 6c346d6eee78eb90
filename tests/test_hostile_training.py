"""Careless and hostile input to training: devices, checkpoints, resumes (issue 9, section 3).

Each test covers one class of input and checks every variant of it, reporting
all that escape at once; each failed on siamkit before the fix.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import siamkit
from siamkit.cli.main import main
from siamkit.training import TrainConfig, Trainer, load_checkpoint

SMALL = {"channels": [8, 16], "embedding_dim": 16}


def small_config(**overrides: Any) -> TrainConfig:
    settings = {"epochs": 1, "batch_size": 12, "m_per_class": 3, "warmup_epochs": 1}
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def parts(synthetic_faces: Path) -> siamkit.data.ClassSplit:
    return siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val_classes=["person5"])


@pytest.fixture
def run_dir(parts: siamkit.data.ClassSplit, tmp_path: Path) -> Path:
    """A finished one-epoch run of a small compact encoder."""
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", **SMALL)
    Trainer(encoder, small_config()).fit(parts.train, None, tmp_path / "run")
    return tmp_path / "run"


# -- devices ------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_or_unknown_device_is_a_config_error(
    synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = siamkit.create_encoder("compact", **SMALL)
    escaped = []
    for device, says in [("cuda", "CUDA"), ("cuda:1", "CUDA"), ("gpu", "unknown device")]:
        try:
            Trainer(encoder, small_config(device=device))
            escaped.append(f"{device}: accepted")
        except siamkit.ConfigError as err:
            if says not in str(err) or "cpu" not in str(err):
                escaped.append(f"{device}: unclear message {err}")
        except Exception as err:
            escaped.append(f"{device}: {type(err).__name__}: {err}")
    assert not escaped, escaped

    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "m")]
    assert main([*argv, "--device", "cuda", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA" in err and "--device cpu" in err
    assert not (tmp_path / "m" / "checkpoint.pt").exists()


# -- corrupt checkpoints ----------------------------------------------------------------
class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _replace_member(archive: bytes, suffix: str, data: bytes, packed: bool = False) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED) as z:
        for name in source.namelist():
            z.writestr(name, data if name.endswith(suffix) else source.read(name))
    return out.getvalue()


def _saved(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _corrupt_checkpoints(good: bytes, state: dict[str, Any], marker: Path) -> dict[str, bytes]:
    payload = pickle.dumps(_Payload(marker), protocol=2)
    broken = {
        "history not a list": {**state, "history": "x"},
        "newer format": {**state, "format_version": 99},
        "epoch beyond history": {**state, "epoch": 7},
        "tensor in history": {**state, "history": [{"epoch": 1, "loss": torch.zeros(2)}]},
        "weights not tensors": {**state, "model": {"w": "x"}},
    }
    return {
        "empty": b"",
        "random bytes": bytes(range(256)) * 16,
        "truncated header": good[:10],
        "truncated half": good[: len(good) // 2],
        "truncated tail": good[:-100],
        "json garbage": b'{"format": "siamkit-checkpoint", "epoch": 1',
        "json object": json.dumps({"format": "siamkit-checkpoint"}).encode(),
        "pickle payload": payload,
        "pickle payload protocol 5": pickle.dumps(_Payload(marker), protocol=5),
        "payload in archive": _replace_member(good, "data.pkl", payload),
        "legacy format": _saved(state, _use_new_zipfile_serialization=False),
        "compressed bomb": _replace_member(good, "data.pkl", bytes(64 * 2**20), packed=True),
        "not a dict": _saved([1, 2, 3]),
        **{name: _saved(value) for name, value in broken.items()},
    }


def test_corrupt_checkpoint_is_a_model_file_error_and_runs_nothing(
    run_dir: Path, parts: siamkit.data.ClassSplit, tmp_path: Path
) -> None:
    checkpoint = run_dir / "checkpoint.pt"
    good = checkpoint.read_bytes()
    state = load_checkpoint(checkpoint)
    marker = tmp_path / "payload-ran"
    proof = tmp_path / "payload-runs-under-plain-pickle"
    pickle.loads(pickle.dumps(_Payload(proof)))  # the payload is real
    assert proof.is_dir()

    escaped = []
    for name, data in _corrupt_checkpoints(good, state, marker).items():
        checkpoint.write_bytes(data)
        try:
            load_checkpoint(checkpoint)
            escaped.append(f"{name}: loaded")
        except siamkit.ModelFileError as err:
            if "checkpoint" not in str(err):
                escaped.append(f"{name}: unclear message {err}")
        except Exception as err:
            escaped.append(f"{name}: {type(err).__name__}: {str(err)[:80]}")
    assert not escaped, escaped
    assert not marker.exists()

    checkpoint.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(siamkit.ModelFileError, match="delete it"):
        encoder = siamkit.create_encoder("compact", **SMALL)
        Trainer(encoder, small_config()).fit(parts.train, None, run_dir, resume=True)
    assert not marker.exists()
    with pytest.raises(siamkit.ModelFileError):
        load_checkpoint(tmp_path)  # a folder, not a file


# -- resume with another encoder --------------------------------------------------------
def _as_version_1(checkpoint: Path) -> None:
    """Rewrite ``checkpoint`` as siamkit wrote it before it recorded the encoder."""
    state = load_checkpoint(checkpoint)
    state.pop("encoder", None)
    state.pop("runtime", None)
    state["format_version"] = 1
    checkpoint.write_bytes(_saved(state))


def test_resume_with_another_encoder_or_arguments_is_refused(
    run_dir: Path, parts: siamkit.data.ClassSplit
) -> None:
    checkpoint = run_dir / "checkpoint.pt"
    variants = [
        ("compact", {**SMALL, "embedding_dim": 8}, "embedding_dim=16 in the checkpoint, 8 now"),
        ("compact", {**SMALL, "dropout": 0.3}, "dropout=0.0 in the checkpoint, 0.3 now"),
        ("compact", {**SMALL, "whitening": False}, "whitening"),
        ("compact", {**SMALL, "metric": "cosine"}, "metric"),
        ("tutorial", {}, "'compact' in the checkpoint, 'tutorial' now"),
    ]
    escaped = []

    def refused(name: str, kwargs: dict[str, Any], says: str) -> None:
        before = checkpoint.read_bytes()
        encoder = siamkit.create_encoder(name, **kwargs)
        try:
            Trainer(encoder, small_config()).fit(parts.train, None, run_dir, resume=True)
            escaped.append(f"{name} {kwargs}: resumed")
        except siamkit.TrainingError as err:
            if says not in str(err) or "--encoder-arg" not in str(err):
                escaped.append(f"{name} {kwargs}: unclear message {err}")
        except Exception as err:
            escaped.append(f"{name} {kwargs}: {type(err).__name__}: {str(err)[:80]}")
        if checkpoint.read_bytes() != before:
            escaped.append(f"{name} {kwargs}: the checkpoint was changed")

    for name, kwargs, says in variants:
        refused(name, kwargs, says)
    # A checkpoint from before the encoder was recorded: its weights' shapes are compared.
    _as_version_1(checkpoint)
    refused("compact", {**SMALL, "embedding_dim": 8}, "shape (16, 16) in the checkpoint, (8, 16)")
    assert not escaped, escaped

    # The same encoder and arguments still resume, on any thread count.
    torch.manual_seed(5)
    encoder = siamkit.create_encoder("compact", **SMALL)
    result = Trainer(encoder, small_config(epochs=1, num_threads=1)).fit(
        parts.train, None, run_dir, resume=True
    )
    assert [record["epoch"] for record in result.history] == [1]
