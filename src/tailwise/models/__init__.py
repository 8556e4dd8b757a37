"""Architectures the sources use, defined here (no torchvision)."""

from typing import Any

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
    "resnet18",
    "resnet20",
]

# Compatibility alias: the reference network trains, so it moved above train/ to
# tailwise.reference. These names stay reachable as tailwise.models.reference_* without
# models/ importing train/ (imported lazily, on first attribute access only).
_MOVED_TO_REFERENCE = ("reference_checkpoint", "reference_metadata", "reference_model")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_REFERENCE:
        import tailwise.reference

        return getattr(tailwise.reference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
