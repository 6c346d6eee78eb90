"""The typed results a :class:`~siamkit.index.FaceIndex` returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: An item's id in a face index: a string or an integer (their type is kept, so
#: ``1`` and ``"1"`` are two ids).
ItemId = str | int
#: A person's label: a string or an integer.
Label = str | int


# Not frozen: a batch search builds one per neighbour, and frozen dataclasses
# are three times slower to create.
@dataclass(slots=True)
class Match:
    """One gallery item found near a query.

    Attributes:
        id: The item's id.
        label: The person (or class) it shows.
        distance: Its distance to the query, in the index's geometry: the same
            number :func:`siamkit.geometry.pairwise_distances` gives.
        metadata: The item's metadata (a copy).

    Example:
        >>> m = Match(id="s1/1.pgm", label="s1", distance=0.12, metadata={})
        >>> m.to_dict()["label"]
        's1'
    """

    id: ItemId
    label: Label
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The match as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """The answer to "do these two faces show the same person?".

    Attributes:
        same: True when ``distance <= threshold``.
        distance: The distance between the two embeddings.
        threshold: The decision threshold used.

    Example:
        >>> Verification(same=True, distance=0.2, threshold=0.35).same
        True
    """

    same: bool
    distance: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """A decision threshold fitted for a target false-accept rate, and what it rests on.

    A pair is accepted as "same person" when its distance is at most
    ``threshold``.

    Attributes:
        threshold: The largest distance whose false-accept rate on the
            impostor pairs is at most ``target_far``.
        target_far: The false-accept rate asked for.
        far: The false-accept rate reached on the impostor pairs.
        tar: The true-accept rate on the genuine pairs at the threshold.
        num_genuine: Genuine (same person) pairs used.
        num_impostor: Impostor (different people) pairs used.
        reliable: At least ``10 / target_far`` impostor pairs: fewer cannot
            measure such a small rate.
        source: ``"gallery"`` (the index's own pairs) or ``"pairs"`` (given).

    Example:
        >>> c = Calibration(0.4, 0.01, 0.008, 0.97, 200, 4750, False, "gallery")
        >>> c.to_dict()["threshold"]
        0.4
    """

    threshold: float
    target_far: float
    far: float
    tar: float
    num_genuine: int
    num_impostor: int
    reliable: bool
    source: str = "gallery"

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Record:
    """An item stored in a face index, as :meth:`FaceIndex.get` returns it.

    Attributes:
        id: The item's id.
        label: The person it shows.
        metadata: Its metadata (a copy).
        embedding: Its stored embedding (L2-normalised for the cosine metric).

    Example:
        >>> Record("a", "ann", {}, np.zeros(2, dtype="float32")).label
        'ann'
    """

    id: ItemId
    label: Label
    metadata: dict[str, Any]
    embedding: np.ndarray


@dataclass(frozen=True)
class Neighbors:
    """Batch search results as arrays, for bulk work where ``Match`` objects cost too much.

    Row ``i`` holds query ``i``'s neighbours, nearest first. When an approximate
    index finds fewer than ``k``, the row is padded with ``None`` ids and labels
    and NaN distances.

    Attributes:
        ids: ``(num_queries, k)`` object array of ids.
        labels: ``(num_queries, k)`` object array of labels.
        distances: ``(num_queries, k)`` float32 distances.

    Example:
        >>> n = Neighbors(np.array([["a"]], dtype=object), np.array([["ann"]], dtype=object),
        ...               np.zeros((1, 1), dtype="float32"))
        >>> n.ids.shape
        (1, 1)
    """

    ids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
