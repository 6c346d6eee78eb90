"""Hostile and careless use of FAISS index folders (issue 18: writers, hostile files, build).

Each test here failed on the code before it: two writers of one folder
silently losing one's additions, deep JSON raising RecursionError, a hostile
IVF file whose list ids are not row numbers loading and then answering
wrongly, and ``index build --out`` embedding a whole gallery before refusing
a folder it could never save into.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

import siamkit
from siamkit.cli.main import main
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss import files as storage
from siamkit.index.stores.faiss.engine import structure_problems
from siamkit.index.stores.faiss.manifest import data_file_name, with_checksum
from siamkit.index.stores.faiss.store import FaissStore

MANIFEST = storage.MANIFEST
DIM = 8


# -- helpers -------------------------------------------------------------------------
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


def _saved(folder: Path, n: int = 10, kind: str = "flat") -> Path:
    index = FaceIndex(metric="euclidean", dim=DIM, index=kind)
    rng = np.random.default_rng(0)
    index.add(rng.normal(size=(n, DIM)).astype("float32"), labels=np.arange(n) % 3)
    return index.save(folder)


def _nested(depth: int) -> dict[str, Any]:
    """A dict with ``depth`` dicts and lists in all, built without recursion."""
    value: Any = 1
    for level in range(depth - 1):
        value = [value] if level % 2 else {"x": value}
    return {"deep": value}


def _one_line(err: str) -> bool:
    return err.startswith("siamkit: error:") and len(err.strip().splitlines()) == 1


@pytest.fixture
def model(tmp_path: Path) -> Path:
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=DIM)
    return encoder.save(tmp_path / "model")


# -- 1. writers of one folder exclude each other ----------------------------------------
# Imports siamkit once, then forks the writers (nothing has started a thread pool
# yet), which all start together: even ones CLI `index add`, odd ones the Python API.
WRITERS = textwrap.dedent(
    """
    import json, os, sys, traceback
    import numpy as np
    from siamkit.cli.main import main
    from siamkit.index import FaceIndex

    folder, images, writers = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    start_read, start_write = os.pipe()
    pids = []
    for k in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(start_write)
                os.read(start_read, 1)  # returns when the parent closes its end: all at once
                if k % 2 == 0:
                    code = main(["index", "add", "--index", folder, *images, "--label", f"p{k}",
                                 "--ids", f"cli{k}-0", f"cli{k}-1", "--quiet"])
                else:
                    vectors = np.random.default_rng(k).normal(size=(2, 8)).astype("float32")
                    with FaceIndex.update(folder, timeout=60) as index:
                        index.add(vectors, labels=f"p{k}", ids=[f"api{k}-0", f"api{k}-1"])
                    code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        pids.append(pid)
    os.close(start_read)
    os.close(start_write)
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]))
    """
)


def _run_bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own process group, all of which is killed past ``timeout``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env=env)  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_concurrent_cli_and_api_writers_keep_every_addition(
    tmp_path: Path, model: Path, make_image_folder: Callable[..., Path]
) -> None:
    gallery = make_image_folder({"ann": 3, "bob": 3})
    images = [str(p) for p in sorted(gallery.glob("ann/*.png"))[:2]]
    index = FaceIndex(siamkit.load_encoder(model))
    index.add_folder(gallery)
    index.extra["model"] = str(model)
    folder = index.save(tmp_path / "index")
    writers = 8
    started = time.monotonic()
    done = _run_bounded([sys.executable, "-c", WRITERS, str(folder), json.dumps(images),
                         str(writers)], timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0] * writers, done.stderr[-3000:]
    loaded = FaceIndex.load(folder)
    added = [f"{'cli' if k % 2 == 0 else 'api'}{k}-{j}" for k in range(writers) for j in (0, 1)]
    ids = loaded.ids()
    assert len(ids) == len(set(ids)) == 6 + 2 * writers  # nothing lost, nothing twice
    assert set(added) <= set(ids)
    assert {loaded.get(f"cli{k}-0").label for k in range(0, writers, 2)} == {"p0", "p2", "p4", "p6"}
    assert time.monotonic() - started < 180


def test_a_save_over_a_later_save_is_refused_not_a_lost_update(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "index")
    first, second = FaceIndex.load(folder), FaceIndex.load(folder)
    first.add(np.ones((1, DIM), dtype="float32"), labels="x", ids="mine")
    first.save(folder)
    first.add(np.ones((1, DIM), dtype="float32"), labels="x", ids="mine too")
    first.save(folder)  # its own save is no conflict
    second.add(np.zeros((1, DIM), dtype="float32"), labels="y", ids="theirs")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(siamkit.IndexFileError, match="saved by another process"):
        second.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert {"mine", "mine too"} <= set(FaceIndex.load(folder).ids())
    second.save(tmp_path / "copy")  # elsewhere is fine
    with FaceIndex.update(folder) as shared:  # the way to change it: reload under the lock
        shared.add(np.zeros((1, DIM), dtype="float32"), labels="y", ids="theirs")
    assert len(FaceIndex.load(folder)) == 13


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """A saved index whose write lock another thread holds (as another process would)."""
    folder = _saved(tmp_path / "index")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with storage.folder_lock(folder):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    try:
        yield folder
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive()


def test_a_writer_waiting_too_long_gets_a_clear_error_and_readers_never_wait(
    held_lock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = held_lock
    started = time.monotonic()
    writing = r"another process \(or thread\) has been writing"
    with (
        pytest.raises(siamkit.LockTimeoutError, match=writing),
        FaceIndex.update(folder, timeout=0.3),
    ):
        pass
    assert 0.3 <= time.monotonic() - started < 5
    argv = ["index", "remove", "--index", str(folder), "0", "--lock-timeout", "0.2"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and "--lock-timeout" in err
    started = time.monotonic()
    assert len(FaceIndex.load(folder)) == 10  # loads and searches take no lock
    assert time.monotonic() - started < 5
    assert main(["index", "remove", "--index", str(folder), "0", "--lock-timeout", "-1"]) == 2
    assert "--lock-timeout must be" in capsys.readouterr().err


def test_the_lock_file_is_the_index_s_own(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "index")
    with FaceIndex.update(folder) as index:
        index.add(np.ones((1, DIM), dtype="float32"), labels="x", ids="new")
    names = sorted(p.name for p in folder.iterdir())
    assert ".face_index.lock" in names and len(names) == 4  # manifest, vectors, records, lock
    assert "new" in FaceIndex.load(folder)  # strict loading accepts it
    FaceIndex.load(folder).save(folder)  # so does the folder check; garbage collection keeps it
    assert (folder / ".face_index.lock").exists()
    aborted = tmp_path / "aborted"  # what a build that failed before its first save leaves
    with storage.folder_lock(aborted, create=True):
        pass
    assert [p.name for p in aborted.iterdir()] == [".face_index.lock"]
    _saved(aborted)
    missing = tmp_path / "missing"
    with pytest.raises(siamkit.IndexFileError, match="does not exist"), FaceIndex.update(missing):
        pass
    assert not (tmp_path / "missing").exists()


# -- 2. JSON nesting is bounded -------------------------------------------------------
def test_a_deeply_nested_manifest_or_records_file_is_a_file_error(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "index")
    (folder / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(siamkit.IndexFileError, match="nested deeper"):
        FaceIndex.load(folder)
    folder = _saved(tmp_path / "records")
    _replace_data_file(folder, "records", ("[" * 100_000 + "]" * 100_000).encode())
    with pytest.raises(siamkit.IndexFileError, match="nested deeper"):
        FaceIndex.load(folder)
    # Metadata deeper than add() takes cannot come back from a file either.
    folder = _saved(tmp_path / "metadata")
    records = json.loads((folder / _manifest(folder)["files"]["records"]["name"]).read_text())
    records["metadata"][0] = _nested(40)
    _replace_data_file(folder, "records", json.dumps(records).encode())
    with pytest.raises(siamkit.IndexFileError, match="nested deeper"):
        FaceIndex.load(folder)


def test_deep_metadata_and_notes_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    index = FaceIndex(metric="euclidean", dim=DIM)
    vector = np.ones((1, DIM), dtype="float32")
    for depth in (5_000, 33):
        with pytest.raises(siamkit.ConfigError, match="deeper than 32"):
            index.add(vector, labels="a", metadata=[_nested(depth)])
    assert len(index) == 0
    assert index.add(vector, labels="a", metadata=[_nested(32)]) == [0]
    store = FaissStore(DIM, "euclidean")  # the store API checks it too
    with pytest.raises(siamkit.ConfigError, match="deeper than 32"):
        store.add(["x"], vector, ["a"], [_nested(5_000)])
    assert store.count() == 0
    folder = index.save(tmp_path / "index")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    index.extra["notes"] = _nested(5_000)
    with pytest.raises(siamkit.ConfigError, match="extra notes nests"):
        index.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    manifest = _manifest(folder)
    manifest["extra"] = _nested(40)  # an edit with the checksum fixed
    _write_manifest(folder, manifest)
    with pytest.raises(siamkit.IndexFileError, match="invalid extra"):
        FaceIndex.load(folder)


def test_a_deep_milvus_record_is_a_file_error() -> None:
    from siamkit.index.stores.milvus import META_PROPERTY, MilvusStore

    class Client:
        def describe_collection(self, collection: str) -> dict[str, Any]:
            return {"properties": {META_PROPERTY: "[" * 100_000 + "]" * 100_000}}

    store = object.__new__(MilvusStore)  # only its record reading is under test
    store.client, store.collection, store.uri = Client(), "faces", "faces.db"
    with pytest.raises(siamkit.IndexFileError, match="corrupted"):
        store.get_meta()


# -- 3. hostile FAISS structures ------------------------------------------------------
@pytest.fixture(scope="module")
def ivf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ivf") / "index"
    index = FaceIndex(metric="euclidean", dim=DIM, index="ivf")
    rng = np.random.default_rng(1)
    index.add(rng.normal(size=(2100, DIM)).astype("float32"), labels=np.arange(2100) % 50)
    assert index.info()["trained"]
    return index.save(folder)


def _faiss_of(folder: Path) -> Any:
    data = (folder / _manifest(folder)["files"]["faiss"]["name"]).read_bytes()
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def _list_ids(index: Any, number: int) -> np.ndarray:
    lists = index.invlists
    return faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number))


def _shuffled_ids(index: Any) -> None:
    _list_ids(index, 0)[:] = 1_000_000


def _repeated_ids(index: Any) -> None:
    ids = _list_ids(index, 0)
    ids[1:] = ids[0]


def _negative_ids(index: Any) -> None:
    _list_ids(index, 1)[0] = -7


def _swapped_ids(index: Any) -> None:  # ids in range, each once, but moved: rows lost
    first, second = _list_ids(index, 0), _list_ids(index, 1)
    first[0] = second[0]


def _more_centres(index: Any) -> None:
    index.quantizer.add(np.zeros((5, DIM), dtype="float32"))


@pytest.mark.parametrize(
    "edit", [_shuffled_ids, _repeated_ids, _negative_ids, _swapped_ids, _more_centres]
)
def test_hostile_ivf_lists_are_refused_on_load(
    ivf_folder: Path, tmp_path: Path, edit: Callable[[Any], None]
) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    for path in ivf_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    index = _faiss_of(folder)  # of its own type already
    edit(index)
    _replace_data_file(folder, "faiss", faiss.serialize_index(index).tobytes())
    with pytest.raises(siamkit.IndexFileError, match="IVF"):
        FaceIndex.load(folder)


def test_a_saved_ivf_index_still_loads_and_answers(ivf_folder: Path) -> None:
    loaded = FaceIndex.load(ivf_folder)
    query = loaded.get(7).embedding
    assert loaded.search(query, k=1)[0].id == 7


def test_hostile_hnsw_graphs_and_id_maps_are_found() -> None:
    # Recent FAISS refuses these HNSW graphs itself; siamkit checks them for older FAISS.
    vectors = np.random.default_rng(2).normal(size=(300, DIM)).astype("float32")

    def hnsw() -> Any:
        index = faiss.IndexHNSWFlat(DIM, 16)
        index.add(vectors)
        return index

    assert structure_problems(hnsw(), 300) == []
    index = hnsw()
    faiss.rev_swig_ptr(index.hnsw.neighbors.data(), index.hnsw.neighbors.size())[5] = 10_000
    assert structure_problems(index, 300) == ["the HNSW graph links to rows outside 0..299"]
    index = hnsw()
    index.hnsw.entry_point = 299 if index.hnsw.entry_point != 299 else 0
    assert "entry point" in structure_problems(index, 300)[0]
    index = hnsw()
    faiss.rev_swig_ptr(index.hnsw.levels.data(), index.hnsw.levels.size())[3] = 40
    assert "levels" in structure_problems(index, 300)[0]
    mapped = faiss.IndexIDMap(faiss.IndexFlatL2(DIM))
    mapped.add_with_ids(vectors, np.arange(300)[::-1].copy())
    assert "not the row numbers" in structure_problems(mapped, 300)[0]
    graph = faiss.index_factory(DIM, "NSG16,Flat")  # its graph's ids cannot be read to check
    graph.add(vectors)
    assert "cannot check" in structure_problems(graph, 300)[0]


def test_a_hostile_id_map_file_is_refused(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "index", n=20, kind="IDMap,Flat")
    assert FaceIndex.load(folder).search(np.zeros(DIM, dtype="float32"), k=20)
    index = _faiss_of(folder)  # of its own type already
    faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size())[0] = 10**9
    _replace_data_file(folder, "faiss", faiss.serialize_index(index).tobytes())
    with pytest.raises(siamkit.IndexFileError, match="row numbers"):
        FaceIndex.load(folder)


# -- 4. build refuses a foreign --out before any work ----------------------------------
@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("foreign", ["folder", "file", "newer index"])
def test_build_refuses_a_foreign_out_before_embedding_anything(
    tmp_path: Path,
    model: Path,
    make_image_folder: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    foreign: str,
    resume: bool,
) -> None:
    from siamkit.index import enrolment

    gallery = make_image_folder({"ann": 2, "bob": 2})
    out = tmp_path / "out"
    if foreign == "file":
        out.write_text("mine")
    elif foreign == "folder":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    else:
        _saved(out)
        manifest = _manifest(out)
        manifest["format_version"] = 99
        _write_manifest(out, manifest)
    before = out.read_bytes() if out.is_file() else {p.name: p.read_bytes() for p in out.iterdir()}
    embedded: list[int] = []
    monkeypatch.setattr(enrolment, "embed_items", lambda *a, **k: embedded.append(1))
    argv = ["index", "build", "--model", str(model), "--gallery", str(gallery), "--out", str(out),
            "--quiet", *(["--resume"] if resume else [])]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and str(out) in err
    assert embedded == []
    after = out.read_bytes() if out.is_file() else {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # not even a lock file
    if foreign != "file":
        with pytest.raises(siamkit.IndexFileError), FaceIndex.update(out):
            pass
        after = {p.name: p.read_bytes() for p in out.iterdir()}
        assert after == before


def test_build_into_a_new_folder_still_works_and_locks_it(
    tmp_path: Path, model: Path, make_image_folder: Callable[..., Path]
) -> None:
    gallery = make_image_folder({"ann": 2, "bob": 2})
    out = tmp_path / "new" / "index"
    argv = ["index", "build", "--model", str(model), "--gallery", str(gallery), "--out", str(out),
            "--quiet", "--calibrate-far", "0", "--calibrate-fpir", "0"]  # fmt: skip
    assert main(argv) == 0
    assert len(FaceIndex.load(out)) == 4 and (out / ".face_index.lock").exists()
