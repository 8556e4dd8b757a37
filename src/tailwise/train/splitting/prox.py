"""Proximal operators of the sparsity penalties of source 002 (REFERENCES §5).

The proximal operator of ``t P`` maps ``y`` to ``argmin_x 1/2 ||x - y||^2 + t P(x)``. For the
entry-wise penalties (l1, l0, transformed l1) the problem separates over the entries of ``y``;
for the group penalties it separates over groups (slices of a tensor along one dimension).
In the splitting methods of :mod:`tailwise.train.splitting` the parameter is ``t = lambda /
beta`` (source 002 Algorithm 1: ``u <- argmin_u L_beta(w, u)``).

- l1, P(x) = |x|: soft threshold ``sign(y) max(|y| - t, 0)``.
- l0, P(x) = 1[x != 0]: hard threshold ``y 1[|y| > sqrt(2 t)]`` (source 002 Lemma 15).
- transformed l1 (Tl1), P(x) = rho_a(x) = (a + 1)|x| / (a + |x|), a > 0: the closed form of
  source 002 Lemma 14 / REFERENCES §5 with its two-regime threshold tau (:func:`tl1_threshold`);
  not the threshold ``|y| > t`` that many copies use. a -> infinity gives l1, a -> 0 gives l0.
- group lasso, P(W) = sum_g ||W_g||_2: ``W_g max(0, 1 - t / ||W_g||)`` (source 002 eq. 4.4).
- group l0, P(W) = #{g : W_g != 0}: ``W_g 1[||W_g|| > sqrt(2 t)]`` (source 002 eq. 4.6).

Groups are the slices ``W.select(dim, g)`` of a tensor: with ``dim=0`` on a Conv weight
(out, in, kh, kw) or a Linear weight (out, in) a group is one output channel and its norm is
taken over all the other dimensions. Ties (|y| exactly at a threshold where 0 and the nonzero
candidate give the same value) resolve to 0.

All functions are pure: they return a new tensor of ``y``'s shape, dtype and device and
compute in that dtype.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from tailwise._errors import UsageError

__all__ = [
    "prox_group_l0",
    "prox_group_l1",
    "prox_l0",
    "prox_l1",
    "prox_tl1",
    "tl1_threshold",
]


def _check_tensor(y: object, where: str, what: str = "y") -> Tensor:
    if not isinstance(y, Tensor):
        raise UsageError(f"{where}: {what} must be a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise UsageError(f"{where}: {what} must be a floating-point tensor, got {y.dtype}")
    return y


def check_nonnegative(value: object, where: str, what: str) -> float:
    """``value`` as a float if it is a finite real number >= 0, else a UsageError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{where}: {what} must be a number >= 0, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise UsageError(f"{where}: {what} must be a finite number >= 0, got {value!r}")
    return number


def check_positive(value: object, where: str, what: str) -> float:
    """``value`` as a float if it is a finite real number > 0, else a UsageError."""
    number = check_nonnegative(value, where, what)
    if number == 0:
        raise UsageError(f"{where}: {what} must be > 0, got {value!r}")
    return number


def prox_l1(y: Tensor, t: float) -> Tensor:
    """Soft threshold: the prox of ``t |x|``, entry-wise ``sign(y) max(|y| - t, 0)``.

    ``y``: any shape; ``t >= 0``. Source 002 §3.1.3 (S_{lambda/beta}), REFERENCES §5.

    >>> prox_l1(torch.tensor([-3.0, 0.5, 2.0]), 1.0)
    tensor([-2.,  0.,  1.])
    """
    y = _check_tensor(y, "prox_l1")
    t = check_nonnegative(t, "prox_l1", "t")
    return torch.sign(y).mul_(torch.clamp_min_(y.abs().sub_(t), 0.0))


def prox_l0(y: Tensor, t: float) -> Tensor:
    """Hard threshold: the prox of ``t 1[x != 0]``, entry-wise ``y 1[|y| > sqrt(2 t)]``.

    ``y``: any shape; ``t >= 0``. Source 002 Lemma 15, REFERENCES §5.

    >>> prox_l0(torch.tensor([-3.0, 0.5, 1.5]), 1.0)  # threshold sqrt(2) = 1.414...
    tensor([-3.0000,  0.0000,  1.5000])
    """
    y = _check_tensor(y, "prox_l0")
    t = check_nonnegative(t, "prox_l0", "t")
    return y.masked_fill(y.abs() <= math.sqrt(2.0 * t), 0.0)


def tl1_threshold(t: float, a: float) -> float:
    """The threshold tau of the transformed-l1 prox: |y| <= tau maps to 0.

    ``tau = t (a + 1) / a`` if ``t <= a^2 / (2 (a + 1))``, else ``sqrt(2 t (a + 1)) - a / 2``
    (source 002 Lemma 14, REFERENCES §5). In the first regime the prox is continuous at tau;
    in the second it jumps there from 0 to a nonzero value.

    >>> tl1_threshold(0.1, 1.0), tl1_threshold(1.0, 1.0)
    (0.2, 1.5)
    """
    t = check_nonnegative(t, "tl1_threshold", "t")
    a = check_positive(a, "tl1_threshold", "a")
    if t <= a * a / (2.0 * (a + 1.0)):
        return t * (a + 1.0) / a
    return math.sqrt(2.0 * t * (a + 1.0)) - a / 2.0


