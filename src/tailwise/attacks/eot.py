"""Expectation over transformation (EOT) for models whose forward pass is random.

A stochastic model (002's EnResNet keeps its Gaussian noise on at test time) gives a
different gradient on every pass, so a gradient attack on one pass follows noise. EOT
(Athalye et al. 2018) attacks the expectation instead: :class:`EOT` wraps the model in a
module whose logits are the mean over ``samples`` independent passes,

    Z̄(x) = (1 / S) sum_{s=1..S} Z(x; noise_s),    ∇_x Z̄ = (1 / S) sum_s ∇_x Z(x; noise_s),

so every attack run on it (FGSM, PGD, C&W, or any other) follows the averaged gradient of the
logits. :func:`eot` runs a given attack on that wrapper. The passes run one after another on
the full batch (a model whose noise depends on batch statistics, like EnResNet's
std(out), sees the same batch as in a single pass); the randomness is the model's own, so
``torch.manual_seed`` makes a run reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from tailwise.attacks._common import Attack, check_count

__all__ = ["EOT", "eot"]


class EOT(nn.Module):
    """``model`` with logits averaged over ``samples`` forward passes (shares its parameters).

    The wrapped model is the child ``model``: train/eval mode and devices pass through.

    >>> import torch
    >>> class Noisy(nn.Module):  # the noise stays on in eval mode, as in EnResNet
    ...     def forward(self, x: Tensor) -> Tensor:
    ...         return x + torch.randn_like(x)
    >>> x = torch.zeros(1, 2)
    >>> torch.manual_seed(0) and None
    >>> passes = (Noisy()(x) + Noisy()(x) + Noisy()(x)) / 3
    >>> torch.manual_seed(0) and None
    >>> torch.allclose(EOT(Noisy(), samples=3)(x), passes)
    True
    """

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"EOT: model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = check_count("EOT", "samples", samples)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The mean of ``samples`` calls ``model(*args, **kwargs)`` (logits (N, C))."""
        total: Tensor = self.model(*args, **kwargs)
        for _ in range(self.samples - 1):
            total = total + self.model(*args, **kwargs)
        return total / self.samples

    def extra_repr(self) -> str:
        return f"samples={self.samples}"


def eot(model: nn.Module, attack: Attack, samples: int) -> Callable[[Tensor, Tensor], Tensor]:
    """``attack`` against ``model``'s expectation: a function ``(x, y) -> x_adv``.

    ``attack`` is any ``(model, x, y) -> x_adv`` (e.g. ``functools.partial(pgd, eps=8/255,
    alpha=2/255, steps=10)``); it runs on ``EOT(model, samples)``, so each of its gradients
    averages ``samples`` passes of the stochastic ``model``. For a deterministic model the
    result is the attack on the model itself.

    >>> import functools, torch
    >>> from tailwise.attacks import fgsm
    >>> model = nn.Sequential(nn.Linear(3, 2))
    >>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 1, 0])
    >>> attack = eot(model, functools.partial(fgsm, eps=0.1), samples=4)
    >>> torch.allclose(attack(x, y), fgsm(model, x, y, eps=0.1))
    True
    """
    averaged = EOT(model, samples)

    def attack_expectation(x: Tensor, y: Tensor) -> Tensor:
        return attack(averaged, x, y)

    return attack_expectation
