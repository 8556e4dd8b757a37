"""Initialisation regimes of source 004: uniform [0, c] and scaled Glorot normal.

Source 004 §4.4: "For all datasets except CIFAR-10 we sample the weights uniformly between 0
and a maximum value that is set based on the initialization regime" (the *small* and *large*
regimes of Geiger et al. 2020), and "For CIFAR-10 variance scaling with a Glorot Normal
distribution [...] was used to initialize the weights where we changed the scaling to find the
different initialization regimes". The per-experiment values are the rows "Init sigma^2
(Small)" / "Init sigma^2 (Large)" of 004 Table 4.2, collected in :data:`REGIMES`.

Only the weights and biases of ``nn.Linear`` and convolution layers (``nn.Conv1d/2d/3d`` and
their transposes) are initialised; other modules (BatchNorm, Embedding, ...) keep their values.
004 speaks of weights only; biases are set to zero by default (the Keras default that the
names "variance scaling" / "Glorot Normal" point to), or drawn from the same distribution
with ``bias="same"``, or left alone with ``bias="keep"``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

__all__ = [
    "REGIMES",
    "BiasInit",
    "InitRegime",
    "glorot_std",
    "init_glorot_normal",
    "init_uniform",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
Experiment = Literal["xor", "xord", "mnist", "synthetic", "cifar10"]
Activation = Literal["tanh", "relu"]


class BiasInit(str, enum.Enum):
    """What the initialisers do with the biases of the layers they touch."""

    ZEROS = "zeros"
    SAME = "same"
    KEEP = "keep"


def _weights_and_biases(model: nn.Module) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(weight, bias or None) of every Linear / convolution layer, in ``modules()`` order."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, _ConvNd)):
            bias = module.bias if isinstance(module.bias, Tensor) else None
            yield module.weight, bias


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63) or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _check_layers(model: nn.Module, where: str) -> list[tuple[Tensor, Tensor | None]]:
    layers = list(_weights_and_biases(model))
    if not layers:
        raise ValueError(f"{where}: the model has no Linear or convolution layer to initialise")
    return layers


def _fill(parameter: Tensor, draw: Tensor) -> None:
    """Copy a CPU draw into ``parameter`` (any device), so a seed means the same numbers."""
    with torch.no_grad():
        parameter.copy_(draw.to(parameter.device, parameter.dtype))


def _init_bias(bias: Tensor | None, mode: BiasInit, draw: Callable[[torch.Size], Tensor]) -> None:
    if bias is None or mode is BiasInit.KEEP:
        return
    if mode is BiasInit.ZEROS:
        _fill(bias, torch.zeros(bias.shape, dtype=torch.float64))
    else:
        _fill(bias, draw(bias.shape))


def init_uniform(
    model: ModuleT,
    c: float,
    *,
    bias: BiasInit | str = BiasInit.ZEROS,
    seed: int | None = None,
) -> ModuleT:
    """Set every Linear / conv weight to i.i.d. Uniform[0, c] draws (source 004 §4.4).

    ``c`` > 0 is the maximum of the uniform distribution: 004 Table 4.2 gives e.g. c = 0.03
    (small) and c = 2.3 (large) for the XOR network with Tanh (see :data:`REGIMES`). All
    entries are non-negative, as in 004. ``bias``: see :class:`BiasInit` (``"same"`` draws the
    biases from Uniform[0, c] too). ``seed``: draws come from a CPU ``torch.Generator`` seeded
    with it (the same numbers on every device); ``None`` uses torch's global RNG.

    Returns ``model``, modified in place.

    >>> weight, bias = init_uniform(nn.Linear(3, 4), 2.3, seed=0).parameters()
    >>> bool(weight.min() >= 0 and weight.max() <= 2.3), bias.detach().abs().sum().item()
    (True, 0.0)
    """
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"init_uniform: c must be a finite number > 0, got {c!r}")
    bias = BiasInit(bias)
    generator = _generator(seed)

    def draw(shape: torch.Size) -> Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64) * c

    for weight, layer_bias in _check_layers(model, "init_uniform"):
        _fill(weight, draw(weight.shape))
        _init_bias(layer_bias, bias, draw)
    return model


def glorot_std(weight: Tensor, scale: float = 1.0) -> float:
    """Standard deviation sqrt(scale * 2 / (fan_in + fan_out)) of scaled Glorot normal.

    ``weight`` (out, in, *kernel): fan_in = in * prod(kernel), fan_out = out * prod(kernel)
    (torch's convention, also for transposed convolutions). ``scale`` multiplies the variance,
    as Keras' ``VarianceScaling(scale, mode="fan_avg")`` does; ``scale = 1`` is Glorot &
    Bengio (2010).
    """
    if weight.ndim < 2:
        raise ValueError(f"glorot_std: weight must have >= 2 dimensions, got {weight.ndim}")
    receptive = math.prod(weight.shape[2:])
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(scale * 2.0 / (fan_in + fan_out))


def init_glorot_normal(
    model: ModuleT,
    scale: float = 1.0,
    *,
    bias: BiasInit | str = BiasInit.ZEROS,
    seed: int | None = None,
) -> ModuleT:
    """Set every Linear / conv weight to N(0, scale * 2 / (fan_in + fan_out)) (004 §4.4).

    Variance scaling with a Glorot normal distribution, the CIFAR-10 initialisation of 004:
    ``scale`` multiplies the variance (004 Table 4.2: 0.2 small, 5.0 large); see
    :func:`glorot_std`. The normal is not truncated. ``bias="same"`` draws a layer's biases
    from the same normal as its weights. ``seed``: as in :func:`init_uniform`.

    Returns ``model``, modified in place.

    >>> layer = init_glorot_normal(nn.Linear(300, 100), 5.0, seed=0)
    >>> round(layer.weight.detach().std().item(), 2), round((5.0 * 2 / 400) ** 0.5, 2)
    (0.16, 0.16)
    """
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise ValueError(f"init_glorot_normal: scale must be a finite number > 0, got {scale!r}")
    bias = BiasInit(bias)
    generator = _generator(seed)
    for weight, layer_bias in _check_layers(model, "init_glorot_normal"):
        std = glorot_std(weight, scale)

        def draw(shape: torch.Size, std: float = std) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=torch.float64) * std

        _fill(weight, draw(weight.shape))
        _init_bias(layer_bias, bias, draw)
    return model


def _frozen(values: dict[tuple[str, str], float]) -> Mapping[tuple[str, str], float]:
    return MappingProxyType(values)


@dataclass(frozen=True)
class InitRegime:
    """One initialisation regime of 004 (small or large), per experiment and activation.

    ``values[(experiment, activation)]`` is the 004 Table 4.2 value: the maximum ``c`` of
    Uniform[0, c] for ``"xor"``, ``"xord"``, ``"mnist"``, ``"synthetic"``, and the variance
    scale of Glorot normal for ``"cifar10"``. Table 4.2 labels these rows "Init sigma^2"
    although §4.4 calls the uniform ones a maximum value; they are used as that maximum.
    """

    name: str
    values: Mapping[tuple[str, str], float] = field(repr=False)

    def value(self, experiment: Experiment | str, activation: Activation | str) -> float:
        """The Table 4.2 value for ``experiment`` and ``activation`` ("tanh" or "relu")."""
        key = (experiment, activation)
        if key not in self.values:
            raise ValueError(
                f"InitRegime {self.name!r}: no value for {key}; known: {sorted(self.values)}"
            )
        return self.values[key]

    def apply(
        self,
        model: ModuleT,
        experiment: Experiment | str,
        activation: Activation | str,
        *,
        bias: BiasInit | str = BiasInit.ZEROS,
        seed: int | None = None,
    ) -> ModuleT:
        """Initialise ``model`` as 004 did for ``experiment``: uniform, or Glorot for CIFAR-10.

        >>> model = REGIMES["large"].apply(nn.Linear(2, 8), "xor", "tanh", seed=0)
        >>> model.weight.detach().max().item() <= 2.3
        True
        """
        value = self.value(experiment, activation)
        if experiment == "cifar10":
            return init_glorot_normal(model, value, bias=bias, seed=seed)
        return init_uniform(model, value, bias=bias, seed=seed)


# 004 Table 4.2, rows "Init sigma^2 (Small)" and "Init sigma^2 (Large)".
_EXPERIMENTS = ("xor", "xord", "mnist", "synthetic", "cifar10")
_SMALL = (0.03, 0.03, 0.4, 0.2, 0.1, 0.1, 0.05, 0.02, 0.2, 0.2)
_LARGE = (2.3, 1.7, 4.0, 2.0, 2.0, 2.0, 0.5, 0.2, 5.0, 5.0)


def _table(row: tuple[float, ...]) -> Mapping[tuple[str, str], float]:
    keys = [(experiment, act) for experiment in _EXPERIMENTS for act in ("tanh", "relu")]
    return _frozen(dict(zip(keys, row, strict=True)))


REGIMES: Mapping[str, InitRegime] = MappingProxyType(
    {
        "small": InitRegime("small", _table(_SMALL)),
        "large": InitRegime("large", _table(_LARGE)),
    }
)
"""The two regimes of 004 Table 4.1 / 4.2: ``REGIMES["large"].value("xor", "tanh") == 2.3``."""
