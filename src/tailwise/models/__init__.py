"""Architectures the sources use, defined here (no torchvision)."""

from tailwise.models.cnn import SmallCNN
from tailwise.models.densenet import DenseNet
from tailwise.models.init import (
    REGIMES,
    BiasInit,
    InitRegime,
    glorot_std,
    init_glorot_normal,
    init_uniform,
)
from tailwise.models.mlp import MLP
from tailwise.models.reference import reference_checkpoint, reference_metadata, reference_model
from tailwise.models.registry import build_model, example_input_shape
from tailwise.models.resnet import ResNet, resnet18, resnet20
from tailwise.models.vgg import VGG, VGG_CONFIGS

__all__ = [
    "MLP",
    "REGIMES",
    "VGG",
    "VGG_CONFIGS",
    "BiasInit",
    "DenseNet",
    "InitRegime",
    "ResNet",
    "SmallCNN",
    "build_model",
    "example_input_shape",
    "glorot_std",
    "init_glorot_normal",
    "init_uniform",
    "reference_checkpoint",
    "reference_metadata",
    "reference_model",
    "resnet18",
    "resnet20",
]
