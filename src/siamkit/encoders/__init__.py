"""Encoders: the :class:`Encoder` contract, its registry and the built-in encoders."""

from siamkit.encoders.base import (
    Encoder,
    create_encoder,
    default_transform,
    encoder_registry,
    list_encoders,
    load_encoder,
    register_encoder,
)
from siamkit.encoders.compact import CompactCNN
from siamkit.encoders.conv4 import Conv4
from siamkit.encoders.efficientnet_lite import EfficientNetLite0
from siamkit.encoders.face_fusion import DlibSFaceFusion
from siamkit.encoders.face_resnet import DlibFaceResNet
from siamkit.encoders.mlp import MLPEncoder
from siamkit.encoders.resnet import ResNetEncoder
from siamkit.encoders.tutorial import TutorialCNN
from siamkit.encoders.whitening import Whitening, whitening_layers

__all__ = [
    "CompactCNN",
    "Conv4",
    "DlibFaceResNet",
    "DlibSFaceFusion",
    "EfficientNetLite0",
    "Encoder",
    "MLPEncoder",
    "ResNetEncoder",
    "TutorialCNN",
    "Whitening",
    "create_encoder",
    "default_transform",
    "encoder_registry",
    "list_encoders",
    "load_encoder",
    "register_encoder",
    "whitening_layers",
]
