"""Hostile and careless input to saved files and the CLI (issue 9, sections 1-3).

Each test here failed on the code before the hardening: a file outside the
folder deleted, a hostile index crashing the process, an error escaping
untyped. Saved indexes are edited as a deliberate attacker would, with every
checksum made to match, so what is tested is the check behind the checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import siamkit
from siamkit.cli.main import main
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss import files as storage
from siamkit.index.stores.faiss.manifest import data_file_name, with_checksum

MANIFEST = storage.MANIFEST


# -- helpers -------------------------------------------------------------------------
def _small_model(folder: Path) -> Path:
    return siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2).save(folder)


def _saved_index(folder: Path, kind: str = "flat", metric: str = "cosine", n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    index = FaceIndex(metric=metric, dim=8, index=kind)
    index.add(rng.normal(size=(n, 8)).astype("float32"), labels=np.arange(n) % 5)
    index.calibrate(target_far=0.1)
    index.calibrate(target_fpir=0.1)
    return index.save(folder)


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(with_checksum(manifest)))


def _replace_data_file(folder: Path, kind: str, data: bytes) -> None:
    """Put ``data`` in place of the index's ``kind`` file, every checksum made to match."""
    manifest = _manifest(folder)
    (folder / manifest["files"][kind]["name"]).unlink()
    sha = hashlib.sha256(data).hexdigest()
    name = data_file_name(kind, sha)
    (folder / name).write_bytes(data)
    manifest["files"][kind] = {"name": name, "sha256": sha, "bytes": len(data)}
    _write_manifest(folder, manifest)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


# -- 1. no file outside its folder ----------------------------------------------------
@pytest.mark.parametrize("name", ["ABSOLUTE", "../victim.txt", "sub/encoder.pt", "", 7, None])
def test_model_save_never_deletes_what_an_edited_manifest_names(
    tmp_path: Path, name: object
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    model = _small_model(tmp_path / "model")
    manifest = json.loads((model / "encoder.json").read_text())
    manifest["weights"] = str(victim) if name == "ABSOLUTE" else name
    (model / "encoder.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in model.iterdir())
    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
    with pytest.raises(siamkit.ModelFileError, match="not a file siamkit writes"):
        encoder.save(model)
    with pytest.raises(siamkit.ModelFileError, match="not a file siamkit writes"):
        siamkit.load_encoder(model)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in model.iterdir()) == before  # nothing written either


def test_index_manifest_names_only_plain_files(tmp_path: Path) -> None:
    victim = tmp_path / "victim.npy"
    np.save(victim, np.zeros((40, 8), dtype="float32"))
    folder = _saved_index(tmp_path / "index")
    manifest = _manifest(folder)
    manifest["files"]["vectors"]["name"] = "../victim.npy"
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match="invalid vectors file entry"):
        FaceIndex.load(folder)
    with pytest.raises(siamkit.IndexFileError):
        FaceIndex(metric="cosine", dim=8).save(folder)  # refuses to save over it, too
    assert victim.exists()


