"""Saving and opening a gallery: a FAISS index folder (save, load, update) or a database store
(connect), and its summary (info).

Each opens the store, reads the gallery's record and checks it against the
encoder before a :class:`~siamkit.index.FaceIndex` is made over them, so a
gallery built with another model never answers a query. :meth:`FaceIndex.load`,
:meth:`FaceIndex.update` and :meth:`FaceIndex.connect` are these functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamkit.exceptions import ConfigError, IndexFileError
from siamkit.index import gallery_record as _record
from siamkit.index._inputs import check_extra
from siamkit.index.stores.base import VectorStore, store_kind, store_place, store_registry
from siamkit.index.stores.faiss import FaissStore
from siamkit.index.stores.faiss.files import LOCK_TIMEOUT, folder_lock

if TYPE_CHECKING:
    from siamkit.index.face_index import FaceIndex


def load_index(
    path: str | os.PathLike, encoder: Any = None, *, cls: type | None = None
) -> FaceIndex:
    """The index saved in folder ``path``, every file checked (:meth:`FaceIndex.load`).

    Raises:
        IndexFileError: a file is missing, truncated, corrupted or from a newer siamkit.
        EncoderMismatchError: ``encoder`` is not the index's encoder.
        GeometryError: ``encoder`` uses another metric.

    Examples:
        >>> import tempfile
        >>> load_index(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        siamkit.exceptions.IndexFileError: ...
    """
    directory = Path(path)
    return index_over(FaissStore.load(directory), encoder, f"the index in {directory}", cls)


@contextmanager
def update_index(
    path: str | os.PathLike, encoder: Any = None, *, timeout: float = LOCK_TIMEOUT,
    cls: type | None = None,
) -> Iterator[FaceIndex]:  # fmt: skip
    """Load the index in ``path`` under its write lock, and save it back (:meth:`FaceIndex.update`).

    Raises:
        LockTimeoutError: another writer held the lock past ``timeout``.
        IndexFileError: as for :func:`load_index`.
    """
    directory = Path(path)
    with folder_lock(directory, timeout):
        index = load_index(directory, encoder, cls=cls)
        yield index
        index.save(directory)


def connect_index(
    encoder: Any = None, *, store: str | VectorStore = "milvus", cls: type | None = None,
    **options: Any,
) -> FaceIndex:  # fmt: skip
    """Reopen a gallery kept in a database store (:meth:`FaceIndex.connect`).

    Raises:
        ConfigError: ``store`` keeps galleries in folders (use :func:`load_index`),
            or an option it does not take.
        IndexFileError: no such collection, or the database unreachable.
        EncoderMismatchError: ``encoder`` is not the gallery's encoder.
    """
    if isinstance(store, VectorStore):
        opened = store
    elif store_registry.get(store).persistence == "files":
        raise ConfigError(f"a {store} gallery is a folder: open it with FaceIndex.load(path)")
    else:
        store_registry.check_arguments(store, options)  # a typo names itself
        opened = store_registry.get(store).open(**options)
    where = f"the {store_kind(opened)} gallery {store_place(opened)}"
    return index_over(opened, encoder, where, cls)


def index_over(store: VectorStore, encoder: Any, where: str, cls: type | None = None) -> FaceIndex:
    """A FaceIndex (or ``cls``, a subclass) over an existing store, its record checked.

    Raises:
        IndexFileError: the record is damaged or was edited.
        EncoderMismatchError: ``encoder`` is not the gallery's encoder.
    """
    from siamkit.index.face_index import FaceIndex

    try:
        record = _record.GalleryRecord.from_meta(store.get_meta(), store.dim)
    except ConfigError as err:
        raise IndexFileError(
            f"the siamkit record of {where} is damaged or was edited ({err}); calibrate it "
            "again, or build a new index"
        ) from None
    _record.check_encoder(record, store.dim, store.metric, encoder, where, "build a new index")
    index = (cls or FaceIndex)(encoder, metric=store.metric, store=store)
    if encoder is not None:  # the fingerprint matched, or none was recorded
        record.encoder = _record.encoder_info(encoder)
    index._shared.record = record
    return index


def save_index(index: FaceIndex, path: str | os.PathLike | None) -> Path | None:
    """Save ``index``: the FAISS store's files into ``path``, or a database store's record.

    Raises:
        EmptyIndexError: nothing to save yet (the embedding size is unknown).
        ConfigError: a path for a database store, or none for the FAISS store.

    Examples:
        >>> import tempfile, numpy as np, siamkit
        >>> index = siamkit.FaceIndex(metric="cosine", dim=2)
        >>> _ = index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
        >>> save_index(index, tempfile.mkdtemp()).is_dir()
        True
    """
    store, shared = index._require_store(), index._shared
    extra = check_extra(shared.record.extra)  # the notes as this process edited them
    with shared.changing(store) as record:
        record.extra = extra
    with shared.lock:
        if store.persistence == "shared":
            if path is not None:
                raise ConfigError(
                    "this gallery lives in its store; save() takes no path for it "
                    "(reopen it with FaceIndex.connect)"
                )
            return None
        if path is None:
            raise ConfigError("save(path): the folder to write the FAISS index into")
        return store.save(path)


def describe_index(index: FaceIndex, store_name: str) -> dict[str, Any]:
    """:meth:`FaceIndex.info`: size, geometry, store settings, thresholds, encoder, warnings.

    Examples:
        >>> import siamkit
        >>> describe_index(siamkit.FaceIndex(metric="cosine", dim=4), "faiss")["store"]
        'faiss'
    """
    store, record = index.store, index._shared.record
    count = len(index)
    described = {"ef_search": index.ef_search, "nprobe": index.nprobe, "trained": False,
                 "removed_pending": 0}  # fmt: skip
    if store is not None:
        described.update(store.describe())
    fit, calibration = record.fpir_calibration, record.calibration
    return {
        "count": count,
        "people": len(index.labels()) if count else 0,
        "dim": index.dim,
        "metric": index.metric,
        "normalised": index.metric == "cosine",
        "store": store_name if store is None else store_kind(store),
        **described,
        "index": index.index_spec,
        "threshold": record.threshold,
        "calibration": None if calibration is None else calibration.to_dict(),
        "identify_threshold": record.identify_threshold,
        "fpir_calibration": None if fit is None else fit.to_dict(),
        "encoder_fingerprint": record.fingerprint,
        "extra": dict(record.extra),
        "warnings": record.warnings(count),
    }


__all__ = [
    "connect_index",
    "describe_index",
    "index_over",
    "load_index",
    "save_index",
    "update_index",
]
