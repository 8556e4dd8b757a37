"""Sparse training by splitting (source 002 ch. 3-4): prox operators, RVSM / RVSCGD / RGSM,
the ADMM baseline, and sparsity measures.

- :mod:`~tailwise.train.splitting.prox`: the proximal operators of l1, l0, transformed l1,
  group lasso and group l0 (REFERENCES §5), pure functions on tensors.
- :mod:`~tailwise.train.splitting.rvsm`: :class:`RVSM`, :class:`RVSCGD`, :class:`RGSM`, torch
  optimizers wrapping any other (``fit(model, data, optimizer=RVSM(sgd, model, ...))``).
- :mod:`~tailwise.train.splitting.admm`: :class:`ADMM`, the squared-augmented-Lagrangian
  baseline with hard pruning and masked retraining.
- :mod:`~tailwise.train.splitting.measures`: :func:`sparsity`, :func:`channel_sparsity`.
"""

from tailwise.train.splitting.admm import ADMM, keep_mask
from tailwise.train.splitting.measures import (
    CHANNEL_COLUMNS,
    SPARSITY_COLUMNS,
    channel_sparsity,
    sparsity,
)
from tailwise.train.splitting.prox import (
    group_norms,
    prox_group_l0,
    prox_group_l1,
    prox_l0,
    prox_l1,
    prox_tl1,
    tl1_threshold,
)
from tailwise.train.splitting.rvsm import (
    RGSM,
    RVSCGD,
    RVSM,
    GroupPenalty,
    Penalty,
    SplittingOptimizer,
    splittable_weights,
)

__all__ = [
    "ADMM",
    "CHANNEL_COLUMNS",
    "RGSM",
    "RVSCGD",
    "RVSM",
    "SPARSITY_COLUMNS",
    "GroupPenalty",
    "Penalty",
    "SplittingOptimizer",
    "channel_sparsity",
    "group_norms",
    "keep_mask",
    "prox_group_l0",
    "prox_group_l1",
    "prox_l0",
    "prox_l1",
    "prox_tl1",
    "sparsity",
    "splittable_weights",
    "tl1_threshold",
]
