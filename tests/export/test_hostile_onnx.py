"""Hostile and careless input to ONNX exports (issue 18: the export manifest, its data, writes).

Each test here failed on the code before the fix: an edited manifest loaded, a
swapped weights file changed every embedding under the same fingerprint, a
broken graph escaped as a raw ONNX Runtime error or returned the wrong shape,
a full disk broke the earlier export, ``--out`` wrote into a model folder.
Files are edited as a deliberate attacker would, checksums made to match, so
what is tested is the check behind the checksum.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import siamkit
from siamkit.cli.main import main
from siamkit.exceptions import (
    ConfigError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
    WriteError,
)
from siamkit.runtime import OnnxEncoder
from siamkit.runtime.external_data import external_data_files
from siamkit.runtime.preprocessing import MAX_SIDE, Preprocessing

onnx = pytest.importorskip("onnx", reason="the onnx extra (siamkit[onnx]) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra (siamkit[onnx]) is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (siamkit[onnx]) is not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PARITY = 1e-5


# -- helpers -------------------------------------------------------------------------
def _vector_encoder(seed: int = 0) -> siamkit.Encoder:
    torch.manual_seed(seed)
    return siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One export of images (compact) and one of vectors (mlp), exported once for the module."""
    root = tmp_path_factory.mktemp("exports")
    vectors = _vector_encoder()
    return {
        "images": siamkit.create_encoder("compact").export_onnx(root / "images" / "m.onnx"),
        "vectors": vectors.export_onnx(root / "vectors" / "m.onnx"),
        "vector_encoder": vectors,
    }


def _copy(export: Path, folder: Path) -> Path:
    shutil.copytree(export.parent, folder)
    return folder / export.name


def _manifest(graph: Path) -> dict[str, Any]:
    return json.loads(graph.with_name(graph.name + ".json").read_text())


def _write_manifest(graph: Path, manifest: dict[str, Any]) -> None:
    graph.with_name(graph.name + ".json").write_text(json.dumps(manifest))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _vectors(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)


def _graph(
    nodes: list[Any],
    output_shape: list[Any] | None,
    inits: list[Any] = (),
    input_shape: tuple[Any, ...] = ("batch", 4),
) -> Any:
    """A graph taking ``images`` floats (vectors of 4 unless told) and returning ``embeddings``."""
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, output_shape)],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _hand_made(model: Any, folder: Path, exports: dict[str, Any], kind: str = "vectors") -> Path:
    """``model`` saved in place of an export's graph, its manifest's checksum made to match."""
    graph = _copy(exports[kind], folder)
    onnx.save_model(model, graph)
    manifest = _manifest(graph)
    manifest["graph_sha256"] = _sha(graph)
    _write_manifest(graph, manifest)
    return graph


def _matmul(rows: int, cols: int) -> Any:
    return numpy_helper.from_array(np.ones((rows, cols), np.float32), "W")


# -- 1. the manifest: every field checked ----------------------------------------------
_BAD_FIELDS: list[tuple[str, Any]] = [
    ("embedding_dim", -5),
    ("embedding_dim", 0),
    ("embedding_dim", True),
    ("embedding_dim", "128"),
    ("embedding_dim", 10**9),
    ("fingerprint", "x"),
    ("graph_sha256", None),
    ("metric", "manhattan"),
    ("opset", 1.5),
    ("encoder", "x"),
    ("aligner", "none"),
    ("aligner", {"name": "none"}),
    ("input", 7),
    ("output", ""),
    ("siamkit_version", 3),
    ("external_data", None),
    ("external_data", [{"name": "../outside.data", "bytes": 1, "sha256": "0" * 64}]),
    ("external_data", [{"name": "m.onnx", "bytes": 1, "sha256": "0" * 64}]),
    ("preprocessing", {"mode": "L", "size": [0, 0], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [60000, 60000], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": ["56", 46], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [56], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [56, 46.5], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "CMYK", "size": [56, 46], "scale": 1.0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [56, 46], "scale": float("nan"), "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [56, 46], "scale": 0, "offset": 0.0}),
    ("preprocessing", {"mode": "L", "size": [56, 46], "scale": 1, "offset": 0, "x": 1}),
]


