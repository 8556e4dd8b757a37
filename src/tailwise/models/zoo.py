"""Models by name, for the command line: :func:`create_model` and :data:`MODEL_NAMES`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from torch import nn

from tailwise._errors import UsageError
from tailwise.models.cnn import SmallCNN
from tailwise.models.densenet import densenet40
from tailwise.models.enresnet import en2resnet20, en5resnet20
from tailwise.models.fcn import fcn4, fcn6
from tailwise.models.lenet import lenet5
from tailwise.models.mlp import MLP
from tailwise.models.mobilenet import mobilenet_v2
from tailwise.models.preact import (
    WideResNet,
    preact_resnet20,
    preact_resnet38,
    preact_resnet56,
    wrn28,
)
from tailwise.models.resnet import resnet18, resnet20, resnet34
from tailwise.models.vgg import vgg19


def _wrn28_10(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, dropout: float = 0.0
) -> WideResNet:
    # The name fixes k = 10; width w scales it (WRN-28-(10 w)). wrn28(k=...) for other k.
    return wrn28(10, in_channels=in_channels, num_classes=num_classes, width=width, dropout=dropout)


def _mlp(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    hidden: Sequence[int] = (512, 256, 128),
    activation: str = "relu",
    bias: bool = True,
) -> MLP:
    # Flattened (in_channels, image_size, image_size) images in; the hidden widths of the
    # reference network by default.
    return MLP(
        in_channels * image_size * image_size,
        hidden,
        num_classes,
        activation=activation,
        bias=bias,
    )


def _small_cnn(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    channels: Sequence[int] = (32, 64),
) -> SmallCNN:
    return SmallCNN(in_channels, num_classes, channels=channels, image_size=image_size)


class _Entry(NamedTuple):
    factory: Callable[..., nn.Module]
    has_width: bool


_ENTRIES: Mapping[str, _Entry] = MappingProxyType(
    {
        "resnet18": _Entry(resnet18, True),
        "resnet34": _Entry(resnet34, True),
        "resnet20": _Entry(resnet20, True),
        "vgg19": _Entry(vgg19, True),
        "densenet40": _Entry(densenet40, False),
        "wrn28-10": _Entry(_wrn28_10, True),
        "mobilenetv2": _Entry(mobilenet_v2, True),
        "lenet5": _Entry(lenet5, False),
        "fcn4": _Entry(fcn4, True),
        "fcn6": _Entry(fcn6, True),
        "preact_resnet20": _Entry(preact_resnet20, True),
        "preact_resnet38": _Entry(preact_resnet38, True),
        "preact_resnet56": _Entry(preact_resnet56, True),
        "en2resnet20": _Entry(en2resnet20, True),
        "en5resnet20": _Entry(en5resnet20, True),
        "mlp": _Entry(_mlp, False),
        "smallcnn": _Entry(_small_cnn, False),
    }
)

MODEL_NAMES: tuple[str, ...] = tuple(_ENTRIES)
"""The names :func:`create_model` accepts (lowercase)."""

_COMMON = ("in_channels", "num_classes", "width")


def _options(name: str) -> list[str]:
    """The keyword arguments of ``name``'s factory besides in_channels, num_classes, width."""
    parameters = inspect.signature(_ENTRIES[name].factory).parameters
    return [key for key in parameters if key not in _COMMON]


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, **kwargs: Any
) -> nn.Module:
    """A freshly initialised model of the zoo by its name (one of :data:`MODEL_NAMES`).

    ``width`` multiplies the published widths of the models that have a width multiplier
    (all but ``densenet40``, ``lenet5``, ``mlp`` and ``smallcnn``); ``"wrn28-10"`` at width w
    is WRN-28-(10 w). ``kwargs`` go to the factory: ``dropout`` (wrn28-10), ``growth_rate`` /
    ``compression`` (densenet40), ``image_size`` (vgg19, fcn4, fcn6, mlp, smallcnn),
    ``batch_norm`` (vgg19), ``hidden`` / ``activation`` / ``bias`` (mlp), ``channels``
    (smallcnn), ``noise_coef`` / ``noise`` (en2resnet20, en5resnet20: source 002's noisy
    ensembles, :mod:`tailwise.models.enresnet`). A model that must take [0, 1] images with its
    normalization inside goes through :func:`~tailwise.models.with_normalization`.
    ``mlp`` and ``smallcnn`` take (in_channels, 32, 32) images by default. Names are
    case-insensitive. Parameters are drawn from torch's global generator.

    Raises :class:`tailwise.UsageError` naming the model for an unknown name (listing
    :data:`MODEL_NAMES`), a ``width`` other than 1 for a model without a width multiplier, an
    option the factory does not take, and any argument the model rejects.

    >>> model = create_model("resnet18", width=0.25)
    >>> model.architecture()["widths"]
    [16, 32, 64, 128]
    >>> create_model("lenet5", width=0.5)
    Traceback (most recent call last):
    ...
    tailwise._errors.UsageError: create_model: lenet5 has no width multiplier (got width=0.5); ...
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in _ENTRIES:
        raise UsageError(f"create_model: unknown model {name!r}; known: {list(MODEL_NAMES)}")
    entry = _ENTRIES[key]
    if (
        isinstance(width, bool)
        or not isinstance(width, int | float)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise UsageError(
            f"create_model: {key}: width must be a positive finite number, got {width!r}"
        )
    if not entry.has_width and width != 1:
        with_width = [model for model, other in _ENTRIES.items() if other.has_width]
        raise UsageError(
            f"create_model: {key} has no width multiplier (got width={width}); models with "
            f"one: {with_width}"
        )
    unknown = sorted(set(kwargs) - set(_options(key)))
    if unknown:
        raise UsageError(
            f"create_model: {key} takes no option(s) {unknown}; it takes {_options(key)}"
        )
    arguments = {"in_channels": in_channels, "num_classes": num_classes, **kwargs}
    if entry.has_width:
        arguments["width"] = width
    try:
        return entry.factory(**arguments)
    except UsageError:
        raise
    except (ValueError, TypeError) as error:  # the model's own argument checks
        raise UsageError(f"create_model: {key}: {error}") from error
