"""The Carlini-Wagner L2 attack (source 002 §4.2.1; REFERENCES §7), untargeted.

C&W minimizes, for each example separately,

    ||x' - x||_2^2 + c f(x'),    f(x') = max(Z_y(x') - max_{i != y} Z_i(x'), -kappa)

over x' = (tanh(w) + 1) / 2, so that x' stays in [0, 1] without clipping, with Adam on w
(no binary search over c). Z are the logits and y the true class. The maximum over the other
classes is taken with the true class masked to -inf: masking it to 0 (as torchattacks 3.5.1
does, its issue #184) makes f(x') = max(Z_y, -kappa) whenever every logit is negative, so the
attack sees a correctly classified example as already fooled and stops pushing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.attacks._common import attack_mode, check_batch, check_count, check_real

__all__ = ["cw_l2", "cw_margin"]

# w = atanh(2x - 1) is infinite at x = 0 and 1 (common pixel values): C&W's own code scales
# 2x - 1 by 0.999999 so the start is finite and every pixel can move.
_TANH_SHRINK = 0.999999
# abort_early: an example stops after this many checks in a row without progress (one check
# is too few: an iterate oscillating across the decision boundary can hold its best distance
# for more than steps / 10 steps and then improve again).
_PATIENCE = 2


def cw_margin(logits: Tensor, y: Tensor, kappa: float = 0.0) -> Tensor:
    """C&W's objective term f = max(Z_y - max_{i != y} Z_i, -kappa), per example.

    Args:
        logits: Z, shape (N, C) with C >= 2.
        y: true classes (N,) int64.
        kappa: confidence, >= 0: f stops decreasing once the best other class leads by kappa.

    Returns:
        f, shape (N,): positive while x' is classified as y, <= 0 once it is not.

    The true class is excluded by masking it to -inf, so all-negative logits are handled:

    >>> cw_margin(torch.tensor([[-1.0, -5.0, -3.0]]), torch.tensor([0]))
    tensor([2.])
    >>> cw_margin(torch.tensor([[-4.0, -5.0, -3.0]]), torch.tensor([0]), kappa=0.5)
    tensor([-0.5000])
    """
    kappa = check_real("cw_margin", "kappa", kappa, positive=False)
    if logits.ndim != 2 or logits.shape[1] < 2 or y.shape != logits.shape[:1]:
        raise UsageError(
            f"cw_margin: expected logits (N, C >= 2) and classes (N,), got "
            f"{tuple(logits.shape)} and {tuple(y.shape)}"
        )
    return torch.clamp(_margin(logits, y), min=-kappa)


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Z_y - max_{i != y} Z_i (N,), the true class masked to -inf in the maximum."""
    true = logits.gather(1, y[:, None])[:, 0]
    is_true = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y[:, None], True)
    other = logits.masked_fill(is_true, float("-inf")).amax(dim=1)
    return true - other


def cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 50,
    lr: float = 0.01,
    abort_early: bool = True,
) -> Tensor:
    """Carlini-Wagner L2: the closest misclassified iterate of Adam in tanh space.

    Minimizes sum_n ||x'_n - x_n||^2 + c f(x'_n) (see :func:`cw_margin`) over w with
    x' = (tanh(w) + 1) / 2, starting at w = atanh(0.999999 (2x - 1)), for up to ``steps``
    Adam steps of learning rate ``lr`` (no binary search over c; defaults as torchattacks'
    ``CW``). An iterate counts as adversarial when max_{i != y} Z_i - Z_y > kappa; each
    example gets the adversarial iterate with the smallest L2 distance seen, or stays ``x``
    when none was. Deterministic; each example is optimized independently.

    ``abort_early`` (C&W's rule, per example and with patience): every ``max(steps // 10,
    1)`` steps each example's progress is checked, its best adversarial distance once it
    has one, its lowest objective before; after two checks in a row without a relative
    improvement of 1e-4 the example is finished and leaves the batch (its best iterate
    stays); the attack ends when none is left. The examples still running get exactly the
    iterates they would get without the abort (each is optimized on its own), so the abort
    only saves the forward and backward passes of converged examples. torchattacks instead
    compares the *batch's* summed loss, which rises while the distances grow, and stops the
    whole batch after a few steps.

    Args:
        model: maps inputs (N, ...) to logits (N, C).
        x: inputs (N, ...), every value in [0, 1].
        y: true classes (N,), integer.
        c: weight of the margin term, > 0.
        kappa: confidence margin, >= 0.
        steps: Adam steps, >= 1.
        lr: Adam learning rate, > 0.

    Returns:
        Adversarial inputs (shape of ``x``, detached, in [0, 1]); not bounded in L-infinity.

    >>> torch.manual_seed(0) and None
    >>> model = nn.Linear(4, 3)
    >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> x_adv = cw_l2(model, x, y, c=10.0, steps=30, lr=0.05)
    >>> x_adv.shape, bool(((0 <= x_adv) & (x_adv <= 1)).all())
    (torch.Size([5, 4]), True)
    """
    c = check_real("cw_l2", "c", c, positive=True)
    kappa = check_real("cw_l2", "kappa", kappa, positive=False)
    steps = check_count("cw_l2", "steps", steps)
    lr = check_real("cw_l2", "lr", lr, positive=True)
    check_batch("cw_l2", x, y, class_indices=True)
    x = x.detach()
    best = x.clone()
    with attack_mode(model):
        w = torch.atanh((2 * x - 1) * _TANH_SHRINK).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        best_l2 = torch.full(x.shape[:1], float("inf"), dtype=x.dtype, device=x.device)
        check_every = max(steps // 10, 1)
        last_check = torch.full_like(best_l2, float("inf"))  # lowest objective to last check
        lowest = torch.full_like(best_l2, float("inf"))  # lowest objective so far
        stalls = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        active = torch.arange(len(x), device=x.device)  # examples still optimized
        for step in range(steps):
            x_adv = (torch.tanh(w[active]) + 1) / 2
            l2 = (x_adv - x[active]).flatten(1).square().sum(dim=1)
            margin = _margin(model(x_adv), y[active])
            objective = l2 + c * torch.clamp(margin, min=-kappa)
            optimizer.zero_grad(set_to_none=True)
            objective.sum().backward()
            optimizer.step()  # rows left out get no gradient: Adam moves them, unused
            with torch.no_grad():
                lowest[active] = torch.minimum(lowest[active], objective)
                # -margin is max_{i != y} Z_i - Z_y of the iterate just evaluated.
                improved = (-margin > kappa) & (l2 < best_l2[active])
                best_l2[active] = torch.where(improved, l2, best_l2[active])
                mask = improved.view(-1, *([1] * (x.ndim - 1)))
                best[active] = torch.where(mask, x_adv, best[active])
                if abort_early and (step + 1) % check_every == 0:
                    # Progress: the distance returned once adversarial, the objective before.
                    found = torch.isfinite(best_l2[active])
                    previous = last_check[active]
                    now = torch.where(found, best_l2[active], lowest[active])
                    improved = ~(now > previous - 1e-4 * previous.abs())  # inf -> number: yes
                    last_check[active] = now
                    stalls[active] = torch.where(improved, 0, stalls[active] + 1)
                    active = active[stalls[active] < _PATIENCE]
                    if len(active) == 0:
                        break
    return best
