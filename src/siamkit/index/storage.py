"""Crash-safe files of a saved face index.

Layout of an index directory::

    face_index.json               the manifest: versions, geometry, settings, checksums
    vectors-<sha256[:16]>.npy     stored vectors, one row per item (removed rows kept)
    records-<sha256[:16]>.json    ids, labels, metadata, removed rows, next automatic id
    faiss-<sha256[:16]>.faiss     the FAISS index (absent for "flat": rebuilt on load)

Data files are named by their content's hash and written (fsynced) before the
manifest, which is replaced last by an atomic rename; files the new manifest
does not name are deleted only after that. A process killed at any moment
leaves the old manifest with its old files, or the new one with its new
files: always a loadable index, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from siamkit._atomic import _fsync_dir, sha256_file, write_json
from siamkit._manifest import read_manifest as read_json_manifest
from siamkit.exceptions import IndexFileError
from siamkit.geometry import METRICS

MANIFEST = "face_index.json"
FORMAT_NAME = "siamkit-face-index"
FORMAT_VERSION = 1
_DATA_FILE = re.compile(r"^(vectors|records|faiss)-[0-9a-f]{16}\.(npy|json|faiss)$")
_TEMP_PREFIX = ".face_index-"
_LOCK_FILE = ".face_index.lock"


class _HashingWriter:
    """A write-only file object that also hashes and counts what goes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)


def write_data_file(
    directory: Path, stem: str, suffix: str, writer: Callable[[_HashingWriter], Any]
) -> dict[str, Any]:
    """Write a file named by its content hash, durably; returns its manifest entry."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            hashing = _HashingWriter(handle)
            writer(hashing)
            handle.flush()
            os.fsync(handle.fileno())
        sha = hashing.digest.hexdigest()
        name = f"{stem}-{sha[:16]}{suffix}"
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return {"name": name, "sha256": sha, "bytes": hashing.size}


def save_index_files(
    directory: Path,
    manifest: dict[str, Any],
    vectors: np.ndarray,
    records: dict[str, Any],
    write_faiss: Callable[[Callable[[bytes], Any]], None] | None,
) -> None:
    """Write data files, then the manifest naming them, then delete stale files."""
    directory.mkdir(parents=True, exist_ok=True)
    _refuse_foreign(directory)
    with _directory_lock(directory):
        files = {
            "vectors": write_data_file(
                directory, "vectors", ".npy", lambda f: np.save(f, vectors, allow_pickle=False)
            ),
            "records": write_data_file(
                directory, "records", ".json", lambda f: f.write(json.dumps(records).encode())
            ),
        }
        if write_faiss is not None:
            files["faiss"] = write_data_file(
                directory, "faiss", ".faiss", lambda f: write_faiss(f.write)
            )
        _fsync_dir(directory)
        write_json(directory / MANIFEST, {**manifest, "files": files})
        _collect_garbage(directory, keep={entry["name"] for entry in files.values()})


def _refuse_foreign(directory: Path) -> None:
    path = directory / MANIFEST
    if path.exists():
        read_manifest(directory)  # refuses what is not (or is a newer) face index
        return
    if any(directory.iterdir()) and not any(
        _DATA_FILE.match(p.name) or p.name.startswith(".face_index") for p in directory.iterdir()
    ):
        raise IndexFileError(
            f"{directory} is a non-empty folder that holds no face index: save the "
            "index into a new or empty folder"
        )


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    # Two processes saving into one folder would otherwise delete each other's
    # fresh files; fcntl is POSIX-only, and elsewhere saves are not serialised.
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(directory / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _collect_garbage(directory: Path, keep: set[str]) -> None:
    for path in directory.iterdir():
        stale_data = _DATA_FILE.match(path.name) and path.name not in keep
        stale_temp = path.name.startswith((_TEMP_PREFIX, f".{MANIFEST}.")) and path.name.endswith(
            ".tmp"
        )
        if stale_data or stale_temp:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# -- loading --------------------------------------------------------------------------
def read_manifest(directory: Path) -> dict[str, Any]:
    """The checked manifest of the index saved in ``directory``."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise IndexFileError(f"face index folder {directory} does not exist")
    manifest = read_json_manifest(
        path,
        format_name=FORMAT_NAME,
        max_version=FORMAT_VERSION,
        error=IndexFileError,
        what="face index manifest",
        missing=f"{directory} is not a saved face index: {MANIFEST} is missing. Pass the "
        "folder written by FaceIndex.save() or `siamkit index build --out`",
        resave="save or build the index again",
    )
    _check_manifest_fields(path, manifest)
    return manifest