@pytest.mark.parametrize(("key", "value"), _BAD_FIELDS, ids=lambda v: repr(v)[:30])
def test_manifest_fields_of_the_wrong_type_or_range_are_refused(
    exports: dict[str, Any], tmp_path: Path, key: str, value: Any
) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    manifest = _manifest(graph)
    manifest[key] = value
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match=rf"m\.onnx\.json .*{key}") as caught:
        siamkit.load_encoder(graph)
    assert "Export the model again" in str(caught.value)


def test_unknown_and_missing_manifest_fields_are_refused(exports, tmp_path: Path) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    manifest = _manifest(graph)
    _write_manifest(graph, {**manifest, "trust_me": True})
    with pytest.raises(ModelFileError, match="unknown field 'trust_me'"):
        siamkit.load_encoder(graph)
    del manifest["fingerprint"]
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match="missing field 'fingerprint'"):
        siamkit.load_encoder(graph)


def test_the_input_and_output_names_must_be_the_graphs(exports, tmp_path: Path) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    manifest = _manifest(graph)
    for key in ("input", "output"):
        _write_manifest(graph, {**manifest, key: "nope"})
        with pytest.raises(ModelFileError, match=r"m\.onnx .*'nope'"):
            siamkit.load_encoder(graph)


def test_a_preprocessing_size_other_than_the_graphs_is_refused(exports, tmp_path: Path) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    manifest = _manifest(graph)
    manifest["preprocessing"]["size"] = [MAX_SIDE, MAX_SIDE]  # in range, but not the graph's
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match=r"takes tensor\(float\) of shape"):
        siamkit.load_encoder(graph)
    manifest["preprocessing"] = None  # images described as vectors
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match="vectors"):
        siamkit.load_encoder(graph)


