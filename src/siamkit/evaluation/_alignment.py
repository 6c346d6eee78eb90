"""What an encoder's face aligner did during one job, and how reports and the CLI say it."""

from __future__ import annotations

import dataclasses
from typing import Any

from siamkit.alignment.base import AlignmentStats


def aligner_of(encoder: Any) -> Any | None:
    """The encoder's face aligner (an ``Encoder`` or an ``OnnxEncoder``), or None.

    Examples:
        >>> import siamkit
        >>> aligner_of(siamkit.create_encoder("compact")) is None
        True
    """
    return getattr(encoder, "aligner", None)


def snapshot(encoder: Any) -> AlignmentStats | None:
    """A copy of the aligner's counts so far (None without an aligner).

    Examples:
        >>> import siamkit
        >>> encoder = siamkit.create_encoder("compact")
        >>> encoder.aligner = siamkit.create_aligner("none")
        >>> snapshot(encoder).total
        0
    """
    aligner = aligner_of(encoder)
    return None if aligner is None else dataclasses.replace(aligner.stats)


def counts_since(encoder: Any, before: AlignmentStats | None) -> AlignmentStats | None:
    """The aligner's counts added since ``before`` (a :func:`snapshot`): one job's counts.

    Examples:
        >>> import siamkit
        >>> from PIL import Image
        >>> encoder = siamkit.create_encoder("compact")
        >>> encoder.aligner = siamkit.create_aligner("none")
        >>> before = snapshot(encoder)
        >>> _ = encoder.embed([Image.new("L", (46, 56))] * 3)
        >>> counts_since(encoder, before).aligned
        3
    """
    now = snapshot(encoder)
    if now is None or before is None:
        return now
    return AlignmentStats(
        **{f.name: getattr(now, f.name) - getattr(before, f.name) for f in dataclasses.fields(now)}
    )


def alignment_line(stats: AlignmentStats) -> str:
    """One line on the counts: faces found, whole-image fallbacks, skipped, several faces.

    Examples:
        >>> line = alignment_line(AlignmentStats(aligned=97, fallback=1, missing=2, several=3))
        >>> line.split("; ")[:2]
        ['a face was found in 97 of 100 images', '1 aligned whole (no face found)']
    """
    weak = getattr(stats, "weak", 0)
    second = f" ({weak} only on a second, more permissive look)" if weak else ""
    return (
        f"a face was found in {stats.aligned} of {stats.total} images{second}; {stats.fallback} "
        f"aligned whole (no face found); {stats.missing} skipped (no face found); "
        f"{stats.several} had several faces (the largest was used)"
    )


def policy_of(encoder: Any) -> str | None:
    """The aligner's ``on_missing`` policy, or None without an aligner.

    Examples:
        >>> import siamkit
        >>> encoder = siamkit.create_encoder("compact")
        >>> encoder.aligner = siamkit.create_aligner("none")
        >>> policy_of(encoder)
        'fallback'
    """
    aligner = aligner_of(encoder)
    return None if aligner is None else getattr(aligner, "on_missing", None)
