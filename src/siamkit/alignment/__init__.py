"""Face alignment: find the face in a photo and warp it to a canonical chip."""

from siamkit.alignment.base import (
    AlignmentStats,
    Face,
    FaceAligner,
    aligner_from_description,
    aligner_registry,
    choose_face,
    create_aligner,
    list_aligners,
    register_aligner,
    similarity_transform,
    warp_to_chip,
)
from siamkit.alignment.builtin import DlibAligner, NoAligner
from siamkit.alignment.yunet import YuNetAligner

__all__ = [
    "AlignmentStats",
    "DlibAligner",
    "Face",
    "FaceAligner",
    "NoAligner",
    "YuNetAligner",
    "aligner_from_description",
    "aligner_registry",
    "choose_face",
    "create_aligner",
    "list_aligners",
    "register_aligner",
    "similarity_transform",
    "warp_to_chip",
]
