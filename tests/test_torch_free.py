"""Without PyTorch: geometry, ``siamkit eval`` and the face index on an ONNX export.

Each torch-free check runs in a subprocess in which importing torch and
torchvision fails (``sys.modules[name] = None``) and compares what it computes
with the same computation in this process, which has PyTorch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

import siamkit
from siamkit._folders import list_image_folder
from siamkit.cli.main import main
from siamkit.data.images import is_image_file
from siamkit.evaluation import evaluate_encoder, retrieval_metrics
from siamkit.exceptions import DataError
from siamkit.geometry import METRICS, paired_distances, pairwise_distances, prepare

PEOPLE = ("s1", "s9", "s17", "s33")
PARITY = 1e-4
SCALES = {"random": 1.0, "huge": 1e30, "tiny": 1e-18, "underflowing": 1e-30}

# Prepended to every torch-free script; the check at the end names what leaked in.
_BLOCK = """
import sys
for _name in ("torch", "torchvision"):
    sys.modules[_name] = None  # importing them now fails
"""
_CHECK = """
_leaked = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("torch", "torchvision", "pytorch_metric_learning") and sys.modules[m]
)
assert not _leaked, f"torch was imported: {_leaked}"
"""


def _without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` where torch cannot be imported; fail with its traceback if it fails."""
    script = _BLOCK + textwrap.dedent(code) + _CHECK
    env = {**os.environ, "SIAMKIT_DEBUG": "1"}  # a traceback shows the import chain
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# -- geometry: NumPy arrays computed in NumPy agree with torch ----------------------------
def _inputs(scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(9, 6)) * scale).astype(np.float32)
    b = (rng.normal(size=(9, 6)) * scale).astype(np.float32)
    return a, b


def _geometry(a: Any, b: Any, metric: str) -> dict[str, Any]:
    return {
        "paired": paired_distances(a, b, metric),
        "pairwise": pairwise_distances(a, b, metric),
        "self": pairwise_distances(a, None, metric),
        "prepare": prepare(a, metric),
    }


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("metric", METRICS)
def test_numpy_geometry_agrees_with_torch(metric: str, scale: str) -> None:
    a, b = _inputs(SCALES[scale])
    got = _geometry(a, b, metric)
    want = _geometry(torch.from_numpy(a), torch.from_numpy(b), metric)
    # Distances scale with the inputs for euclidean; cosine is scale-free.
    unit = SCALES[scale] if metric == "euclidean" else 1.0
    for name, value in got.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, name
        assert np.isfinite(value).all(), name
        np.testing.assert_allclose(
            value, want[name].numpy(), rtol=1e-6, atol=1e-6 * unit, err_msg=name
        )
    np.testing.assert_array_equal(np.diag(got["self"]), np.zeros(len(a), np.float32))


@pytest.mark.parametrize("metric", METRICS)
def test_numpy_geometry_of_huge_rows_is_exactly_scaled(metric: str) -> None:
    """Power-of-two scaling is exact: 2**100 times the inputs, 2**100 times the distances."""
    a, b = _inputs(1.0)
    big = 2.0**100
    factor = big if metric == "euclidean" else 1.0
    np.testing.assert_array_equal(
        paired_distances(a * big, b * big, metric), paired_distances(a, b, metric) * factor
    )
    np.testing.assert_array_equal(prepare(a * big, metric), prepare(a, metric) * factor)
    # Mixed rows share one scale in pairwise: the small rows keep their distances' size.
    mixed = np.concatenate([a, b * big])
    d = pairwise_distances(mixed, None, metric)
    assert np.isfinite(d).all() and (np.diag(d) == 0).all()
    if metric == "cosine":
        np.testing.assert_allclose(d[:9, 9:], pairwise_distances(a, b, metric), atol=1e-6)


def test_geometry_runs_without_torch(tmp_path: Path) -> None:
    a, b = _inputs(1e30)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    done = _without_torch(
        """
        import numpy as np
        from siamkit.exceptions import NonFiniteError, ShapeError
        from siamkit.geometry import (
            check_embeddings, embeddings_and_labels, paired_distances, pairwise_distances,
            prepare,
        )
        a, b = np.load("a.npy"), np.load("b.npy")
        out = {}
        for metric in ("euclidean", "cosine"):
            out[metric] = {
                "paired": paired_distances(a, b, metric),
                "pairwise": pairwise_distances(a, b, metric),
                "self": pairwise_distances(a, None, metric),
                "prepare": prepare(a, metric),
            }
        np.savez("out.npz", **{f"{m}_{k}": v for m, d in out.items() for k, v in d.items()})
        check_embeddings(a)
        emb, lab = embeddings_and_labels(a.tolist(), [[1]] * len(a), "embeddings")
        assert emb.dtype == np.float32 and lab.shape == (len(a),)
        for bad, error in ((np.array([[np.nan, 1.0]]), NonFiniteError), (np.zeros(3), ShapeError)):
            try:
                check_embeddings(bad)
            except error:
                pass
            else:
                raise AssertionError(f"{bad!r} passed")
        """,
        tmp_path,
    )
    assert done.stderr == ""
    got = np.load(tmp_path / "out.npz")
    for metric in METRICS:
        want = _geometry(torch.from_numpy(a), torch.from_numpy(b), metric)
        unit = 1e30 if metric == "euclidean" else 1.0
        for name, value in want.items():
            np.testing.assert_allclose(
                got[f"{metric}_{name}"], value.numpy(), rtol=1e-6, atol=1e-6 * unit
            )


