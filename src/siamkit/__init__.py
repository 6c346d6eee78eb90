"""siamkit: similarity learning with Siamese networks and contrastive loss, and face search.

Examples:
    >>> import siamkit
    >>> encoder = siamkit.create_encoder("compact")
    >>> loss = siamkit.ContrastiveLoss(margin=encoder.default_margin, distance=encoder.metric)
"""

from siamkit._version import __version__
from siamkit.data import (
    ATTFaces,
    ClassBalancedBatchSampler,
    FaceFolder,
    PairDataset,
    split_by_class,
)
from siamkit.encoders import (
    CompactCNN,
    Encoder,
    MLPEncoder,
    ResNetEncoder,
    TutorialCNN,
    create_encoder,
    list_encoders,
    load_encoder,
    register_encoder,
)
from siamkit.exceptions import (
    ConfigError,
    DataError,
    DownloadError,
    DuplicateIdError,
    EmptyIndexError,
    EncoderMismatchError,
    GeometryError,
    ImageReadError,
    IndexFileError,
    ModelFileError,
    NonFiniteError,
    NotCalibratedError,
    ShapeError,
    SiamkitError,
    TrainingError,
    UnknownComponentError,
    UnknownIdError,
)
from siamkit.index import (
    Calibration,
    FaceIndex,
    Match,
    Neighbors,
    Record,
    SearchResults,
    Verification,
)
from siamkit.losses import ContrastiveLoss
from siamkit.miners import (
    AllPairsMiner,
    BatchHardPairMiner,
    HardPairMiner,
    PairMiner,
    PMLPairMiner,
    RandomPairMiner,
    create_miner,
    list_miners,
    register_miner,
)
from siamkit.siamese import SiameseNetwork

__all__ = [
    "ATTFaces",
    "AllPairsMiner",
    "BatchHardPairMiner",
    "Calibration",
    "ClassBalancedBatchSampler",
    "CompactCNN",
    "ConfigError",
    "ContrastiveLoss",
    "DataError",
    "DownloadError",
    "DuplicateIdError",
    "EmptyIndexError",
    "Encoder",
    "EncoderMismatchError",
    "FaceFolder",
    "FaceIndex",
    "GeometryError",
    "HardPairMiner",
    "ImageReadError",
    "IndexFileError",
    "MLPEncoder",
    "Match",
    "ModelFileError",
    "Neighbors",
    "NonFiniteError",
    "NotCalibratedError",
    "PMLPairMiner",
    "PairDataset",
    "PairMiner",
    "RandomPairMiner",
    "Record",
    "ResNetEncoder",
    "SearchResults",
    "ShapeError",
    "SiameseNetwork",
    "SiamkitError",
    "TrainingError",
    "TutorialCNN",
    "UnknownComponentError",
    "UnknownIdError",
    "Verification",
    "__version__",
    "create_encoder",
    "create_miner",
    "list_encoders",
    "list_miners",
    "load_encoder",
    "register_encoder",
    "register_miner",
    "split_by_class",
]
