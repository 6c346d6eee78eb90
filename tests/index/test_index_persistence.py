"""FaceIndex.save / load: round trips, crash safety under SIGKILL, refusing bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

import siamkit
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss.files import MANIFEST
from siamkit.index.stores.faiss.manifest import data_file_name, with_checksum

faiss.omp_set_num_threads(2)


def clustered(people: int, per_person: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    labels = np.repeat(np.arange(people), per_person)
    vectors = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return vectors.astype(np.float32), [f"p{i}" for i in labels]


def answers(index: FaceIndex, queries: np.ndarray, k: int = 5) -> list:
    return [
        [(m.id, m.label, m.distance, m.metadata) for m in row] for row in index.search(queries, k)
    ]


def data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".json", ".faiss"))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[FaceIndex, Path]:
    vectors, labels = clustered(20, 5, 8)
    index = FaceIndex(metric="cosine", index="hnsw", dim=8)
    index.add(vectors, labels=labels, metadata=[{"n": i} for i in range(100)])
    return index, index.save(tmp_path / "index")


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "IVF8,Flat"])
def test_save_load_round_trip_gives_identical_answers(kind: str, tmp_path: Path) -> None:
    vectors, labels = clustered(300, 8, 16)  # 2,400: enough for "ivf" to train
    index = FaceIndex(metric="euclidean", index=kind, dim=16)
    ids = [f"s{i}" if i % 2 else i for i in range(len(vectors))]  # str and int ids
    index.add(vectors, labels=labels, ids=ids, metadata=[{"row": i} for i in range(len(ids))])
    index.remove(ids[:100])  # pending removals are saved too
    index.calibrate(target_far=0.01, max_pairs=20_000)
    if kind == "hnsw":
        index.ef_search = 77
    if "IVF" in kind.upper():
        index.nprobe = 5
    index.extra["note"] = "hello"
    folder = index.save(tmp_path / "saved")
    loaded = FaceIndex.load(folder)
    queries = vectors[::37] + 0.05
    assert answers(loaded, queries) == answers(index, queries)
    assert loaded.info() == index.info()
    assert loaded.calibration == index.calibration and loaded.threshold == index.threshold
    assert loaded.ids() == index.ids() and 100 in loaded and "100" not in loaded and 0 not in loaded
    assert loaded.add(vectors[:1], labels="new") == index.add(vectors[:1], labels="new")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["metric"] == "euclidean" and manifest["normalised"] is False
    assert manifest["faiss_version"] == faiss.__version__
    assert manifest["siamkit_version"] == siamkit.__version__
    assert {"vectors", "records"} <= set(manifest["files"])
    trained = index.info()["trained"]
    assert ("faiss" in manifest["files"]) == (kind != "flat" and trained)  # flat: rebuilt
    for entry in manifest["files"].values():
        assert (
            len(entry["sha256"]) == 64 and (folder / entry["name"]).stat().st_size == entry["bytes"]
        )


def test_files_are_json_and_npy_never_pickle(saved: tuple[FaceIndex, Path]) -> None:
    _, folder = saved
    for path in data_files(folder):
        if path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype == np.float32
        elif path.suffix == ".json":
            json.loads(path.read_text())
        assert not path.read_bytes().startswith(b"\x80")  # a pickle's first byte


def test_saving_again_replaces_the_files_and_leaves_no_stray_ones(
    saved: tuple[FaceIndex, Path],
) -> None:
    index, folder = saved
    before = data_files(folder)
    index.add(np.ones((1, 8), dtype=np.float32), labels="extra")
    index.save(folder)
    after = data_files(folder)
    assert len(after) == len(before) == 4  # manifest, vectors, records, faiss
    assert after != before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(FaceIndex.load(folder)) == 101


def test_load_with_the_encoder_it_was_built_with(synthetic_faces: Path, tmp_path: Path) -> None:
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    model = encoder.save(tmp_path / "model")
    index = FaceIndex(encoder)
    index.add_folder(synthetic_faces)
    folder = index.save(tmp_path / "index")
    loaded = FaceIndex.load(folder, encoder=siamkit.load_encoder(model))
    image = synthetic_faces / "person2" / "1.png"
    assert answers(loaded, [image]) == answers(index, [image])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["encoder"]["fingerprint"] == encoder.fingerprint()


# -- refusing bad files ------------------------------------------------------------------
def _file(folder: Path, stem: str) -> Path:
    return next(p for p in folder.iterdir() if p.name.startswith(f"{stem}-"))


@pytest.mark.parametrize("stem", ["vectors", "records", "faiss"])
def test_corrupted_file_is_refused(saved: tuple[FaceIndex, Path], stem: str) -> None:
    _, folder = saved
    path = _file(folder, stem)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(siamkit.IndexFileError, match="checksum"):
        FaceIndex.load(folder)


@pytest.mark.parametrize("stem", ["vectors", "records", "faiss"])
def test_truncated_file_is_refused(saved: tuple[FaceIndex, Path], stem: str) -> None:
    _, folder = saved
    path = _file(folder, stem)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(siamkit.IndexFileError, match="truncated"):
        FaceIndex.load(folder)


def test_missing_file_and_missing_folder_are_refused(
    saved: tuple[FaceIndex, Path], tmp_path: Path
) -> None:
    _, folder = saved
    _file(folder, "records").unlink()
    with pytest.raises(siamkit.IndexFileError, match="missing"):
        FaceIndex.load(folder)
    with pytest.raises(siamkit.IndexFileError, match="does not exist"):
        FaceIndex.load(tmp_path / "nowhere")
    with pytest.raises(siamkit.IndexFileError, match=f"{MANIFEST} is missing"):
        FaceIndex.load(tmp_path)


def _edit_manifest(folder: Path, **changes: object) -> None:
    # The checksum is made to match, as a deliberate editor would: what is
    # tested here is the check of each field (the checksum has its own tests).
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(with_checksum(manifest)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "newer"),
        ({"format": "something-else"}, "not a siamkit face index"),
        ({"dim": "eight"}, "invalid dim"),
        ({"metric": "manhattan"}, "invalid metric"),
        ({"files": {"vectors": {"name": "../../etc/passwd"}, "records": {}}}, "invalid vectors"),
        ({"rows": 7}, "count|trained_rows|manifest says"),
    ],
)
def test_bad_manifest_is_refused(
    saved: tuple[FaceIndex, Path], changes: dict, message: str
) -> None:
    _, folder = saved
    _edit_manifest(folder, **changes)
    with pytest.raises(siamkit.IndexFileError, match=message):
        FaceIndex.load(folder)


def test_unreadable_manifest_is_refused(saved: tuple[FaceIndex, Path]) -> None:
    _, folder = saved
    (folder / MANIFEST).write_text('{"format": "siamkit-face-ind')
    with pytest.raises(siamkit.IndexFileError, match="corrupted"):
        FaceIndex.load(folder)


def test_consistent_checksums_over_inconsistent_records_are_refused(
    saved: tuple[FaceIndex, Path],
) -> None:
    _, folder = saved
    manifest = json.loads((folder / MANIFEST).read_text())
    records_path = folder / manifest["files"]["records"]["name"]
    records = json.loads(records_path.read_text())
    records["ids"][1] = records["ids"][0]  # a repeated id, checksums updated to match
    data = json.dumps(records).encode()
    records_path.unlink()
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    (folder / data_file_name("records", sha)).write_bytes(data)
    manifest["files"]["records"] = {
        "name": data_file_name("records", sha),
        "sha256": sha,
        "bytes": len(data),
    }
    (folder / MANIFEST).write_text(json.dumps(with_checksum(manifest)))
    with pytest.raises(siamkit.IndexFileError, match="id is repeated"):
        FaceIndex.load(folder)


def test_another_encoder_is_refused(tmp_path: Path) -> None:
    encoder = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=4, metric="cosine")
    index = FaceIndex(encoder)
    index.add(np.eye(4, dtype=np.float32), labels=list("abcd"))
    folder = index.save(tmp_path / "index")
    retrained = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=4, metric="cosine")
    with pytest.raises(siamkit.EncoderMismatchError, match="fingerprint"):
        FaceIndex.load(folder, encoder=retrained)
    wider = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=5, metric="cosine")
    with pytest.raises(siamkit.EncoderMismatchError, match="4-d"):
        FaceIndex.load(folder, encoder=wider)
    euclidean = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=4)
    with pytest.raises(siamkit.GeometryError, match="cosine"):
        FaceIndex.load(folder, encoder=euclidean)
    assert len(FaceIndex.load(folder, encoder=encoder)) == 4


def test_saving_into_a_folder_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    index = FaceIndex(metric="cosine", dim=2)
    index.add(np.eye(2, dtype=np.float32), labels=["a", "b"])
    with pytest.raises(siamkit.IndexFileError, match="non-empty"):
        index.save(tmp_path)
    with pytest.raises(siamkit.EmptyIndexError):
        FaceIndex(metric="cosine").save(tmp_path / "empty")


# -- crash safety ------------------------------------------------------------------------
# Runs in a fresh interpreter: builds an index, saves version A, then forks a child per
# file-system step of a save of version B that SIGKILLs itself right before that step
# (and one right after the first chunk of each data file). Then children saving A and B
# in a loop are SIGKILLed from outside at several moments.
DRIVER = textwrap.dedent(
    """
    import json, os, shutil, signal, sys, time
    import numpy as np
    from siamkit.index import FaceIndex
    from siamkit.index.stores.faiss import files as storage

    root = sys.argv[1]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(120, 8)).astype("float32")
    index = FaceIndex(metric="cosine", index="hnsw", dim=8)
    index.add(vectors[:100], labels=[i % 10 for i in range(100)])
    base = os.path.join(root, "base")
    index.save(base)
    index.add(vectors[100:], labels="new")  # version B: 120 items
    index.remove([0, 1])
    index.threshold = 0.5

    events = []
    kill_at = [None]

    def step(name):
        events.append(name)
        if len(events) == kill_at[0]:
            os.kill(os.getpid(), signal.SIGKILL)

    def patch():
        for name in ("replace", "fsync", "unlink", "rename"):
            real = getattr(os, name)
            def wrapper(*args, _real=real, _name=name, **kwargs):
                step(_name)
                return _real(*args, **kwargs)
            setattr(os, name, wrapper)
        real_write = storage._HashingWriter.write
        def write(self, data):
            if self.size == 0:
                step("write")
            return real_write(self, data)
        storage._HashingWriter.write = write

    def run_child(target, at):
        pid = os.fork()
        if pid == 0:
            kill_at[0] = at
            patch()
            index.save(target)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    # Dry run: how many steps does a save take?
    dry = os.path.join(root, "dry")
    shutil.copytree(base, dry)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        patch()
        index.save(dry)
        os.write(write, json.dumps(events).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    steps = json.loads(os.read(read, 1 << 20))
    report = {"steps": steps, "points": [], "random": []}
    for at in range(1, len(steps) + 1):
        target = os.path.join(root, f"kill{at:03d}")
        shutil.copytree(base, target)
        killed = run_child(target, at)
        report["points"].append({"at": at, "step": steps[at - 1], "dir": target, "killed": killed})

    # Kills from outside at arbitrary moments of a save loop.
    old = FaceIndex.load(base)
    for round_ in range(8):
        target = os.path.join(root, f"random{round_}")
        shutil.copytree(base, target)
        pid = os.fork()
        if pid == 0:
            while True:
                index.save(target)
                old.save(target)
        time.sleep(0.02 + 0.03 * round_)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        report["random"].append(target)
    print(json.dumps(report))
    """
)


def test_a_save_killed_at_any_moment_leaves_a_loadable_index(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"write", "fsync", "replace", "unlink"} <= set(report["steps"])
    versions = []
    for point in report["points"]:
        assert point["killed"], point
        loaded = FaceIndex.load(point["dir"])  # never an error
        versions.append(len(loaded))
        if len(loaded) == 118:
            assert loaded.threshold == 0.5 and 0 not in loaded
        else:
            assert len(loaded) == 100 and loaded.threshold is None and 0 in loaded
    # Old until the manifest switch, new from then on; both sides are exercised.
    assert set(versions) == {100, 118}
    switch = versions.index(118)
    assert versions == [100] * switch + [118] * (len(versions) - switch)
    for folder in report["random"]:
        loaded = FaceIndex.load(folder)
        assert len(loaded) in (100, 118)
        loaded.save(folder)  # the next save clears what the killed one left
        assert not [p for p in Path(folder).iterdir() if p.name.endswith(".tmp")]
        assert len(data_files(Path(folder))) == 4


def test_upserted_then_saved_index_loads_with_the_new_item(tmp_path) -> None:
    # A replaced item leaves a removed row with the same id until the next rebuild.
    rng = np.random.default_rng(0)
    index = FaceIndex(metric="cosine", dim=4)
    index.add(rng.normal(size=(30, 4)).astype("float32"), labels=["a"] * 30)
    index.add(rng.normal(size=(1, 4)).astype("float32"), labels=["old"], ids=["x"])
    newer = rng.normal(size=(1, 4)).astype("float32")
    index.upsert(newer, labels=["new"], ids=["x"])
    index.save(tmp_path / "idx")
    loaded = FaceIndex.load(tmp_path / "idx")
    assert len(loaded) == 31 and loaded.get("x").label == "new"
    match = loaded.search(newer[0], k=1)[0]
    assert match.id == "x" and match.label == "new"
    loaded.remove(["x"])
    assert "x" not in loaded and len(loaded) == 30