def _check_manifest_fields(path: Path, manifest: dict[str, Any]) -> None:
    checks = {
        "dim": lambda v: isinstance(v, int) and v > 0,
        "metric": lambda v: v in METRICS,
        "index": lambda v: isinstance(v, str) and bool(v),
        "rows": lambda v: isinstance(v, int) and v >= 0,
        "files": lambda v: isinstance(v, dict) and {"vectors", "records"} <= set(v),
        "params": lambda v: isinstance(v, dict),
    }
    bad = [key for key, ok in checks.items() if not ok(manifest.get(key))]
    if bad:
        raise IndexFileError(
            f"{path} is damaged: missing or invalid {', '.join(bad)}; save or build the index again"
        )


def load_index_files(
    directory: Path,
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any], Any]:
    """``(manifest, vectors, records, faiss index or None)``, every file checked."""
    for attempt in range(3):
        manifest = read_manifest(directory)
        try:
            return manifest, *_load_data(directory, manifest)
        except FileNotFoundError as err:
            # A save in another process may have just replaced the files: retry
            # with its manifest; a file missing for good is reported.
            if attempt == 2 or read_manifest(directory) == manifest:
                raise IndexFileError(
                    f"{err.filename} is missing from the face index in {directory}; "
                    "save or build the index again"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _load_data(directory: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, dict, Any]:
    files = manifest["files"]
    vectors_path = _checked_file(directory, files["vectors"])
    records_path = _checked_file(directory, files["records"])
    faiss_path = _checked_file(directory, files["faiss"]) if files.get("faiss") else None
    try:
        vectors = np.load(vectors_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise IndexFileError(f"cannot read {vectors_path}: {err}") from None
    if vectors.dtype != np.float32 or vectors.shape != (manifest["rows"], manifest["dim"]):
        raise IndexFileError(
            f"{vectors_path} holds {vectors.dtype} {vectors.shape}, the manifest says "
            f"float32 ({manifest['rows']}, {manifest['dim']}); save or build the index again"
        )
    try:
        records = json.loads(records_path.read_text())
    except (OSError, ValueError) as err:
        raise IndexFileError(f"cannot read {records_path}: {err}") from None
    index = None
    if faiss_path is not None:
        try:
            index = faiss.read_index(str(faiss_path))
        except RuntimeError as err:
            raise IndexFileError(f"cannot read the FAISS index {faiss_path}: {err}") from None
    return vectors, records, index


def _checked_file(directory: Path, entry: Any) -> Path:
    if not isinstance(entry, dict) or not _DATA_FILE.match(str(entry.get("name", ""))):
        raise IndexFileError(f"{directory / MANIFEST} names an invalid data file: {entry!r}")
    path = directory / entry["name"]
    if not path.is_file():
        raise FileNotFoundError(2, "missing", str(path))
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise IndexFileError(
            f"{path} has {size} bytes, {entry.get('bytes')} were saved: the file is truncated "
            "or was replaced; save or build the index again"
        )
    if sha256_file(path) != entry.get("sha256"):
        raise IndexFileError(
            f"{path} does not match its checksum in {MANIFEST}: the file is corrupted or "
            "was replaced; save or build the index again"
        )
    return path
