"""Attack names such as ``"fgsm"``, ``"ifgsm20"``, ``"pgd10"``, ``"cw"``, parsed once.

The vocabulary (case-insensitive):

========== =================================================================================
natural    no attack: the clean inputs (002's A1)
fgsm       :func:`fgsm` at radius eps (A2)
ifgsm<k>   :func:`ifgsm`, k steps of size alpha (``ifgsm20``: 002's A3)
pgd<k>     :func:`pgd` from a random start, k steps of size alpha (``pgd10``: 002's training)
cw, cw<k>  :func:`cw_l2` with k Adam steps (default 50) (A4); not bounded by eps
========== =================================================================================

:func:`parse_attack` turns a name and its parameters into an :class:`AttackSpec`, a frozen
callable ``spec(model, x, y, generator=None) -> x_adv`` that both
:func:`tailwise.attacks.robust_accuracy` and adversarial training
(:mod:`tailwise.train.adversarial`) run.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._seeds import Seed
from tailwise.attacks._common import LossFn, check_count, check_real
from tailwise.attacks.cw import cw_l2
from tailwise.attacks.gradient import fgsm, pgd

__all__ = ["ATTACK_NAMES", "AttackMethod", "AttackSpec", "parse_attack"]

ATTACK_NAMES = ("natural", "fgsm", "ifgsm<k>", "pgd<k>", "cw", "cw<k>")
"""The attack vocabulary of :func:`parse_attack` (k: a number of steps >= 1)."""

DEFAULT_CW_STEPS = 50
_NAME = re.compile(r"(natural|fgsm|ifgsm|pgd|cw)(\d*)")


class AttackMethod(str, enum.Enum):
    """The algorithm an :class:`AttackSpec` runs."""

    NATURAL = "natural"
    FGSM = "fgsm"
    IFGSM = "ifgsm"
    PGD = "pgd"
    CW = "cw"


_STEPPED = (AttackMethod.IFGSM, AttackMethod.PGD, AttackMethod.CW)


@dataclass(frozen=True)
class AttackSpec:
    """One attack with all its parameters; call it as ``spec(model, x, y)``.

    ``eps`` and ``alpha`` are used by the gradient attacks (L-infinity radius and step),
    ``c``, ``kappa`` and ``lr`` by C&W, ``steps`` by IFGSM, PGD and C&W. Build it with
    :func:`parse_attack`, which checks every value.
    """

    method: AttackMethod
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 1
    c: float = 1.0
    kappa: float = 0.0
    lr: float = 0.01

    @property
    def name(self) -> str:
        """The canonical name: ``"natural"``, ``"fgsm"``, ``"ifgsm20"``, ``"pgd10"``, ``"cw50"``.

        >>> parse_attack("IFGSM20").name
        'ifgsm20'
        """
        if self.method in _STEPPED:
            return f"{self.method.value}{self.steps}"
        return self.method.value

    @property
    def bounded(self) -> bool:
        """Whether the result lies within ``eps`` of the input in L-infinity (not C&W)."""
        return self.method in (AttackMethod.FGSM, AttackMethod.IFGSM, AttackMethod.PGD)

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: Seed | None = None,
        loss_fn: LossFn | None = None,
    ) -> Tensor:
        """Adversarial inputs for ``(x, y)`` against ``model`` (``x`` itself for natural).

        ``generator``: the random start of PGD (int seed or ``torch.Generator``); ``loss_fn``:
        the loss FGSM / IFGSM / PGD increase (default cross-entropy; C&W has its own).
        """
        if self.method is AttackMethod.NATURAL:
            return x.detach()
        if self.method is AttackMethod.FGSM:
            return fgsm(model, x, y, self.eps, loss_fn=loss_fn)
        if self.method is AttackMethod.CW:
            return cw_l2(model, x, y, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)
        random_start = self.method is AttackMethod.PGD
        return pgd(
            model,
            x,
            y,
            self.eps,
            self.alpha,
            self.steps,
            random_start=random_start,
            generator=generator,
            loss_fn=loss_fn,
        )


def parse_attack(
    name: str,
    *,
    eps: float = 8 / 255,
    alpha: float | None = None,
    c: float = 1.0,
    kappa: float = 0.0,
    lr: float = 0.01,
) -> AttackSpec:
    """The :class:`AttackSpec` of an attack name (see the module docstring for the names).

    Args:
        name: ``"natural"``, ``"fgsm"``, ``"ifgsm<k>"``, ``"pgd<k>"``, ``"cw"`` or ``"cw<k>"``
            (case-insensitive; k >= 1 steps).
        eps: L-infinity radius of FGSM / IFGSM / PGD, >= 0 (002: 8/255 on CIFAR).
        alpha: step size of IFGSM / PGD, >= 0; default eps / 4 (002: 2/255 at eps 8/255).
        c, kappa, lr: C&W's margin weight (> 0), confidence (>= 0) and Adam step (> 0).

    Unknown names raise :class:`tailwise.UsageError` listing the vocabulary.

    >>> spec = parse_attack("pgd10")
    >>> spec.method.value, spec.steps, round(spec.alpha * 255, 6)
    ('pgd', 10, 2.0)
    >>> parse_attack("cw").steps
    50
    """
    where = f"attack {name!r}"
    match = _NAME.fullmatch(name.strip().lower()) if isinstance(name, str) else None
    if match is None:
        raise UsageError(
            f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)} (k: steps >= 1, "
            "e.g. ifgsm20, pgd10, cw100)"
        )
    method, digits = AttackMethod(match.group(1)), match.group(2)
    needs_steps = method in (AttackMethod.IFGSM, AttackMethod.PGD)
    if (needs_steps and not digits) or (digits and method not in _STEPPED):
        form = f"{method.value}<k>, e.g. {method.value}10" if needs_steps else method.value
        raise UsageError(f"unknown attack {name!r}; write {form}")
    steps = DEFAULT_CW_STEPS if not digits else check_count(where, "steps", int(digits))
    eps = check_real(where, "eps", eps, positive=False)
    alpha = eps / 4 if alpha is None else alpha
    return AttackSpec(
        method=method,
        eps=eps,
        alpha=check_real(where, "alpha", alpha, positive=False),
        steps=steps if method in _STEPPED else 1,
        c=check_real(where, "c", c, positive=True),
        kappa=check_real(where, "kappa", kappa, positive=False),
        lr=check_real(where, "lr", lr, positive=True),
    )
