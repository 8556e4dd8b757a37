"""Input normalization inside the model, so that attacks see images in [0, 1].

REFERENCES §7 / source 002 ch. 4: attacks perturb images in [0, 1] (eps = 8/255 is measured
there) and clip to [0, 1], so the per-channel standardization the network was trained with
belongs inside the model. :class:`Normalize` is that layer; :func:`with_normalization` puts it
in front of any model as a :class:`Normalized` wrapper, which ``build_model`` rebuilds from its
``architecture()`` (the wrapped model's description nested under ``"model"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError


def _values(where: str, name: str, values: float | Sequence[float]) -> tuple[float, ...]:
    """``values`` as a non-empty tuple of finite floats (a number is a 1-tuple)."""
    items = [values] if isinstance(values, Real) else values
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or len(items) == 0:
        raise UsageError(
            f"{where}: {name} must be a number or a non-empty sequence of numbers (one per "
            f"channel), got {values!r}"
        )
    checked = []
    for value in items:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise UsageError(f"{where}: every {name} must be a finite number, got {values!r}")
        checked.append(float(value))
    return tuple(checked)


class Normalize(nn.Module):
    """``(x - mean[c]) / std[c]`` on every channel c of an input (N, C, ...).

    ``mean`` and ``std`` are numbers or sequences with one value per channel; a single value
    applies to every channel, otherwise the input must have ``len(mean)`` channels (and the two
    lengths must agree). Inputs are expected in [0, 1] (e.g. ``CIFAR10_MEAN`` / ``CIFAR10_STD``
    of :mod:`tailwise.data`). The constants are buffers of shape (C,) in the default dtype,
    cast to the input's dtype when applied; they follow ``.to(device / dtype)`` but stay out
    of the state_dict (they are constructor arguments, recorded by
    :meth:`Normalized.architecture`), so a wrapped model's state_dict holds only its weights.

    Input (N, C, ...); output of the same shape.

    >>> layer = Normalize([0.5, 0.25], [0.5, 0.25])
    >>> layer(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [1.0, 3.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        where = type(self).__name__
        means = _values(where, "mean", mean)
        stds = _values(where, "std", std)
        if any(value <= 0 for value in stds):
            raise UsageError(f"{where}: every std must be > 0, got {list(stds)}")
        if len(means) != len(stds) and 1 not in (len(means), len(stds)):
            raise UsageError(
                f"{where}: mean and std must have one value per channel (or one value), got "
                f"{len(means)} and {len(stds)} values"
            )
        self.channels = max(len(means), len(stds))
        # The constants as given (the buffers may be cast to another dtype): for architecture().
        self.mean_values, self.std_values = means, stds
        self.register_buffer("mean", torch.tensor(means), persistent=False)
        self.register_buffer("std", torch.tensor(stds), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalized input, same shape as ``x`` (N, C, ...)."""
        if x.ndim < 2 or (self.channels > 1 and x.shape[1] != self.channels):
            raise UsageError(
                f"{type(self).__name__}: expected input of shape (N, {self.channels}, ...), got "
                f"{tuple(x.shape)}"
            )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = self.mean.to(x.dtype).view(shape)
        out: Tensor = (x - mean) / self.std.to(x.dtype).view(shape)
        return out

    def extra_repr(self) -> str:
        return f"mean={list(self.mean_values)}, std={list(self.std_values)}"


class Normalized(nn.Module):
    """``model(normalize(x))``: a model behind a :class:`Normalize` layer (inputs in [0, 1]).

    Submodules ``normalize`` (a :class:`Normalize`) and ``model`` (the wrapped module, shared,
    not copied). State_dict keys: ``model.<the wrapped model's keys>`` and nothing else.
    Input as the wrapped model's, in [0, 1]; output the wrapped model's.

    >>> net = Normalized(nn.Linear(2, 1), mean=[0.5, 0.5], std=[0.5, 0.5])
    >>> list(net.state_dict())
    ['model.weight', 'model.bias']
    """

    def __init__(
        self, model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UsageError(
                f"{type(self).__name__}: model must be a torch.nn.Module, got "
                f"{type(model).__name__}"
            )
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped model's output on the normalized input."""
        out: Tensor = self.model(self.normalize(x))
        return out

    def architecture(self) -> dict[str, Any]:
        """``{"class": "Normalized", "model": <model.architecture()>, "mean", "std"}``.

        Raises ``ValueError`` when the wrapped model cannot describe itself (it has no
        ``architecture()``, or that raises).

        >>> from tailwise.models import preact_resnet20
        >>> described = Normalized(preact_resnet20(), 0.5, 0.25).architecture()
        >>> described["class"], described["model"]["class"], described["std"]
        ('Normalized', 'PreActResNet', [0.25])
        """
        method = getattr(self.model, "architecture", None)
        if not callable(method):
            raise ValueError(
                f"{type(self).__name__}: the wrapped {type(self.model).__name__} has no "
                "architecture() to describe it"
            )
        return {
            "class": type(self).__name__,
            "model": method(),
            "mean": list(self.normalize.mean_values),
            "std": list(self.normalize.std_values),
        }


def with_normalization(
    model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]
) -> Normalized:
    """``model`` behind a :class:`Normalize` layer: it then takes images in [0, 1].

    Use it for models trained on standardized images that are attacked or evaluated on
    [0, 1] images (REFERENCES §7); ``mean`` / ``std`` as for :class:`Normalize` (e.g.
    ``tailwise.data.CIFAR10_MEAN``, ``CIFAR10_STD``). ``model`` is wrapped, not copied; the
    result rebuilds with ``build_model(result.architecture())`` when ``model`` has an
    ``architecture()``. Raises :class:`tailwise.UsageError` for a non-module ``model`` or bad
    constants.

    >>> from tailwise.models import create_model
    >>> net = with_normalization(create_model("preact_resnet20"), (0.49, 0.48, 0.45),
    ...                          (0.25, 0.24, 0.26))
    >>> tuple(net(torch.rand(2, 3, 32, 32)).shape)
    (2, 10)
    """
    return Normalized(model, mean, std)
