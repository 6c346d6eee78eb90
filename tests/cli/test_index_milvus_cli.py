"""``siamkit index`` on a Milvus collection: build, resume, query, add, remove, info;
and ``index build`` under torchrun, sharding the images over two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from siamkit.cli.main import main
from siamkit.index import FaceIndex

pytest.importorskip("milvus_lite", reason="the milvus extra (siamkit[milvus]) is not installed")


@pytest.fixture
def setup(make_image_folder: Callable[..., Path], tmp_path: Path) -> dict[str, Path]:
    """A small built-in model, a gallery of 4 people x 5 images, and a Milvus Lite file."""
    torch.manual_seed(0)
    model = siamkit.create_encoder("compact", channels=[8, 16]).save(tmp_path / "model")
    gallery = make_image_folder({f"person{i}": 5 for i in range(4)})
    return {"model": model, "gallery": gallery, "uri": tmp_path / "faces.db"}


def _milvus(setup: dict[str, Path], collection: str = "faces") -> list[str]:
    return ["--store", "milvus", "--uri", str(setup["uri"]), "--collection", collection]


def _build(setup: dict[str, Path], *extra: str) -> int:
    return main(["index", "build", "--model", str(setup["model"]), "--gallery",
                 str(setup["gallery"]), "--quiet", "--calibrate-far", "0",
                 "--calibrate-fpir", "0.1", *_milvus(setup), *extra])  # fmt: skip


def test_build_query_add_remove_info_on_a_collection(setup, capsys, tmp_path) -> None:
    assert _build(setup) == 0
    assert "indexed 20 images of 4 people into the collection 'faces'" in capsys.readouterr().out
    with FaceIndex.connect(uri=str(setup["uri"]), collection="faces").store as store:
        assert store.count() == 20
    probe = setup["gallery"] / "person2" / "3.png"
    assert main(["index", "query", str(probe), "--json", *_milvus(setup)]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["matches"][0]["id"] == "person2/3.png" and answer["matches"][0]["distance"] < 1e-5
    new = tmp_path / "new.png"
    new.write_bytes(probe.read_bytes())
    assert main(["index", "add", str(new), "--label", "person9", "--ids", "extra",
                 "--quiet", *_milvus(setup)]) == 0  # fmt: skip
    assert "now holds 21 images" in capsys.readouterr().out
    assert main(["index", "remove", "--label", "person0", *_milvus(setup)]) == 0
    assert "removed 5 items" in capsys.readouterr().out
    assert main(["index", "info", "--json", *_milvus(setup)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["count"], info["people"], info["store"]) == (16, 4, "milvus")
    assert info["extra"]["model"] == str(setup["model"].resolve())
    assert info["identify_threshold"] is not None


def test_an_interrupted_build_resumes_without_duplicates(setup, capsys) -> None:
    encoder = siamkit.load_encoder(setup["model"])
    partial = FaceIndex(encoder, store="milvus", uri=str(setup["uri"]), collection="faces")
    partial.extra["model"] = str(setup["model"].resolve())
    files = sorted(setup["gallery"].glob("person[01]/*.png"))
    partial.add([str(f) for f in files], labels=[f.parent.name for f in files],
                ids=[f"{f.parent.name}/{f.name}" for f in files])  # fmt: skip
    partial.store.close()  # the build was killed here, with 10 of 20 images stored
    assert _build(setup) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _build(setup, "--resume") == 0
    again = FaceIndex.connect(encoder, uri=str(setup["uri"]), collection="faces")
    assert len(again) == 20 and sorted(again.ids()) == sorted(
        f"{d.name}/{f.name}" for d in setup["gallery"].iterdir() for f in d.iterdir()
    )


def test_a_later_process_reopens_the_collection(setup) -> None:
    """Milvus Lite keeps a collection on disk, released, between processes: reopening loads it."""

    def siamkit_cli(*argv: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "siamkit", "index", *argv, *_milvus(setup)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    built = siamkit_cli("build", "--model", str(setup["model"]), "--gallery",
                        str(setup["gallery"]), "--quiet")  # fmt: skip
    assert built.returncode == 0, built.stderr
    probe = setup["gallery"] / "person1" / "2.png"
    found = siamkit_cli("query", str(probe), "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["matches"][0]["id"] == "person1/2.png"


def test_location_flags_are_checked(setup, capsys) -> None:
    assert main(["index", "info", "--store", "milvus"]) == 2
    assert "--uri" in capsys.readouterr().err
    assert main(["index", "info"]) == 2
    assert "--index" in capsys.readouterr().err


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "siamkit", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_index_build_under_torchrun_shards_the_gallery(setup, tmp_path) -> None:
    """Two processes enrol their halves into one Milvus server and one FAISS folder; both
    galleries equal a one-process build."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(data_dir=str(tmp_path / "server"),
                                              host="127.0.0.1", port=0)  # fmt: skip
    try:
        common = ["index", "build", "--model", str(setup["model"]), "--gallery",
                  str(setup["gallery"]), "--calibrate-far", "0",
                  "--calibrate-fpir", "0"]  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        done = _torchrun(*common, "--store", "milvus", "--uri", uri, "--collection", "shared")
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("indexed 20 images") == 1  # rank 0 reports
        done = _torchrun(*common, "--out", str(tmp_path / "faiss"))
        assert done.returncode == 0, done.stderr[-3000:]
        single = tmp_path / "single"
        assert main([*common, "--out", str(single), "--quiet"]) == 0
        encoder = siamkit.load_encoder(setup["model"])
        reference = FaceIndex.load(single, encoder)
        sharded = FaceIndex.load(tmp_path / "faiss", encoder)
        shared = FaceIndex.connect(encoder, uri=uri, collection="shared")
        for other in (sharded, shared):
            assert sorted(other.ids()) == sorted(reference.ids()) and len(other) == 20
            for item_id in reference.ids():
                np.testing.assert_allclose(other.get(item_id).embedding,
                                           reference.get(item_id).embedding, atol=1e-5)  # fmt: skip
        shared.store.close()
    finally:
        server.stop(grace=0)
        db.close()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_bad_index_kind_is_named_not_taken_for_an_existing_collection(setup, capsys) -> None:
    assert _build(setup, "--index", "IVF4,Flat") == 2
    err = _one_line_error(capsys)
    assert "--index" in err and "flat, hnsw or ivf" in err and "already holds" not in err
    with pytest.raises(siamkit.IndexFileError, match="no collection"):
        FaceIndex.connect(uri=str(setup["uri"]), collection="faces")


