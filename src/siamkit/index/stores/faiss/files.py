"""Crash-safe files of a saved face index, and their checked loading.

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

Loading trusts nothing: the manifest's schema and checksum
(:mod:`siamkit.index.stores.faiss.manifest`), each file's size and checksum, the vectors'
header, the records, and the FAISS file's header and body
(:mod:`siamkit.index.stores.faiss.reading`). Each file is opened once and checked and
read through that one handle, so a save in another process that deletes it
meanwhile cannot pull it away; a load that finds a file already gone starts
over with the new manifest.

Writers exclude each other with an advisory lock on ``.face_index.lock`` in
the folder (:func:`folder_lock`): ``fcntl.flock`` on POSIX, ``msvcrt.locking``
on Windows. A save holds it while it writes; :meth:`FaceIndex.update
<siamkit.index.FaceIndex.update>` and the CLI hold it from load to save, so
two read-modify-write changes never lose one another's items. Loads never
take it. The system releases it when its process dies, so a killed writer
leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from siamkit._atomic import fsync_dir, honour_umask, write_json
from siamkit._locks import acquire, release
from siamkit._manifest import parse_json
from siamkit._manifest import read_manifest as read_json_manifest
from siamkit.exceptions import IndexFileError, LockTimeoutError, NonFiniteError, WriteError
from siamkit.index._inputs import MAX_METADATA_DEPTH, check_vectors
from siamkit.index.stores.faiss import manifest as _schema
from siamkit.index.stores.faiss.engine import IndexSpec
from siamkit.index.stores.faiss.reading import read_faiss_index

MANIFEST = "face_index.json"
FORMAT_NAME = _schema.FORMAT_NAME
FORMAT_VERSION = _schema.FORMAT_VERSION
_TEMP_PREFIX = ".face_index-"
_LOCK_FILE = ".face_index.lock"
#: A load retries this many times when saves in other processes keep replacing the files.
LOAD_ATTEMPTS = 20
#: Seconds a writer waits for another process's lock on the folder before giving up.
LOCK_TIMEOUT = 120.0
# The records file nests metadata two levels down: the records, then the list of them.
_RECORDS_DEPTH = MAX_METADATA_DEPTH + 2
#: Stored cosine vectors are unit vectors (or zero); this much rounding is allowed.
_UNIT_TOLERANCE = 1e-3


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
    directory: Path, kind: str, writer: Callable[[_HashingWriter], Any]
) -> dict[str, Any]:
    """Write a file named by its content hash, durably; returns its manifest entry."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as handle:
            hashing = _HashingWriter(handle)
            writer(hashing)
            handle.flush()
            os.fsync(handle.fileno())
        sha = hashing.digest.hexdigest()
        name = _schema.data_file_name(kind, sha)
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
    *,
    expected: str | None = None,
    timeout: float = LOCK_TIMEOUT,
) -> str:
    """Write data files, then the manifest naming them, then delete stale files.

    Args:
        directory: The index folder (made if missing).
        manifest: The manifest, without ``files`` and its checksum.
        vectors: The stored vectors.
        records: The records file's content.
        write_faiss: Writes the FAISS index through a ``write(bytes)`` callback, or None.
        expected: :func:`manifest_token` of the manifest the caller loaded
            from ``directory``; the save is refused if another one replaced it
            since. None: overwrite whatever is there (a first save).
        timeout: Seconds to wait for another writer's lock on the folder.

    Returns:
        The new manifest's :func:`manifest_token`.

    Raises:
        IndexFileError: ``directory`` holds something else than a face index,
            or another save replaced the one loaded (nothing is written).
        LockTimeoutError: another process held the folder's lock past ``timeout``.
    """
    with folder_lock(directory, timeout, create=True):
        if expected is not None:
            _refuse_lost_update(directory, expected)
        files = {
            "vectors": write_data_file(
                directory, "vectors", lambda f: np.save(f, vectors, allow_pickle=False)
            ),
            "records": write_data_file(
                directory, "records", lambda f: f.write(json.dumps(records).encode())
            ),
        }
        if write_faiss is not None:
            files["faiss"] = write_data_file(directory, "faiss", lambda f: write_faiss(f.write))
        fsync_dir(directory)
        written = _schema.with_checksum({**manifest, "files": files})
        write_json(directory / MANIFEST, written)
        _collect_garbage(directory, keep={entry["name"] for entry in files.values()})
    return manifest_token(written)


def manifest_token(manifest: dict[str, Any]) -> str:
    """What identifies one save of an index: the checksum of its manifest's content.

    Any change to the items changes a data file's checksum, so its name in the
    manifest: two saves with equal tokens hold the same gallery.

    Examples:
        >>> manifest_token({"a": 1}) == manifest_token({"a": 1})
        True
    """
    return _schema.manifest_checksum(manifest)


