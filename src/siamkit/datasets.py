"""Ready-made datasets (the torchvision-style entry point; they live in :mod:`siamkit.data`).

Examples:
    >>> from siamkit.datasets import ATTFaces, FaceFolder
"""

from siamkit.data.att import ATTFaces
from siamkit.data.folder import FaceFolder
from siamkit.data.pairs import PairDataset

__all__ = ["ATTFaces", "FaceFolder", "PairDataset"]
