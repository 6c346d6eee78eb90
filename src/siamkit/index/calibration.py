"""Fitting a face index's thresholds: 1:1 (a false-accept rate) and 1:N (an FPIR).

The rule that places a threshold lives in :mod:`siamkit.thresholds`, shared with
the evaluation; this module gathers the face index's own distances for it: its
genuine and impostor pairs (1:1), and its searches (1:N), made with the index's
own search so the geometry and the FAISS index are the ones identify uses. Every
distance is :func:`siamkit.geometry.index_distances` of the stored vectors, the
number verify and search report for the same pair.

Besides the fit's own warnings (:func:`siamkit.thresholds.fit_warnings`), a
gallery is checked for labels that look like one person: images of two labels
nearer than any two images of one label (the same photos filed under two
names), which no threshold can tell apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit.exceptions import ConfigError, DataError, EmptyIndexError, ShapeError
from siamkit.geometry import check_directions, index_distances, prepare
from siamkit.index._inputs import embed_items, to_embeddings
from siamkit.index.results import Gallery, Neighbors
from siamkit.thresholds import (
    FarCalibration,
    FpirCalibration,
    OpenSetScores,
    check_rate,
    check_threshold,
    fit_far_threshold,
    fit_fpir_threshold,
)

if TYPE_CHECKING:
    from siamkit.index.face_index import FaceIndex

__all__ = [
    "MAX_PAIRS",
    "calibrate_far",
    "calibrate_fpir",
    "calibrate_gallery",
    "check_far",
    "check_fpir",
    "check_threshold",
    "fit_far_threshold",
    "gallery_pairs",
    "pair_distances",
    "search_scores",
]

#: Above this many pairs of a kind, the gallery's pairs are sampled (seeded).
MAX_PAIRS = 1_000_000
_VALUES = 1 << 22  # float64 differences per distance computation, to bound memory
_QUERIES = 4096  # searches per call to the index, to bound memory

#: The index's batch search: ``(queries, k) -> Neighbors``.
Search = Callable[[np.ndarray, int], Neighbors]


def check_far(target_far: float) -> float:
    """``target_far`` if it is a rate strictly between 0 and 1.

    Examples:
        >>> check_far(0.001)
        0.001
    """
    return check_rate(target_far, "target_far")


def check_fpir(target_fpir: float) -> float:
    """``target_fpir`` if it is a rate strictly between 0 and 1.

    Examples:
        >>> check_fpir(0.01)
        0.01
    """
    return check_rate(target_fpir, "target_fpir")


def gallery_pairs(
    vectors: np.ndarray,
    labels: np.ndarray,
    metric: str,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and same-person flags of a gallery's genuine and impostor pairs.

    All pairs when there are at most ``max_pairs`` of them; otherwise all
    genuine pairs (or ``max_pairs`` sampled) and ``max_pairs`` sampled impostor
    pairs, drawn with a seeded generator so the threshold is reproducible.
    ``vectors`` are the stored ones (prepared): the distances are
    :func:`~siamkit.geometry.index_distances`, those verify and search report.

    Examples:
        >>> v = np.array([[0, 1], [0, 1], [1, 0]], dtype="float32")
        >>> d, same = gallery_pairs(v, np.array(["a", "a", "b"], dtype=object), "cosine")
        >>> d.tolist(), same.tolist()
        ([0.0, 1.0, 1.0], [True, False, False])
    """
    codes = _label_codes(labels)
    first, second = _pair_rows(codes, max_pairs, seed)
    return _paired(vectors, first, second, metric), codes[first] == codes[second]