# -- evaluation's NumPy retrieval metrics are pytorch-metric-learning's ----------------------
def _pml_retrieval(embeddings: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, float]:
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    _, codes = np.unique(labels, return_inverse=True)
    distance = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        knn_func=CustomKNN(distance),
        device=torch.device("cpu"),
    )
    result = calculator.get_accuracy(torch.from_numpy(embeddings), torch.from_numpy(codes))
    return {key: float(result[key]) for key in sorted(result)}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_pytorch_metric_learning(metric: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 5))
    labels = rng.integers(0, 8, size=70)
    labels[:2] = [100, 101]  # people with one image: left out as queries, kept as neighbours
    embeddings = (centres[labels % 8] + rng.normal(size=(70, 5)) * 0.8).astype(np.float32)
    got = retrieval_metrics(embeddings, labels, metric)
    want = _pml_retrieval(embeddings, labels, metric)
    assert got.keys() == want.keys()
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert 0.0 < got["mean_average_precision_at_r"] < 1.0


def test_retrieval_metrics_of_lone_people_are_nan() -> None:
    got = retrieval_metrics(np.eye(3, dtype=np.float32), ["a", "b", "c"], "euclidean")
    assert all(np.isnan(v) for v in got.values())


# -- the folder listing is torchvision's ImageFolder ------------------------------------------
def test_folder_listing_is_imagefolders(tmp_path: Path) -> None:
    for person, names in {"zoe": ["b.png", "a.JPG"], "Al": ["1.pgm"], "bo": ["x.png"]}.items():
        (tmp_path / person / "deep").mkdir(parents=True)
        for name in names:
            (tmp_path / person / name).write_bytes(b"")
        (tmp_path / person / "deep" / "0.png").write_bytes(b"")
        (tmp_path / person / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("a file beside the people")
    listing = list_image_folder(tmp_path)
    reference = ImageFolder(str(tmp_path), is_valid_file=is_image_file)
    assert listing.classes == reference.classes == ["Al", "bo", "zoe"]
    assert list(zip(listing.paths, listing.labels, strict=True)) == reference.samples
    assert listing.counts == {"Al": 2, "bo": 2, "zoe": 3}
    assert siamkit.FaceFolder(tmp_path).samples == reference.samples


def test_folder_listing_names_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no sub-folders"):
        list_image_folder(tmp_path)
    (tmp_path / "ann").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_image_folder(tmp_path)
    (tmp_path / "ann" / "1.png").write_bytes(b"")
    (tmp_path / "bob").mkdir()
    with pytest.raises(DataError, match=r"without images in .*: bob"):
        list_image_folder(tmp_path)
    (tmp_path / "bob" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"fewer than 2 images .*: ann, bob"):
        list_image_folder(tmp_path, min_images_per_class=2)


def test_the_model_folder_is_named_once_and_read_without_torch(tmp_path: Path) -> None:
    from siamkit import model_folder
    from siamkit.encoders.base import ENCODER_FILE

    # One owner: the encoders' name is the model folder's object, not a copy of it.
    assert ENCODER_FILE is model_folder.ENCODER_FILE
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / ENCODER_FILE).write_text(
        json.dumps({"extra": {"training": {"epoch": 2, "metrics": {
            "val_auc": 0.9, "val_eer": 0.1, "val_threshold": 0.75, "val_rank1": 0.8}}}})
    )  # fmt: skip
    code = (
        "from siamkit.model_folder import trained_threshold\n"
        f"print(trained_threshold({str(tmp_path / 'm')!r}))\n"
    )
    done = _without_torch(code, tmp_path)
    assert done.stdout.strip().splitlines()[0] == "0.75"


