"""siamkit: similarity learning with Siamese networks and contrastive loss, and face search.

Examples:
    >>> import siamkit
    >>> encoder = siamkit.create_encoder("compact")
    >>> loss = siamkit.ContrastiveLoss(margin=encoder.default_margin, distance=encoder.metric)
"""

from siamkit import _moved
from siamkit._version import __version__
from siamkit.alignment import (
    DlibAligner,
    FaceAligner,
    NoAligner,
    create_aligner,
    list_aligners,
    register_aligner,
)
from siamkit.exceptions import (
    ConfigError,
    DataError,
    DownloadError,
    DuplicateIdError,
    EmptyIndexError,
    EncoderMismatchError,
    ExportError,
    GeometryError,
    ImageReadError,
    IndexFileError,
    KeyFileError,
    LockTimeoutError,
    MissingExtraError,
    ModelFileError,
    NoFaceError,
    NonFiniteError,
    NotCalibratedError,
    ShapeError,
    SiamkitError,
    TrainingError,
    UnknownComponentError,
    UnknownIdError,
    WriteError,
)
from siamkit.index import (
    Calibration,
    Enrolled,
    FaceIndex,
    FpirCalibration,
    Match,
    Neighbors,
    Record,
    SearchResults,
    SkippedImage,
    Verification,
)
from siamkit.runtime import OnnxEncoder, load_onnx_encoder

_moved.install()

try:
    import torch as _torch  # noqa: F401
except ImportError:  # pragma: no cover - exercised in a subprocess by tests/test_torch_free.py
    # Without PyTorch, what runs on ONNX Runtime is here: exported encoders, the
    # face index, face alignment and the errors (pip install 'siamkit[onnx]'), and
    # siamkit.evaluation and siamkit.geometry import too (`siamkit eval` works).
    _HAS_TORCH = False
    load_encoder = load_onnx_encoder
else:
    _HAS_TORCH = True
    from siamkit.data import (
        ATTFaces,
        ClassBalancedBatchSampler,
        FaceFolder,
        PairDataset,
        split_by_class,
    )
    from siamkit.encoders import (
        CompactCNN,
        DlibFaceResNet,
        Encoder,
        MLPEncoder,
        ResNetEncoder,
        TutorialCNN,
        create_encoder,
        list_encoders,
        load_encoder,
        register_encoder,
    )
    from siamkit.losses import (
        ContrastiveLoss,
        PairLoss,
        PMLLoss,
        create_loss,
        list_losses,
        register_loss,
    )
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
    "DlibAligner",
    "DlibFaceResNet",
    "DownloadError",
    "DuplicateIdError",
    "EmptyIndexError",
    "Encoder",
    "EncoderMismatchError",
    "Enrolled",
    "ExportError",
    "FaceAligner",
    "FaceFolder",
    "FaceIndex",
    "FpirCalibration",
    "GeometryError",
    "HardPairMiner",
    "ImageReadError",
    "IndexFileError",
    "KeyFileError",
    "LockTimeoutError",
    "MLPEncoder",
    "Match",
    "MissingExtraError",
    "ModelFileError",
    "Neighbors",
    "NoAligner",
    "NoFaceError",
    "NonFiniteError",
    "NotCalibratedError",
    "OnnxEncoder",
    "PMLLoss",
    "PMLPairMiner",
    "PairDataset",
    "PairLoss",
    "PairMiner",
    "RandomPairMiner",
    "Record",
    "ResNetEncoder",
    "SearchResults",
    "ShapeError",
    "SiameseNetwork",
    "SiamkitError",
    "SkippedImage",
    "TrainingError",
    "TutorialCNN",
    "UnknownComponentError",
    "UnknownIdError",
    "Verification",
    "WriteError",
    "__version__",
    "create_aligner",
    "create_encoder",
    "create_loss",
    "create_miner",
    "list_aligners",
    "list_encoders",
    "list_losses",
    "list_miners",
    "load_encoder",
    "load_onnx_encoder",
    "register_aligner",
    "register_encoder",
    "register_loss",
    "register_miner",
    "split_by_class",
]

if not _HAS_TORCH:  # pragma: no cover - `from siamkit import *` takes what is there
    __all__ = [name for name in __all__ if name in globals()]
