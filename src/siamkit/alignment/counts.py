"""What an encoder's face aligner did during one job: its counts before and after.

A job (an evaluation, an index build, a training run) takes a :func:`snapshot`
of the encoder's aligner first and :func:`counts_since` after; the counts'
one line is :meth:`AlignmentStats.summary`, which the CLI, the reports and the
demo all print.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from siamkit.alignment.base import AlignmentStats

__all__ = ["aligner_of", "counts_since", "policy_of", "snapshot"]


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
