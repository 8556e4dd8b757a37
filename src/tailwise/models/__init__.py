"""Architectures the sources use, defined here (no torchvision)."""

from tailwise.models.cnn import SmallCNN
from tailwise.models.densenet import DenseNet
from tailwise.models.mlp import MLP
from tailwise.models.reference import reference_checkpoint, reference_metadata, reference_model
from tailwise.models.registry import build_model, example_input_shape
from tailwise.models.resnet import ResNet, resnet18, resnet20
from tailwise.models.vgg import VGG, VGG_CONFIGS

__all__ = [
    "MLP",
    "VGG",
    "VGG_CONFIGS",
    "DenseNet",
    "ResNet",
    "SmallCNN",
    "build_model",
    "example_input_shape",
    "reference_checkpoint",
    "reference_metadata",
    "reference_model",
    "resnet18",
    "resnet20",
]
