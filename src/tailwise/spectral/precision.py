"""Which rows of the analysis table float32 Gram spectra leave unchanged: ``precision="auto"``.

A float32 Gram matrix (:mod:`tailwise.spectral.esd`) perturbs each eigenvalue by rounding.
:func:`change_bounds` bounds, to first order, how much every column of a row can move when
each eigenvalue moves by at most ``delta = ERROR_UNIT * eps32 * lambda_max``;
:func:`uncertain_column` accepts the row when every bound is within
:data:`RELATIVE_TOLERANCE` (1e-4) of the column's scale (:func:`column_scale`: the value
itself for most columns). :func:`tailwise.analyze` redoes a layer in float64 when one of its
rows is not accepted.

The error model is measured, not derived: the eigenvalues of a float32 Gram matrix of
float32 weights differ from float64's by at most 10 eps32 lambda_max (at the top of
heavy-tailed spectra, where the columns are least sensitive: lambda_max gets its own
``TOP_ERROR_UNIT``), 0.6 in the null space of low-rank matrices, and by much less where the
power-law fit and the other columns look. On the calibration layers of
``benchmarks/analyze_vs_weightwatcher.py --calibrate`` (Student-t, Gaussian, power-law
singular values over a bulk, low rank plus noise; 300 x 100 to 3072 x 768) every bounded
column of an accepted row moved by at most 0.28 of its bound (mp_sigma; alpha 0.07, D 0.03);
the script prints the ratios. The bounds are first order and take every eigenvalue error at
its worst sign, so sums over many eigenvalues (the Marchenko-Pastur bulk, the entropy) are
bounded far above what rounding does: measured changes there are 1e-8 to 1e-6 while their
bounds often exceed 1e-4 on power-law spectra, which are then redone in float64. The bounds
(REFERENCES §1 for the columns):

* rank, rank loss: every eigenvalue must lie above the float32 floor (16 eps32 lambda_max),
  so float64 counts the same eigenvalues (its floor N eps64 lambda_max is far lower);
* norm, log_norm, log_frobenius_norm, stable_rank: the sum of the eigenvalues is checked
  against the squared Frobenius norm computed from the weights in float64
  (``ESD.trace_error``), a measurement rather than a bound;
* entropy, natural-log H = -sum p ln p, p = lambda / S: |dH| <= delta / S sum |ln p_i + H|;
* Marchenko-Pastur: the bulk's sum moves by at most the measured error of the whole sum plus
  delta per eigenvalue outside the bulk; no eigenvalue may lie within its own movement of the
  cut of any spike-removal step (num_spikes);
* power law, tail x_1 = xmin <= ... <= x_n, t = alpha - 1 = n / L, L = sum ln(x_i / xmin):
  |dL| <= delta (sum 1 / x_i + n / xmin), |dt| <= t^2 |dL| / n (alpha, sigma = t / sqrt n,
  alpha_weighted, log_alpha_norm); D moves by at most the maximum over the tail of
  (x / xmin)^-t (t delta (1 / x + 1 / xmin) + ln(x / xmin) |dt|) (D is judged on its
  scale [0, 1]); the KS choice of xmin must be stable
  (:func:`tailwise.spectral.powerlaw._ks_minimum_is_stable`); no two eigenvalues within
  2 delta of each other (their order and ties decide the empirical CDF) and none within delta
  of the zero threshold 1e-5 (which decides who is in the fit); alpha not within its bound of
  the warning thresholds 2 and 6.

``rand_distance`` (the Jensen-Shannon distance between log-binned histograms of the ESD and
of the permuted weights' ESD) is certain when no eigenvalue of either spectrum can cross a
bin edge (:func:`histogram_is_certain`); otherwise it is recomputed from float64 spectra.
Options whose outputs are not bounded here (``xmax``, ``fix_fingers``, ``method="svd"``) make
``"auto"`` use float64.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from tailwise.spectral.esd import ESD, FLOAT32_FLOOR
from tailwise.spectral.metrics import _bulk_iterations, _log_bin_edges
from tailwise.spectral.powerlaw import (
    ZERO_THRESHOLD,
    PowerLawFit,
    XminMethod,
    _ks_minimum_is_stable,
)

__all__ = [
    "BOUNDED_COLUMNS",
    "ERROR_UNIT",
    "RELATIVE_TOLERANCE",
    "TOP_ERROR_UNIT",
    "change_bounds",
    "column_scale",
    "error_bound",
    "histogram_is_certain",
    "uncertain_column",
]

#: Largest relative change of any column that ``precision="auto"`` accepts.
RELATIVE_TOLERANCE = 1e-4
#: Eigenvalue error assumed by the bounds, in units of eps32 * lambda_max (see module docstring).
ERROR_UNIT = 1.0
#: Relative error assumed for lambda_max itself, in units of eps32 (measured: at most 10).
TOP_ERROR_UNIT = 16.0
#: The columns :func:`change_bounds` bounds, in the order :func:`uncertain_column` checks them.
BOUNDED_COLUMNS: tuple[str, ...] = (
    "matrix_rank",
    "norm",
    "spectral_norm",
    "stable_rank",
    "entropy",
    "mp_sigma",
    "mp_softrank",
    "num_spikes",
    "num_pl_spikes",
    "xmin",
    "alpha",
    "sigma",
    "warning",
    "D",
    "alpha_weighted",
    "log_alpha_norm",
)
FloatArray = NDArray[np.float64]
_EPS32 = float(np.finfo(np.float32).eps)
_LN10 = math.log(10.0)
# Thresholds of the warning column (tailwise.spectral.analyze), which alpha must not straddle.
_WARNING_ALPHAS = (2.0, 6.0)
_INF = math.inf


def column_scale(column: str, value: float, alpha: float) -> float:
    """The scale a change of ``column`` is measured against (its "relative" denominator).

    |value| for most columns; 1 for ``D`` (a distance between CDFs, in [0, 1]); 1 / ln 10 for
    log10 columns (a change of 1e-4 / ln 10 is a 1e-4 relative change of the quantity);
    |value| + alpha / ln 10 for the columns that are alpha times a log10 (``alpha_weighted``,
    ``log_alpha_norm``), which pass through 0 when lambda does.

    >>> column_scale("alpha", 3.0, 3.0), column_scale("D", 0.05, 3.0)
    (3.0, 1.0)
    """
    if column == "D":
        return 1.0
    if column.startswith("log_") and column != "log_alpha_norm":
        return 1.0 / _LN10
    if column in ("alpha_weighted", "log_alpha_norm"):
        return abs(value) + abs(alpha) / _LN10
    return abs(value)


def change_bounds(
    esd: ESD, fit: PowerLawFit | None, xmin: XminMethod | float = XminMethod.KS
) -> dict[str, float]:
    """First-order bounds on the change of each column of ``esd``'s row, divided by the
    column's :func:`column_scale`, when every eigenvalue moves by at most
    ``ERROR_UNIT * eps32 * lambda_max`` and lambda_max by ``TOP_ERROR_UNIT * eps32`` relative
    (the formulas are in the module docstring).

    ``esd``: a float32 Gram spectrum (evals ascending); ``fit``: the power-law fit of its
    eigenvalues with the cut-off rule ``xmin`` (``"ks"``, ``"median"`` or a fixed number; no
    ``xmax`` or ``fix_fingers``), or None when no fit was made. Keys: :data:`BOUNDED_COLUMNS`
    (a prefix of them once one is infinite: a count or a choice that may change, after
    which the rest is not evaluated). The log10 columns follow from their quantities
    (``norm`` for ``log_norm`` and ``log_frobenius_norm``, ``spectral_norm`` for
    ``log_spectral_norm`` and ``xmax``), ``rank_loss`` from ``matrix_rank``.

    >>> import torch
    >>> from tailwise.spectral.esd import eigenvalues
    >>> from tailwise.spectral.powerlaw import fit_power_law
    >>> w = torch.randn(300, 100, generator=torch.Generator().manual_seed(0))
    >>> [(_, esd)] = eigenvalues(w, precision="float32")
    >>> bounds = change_bounds(esd, fit_power_law(esd.evals))
    >>> max(bounds.values()) < 1e-4, bounds["spectral_norm"] == 16 * float(torch.finfo().eps)
    (True, True)
    """
    bounds: dict[str, float] = {}
    lam = np.asarray(esd.evals, dtype=np.float64)
    if lam.size == 0 or not lam[-1] > 0:
        bounds["matrix_rank"] = _INF
        return bounds
    top = float(lam[-1])
    bounds["matrix_rank"] = _INF if bool((lam <= FLOAT32_FLOOR * _EPS32 * top).any()) else 0.0
    if bounds["matrix_rank"]:
        return bounds
    delta = ERROR_UNIT * _EPS32 * top
    top_error = TOP_ERROR_UNIT * _EPS32  # relative
    trace_error = esd.trace_error if math.isfinite(esd.trace_error) else _INF
    bounds.update(norm=trace_error, spectral_norm=top_error, stable_rank=trace_error + top_error)
    total = float(lam.sum())
    _entropy(bounds, lam, total, esd.matrix_rank, delta)
    if _marchenko_pastur(bounds, lam, total, esd, delta):
        _power_law(bounds, lam, fit, xmin, delta)
    return bounds


def uncertain_column(
    esd: ESD,
    fit: PowerLawFit | None,
    xmin: XminMethod | float = XminMethod.KS,
    tolerance: float = RELATIVE_TOLERANCE,
) -> str:
    """The first column of ``esd``'s row that float32 rounding may move by more than
    ``tolerance`` (relative to :func:`column_scale`), or ``""`` when none can
    (arguments as for :func:`change_bounds`).

    >>> import torch
    >>> from tailwise.spectral.esd import eigenvalues
    >>> from tailwise.spectral.powerlaw import fit_power_law
    >>> w = torch.randn(300, 100, generator=torch.Generator().manual_seed(0))
    >>> [(_, esd)] = eigenvalues(w, precision="float32")
    >>> uncertain_column(esd, fit_power_law(esd.evals))
    ''
    >>> w[:, 0] = w[:, 1]  # a null direction: its eigenvalue is float32 rounding
    >>> [(_, esd)] = eigenvalues(w, precision="float32")
    >>> uncertain_column(esd, fit_power_law(esd.evals))
    'matrix_rank'
    """
    bounds = change_bounds(esd, fit, xmin)
    for column in BOUNDED_COLUMNS:
        if column in bounds and not bounds[column] <= tolerance:
            return column
    return ""


def _entropy(
    bounds: dict[str, float], lam: FloatArray, total: float, rank: int, delta: float
) -> None:
    p = lam[lam > 0] / total
    log_p = np.log(p)
    h = float(-np.sum(p * log_p))  # natural-log entropy; the column divides it by ln R
    if rank < 2 or h <= 0:
        bounds["entropy"] = 0.0  # NaN in both precisions
        return
    bounds["entropy"] = delta / total * float(np.sum(np.abs(log_p + h))) / h


def _marchenko_pastur(
    bounds: dict[str, float], lam: FloatArray, total: float, esd: ESD, delta: float
) -> bool:
    n = lam.size
    x = lam * (n / total)
    sigma2, _, inside, cuts = _bulk_iterations(x, esd.Q, esd.M, 100)
    trace_error = bounds["norm"]
    moves = delta * n / total + x * trace_error  # per value, mean-1 scale
    # The bulk's sum moves by the measured error of the whole sum plus at most delta per
    # value outside the bulk: |dS_bulk| <= trace_error S + (n - inside) delta.
    bulk_sum = sigma2 * inside * total / n
    rho = (trace_error * total + (n - inside) * delta) / bulk_sum + trace_error
    bounds.update(mp_sigma=rho / 2, mp_softrank=rho + TOP_ERROR_UNIT * _EPS32 + trace_error)
    stable = all(bool((np.abs(x - cut) > moves + cut * rho).all()) for cut in cuts)
    bounds["num_spikes"] = 0.0 if stable else _INF
    return stable


def _power_law(
    bounds: dict[str, float],
    lam: FloatArray,
    fit: PowerLawFit | None,
    xmin_rule: XminMethod | float,
    delta: float,
) -> None:
    x = lam[lam > ZERO_THRESHOLD]
    unstable = bool((np.abs(lam - ZERO_THRESHOLD) <= delta).any()) or (
        fit is not None and (not fit.ok or fit.n_tail < 2)
    )
    bounds["num_pl_spikes"] = _INF if unstable else 0.0
    # Near ties: the order and ties of values decide the empirical CDF and the candidates.
    ties = x.size > 1 and float(np.diff(x).min()) <= 2 * delta
    bounds["xmin"] = _INF if ties else 0.0
    if fit is None or unstable or ties:
        return
    fixed = not isinstance(xmin_rule, XminMethod)
    alpha, xmin = fit.alpha, fit.xmin
    t = alpha - 1.0
    start = int(np.searchsorted(x, xmin, side="left"))
    tail = x[start:]
    n = tail.size
    if n != fit.n_tail:
        bounds["num_pl_spikes"] = _INF
        return
    at_xmin = 0.0 if fixed else 1.0 / xmin
    d_t = t * t * delta * (float(np.sum(1.0 / tail)) + n * at_xmin) / n
    if not fixed:
        stable = xmin_rule is not XminMethod.KS or _ks_minimum_is_stable(x, start, delta)
        bounds["xmin"] = delta / xmin if stable else _INF
    bounds.update(alpha=d_t / alpha, sigma=d_t / t)
    straddles = any(abs(alpha - edge) <= d_t for edge in _WARNING_ALPHAS)
    bounds["warning"] = _INF if straddles else 0.0
    z = np.log(tail / xmin)
    bounds["D"] = float(np.max(np.exp(-t * z) * (t * delta * (1.0 / tail + at_xmin) + z * d_t)))
    top = float(lam[-1])
    log_top = math.log10(top)
    weighted = d_t * abs(log_top) + alpha * TOP_ERROR_UNIT * _EPS32 / _LN10
    bounds["alpha_weighted"] = weighted / column_scale("alpha_weighted", alpha * log_top, alpha)
    rel = lam[lam > 0] / top
    powers = rel**alpha
    # log10 sum lambda^alpha moves by (relative change of the sum) / ln 10.
    sum_change = (
        alpha * (delta / top) * float(np.sum(rel ** (alpha - 1.0)))
        + d_t * float(np.sum(powers * np.abs(np.log(rel) + math.log(top))))
    ) / float(np.sum(powers))
    log_alpha_norm = alpha * log_top + math.log10(float(np.sum(powers)))
    bounds["log_alpha_norm"] = (sum_change / _LN10) / column_scale(
        "log_alpha_norm", log_alpha_norm, alpha
    )


def error_bound(esd: ESD) -> float:
    """The eigenvalue error assumed for ``esd``: ERROR_UNIT * eps32 * lambda_max for a float32
    spectrum, 0 for float64 (its rounding is the reference)."""
    if esd.precision != "float32" or esd.evals.size == 0:
        return 0.0
    return ERROR_UNIT * _EPS32 * float(esd.evals[-1])


def histogram_is_certain(
    evals: FloatArray, other: FloatArray, delta: float, other_delta: float
) -> bool:
    """Whether :func:`~tailwise.spectral.metrics.spectral_distance` of ``evals`` and ``other``
    is unchanged when their eigenvalues move by at most ``delta`` and ``other_delta``.

    Every positive value must stay farther from each interior log10 bin edge than its own
    move plus the edges' (the edges follow the smallest and largest positive value); values
    at 0 stay in the zero bin only if exactly 0, so a spectrum with a nonzero ``delta`` must
    have none.

    >>> import numpy as np
    >>> lam = np.array([1.0, 2.0, 4.0, 8.0])
    >>> histogram_is_certain(lam, lam * 1.5, 1e-9, 0.0), histogram_is_certain(lam, lam, 0.5, 0.0)
    (True, False)
    """
    a = np.asarray(evals, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    edges = _log_bin_edges(a, b, None)
    if edges is None:
        return True
    if (delta > 0 and bool((a <= 0).any())) or (other_delta > 0 and bool((b <= 0).any())):
        return False
    values = np.concatenate([a[a > 0], b[b > 0]])
    moves = np.concatenate(
        [np.full(int((a > 0).sum()), delta), np.full(int((b > 0).sum()), other_delta)]
    )
    largest = max(delta, other_delta)
    edge_move = largest / (_LN10 * float(values.min()))  # lo moves most; hi less
    logs = np.log10(values)
    log_moves = moves / (_LN10 * values)
    inner = edges[1:-1]
    if inner.size == 0:
        return True
    distance = np.min(np.abs(logs[:, None] - inner[None, :]), axis=1)
    return bool(np.all(distance > log_moves + edge_move))