def _pair_rows(codes: np.ndarray, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the pairs :func:`gallery_pairs` measures: all, or a seeded sample."""
    if max_pairs <= 0:
        raise ConfigError(f"max_pairs must be positive, got {max_pairs}")
    n = len(codes)
    if n * (n - 1) // 2 <= max_pairs:
        first, second = np.triu_indices(n, k=1)
        return first.astype(np.int64), second.astype(np.int64)
    rng = np.random.default_rng(seed)
    gi, gj = _genuine_pairs(codes, max_pairs, rng)
    ii, ij = _impostor_pairs(codes, max_pairs, rng)
    return np.concatenate([gi, ii]), np.concatenate([gj, ij])


def _label_codes(labels: np.ndarray) -> np.ndarray:
    index: dict[Any, int] = {}
    return np.array([index.setdefault(label, len(index)) for label in labels], dtype=np.int64)


def _genuine_pairs(
    codes: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    sizes = np.diff(np.r_[starts, len(codes)])
    counts = sizes * (sizes - 1) // 2
    if counts.sum() <= max_pairs:
        first, second = [], []
        for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
            i, j = np.triu_indices(size, k=1)
            first.append(order[start + i])
            second.append(order[start + j])
        return np.concatenate(first).astype(np.int64), np.concatenate(second).astype(np.int64)
    # Sample a class in proportion to its pairs, then two distinct members of it.
    group = rng.choice(len(sizes), size=max_pairs, p=counts / counts.sum())
    a = rng.integers(0, sizes[group])
    b = (a + rng.integers(1, sizes[group])) % sizes[group]
    return order[starts[group] + a], order[starts[group] + b]


def _impostor_pairs(
    codes: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = len(codes)
    first, second, found = [], [], 0
    for _ in range(100):  # rejection sampling; impostors are nearly all pairs in practice
        i = rng.integers(0, n, size=2 * max_pairs)
        j = rng.integers(0, n, size=2 * max_pairs)
        keep = codes[i] != codes[j]
        first.append(i[keep])
        second.append(j[keep])
        found += int(keep.sum())
        if found >= max_pairs:
            break
    if found == 0:
        raise DataError("the gallery holds a single person: calibration needs impostor pairs")
    return np.concatenate(first)[:max_pairs], np.concatenate(second)[:max_pairs]


def _paired(vectors: np.ndarray, first: np.ndarray, second: np.ndarray, metric: str) -> np.ndarray:
    out = np.empty(len(first), dtype=np.float64)
    step = max(1, _VALUES // max(1, vectors.shape[1]))
    for start in range(0, len(first), step):
        stop = start + step
        a, b = vectors[first[start:stop]], vectors[second[start:stop]]
        out[start:stop] = index_distances(a, b, metric)
    return out


# -- labels that look like one person -------------------------------------------------
def duplicate_warnings(
    distances: np.ndarray,
    own: np.ndarray,
    other: np.ndarray | None,
    positives: np.ndarray,
    what: str,
) -> tuple[str, ...]:
    """A warning when negatives are nearer than every positive: one person under two labels.

    Args:
        distances: Negative distances (impostor pairs, or strangers' nearest faces).
        own: The label of each negative's first side (None for unknown probes).
        other: The label of its other side (the face found), or None.
        positives: Positive distances (genuine pairs, or enrolled people's searches).
        what: What a negative is, for the message (``"pairs of their images"``).

    Examples:
        >>> w = duplicate_warnings(np.array([0.0, 0.9]), np.array(["ann", "ann"], object),
        ...                        np.array(["bo", "cy"], object), np.array([0.2]), "pairs")
        >>> w[0][:38]
        "labels 'ann' and 'bo' look like one pe"
    """
    nearest_own = float(positives.min()) if positives.size else 0.0
    close = np.flatnonzero(distances <= nearest_own)
    if not close.size:
        return ()
    nearest = float(distances[close].min())
    than = (
        f"no farther apart ({nearest:.3g} at the nearest) than the nearest two images of one "
        f"person ({nearest_own:.3g})"
        if positives.size
        else "at distance 0 (copies of one image)"
    )
    if other is None or own is None:
        return (
            f"{close.size} unknown probes and their nearest enrolled faces are {than}: are "
            "they strangers? Leave them out of unknown=, then calibrate again",
        )
    named = Counter(
        tuple(sorted((own[i], other[i]), key=repr)) for i in close.tolist() if own[i] != other[i]
    )
    shown = ", ".join(f"{a!r} and {b!r}" for (a, b), _ in named.most_common(3))
    left = len(named) - 3
    more = f" (and {left} more pair{'s' if left > 1 else ''} of labels)" if left > 0 else ""
    return (
        f"labels {shown}{more} look like one person: {close.size} {what} are {than}; merge "
        "the labels, or remove the duplicate images, then calibrate again",
    )


# -- 1:N: the index's own searches ----------------------------------------------------
def search_scores(
    search: Search, gallery: Gallery, metric: str, unknown: np.ndarray | None = None
) -> OpenSetScores:
    """Open-set search outcomes of a gallery, without extra data.

    Mated searches: each image of a person with two or more images, searched
    against the gallery without that image (leave one image out). Non-mated
    searches: the ``unknown`` probes against the whole gallery when given,
    else each person's images against the gallery without that person (leave
    one person out): the distance to the nearest image of anyone else.

    Examples:
        >>> from siamkit.index import FaceIndex
        >>> index = FaceIndex(metric="euclidean", dim=1)
        >>> v = np.array([[0.0], [0.1], [1.0], [1.3]], dtype="float32")
        >>> _ = index.add(v, labels=["a", "a", "b", "b"])
        >>> g = Gallery(v, np.array(["a", "a", "b", "b"], object), np.arange(4).astype(object))
        >>> s = search_scores(index.knn, g, "euclidean")
        >>> s.mated.round(2).tolist(), s.non_mated.round(2).tolist()
        ([0.1, 0.1, 0.3, 0.3], [1.0, 0.9, 0.9, 1.2])
    """
    return _search_outcomes(search, gallery, metric, unknown)[0]


def _search_outcomes(
    search: Search, gallery: Gallery, metric: str, unknown: np.ndarray | None
) -> tuple[OpenSetScores, np.ndarray | None, np.ndarray]:
    """:func:`search_scores`, and of each non-mated search its own label and the one found.

    The own labels are None for ``unknown`` probes (they have none).
    """
    codes = _label_codes(gallery.labels)
    counts = np.bincount(codes)[codes]
    rows = np.flatnonzero(counts > 1)
    found, mated = _nearest_other(
        search, gallery.vectors[rows], gallery.ids[rows], gallery, "ids", np.full(rows.size, 2),
        metric,
    )  # fmt: skip
    correct = found == gallery.labels[rows]
    if unknown is not None:
        own = None
        none = np.full(len(unknown), None, dtype=object)
        other, non_mated = _nearest_other(search, unknown, none, gallery, "ids",
                                          np.ones(len(none), int), metric)  # fmt: skip
    else:
        own = gallery.labels
        # Enough neighbours that someone else is among them, in an exact index.
        other, non_mated = _nearest_other(
            search, gallery.vectors, gallery.labels, gallery, "labels", counts + 1, metric
        )
    scores = OpenSetScores(mated=mated, mated_correct=correct, non_mated=non_mated)
    return scores, own, other


def _nearest_other(
    search: Search,
    queries: np.ndarray,
    own: np.ndarray,
    gallery: Gallery,
    key: str,
    k: np.ndarray,
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Label and distance of each query's nearest item whose ``key`` (ids or labels) differs.

    Each query first asks the index for ``k`` neighbours, then twice as many
    while an approximate index comes up short; past the whole index, brute force.
    """
    labels = np.full(len(queries), None, dtype=object)
    distance = np.full(len(queries), np.nan)
    need = np.minimum(np.asarray(k, dtype=np.int64), gallery.size)
    todo = np.arange(len(queries))
    while todo.size:
        # Power-of-two buckets of k: one search per bucket, never far more neighbours than needed.
        bucket = 2 ** np.ceil(np.log2(np.maximum(need[todo], 1))).astype(np.int64)
        for size in np.unique(bucket):
            group = todo[bucket == size]
            for start in range(0, group.size, _QUERIES):
                part = group[start : start + _QUERIES]
                found = search(queries[part], int(min(size, gallery.size)))
                keys = found.ids if key == "ids" else found.labels
                ok = np.isfinite(found.distances) & (keys != own[part][:, None])
                first = ok.argmax(1)
                hit = ok[np.arange(part.size), first]
                labels[part[hit]] = found.labels[hit, first[hit]]
                distance[part[hit]] = found.distances[hit, first[hit]]
        todo = todo[np.isnan(distance[todo])]
        exhausted = todo[need[todo] >= gallery.size]
        if exhausted.size:
            _brute_force(queries, own, gallery, key, metric, exhausted, labels, distance)
        todo = todo[need[todo] < gallery.size]
        need[todo] = np.minimum(2 * need[todo], gallery.size)
    return labels, distance


def _brute_force(
    queries: np.ndarray,
    own: np.ndarray,
    gallery: Gallery,
    key: str,
    metric: str,
    rows: np.ndarray,
    labels: np.ndarray,
    distance: np.ndarray,
) -> None:
    keys = gallery.ids if key == "ids" else gallery.labels
    step = max(1, _VALUES // max(1, gallery.vectors.shape[1]))
    for row in rows.tolist():
        d = np.concatenate([
            index_distances(gallery.vectors[start : start + step], queries[row], metric)
            for start in range(0, gallery.size, step)
        ])  # fmt: skip
        d = np.where(keys != own[row], d, np.inf)
        if not np.isfinite(d).any():
            raise DataError("no other item to search against: enrol more images or people")
        best = int(d.argmin())
        labels[row], distance[row] = gallery.labels[best], float(d[best])


# -- what FaceIndex.calibrate runs ----------------------------------------------------
def calibrate_far(
    gallery: Gallery, metric: str, target_far: float, max_pairs: int, seed: int
) -> FarCalibration:
    """The 1:1 threshold of a gallery's own genuine and impostor pairs.

    Raises:
        DataError: no genuine or no impostor pair.

    Examples:
        >>> v = np.array([[0.0], [0.1], [1.0], [1.2]], dtype="float32")
        >>> g = Gallery(v, np.array(["a", "a", "b", "b"], object), np.arange(4).astype(object))
        >>> round(calibrate_far(g, "euclidean", 0.25, MAX_PAIRS, 0).threshold, 2)
        0.95
    """
    codes = _label_codes(gallery.labels)
    first, second = _pair_rows(codes, max_pairs, seed)
    distances = _paired(gallery.vectors, first, second, metric)
    same = codes[first] == codes[second]
    check_pairs(same)
    fit = fit_far_threshold(distances, same, check_far(target_far), source="gallery")
    labels, impostor = gallery.labels, ~same
    duplicates = duplicate_warnings(distances[impostor], labels[first[impostor]],
                                    labels[second[impostor]], distances[same],
                                    "pairs of their images")  # fmt: skip
    return replace(fit, warnings=fit.warnings + duplicates)


def calibrate_fpir(
    search: Search,
    gallery: Gallery,
    metric: str,
    target_fpir: float,
    unknown: np.ndarray | None,
) -> FpirCalibration:
    """The 1:N threshold of a gallery, searched with ``search`` (see :func:`search_scores`).

    Raises:
        DataError: fewer than two people to leave out, and no ``unknown`` probes.
    """
    target_fpir = check_fpir(target_fpir)
    people = len(set(gallery.labels.tolist()))
    if unknown is None and people < 2:
        raise DataError(
            f"the gallery holds {people} person: leaving one out to act as a stranger "
            "needs at least two; enrol more people, or pass unknown= probes"
        )
    scores, own, other = _search_outcomes(search, gallery, metric, unknown)
    source = "probes" if unknown is not None else "leave-one-person-out"
    fit = fit_fpir_threshold(scores, target_fpir, gallery_size=gallery.size,
                             gallery_people=people, source=source)  # fmt: skip
    what = "of their images and the nearest faces of the other label"
    duplicates = duplicate_warnings(scores.non_mated, own, other, scores.mated, what)
    return replace(fit, warnings=fit.warnings + duplicates)


def check_pairs(same: np.ndarray) -> None:
    """Refuse pairs that hold no genuine or no impostor pair.

    Examples:
        >>> check_pairs(np.array([True, True]))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.DataError: no impostor pair (images of two people) ...
    """
    if not same.any():
        raise DataError(
            "no genuine pair (two images of one person) to calibrate on: enrol at least "
            "two images of some people, or pass labelled pairs="
        )
    if same.all():
        raise DataError(
            "no impostor pair (images of two people) to calibrate on: enrol several "
            "people, or pass labelled pairs="
        )


def calibrate_gallery(
    index: FaceIndex,
    target_far: float | None = None,
    pairs: tuple[Any, Any, Any] | None = None,
    *,
    target_fpir: float | None = None,
    unknown: Any = None,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> FarCalibration | FpirCalibration:
    """Fit ``index``'s 1:1 or 1:N threshold: what :meth:`FaceIndex.calibrate` keeps (see there).

    Raises:
        ConfigError: a rate outside (0, 1), or both kinds asked at once.
        DataError: nothing to fit on.
        EmptyIndexError: the index holds no item.
    """
    if target_fpir is None:
        if unknown is not None:
            raise ConfigError("unknown= probes calibrate 1:N search: pass target_fpir= too")
        target_far = check_far(1e-3 if target_far is None else target_far)
        if pairs is not None:
            distances, same = _labelled_pairs(index, pairs)
            return fit_far_threshold(distances, same, target_far, source="pairs")
        return calibrate_far(_stored(index), index.metric, target_far, max_pairs, seed)
    if target_far is not None or pairs is not None:
        raise ConfigError(
            "calibrate fits one threshold per call: target_far (1:1, verify) or "
            "target_fpir (1:N, identify); call it twice for both"
        )
    probes = None if unknown is None else _probes(index, unknown)
    return calibrate_fpir(index._neighbors, _stored(index), index.metric, target_fpir, probes)


def pair_distances(first: np.ndarray, second: np.ndarray, metric: str) -> np.ndarray:
    """Paired distances of embeddings, by the function search and calibration use.

    Examples:
        >>> a, b = np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]])
        >>> pair_distances(a, b, "euclidean").tolist()
        [5.0]
    """
    check_directions(first, metric)
    check_directions(second, metric)
    return index_distances(prepare(first, metric), prepare(second, metric), metric)


def _stored(index: FaceIndex) -> Gallery:
    gallery = None if index.store is None else index.store.gallery()
    if gallery is None or gallery.size == 0:
        raise EmptyIndexError("the index is empty: add a gallery before calibrating it")
    return gallery


def _probes(index: FaceIndex, unknown: Any) -> np.ndarray:
    # A collection: under on_missing="skip", a photo without a face is no probe.
    embedded = embed_items(unknown, index.encoder, index.dim)
    if not len(embedded.embeddings):
        skipped = f" ({len(embedded.skipped)} without a face)" if embedded.skipped else ""
        raise DataError(f"unknown= holds no probe{skipped}: pass images or embeddings of strangers")
    check_directions(embedded.embeddings, index.metric, "unknown probes")
    return prepare(embedded.embeddings, index.metric)


def _labelled_pairs(index: FaceIndex, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 3:
        raise ConfigError("pairs must be a tuple (a, b, same) of two batches and the flags")
    first, _, _ = to_embeddings(pairs[0], index.encoder, index.dim)
    second, _, _ = to_embeddings(pairs[1], index.encoder, index.dim)
    same = np.asarray(pairs[2], dtype=bool).reshape(-1)
    if not len(first) == len(second) == len(same):
        raise ShapeError(
            f"pairs hold {len(first)} a items, {len(second)} b items and {len(same)} "
            "same/different flags: pass one of each per pair"
        )
    check_pairs(same)
    return pair_distances(first, second, index.metric), same
