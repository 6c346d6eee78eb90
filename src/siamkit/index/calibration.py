"""Fitting a face index's decision threshold for a target false-accept rate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from siamkit.evaluation.verification import all_pairs_distances, roc_curve
from siamkit.exceptions import ConfigError, DataError
from siamkit.geometry import paired_distances
from siamkit.index.results import Calibration

#: Above this many pairs of a kind, the gallery's pairs are sampled (seeded).
MAX_PAIRS = 1_000_000
_CHUNK = 200_000  # pairs per distance computation, to bound memory


def check_far(target_far: float) -> float:
    """``target_far`` if it is a rate strictly between 0 and 1.

    Examples:
        >>> check_far(0.001)
        0.001
    """
    if isinstance(target_far, bool) or not 0.0 < float(target_far) < 1.0:
        raise ConfigError(f"target_far must be between 0 and 1 (e.g. 0.001), got {target_far!r}")
    return float(target_far)


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float if it is a usable distance: a finite number, not negative.

    Examples:
        >>> check_threshold(0.5)
        0.5
        >>> check_threshold("abc")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: threshold must be a finite, non-negative distance ...
    """
    number = isinstance(threshold, (int, float, np.integer, np.floating))
    if isinstance(threshold, bool) or not number or not 0.0 <= float(threshold) < math.inf:
        raise ConfigError(
            f"threshold must be a finite, non-negative distance (e.g. 0.5), got {threshold!r}; "
            "calibrate the index to get one"
        )
    return float(threshold)


def fit_far_threshold(
    distances: Any, same: Any, target_far: float, source: str = "pairs"
) -> Calibration:
    """The largest distance whose false-accept rate on the impostor pairs is ``<= target_far``.

    Candidate thresholds are the observed distances (the ROC curve's points).
    When even the closest impostor pair is too many, the threshold sits just
    below it, so no impostor pair is accepted.

    Examples:
        >>> c = fit_far_threshold([0.1, 0.2, 0.3, 0.6, 0.7], [1, 1, 0, 0, 0], target_far=0.5)
        >>> c.threshold, round(c.far, 3), c.tar
        (0.3, 0.333, 1.0)
    """
    target_far = check_far(target_far)
    curve = roc_curve(distances, same)  # also checks both kinds of pair are there
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(same, dtype=bool).reshape(-1)
    point = int(np.searchsorted(curve.far, target_far, side="right")) - 1
    threshold = float(curve.thresholds[point])
    if not np.isfinite(threshold):
        # No distance can be negative, so an impostor pair at 0 stays accepted.
        threshold = max(0.0, float(np.nextafter(d[~s].min(), -np.inf)))
    impostor, genuine = d[~s], d[s]
    return Calibration(
        threshold=threshold,
        target_far=target_far,
        far=float((impostor <= threshold).mean()),
        tar=float((genuine <= threshold).mean()),
        num_genuine=int(genuine.size),
        num_impostor=int(impostor.size),
        reliable=bool(impostor.size >= 10.0 / target_far),
        source=source,
    )


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

    Examples:
        >>> v = np.array([[0, 1], [0, 1], [1, 0]], dtype="float32")
        >>> d, same = gallery_pairs(v, np.array(["a", "a", "b"], dtype=object), "cosine")
        >>> d.tolist(), same.tolist()
        ([0.0, 1.0, 1.0], [True, False, False])
    """
    if max_pairs <= 0:
        raise ConfigError(f"max_pairs must be positive, got {max_pairs}")
    codes = _label_codes(labels)
    n = len(codes)
    if n * (n - 1) // 2 <= max_pairs:
        return all_pairs_distances(vectors, codes, metric)
    rng = np.random.default_rng(seed)
    gi, gj = _genuine_pairs(codes, max_pairs, rng)
    ii, ij = _impostor_pairs(codes, max_pairs, rng)
    first = np.concatenate([gi, ii])
    second = np.concatenate([gj, ij])
    same = np.concatenate([np.ones(len(gi), bool), np.zeros(len(ii), bool)])
    return _paired(vectors, first, second, metric), same


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
    for start in range(0, len(first), _CHUNK):
        stop = start + _CHUNK
        a, b = vectors[first[start:stop]], vectors[second[start:stop]]
        out[start:stop] = paired_distances(a, b, metric)
    return out
