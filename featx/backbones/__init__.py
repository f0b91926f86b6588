"""Backbone families, one module each."""
from featx.backbones.resnet import RESNET_ARCHS, ResNet

__all__ = ["ResNet", "RESNET_ARCHS"]