def test_preprocessing_sizes_are_bounded_in_python_too() -> None:
    assert Preprocessing("RGB", (MAX_SIDE, MAX_SIDE), 1.0, 0.0).size == (MAX_SIDE, MAX_SIDE)
    for size in [(0, 0), (MAX_SIDE + 1, 8), (8, -1), (True, 8), ("8", 8), (8,)]:
        with pytest.raises(ConfigError, match=f"from 1 to {MAX_SIDE}"):
            Preprocessing("L", size, 1.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite"):
        Preprocessing("L", (8, 8), float("inf"), 0.0)


def test_a_manifest_nested_100000_deep_is_refused(exports, tmp_path: Path) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    text = '{"format": "siamkit-onnx", "format_version": 2, "aligner": ' + "[" * 100_000
    graph.with_name("m.onnx.json").write_text(text + "]" * 100_000 + "}")
    with pytest.raises(ModelFileError, match="nested deeper than 64"):
        siamkit.load_encoder(graph)


def _valid_preprocessing_value(field: str, value: Any) -> bool:
    """Values the fuzz may draw that a manifest may hold: no resizing, any finite scaling."""
    if field == "size":
        return value is None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = number and math.isfinite(value)
    return field in ("scale", "offset") and finite and (field == "offset" or value != 0)


def test_onnx_manifest_fuzz_never_loads_garbage_nor_escapes_untyped(
    exports, tmp_path: Path
) -> None:
    graph = _copy(exports["images"], tmp_path / "export")
    original = _manifest(graph)
    rng = np.random.default_rng(0)
    values = [None, True, -1, 0, 2**63, 1.5, float("nan"), "", "x", [], {}, [1], {"a": 1}]
    texts = ("siamkit_version", "torch_version")  # free text: any string is valid
    loaded = 0
    for _ in range(80):
        manifest = json.loads(json.dumps(original))
        value = values[rng.integers(len(values))]
        if rng.random() < 0.3:  # a field of the preprocessing record
            fields = sorted(manifest["preprocessing"])
            field = fields[rng.integers(len(fields))]
            if _valid_preprocessing_value(field, value):
                continue
            manifest["preprocessing"][field] = value
        else:
            key = sorted(original)[rng.integers(len(original))]
            if key in texts and isinstance(value, str):
                continue
            manifest[key] = value
        if manifest == original:
            continue
        _write_manifest(graph, manifest)
        with pytest.raises(ModelFileError):
            siamkit.load_encoder(graph)
        loaded += 1
    assert loaded > 50
    _write_manifest(graph, original)
    assert isinstance(siamkit.load_encoder(graph), OnnxEncoder)


def test_a_version_1_export_still_loads(exports, tmp_path: Path) -> None:
    graph = _copy(exports["vectors"], tmp_path / "export")
    manifest = _manifest(graph)
    del manifest["external_data"]
    _write_manifest(graph, {**manifest, "format_version": 1})
    x = _vectors()
    expected = exports["vector_encoder"].embed(x)
    np.testing.assert_allclose(siamkit.load_encoder(graph).embed(x), expected, atol=PARITY)
    _write_manifest(graph, {**manifest, "format_version": 1, "external_data": []})
    with pytest.raises(ModelFileError, match="unknown field 'external_data'"):
        siamkit.load_encoder(graph)


# -- 2. every file the graph reads is covered by a checksum ------------------------------
def _with_external_data(graph: Path, name: str = "m.onnx.data") -> Path:
    """Move the graph's weights to ``name`` beside it, listed in the manifest (checksums match)."""
    model = onnx.load_model(graph)
    onnx.save_model(model, graph, save_as_external_data=True, location=name, size_threshold=0)
    data = graph.with_name(name)
    manifest = _manifest(graph)
    manifest["graph_sha256"] = _sha(graph)
    manifest["external_data"] = [{"name": name, "bytes": data.stat().st_size, "sha256": _sha(data)}]
    _write_manifest(graph, manifest)
    return data


def test_swapping_the_external_data_file_is_refused(exports, tmp_path: Path) -> None:
    graph = _copy(exports["vectors"], tmp_path / "export")
    data = _with_external_data(graph)
    x = _vectors()
    expected = exports["vector_encoder"].embed(x)
    np.testing.assert_allclose(siamkit.load_encoder(graph).embed(x), expected, atol=PARITY)
    weights = np.frombuffer(data.read_bytes(), dtype=np.float32).copy()
    data.write_bytes((weights * 2).tobytes())  # same size, other weights, same fingerprint
    with pytest.raises(ModelFileError, match=r"m\.onnx\.data does not match its size and"):
        siamkit.load_encoder(graph)
    data.unlink()
    with pytest.raises(ModelFileError, match=r"data file .* is missing"):
        siamkit.load_encoder(graph)


@pytest.mark.parametrize("listed", [True, False])
def test_a_graph_reading_a_file_its_manifest_does_not_cover_is_refused(
    exports, tmp_path: Path, listed: bool
) -> None:
    graph = _copy(exports["vectors"], tmp_path / "export")
    _with_external_data(graph)
    manifest = _manifest(graph)
    if listed:  # the manifest lists a file the graph does not read, and not the one it reads
        shutil.copy(graph.with_name("m.onnx.data"), graph.with_name("other.data"))
        manifest["external_data"][0]["name"] = "other.data"
    else:  # an old-style manifest: the graph alone is checksummed
        manifest["external_data"] = []
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match=r"reads the files \['m\.onnx\.data'\]"):
        siamkit.load_encoder(graph)


