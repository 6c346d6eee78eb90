"""The on-disk schema of a saved face index: its manifest and records, built and checked here.

A saved index may come from anywhere, so everything read back is checked
completely before it is used: every field's type and range, no unknown or
missing key, the manifest's own checksum, and the agreement of fields with
one another (counts, file names, the calibration with the threshold).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from siamkit._manifest import check_json_depth
from siamkit.exceptions import ConfigError, IndexFileError
from siamkit.geometry import METRICS
from siamkit.index._inputs import MAX_METADATA_DEPTH, check_id, check_label
from siamkit.index.backends import IndexSpec
from siamkit.index.calibration import check_far, check_fpir, check_threshold
from siamkit.index.results import Calibration
from siamkit.thresholds import FpirCalibration

FORMAT_NAME = "siamkit-face-index"
#: Version 2 added the manifest's own checksum, version 3 the 1:N threshold
#: (``identify_threshold``, ``fpir_calibration``); older files still load.
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = frozenset({1, 2, 3})
CHECKSUM_KEY = "manifest_sha256"
#: The largest embedding size accepted from a file (FAISS itself handles more).
MAX_DIM = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE_KINDS = {"vectors": ".npy", "records": ".json", "faiss": ".faiss"}
_RECORD_KEYS = frozenset({"ids", "labels", "metadata", "removed", "next_id"})
_ENCODER_KEYS = frozenset({"fingerprint", "class", "embedding_dim"})
_PARAM_KEYS = frozenset({"trained_rows", "ef_search", "nprobe"})


def data_file_name(kind: str, sha256: str) -> str:
    """The name of a data file: its kind and the start of its content's hash.

    Examples:
        >>> data_file_name("vectors", "ab" * 32)
        'vectors-abababababababab.npy'
    """
    return f"{kind}-{sha256[:16]}{_FILE_KINDS[kind]}"


def is_data_file_name(name: str) -> bool:
    """True for a name :func:`data_file_name` could give (a plain name, no path).

    Examples:
        >>> is_data_file_name("records-0123456789abcdef.json"), is_data_file_name("../x.npy")
        (True, False)
    """
    match = _DATA_FILE.fullmatch(name)
    return match is not None and _FILE_KINDS[match.group(1)] == f".{match.group(2)}"


_DATA_FILE = re.compile(r"(vectors|records|faiss)-[0-9a-f]{16}\.(npy|json|faiss)")


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, its own checksum field left out.

    Examples:
        >>> manifest_checksum({"a": 1}) == manifest_checksum({"a": 1, CHECKSUM_KEY: "x"})
        True
    """
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_checksum(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its checksum field set, ready to write.

    Examples:
        >>> len(with_checksum({"a": 1})[CHECKSUM_KEY])
        64
    """
    return {**manifest, CHECKSUM_KEY: manifest_checksum(manifest)}


# -- the manifest ---------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_or_none(value: Any) -> bool:
    return value is None or (_is_int(value) and value > 0)


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_notes(value: Any) -> bool:
    """True for ``extra`` notes ``FaceIndex.save`` would write: a dict, nested within bounds."""
    if not isinstance(value, dict):
        return False
    try:
        check_json_depth(value, MAX_METADATA_DEPTH)
    except ValueError:
        return False
    return True


def _valid_spec(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        return False
    try:
        IndexSpec.parse(value)
    except ConfigError:
        return False
    return True


_FIELDS: dict[str, Callable[[Any], bool]] = {
    "format": lambda v: v == FORMAT_NAME,
    "format_version": lambda v: _is_int(v) and v in SUPPORTED_VERSIONS,
    "siamkit_version": lambda v: isinstance(v, str),
    "faiss_version": lambda v: isinstance(v, str),
    "dim": lambda v: _is_int(v) and 0 < v <= MAX_DIM,
    "metric": lambda v: v in METRICS,
    "normalised": lambda v: isinstance(v, bool),
    "index": _valid_spec,
    "params": lambda v: isinstance(v, dict),
    "rows": lambda v: _is_int(v) and v >= 0,
    "count": lambda v: _is_int(v) and v >= 0,
    "threshold": lambda v: v is None or isinstance(v, (int, float)),
    "calibration": lambda v: v is None or isinstance(v, dict),
    "encoder": lambda v: v is None or isinstance(v, dict),
    "extra": _is_notes,
    "files": lambda v: isinstance(v, dict),
}
#: Fields added by format version 3.
_FIELDS_V3: dict[str, Callable[[Any], bool]] = {
    "identify_threshold": lambda v: v is None or isinstance(v, (int, float)),
    "fpir_calibration": lambda v: v is None or isinstance(v, dict),
}
_FPIR_SOURCES = ("leave-one-person-out", "probes")


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest with a missing, unknown, mistyped or inconsistent field.

    Raises:
        IndexFileError: naming the first problem found.

    Examples:
        >>> check_manifest({"format": FORMAT_NAME, "format_version": 2}, Path("m.json"))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.IndexFileError: m.json is damaged or was edited: ...
    """
    problems = _manifest_problems(manifest)
    if problems:
        raise IndexFileError(
            f"{path} is damaged or was edited: {'; '.join(problems[:3])}. Save or build the "
            "index again"
        )


def _manifest_problems(manifest: dict[str, Any]) -> list[str]:
    version = manifest.get("format_version")
    checks = {**_FIELDS, **(_FIELDS_V3 if version == 3 else {})}
    expected = set(checks) | ({CHECKSUM_KEY} if version != 1 else set())
    problems = [f"unknown field {key!r}" for key in sorted(set(manifest) - expected)]
    problems += [f"missing field {key!r}" for key in sorted(expected - set(manifest))]
    problems += [
        f"invalid {key} {manifest[key]!r}"
        for key, ok in checks.items()
        if key in manifest and not ok(manifest[key])
    ]
    if problems:
        return problems
    if CHECKSUM_KEY in manifest and manifest[CHECKSUM_KEY] != manifest_checksum(manifest):
        return ["its checksum does not match its content"]
    checks = (_geometry_problems, _params_problems, _threshold_problems, _encoder_problems,
              _files_problems)  # fmt: skip
    for check in checks:  # in order: later checks rely on the fields the earlier ones passed
        problems = check(manifest)
        if problems:
            return problems
    return []


def _geometry_problems(manifest: dict[str, Any]) -> list[str]:
    problems = []
    if manifest["normalised"] != (manifest["metric"] == "cosine"):
        problems.append(f"normalised={manifest['normalised']} with the {manifest['metric']} metric")
    if manifest["count"] > manifest["rows"]:
        problems.append(f"count {manifest['count']} above rows {manifest['rows']}")
    return problems


def _params_problems(manifest: dict[str, Any]) -> list[str]:
    params = manifest["params"]
    if set(params) != _PARAM_KEYS:
        return [f"params must have exactly the keys {sorted(_PARAM_KEYS)}, has {sorted(params)}"]
    problems = []
    trained = params["trained_rows"]
    if not (_is_int(trained) and 0 <= trained <= manifest["rows"]):
        problems.append(f"invalid trained_rows {trained!r}")
    for key in ("ef_search", "nprobe"):
        if not _positive_or_none(params[key]):
            problems.append(f"invalid {key} {params[key]!r}")
    return problems


def _threshold_problems(manifest: dict[str, Any]) -> list[str]:
    threshold, calibration = manifest["threshold"], manifest["calibration"]
    problems = []
    if threshold is not None:
        try:
            check_threshold(threshold)
        except ConfigError:
            problems.append(f"invalid threshold {threshold!r}")
    if calibration is not None:
        problems += _calibration_problems(calibration, threshold)
    if "identify_threshold" in manifest:
        problems += _identify_problems(manifest["identify_threshold"], manifest["fpir_calibration"])
    return problems


def _identify_problems(threshold: Any, fit: dict[str, Any] | None) -> list[str]:
    problems = []
    if threshold is not None:
        try:
            check_threshold(threshold)
        except ConfigError:
            problems.append(f"invalid identify_threshold {threshold!r}")
    if fit is not None and not _valid_fpir_calibration(fit, threshold):
        problems.append(f"invalid fpir_calibration {fit!r}")
    return problems


def _valid_fpir_calibration(fit: dict[str, Any], threshold: Any) -> bool:
    names = {f.name for f in fields(FpirCalibration)}
    # "warnings" came with issue 18: files saved before lack it.
    if not names - {"warnings"} <= set(fit) <= names or not _valid_warnings(fit):
        return False
    counts = ("num_mated", "num_non_mated", "gallery_size", "gallery_people")
    ok = (
        all(_is_int(fit[k]) and fit[k] >= 0 for k in counts)
        and fit["num_non_mated"] > 0
        and fit["gallery_size"] >= fit["gallery_people"] >= 1
        and _is_rate(fit["fpir"])
        and all(fit[k] is None or _is_rate(fit[k]) for k in ("fnir", "misidentified"))
        and (fit["fnir"] is None) == (fit["num_mated"] == 0)
        and (fit["misidentified"] is None) == (fit["fnir"] is None)
        and isinstance(fit["reliable"], bool)
        and fit["source"] in _FPIR_SOURCES
        and fit["threshold"] == threshold
    )
    try:
        check_fpir(fit["target_fpir"])
    except (ConfigError, TypeError, ValueError):
        return False
    return ok


def _valid_warnings(fit: dict[str, Any]) -> bool:
    """A calibration's warnings, when present: a short list of strings (a tuple in memory)."""
    found = fit.get("warnings", [])
    return (
        isinstance(found, (list, tuple))
        and len(found) <= 16
        and all(isinstance(w, str) for w in found)
    )


def record_problems(meta: dict[str, Any], dim: int | None) -> list[str]:
    """What is wrong with a gallery record kept outside a manifest (a collection property).

    The checks a manifest's thresholds, calibrations and encoder block pass
    (:func:`check_manifest`), for a record a person may have edited by hand.

    Examples:
        >>> record_problems({"threshold": 0.5, "extra": "notes"}, 8)
        ["invalid extra 'notes'"]
    """
    threshold, calibration = meta.get("threshold"), meta.get("calibration")
    fit, encoder = meta.get("fpir_calibration"), meta.get("encoder")
    problems = []
    if calibration is not None and not isinstance(calibration, dict):
        problems.append(f"invalid calibration {calibration!r}")
    if fit is not None and not isinstance(fit, dict):
        problems.append(f"invalid fpir_calibration {fit!r}")
    if encoder is not None and not isinstance(encoder, dict):
        problems.append(f"invalid encoder block {encoder!r}")
    if problems:
        return problems
    record = {"identify_threshold": None, "fpir_calibration": None, **meta}
    problems += _threshold_problems({**record, "threshold": threshold, "calibration": calibration})
    if encoder is not None:
        own_dim = dim if dim is not None else encoder.get("embedding_dim")
        problems += _encoder_problems({"encoder": encoder, "dim": own_dim})
    extra, next_id = meta.get("extra", {}), meta.get("next_id", 0)
    if isinstance(extra, dict) and not _is_notes(extra):
        problems.append(f"extra nested deeper than {MAX_METADATA_DEPTH} levels")
    elif not isinstance(extra, dict):
        problems.append(f"invalid extra {extra!r}")
    if not (_is_int(next_id) and next_id >= 0):
        problems.append(f"invalid next_id {next_id!r}")
    return problems


def _calibration_problems(calibration: dict[str, Any], threshold: Any) -> list[str]:
    names = {f.name for f in fields(Calibration)}
    # "warnings" came with issue 18: files saved before lack it.
    if not names - {"warnings"} <= set(calibration) <= names:
        return [f"calibration must have exactly the keys {sorted(names)}"]
    if not _valid_warnings(calibration):
        return [f"invalid calibration warnings {calibration['warnings']!r}"]
    counts, rates = ("num_genuine", "num_impostor"), ("far", "tar")
    ok = (
        all(_is_int(calibration[k]) and calibration[k] >= 0 for k in counts)
        and all(_is_rate(calibration[k]) for k in rates)
        and isinstance(calibration["reliable"], bool)
        and calibration["source"] in ("gallery", "pairs")
        and calibration["threshold"] == threshold
    )
    try:
        check_far(calibration["target_far"])
    except (ConfigError, TypeError, ValueError):
        ok = False
    return [] if ok else [f"invalid calibration {calibration!r}"]


def _encoder_problems(manifest: dict[str, Any]) -> list[str]:
    encoder = manifest["encoder"]
    if encoder is None:
        return []
    ok = (
        set(encoder) == _ENCODER_KEYS
        and _is_hex64(encoder["fingerprint"])
        and isinstance(encoder["class"], str)
        and encoder["embedding_dim"] == manifest["dim"]
        and _is_int(encoder["embedding_dim"])
    )
    return [] if ok else [f"invalid encoder block {encoder!r}"]


def _files_problems(manifest: dict[str, Any]) -> list[str]:
    files = manifest["files"]
    kinds = set(files)
    if not {"vectors", "records"} <= kinds <= set(_FILE_KINDS):
        return [f"files must name vectors, records and optionally faiss, not {sorted(kinds)}"]
    problems = [
        f"invalid {kind} file entry {entry!r}"
        for kind, entry in files.items()
        if not _valid_file_entry(kind, entry)
    ]
    # The FAISS file is saved exactly when a non-flat FAISS index was built.
    built = (
        IndexSpec.parse(manifest["index"]).kind != "flat" and manifest["params"]["trained_rows"] > 0
    )
    if built != ("faiss" in files):
        problems.append("a FAISS file " + ("is missing" if built else "is named but never saved"))
    return problems


def _valid_file_entry(kind: str, entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and set(entry) == {"name", "sha256", "bytes"}
        and _is_hex64(entry["sha256"])
        and entry["name"] == data_file_name(kind, entry["sha256"])
        and _is_int(entry["bytes"])
        and entry["bytes"] >= 0
    )


# -- the records ----------------------------------------------------------------------
def check_records(records: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """The records file's content, checked against the manifest; ids and labels typed.

    Raises:
        IndexFileError: a missing or unknown key, a length that disagrees with
            the rows, a bad id, label or metadata, removed rows out of range, a
            count that is not rows minus removed, or a repeated live id.

    Examples:
        >>> m = {"rows": 1, "count": 1}
        >>> check_records({"ids": [0], "labels": ["a"], "metadata": [{}], "removed": [],
        ...                "next_id": 1}, m)["labels"]
        ['a']
    """
    try:
        return _checked_records(records, manifest)
    except (ConfigError, TypeError, ValueError) as err:
        raise IndexFileError(
            f"the index's records are damaged or were edited ({err}); save or build it again"
        ) from None


def _checked_records(records: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(records, dict) or set(records) != _RECORD_KEYS:
        raise ValueError(f"the records must have exactly the keys {sorted(_RECORD_KEYS)}")
    rows = manifest["rows"]
    ids = [check_id(i) for i in _list_of(records, "ids", rows)]
    labels = [check_label(label) for label in _list_of(records, "labels", rows)]
    metadata = _list_of(records, "metadata", rows)
    if not all(isinstance(meta, dict) for meta in metadata):
        raise ValueError("every item's metadata must be a JSON object")
    removed = records["removed"]
    if not isinstance(removed, list) or not all(_is_int(r) and 0 <= r < rows for r in removed):
        raise ValueError("removed rows must be row numbers of the index")
    if len(set(removed)) != len(removed) or rows - len(removed) != manifest["count"]:
        raise ValueError(f"{len(removed)} removed rows of {rows} disagree with count")
    live = set(range(rows)) - set(removed)
    if len({ids[row] for row in live}) != len(live):
        raise ValueError("an id is repeated among the items")
    if not (_is_int(records["next_id"]) and records["next_id"] >= 0):
        raise ValueError(f"invalid next_id {records['next_id']!r}")
    return {**records, "ids": ids, "labels": labels, "removed": sorted(removed)}


def _list_of(records: dict[str, Any], key: str, rows: int) -> list[Any]:
    value = records[key]
    if not isinstance(value, list) or len(value) != rows:
        raise ValueError(f"{key} must be a list of {rows}, one per row")
    return value