@pytest.mark.parametrize("content", ["index", "unrelated"])
def test_train_refuses_an_out_folder_holding_something_else(
    synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    out = tmp_path / "out"
    if content == "index":
        _saved_index(out)
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--quiet"]
    code, err = _cli(argv, capsys)
    assert code == 2 and "not from a training run" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# -- 2. untrusted index files ---------------------------------------------------------
_BAD_FIELDS: list[tuple[str, object]] = [
    ("format_version", 0),
    ("format_version", "2"),
    ("siamkit_version", 3),
    ("dim", 0),
    ("dim", True),
    ("dim", 10**9),
    ("metric", "manhattan"),
    ("normalised", False),  # a cosine index says it is not normalised
    ("index", ""),
    ("index", "NoSuchFaissIndex"),
    ("params", []),
    ("params", {"trained_rows": 40, "ef_search": None}),
    ("params", {"trained_rows": -1, "ef_search": None, "nprobe": None}),
    ("params", {"trained_rows": 40, "ef_search": 0, "nprobe": None}),
    ("rows", -1),
    ("rows", 41),
    ("count", 39),
    ("count", "40"),
    ("threshold", "abc"),
    ("threshold", -0.5),
    ("calibration", "x"),
    ("calibration", {"threshold": 0.1}),
    ("identify_threshold", "abc"),
    ("identify_threshold", -0.5),
    ("identify_threshold", 1.9),  # disagrees with its calibration
    ("fpir_calibration", "x"),
    ("fpir_calibration", {"threshold": 0.1}),
    ("encoder", "x"),
    ("encoder", {"fingerprint": "ab", "class": "X", "embedding_dim": 8}),
    ("encoder", {"fingerprint": "a" * 64, "class": "X", "embedding_dim": 9}),
    ("extra", []),
    ("files", {"vectors": {}}),
    ("thresold", 0.5),  # a misspelt, unknown key
]


@pytest.mark.parametrize(("key", "value"), _BAD_FIELDS, ids=[f"{k}={v!r}" for k, v in _BAD_FIELDS])
def test_every_manifest_field_is_checked(tmp_path: Path, key: str, value: object) -> None:
    folder = _saved_index(tmp_path / "index")
    manifest = _manifest(folder)
    manifest[key] = value
    _write_manifest(folder, manifest)
    refused = r"damaged or (was|were) edited|inconsistent|version|manifest says"
    with pytest.raises(siamkit.IndexFileError, match=refused):
        FaceIndex.load(folder)


@pytest.mark.parametrize("key", ["dim", "metric", "files", "calibration", "encoder", "params"])
def test_missing_manifest_fields_are_refused(tmp_path: Path, key: str) -> None:
    folder = _saved_index(tmp_path / "index")
    manifest = _manifest(folder)
    del manifest[key]
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match=f"missing field '{key}'"):
        FaceIndex.load(folder)