# -- siamkit eval and the face index on an ONNX export -----------------------------------------
@pytest.fixture(scope="module")
def models(orl_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A compact encoder saved for PyTorch and exported to ONNX, and 4 ORL people."""
    pytest.importorskip("onnxruntime", reason="the onnx extra (siamkit[onnx]) is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra (siamkit[onnx]) is not installed")
    root = tmp_path_factory.mktemp("torch-free")
    for person in PEOPLE:
        shutil.copytree(orl_root / person, root / "faces" / person)
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact")
    return {
        "root": root,
        "faces": root / "faces",
        "torch": encoder.save(root / "model"),
        "onnx": encoder.export_onnx(root / "model.onnx"),
    }


def _assert_same_figures(got: Any, want: Any, where: str = "") -> None:
    """Every number of two evaluation.json documents equal to PARITY; paths may differ."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            if key not in ("model", "data"):
                _assert_same_figures(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):  # JSON has lists where to_dict() has tuples
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same_figures(g, w, f"{where}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, abs=PARITY, nan_ok=True), where
    else:
        assert got == want, where


def test_eval_runs_without_torch_with_pytorchs_figures(models) -> None:
    done = _without_torch(
        f"""
        from siamkit.cli.main import main
        code = main(["eval", "--model", {str(models["onnx"])!r}, "--data", "faces",
                     "--out", "eval-onnx", "--json"])
        assert code == 0, code
        assert main(["train", "--data", "faces", "--out", "run"]) == 2  # says it needs torch
        assert main(["list"]) == 2  # the registries import torch: one line, no traceback
        """,
        models["root"],
    )
    assert done.stderr.splitlines() == [
        "siamkit: error: siamkit train needs PyTorch, which is not installed here (pip install "
        "torch torchvision); ONNX exports run `siamkit eval` and `siamkit index` without it",
        "siamkit: error: this command needs PyTorch, which is not installed here (pip install "
        "torch torchvision); ONNX exports run `siamkit eval` and `siamkit index` without it",
    ]
    free = json.loads(done.stdout)
    written = models["root"] / "eval-onnx"
    assert json.loads((written / "evaluation.json").read_text()) == free
    assert (written / "report.html").is_file() and (written / free["figures"]["roc"]).is_file()
    assert free["num_people"] == 4 and free["num_images"] == 40 and free["num_pairs"] == 780
    # The same evaluation of the PyTorch model, in this process (no pictures drawn).
    with_torch = evaluate_encoder(siamkit.load_encoder(models["torch"]), models["faces"])
    want = with_torch.to_dict()
    assert free.pop("figures") and not want.pop("figures")
    _assert_same_figures(free, want)
    assert free["model"] == str(models["onnx"]) and free["metric"] == "euclidean"


def test_face_index_and_cli_run_without_torch(models, capsys) -> None:
    faces, probe = models["faces"], models["faces"] / "s9" / "3.pgm"
    done = _without_torch(
        f"""
        import json
        import siamkit
        from siamkit.cli.main import main
        index = siamkit.FaceIndex(siamkit.load_encoder({str(models["onnx"])!r}))
        index.add_folder("faces")
        found = index.search({str(probe)!r}, k=3)
        code = main(["index", "build", "--model", {str(models["onnx"])!r}, "--gallery", "faces",
                     "--out", "index-onnx", "--quiet"])
        assert code == 0, code
        print("---")
        code = main(["index", "query", "--index", "index-onnx", {str(probe)!r}, "--json"])
        assert code == 0, code
        print("---")
        print(json.dumps([[m.id, m.label, m.distance] for m in found]))
        """,
        models["root"],
    )
    built, queried, searched = done.stdout.split("---\n")
    assert "indexed 40 images of 4 people" in built
    index = siamkit.FaceIndex(siamkit.load_encoder(models["torch"]))
    index.add_folder(faces)
    want = index.search(probe, k=3)
    found = json.loads(searched)
    assert [(i, label) for i, label, _ in found] == [(m.id, m.label) for m in want]
    assert found[0][0] == "s9/3.pgm" and found[0][2] == pytest.approx(0.0, abs=PARITY)
    np.testing.assert_allclose([d for *_, d in found], [m.distance for m in want], atol=PARITY)
    build = ["index", "build", "--model", str(models["torch"]), "--gallery", str(faces)]
    assert main([*build, "--out", str(models["root"] / "index-torch"), "--quiet"]) == 0
    capsys.readouterr()
    query = ["index", "query", "--index", str(models["root"] / "index-torch"), str(probe)]
    assert main([*query, "--json"]) == 0
    (with_torch,) = json.loads(capsys.readouterr().out)
    (free,) = json.loads(queried)
    assert free["match"]["label"] == with_torch["match"]["label"] == "s9"
    assert free["threshold"] == pytest.approx(with_torch["threshold"], abs=PARITY)
    assert [m["id"] for m in free["matches"]] == [m["id"] for m in with_torch["matches"]]
    np.testing.assert_allclose(
        [m["distance"] for m in free["matches"]],
        [m["distance"] for m in with_torch["matches"]],
        atol=PARITY,
    )
