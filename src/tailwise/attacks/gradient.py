"""Gradient-sign attacks in the L-infinity ball: FGSM, PGD and IFGSM (source 002 §4.2.1).

With L the loss of the model's logits on (x, y) and Clip the projection on the eps-ball
around x intersected with [0, 1]^d (REFERENCES §7):

- FGSM: x' = clip_[0,1](x + eps sign(∇_x L(x, y)))
- IFGSM^M (002 §4.2.1): x^(0) = x, x^(m) = Clip(x^(m-1) + alpha sign(∇_x L(x^(m-1), y))),
  m = 1..M, x' = x^(M)
- PGD (Madry et al.): IFGSM from a random start x^(0) = clip_[0,1](x + U(-eps, eps)^d)

Inputs are images in [0, 1]; normalization belongs inside the model. Each attack runs the
model in eval mode with its parameters frozen and restores every module's mode and every
parameter's ``requires_grad`` afterwards (no parameter gradient is computed or accumulated).
Results are detached tensors of the inputs' shape, dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tailwise._seeds import Seed
from tailwise._seeds import generator as make_generator
from tailwise.attacks._common import (
    LossFn,
    attack_mode,
    check_batch,
    check_count,
    check_real,
    input_gradient,
)

__all__ = ["fgsm", "ifgsm", "pgd"]


def fgsm(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, *, loss_fn: LossFn | None = None
) -> Tensor:
    """Fast gradient sign method: x' = clip_[0,1](x + eps sign(∇_x L(model(x), y))).

    Source 002 §4.2.1 (the linearized maximizer of L over the L-infinity ball of radius eps).

    Args:
        model: maps inputs (N, ...) to logits (N, C).
        x: inputs (N, ...), every value in [0, 1].
        y: targets (N,) class indices (or what ``loss_fn`` takes).
        eps: L-infinity radius, >= 0 (e.g. 8/255 on CIFAR).
        loss_fn: ``(logits, y) -> scalar`` to increase; default batch-mean cross-entropy.

    Returns:
        Adversarial inputs, shape of ``x``, detached, in [0, 1] and within eps of ``x``.

    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.full((4, 3), 0.5), torch.tensor([0, 1, 0, 1])
    >>> x_adv = fgsm(model, x, y, eps=0.1)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-7).all())
    True
    """
    eps = check_real("fgsm", "eps", eps, positive=False)
    check_batch("fgsm", x, y)
    with attack_mode(model):
        grad = input_gradient(model, x, y, loss_fn, "fgsm")
    return torch.clamp(x.detach() + eps * grad.sign(), 0.0, 1.0)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = True,
    generator: Seed | None = None,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """Projected gradient descent in the L-infinity ball (IFGSM from a random start).

    ``steps`` times: x' <- x' + alpha sign(∇_x' L(model(x'), y)), then x' <- x +
    clip(x' - x, -eps, eps) clipped to [0, 1] (source 002 §4.2.1, IFGSM^M; REFERENCES §7).
    With ``random_start`` the iteration begins at clip_[0,1](x + U(-eps, eps)) (002's
    adversarial training: eps 8/255, alpha 2/255, 10 steps); without, at x (IFGSM).

    Args:
        model: maps inputs (N, ...) to logits (N, C).
        x: inputs (N, ...), every value in [0, 1].
        y: targets (N,) class indices (or what ``loss_fn`` takes).
        eps: L-infinity radius, >= 0.
        alpha: step size, >= 0.
        steps: number of gradient steps, >= 1.
        random_start: begin at a uniform random point of the eps-ball.
        generator: the seed (int) or ``torch.Generator`` (on the inputs' device) of the
            random start; default torch's global generator.
        loss_fn: ``(logits, y) -> scalar`` to increase; default batch-mean cross-entropy.

    Returns:
        Adversarial inputs, shape of ``x``, detached, in [0, 1] and within eps of ``x``.

    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    >>> a = pgd(model, x, y, eps=0.1, alpha=0.025, steps=5, generator=0)
    >>> b = pgd(model, x, y, eps=0.1, alpha=0.025, steps=5, generator=0)
    >>> torch.equal(a, b), bool(((a - x).abs() <= 0.1 + 1e-6).all())
    (True, True)
    """
    return _iterate("pgd", model, x, y, eps, alpha, steps, random_start, generator, loss_fn)


def ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """Iterative FGSM (source 002 §4.2.1, IFGSM^M): :func:`pgd` without the random start.

    Deterministic. 002 evaluates with IFGSM^20 at eps 8/255, alpha 2/255.

    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    >>> a = ifgsm(model, x, y, eps=0.1, alpha=0.025, steps=3)
    >>> torch.equal(a, pgd(model, x, y, 0.1, 0.025, 3, random_start=False))
    True
    """
    return _iterate("ifgsm", model, x, y, eps, alpha, steps, False, None, loss_fn)


def _iterate(
    where: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    generator: Seed | None,
    loss_fn: LossFn | None,
) -> Tensor:
    """The PGD / IFGSM iteration; ``where`` names the public function in messages."""
    eps = check_real(where, "eps", eps, positive=False)
    alpha = check_real(where, "alpha", alpha, positive=False)
    steps = check_count(where, "steps", steps)
    check_batch(where, x, y)
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        rng = None if generator is None else make_generator(generator, x.device)
        noise = torch.rand(x.shape, generator=rng, dtype=x.dtype, device=x.device)
        x_adv = torch.clamp(x_adv + (2 * noise - 1) * eps, 0.0, 1.0)
    with attack_mode(model):
        for _ in range(steps):
            grad = input_gradient(model, x_adv, y, loss_fn, where)
            # Step, then project: onto the eps-ball around x, then onto the image box.
            x_adv = x_adv + alpha * grad.sign()
            delta = torch.clamp(x_adv - x, -eps, eps)
            x_adv = torch.clamp(x + delta, 0.0, 1.0)
    return x_adv