def test_manifest_fuzz_never_loads_garbage_nor_escapes_untyped(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index", kind="hnsw")
    original = _manifest(folder)
    rng = np.random.default_rng(0)
    values = [None, True, -1, 0, 2**63, 1.5, float("nan"), "", "x", [], {}, [1], {"a": 1}]
    keys = [key for key in original if key != "manifest_sha256"]
    for _ in range(60):
        manifest = json.loads(json.dumps(original))
        key = keys[rng.integers(len(keys))]
        manifest[key] = values[rng.integers(len(values))]
        if manifest == original:
            continue
        if key in ("calibration", "fpir_calibration") and manifest[key] is None:
            continue  # a valid manifest: a threshold set by hand has no calibration report
        (folder / MANIFEST).write_text(json.dumps(with_checksum(manifest)))
        with pytest.raises(siamkit.IndexFileError):
            FaceIndex.load(folder)


def test_an_edit_without_the_checksum_is_refused(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index")
    manifest = _manifest(folder)
    manifest["threshold"] = 1.9  # accept everybody
    manifest["calibration"] = None
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(siamkit.IndexFileError, match="checksum does not match"):
        FaceIndex.load(folder)


def test_flat_index_edited_from_euclidean_to_cosine_is_refused(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index", metric="euclidean")
    manifest = _manifest(folder)
    manifest.update(metric="cosine", normalised=True, threshold=None, calibration=None)
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match="not unit vectors"):
        FaceIndex.load(folder)


def test_encoder_block_must_have_its_shape(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index")
    manifest = _manifest(folder)
    manifest["encoder"] = "x"
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match="encoder"):
        FaceIndex.load(folder).info()


def test_non_finite_vectors_are_refused(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index", metric="euclidean")
    vectors = np.load(folder / _manifest(folder)["files"]["vectors"]["name"])
    vectors[3, 2] = np.nan
    buffer = _npy_bytes(vectors)
    _replace_data_file(folder, "vectors", buffer)
    with pytest.raises(siamkit.IndexFileError, match="NaN or infinity"):
        FaceIndex.load(folder)


def test_a_vectors_header_claiming_more_rows_is_refused_before_reading(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index", metric="euclidean")
    manifest = _manifest(folder)
    manifest.update(rows=10**12, count=10**12)
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError):
        FaceIndex.load(folder)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _faiss_bytes(folder: Path) -> bytes:
    return (folder / _manifest(folder)["files"]["faiss"]["name"]).read_bytes()


# The first vector of an HNSW body (assign_probas, float64) starts right after
# the index header: fourcc, d, ntotal, two unused int64, is_trained, metric.
_HNSW_FIRST_VECTOR = struct.calcsize("<4siqqqBi")


@pytest.mark.parametrize(
    "elements",
    # 4 TiB: past FAISS's own limit (1 TiB in 1.15), or bad_alloc in older FAISS;
    # 128 GiB: under that limit, an uncaught MemoryError before; 2 GiB: allocated
    # and zero-filled before, now refused by the probe's memory cap.
    [2**39, 2**34, 2**28],
)
def test_a_hostile_faiss_body_neither_crashes_nor_hangs(tmp_path: Path, elements: int) -> None:
    folder = _saved_index(tmp_path / "index", kind="hnsw", metric="euclidean")
    data = bytearray(_faiss_bytes(folder))
    assert struct.unpack_from("<Q", data, _HNSW_FIRST_VECTOR)[0] < 100  # the layout we expect
    struct.pack_into("<Q", data, _HNSW_FIRST_VECTOR, elements)
    _replace_data_file(folder, "faiss", bytes(data))
    started = time.perf_counter()
    with pytest.raises(siamkit.IndexFileError, match="damaged or hostile"):
        FaceIndex.load(folder)
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (0, "4s", b"IwFl", "kind"),
        (4, "<i", 9, "dimension 9"),
        (8, "<q", 10**15, "vectors, expected 40"),
        (33, "<i", 0, "FAISS metric 0"),
    ],
)
def test_the_faiss_header_is_checked_before_the_body(
    tmp_path: Path, offset: int, fmt: str, value: object, message: str
) -> None:
    folder = _saved_index(tmp_path / "index", kind="hnsw", metric="euclidean")
    data = bytearray(_faiss_bytes(folder))
    struct.pack_into(fmt, data, offset, value)
    _replace_data_file(folder, "faiss", bytes(data))
    with pytest.raises(siamkit.IndexFileError, match=message):
        FaceIndex.load(folder)


def test_a_slow_faiss_read_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siamkit.index.stores.faiss import reading as _faiss_file

    folder = _saved_index(tmp_path / "index", kind="hnsw")
    monkeypatch.setattr(_faiss_file, "_PROBE", "import time; time.sleep(60)")
    monkeypatch.setattr(_faiss_file, "PROBE_SECONDS", 1.0)
    started = time.perf_counter()
    with pytest.raises(siamkit.IndexFileError, match="took more than"):
        FaceIndex.load(folder)
    assert time.perf_counter() - started < 10


def test_a_missing_faiss_file_is_not_rebuilt_silently(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index", kind="hnsw")
    manifest = _manifest(folder)
    del manifest["files"]["faiss"]
    manifest["params"]["trained_rows"] = 0
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match="FAISS file"):
        FaceIndex.load(folder)


def test_a_file_deleted_between_checksum_and_read_does_not_fail_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a save in another process does at the worst moment: its garbage
    # collection deletes the records file after this load checked it.
    folder = _saved_index(tmp_path / "index")
    original = storage._read_records

    def deleted_meanwhile(handle: Any, manifest: dict[str, Any], path: Path) -> dict[str, Any]:
        path.unlink(missing_ok=True)
        return original(handle, manifest, path)

    monkeypatch.setattr(storage, "_read_records", deleted_meanwhile)
    assert len(FaceIndex.load(folder)) == 40


def test_loads_racing_saves_in_another_process_never_fail(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    folder = _saved_index(tmp_path / "index", n=40)
    writer = textwrap.dedent(f"""
        import time, numpy as np
        from siamkit.index import FaceIndex
        index = FaceIndex.load({str(folder)!r})
        end = time.monotonic() + 4
        while time.monotonic() < end:
            index.add(np.random.default_rng().normal(size=(1, 8)).astype("float32"), labels=[0])
            index.save({str(folder)!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", writer])
    loads = 0
    try:
        while process.poll() is None:
            assert len(FaceIndex.load(folder)) >= 40
            loads += 1
    finally:
        process.wait(timeout=30)
    assert process.returncode == 0 and loads > 10


def test_leftovers_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    folder = _saved_index(tmp_path / "index")
    leftovers = [folder / ".face_index-abc.tmp", folder / f".{MANIFEST}.xyz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half written")
    FaceIndex.load(folder)
    assert not any(path.exists() for path in leftovers)
    leftovers[0].write_bytes(b"half written")
    FaceIndex.load(folder).save(folder)
    assert not leftovers[0].exists()

    model = _small_model(tmp_path / "model")
    stale = [model / ".encoder-weights.pt", model / "..encoder-weights.pt.abc.tmp",
             model / "encoder-0123456789abcdef.pt"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"half written")
    siamkit.load_encoder(model).save(model)
    assert not any(path.exists() for path in stale)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        index_folder = _saved_index(tmp_path / "index")
        model = _small_model(tmp_path / "model")
    finally:
        os.umask(previous)
    files = [p for p in [*index_folder.iterdir(), *model.iterdir()] if not p.name.startswith(".")]
    assert len(files) >= 5
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


# -- 3. every error typed --------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", -0.5, float("nan"), float("inf"), True, [0.5]])
def test_bad_thresholds_are_refused(value: object) -> None:
    index = FaceIndex(metric="cosine", dim=2)
    with pytest.raises(siamkit.ConfigError, match="finite, non-negative"):
        index.threshold = value
    index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
    with pytest.raises(siamkit.ConfigError, match="finite, non-negative"):
        index.identify(np.array([1, 0], dtype="float32"), threshold=value)


def test_unknown_encoder_argument_is_one_line(
    synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "m"), "--quiet",
            "--encoder-arg", "embeding_dim=16"]  # fmt: skip
    code, err = _cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "embeding_dim" in err and "embedding_dim" in err  # the typo and what it accepts


def test_corrupt_split_file_on_resume_is_one_line(
    synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "split.json").write_text("{not json")
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--quiet", "--resume"]
    code, err = _cli(argv, capsys)
    assert code == 2 and "split.json" in err and len(err.strip().splitlines()) == 1


def test_deeply_nested_training_files_are_one_line_not_a_recursion_error(
    synthetic_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.model_folder.records import read_training_record

    out = tmp_path / "m"
    out.mkdir()
    (out / "split.json").write_text("[" * 100_000)
    argv = ["train", "--data", str(synthetic_faces), "--out", str(out), "--quiet", "--resume"]
    code, err = _cli(argv, capsys)
    assert code == 2 and "split.json" in err and len(err.strip().splitlines()) == 1
    (out / "encoder.json").write_text("[" * 100_000)
    with pytest.raises(siamkit.ModelFileError, match="nested deeper"):
        read_training_record(out)
    # A deep --encoder-arg value is taken as the text it is, then refused as a bad value.
    argv = ["train", "--data", str(synthetic_faces), "--out", str(tmp_path / "n"), "--quiet",
            "--encoder-arg", "embedding_dim=" + "[" * 100_000]  # fmt: skip
    code, err = _cli(argv, capsys)
    assert code == 2 and "embedding_dim" in err and len(err.strip().splitlines()) == 1


def test_an_unexpected_failure_is_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from siamkit.cli import index as index_cli

    def broken(args: Any) -> int:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(index_cli, "run_info", broken)
    monkeypatch.delenv("SIAMKIT_DEBUG", raising=False)
    code, err = _cli(["index", "info", "--index", str(tmp_path)], capsys)
    assert code == 1 and err.count("\n") == 1 and "simulated bug" in err and "report" in err


def test_16_bit_pictures_given_directly_are_scaled_not_clipped() -> None:
    from PIL import Image

    encoder = siamkit.create_encoder("compact")
    wide = np.linspace(0, 65535, 56 * 46).reshape(56, 46).astype(np.uint16)
    narrow = Image.fromarray(np.round(wide / 257).astype(np.uint8))
    expected = encoder.preprocess(narrow)
    for item in (wide, Image.fromarray(wide)):
        got = encoder.preprocess(item)
        assert float(got.min()) == -1.0 and float(got.max()) == 1.0  # full range, not white
        assert float((got - expected).abs().max()) == 0.0
