"""What every attack shares: argument checks, the attack mode of a model, input gradients.

An attack treats the model as a fixed function of its input: it runs the model in eval mode
(BatchNorm on its running statistics, dropout off), turns off ``requires_grad`` on every
parameter so that backward passes compute input gradients only, and afterwards restores each
module's train/eval flag and each parameter's ``requires_grad`` exactly as they were.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._errors import UsageError

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``(logits (N, C), targets) -> scalar``: the loss an attack increases."""

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``(model, x, y) -> x_adv``: e.g. ``functools.partial(ifgsm, eps=0.1, alpha=0.025, steps=20)``
or an :class:`tailwise.attacks.AttackSpec`."""


def check_real(where: str, name: str, value: object, *, positive: bool) -> float:
    """``value`` as a float, which must be finite and > 0 (``positive``) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: {name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise UsageError(f"{where}: {name} must be finite and {bound}, got {value!r}")
    return number


def check_count(where: str, name: str, value: object) -> int:
    """``value`` as an int >= 1 (a number of steps or samples)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {name} must be an int >= 1, got {value!r}")
    return value


def check_batch(where: str, x: object, y: object, *, class_indices: bool = False) -> None:
    """Inputs ``x`` (N, ...) floating with every value in [0, 1], targets ``y`` with N rows.

    ``class_indices``: ``y`` must be integer class indices of shape (N,) (C&W's margin needs
    them; a loss function may take class probabilities instead).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        kind = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise UsageError(f"{where}: inputs must be a floating tensor (N, ...), got {kind}")
    if not isinstance(y, Tensor) or y.ndim < 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise UsageError(
            f"{where}: targets must be a tensor with one row per input ({x.shape[0]}), got {shape}"
        )
    if class_indices and (y.ndim != 1 or y.is_floating_point() or y.is_complex()):
        raise UsageError(
            f"{where}: targets must be integer class indices of shape (N,), "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        low, high = float(x.min()), float(x.max())
        raise UsageError(
            f"{where}: inputs must lie in [0, 1] (normalization belongs inside the model), "
            f"got values in [{low:g}, {high:g}]"
        )


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and its parameters frozen; restore both.

    Every module's own ``training`` flag is restored (a model may mix train and eval
    submodules), and every parameter's ``requires_grad``: no gradient reaches a parameter,
    so nothing is accumulated in ``.grad`` and backward passes skip weight gradients.
    """
    modes = [(module, module.training) for module in model.modules()]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for parameter, _ in frozen:
            parameter.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in frozen:
            parameter.requires_grad_(requires_grad)


def input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn | None, where: str
) -> Tensor:
    """∇_x loss_fn(model(x), y), shape of ``x``; call inside :func:`attack_mode`.

    The default loss is the batch-mean cross-entropy (its gradient's sign, all the gradient
    attacks use, is that of the per-example gradient).
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y)
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise UsageError(f"{where}: loss_fn must return a scalar tensor, got {shape}")
    (grad,) = torch.autograd.grad(loss, x)
    return grad
