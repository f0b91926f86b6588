"""featx: detection-ready multi-stage CNN feature extractors with a configurable FPN neck.

Importing featx registers its models in mmengine's registry (scope ``featx``) and in timm's
(``featx_<arch>``), and allow-lists mmengine's checkpoint types for ``torch.load(weights_only=True)``.
"""
from featx.backbones import VGG, AlexNet, DenseNet, GoogLeNet, InceptionV3, LeNet5, MobileNet, ResNet, TimmBackbone
from featx.errors import FeatxError
from featx.extraction import ExtractSettings, extract
from featx.integrations import timm as _timm_registration  # noqa: F401  (registers featx_* in timm)
from featx.features import Composite, Extractor, FeatureExtractor, FeatureInfo
from featx.models import BackboneFPN, create_model, list_models
from featx.necks import FPN
from featx.registry import MODELS
from featx.store import FeatureStore
from featx.version import __version__

__all__ = [
    "__version__", "MODELS", "FeatxError", "FeatureInfo", "Extractor", "FeatureExtractor", "Composite", "ResNet", "VGG",
    "AlexNet", "GoogLeNet", "InceptionV3", "DenseNet", "MobileNet", "TimmBackbone", "LeNet5", "FPN", "BackboneFPN",
    "create_model", "list_models", "extract", "ExtractSettings", "FeatureStore",
]
