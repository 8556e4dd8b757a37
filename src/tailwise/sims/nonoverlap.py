"""The one-layer non-overlap network of source 002 ch. 3, trained by RVSM / RVSCGD on its
population loss (closed forms, Algorithms 1-2, Theorems 3.1-3.2; REFERENCES §5 and §8).

The model. A filter ``w`` in R^m is applied to ``k`` non-overlapping patches of the input:
``Z`` in R^{k x m} with iid N(0, 1) entries, row ``Z_j`` the j-th patch, and a teacher
``w_star`` generates the targets.

- ReLU model (source 002 §3.1.1): output ``L(Z; w) = (1/k) sum_j relu(Z_j . w)``, population
  loss ``f(w) = E (L(Z; w) - L(Z; w_star))^2``. With ``g(u, v) = E relu(u . x) relu(v . x)
  = |u| |v| (sin t + (pi - t) cos t) / (2 pi)`` (``t`` the angle between u and v; source 002
  eq. 3.1), the patches being independent and ``E relu(w . x) = |w| / sqrt(2 pi)``,
  ``E relu(w . x)^2 = |w|^2 / 2``:

      f(w) = (1/k^2) [a (|w|^2 + |w*|^2) - 2 k g(w, w*) - 2 b |w| |w*|],
      b = (k^2 - k) / (2 pi),  a = b + k / 2                      (source 002 eq. 3.2)

  (the k diagonal terms give k (|w|^2/2 + |w*|^2/2 - 2 g), the k^2 - k cross terms
  (|w| - |w*|)^2 / (2 pi) each). Its gradient, from ``grad_w g = ((pi - t) v + |v| sin t
  w/|w|) / (2 pi)``, is source 002 eq. 3.16:

      grad f(w) = (1/k^2) [(2a - k |w*| sin t / (pi |w|) - 2 b |w*| / |w|) w
                           - (k / pi) (pi - t) w*].

- Binarized model (source 002 §3.1.2): ``sigma(x) = 1[x > 0]``, per-input loss
  ``(1' sigma(Z w) - 1' sigma(Z w*))^2`` (eq. 3.3; no 1/k here). Two patches' indicators
  agree unless the hyperplanes of w and w* separate them (probability t / pi), and the
  indicators of different patches are independent with equal means, so

      f(w) = k t / pi                                              (source 002 eq. 3.4)

  and, for t in (0, pi), ``grad f(w) = -(k / (pi |w|)) P w* / |P w*|`` with
  ``P = I - w w' / |w|^2`` (eq. 3.22). The coarse gradient (eq. 3.6) replaces the a.e. zero
  derivative of sigma in the chain rule by the ReLU derivative ``mu' = 1[x > 0]``:
  ``g(w, Z) = Z' mu'(Z w) (1' sigma(Z w) - 1' sigma(Z w*))``. Cross-patch terms vanish in
  expectation; with ``E Z 1[Z.w > 0] = w^ / sqrt(2 pi)`` and ``E Z 1[Z.w > 0, Z.w* > 0] =
  cos(t/2) (w^ + w*^) / (sqrt(2 pi) |w^ + w*^|)`` (hats: unit vectors),

      E g(w, Z) = (k / sqrt(2 pi)) [w^ - cos(t/2) (w^ + w*^) / |w^ + w*^|]     (eq. 3.23)
                = (k / (2 sqrt(2 pi))) (w^ - w*^).

  This normalization of g (no factor 2 of the exact chain rule) is the one that gives the
  source's constants: ``k / (2 sqrt(2 pi))`` in Lemma 11's proof and ``2 sqrt(2 pi) / k``
  in eq. 3.14. The Monte Carlo tests (``tests/sims/test_nonoverlap.py``) check every formula
  here against sampled Gaussian inputs.

The algorithms (source 002 Algorithms 1-2), with ``L_beta(w, u) = f(w) + lam P(u) + beta/2
|w - u|^2`` (eq. 3.9) and ``prox`` the proximal map of ``(lam / beta) P``
(:mod:`tailwise.train.splitting.prox`: soft threshold for l1, hard threshold for l0, the
transformed-l1 thresholding for tl1):

- :func:`run_rvsm`: ``w <- w - eta (grad f(w) + beta (w - u))``, ``u <- prox(w)``;
- :func:`run_rvscgd`: ``w <- w - eta (E g(w, Z) + beta (w - u))``, ``w <- w / |w|``,
  ``u <- prox(w)``, with f the binarized loss. The normalization step has no pure function
  in :mod:`tailwise.train.splitting` (it lives inside ``RVSCGD._after_step``), so it is
  written here.

At a limit point (source 002 eqs. 3.13-3.15, 3.20-3.21): ``u = prox(w)``; ``w*`` minus
``kappa (w - u)`` is parallel to ``w``, with ``kappa = k pi beta / (pi - t)`` (RVSM, eq. 3.13)
or ``2 sqrt(2 pi) beta / k`` (RVSCGD, eq. 3.14, |w*| = 1); ``c sin t = beta |u| sin gamma``
(gamma the angle between u and w; ``c = (pi - t) |w*| / (k pi)`` for RVSM,
``k / (2 sqrt(2 pi))`` for RVSCGD), and for RVSCGD the distance bound (3.15)
``|w* - w| <= 4 sqrt(2 pi) beta sin gamma / k``. :func:`limit_checks` computes these,
:func:`theorem_conditions` whether a run met the theorems' conditions, and
:func:`monte_carlo_check` sets the closed forms next to sampled estimates.

A finding: under Theorem 3.2's conditions the Lagrangian on the binarized loss ``k t / pi``
is not always monotone (it rose in 117 of 200 random problems, by up to 3% of its value at
one step; ``benchmarks/sims_nonoverlap.py``): the proof's descent inequality (eq. 3.25) is
only shown for steps that decrease the angle. RVSCGD does descend
``SplittingTrajectory.coarse_lagrangian``, built on ``f_c(w) = k (1 - cos t) / (2 sqrt(2
pi))``, whose gradient on the unit sphere is exactly the expected coarse gradient.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from tailwise._errors import UsageError
from tailwise._progress import progress_task
from tailwise.sims._result import SimulationResult
from tailwise.train.splitting import Penalty, prox_l0, prox_l1, prox_tl1
from tailwise.train.splitting.prox import check_nonnegative, check_positive

__all__ = [
    "SplittingTrajectory",
    "binary_coarse_grad",
    "binary_population_grad",
    "binary_population_loss",
    "limit_checks",
    "monte_carlo_check",
    "nonoverlap_experiment",
    "population_grad",
    "population_loss",
    "run_rvscgd",
    "run_rvsm",
    "theorem_conditions",
]

FloatArray = NDArray[np.float64]

SQRT_2PI = math.sqrt(2.0 * math.pi)
ALGORITHMS = ("rvsm", "rvscgd")


# -- input checks ------------------------------------------------------------------------------


def _vectors(x: object, where: str, what: str, *, batched: bool = True) -> FloatArray:
    """``x`` as a finite float64 array of shape (m,) (or (..., m) when ``batched``)."""
    try:
        array = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {what} must be an array of numbers ({exc})") from None
    if array.ndim == 0 or array.shape[-1] == 0 or (not batched and array.ndim != 1):
        shape = "(m,)" if not batched else "(m,) or (..., m)"
        raise UsageError(f"{where}: {what} must have shape {shape} with m >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise UsageError(f"{where}: {what} has non-finite entries")
    return array


def _check_k(k: object, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise UsageError(f"{where}: k (the number of patches) must be an int >= 1, got {k!r}")
    return int(k)


def _inputs(
    w: object, w_star: object, k: object, where: str, *, nonzero_w: bool
) -> tuple[FloatArray, FloatArray, int]:
    """Checked ``(w (..., m), w_star (m,), k)``: shapes agree, w_star != 0 (and w != 0)."""
    w_arr = _vectors(w, where, "w")
    star = _vectors(w_star, where, "w_star", batched=False)
    if w_arr.shape[-1] != star.shape[0]:
        raise UsageError(
            f"{where}: w has {w_arr.shape[-1]} entries per filter, w_star {star.shape[0]}"
        )
    if not np.any(star != 0):
        raise UsageError(f"{where}: w_star must be nonzero (the teacher defines the angle)")
    if nonzero_w and np.any(np.all(w_arr == 0, axis=-1)):
        raise UsageError(f"{where}: w must be nonzero (the angle to w_star is undefined at 0)")
    return w_arr, star, _check_k(k, where)


# -- geometry ----------------------------------------------------------------------------------


def _norm(x: FloatArray) -> FloatArray:
    return np.sqrt(np.einsum("...i,...i->...", x, x))


def _chords(w: FloatArray, unit_star: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(|w|, |w^ - v^|, |w^ + v^|)`` for rows w (nonzero) and a unit teacher v^.

    The chords are ``2 sin(t/2)`` and ``2 cos(t/2)`` (t the angle between w and v): the angle
    is ``2 atan2(d, s)`` and ``sin t = d s / 2``, accurate near 0 and pi, where ``arccos``
    of the cosine loses half the digits.
    """
    nw = _norm(w)
    wh = w / nw[..., None]
    return nw, _norm(wh - unit_star), _norm(wh + unit_star)