def test_external_data_that_escapes_the_folder_is_refused(exports, tmp_path: Path) -> None:
    graph = _copy(exports["vectors"], tmp_path / "export")
    data = _with_external_data(graph)
    shutil.move(data, tmp_path / "outside.data")
    model = onnx.load_model(graph, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save_model(model, graph)
    manifest = _manifest(graph)
    manifest.update(graph_sha256=_sha(graph), external_data=[])
    _write_manifest(graph, manifest)
    with pytest.raises(ModelFileError, match=r"reads the files \['\.\./outside\.data'\]"):
        siamkit.load_encoder(graph)


def test_external_data_is_found_wherever_a_tensor_sits() -> None:
    def external(name: str) -> Any:
        tensor = numpy_helper.from_array(np.ones(2, np.float32), "c")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", name
        return tensor

    def constant(name: str) -> Any:
        return helper.make_node("Constant", [], ["y"], value=external(name))

    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    branch = helper.make_graph([constant("in-subgraph.bin")], "then", [], out)
    other = helper.make_graph([constant("in-else.bin")], "else", [], out)
    node = helper.make_node("If", ["b"], ["y"], then_branch=branch, else_branch=other)
    cond = [helper.make_tensor_value_info("b", TensorProto.BOOL, [])]
    sparse = helper.make_sparse_tensor(
        external("sparse.bin"), numpy_helper.from_array(np.array([0, 1], np.int64), "i"), [4]
    )
    graph = helper.make_graph(
        [node], "g", cond, out, [external("init.bin")], sparse_initializer=[sparse]
    )
    function = helper.make_function(
        "custom", "F", [], ["y"], [constant("in-function.bin")], [helper.make_opsetid("", 18)]
    )
    model = helper.make_model(graph, functions=[function])
    assert sorted(external_data_files(model.SerializeToString())) == [
        "in-else.bin", "in-function.bin", "in-subgraph.bin", "init.bin", "sparse.bin"
    ]  # fmt: skip
    for garbage in (b"\x3a\x05ab", b"\xff" * 20, b"\x0b", b"\x00\x00"):
        with pytest.raises(ValueError, match=r"protobuf|field"):
            external_data_files(garbage)


def test_an_export_over_2_gb_lists_its_weights_file(tmp_path: Path, monkeypatch) -> None:
    program = pytest.importorskip("torch.onnx._internal.exporter._onnx_program")
    if not hasattr(program, "_LARGE_MODEL_THRESHOLD"):
        pytest.skip("this torch decides on external data otherwise")
    encoder = _vector_encoder()
    monkeypatch.setattr(program, "_LARGE_MODEL_THRESHOLD", 0)  # every model is "over 2 GB"
    graph = encoder.export_onnx(tmp_path / "m.onnx")
    (entry,) = _manifest(graph)["external_data"]
    data = tmp_path / "m.onnx.data"
    assert entry == {"name": data.name, "bytes": data.stat().st_size, "sha256": _sha(data)}
    x = _vectors()
    np.testing.assert_allclose(siamkit.load_encoder(graph).embed(x), encoder.embed(x), atol=PARITY)
    monkeypatch.undo()  # a small export over it: the stale weights file goes
    encoder.export_onnx(graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]
    np.testing.assert_allclose(siamkit.load_encoder(graph).embed(x), encoder.embed(x), atol=PARITY)


# -- 3. a graph that fails or lies at run time ------------------------------------------
def test_a_graph_failing_at_run_time_raises_a_siamkit_error(
    exports, tmp_path: Path, synthetic_faces: Path, capfd
) -> None:
    # 1 x 56 x 46 pixels do not make rows of 128 unless the batch is a multiple of 8.
    rows = numpy_helper.from_array(np.array([-1, 128], np.int64), "rows")
    reshape = helper.make_node("Reshape", ["images", "rows"], ["embeddings"])
    model = _graph([reshape], None, [rows], input_shape=("batch", 1, 56, 46))
    graph = _hand_made(model, tmp_path / "export", exports, kind="images")
    encoder = siamkit.load_encoder(graph)
    with pytest.raises(ModelFileError, match=r"the ONNX graph .*m\.onnx failed on a batch of 3"):
        encoder.embed(np.zeros((3, 1, 56, 46), np.float32))
    assert capfd.readouterr().err == ""  # ONNX Runtime's own log stays quiet
    build = ["index", "build", "--model", str(graph), "--gallery", str(synthetic_faces)]
    code = main([*build, "--out", str(tmp_path / "index"), "--quiet"])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err
    assert err.startswith("siamkit: error: the ONNX graph") and "export the model again" in err


def _branch(name: str, nodes: list[Any], output: str) -> Any:
    value = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    return helper.make_graph(nodes, name, [], [value])


def _lying(nodes: list[Any], inits: list[Any]) -> Any:
    """A graph that runs ``nodes`` (giving ``bad``) or a proper (N, 2) matmul, by its input.

    The choice depends on the input's values, so neither the graph nor ONNX
    Runtime's shape inference can say what it returns: only running it tells.
    """
    fine = _branch("fine", [helper.make_node("MatMul", ["images", "W2"], ["good"])], "good")
    hostile = _branch("hostile", nodes, "bad")
    decide = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "low"], ["always"]),
        helper.make_node("If", ["always"], ["embeddings"], then_branch=hostile, else_branch=fine),
    ]
    low = numpy_helper.from_array(np.array(-1e30, np.float32), "low")
    two = numpy_helper.from_array(np.ones((4, 2), np.float32), "W2")
    return _graph(decide, None, [*inits, low, two])


