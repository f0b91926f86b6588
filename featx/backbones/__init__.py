"""Backbone families, one module each; chain-of-modules families share ``trunk.TorchvisionTrunk``."""
from featx.backbones.densenet import DenseNet
from featx.backbones.inception import GoogLeNet, InceptionV3
from featx.backbones.lenet import LeNet5
from featx.backbones.mobilenet import MobileNet
from featx.backbones.resnet import RESNET_ARCHS, ResNet
from featx.backbones.timm_backbone import TimmBackbone
from featx.backbones.vgg import VGG, AlexNet

__all__ = ["ResNet", "RESNET_ARCHS", "VGG", "AlexNet", "GoogLeNet", "InceptionV3", "DenseNet", "MobileNet",
           "TimmBackbone", "LeNet5"]
