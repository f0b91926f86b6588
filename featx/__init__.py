"""featx: detection-ready multi-stage CNN feature extractors with a configurable FPN neck."""
__version__ = "0.1.0"

from featx.features import FeatureExtractor, FeatureInfo
from featx.registry import MODELS
from featx.backbones import VGG, AlexNet, DenseNet, GoogLeNet, InceptionV3, MobileNet, ResNet, TimmBackbone
from featx.necks import FPN
from featx.models import BackboneFPN, create_model, list_models

__all__ = [
    "__version__", "MODELS", "FeatureInfo", "FeatureExtractor", "ResNet", "VGG", "AlexNet", "GoogLeNet", "InceptionV3",
    "DenseNet", "MobileNet", "TimmBackbone", "FPN", "BackboneFPN",
    "create_model", "list_models",
]
