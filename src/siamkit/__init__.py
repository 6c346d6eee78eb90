"""siamkit: similarity learning with Siamese networks and contrastive loss, and face search.

Example:
    >>> import siamkit
    >>> encoder = siamkit.create_encoder("compact")
    >>> loss = siamkit.ContrastiveLoss(margin=0.5, distance=encoder.metric)
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
    GeometryError,
    ImageReadError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
    SiamkitError,
    TrainingError,
    UnknownComponentError,
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
    "ClassBalancedBatchSampler",
    "CompactCNN",
    "ConfigError",
    "ContrastiveLoss",
    "DataError",
    "DownloadError",
    "Encoder",
    "FaceFolder",
    "GeometryError",
    "HardPairMiner",
    "ImageReadError",
    "MLPEncoder",
    "ModelFileError",
    "NonFiniteError",
    "PMLPairMiner",
    "PairDataset",
    "PairMiner",
    "RandomPairMiner",
    "ResNetEncoder",
    "ShapeError",
    "SiameseNetwork",
    "SiamkitError",
    "TrainingError",
    "TutorialCNN",
    "UnknownComponentError",
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
