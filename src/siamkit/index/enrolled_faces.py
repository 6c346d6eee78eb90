"""``EnrolledFaces``: what a face index holds, over a store: ids, labels, items, enrolment.

:class:`~siamkit.index.FaceIndex` is an ``EnrolledFaces`` that also searches, decides
and saves; this module is the half that enrols. Items live in a
:class:`~siamkit.index.stores.base.VectorStore`; ids, thresholds and notes
shared between processes in a :class:`~siamkit.index.gallery_record.SharedRecord`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np  # noqa: F401 (the examples below use it)

from siamkit.exceptions import (
    ConfigError,
    EmptyIndexError,
    GeometryError,
    ShapeError,
    UnknownIdError,
)
from siamkit.index._inputs import check_id, check_label
from siamkit.index.enrolment import enrol_folder, id_list, insert_items

# after enrolment, which loads the stores (gallery_record imports them; they import it back)
from siamkit.index.gallery_record import (
    GalleryRecord,
    SharedRecord,
    encoder_info,
    resolve_dim,
    resolve_metric,
)
from siamkit.index.results import Enrolled, ItemId, Label, Record
from siamkit.index.stores.base import EXISTING, VectorStore, store_registry
from siamkit.index.stores.settings import index_kind_name

if TYPE_CHECKING:  # the index runs without torch behind an ONNX encoder
    from siamkit.encoders.base import Encoder


class EnrolledFaces:
    """The enrolled faces of a :class:`~siamkit.index.FaceIndex`, over a store.

    Takes :class:`~siamkit.index.FaceIndex`'s arguments; use ``FaceIndex``,
    which adds search, identify, verify, calibration and saving.

    Examples:
        >>> faces = EnrolledFaces(metric="euclidean", dim=1)
        >>> faces.add(np.zeros((2, 1), dtype="float32"), labels=["a", "b"])
        [0, 1]
        >>> faces.labels()
        ['a', 'b']
    """

    def __init__(
        self,
        encoder: Encoder | Any | None = None,
        metric: str | None = None,
        index: str = "flat",
        dim: int | None = None,
        *,
        store: str | VectorStore = "faiss",
        ef_search: int | None = None,
        nprobe: int | None = None,
        **store_options: Any,
    ) -> None:
        self.encoder = encoder
        self._metric = resolve_metric(encoder, metric)
        self._dim = resolve_dim(encoder, dim)
        self._shared = SharedRecord(
            GalleryRecord(encoder=encoder_info(encoder)),
            keep_own_encoder=lambda: self.encoder is not None,
        )
        self._lock = self._shared.lock  # one change at a time: ids, thresholds, the record
        self._store: VectorStore | None = None
        if isinstance(store, VectorStore):
            self._adopt(store)
            self._store_name, self._store_options = type(store).__name__, {}
            self._index_name = store.index_name
            return
        self._store_name = str(store)
        self._index_name = index_kind_name(index)
        params = {"ef_search": ef_search, "nprobe": nprobe}
        self._store_options = {**{k: v for k, v in params.items() if v is not None},
                               **store_options}  # fmt: skip
        if self._dim is not None:
            self._open_store(self._dim)

    @property
    def store(self) -> VectorStore | None:
        """The store holding the items (None until the embedding size is known)."""
        return self._store

    def _open_store(self, dim: int) -> VectorStore:
        made = store_registry.create(self._store_name, dim=dim, metric=self._metric,
                                     index=self._index_name, **self._store_options)  # fmt: skip
        if made.persistence == "shared" and (made.get_meta() or made.count()):
            made.close()
            raise ConfigError(
                f"the {self._store_name} store already holds a gallery: reopen it with "
                "FaceIndex.connect(...), or choose another collection"
            )
        self._store, self._dim = made, dim
        self._write_record()
        return made

    def _adopt(self, store: VectorStore) -> None:
        if store.metric != self._metric:
            raise GeometryError(
                f"the store measures {store.metric} distance but the index {self._metric}: "
                "thresholds would mean nothing"
            )
        if self._dim is not None and store.dim != self._dim:
            raise ShapeError(
                f"the store holds {store.dim}-d vectors, the encoder makes {self._dim}"
            )
        self._store, self._dim = store, store.dim

    def _require_store(self) -> VectorStore:
        if self._store is None:
            raise EmptyIndexError("the index is empty: add items first")
        return self._store

    def _write_record(self) -> None:
        self._shared.write(self._store)

    def _changing_record(self) -> AbstractContextManager[GalleryRecord]:
        return self._shared.changing(self._store)

    def refresh(self) -> None:
        """Re-read thresholds, calibrations and notes from a shared (database) store.

        Call it after another process calibrated a shared gallery (a Milvus
        collection); a no-op for the FAISS store, which one process holds.

        Examples:
            >>> index = EnrolledFaces(metric="cosine", dim=2)
            >>> index.refresh()
        """
        self._shared.refresh(self._store)

    @property
    def metric(self) -> str:
        """The geometry: ``"cosine"`` or ``"euclidean"``."""
        return self._metric

    @property
    def dim(self) -> int | None:
        """The embedding size (None until known)."""
        return self._dim

    @property
    def index_spec(self) -> str:
        """The store's index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or a FAISS factory string."""
        return self._index_name if self._store is None else self._store.index_name

    @property
    def extra(self) -> dict[str, Any]:
        """JSON-able notes saved with the gallery (the CLI records the model folder)."""
        return self._shared.record.extra

    @extra.setter
    def extra(self, value: dict[str, Any]) -> None:
        self._shared.record.extra = dict(value)

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (higher: better recall, slower); None without HNSW."""
        return self._store_setting("ef_search")

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._set_store_setting("ef_search", value)

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (higher: better recall, slower); None without IVF."""
        return self._store_setting("nprobe")

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._set_store_setting("nprobe", value)

    def _store_setting(self, name: str) -> int | None:
        if self._store is None:
            return self._store_options.get(name)
        return self._store.describe().get(name)

    def _set_store_setting(self, name: str, value: int | None) -> None:
        if self._store is None:
            self._store_options[name] = value
        elif hasattr(self._store, name):
            setattr(self._store, name, value)
        else:
            raise ConfigError(f"{name} is not a setting of this index's store")

    def __len__(self) -> int:
        return 0 if self._store is None else self._store.count()

    def __contains__(self, item_id: object) -> bool:
        try:
            key = check_id(item_id)
        except ConfigError:
            return False
        return self._store is not None and self._store.contains(key)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} items, dim={self._dim}, metric={self._metric!r}, "
            f"index={self.index_spec!r})"
        )

    def get(self, item_id: ItemId) -> Record:
        """The stored item ``item_id``.

        Raises:
            UnknownIdError: no such id.

        Examples:
            >>> index = EnrolledFaces(metric="cosine", dim=2)
            >>> _ = index.add(np.array([[3, 4]], dtype="float32"), labels="ann", ids="a1")
            >>> index.get("a1").embedding.tolist()
            [0.6000000238418579, 0.800000011920929]
        """
        key = check_id(item_id)
        if self._store is None:
            raise UnknownIdError(f"id {item_id!r} is not in the index")
        item = self._store.get([key])[0]
        return Record(id=item.id, label=item.label, metadata=item.metadata, embedding=item.vector)

    def ids(self, label: Label | None = None) -> list[ItemId]:
        """The ids of all items, or of one person's: in enrolment order on the FAISS store
        (an upserted item moves to the end), in the database's own order on others.

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=1)
            >>> index.add(np.zeros((3, 1), dtype="float32"), labels=["a", "b", "a"])
            [0, 1, 2]
            >>> index.ids(label="a")
            [0, 2]
        """
        if self._store is None:
            return []
        gallery = self._store.gallery()
        if label is None:
            return gallery.ids.tolist()
        return gallery.ids[gallery.labels == check_label(label)].tolist()

    def labels(self) -> list[Label]:
        """The distinct labels (people), in order of first enrolment on the FAISS store.

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((3, 1), dtype="float32"), labels=["b", "a", "b"])
            >>> index.labels()
            ['b', 'a']
        """
        if self._store is None:
            return []
        return list(dict.fromkeys(self._store.gallery().labels.tolist()))

    def add(
        self,
        items: Any,
        labels: Any,
        ids: Any = None,
        metadata: Any = None,
        *,
        existing: str = "error",
        batch_size: int = 64,
        progress: bool = False,
    ) -> Enrolled:
        """Enrol items: images (encoded in batches) or embeddings.

        Args:
            items: One item or a sequence: paths, PIL images, uint8 pictures or
                torch tensors (encoded with the encoder), or embeddings (a numpy
                float array ``(D,)`` or ``(N, D)``).
            labels: One label per item (str or int), or one label for all.
            ids: Unique ids (str or int); default: consecutive integers.
            metadata: A JSON-able dict per item; default ``{"path": ...}`` for
                files, ``{}`` otherwise.
            existing: ``"error"`` refuses ids already enrolled; ``"skip"``
                leaves them as they are and enrols the rest (re-running an
                interrupted enrolment).
            batch_size: Images encoded at once.
            progress: Show a progress bar while encoding.

        Returns:
            The ids of the new items: an :class:`~siamkit.index.Enrolled` list,
            whose ``skipped`` names the images left out because the encoder's
            aligner found no face in them and its policy is ``on_missing="skip"``
            (their labels, ids and metadata are dropped with them).

        Raises:
            DuplicateIdError: an id is already in the index (use :meth:`upsert`,
                or ``existing="skip"``) or repeated.
            NoFaceError: no face was found in an image and the aligner's
                policy is ``"error"`` (the message names the file; nothing is added).
            ShapeError: wrong embedding size, or labels/ids/metadata of the
                wrong length.
            NonFiniteError: NaN or infinite embeddings, or under cosine a zero
                vector (no direction; :func:`siamkit.geometry.check_directions`),
                whatever the store. Queries are refused alike.

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=2)
            >>> index.add(np.ones((2, 2), dtype="float32"), labels="ann", ids=["a1", "a2"])
            ['a1', 'a2']
            >>> len(index), "a1" in index
            (2, True)
        """
        if existing not in EXISTING:
            raise ConfigError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
        return insert_items(self, items, labels, ids, metadata, batch_size, progress, existing)

    def upsert(
        self,
        items: Any,
        labels: Any,
        ids: Any,
        metadata: Any = None,
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Enrolled:
        """Like :meth:`add`, but an id already in the index is replaced.

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((1, 1), dtype="float32"), labels="ann", ids="x")
            >>> _ = index.upsert(np.ones((1, 1), dtype="float32"), labels="bob", ids="x")
            >>> index.get("x").label, len(index)
            ('bob', 1)
        """
        if ids is None:
            raise ConfigError("upsert needs the ids of the items it adds or replaces")
        return insert_items(self, items, labels, ids, metadata, batch_size, progress, "replace")

    def add_folder(
        self,
        path: str | os.PathLike,
        *,
        upsert: bool = False,
        existing: str = "error",
        batch_size: int = 64,
        progress: bool = False,
        shard: tuple[int, int] | None = None,
        on_chunk: Callable[[Enrolled], Any] | None = None,
    ) -> Enrolled:
        """Enrol an ImageFolder gallery: ``path/<person>/<image>``, label = folder name.

        Ids are the images' paths relative to ``path`` (``"alice/1.jpg"``),
        metadata ``{"path": <the file>}``. Images are encoded and stored in
        chunks, so millions never sit in memory and an interruption keeps what
        was stored; ``existing="skip"`` does not even encode what is already
        enrolled. Images without a face follow the aligner's policy, as in
        :meth:`add`; files the listing leaves out (not images, links that
        loop or leave the folder) are in ``skipped`` with their reason.

        Args:
            path: The gallery folder.
            upsert: Replace items whose id is already enrolled.
            existing: ``"error"`` or ``"skip"``, as in :meth:`add`.
            batch_size: Images encoded at once.
            progress: Show a progress bar (images and images/s).
            shard: ``(rank, world_size)``: enrol only this process's contiguous
                share of the images, for several processes filling one store.
            on_chunk: Called with what each chunk enrolled, once it is stored
                (``siamkit index build`` saves a FAISS index as it grows).

        Raises:
            DataError: ``path`` is missing or not an image folder.
            DuplicateIdError: an image is already enrolled (``existing="error"``).
            NoFaceError: no face in an image under the policy ``"error"``.

        Examples:
            >>> import os, tempfile, siamkit
            >>> from PIL import Image
            >>> root = tempfile.mkdtemp()
            >>> os.makedirs(os.path.join(root, "ann"))
            >>> Image.new("L", (46, 56)).save(os.path.join(root, "ann", "1.png"))
            >>> index = EnrolledFaces(siamkit.create_encoder("compact", channels=[8, 16]))
            >>> index.add_folder(root)
            ['ann/1.png']
            >>> index.add_folder(root, existing="skip")
            []
        """
        return enrol_folder(self, path, upsert=upsert, existing=existing, batch_size=batch_size,
                            progress=progress, shard=shard, on_chunk=on_chunk)  # fmt: skip

    def remove(self, ids: ItemId | Iterable[ItemId], *, missing_ok: bool = False) -> int:
        """Remove items by id, from every kind of index (HNSW included).

        Removed items never appear in results again. The FAISS store flags
        them, filters them out of searches, and rebuilds them away once they
        pass 20% of the index.

        Args:
            ids: One id or several.
            missing_ok: Skip unknown ids instead of raising.

        Returns:
            How many items were removed.

        Raises:
            UnknownIdError: an id is not in the index (nothing is removed).

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=1, index="hnsw")
            >>> _ = index.add(np.arange(3, dtype="float32")[:, None], labels=["a", "b", "c"])
            >>> index.remove(1)
            1
            >>> index.ids()
            [0, 2]
        """
        keys = list(dict.fromkeys(check_id(i) for i in id_list(ids)))
        with self._lock:
            if self._store is None:
                if keys and not missing_ok:
                    raise UnknownIdError(
                        f"ids not in the index: {keys[:5]}; nothing was removed "
                        "(pass missing_ok=True to skip them)"
                    )
                return 0
            return self._store.remove(keys, missing_ok=missing_ok)

    def compact(self) -> None:
        """Reclaim the space of removed items now (the FAISS store does it at 20%).

        Examples:
            >>> index = EnrolledFaces(metric="euclidean", dim=1)
            >>> _ = index.add(np.zeros((10, 1), dtype="float32"), labels="a")
            >>> _ = index.remove(0); index.compact(); index.store.describe()["removed_pending"]
            0
        """
        if self._store is not None:
            self._store.compact()