def _angle(w: FloatArray, w_star: FloatArray) -> FloatArray:
    """Angle in [0, pi] between each row of ``w`` (nonzero) and ``w_star``."""
    _, d, s = _chords(w, w_star / _norm(w_star))
    return np.asarray(2.0 * np.arctan2(d, s), dtype=np.float64)


def _relu_constants(k: int) -> tuple[float, float]:
    """``(a, b)`` of source 002 eq. 3.2: ``b = (k^2 - k) / (2 pi)``, ``a = b + k / 2``."""
    b = (k * k - k) / (2.0 * math.pi)
    return b + k / 2.0, b


# -- the ReLU model ----------------------------------------------------------------------------


def _relu_loss(w: FloatArray, w_star: FloatArray, k: int) -> FloatArray:
    a, b = _relu_constants(k)
    nw, ns = _norm(w), float(_norm(w_star))
    zero = nw == 0
    theta = _angle(np.where(zero[..., None], w_star, w), w_star)  # any angle at w = 0
    g = nw * ns * (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / (2.0 * math.pi)
    value = (a * (nw**2 + ns**2) - 2.0 * k * g - 2.0 * b * nw * ns) / (k * k)
    return np.maximum(value, 0.0)  # f >= 0; rounding can dip below at w = w*


def _relu_grad(w: FloatArray, w_star: FloatArray, k: int) -> FloatArray:
    return _relu_grad_given(w, w_star, w_star / _norm(w_star), float(_norm(w_star)), k)


def _relu_grad_given(
    w: FloatArray, w_star: FloatArray, unit_star: FloatArray, star_norm: float, k: int
) -> FloatArray:
    """eq. 3.16 with the teacher's unit vector and norm given (computed once per run)."""
    a, b = _relu_constants(k)
    nw, d, s = _chords(w, unit_star)
    theta, sin = 2.0 * np.arctan2(d, s), 0.5 * d * s
    coef = (2.0 * a - (k * sin / math.pi + 2.0 * b) * star_norm / nw) / (k * k)
    along = (math.pi - theta) / (k * math.pi)
    return np.asarray(coef[..., None] * w - along[..., None] * w_star, dtype=np.float64)


def population_loss(w: ArrayLike, w_star: ArrayLike, k: int) -> FloatArray:
    """Population loss of the ReLU non-overlap network (source 002 eq. 3.2, REFERENCES §8).

    ``f(w) = E_Z ((1/k) sum_j relu(Z_j . w) - (1/k) sum_j relu(Z_j . w*))^2`` over inputs
    ``Z`` in R^{k x m} with iid N(0, 1) entries, in closed form
    ``(1/k^2) [a (|w|^2 + |w*|^2) - 2 k g(w, w*) - 2 b |w| |w*|]`` (derivation in the module
    docstring). ``w``: shape (m,) or (..., m) (rows evaluated separately; w = 0 allowed);
    ``w_star``: (m,), nonzero; ``k >= 1`` patches. Returns shape ``w.shape[:-1]`` (a 0-d
    array for one filter).

    >>> import numpy as np
    >>> w_star = np.array([1.0, 0.0])
    >>> float(population_loss(w_star, w_star, 3))
    0.0
    >>> round(float(population_loss([0.0, 1.0], w_star, 1)), 6)  # 1 - 1/pi (k = 1)
    0.68169
    """
    w_arr, star, k_int = _inputs(w, w_star, k, "population_loss", nonzero_w=False)
    return _relu_loss(w_arr, star, k_int)


def population_grad(w: ArrayLike, w_star: ArrayLike, k: int) -> FloatArray:
    """Gradient of :func:`population_loss` in ``w`` (source 002 eq. 3.16), shape of ``w``.

    ``(1/k^2) [(2a - k |w*| sin t / (pi |w|) - 2 b |w*| / |w|) w - (k / pi) (pi - t) w*]``
    with ``t`` the angle between w and w*. ``w``: (m,) or (..., m), every row nonzero (f is
    not differentiable at 0; source 002 Lemma 4).

    >>> import numpy as np
    >>> w_star = np.array([1.0, 0.0, 0.0])
    >>> bool(np.abs(population_grad(w_star, w_star, 4)).max() < 1e-15)  # the global minimum
    True
    """
    w_arr, star, k_int = _inputs(w, w_star, k, "population_grad", nonzero_w=True)
    return _relu_grad(w_arr, star, k_int)


def _relu_lipschitz(k: int, w_star_norm: float, min_norm: float) -> float:
    """A Lipschitz constant of ``grad f`` (ReLU model) on ``{|w| >= min_norm}``.

    The Hessian of f (a.e.) has eigenvalue ``2a / k^2`` along w and, across w,
    ``(2a - c |w*| sin t / (pi |w|) - 2 b |w*| / |w|) / k^2`` with c in {k, 2k}
    (``hess_w g = |v| sin t (e e' + I - w^ w^') / (2 pi |w|)``, e the unit vector of
    ``w*`` across w). The bound is the largest of their absolute values over the region:
    ``max(2a, (2k / pi + 2b) |w*| / min_norm - 2a) / k^2`` (source 002 Lemmas 3 and 5 prove
    such a constant exists; this is its value).
    """
    a, b = _relu_constants(k)
    return max(2.0 * a, (2.0 * k / math.pi + 2.0 * b) * w_star_norm / min_norm - 2.0 * a) / (k * k)


# -- the binarized model -----------------------------------------------------------------------


def _binary_loss(w: FloatArray, w_star: FloatArray, k: int) -> FloatArray:
    return np.asarray(k * _angle(w, w_star) / math.pi, dtype=np.float64)


def _binary_grad(w: FloatArray, w_star: FloatArray, k: int) -> FloatArray | None:
    """eq. 3.22, or None where w is parallel to w* (t = 0 or pi: not differentiable)."""
    nw = _norm(w)[..., None]
    wh = w / nw
    vh = w_star / _norm(w_star)
    across = vh - np.einsum("...i,i->...", wh, vh)[..., None] * wh  # (I - w^ w^') w*^
    size = _norm(across)[..., None]
    if np.any(size == 0):
        return None
    return np.asarray(-(k / math.pi) * across / (size * nw) + 0.0, dtype=np.float64)  # no -0


def _coarse_grad(w: FloatArray, w_star: FloatArray, k: int) -> FloatArray:
    return _coarse_grad_given(w, w_star / _norm(w_star), k)


def _coarse_grad_given(w: FloatArray, unit_star: FloatArray, k: int) -> FloatArray:
    """eq. 3.23 with the teacher's unit vector given."""
    return np.asarray(k / (2.0 * SQRT_2PI) * (w / _norm(w)[..., None] - unit_star))


def binary_population_loss(w: ArrayLike, w_star: ArrayLike, k: int) -> FloatArray:
    """Population loss of the binarized (step-activation) network: ``k t / pi``.

    ``f(w) = E_Z (1' sigma(Z w) - 1' sigma(Z w*))^2``, ``sigma(x) = 1[x > 0]``, Z in
    R^{k x m} iid N(0, 1) (source 002 eqs. 3.3-3.4); ``t`` the angle between w and w*
    (derivation in the module docstring). Invariant to the scale of w and of w*.
    ``w``: (m,) or (..., m), rows nonzero; returns shape ``w.shape[:-1]``.

    >>> round(float(binary_population_loss([1.0, 0.0], [0.0, 2.0], 4)), 6)  # t = pi/2
    2.0
    """
    w_arr, star, k_int = _inputs(w, w_star, k, "binary_population_loss", nonzero_w=True)
    return _binary_loss(w_arr, star, k_int)


def binary_population_grad(w: ArrayLike, w_star: ArrayLike, k: int) -> FloatArray:
    """True gradient of :func:`binary_population_loss` (source 002 eq. 3.22), shape of w.

    ``-(k / (pi |w|)) P w* / |P w*|`` with ``P = I - w w' / |w|^2``: the gradient of
    ``k t / pi``, orthogonal to w. Defined for angles t in (0, pi); a w parallel to w* is a
    UsageError (the loss has a kink there).

    >>> binary_population_grad([2.0, 0.0], [0.0, 1.0], 1).round(6).tolist()
    [0.0, -0.159155]
    """
    w_arr, star, k_int = _inputs(w, w_star, k, "binary_population_grad", nonzero_w=True)
    grad = _binary_grad(w_arr, star, k_int)
    if grad is None:
        raise UsageError(
            "binary_population_grad: w is parallel to w_star (angle 0 or pi), where the loss "
            "k t / pi is not differentiable"
        )
    return grad


def binary_coarse_grad(w: ArrayLike, w_star: ArrayLike, k: int) -> FloatArray:
    """Expected coarse gradient of the binarized network (source 002 eqs. 3.6, 3.23).

    ``E_Z [Z' mu'(Z w) (1' sigma(Z w) - 1' sigma(Z w*))]`` with the ReLU derivative
    ``mu' = 1[x > 0]`` in place of sigma' (a straight-through estimator):
    ``(k / sqrt(2 pi)) [w^ - cos(t/2) (w^ + w*^) / |w^ + w*^|] = (k / (2 sqrt(2 pi)))
    (w^ - w*^)`` (hats: unit vectors; derivation in the module docstring). Invariant to
    the scale of w. Its inner product with the true gradient is positive for t in (0, pi)
    (source 002 Lemma 2). ``w``: (m,) or (..., m), rows nonzero.

    >>> binary_coarse_grad([3.0, 0.0], [0.0, 1.0], 2).round(6).tolist()
    [0.398942, -0.398942]
    """
    w_arr, star, k_int = _inputs(w, w_star, k, "binary_coarse_grad", nonzero_w=True)
    return _coarse_grad(w_arr, star, k_int)


# -- RVSM / RVSCGD -----------------------------------------------------------------------------


def _parse_penalty(penalty: object, where: str) -> Penalty:
    if isinstance(penalty, Penalty):
        return penalty
    if isinstance(penalty, str):
        for member in Penalty:
            if member.value == penalty.lower():
                return member
    allowed = ", ".join(repr(member.value) for member in Penalty)
    raise UsageError(f"{where}: penalty must be one of {allowed}, got {penalty!r}")


def _prox_map(penalty: Penalty, t: float, a: float) -> Callable[[FloatArray], FloatArray]:
    """``w -> prox_{t P}(w)`` on float64 arrays through the splitting module's operators."""
    if penalty is Penalty.L1:
        return lambda w: prox_l1(torch.from_numpy(w), t).numpy()
    if penalty is Penalty.L0:
        return lambda w: prox_l0(torch.from_numpy(w), t).numpy()
    return lambda w: prox_tl1(torch.from_numpy(w), t, a).numpy()


def _penalty_value(u: FloatArray, penalty: Penalty, a: float) -> FloatArray:
    """``P(u)`` over the last axis: l1 norm, number of nonzeros, or sum of rho_a(|u_i|)."""
    size = np.abs(u)
    if penalty is Penalty.L1:
        return np.asarray(size.sum(axis=-1), dtype=np.float64)
    if penalty is Penalty.L0:
        return np.asarray(np.count_nonzero(u, axis=-1), dtype=np.float64)
    return np.asarray(((a + 1.0) * size / (a + size)).sum(axis=-1), dtype=np.float64)


@dataclass(frozen=True)
class SplittingTrajectory:
    """The iterates of :func:`run_rvsm` / :func:`run_rvscgd` and what they cost.

    Attributes (T = steps; ``...`` the leading dimensions of ``w0``, empty for one run):
        w, u: (T + 1, ..., m) the filter and its sparse shadow ``u = prox(w)`` at every step
            (row 0: the start).
        loss: (T + 1, ...) the population loss f(w) (ReLU for RVSM, binarized for RVSCGD).
        lagrangian: (T + 1, ...) ``L_beta(w, u) = f(w) + lam P(u) + beta/2 |w - u|^2``
            (source 002 eq. 3.9).
        coarse_lagrangian: (T + 1, ...) for RVSCGD, the Lagrangian with f replaced by the
            potential of the expected coarse gradient, ``f_c(w) = k (1 - cos t) /
            (2 sqrt(2 pi))`` (on the unit sphere ``grad f_c = E g``, :func:`binary_coarse_grad`):
            the function RVSCGD provably descends. For RVSM: equal to ``lagrangian``.
        angle: (T + 1, ...) the angle between w and w* in radians.
        w_star: (m,) the teacher.
        algorithm: ``"rvsm"`` or ``"rvscgd"``.
        options: ``k``, ``eta``, ``beta``, ``lam``, ``penalty``, ``a``, ``steps``.
    """

    w: FloatArray
    u: FloatArray
    loss: FloatArray
    lagrangian: FloatArray
    coarse_lagrangian: FloatArray
    angle: FloatArray
    w_star: FloatArray
    algorithm: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sparsity(self) -> FloatArray:
        """(T + 1, ...) the share of exact zeros of u at every step."""
        return np.asarray(np.mean(self.u == 0, axis=-1), dtype=np.float64)


def _check_run(
    w0: object,
    w_star: object,
    k: object,
    eta: object,
    beta: object,
    lam: object,
    penalty: object,
    steps: object,
    a: object,
    where: str,
) -> tuple[FloatArray, FloatArray, int, float, float, float, Penalty, int, float]:
    w_arr, star, k_int = _inputs(w0, w_star, k, where, nonzero_w=True)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or int(steps) < 0:
        raise UsageError(f"{where}: steps must be an int >= 0, got {steps!r}")
    return (
        w_arr,
        star,
        k_int,
        check_positive(eta, where, "eta"),
        check_positive(beta, where, "beta"),
        check_nonnegative(lam, where, "lam"),
        _parse_penalty(penalty, where),
        int(steps),
        check_positive(a, where, "a"),
    )


def _run(
    algorithm: str,
    w0: object,
    w_star: object,
    k: object,
    *,
    eta: object,
    beta: object,
    lam: object,
    penalty: object,
    steps: object,
    a: object,
    advance: Callable[[int], None] | None = None,
) -> SplittingTrajectory:
    where = f"run_{algorithm}"
    w, star, k_int, eta_f, beta_f, lam_f, pen, n_steps, a_f = _check_run(
        w0, w_star, k, eta, beta, lam, penalty, steps, a, where
    )
    binary = algorithm == "rvscgd"
    star_norm = float(_norm(star))
    unit_star = star / star_norm

    def grad(w: FloatArray) -> FloatArray:  # the teacher's norm and direction computed once
        if binary:
            return _coarse_grad_given(w, unit_star, k_int)
        return _relu_grad_given(w, star, unit_star, star_norm, k_int)

    prox = _prox_map(pen, lam_f / beta_f, a_f)
    if binary:  # Algorithm 2 keeps |w| = 1; the binarized loss does not see the scale
        w = w / _norm(w)[..., None]
    ws = np.empty((n_steps + 1, *w.shape))
    us = np.empty_like(ws)
    u = prox(np.ascontiguousarray(w))
    ws[0], us[0] = w, u
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(n_steps):
            w = w - eta_f * (grad(w) + beta_f * (w - u))
            norm = _norm(w)
            if not np.all((norm > 0) & np.isfinite(norm)):
                raise UsageError(
                    f"{where}: w reached norm {float(np.min(norm))} at step {t + 1} "
                    f"(eta = {eta_f} is too large for this problem; lower it)"
                )
            if binary:
                w = w / norm[..., None]
            u = prox(w)
            ws[t + 1], us[t + 1] = w, u
            if advance is not None and (t + 1) % 100 == 0:
                advance(100)
    if advance is not None:
        advance(n_steps % 100)
    loss = (_binary_loss if binary else _relu_loss)(ws, star, k_int)
    gap = ws - us
    coupling = lam_f * _penalty_value(us, pen, a_f) + 0.5 * beta_f * np.einsum(
        "...i,...i->...", gap, gap
    )
    angle = _angle(ws, star)
    potential = k_int * (1.0 - np.cos(angle)) / (2.0 * SQRT_2PI) if binary else loss
    options = {
        "k": k_int,
        "eta": eta_f,
        "beta": beta_f,
        "lam": lam_f,
        "penalty": pen.value,
        "a": a_f,
        "steps": n_steps,
    }
    return SplittingTrajectory(
        w=ws,
        u=us,
        loss=loss,
        lagrangian=np.asarray(loss + coupling, dtype=np.float64),
        coarse_lagrangian=np.asarray(potential + coupling, dtype=np.float64),
        angle=angle,
        w_star=star,
        algorithm=algorithm,
        options=options,
    )


def run_rvsm(
    w0: ArrayLike,
    w_star: ArrayLike,
    k: int,
    *,
    eta: float,
    beta: float,
    lam: float,
    penalty: Penalty | str = "l1",
    steps: int,
    a: float = 1.0,
) -> SplittingTrajectory:
    """RVSM (source 002 Algorithm 1) on the ReLU network's population loss.

    From ``u^0 = prox(w^0)``, every step ``w <- w - eta (grad f(w) + beta (w - u))`` with
    f = :func:`population_loss`, then ``u <- prox_{(lam/beta) P}(w)`` (penalty ``"l1"``:
    soft threshold S_{lam/beta}, ``"l0"``: hard threshold, ``"tl1"``: transformed l1 with
    shape ``a``; the operators of :mod:`tailwise.train.splitting`). ``w0``: (m,) or
    (runs, m) (runs iterate side by side, independently); ``w_star``: (m,).

    Theorem 3.1 (source 002): with ``eta < 1 / (beta + L)`` (L the Lipschitz constant of
    grad f), ``k >= 2``, initial angle ``< pi - delta``, ``beta < delta sin(delta) /
    (k pi)`` and ``lam / beta < 1 / sqrt(m)`` (|w*| = 1), the Lagrangian decreases
    monotonically and the limit satisfies ``u = S_{lam/beta}(w)``, angle < delta.

    >>> import numpy as np
    >>> w_star = np.array([0.8, 0.6, 0.0, 0.0])
    >>> run = run_rvsm([0.1, 0.5, 0.5, -0.7], w_star, 4, eta=1.0, beta=0.05, lam=0.005,
    ...                steps=300)
    >>> bool(np.all(np.diff(run.lagrangian) <= 1e-12)), (run.u[-1] + 0.0).round(3).tolist()
    (True, [0.691, 0.488, 0.0, 0.0])
    """
    return _run(
        "rvsm", w0, w_star, k, eta=eta, beta=beta, lam=lam, penalty=penalty, steps=steps, a=a
    )


def run_rvscgd(
    w0: ArrayLike,
    w_star: ArrayLike,
    k: int,
    *,
    eta: float,
    beta: float,
    lam: float,
    penalty: Penalty | str = "l1",
    steps: int,
    a: float = 1.0,
) -> SplittingTrajectory:
    """RVSCGD (source 002 Algorithm 2) on the binarized network's population loss.

    ``w0`` is first scaled to unit norm (the binarized loss does not see the scale; the
    algorithm keeps |w| = 1); from ``u^0 = prox(w^0)``, every step
    ``w <- w - eta (E g(w, Z) + beta (w - u))`` with the expected coarse gradient
    :func:`binary_coarse_grad`, then ``w <- w / |w|`` and ``u <- prox_{(lam/beta) P}(w)``
    (penalties as in :func:`run_rvsm`). The loss column is :func:`binary_population_loss`.

    Theorem 3.2 (source 002): with initial angle ``< pi - delta``, ``beta < k sin(delta) /
    (2 sqrt(2 pi))``, ``lam < k / (2 sqrt(2 pi m))``, ``eta < 1 / (beta + L)`` (L = k /
    sqrt(2 pi), the Lipschitz constant of E g on 1/2 <= |w| <= 3/2, Lemma 10) and
    ``eta |E g + beta (w - u)| < 1/2`` along the way, the limit satisfies eq. 3.14 and the
    bound (3.15), and the Lagrangian is claimed to decrease monotonically. That last claim
    does not hold for the Lagrangian built on the binarized loss ``k t / pi``: it can rise by
    a little at steps where the coupling term turns w away from w* (the proof's eq. 3.25 is
    only shown for steps that decrease the angle). What RVSCGD does descend, step by step,
    is ``coarse_lagrangian``, built on the potential of the coarse gradient (see
    :class:`SplittingTrajectory`); the run below shows both.

    >>> import numpy as np
    >>> run = run_rvscgd([0.1, 0.5, 0.5, -0.7], [0.8, 0.6, 0.0, 0.0], 4, eta=0.25,
    ...                  beta=0.2, lam=0.02, steps=300)
    >>> rise = np.diff(run.coarse_lagrangian).max(), np.diff(run.lagrangian).max()
    >>> bool(rise[0] <= 1e-12), bool(rise[1] > 1e-6)
    (True, True)
    >>> (run.u[-1] + 0.0).round(3).tolist()
    [0.703, 0.496, 0.0, 0.0]
    """
    return _run(
        "rvscgd", w0, w_star, k, eta=eta, beta=beta, lam=lam, penalty=penalty, steps=steps, a=a
    )


# -- the limit and the theorems' conditions ----------------------------------------------------


def limit_checks(trajectory: SplittingTrajectory) -> dict[str, FloatArray]:
    """The relations source 002 proves for the limit point, evaluated at the last step.

    For RVSM (Theorem 3.1, eqs. 3.13, 3.20-3.21) and RVSCGD (Theorem 3.2, eqs. 3.14-3.15;
    w* taken with unit norm), with ``t`` the angle between w and w*, ``u_perp`` the part of
    u orthogonal to w and ``gamma`` the angle between u and w:

    - ``step``: ``|w_T - w_{T-1}|`` (0 at a fixed point of the iteration);
    - ``stationarity``: ``|grad f(w) + beta (w - u)|`` (RVSM) or its part orthogonal to w
      with ``E g`` for ``grad f`` (RVSCGD): 0 at a limit point;
    - ``kappa``, ``scale``, ``relation``: ``w* - kappa (w - u) = scale w + r`` with
      ``kappa = k pi beta / (pi - t)`` (RVSM) or ``2 sqrt(2 pi) beta / k`` (RVSCGD);
      ``relation = |r|`` is 0 and ``scale > 0`` at the limit (w* is an expansion of w);
    - ``sine_lhs``, ``sine_rhs``: ``c sin t`` and ``beta |u_perp| = beta |u| sin gamma``,
      equal at the limit (``c = (pi - t) |w*| / (k pi)``, resp. ``k / (2 sqrt(2 pi))``);
    - ``angle``, ``gamma``, ``distance = |w - w*|`` and, for RVSCGD, ``distance_bound =
      4 sqrt(2 pi) beta sin(gamma) / k`` (eq. 3.15; NaN for RVSM, whose Theorem 3.1 only
      gives O(k beta sin gamma)).

    Each value has the leading shape of the run's ``w0`` (0-d for one run).

    >>> import numpy as np
    >>> run = run_rvscgd([0.1, 0.5, 0.5, -0.7], [0.8, 0.6, 0.0, 0.0], 4, eta=0.25,
    ...                  beta=0.2, lam=0.02, steps=300)
    >>> checks = limit_checks(run)
    >>> bool(checks["relation"] < 1e-12), bool(checks["distance"] <= checks["distance_bound"])
    (True, True)
    """
    if not isinstance(trajectory, SplittingTrajectory):
        raise UsageError(
            f"limit_checks: expected a SplittingTrajectory, got {type(trajectory).__name__}"
        )
    if trajectory.w.shape[0] < 2:
        raise UsageError("limit_checks: the trajectory has no step (run with steps >= 1)")
    k = int(trajectory.options["k"])
    beta = float(trajectory.options["beta"])
    binary = trajectory.algorithm == "rvscgd"
    star = trajectory.w_star / _norm(trajectory.w_star) if binary else trajectory.w_star
    w, u = trajectory.w[-1], trajectory.u[-1]
    theta = _angle(w, star)
    nw = _norm(w)
    wh = w / nw[..., None]

    def across(x: FloatArray) -> FloatArray:  # the part of x orthogonal to w
        return np.asarray(x - np.einsum("...i,...i->...", x, wh)[..., None] * wh)

    u_perp = _norm(across(u))
    u_norm = _norm(u)
    sin_gamma = np.divide(u_perp, u_norm, out=np.zeros_like(u_norm), where=u_norm > 0)
    gamma = np.arcsin(np.clip(sin_gamma, 0.0, 1.0))
    if binary:
        drift = _coarse_grad(w, star, k) + beta * (w - u)
        stationarity = _norm(across(drift))
        kappa = np.full_like(theta, 2.0 * SQRT_2PI * beta / k)
        along = np.full_like(theta, k / (2.0 * SQRT_2PI))
        bound = 4.0 * SQRT_2PI * beta * sin_gamma / k
    else:
        stationarity = _norm(_relu_grad(w, star, k) + beta * (w - u))
        kappa = k * math.pi * beta / (math.pi - theta)
        along = (math.pi - theta) * float(_norm(star)) / (k * math.pi)
        bound = np.full_like(theta, np.nan)
    rest = star - kappa[..., None] * (w - u)
    scale = np.einsum("...i,...i->...", rest, w) / nw**2
    return {
        "step": _norm(trajectory.w[-1] - trajectory.w[-2]),
        "stationarity": stationarity,
        "kappa": kappa,
        "scale": scale,
        "relation": _norm(rest - scale[..., None] * w),
        "sine_lhs": along * np.sin(theta),
        "sine_rhs": beta * u_perp,
        "angle": theta,
        "gamma": gamma,
        "distance": _norm(w - star),
        "distance_bound": bound,
    }


# delta sin(delta) grows on (0, DELTA_PEAK) to its maximum DELTA_PEAK sin(DELTA_PEAK).
DELTA_PEAK = 2.028757838110434


def _solve_increasing(fn: Callable[[float], float], target: float, hi: float) -> float:
    """The x in (0, hi) with fn(x) = target, fn increasing there (bisection to 1e-15)."""
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fn(mid) < target else (lo, mid)
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def theorem_conditions(trajectory: SplittingTrajectory) -> dict[str, float | str]:
    """Whether one run met the conditions of source 002 Theorem 3.1 (RVSM) / 3.2 (RVSCGD).

    Returns the values and their bounds (|w*| = 1 as in the source):

    - ``delta``: the smallest delta the conditions allow (``beta < delta sin(delta) /
      (k pi)`` for RVSM, ``beta < k sin(delta) / (2 sqrt(2 pi))`` for RVSCGD); the
      theorems then promise a limit angle ``< delta``;
    - ``theta0`` (must be ``< pi - delta``), ``angle_bound``: the largest delta allowed by
      theta0 keeps every iterate's angle ``<= angle_bound`` (= theta0 when delta can reach
      pi - theta0);
    - ``eta``, ``eta_max``: RVSM ``1 / (beta + L)`` with L the Lipschitz constant of grad f on
      the region the run visited (|w| >= 0.9 min_t |w^t|); RVSCGD ``min(1 / (beta + L),
      2 sqrt(2 pi) / k)`` with ``L = k / sqrt(2 pi)`` (Lemma 10);
    - ``lam_ratio``, ``lam_ratio_max``: RVSM ``lam / beta < 1 / sqrt(m)``; RVSCGD ``lam <
      k / (2 sqrt(2 pi m))`` (reported as lam / beta against that bound / beta);
    - RVSCGD: ``move``, the largest ``eta |E g + beta (w - u)|`` along the run (< 1/2);
    - ``met``: ``"yes"`` or ``"no: <the conditions that failed>"``.

    >>> run = run_rvsm([0.1, 0.5, 0.5, -0.7], [0.8, 0.6, 0.0, 0.0], 4, eta=1.0,
    ...                beta=0.05, lam=0.005, steps=50)
    >>> theorem_conditions(run)["met"]
    'yes'
    """
    if not isinstance(trajectory, SplittingTrajectory):
        raise UsageError(
            f"theorem_conditions: expected a SplittingTrajectory, got {type(trajectory).__name__}"
        )
    if trajectory.w.ndim != 2:
        raise UsageError("theorem_conditions: pass a single run (w0 of shape (m,))")
    opts = trajectory.options
    k, eta, beta, lam = int(opts["k"]), float(opts["eta"]), float(opts["beta"]), float(opts["lam"])
    m = trajectory.w.shape[-1]
    theta0 = float(trajectory.angle[0])
    failed: list[str] = []
    out: dict[str, float | str] = {"theta0": theta0, "eta": eta, "lam_ratio": lam / beta}
    if trajectory.algorithm == "rvsm":
        if k < 2:
            failed.append("k >= 2")
        need = k * math.pi * beta
        if need < DELTA_PEAK * math.sin(DELTA_PEAK):
            delta = _solve_increasing(lambda d: d * math.sin(d), need, DELTA_PEAK)
            reach = DELTA_PEAK  # delta sin(delta) > need on (delta, beyond DELTA_PEAK)
        else:
            delta, reach = math.nan, math.nan
            failed.append(f"beta < delta sin(delta) / (k pi) for some delta (beta = {beta})")
        min_norm = float(np.min(_norm(trajectory.w)))
        lipschitz = _relu_lipschitz(k, float(_norm(trajectory.w_star)), 0.9 * min_norm)
        out["eta_max"] = 1.0 / (beta + lipschitz)
        out["lam_ratio_max"] = 1.0 / math.sqrt(m)
    else:
        ratio = 2.0 * SQRT_2PI * beta / k
        if ratio < 1.0:
            delta = math.asin(ratio)
            reach = math.pi - delta
        else:
            delta, reach = math.nan, math.nan
            failed.append(f"beta < k / (2 sqrt(2 pi)) (beta = {beta})")
        out["eta_max"] = min(1.0 / (beta + k / SQRT_2PI), 2.0 * SQRT_2PI / k)
        out["lam_ratio_max"] = k / (2.0 * SQRT_2PI * math.sqrt(m)) / beta
        ws, us = trajectory.w[:-1], trajectory.u[:-1]
        drift = _coarse_grad(ws, trajectory.w_star, k) + beta * (ws - us)
        out["move"] = float(eta * np.max(_norm(drift))) if len(ws) else 0.0
        if not out["move"] < 0.5:  # type: ignore[operator]
            failed.append("eta |E g + beta (w - u)| < 1/2")
    out["delta"] = delta
    out["angle_bound"] = math.pi - min(math.pi - theta0, reach) if reach == reach else math.nan
    if not theta0 < math.pi - delta:  # also False for a NaN delta
        failed.append("theta0 < pi - delta")
    if not eta < float(out["eta_max"]):
        failed.append("eta < eta_max")
    if not lam / beta < float(out["lam_ratio_max"]):
        failed.append("lam bound")
    out["met"] = "yes" if not failed else "no: " + "; ".join(dict.fromkeys(failed))
    return out


# -- Monte Carlo --------------------------------------------------------------------------------


def monte_carlo_check(
    w: ArrayLike,
    w_star: ArrayLike,
    k: int,
    *,
    model: str = "relu",
    samples: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The closed forms at one ``w`` next to Monte Carlo estimates over Gaussian inputs.

    Samples ``Z`` in R^{k x m} with iid N(0, 1) entries (``np.random.default_rng(seed)``)
    and averages the per-input quantities:

    - ``model="relu"``: the loss ``(L(Z; w) - L(Z; w*))^2`` and its gradient
      ``2 (L(Z; w) - L(Z; w*)) (1/k) sum_j 1[Z_j . w > 0] Z_j`` (unbiased for
      :func:`population_grad`);
    - ``model="binary"``: the loss of eq. 3.3; the coarse gradient of eq. 3.6 (for
      :func:`binary_coarse_grad`); and for the true gradient (eq. 3.22), whose per-input
      version is 0 a.e., the surface estimator ``-k / (sqrt(2 pi) |w|) P G sign(P G . w*)``
      with ``G ~ N(0, I_m)``, ``P = I - w^ w^'`` (differentiating
      ``k P(sign(Z.w) != sign(Z.w*))`` puts the mass on the hyperplane Z.w = 0, whose
      density at 0 is ``1 / (sqrt(2 pi) |w|)``).

    Returns one row per scalar (``quantity``: ``"loss"``, ``"grad[i]"``,
    ``"coarse_grad[i]"``) with ``closed_form``, ``monte_carlo``, ``stderr`` and
    ``z = (monte_carlo - closed_form) / stderr``.

    >>> table = monte_carlo_check([1.0, 0.5], [0.6, -0.8], 3, samples=4000)
    >>> list(table.quantity), bool((table.z.abs() < 5).all())
    (['loss', 'grad[0]', 'grad[1]'], True)
    """
    where = "monte_carlo_check"
    w_arr, star, k_int = _inputs(w, w_star, k, where, nonzero_w=True)
    if w_arr.ndim != 1:
        raise UsageError(f"{where}: w must have shape (m,), got {w_arr.shape}")
    if model not in ("relu", "binary"):
        raise UsageError(f"{where}: model must be 'relu' or 'binary', got {model!r}")
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 2:
        raise UsageError(f"{where}: samples must be an int >= 2, got {samples!r}")
    rng = np.random.default_rng(seed)
    m = w_arr.shape[0]
    names: list[str]
    closed: list[FloatArray]
    if model == "relu":
        names = ["loss", "grad"]
        closed = [_relu_loss(w_arr, star, k_int)[None], _relu_grad(w_arr, star, k_int)]
    else:
        true_grad = _binary_grad(w_arr, star, k_int)
        if true_grad is None:
            raise UsageError(f"{where}: w is parallel to w_star; the true gradient is undefined")
        names = ["loss", "grad", "coarse_grad"]
        closed = [
            _binary_loss(w_arr, star, k_int)[None],
            true_grad,
            _coarse_grad(w_arr, star, k_int),
        ]
    sums = [np.zeros_like(c) for c in closed]
    squares = [np.zeros_like(c) for c in closed]
    wh = w_arr / _norm(w_arr)
    chunk = max(1, 2**20 // (k_int * m))
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        z = rng.standard_normal((n, k_int, m))
        zw, zs = z @ w_arr, z @ star
        active = (zw > 0)[..., None] * z  # 1[Z_j . w > 0] Z_j, (n, k, m)
        if model == "relu":
            diff = (np.maximum(zw, 0.0).sum(1) - np.maximum(zs, 0.0).sum(1)) / k_int
            values = [diff[:, None] ** 2, 2.0 * diff[:, None] * active.sum(1) / k_int]
        else:
            diff = ((zw > 0).sum(1) - (zs > 0).sum(1)).astype(np.float64)
            g = rng.standard_normal((n, m))
            pg = g - np.outer(g @ wh, wh)
            surface = -k_int / (SQRT_2PI * _norm(w_arr)) * pg * np.sign(pg @ star)[:, None]
            values = [diff[:, None] ** 2, surface, diff[:, None] * active.sum(1)]
        for i, v in enumerate(values):
            sums[i] += v.sum(0)
            squares[i] += (v * v).sum(0)
        done += n
    rows = []
    for name, c, s, q in zip(names, closed, sums, squares, strict=True):
        mean = s / samples
        var = np.maximum(q / samples - mean**2, 0.0) * samples / (samples - 1)
        err = np.sqrt(var / samples)
        for i in range(c.shape[0]):
            label = name if name == "loss" else f"{name}[{i}]"
            z_score = (mean[i] - c[i]) / err[i] if err[i] > 0 else 0.0
            rows.append([label, float(c[i]), float(mean[i]), float(err[i]), float(z_score)])
    return pd.DataFrame(rows, columns=["quantity", "closed_form", "monte_carlo", "stderr", "z"])


# -- the experiment (``tailwise simulate nonoverlap-rvsm`` / ``nonoverlap-rvscgd``) -------------


def _teacher_and_start(
    m: int, zero_share: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """A unit teacher with ``round(zero_share m)`` zero entries and a unit Gaussian start."""
    w_star = rng.standard_normal(m)
    w_star[rng.permutation(m)[: round(zero_share * m)]] = 0.0
    w_star /= _norm(w_star)
    w0 = rng.standard_normal(m)
    return w_star, w0 / _norm(w0)


def _monotone(values: FloatArray) -> tuple[bool, float]:
    """(non-increasing up to rounding, the largest relative increase of one step)."""
    if len(values) < 2:
        return True, 0.0
    rise = float(np.max(np.diff(values) / np.maximum(np.abs(values[:-1]), 1e-300)))
    return rise <= 1e-12, max(rise, 0.0)


def nonoverlap_experiment(
    *,
    algorithm: str = "rvsm",
    seed: int = 0,
    progress: bool = True,
    m: int = 20,
    k: int = 4,
    zero_share: float = 0.5,
    penalty: str = "l1",
    eta: float | None = None,
    beta: float | None = None,
    lam: float | None = None,
    a: float = 1.0,
    steps: int = 400,
    samples: int = 20_000,
) -> SimulationResult:
    """RVSM (``algorithm="rvsm"``, Theorem 3.1) or RVSCGD (``"rvscgd"``, Theorem 3.2) on one
    seeded problem, checked against source 002's theory (CLI ``nonoverlap-rvsm`` /
    ``nonoverlap-rvscgd``).

    Problem: a unit teacher ``w*`` in R^m with ``round(zero_share m)`` zero entries, a unit
    Gaussian start, k patches. Defaults (chosen inside the theorems' conditions, which the
    summary re-checks): RVSM ``beta = 0.2 / k``, ``lam = 0.1 beta`` (threshold 0.1 <
    1/sqrt(m)), ``eta = 0.9 / (beta + L)`` with L the Lipschitz bound on |w| >= 1/2;
    RVSCGD ``beta = 0.05 k``, ``lam = 0.1 beta``, ``eta = 0.25``. Penalty: ``"l1"``
    (Theorems 3.1-3.2), ``"l0"`` or ``"tl1"`` (shape ``a``; Corollaries 3-4). ``samples``:
    Gaussian inputs of the Monte Carlo check of the closed forms at the final w.

    Table (one row per step): ``step, loss, lagrangian, coarse_lagrangian, angle`` (radians),
    ``sparsity_u, distance`` (|w - w*|), ``norm_w``. Summary: the conditions
    (:func:`theorem_conditions`), whether the Lagrangian decreased monotonically (for
    RVSCGD both the source's, with the binarized loss, and ``coarse_lagrangian``, the one
    RVSCGD provably descends), the limit relations (:func:`limit_checks`), the sparsity of u,
    the Monte Carlo check (largest |z|) and a ``verdict``. Figure: Lagrangian and loss vs
    step, angle vs step with the theorem's bounds, and a stem plot of the final w, u, w*.

    >>> r = nonoverlap_experiment(algorithm="rvscgd", steps=200, samples=2000, progress=False)
    >>> r.summary["verdict"]
    'pass'
    """
    where = "nonoverlap_experiment"
    if algorithm not in ALGORITHMS:
        raise UsageError(f"{where}: algorithm must be 'rvsm' or 'rvscgd', got {algorithm!r}")
    for name, value, low in (
        ("m", m, 1),
        ("k", k, 1),
        ("steps", steps, 1),
        ("samples", samples, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise UsageError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    share = check_nonnegative(zero_share, where, "zero_share")
    if round(share * m) >= m:
        raise UsageError(f"{where}: zero_share = {zero_share} leaves w_star with no nonzero entry")
    rvsm = algorithm == "rvsm"
    beta_f = (
        (0.2 / k if rvsm else 0.05 * k) if beta is None else check_positive(beta, where, "beta")
    )
    lam_f = 0.1 * beta_f if lam is None else check_nonnegative(lam, where, "lam")
    if eta is None:
        eta_f = 0.9 / (beta_f + _relu_lipschitz(k, 1.0, 0.5)) if rvsm else 0.25
    else:
        eta_f = check_positive(eta, where, "eta")
    rng = np.random.default_rng(seed)
    w_star, w0 = _teacher_and_start(m, share, rng)
    with progress_task(f"nonoverlap-{algorithm}", steps + 1, progress) as advance:
        trajectory = _run(
            algorithm,
            w0,
            w_star,
            k,
            eta=eta_f,
            beta=beta_f,
            lam=lam_f,
            penalty=penalty,
            steps=steps,
            a=a,
            advance=lambda n: advance(n, description="iterating"),
        )
        advance(1, description="Monte Carlo")
        mc = monte_carlo_check(
            trajectory.w[-1],
            w_star,
            k,
            model="relu" if rvsm else "binary",
            samples=samples,
            seed=seed + 1,
        )
    table = pd.DataFrame(
        {
            "step": np.arange(steps + 1),
            "loss": trajectory.loss,
            "lagrangian": trajectory.lagrangian,
            "coarse_lagrangian": trajectory.coarse_lagrangian,
            "angle": trajectory.angle,
            "sparsity_u": trajectory.sparsity,
            "distance": _norm(trajectory.w - w_star),
            "norm_w": _norm(trajectory.w),
        }
    )
    conditions = theorem_conditions(trajectory)
    checks = {name: float(value) for name, value in limit_checks(trajectory).items()}
    monotone, rise = _monotone(trajectory.lagrangian)
    coarse_monotone, coarse_rise = _monotone(trajectory.coarse_lagrangian)
    descends = monotone if rvsm else coarse_monotone
    max_angle = float(np.max(trajectory.angle))
    zeros = w_star == 0
    support_kept = bool(np.all(trajectory.u[-1][zeros] == 0))
    mc_z = float(np.max(np.abs(mc["z"])))
    loss_row = mc.iloc[0]
    failures = []
    if conditions["met"] != "yes":
        failures.append(f"conditions {conditions['met']}")
    if not descends:
        failures.append("Lagrangian not monotone")
    if not max_angle <= float(conditions["angle_bound"]) + 1e-12:
        failures.append("angle left its bound")
    if not checks["angle"] < float(conditions["delta"]):
        failures.append("limit angle >= delta")
    if not (checks["relation"] < 1e-6 and checks["stationarity"] < 1e-6):
        failures.append(f"not converged (step {checks['step']:.1e}; raise steps)")
    if not rvsm and not checks["distance"] <= checks["distance_bound"] + 1e-12:
        failures.append("distance bound (3.15) violated")
    if not support_kept:
        failures.append("u nonzero where w* is zero")
    if mc_z > 5.0:
        failures.append(f"Monte Carlo |z| = {mc_z:.1f}")
    summary: dict[str, float | int | str] = {
        "theorem": "3.1" if rvsm else "3.2",
        "conditions": str(conditions["met"]),
        **{f"cond_{key}": value for key, value in conditions.items() if key != "met"},
        "lagrangian_monotone": "yes" if monotone else "no",
        "lagrangian_max_rise": rise,
    }
    if not rvsm:  # the function RVSCGD provably descends (the source's can rise a little)
        summary["coarse_lagrangian_monotone"] = "yes" if coarse_monotone else "no"
        summary["coarse_lagrangian_max_rise"] = coarse_rise
    summary.update(
        {
            "max_angle": max_angle,
            **{f"limit_{key}": value for key, value in checks.items()},
            "sparsity_u": float(trajectory.sparsity[-1]),
            "sparsity_w_star": float(np.mean(zeros)),
            "support_kept": "yes" if support_kept else "no",
            "mc_loss": float(loss_row["monte_carlo"]),
            "mc_loss_stderr": float(loss_row["stderr"]),
            "loss_closed_form": float(loss_row["closed_form"]),
            "mc_max_abs_z": mc_z,
            "verdict": "pass" if not failures else "fail: " + "; ".join(failures),
        }
    )
    # numbers that do not apply (RVSM has no bound 3.15; delta when none exists) are left out
    summary = {key: v for key, v in summary.items() if not (isinstance(v, float) and v != v)}
    options = {
        "algorithm": algorithm,
        "seed": seed,
        "m": m,
        "k": k,
        "zero_share": share,
        "penalty": trajectory.options["penalty"],
        "eta": eta_f,
        "beta": beta_f,
        "lam": lam_f,
        "a": float(a),
        "steps": steps,
        "samples": samples,
    }

    def draw(fig: Figure) -> None:
        _draw(fig, trajectory, float(conditions["delta"]), float(conditions["angle_bound"]))

    return SimulationResult(f"nonoverlap-{algorithm}", table, summary, draw, options)


def _draw(fig: Figure, run: SplittingTrajectory, delta: float, angle_bound: float) -> None:
    """Lagrangian and loss vs step, angle vs step, and the final w, u, w* as stems."""
    steps = np.arange(1, run.w.shape[0] + 1)  # step + 1, for a log axis
    name = run.algorithm.upper()
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(steps, run.lagrangian, label="Lagrangian $L_\\beta(w, u)$")
    if run.algorithm == "rvscgd":
        ax.plot(steps, run.coarse_lagrangian, "--", label="with coarse potential")
    loss = np.where(run.loss > 0, run.loss, np.nan)
    ax.plot(steps, loss, label="loss $f(w)$")
    ax.set(xscale="log", yscale="log", xlabel="step + 1", title=f"{name}: Lagrangian")
    ax.legend(fontsize="small")
    ax = fig.add_subplot(grid[0, 1])
    ax.plot(steps, np.degrees(run.angle), label="angle(w, w*)")
    if delta == delta:
        ax.axhline(math.degrees(delta), color="tab:green", ls=":", label="limit bound δ")
    if angle_bound == angle_bound:
        ax.axhline(math.degrees(angle_bound), color="tab:red", ls=":", label="π − δ bound")
    ax.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="degrees", title="angle to w*")
    ax.legend(fontsize="small")
    ax = fig.add_subplot(grid[1, :])
    index = np.arange(run.w.shape[-1])
    star = run.w_star / _norm(run.w_star) if run.algorithm == "rvscgd" else run.w_star
    for offset, values, fmt, label in (
        (-0.2, star, "C2", "w*"),
        (0.0, run.w[-1], "C0", "w (final)"),
        (0.2, run.u[-1], "C3", "u (final)"),
    ):
        stems = ax.stem(
            index + offset, values, linefmt=f"{fmt}-", markerfmt=f"{fmt}o", basefmt="k-"
        )
        stems.set_label(label)
    ax.set_xlabel("entry")
    ax.set_title(f"final weights (u sparsity {float(np.mean(run.u[-1] == 0)):.0%})")
    ax.legend(fontsize="small", ncols=3)
