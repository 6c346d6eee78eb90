"""Careless and hostile input to training: devices, checkpoints, resumes (issue 9, section 3).

Each test covers one class of input and checks every variant of it, reporting
all that escape at once; each failed on siamkit before the fix.
"""

from __future__ import annotations

import errno
import hashlib
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


# -- a full disk while a run saves (issue 18, 2b) ------------------------------------------
class _FullDisk:
    """A file whose writes stop with ENOSPC after ``room`` bytes, as on a disk that filled up."""

    def __init__(self, handle: Any, room: int = 64) -> None:
        self.handle, self.room, self.written = handle, room, 0

    def write(self, data: Any) -> int:
        take = max(0, min(len(data), self.room - self.written))
        self.handle.write(data[:take])
        self.written += take
        if take < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return take

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``full_disk(folder, name, after=0)``: writes of ``folder/name`` fail midway from the
    ``after + 1``-th on (found by the inode of siamkit's temporary file); ``full_disk(None)``
    ends it."""
    real = os.fdopen
    rule: dict[str, Any] = {}

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real(fd, *args, **kwargs)
        if rule.get("folder") is not None:
            inode = os.fstat(fd).st_ino
            temporary = rule["folder"].glob(f".{rule['name']}.*.tmp")
            if any(p.stat().st_ino == inode for p in temporary):
                rule["seen"] += 1
                if rule["seen"] > rule["after"]:
                    return _FullDisk(handle)
        return handle

    def fail(folder: Path | None, name: str = "", after: int = 0) -> None:
        rule.update(folder=folder, name=name, after=after, seen=0)

    monkeypatch.setattr(os, "fdopen", fdopen)
    return fail


class _Snapshot:
    """Keeps the bytes of every file of the run folder as the first epoch left them."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.files = folder, {}

    def on_epoch_end(self, trainer: Trainer, record: Any) -> None:
        if record.epoch == 1:
            self.files = {p.name: p.read_bytes() for p in self.folder.iterdir()}


def test_a_full_disk_is_a_write_error_that_keeps_the_last_save(
    parts: siamkit.data.ClassSplit, tmp_path: Path, full_disk: Callable[..., None]
) -> None:
    # Each writer of a run, failing on its second write (the plot is written once).
    writers = {"checkpoint.pt": 1, "history.json": 1, "encoder.json": 1, "loss_plot.png": 0}
    writers[".encoder-weights.pt"] = 1  # the model's weights, staged before their rename
    escaped = []
    for name, after in writers.items():
        run = tmp_path / name.strip(".")
        snapshot = _Snapshot(run)
        full_disk(run, name, after)
        torch.manual_seed(0)
        encoder = siamkit.create_encoder("compact", **SMALL)
        trainer = Trainer(encoder, small_config(epochs=2), callbacks=[snapshot])
        try:
            trainer.fit(parts.train, None, run)
            escaped.append(f"{name}: no error")
        except siamkit.WriteError as err:
            says = [name, "No space left on device", "left in place"]
            if err.errno != errno.ENOSPC or not all(word in str(err) for word in says):
                escaped.append(f"{name}: unclear message {err}")
        except Exception as err:
            escaped.append(f"{name}: {type(err).__name__}: {str(err)[:100]}")
        full_disk(None)
        target = run / name
        if (target.read_bytes() if target.exists() else None) != snapshot.files.get(name):
            escaped.append(f"{name}: not left as the first epoch wrote it")
        if [p.name for p in run.iterdir() if p.name.endswith(".tmp")]:
            escaped.append(f"{name}: a temporary file was left behind")
        saved = load_checkpoint(run / "checkpoint.pt")  # the last good one still loads
        if saved["epoch"] != (1 if name != "loss_plot.png" and name != "history.json" else 2):
            escaped.append(f"{name}: the checkpoint holds epoch {saved['epoch']}")
        siamkit.load_encoder(run)
    assert not escaped, escaped


def test_a_failed_rename_of_the_saved_weights_is_a_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = siamkit.create_encoder("compact", **SMALL)
    folder = encoder.save(tmp_path / "model")
    before, saved = {p.name: p.read_bytes() for p in folder.iterdir()}, encoder.fingerprint()
    real = os.replace

    def replace(source: Any, target: Any) -> None:
        if Path(source).name == ".encoder-weights.pt":  # the staged weights, put in place
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    torch.nn.init.zeros_(next(encoder.parameters()))
    with pytest.raises(siamkit.WriteError, match=r"cannot write .*encoder-[0-9a-f]{16}\.pt: No"):
        encoder.save(folder)
    monkeypatch.undo()
    assert siamkit.load_encoder(folder).fingerprint() == saved != encoder.fingerprint()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


def test_train_cli_on_a_full_disk_exits_1_with_one_line(
    synthetic_faces: Path,
    tmp_path: Path,
    full_disk: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def train(out: Path) -> str:
        argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--encoder", "compact"]
        argv += ["--encoder-arg", "channels=[8, 16]", "--encoder-arg", "embedding_dim=16"]
        argv += ["--epochs", "2", "--batch-size", "12", "--m-per-class", "3", "--quiet"]
        assert main([*argv, "--val-fraction", "0", "--no-augment"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error" not in err, err
        return err

    full_disk(tmp_path / "a", "checkpoint.pt", after=1)
    err = train(tmp_path / "a")
    assert err.startswith(f"siamkit: error: cannot write {tmp_path / 'a' / 'checkpoint.pt'}: ")
    assert "No space left on device" in err
    full_disk(None)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["epoch"] == 1

    full_disk(tmp_path / "b", "split.json")
    assert "cannot write " + str(tmp_path / "b" / "split.json") in train(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == []


# -- temporary files of a killed save (issue 18, 2c) ------------------------------------
def test_the_next_save_removes_the_temporary_files_of_a_killed_one(
    parts: siamkit.data.ClassSplit, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    ours = [".checkpoint.pt.k3j_9xq2.tmp", ".history.json.a1b2c3d4.tmp"]
    ours += [".split.json.zzzzzzzz.tmp", ".loss_plot.png.0_0_0_0_.tmp"]
    theirs = [".checkpoint.pt.tmp", ".checkpoint.pt.abc.tmp", ".notes.txt.a1b2c3d4.tmp"]
    # Not a run's names at all: since the model folder's check runs in Trainer.fit too,
    # a folder holding them is refused before anything there is touched.
    foreign = ["checkpoint.pt.a1b2c3d4.tmp", ".history.json.a1b2c3d4.bak"]
    for name in ours + theirs + foreign:
        (run / name).write_bytes(b"half a file")
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", **SMALL)
    with pytest.raises(siamkit.ConfigError, match="not from a training run"):
        Trainer(encoder, small_config()).fit(parts.train, None, run)
    assert sorted(p.name for p in run.iterdir()) == sorted(ours + theirs + foreign)
    for name in foreign:
        (run / name).unlink()
    Trainer(encoder, small_config()).fit(parts.train, None, run)
    left = sorted(p.name for p in run.iterdir() if p.name.startswith(".") or "tmp" in p.name)
    assert left == sorted(theirs)


# -- eval --out (issue 18, 4a) ----------------------------------------------------------
def test_eval_writes_only_into_a_new_empty_or_report_folder(
    run_dir: Path, synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.evaluation import evaluate_encoder, write_report

    model = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    base = ["eval", "--model", str(run_dir), "--data", str(synthetic_faces), "--quiet"]
    assert main([*base, "--out", str(run_dir)]) == 2  # the model folder itself
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not from an evaluation report" in err
    assert "checkpoint.pt" in err and "--out" in err
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    assert main([*base, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file: pass a folder" in err and "Errno" not in err
    assert mine.read_text() == "mine"
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == model

    encoder = siamkit.load_encoder(run_dir)
    with pytest.raises(siamkit.ConfigError, match="not from an evaluation report"):
        evaluate_encoder(encoder, synthetic_faces, out_dir=run_dir)
    out = tmp_path / "report"
    out.mkdir()
    (out / ".evaluation.json.a1b2c3d4.tmp").write_bytes(b"{")  # a killed report's
    result = evaluate_encoder(encoder, synthetic_faces, out_dir=out)
    assert not list(out.glob("*.tmp")) and (out / "evaluation.json").is_file()
    assert write_report(result, out) == out / "report.html"  # an earlier report: replaced
    with pytest.raises(siamkit.ConfigError, match=r"encoder\.json"):
        write_report(result, run_dir)
    (out / "mine.csv").write_text("x")
    with pytest.raises(siamkit.ConfigError, match=r"\(mine.csv\)"):
        evaluate_encoder(encoder, synthetic_faces, out_dir=out)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == model


# -- torch's advice on a refused pickle (issue 18, 4g) ----------------------------------
ADVICE = ("weights_only", "safe_globals", "if you trust", "trusted source")


def test_a_refused_pickle_is_not_met_with_advice_to_run_it(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    checkpoint = run_dir / "checkpoint.pt"
    payload = pickle.dumps(_Payload(marker), protocol=2)
    hostile = {
        "a payload in the archive": _replace_member(checkpoint.read_bytes(), "data.pkl", payload),
        "an object torch refuses": _saved({"x": _Payload(marker)}),
    }
    said = []
    for name, data in hostile.items():
        checkpoint.write_bytes(data)
        with pytest.raises(siamkit.ModelFileError) as caught:
            load_checkpoint(checkpoint)
        said.append((f"checkpoint, {name}", str(caught.value)))
        # A forger rewrites the weights and the manifest to match them.
        manifest = json.loads((run_dir / "encoder.json").read_text())
        (run_dir / manifest["weights"]).unlink()
        digest = hashlib.sha256(data).hexdigest()
        manifest.update(weights=f"encoder-{digest[:16]}.pt", weights_sha256=digest)
        (run_dir / manifest["weights"]).write_bytes(data)
        (run_dir / "encoder.json").write_text(json.dumps(manifest))
        with pytest.raises(siamkit.ModelFileError) as caught:
            siamkit.load_encoder(run_dir)
        said.append((f"weights, {name}", str(caught.value)))
    advised = [(what, text) for what, text in said if any(a in text.lower() for a in ADVICE)]
    assert not advised, advised
    assert all("GLOBAL posix.mkdir" in text or "__main__" in text for _, text in said), said
    assert all("never runs" in text for _, text in said), said
    assert not marker.exists()
