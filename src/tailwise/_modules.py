"""Small facts about modules and their inputs, needed on several floors of the package."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["as_args", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither).

    >>> model_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def as_args(inputs: Tensor | tuple[Any, ...]) -> tuple[Any, ...]:
    """Positional arguments of a forward call: a tuple as is, anything else as a 1-tuple.

    >>> len(as_args(torch.zeros(2))), len(as_args((1, 2)))
    (1, 2)
    """
    return inputs if isinstance(inputs, tuple) else (inputs,)