def prox_tl1(y: Tensor, t: float, a: float = 1.0) -> Tensor:
    """The prox of ``t rho_a(x)``, ``rho_a(x) = (a + 1)|x| / (a + |x|)`` (transformed l1).

    Entry-wise, 0 where ``|y| <= tau`` (:func:`tl1_threshold`), elsewhere
    ``sign(y) [(2/3)(a + |y|) cos(phi / 3) - 2a/3 + |y|/3]`` with
    ``phi = arccos(1 - 27 t a (a + 1) / (2 (a + |y|)^3))`` (source 002 Lemma 14, REFERENCES §5).
    ``y``: any shape; ``t >= 0``; ``a > 0``.

    >>> prox_tl1(torch.tensor([-3.0, 0.1, 2.0]), 0.1, 1.0)  # tau = 0.2
    tensor([-2.9874,  0.0000,  1.9774])
    """
    y = _check_tensor(y, "prox_tl1")
    t = check_nonnegative(t, "prox_tl1", "t")
    a = check_positive(a, "prox_tl1", "a")
    if t == 0.0:
        return y.clone()  # exactly the identity (the closed form is only up to rounding)
    tau = tl1_threshold(t, a)
    magnitude = y.abs()
    shifted = magnitude + a  # a + |y|
    # In place on one buffer (it runs on every weight at every step of RVSM):
    # cos(phi) = 1 - 27 t a (a + 1) / (2 (a + |y|)^3); |y| > tau keeps it in [-1, 1], the
    # clamp only guards rounding at the edge.
    out = shifted.pow(3).reciprocal_().mul_(-27.0 * t * a * (a + 1.0) / 2.0).add_(1.0)
    out.clamp_(-1.0, 1.0).arccos_().div_(3.0).cos_()
    # (2/3)(a + |y|) cos(phi / 3) - 2a/3 + |y|/3 >= 0, with the sign of y.
    out.mul_(shifted).mul_(2.0 / 3.0).add_(magnitude, alpha=1.0 / 3.0).sub_(2.0 * a / 3.0)
    out.mul_(torch.sign(y))
    return out.masked_fill_(magnitude <= tau, 0.0)


def group_norms(w: Tensor, dim: int = 0, *, where: str = "group_norms") -> Tensor:
    """l2 norm of every group ``w.select(dim, g)``, shaped to broadcast against ``w``.

    Output shape: ``w.shape`` with every dimension but ``dim`` set to 1. A 1-D ``w`` has
    groups of one entry (norm = |w_g|).

    >>> group_norms(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), 0)
    tensor([[5.],
            [1.]])
    """
    w = _check_tensor(w, where, "w")
    dim = check_dim(w, dim, where)
    groups = w.shape[dim]
    flat = w.movedim(dim, 0).reshape(groups, -1)
    shape = [1] * w.ndim
    shape[dim] = groups
    return torch.linalg.vector_norm(flat, dim=1).reshape(shape)


def check_dim(w: Tensor, dim: object, where: str, what: str = "w") -> int:
    """``dim`` as a non-negative dimension index of ``w`` (negative counts from the end)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise UsageError(f"{where}: dim must be an int, got {dim!r}")
    if w.ndim == 0:
        raise UsageError(f"{where}: {what} must have at least one dimension to group along")
    if not -w.ndim <= dim < w.ndim:
        raise UsageError(f"{where}: dim={dim} is out of range for {what} of shape {tuple(w.shape)}")
    return dim % w.ndim


def prox_group_l1(w: Tensor, t: float, dim: int = 0) -> Tensor:
    """Group soft threshold: the prox of ``t sum_g ||w_g||_2`` (group lasso).

    ``u_g = w_g max(0, 1 - t / ||w_g||)`` (0 for a zero group), groups ``w.select(dim, g)``
    with the norm over all other dimensions; ``dim=0`` groups the output channels of a
    Conv (out, in, kh, kw) or Linear (out, in) weight. Source 002 eq. 4.4, REFERENCES §5.

    >>> prox_group_l1(torch.tensor([[3.0, 4.0], [0.6, 0.8]]), 2.0, dim=0)
    tensor([[1.8000, 2.4000],
            [0.0000, 0.0000]])
    """
    w = _check_tensor(w, "prox_group_l1", "w")
    t = check_nonnegative(t, "prox_group_l1", "t")
    norms = group_norms(w, dim, where="prox_group_l1")
    scale = torch.where(norms > t, 1.0 - t / norms.clamp_min(torch.finfo(w.dtype).tiny), 0.0)
    return w * scale


def prox_group_l0(w: Tensor, t: float, dim: int = 0) -> Tensor:
    """Group hard threshold: the prox of ``t #{g : w_g != 0}``, ``u_g = w_g 1[||w_g|| > sqrt(2t)]``.

    Groups as in :func:`prox_group_l1`. Source 002 eq. 4.6, REFERENCES §5.

    >>> prox_group_l0(torch.tensor([[3.0, 4.0], [0.6, 0.8]]), 2.0, dim=0)  # sqrt(4) = 2
    tensor([[3., 4.],
            [0., 0.]])
    """
    w = _check_tensor(w, "prox_group_l0", "w")
    t = check_nonnegative(t, "prox_group_l0", "t")
    norms = group_norms(w, dim, where="prox_group_l0")
    return torch.where(norms > math.sqrt(2.0 * t), w, torch.zeros_like(w))
