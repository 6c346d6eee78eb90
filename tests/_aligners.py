"""Aligners for tests: a stand-in detector with a known answer on every image."""

from __future__ import annotations

from PIL import Image

from siamkit.alignment import Face, FaceAligner, register_aligner


@register_aligner("test-dark-is-no-face", overwrite=True)
class DarkIsNoFace(FaceAligner):
    """Finds one face (the whole image) everywhere except in all-black images."""

    def __init__(self, on_missing: str = "fallback") -> None:
        super().__init__(size=16, on_missing=on_missing)

    def detect(self, image: Image.Image) -> list[Face]:
        if image.convert("L").getextrema()[1] == 0:
            return []
        return [Face((0.0, 0.0, float(image.width), float(image.height)))]
