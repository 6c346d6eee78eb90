"""Enrolling a gallery folder: chunked, resumable, sharded across processes.

The flow ``siamkit index build`` runs, as library functions:

* :func:`enrol_folder` (what :meth:`FaceIndex.add_folder` does): lists an
  ImageFolder gallery (``path/<person>/<image>``, ids the relative paths),
  leaves out what is already enrolled when resuming, and encodes and stores
  the images in chunks, so a gallery of millions never sits in memory and an
  interruption keeps what was stored; ``shard=(rank, world_size)`` enrols one
  process's share, for processes filling one shared store;
* :func:`enrol_folder_gathered`: under ``torchrun`` with a store one process
  holds (FAISS), every process embeds its share (:func:`embed_sharded`) and
  the main process adds them all;
* :class:`PeriodicSave`: an ``on_chunk`` callback saving a growing FAISS index
  every so often, so a killed build resumes from its last save.

Examples:
    >>> import os, tempfile, siamkit
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "ann"))
    >>> Image.new("L", (46, 56)).save(os.path.join(root, "ann", "1.png"))
    >>> index = siamkit.FaceIndex(siamkit.create_encoder("compact", channels=[8, 16]))
    >>> enrol_folder(index, root), enrol_folder(index, root, existing="skip")
    (['ann/1.png'], [])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit.exceptions import ConfigError, DuplicateIdError
from siamkit.geometry import check_directions
from siamkit.index._inputs import check_id, check_label, check_metadata, embed_items, per_item
from siamkit.index.results import Enrolled, ItemId, Label, SkippedImage
from siamkit.index.stores.base import EXISTING, VectorStore

if TYPE_CHECKING:
    from siamkit.index.face_index import FaceIndex

#: Images :func:`enrol_folder` encodes and stores at a time: progress is kept, memory bounded.
FOLDER_CHUNK = 1024


def enrol_folder(
    index: FaceIndex,
    path: str | os.PathLike,
    *,
    upsert: bool = False,
    existing: str = "error",
    batch_size: int = 64,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    on_chunk: Callable[[Enrolled], Any] | None = None,
) -> Enrolled:
    """Enrol an ImageFolder gallery into ``index``: :meth:`FaceIndex.add_folder` (see there).

    Raises:
        DataError: ``path`` is missing or not an image folder.
        DuplicateIdError: an image is already enrolled (``existing="error"``),
            found before the first chunk is stored.
        NoFaceError: no face in an image under the aligner's policy ``"error"``.

    Examples:
        >>> import os, tempfile, siamkit
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "cy"))
        >>> Image.new("L", (46, 56)).save(os.path.join(root, "cy", "1.png"))
        >>> index = siamkit.FaceIndex(siamkit.create_encoder("compact", channels=[8, 16]))
        >>> enrol_folder(index, root), enrol_folder(index, root, upsert=True), len(index)
        (['cy/1.png'], ['cy/1.png'], 1)
    """
    if existing not in EXISTING:
        raise ConfigError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
    unlisted: list[SkippedImage] = []
    files, labels, ids = gallery_files(path, unlisted)
    if shard is not None:
        part = share(len(files), *shard)
        files, labels, ids = files[part], labels[part], ids[part]
        unlisted = unlisted if shard[0] == 0 else []  # one process reports them
    mode = "replace" if upsert else existing
    if mode == "skip":
        files, labels, ids = not_enrolled(index.store, files, labels, ids)
    if mode == "error":
        _refuse_enrolled(index.store, ids)  # before the first chunk is stored
    done = _enrol_chunks(index, (files, labels, ids), batch_size, progress, mode, on_chunk)
    return Enrolled(done, [*unlisted, *done.skipped]) if unlisted else done


def _enrol_chunks(
    index: FaceIndex,
    listing: tuple[list[str], list[Label], list[str]],
    batch_size: int,
    progress: bool,
    mode: str,
    on_chunk: Callable[[Enrolled], Any] | None,
) -> Enrolled:
    from tqdm.auto import tqdm

    files, labels, ids = listing
    chunk = max(FOLDER_CHUNK, batch_size)
    added: list[ItemId] = []
    skipped: list[SkippedImage] = []
    with tqdm(total=len(files), desc="enrolling", unit="img", disable=not progress) as bar:
        for start in range(0, len(files), chunk):
            part = slice(start, start + chunk)
            if mode == "replace":
                done = index.upsert(files[part], labels[part], ids[part], batch_size=batch_size)
            else:
                done = index.add(files[part], labels[part], ids[part], existing=mode,
                                 batch_size=batch_size)  # fmt: skip
            added.extend(done)
            skipped.extend(replace(item, position=item.position + start) for item in done.skipped)
            bar.update(len(files[part]))
            if on_chunk is not None:
                on_chunk(done)
    return Enrolled(added, skipped)


def insert_items(
    index: FaceIndex,
    items: Any,
    labels: Any,
    ids: Any,
    metadata: Any,
    batch_size: int,
    progress: bool,
    mode: str,
) -> Enrolled:
    """What :meth:`FaceIndex.add` (``mode`` ``"error"`` or ``"skip"``) and
    :meth:`FaceIndex.upsert` (``"replace"``) do: embed, check, assign ids, store.

    Examples:
        >>> import siamkit
        >>> index = siamkit.FaceIndex(metric="euclidean", dim=1)
        >>> insert_items(index, np.zeros((2, 1), "float32"), "a", None, None, 64, False, "error")
        [0, 1]
    """
    if ids is not None and mode == "error":
        _refuse_repeated(index.store, ids)  # fail before encoding a whole gallery
    embedded = embed_items(items, index.encoder, index.dim, batch_size, progress)
    count = len(embedded.paths)
    labels = per_item(labels, count, "labels", check_label, broadcast=True)
    given = None if ids is None else per_item(ids, count, "ids", check_id, broadcast=False)
    metadata = check_metadata(metadata, count, embedded.paths)
    skipped = [
        SkippedImage(i, embedded.paths[i], labels[i], None if given is None else given[i])
        for i in embedded.skipped
    ]
    if skipped:  # what has no face goes, with its label, id and metadata
        kept = embedded.kept
        labels, metadata = [labels[i] for i in kept], [metadata[i] for i in kept]
        given = None if given is None else [given[i] for i in kept]
    embeddings = embedded.embeddings
    check_directions(embeddings, index.metric)  # one rule for every store
    with index._lock:
        if len(embeddings) == 0:
            return Enrolled([], skipped)
        store = index.store or index._open_store(embeddings.shape[1])
        new_ids = given if given is not None else index._shared.take_ids(store, len(embeddings))
        if mode == "replace":
            store.upsert(new_ids, embeddings, labels, metadata)
        elif mode == "skip":
            present = store.existing_ids(new_ids)
            store.add(new_ids, embeddings, labels, metadata, existing="skip")
            new_ids = [i for i in new_ids if i not in present]
        else:
            store.add(new_ids, embeddings, labels, metadata)
        index._shared.advance_ids(store, new_ids)
        return Enrolled(new_ids, skipped)


def id_list(ids: Any) -> list[Any]:
    """One id or an iterable of them, as a list.

    Examples:
        >>> id_list("a1"), id_list([1, 2])
        (['a1'], [1, 2])
    """
    single = isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)
    return [ids] if single else list(ids)


def _refuse_repeated(store: VectorStore | None, ids: Any) -> None:
    wanted = [check_id(i) for i in id_list(ids)]
    seen: set[Any] = set()
    repeated = [i for i in wanted if i in seen or seen.add(i)]
    if repeated:
        raise DuplicateIdError(f"ids repeated in one call: {repeated[:5]}; ids must be unique")
    _refuse_enrolled(store, wanted)


def _refuse_enrolled(store: VectorStore | None, ids: list[str]) -> None:
    taken = [] if store is None else sorted(store.existing_ids(ids), key=str)
    if taken:
        raise DuplicateIdError(
            f"ids already in the index: {taken[:5]}; remove them first, or use upsert() "
            "to replace them"
        )


def enrol_folder_gathered(
    index: FaceIndex,
    path: str | os.PathLike,
    ctx: Any,
    *,
    existing: str = "error",
    batch_size: int = 64,
    progress: bool = False,
) -> Enrolled:
    """Enrol a folder under ``torchrun`` into a store the main process holds (FAISS).

    Every process of ``ctx`` must call it: each embeds its contiguous share of
    the images (:func:`embed_sharded`), and the main process adds them all to
    ``index``; the others return an empty :class:`Enrolled`. With
    ``existing="skip"`` the images the main process's index holds are left
    out (every process must have loaded the same index).

    Examples:
        >>> import os, tempfile, siamkit
        >>> from PIL import Image
        >>> from siamkit.training.distributed import DistributedContext
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "bo"))
        >>> Image.new("L", (46, 56)).save(os.path.join(root, "bo", "1.png"))
        >>> index = siamkit.FaceIndex(siamkit.create_encoder("compact", channels=[8, 16]))
        >>> enrol_folder_gathered(index, root, DistributedContext())  # one process
        ['bo/1.png']
    """
    unlisted: list[SkippedImage] = []
    files, labels, ids = gallery_files(path, unlisted)
    if existing == "skip":
        files, labels, ids = not_enrolled(index.store, files, labels, ids)
    embeddings, kept = embed_sharded(index.encoder, files, ctx, batch_size, progress)
    if not ctx.is_main:
        return Enrolled()
    skipped = unlisted + [
        SkippedImage(i, files[i], labels[i], ids[i]) for i in range(len(files)) if not kept[i]
    ]
    rows = [i for i in range(len(files)) if kept[i]]
    if rows:
        index.add(embeddings[rows], labels=[labels[i] for i in rows], ids=[ids[i] for i in rows],
                  metadata=[{"path": files[i]} for i in rows], existing=existing)  # fmt: skip
    return Enrolled([ids[i] for i in rows], skipped)


class PeriodicSave:
    """An ``on_chunk`` callback saving a growing FAISS index at most every ``seconds``.

    A killed build resumes from the last save (``existing="skip"``); each save is atomic.

    Raises:
        ConfigError: ``seconds`` is negative or NaN.

    Examples:
        >>> import tempfile, siamkit
        >>> index = siamkit.FaceIndex(metric="cosine", dim=2)
        >>> _ = index.add(np.eye(2, dtype="float32"), labels=["a", "b"])
        >>> saver = PeriodicSave(index, Path(tempfile.mkdtemp()), seconds=0)
        >>> saver(Enrolled(["a"]))  # due (0 s since the last save): saved
        >>> len(siamkit.FaceIndex.load(saver.folder))
        2
    """

    def __init__(self, index: FaceIndex, folder: Path, seconds: float) -> None:
        if not seconds >= 0:  # also refuses NaN
            raise ConfigError(f"the save interval must be 0 or more seconds, got {seconds}")
        self.index, self.folder, self.seconds = index, folder, seconds
        self.last = time.monotonic()

    def __call__(self, enrolled: Enrolled) -> None:
        if len(self.index) and time.monotonic() - self.last >= self.seconds:
            self.index.save(self.folder)  # atomic: a kill mid-save keeps the last one
            self.last = time.monotonic()


def gallery_files(
    path: str | os.PathLike, skipped: list[SkippedImage] | None = None
) -> tuple[list[str], list[Label], list[str]]:
    """The images of an ImageFolder gallery, their labels and ids (paths relative to ``path``).

    The files the listing left out are appended to ``skipped``, when given, as
    :class:`SkippedImage` without a position, each with its reason.

    Raises:
        DataError: ``path`` is missing or not an image folder.
    """
    from siamkit._folders import list_image_folder

    listing = list_image_folder(path)
    root = Path(path)
    files = listing.paths
    ids = [Path(file).relative_to(root).as_posix() for file in files]
    labels = [listing.classes[label] for label in listing.labels]
    if skipped is not None:
        for item in listing.skipped:
            person = Path(item.path).relative_to(root).parts[0]
            skipped.append(SkippedImage(None, item.path, person, reason=item.reason))
    return files, labels, ids


def not_enrolled(
    store: VectorStore | None, files: list[str], labels: list[Label], ids: list[str]
) -> tuple[list[str], list[Label], list[str]]:
    """The images of a gallery listing whose ids ``store`` does not hold yet (a resumed build).

    Examples:
        >>> from siamkit.index.stores import FaissStore
        >>> store = FaissStore(1, "euclidean")
        >>> _ = store.add(["a/1.png"], np.zeros((1, 1), "float32"), ["a"])
        >>> not_enrolled(store, ["/g/a/1.png", "/g/a/2.png"], ["a", "a"], ["a/1.png", "a/2.png"])
        (['/g/a/2.png'], ['a'], ['a/2.png'])
    """
    if store is None:
        return files, labels, ids
    present = store.existing_ids(ids)
    keep = [i for i, item_id in enumerate(ids) if item_id not in present]
    return [files[i] for i in keep], [labels[i] for i in keep], [ids[i] for i in keep]


def share(count: int, rank: int, world_size: int) -> slice:
    """Process ``rank``'s contiguous share of ``count`` items (the first ones get one more).

    Examples:
        >>> [share(5, r, 2) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
    """
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"shard (rank, world_size) must have 0 <= rank < world_size, got {(rank, world_size)}"
        )
    size = -(-count // world_size)
    return slice(min(count, rank * size), min(count, (rank + 1) * size))


def embed_sharded(
    encoder: Any, items: list[Any], ctx: Any, batch_size: int = 64, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``items`` across the process group: ``(embeddings (N, D), kept (N,) bool)``.

    Every process must call it with the same ``items``. ``kept`` is False for
    images the encoder's aligner skipped (no face, ``on_missing="skip"``);
    their rows are zeros. With one process this is ``embed_items``.

    Args:
        encoder: The encoder (the same model in every process).
        items: Every image (paths), the same list in every process.
        ctx: The :class:`~siamkit.training.distributed.DistributedContext`.
        batch_size: Images encoded at once.
        progress: Show this process's progress bar.

    Examples:
        >>> import siamkit
        >>> from PIL import Image
        >>> from siamkit.training.distributed import DistributedContext
        >>> encoder = siamkit.create_encoder("compact", channels=[8, 16])
        >>> emb, kept = embed_sharded(encoder, [Image.new("L", (46, 56))], DistributedContext())
        >>> emb.shape, kept.tolist()
        ((1, 128), [True])
    """
    import torch

    from siamkit.training.distributed import gather_rows, split_range

    part = split_range(len(items), ctx)
    dim = int(encoder.embedding_dim)
    local = np.zeros((len(part), dim + 1), dtype=np.float32)  # last column: kept
    if len(part):
        embedded = embed_items(items[part.start : part.stop], encoder, dim, batch_size, progress)
        local[embedded.kept, :dim] = embedded.embeddings
        local[embedded.kept, dim] = 1.0
    rows = gather_rows(torch.from_numpy(local), len(items), ctx).numpy()
    return np.ascontiguousarray(rows[:, :dim]), rows[:, dim] > 0.5
