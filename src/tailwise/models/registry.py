"""Rebuild a model from the dict its ``architecture()`` method returns (checkpoint metadata)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from tailwise.models.cnn import SmallCNN
from tailwise.models.densenet import DenseNet
from tailwise.models.enresnet import EnResNet
from tailwise.models.lenet import LeNet5
from tailwise.models.mlp import MLP
from tailwise.models.mobilenet import MobileNetV2
from tailwise.models.normalize import Normalized
from tailwise.models.preact import PreActResNet, WideResNet
from tailwise.models.resnet import ResNet
from tailwise.models.vgg import VGG

MODEL_CLASSES: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            MLP,
            SmallCNN,
            VGG,
            ResNet,
            DenseNet,
            PreActResNet,
            WideResNet,
            MobileNetV2,
            LeNet5,
            EnResNet,
            Normalized,
        )
    }
)
"""The classes :func:`build_model` knows, by the ``"class"`` value of an architecture."""

CIFAR_IMAGE_SIZE = 32
"""Side of the example input for models that take any image size (ResNet, DenseNet,
PreActResNet, WideResNet, MobileNetV2, EnResNet)."""


def _class_and_arguments(architecture: Mapping[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class named by ``architecture["class"]`` and the checked constructor arguments."""
    if not isinstance(architecture, Mapping):
        raise ValueError(
            "build_model: architecture must be a mapping with a 'class' key, "
            f"got {type(architecture).__name__}"
        )
    name = architecture.get("class")
    if not isinstance(name, str) or name not in MODEL_CLASSES:
        raise ValueError(f"build_model: unknown class {name!r}; known: {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[name]
    arguments = {key: value for key, value in architecture.items() if key != "class"}
    parameters = inspect.signature(cls).parameters
    unknown = sorted(set(arguments) - set(parameters))
    if unknown:
        raise ValueError(
            f"build_model: {name} takes no argument(s) {unknown}; it takes {list(parameters)}"
        )
    missing = [
        key
        for key, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and key not in arguments
    ]
    if missing:
        raise ValueError(
            f"build_model: {name} needs argument(s) {missing}, got {sorted(arguments)}"
        )
    return cls, arguments


def _is_architecture(value: Any) -> bool:
    """Whether a constructor argument is itself an architecture (a model to build first)."""
    return isinstance(value, Mapping) and "class" in value


def build_model(architecture: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model from ``{"class": <name>, **constructor arguments}``.

    ``architecture`` is what ``model.architecture()`` returns (JSON-serialisable, so it can
    be stored as checkpoint metadata); arguments left out take the constructor's defaults.
    The classes are those of :data:`MODEL_CLASSES`. An argument that is itself an
    architecture (a mapping with a ``"class"`` key, e.g. the ``"model"`` of a
    :class:`~tailwise.models.normalize.Normalized`) is built first, the same way. Raises
    ``ValueError`` for an unknown class (listing the known ones) and for missing, unknown or
    invalid arguments (naming the class). Parameters are drawn from torch's global generator,
    as by the constructor.

    >>> model = build_model({"class": "MLP", "in_features": 64, "num_classes": 10,
    ...                      "hidden": [512, 256, 128], "activation": "relu"})
    >>> [tuple(p.shape) for p in model.parameters()][::2]
    [(512, 64), (256, 512), (128, 256), (10, 128)]
    """
    cls, arguments = _class_and_arguments(architecture)
    arguments = {
        key: build_model(value) if _is_architecture(value) else value
        for key, value in arguments.items()
    }
    try:
        return cls(**arguments)
    except TypeError as error:  # a wrongly typed argument, e.g. an int where a list belongs
        raise ValueError(f"build_model: bad arguments for {cls.__name__}: {error}") from error


def example_input_shape(architecture: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of one input sample, batch dimension included, for the described model.

    ``(1, in_features)`` for an MLP, ``(1, in_channels, image_size, image_size)`` for SmallCNN,
    VGG and LeNet5, and ``(1, in_channels, 32, 32)`` (CIFAR size) for ResNet, DenseNet,
    PreActResNet, WideResNet, MobileNetV2 and EnResNet, which take any image size; a
    ``Normalized`` model takes its wrapped model's input. The architecture is validated as by
    :func:`build_model`.

    >>> example_input_shape({"class": "VGG", "config": "vgg11"})
    (1, 3, 32, 32)
    """
    with torch.device("meta"):  # validates the arguments without allocating parameters
        model = build_model(architecture)
    while isinstance(model, Normalized):
        model = model.model
    if isinstance(model, MLP):
        return (1, model.in_features)
    if isinstance(model, SmallCNN | VGG | LeNet5):
        return (1, model.in_channels, model.image_size, model.image_size)
    if isinstance(model, DenseNet):
        size = max(CIFAR_IMAGE_SIZE, 2 ** len(model.transitions))
        return (1, model.in_channels, size, size)
    if isinstance(model, ResNet | PreActResNet | MobileNetV2 | EnResNet):
        return (1, model.in_channels, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE)
    raise AssertionError(f"example_input_shape: no rule for {type(model).__name__}")
