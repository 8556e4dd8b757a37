"""Architectures the sources use, defined here (no torchvision)."""

from typing import Any

from tailwise.models.cnn import SmallCNN
from tailwise.models.densenet import DenseNet, densenet40
from tailwise.models.enresnet import (
    EnResNet,
    NoisyPreActBlock,
    en2resnet20,
    en5resnet20,
    set_noise,
)
from tailwise.models.fcn import fcn4, fcn6
from tailwise.models.init import (
    REGIMES,
    BiasInit,
    InitRegime,
    glorot_std,
    init_glorot_normal,
    init_uniform,
)
from tailwise.models.lenet import LeNet5, lenet5
from tailwise.models.mlp import MLP
from tailwise.models.mobilenet import MobileNetV2, mobilenet_v2
from tailwise.models.normalize import Normalize, Normalized, with_normalization
from tailwise.models.preact import (
    PreActResNet,
    WideResNet,
    preact_resnet20,
    preact_resnet38,
    preact_resnet56,
    wrn28,
)
from tailwise.models.registry import build_model, example_input_shape
from tailwise.models.resnet import ResNet, resnet18, resnet20, resnet34
from tailwise.models.vgg import VGG, VGG_CONFIGS, vgg19
from tailwise.models.zoo import MODEL_NAMES, create_model

__all__ = [
    "MLP",
    "MODEL_NAMES",
    "REGIMES",
    "VGG",
    "VGG_CONFIGS",
    "BiasInit",
    "DenseNet",
    "EnResNet",
    "InitRegime",
    "LeNet5",
    "MobileNetV2",
    "NoisyPreActBlock",
    "Normalize",
    "Normalized",
    "PreActResNet",
    "ResNet",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "create_model",
    "densenet40",
    "en2resnet20",
    "en5resnet20",
    "example_input_shape",
    "fcn4",
    "fcn6",
    "glorot_std",
    "init_glorot_normal",
    "init_uniform",
    "lenet5",
    "mobilenet_v2",
    "preact_resnet20",
    "preact_resnet38",
    "preact_resnet56",
    "resnet18",
    "resnet20",
    "resnet34",
    "set_noise",
    "vgg19",
    "with_normalization",
    "wrn28",
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