@pytest.mark.parametrize(
    ("nodes", "inits", "returned"),
    [
        ([helper.make_node("MatMul", ["images", "W"], ["bad"])], [_matmul(4, 3)], "(5, 3)"),
        (
            [
                helper.make_node("MatMul", ["images", "W2"], ["m"]),
                helper.make_node("Unsqueeze", ["m", "axes"], ["bad"]),
            ],
            [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
            "(5, 1, 1, 2)",
        ),
    ],
    ids=["3-d for a 2-d manifest", "a 4-D tensor"],
)
def test_a_graph_returning_the_wrong_shape_is_refused(
    exports, tmp_path: Path, nodes, inits, returned
) -> None:
    graph = _hand_made(_lying(nodes, inits), tmp_path / "export", exports)
    encoder = siamkit.load_encoder(graph)  # nothing says what the graph returns
    with pytest.raises(
        ModelFileError, match=re.escape(f"returned float32 {returned} for 5 inputs")
    ):
        encoder.embed(_vectors())


def test_a_graph_declaring_another_embedding_size_is_refused_on_load(
    exports, tmp_path: Path
) -> None:
    model = _graph(
        [helper.make_node("MatMul", ["images", "W"], ["embeddings"])], ["batch", 3], [_matmul(4, 3)]
    )
    graph = _hand_made(model, tmp_path / "export", exports)
    with pytest.raises(ModelFileError, match=r"returns tensor\(float\) of shape \['batch', 3\]"):
        siamkit.load_encoder(graph)


def test_non_finite_output_names_the_graph(exports, tmp_path: Path) -> None:
    zero = numpy_helper.from_array(np.zeros((4, 2), np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["images", "W"], ["m"]),
        helper.make_node("Div", ["m", "m"], ["embeddings"]),  # 0 / 0
    ]
    graph = _hand_made(_graph(nodes, ["batch", 2], [zero]), tmp_path / "export", exports)
    with pytest.raises(NonFiniteError, match=r"the ONNX graph .*m\.onnx produced NaN"):
        siamkit.load_encoder(graph).embed(_vectors())


def test_inputs_of_the_wrong_shape_are_a_shape_error(exports) -> None:
    vectors = siamkit.load_encoder(exports["vectors"])
    with pytest.raises(ShapeError, match=r"takes inputs of shape \(N, 4\)"):
        vectors.embed(np.zeros((3, 5), np.float32))
    with pytest.raises(ShapeError, match=r"all alike"):
        vectors.embed([np.zeros(4, np.float32), np.zeros(3, np.float32)])
    images = siamkit.load_encoder(exports["images"])
    with pytest.raises(ShapeError, match=r"\(N, 1, 56, 46\)"):
        images.embed(np.zeros((2, 3, 56, 46), np.float32))


# -- 4. a full disk during export ------------------------------------------------------
def _full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _half_written_then_full(path: Any, *args: Any, **kwargs: Any) -> None:
    Path(path).write_bytes(b"\x08\x07" * 100)  # the start of a graph, then the disk is full
    _full_disk()


def _program_class() -> type:
    module = pytest.importorskip("torch.onnx._internal.exporter._onnx_program")
    return module.ONNXProgram


@pytest.mark.parametrize("moment", ["graph", "manifest", "moving the manifest"])
def test_a_full_disk_leaves_the_earlier_export_as_it_was(
    exports, tmp_path: Path, monkeypatch, moment: str
) -> None:
    graph = _copy(exports["vectors"], tmp_path / "export")
    folder = graph.parent
    before = _snapshot(folder)
    if moment == "graph":
        monkeypatch.setattr(
            _program_class(), "save", lambda self, path, **kw: _half_written_then_full(path)
        )
    elif moment == "manifest":
        monkeypatch.setattr("siamkit.export.onnx.write_json", _half_written_then_full)
    else:
        real = os.replace

        def replace(source: Any, destination: Any) -> None:
            if Path(destination) == folder / "m.onnx.json":  # the graph is in place by now
                _full_disk()
            real(source, destination)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match=r"m\.onnx(\.json)?: No space left on device") as caught:
        _vector_encoder(seed=1).export_onnx(graph)
    assert caught.value.errno == errno.ENOSPC and "the earlier export there, if any," in str(
        caught.value
    )
    monkeypatch.undo()
    assert _snapshot(folder) == before  # nothing half-written, no staging left behind
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx", "m.onnx.json"]
    x = _vectors()
    expected = exports["vector_encoder"].embed(x)
    np.testing.assert_allclose(siamkit.load_encoder(graph).embed(x), expected, atol=PARITY)


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    model = _vector_encoder().save(tmp_path / "model")
    monkeypatch.setattr(_program_class(), "save", lambda self, path, **kw: _full_disk())
    code = main(["export", "--model", str(model), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("siamkit: error: cannot write ") and "No space left on device" in err
    assert "internal error" not in err and list((tmp_path / "out").iterdir()) == []


def test_a_killed_exports_staging_is_cleared_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".encoder.onnx.tmp").mkdir(parents=True)
    (out / ".encoder.onnx.tmp" / "encoder.onnx").write_bytes(b"half")
    _vector_encoder().export_onnx(out)
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "encoder.onnx.json"]