def _refuse_lost_update(directory: Path, expected: str) -> None:
    if not (directory / MANIFEST).exists():
        return  # the index was deleted: saving it again loses nothing
    if manifest_token(read_manifest(directory)) != expected:
        raise IndexFileError(
            f"the face index in {directory} was saved by another process (or another "
            "FaceIndex) after this one was loaded from it: saving now would silently drop "
            "that save's changes, so nothing was written. Load the folder again and repeat "
            "the change, or make changes inside `with FaceIndex.update(folder) as index:`, "
            "which keeps other writers out from load to save"
        )


def check_index_folder(directory: str | os.PathLike) -> None:
    """Refuse, before any work, a place a face index cannot be saved: the same rule as a save.

    A missing or empty folder, or one holding a face index (which a save
    replaces), passes. Call it before a long enrolment whose result goes there.

    Raises:
        IndexFileError: ``directory`` is a file, holds files that are not a
            face index's, or holds a damaged face index or one from a newer siamkit.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> check_index_folder(folder)
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> check_index_folder(folder)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.IndexFileError: ... is a non-empty folder that holds no face index: ...
    """
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise IndexFileError(
            f"{directory} is a file, not a folder: save the index into a new or empty folder"
        )
    if (directory / MANIFEST).exists():
        read_manifest(directory)  # refuses what is not (or is a newer) face index
        return
    if any(directory.iterdir()) and not any(
        _schema.is_data_file_name(p.name) or p.name.startswith(".face_index")
        for p in directory.iterdir()
    ):
        raise IndexFileError(
            f"{directory} is a non-empty folder that holds no face index: save the "
            "index into a new or empty folder"
        )


# -- the writers' lock -----------------------------------------------------------------
# The folders each thread holds the lock of, with how many times it entered it:
# the lock is re-entrant in its thread (a save inside FaceIndex.update), while
# another thread, which opens the lock file itself, waits as another process does.
_HELD = threading.local()


@contextlib.contextmanager
def folder_lock(
    directory: str | os.PathLike, timeout: float = LOCK_TIMEOUT, *, create: bool = False
) -> Iterator[None]:
    """Hold the write lock of the face index folder ``directory`` (re-entrant in a thread).

    Every writer of a FAISS index folder holds it while it saves; hold it from
    load to save to change an index without losing another process's change
    (:meth:`FaceIndex.update <siamkit.index.FaceIndex.update>` does). Loads do
    not take it, so searches never wait for a writer.

    Args:
        directory: The index folder.
        timeout: Seconds to wait for another holder (0: try once).
        create: Make the folder if it is missing; otherwise a missing folder is an error.

    Raises:
        IndexFileError: the folder is missing (``create`` off) or holds no face index.
        LockTimeoutError: another holder kept it past ``timeout``.
        WriteError: the lock file cannot be created (a read-only folder).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with folder_lock(folder):
        ...     with folder_lock(folder):  # the same thread may enter again
        ...         pass
    """
    directory = Path(directory)
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"the lock timeout must be 0 or more seconds, got {timeout}")
    check_index_folder(directory)  # before the lock file is made in someone else's folder
    if not directory.is_dir() and not create:
        raise IndexFileError(f"face index folder {directory} does not exist")
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_lock(directory, timeout) as locked:
        if not locked:
            raise LockTimeoutError(
                f"another process (or thread) has been writing the face index in {directory} "
                f"for more than {timeout:g} s (it holds {directory / _LOCK_FILE}): wait for "
                "it to finish and try again, or wait longer (the CLI's --lock-timeout)"
            )
        yield


@contextlib.contextmanager
def _directory_lock(directory: Path, timeout: float) -> Iterator[bool]:
    """Hold the folder's lock, waiting up to ``timeout`` s; yields False if another holds it."""
    stat = os.stat(directory)
    key = (stat.st_dev, stat.st_ino)
    held: dict[tuple[int, int], int] = _HELD.__dict__.setdefault("folders", {})
    if key in held:
        held[key] += 1
        try:
            yield True
        finally:
            held[key] -= 1
        return
    path = directory / _LOCK_FILE
    try:
        handle = open(path, "ab")  # noqa: SIM115 - closed below, after the unlock
    except OSError as err:
        raise WriteError(
            f"cannot create the lock file {path} ({err.strerror or err}): writing the "
            "index needs a folder this user can write to"
        ) from None
    with handle:
        if not acquire(handle, timeout):
            yield False
            return
        held[key] = 1
        try:
            yield True
        finally:
            del held[key]
            release(handle)


