"""Open-set search (1:N with strangers): a seeded known/unknown split, FNIR at FPIR, DET."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from siamkit.exceptions import ConfigError, DataError, ShapeError
from siamkit.thresholds import (
    FPIRS,
    DetCurve,
    FpirCalibration,
    det_curve,
    fnir_at_fpir,
    open_set_scores,
)

#: Share of the evaluated people kept out of the gallery, as in ``siamkit demo``.
UNKNOWN_SHARE = 0.4


@dataclass(frozen=True)
class OpenSetSplit:
    """Who is enrolled and who is a stranger, and each image's role (indices into the labels).

    Attributes:
        enrolled: People in the gallery (sorted).
        unknown: People kept out of it (sorted).
        gallery: Images enrolled: the first half of each enrolled person's (at least one).
        known_probes: The other images of enrolled people.
        unknown_probes: Every image of the people kept out.

    Examples:
        >>> split = open_set_split(["a", "a", "b", "b", "c", "c"], unknown_share=0.34, seed=0)
        >>> len(split.enrolled), len(split.unknown), split.gallery.size
        (2, 1, 2)
    """

    enrolled: list[Any]
    unknown: list[Any]
    gallery: np.ndarray
    known_probes: np.ndarray
    unknown_probes: np.ndarray


def open_set_split(
    labels: Any, unknown_share: float = UNKNOWN_SHARE, seed: int = 0
) -> OpenSetSplit:
    """Split people into enrolled and unknown, seeded; enrol half of each enrolled person's images.

    ``round(unknown_share * people)`` people (at least one, and at least one
    left enrolled) are kept out of the gallery; their images are all unknown
    probes. Each enrolled person's first half of images (at least one) is the
    gallery, the rest are known probes. ``siamkit demo`` and ``siamkit eval``
    split their people this way: the same people for the same seed.

    Raises:
        ConfigError: ``unknown_share`` is not in (0, 1).
        DataError: fewer than two people.

    Examples:
        >>> split = open_set_split([0, 0, 0, 0, 1, 1, 2, 2, 3, 3], unknown_share=0.5, seed=1)
        >>> split.gallery.size + split.known_probes.size + split.unknown_probes.size
        10
    """
    if isinstance(unknown_share, bool) or not 0.0 < float(unknown_share) < 1.0:
        raise ConfigError(f"unknown_share must be between 0 and 1, got {unknown_share!r}")
    lab = np.asarray(labels).reshape(-1)
    people = sorted(set(lab.tolist()))
    if len(people) < 2:
        raise DataError(
            f"open-set search needs at least two people (some enrolled, some strangers), "
            f"got {len(people)}"
        )
    # seed + 1: a stream apart from split_by_class's, which draws the evaluated people
    # with the same seed (and the split the demo has always made).
    shuffled = [people[i] for i in np.random.default_rng(seed + 1).permutation(len(people))]
    n_unknown = min(len(people) - 1, max(1, round(unknown_share * len(people))))
    unknown, enrolled = sorted(shuffled[:n_unknown]), sorted(shuffled[n_unknown:])
    gallery, known = [], []
    for person in enrolled:
        rows = np.flatnonzero(lab == person)
        half = max(1, len(rows) // 2)
        gallery.append(rows[:half])
        known.append(rows[half:])
    return OpenSetSplit(
        enrolled=enrolled,
        unknown=unknown,
        gallery=np.concatenate(gallery),
        known_probes=np.concatenate(known),
        unknown_probes=np.flatnonzero(np.isin(lab, unknown)),
    )


@dataclass(frozen=True)
class OpenSetSearch:
    """FNIR at fixed FPIRs and the DET curve of searching a gallery with known and unknown people.

    Attributes:
        enrolled_people: People in the gallery.
        unknown_people: People kept out (their searches are non-mated).
        gallery_images: Images enrolled.
        fnir_at_fpir: One fit per target FPIR (0.1, 0.01, 0.001 by default):
            the threshold, the FPIR reached, the FNIR there and whether enough
            non-mated searches back it.
        det: FNIR against FPIR at every threshold.

    Examples:
        >>> emb = np.array([[0.0], [0.1], [1.0], [1.1], [5.0], [5.2]], dtype="float32")
        >>> r = open_set_search(emb, [0, 0, 1, 1, 2, 2], "euclidean", unknown_share=0.34)
        >>> [f.fnir for f in r.fnir_at_fpir][:1], r.gallery_images
        ([0.0], 2)
    """

    enrolled_people: int
    unknown_people: int
    gallery_images: int
    fnir_at_fpir: list[FpirCalibration]
    det: DetCurve

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the DET curve's first threshold, -inf, as None)."""
        data = asdict(self)
        data["det"] = {
            "fpir": self.det.fpir.tolist(),
            "fnir": self.det.fnir.tolist(),
            "thresholds": [None, *self.det.thresholds[1:].tolist()],
        }
        return data


def open_set_search(
    embeddings: Any,
    labels: Any,
    metric: str,
    seed: int = 0,
    unknown_share: float = UNKNOWN_SHARE,
    targets: Sequence[float] = FPIRS,
) -> OpenSetSearch | None:
    """Open-set search on a seeded known/unknown split (:func:`open_set_split`).

    Each probe is searched against the gallery by brute force in ``metric``'s
    geometry; the FNIR at each target FPIR uses the threshold fitted on these
    very searches (by :func:`siamkit.thresholds.fit_fpir_threshold`).

    Returns:
        The result, or None when the split leaves no known or no unknown probe.

    Examples:
        >>> emb = np.array([[0.0], [0.2], [1.0], [1.2], [9.0], [9.1]], dtype="float32")
        >>> r = open_set_search(emb, [0, 0, 1, 1, 2, 2], "euclidean", unknown_share=0.34)
        >>> float(r.det.fnir[-1]), (r.enrolled_people, r.unknown_people)
        (0.0, (2, 1))
    """
    lab = np.asarray(labels).reshape(-1)
    emb = np.asarray(embeddings, dtype=np.float32)
    if len(emb) != len(lab):
        raise ShapeError(f"{len(emb)} embeddings but {len(lab)} labels")
    split = open_set_split(lab, unknown_share, seed)
    if not split.known_probes.size or not split.unknown_probes.size:
        return None
    probes = np.concatenate([split.known_probes, split.unknown_probes])
    scores = open_set_scores(
        emb[split.gallery], lab[split.gallery], emb[probes], lab[probes], metric
    )
    return OpenSetSearch(
        enrolled_people=len(split.enrolled),
        unknown_people=len(split.unknown),
        gallery_images=int(split.gallery.size),
        fnir_at_fpir=fnir_at_fpir(
            scores,
            targets,
            gallery_size=int(split.gallery.size),
            gallery_people=len(split.enrolled),
        ),
        det=det_curve(scores),
    )
