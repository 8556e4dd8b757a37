"""Adversarial attacks and robust accuracy (source 002 ch. 4; REFERENCES §7).

Inputs are images in [0, 1]; normalization belongs inside the model. Every attack runs the
model in eval mode with its parameters frozen and restores every module's mode and every
parameter's ``requires_grad``: no parameter gradient is computed or accumulated.

- :func:`fgsm`, :func:`pgd`, :func:`ifgsm`: gradient-sign attacks in the L-infinity ball;
- :func:`cw_l2`, :func:`cw_margin`: Carlini-Wagner L2 (the true class masked to -inf);
- :class:`EOT`, :func:`eot`: attacks on stochastic models through averaged logits;
- :func:`parse_attack`, :class:`AttackSpec`: names such as ``"ifgsm20"`` parsed once;
- :func:`robust_accuracy`: 002's table of natural and robust accuracies.

Adversarial training lives in :mod:`tailwise.train.adversarial`.
"""

from tailwise.attacks._common import Attack, LossFn
from tailwise.attacks.cw import cw_l2, cw_margin
from tailwise.attacks.eot import EOT, eot
from tailwise.attacks.gradient import fgsm, ifgsm, pgd
from tailwise.attacks.robust import ROBUST_COLUMNS, robust_accuracy
from tailwise.attacks.spec import ATTACK_NAMES, AttackMethod, AttackSpec, parse_attack

__all__ = [
    "ATTACK_NAMES",
    "EOT",
    "ROBUST_COLUMNS",
    "Attack",
    "AttackMethod",
    "AttackSpec",
    "LossFn",
    "cw_l2",
    "cw_margin",
    "eot",
    "fgsm",
    "ifgsm",
    "parse_attack",
    "pgd",
    "robust_accuracy",
]