def _collect_garbage(directory: Path, keep: set[str]) -> None:
    for path in directory.iterdir():
        stale_data = _schema.is_data_file_name(path.name) and path.name not in keep
        if stale_data or _is_temporary(path.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _is_temporary(name: str) -> bool:
    return name.startswith((_TEMP_PREFIX, f".{MANIFEST}.")) and name.endswith(".tmp")


def remove_leftovers(directory: Path) -> None:
    """Delete temporary files of a save that was killed, unless a save is running now.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".face_index-x.tmp").write_bytes(b"half")
        >>> remove_leftovers(folder); sorted(p.name for p in folder.iterdir())
        ['.face_index.lock']
    """
    leftovers = [p for p in directory.iterdir() if _is_temporary(p.name)]
    if not leftovers:
        return
    # A read-only folder (a shared copy) cannot be cleaned, and need not be.
    with contextlib.suppress(OSError), _directory_lock(directory, timeout=0) as locked:
        for path in leftovers if locked else ():
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
    _schema.check_manifest(manifest, path)
    return manifest


def load_index_files(
    directory: Path,
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any], Any]:
    """``(manifest, vectors, records, faiss index or None)``, every file checked."""
    if directory.is_dir():  # a missing folder is reported by read_manifest
        remove_leftovers(directory)
    for attempt in range(LOAD_ATTEMPTS):
        manifest = read_manifest(directory)
        try:
            return manifest, *_load_data(directory, manifest)
        except FileNotFoundError as err:
            # A save in another process replaced the files after we read its
            # manifest: start over with the new one. A file missing for good
            # (the manifest unchanged) is reported.
            if attempt == LOAD_ATTEMPTS - 1 or read_manifest(directory) == manifest:
                raise IndexFileError(
                    f"{err.filename} is missing from the face index in {directory}; "
                    "save or build the index again"
                ) from None
            time.sleep(0.001 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _load_data(directory: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, dict, Any]:
    files = manifest["files"]
    with contextlib.ExitStack() as stack:
        handles = {
            kind: stack.enter_context(_open_checked(directory, entry))
            for kind, entry in files.items()
        }
        vectors = _read_vectors(handles["vectors"], manifest, directory / files["vectors"]["name"])
        records = _read_records(handles["records"], manifest, directory / files["records"]["name"])
        index = None
        if "faiss" in handles:
            expected = {
                "kind": IndexSpec.parse(manifest["index"]).kind,
                "dim": manifest["dim"],
                "rows": manifest["rows"],
                "metric": manifest["metric"],
            }
            try:
                index = read_faiss_index(handles["faiss"], files["faiss"]["bytes"], expected)
            except IndexFileError as err:
                raise IndexFileError(
                    f"{directory / files['faiss']['name']}: {err}; save or build the index again"
                ) from None
    return vectors, records, index


@contextlib.contextmanager
def _open_checked(directory: Path, entry: dict[str, Any]) -> Iterator[IO[bytes]]:
    """Open a data file and check its size and checksum through the same handle."""
    path = directory / entry["name"]  # a plain name: the schema checked its shape
    with open(path, "rb") as handle:  # FileNotFoundError: a save replaced it
        size = os.fstat(handle.fileno()).st_size
        if size != entry["bytes"]:
            raise IndexFileError(
                f"{path} has {size} bytes, {entry['bytes']} were saved: the file is truncated "
                "or was replaced; save or build the index again"
            )
        digest = hashlib.sha256()
        while block := handle.read(1 << 20):
            digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise IndexFileError(
                f"{path} does not match its checksum in {MANIFEST}: the file is corrupted or "
                "was replaced; save or build the index again"
            )
        handle.seek(0)
        yield handle


def _read_vectors(handle: IO[bytes], manifest: dict[str, Any], path: Path) -> np.ndarray:
    rows, dim = manifest["rows"], manifest["dim"]
    try:
        # The header first: a hostile one could ask np.load for any amount of memory.
        shape, fortran, dtype = _npy_header(handle)
        body = os.fstat(handle.fileno()).st_size - handle.tell()
        if shape != (rows, dim) or fortran or dtype != np.dtype("<f4") or body != rows * dim * 4:
            raise ValueError(f"it holds {dtype} {shape}, the manifest says float32 ({rows}, {dim})")
        vectors = np.fromfile(handle, dtype="<f4", count=rows * dim).reshape(rows, dim)
    except (OSError, ValueError) as err:
        raise IndexFileError(f"cannot read {path}: {err}; save or build the index again") from None
    _check_vector_values(vectors, manifest["metric"], path)
    return vectors.astype(np.float32, copy=False)


def _npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}  # fmt: skip
    version = np.lib.format.read_magic(handle)
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    return readers[version](handle)


def _check_vector_values(vectors: np.ndarray, metric: str, path: Path) -> None:
    try:
        check_vectors(vectors, "stored vectors")  # what add() refuses cannot come back
    except NonFiniteError as err:
        raise IndexFileError(f"{path}: {err}; save or build the index again") from None
    if metric == "cosine" and len(vectors):
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        if not (np.abs(norms - 1.0) <= _UNIT_TOLERANCE)[norms > 0].all():
            raise IndexFileError(
                f"{path} holds vectors that are not unit vectors, so they were not stored "
                "by a cosine index: the manifest's metric was edited; build the index again"
            )


def _read_records(handle: IO[bytes], manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        # Bounded nesting: a hand-made file nested 100,000 deep would raise RecursionError.
        records = parse_json(handle.read(), max_depth=_RECORDS_DEPTH)
    except (OSError, ValueError) as err:
        raise IndexFileError(f"cannot read {path}: {err}") from None
    return _schema.check_records(records, manifest)
