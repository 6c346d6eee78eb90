"""Data: image folders, the AT&T faces, Omniglot, pairs, class-balanced batches, splits by class."""

from siamkit.data.att import ATTFaces, check_att_archive, download_att_faces, find_att_folder
from siamkit.data.folder import FaceFolder, SkippedFile, check_image_folder
from siamkit.data.images import IMAGE_EXTENSIONS, is_image_file, load_image
from siamkit.data.omniglot import Omniglot, download_omniglot
from siamkit.data.pairs import PairDataset, dataset_labels, make_pairs
from siamkit.data.rotations import RotatedClasses
from siamkit.data.sampling import ClassBalancedBatchSampler
from siamkit.data.splits import ClassSplit, split_by_class

__all__ = [
    "IMAGE_EXTENSIONS",
    "ATTFaces",
    "ClassBalancedBatchSampler",
    "ClassSplit",
    "FaceFolder",
    "Omniglot",
    "PairDataset",
    "RotatedClasses",
    "SkippedFile",
    "check_att_archive",
    "check_image_folder",
    "dataset_labels",
    "download_att_faces",
    "download_omniglot",
    "find_att_folder",
    "is_image_file",
    "load_image",
    "make_pairs",
    "split_by_class",
]
