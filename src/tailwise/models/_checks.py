"""Argument checks shared by the model classes (package-internal: ``tailwise.models`` only)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def check_positive(where: str, name: str, value: int) -> None:
    """Raise ``ValueError`` naming ``where`` and ``name`` unless ``value`` is an int >= 1.

    >>> check_positive("MLP", "in_features", 64)
    >>> check_positive("MLP", "in_features", 0)
    Traceback (most recent call last):
    ...
    ValueError: MLP: in_features must be a positive int, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def checked_architecture(model: nn.Module, arguments: dict[str, Any]) -> dict[str, Any]:
    """``{"class": <name>, **arguments}`` after checking that the arguments rebuild ``model``.

    ``arguments`` are read from the live layers, so a model whose widths were changed (e.g. by
    channel pruning) is still described when its class can express the new widths; when it
    cannot (say, unequal widths where the constructor takes one), this raises ``ValueError``
    rather than describe a different network. The check builds a twin on the meta device
    (no memory, no random numbers drawn) and compares state_dict keys and shapes.
    """
    name = type(model).__name__
    with torch.device("meta"):
        twin = type(model)(**arguments)
    actual = {}
    for key, value in model.state_dict().items():
        # torch.nn.utils.prune keeps `X_orig` (shape of X) and `X_mask`: compare as X.
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in model.state_dict():
            continue
        actual[key.removesuffix("_orig")] = tuple(value.shape)
    rebuilt = {key: tuple(value.shape) for key, value in twin.state_dict().items()}
    if actual != rebuilt:
        # The first differing key in state_dict order (usually the layer that was changed).
        key = next(key for key in [*actual, *rebuilt] if actual.get(key) != rebuilt.get(key))
        raise ValueError(
            f"{name}: its constructor arguments no longer describe this model (was it pruned "
            f"unevenly?): {key} is {actual.get(key)} here but {rebuilt.get(key)} when rebuilt "
            f"from {arguments}"
        )
    return {"class": name, **arguments}


def check_width(where: str, width: float) -> float:
    """``width`` as a float after checking it is a positive finite number (a width multiplier).

    >>> check_width("resnet18", 0.25)
    0.25
    >>> check_width("resnet18", 0)
    Traceback (most recent call last):
    ...
    ValueError: resnet18: width must be a positive finite number ..., got 0
    """
    if (
        isinstance(width, bool)
        or not isinstance(width, int | float)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ValueError(
            f"{where}: width must be a positive finite number (a multiplier of the published "
            f"widths), got {width!r}"
        )
    return float(width)


def scale_width(where: str, base: int, width: float) -> int:
    """``base * width`` rounded half up to an int, and at least 1: one channel count.

    The same rule for every width multiplier of the zoo, so source 000 eq. 2.10's fractions
    {0.25, 0.5, 1, 1.5, 2, 2.5} of the widths 64..512 are exact.

    >>> [scale_width("resnet18", 64, w) for w in (0.25, 0.5, 1, 1.5, 2, 2.5)]
    [16, 32, 64, 96, 128, 160]
    >>> scale_width("resnet18", 16, 0.01)
    1
    """
    return max(1, math.floor(base * check_width(where, width) + 0.5))