def test_milvus_flags_without_store_milvus_are_refused(setup, capsys, tmp_path) -> None:
    """--uri with the default faiss store would otherwise be ignored: the gallery would land
    in a folder while the user thinks it is in Milvus."""
    out = tmp_path / "folder"
    build = ["index", "build", "--model", str(setup["model"]), "--gallery", str(setup["gallery"]),
             "--quiet", "--out", str(out)]  # fmt: skip
    for extra in (["--uri", str(setup["uri"])], ["--collection", "faces"]):
        assert main([*build, *extra]) == 2
        assert "--store milvus" in _one_line_error(capsys)
        assert not out.exists()
    assert main(["index", "info", "--index", str(out), "--uri", str(setup["uri"])]) == 2
    assert "--store milvus" in _one_line_error(capsys)


def test_build_into_a_collection_of_another_geometry_says_so(setup, capsys) -> None:
    other = FaceIndex(metric="cosine", dim=128, store="milvus", uri=str(setup["uri"]),
                      collection="faces")  # fmt: skip
    other.add(np.eye(2, 128, dtype=np.float32), labels=["a", "b"])
    other.store.close()
    for resume in ([], ["--resume"]):
        assert _build(setup, *resume) == 2
        err = _one_line_error(capsys)
        assert "cosine" in err and "--resume" not in err
