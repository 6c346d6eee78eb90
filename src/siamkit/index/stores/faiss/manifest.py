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
from pathlib import Path
from typing import Any

from siamkit.exceptions import ConfigError, IndexFileError
from siamkit.geometry import METRICS
from siamkit.index._inputs import check_id, check_label
from siamkit.index.gallery_record import (
    encoder_problems,
    is_hex64,
    is_int,
    is_notes,
    threshold_problems,
)
from siamkit.index.stores.faiss.engine import IndexSpec

FORMAT_NAME = "siamkit-face-index"
#: Version 2 added the manifest's own checksum, version 3 the 1:N threshold
#: (``identify_threshold``, ``fpir_calibration``); older files still load.
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = frozenset({1, 2, 3})
CHECKSUM_KEY = "manifest_sha256"
#: The largest embedding size accepted from a file (FAISS itself handles more).
MAX_DIM = 1 << 16
_FILE_KINDS = {"vectors": ".npy", "records": ".json", "faiss": ".faiss"}
_RECORD_KEYS = frozenset({"ids", "labels", "metadata", "removed", "next_id"})
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
def _positive_or_none(value: Any) -> bool:
    return value is None or (is_int(value) and value > 0)


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
    "format_version": lambda v: is_int(v) and v in SUPPORTED_VERSIONS,
    "siamkit_version": lambda v: isinstance(v, str),
    "faiss_version": lambda v: isinstance(v, str),
    "dim": lambda v: is_int(v) and 0 < v <= MAX_DIM,
    "metric": lambda v: v in METRICS,
    "normalised": lambda v: isinstance(v, bool),
    "index": _valid_spec,
    "params": lambda v: isinstance(v, dict),
    "rows": lambda v: is_int(v) and v >= 0,
    "count": lambda v: is_int(v) and v >= 0,
    "threshold": lambda v: v is None or isinstance(v, (int, float)),
    "calibration": lambda v: v is None or isinstance(v, dict),
    "encoder": lambda v: v is None or isinstance(v, dict),
    "extra": is_notes,
    "files": lambda v: isinstance(v, dict),
}
#: Fields added by format version 3.
_FIELDS_V3: dict[str, Callable[[Any], bool]] = {
    "identify_threshold": lambda v: v is None or isinstance(v, (int, float)),
    "fpir_calibration": lambda v: v is None or isinstance(v, dict),
}


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
    checks = (_geometry_problems, _params_problems, threshold_problems, encoder_problems,
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
    if not (is_int(trained) and 0 <= trained <= manifest["rows"]):
        problems.append(f"invalid trained_rows {trained!r}")
    for key in ("ef_search", "nprobe"):
        if not _positive_or_none(params[key]):
            problems.append(f"invalid {key} {params[key]!r}")
    return problems


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
        and is_hex64(entry["sha256"])
        and entry["name"] == data_file_name(kind, entry["sha256"])
        and is_int(entry["bytes"])
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
    if not isinstance(removed, list) or not all(is_int(r) and 0 <= r < rows for r in removed):
        raise ValueError("removed rows must be row numbers of the index")
    if len(set(removed)) != len(removed) or rows - len(removed) != manifest["count"]:
        raise ValueError(f"{len(removed)} removed rows of {rows} disagree with count")
    live = set(range(rows)) - set(removed)
    if len({ids[row] for row in live}) != len(live):
        raise ValueError("an id is repeated among the items")
    if not (is_int(records["next_id"]) and records["next_id"] >= 0):
        raise ValueError(f"invalid next_id {records['next_id']!r}")
    return {**records, "ids": ids, "labels": labels, "removed": sorted(removed)}


def _list_of(records: dict[str, Any], key: str, rows: int) -> list[Any]:
    value = records[key]
    if not isinstance(value, list) or len(value) != rows:
        raise ValueError(f"{key} must be a list of {rows}, one per row")
    return value
