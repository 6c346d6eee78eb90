"""Opening a saved gallery: a FAISS index folder (load, update) or a database store (connect).

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


__all__ = ["connect_index", "index_over", "load_index", "update_index"]