# -- 5. --out writes only where an export belongs ---------------------------------------
def test_export_refuses_a_model_folder(tmp_path: Path, capsys) -> None:
    encoder = _vector_encoder()
    model = encoder.save(tmp_path / "model")
    before = _snapshot(model)
    code = main(["export", "--model", str(model), "--out", str(model)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not from a siamkit export (encoder-" in err and "encoder.json" in err
    with pytest.raises(ConfigError, match="pick a new or empty folder"):
        encoder.export_onnx(model)  # the library refuses too
    assert _snapshot(model) == before
    assert isinstance(siamkit.load_encoder(model), siamkit.Encoder)


def test_a_model_folder_an_older_siamkit_exported_into_loads_the_model(tmp_path: Path) -> None:
    encoder = _vector_encoder()
    graph = encoder.export_onnx(tmp_path / "export")
    model = _vector_encoder(seed=1).save(tmp_path / "export")  # re-saved over it, as before
    assert model == graph.parent
    reloaded = siamkit.load_encoder(model)
    assert isinstance(reloaded, siamkit.Encoder)  # the model, not the stale graph
    assert reloaded.fingerprint() == _vector_encoder(seed=1).fingerprint()
    assert isinstance(siamkit.load_encoder(graph), OnnxEncoder)  # the file still loads


@pytest.mark.parametrize("name", ["notes.txt", "notes", "foreign.onnx", "x.onnx.json"])
def test_export_refuses_to_overwrite_a_file_it_did_not_write(
    tmp_path: Path, capsys, name: str
) -> None:
    model = _vector_encoder().save(tmp_path / "model")
    (tmp_path / name).write_bytes(b"precious")
    out = tmp_path / ("x.onnx" if name.endswith(".json") else name)
    code = main(["export", "--model", str(model), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Errno" not in err
    assert "cannot export" in err and (" name a new .onnx file" in err or "move it away" in err)
    assert (tmp_path / name).read_bytes() == b"precious"
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "foreign.onnx.json").exists()


def test_export_replaces_an_earlier_export_and_keeps_evaluations(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _vector_encoder(seed=0).export_onnx(out)
    (out / "evaluation").mkdir()  # what `siamkit eval --model out` writes
    (out / "evaluation" / "evaluation.json").write_text("{}")
    new = _vector_encoder(seed=1)
    graph = new.export_onnx(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "encoder.onnx",
        "encoder.onnx.json",
        "evaluation",
    ]
    assert siamkit.load_encoder(out).fingerprint() == new.fingerprint()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not from a siamkit export \(notes\.txt\)"):
        new.export_onnx(out)
    assert graph.is_file()


def test_export_under_a_file_is_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"notes\.txt is a file, not a folder"):
        _vector_encoder().export_onnx(tmp_path / "notes.txt" / "sub" / "m.onnx")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_batches_of_large_inputs_are_split_to_bound_memory(exports, monkeypatch) -> None:
    encoder = siamkit.load_encoder(exports["vectors"])
    x = _vectors(5)
    expected = encoder.embed(x)
    sizes: list[int] = []
    run = encoder._run
    monkeypatch.setattr(encoder, "_run", lambda batch: sizes.append(len(batch)) or run(batch))
    monkeypatch.setattr("siamkit.runtime.onnx.MAX_BATCH_BYTES", 2 * 4 * 4)  # two vectors of 4
    np.testing.assert_array_equal(encoder.embed(x, batch_size=64), expected)
    assert sizes == [2, 2, 1]
