"""The galleries a service holds: one FAISS face index folder each, under one root.

The root is locked to one server process for its lifetime (a second is
refused: two processes saving one FAISS folder would lose each other's
faces). Every change is saved, atomically, before it is answered, so an
answered enrolment survives a crash of the server right after the answer.

Examples:
    >>> import tempfile, numpy as np, siamkit
    >>> encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    >>> with Galleries(tempfile.mkdtemp(), encoder) as galleries:
    ...     galleries.create("staff").name
    'staff'
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamkit._locks import acquire, release
from siamkit.exceptions import ConfigError, UnknownIdError
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss.files import MANIFEST
from siamkit.serve.keys import check_name

_LOCK_FILE = ".siamkit-serve.lock"


class GalleryError(ConfigError):
    """A gallery the request names does not exist, or already does; :attr:`status` for HTTP."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery's summary: its name, faces, people and thresholds."""

    name: str
    faces: int
    people: int
    threshold: float | None
    identify_threshold: float | None

    @classmethod
    def of(cls, name: str, index: FaceIndex) -> GalleryInfo:
        return cls(name, len(index), len(index.labels()), index.threshold,
                   index.identify_threshold)  # fmt: skip


class Galleries:
    """The galleries under ``root``, each ``root/<name>/`` a saved :class:`FaceIndex`.

    Args:
        root: The folder (made if missing); locked while this object is open.
        encoder: The model every gallery embeds with.
        threshold: The 1:1 threshold a new gallery starts with (the model's
            trained one), until it is calibrated.
    """

    def __init__(self, root: str | os.PathLike, encoder: Any, threshold: float | None = None):
        self.root, self.encoder, self.threshold = Path(root), encoder, threshold
        self.root.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.root / _LOCK_FILE, "ab")  # noqa: SIM115 - held while open
        if not acquire(self._handle, 0.0):
            self._handle.close()
            raise ConfigError(
                f"another siamkit serve holds {self.root} (it locks {self.root / _LOCK_FILE}): "
                "stop it, or serve another folder"
            )
        self._open: dict[str, FaceIndex] = {}
        self._writing: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __enter__(self) -> Galleries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder for another server."""
        if not self._handle.closed:
            release(self._handle)
            self._handle.close()

    def sizes(self) -> dict[str, int]:
        """The faces in each gallery open in this process (what ``/metrics`` reports)."""
        with self._guard:
            return {name: len(index) for name, index in self._open.items()}

    def names(self) -> list[str]:
        """The galleries, by name."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _is_gallery(p))

    def create(self, name: str) -> GalleryInfo:
        """A new, empty gallery, saved.

        Raises:
            GalleryError: it exists already (409).
        """
        check_name(name)
        with self._guard:
            if (self.root / name).exists():
                raise GalleryError(f"the gallery {name!r} exists already", 409)
            index = FaceIndex(self.encoder)
            index.threshold = self.threshold
            index.save(self.root / name)
            self._open[name] = index
            return GalleryInfo.of(name, index)

    def get(self, name: str) -> FaceIndex:
        """The gallery ``name``'s index.

        Raises:
            GalleryError: no such gallery (404).
        """
        check_name(name)
        with self._guard:
            if name not in self._open:
                folder = self.root / name
                if not _is_gallery(folder):
                    raise GalleryError(f"no gallery {name!r}: create it first", 404)
                self._open[name] = FaceIndex.load(folder, encoder=self.encoder)
            return self._open[name]

    def delete(self, name: str) -> None:
        """Remove the gallery ``name`` and its folder."""
        with self.changing(name), self._guard:
            self._open.pop(name, None)
            shutil.rmtree(self.root / name)

    @contextmanager
    def changing(self, name: str) -> Iterator[FaceIndex]:
        """The gallery's index to change, one change at a time, saved when the block ends."""
        index = self.get(name)
        with self._guard:
            lock = self._writing.setdefault(name, threading.Lock())
        with lock:
            yield index
            if (self.root / name).exists():
                index.save(self.root / name)

    def enrol(self, name: str, person: str, faces: list[Any]) -> list[str]:
        """Add ``faces`` (pictures or embeddings) of ``person``; their new ids, saved first."""
        check_name(person, "person name")
        ids = [uuid.uuid4().hex for _ in faces]
        items = np.stack(faces) if faces and isinstance(faces[0], np.ndarray) else faces
        with self.changing(name) as index:
            return [str(i) for i in index.add(items, labels=person, ids=ids)]

    def remove_person(self, name: str, person: str) -> int:
        """Remove every face of ``person``; how many."""
        with self.changing(name) as index:
            ids = index.ids(label=person)
            if not ids:
                raise GalleryError(f"no person {person!r} in the gallery {name!r}", 404)
            return index.remove(ids)

    def remove_face(self, name: str, face_id: str) -> None:
        """Remove one face by its id."""
        with self.changing(name) as index:
            try:
                index.remove(face_id)
            except UnknownIdError:
                raise GalleryError(f"no face {face_id!r} in the gallery {name!r}", 404) from None


def _is_gallery(folder: Path) -> bool:
    return folder.is_dir() and (folder / MANIFEST).is_file()
