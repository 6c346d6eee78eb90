"""The Siamese network: twin encoders with shared weights."""

from siamkit.siamese.network import SiameseNetwork

__all__ = ["SiameseNetwork"]
