"""Continuous power-law fits of an eigenvalue spectrum (Clauset, Shalizi and Newman 2009).

Pure functions on a 1-D array; nothing here touches modules, files or devices.

For a lower cut-off ``xmin`` with tail ``{x : xmin <= x <= xmax}`` of ``n`` values, the
maximum-likelihood exponent of p(x) ∝ x^-alpha is (source 000 §1.4, REFERENCES §1)

    alpha = 1 + n / sum_i ln(x_i / xmin)                          (no xmax)

and with an upper cut-off the truncated-power-law MLE solves
``h(z) = mean ln(x / xmin) / ln(xmax / xmin)`` with ``h(z) = 1/z - 1/(e^z - 1)`` and
``z = (alpha - 1) ln(xmax / xmin)`` (monotone, solved by bisection for all candidates at once).

The Kolmogorov-Smirnov distance between the tail's empirical CDF and the fitted CDF is
``D = max |S(x) - P(x)|`` over the distinct tail values, with ``S(x)`` the share of the tail
strictly below ``x`` (the convention of the ``powerlaw`` package, which also handles ties)
and ``P(x) = 1 - (x / xmin)^(1 - alpha)`` (divided by ``1 - (xmax/xmin)^(1 - alpha)`` when
truncated). ``xmin="ks"`` picks, among all distinct values but the largest, the one with the
smallest D (first on ties), like ``powerlaw.Fit`` and WeightWatcher, but without their
Python loop over candidates: an exact branch-and-bound (|P - S| on a coarse grid of the
tail is a lower bound of D; the exact D of the most promising candidates an upper bound of
the minimum) leaves few candidates for the exact, vectorized pass.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FixFingers",
    "PowerLawFit",
    "XminMethod",
    "fit_power_law",
    "hill_alpha",
    "ks_distance",
]

FloatArray = NDArray[np.float64]

# Values at or below this are treated as zero eigenvalues (numerical rank loss) and are not
# part of any power-law tail; WeightWatcher uses the same threshold (EVALS_THRESH).
ZERO_THRESHOLD = 1e-5
# A spectrum whose relative spread is below this is flat up to rounding (an orthogonal layer):
# there is no tail to fit, and an "alpha" would only measure floating-point noise.
FLAT_SPREAD = 1e-10
# Distinct values just above each candidate xmin added to the coarse lower-bound grid.
_LOCAL_POINTS = 16
# Work per block (candidates x points): small enough to stay in cache (measured 3x faster
# than 64 MB blocks at n = 15k on two cores).
_BLOCK_ENTRIES = 1 << 15


class XminMethod(str, enum.Enum):
    """How the lower cut-off of the tail is chosen."""

    KS = "ks"  # Clauset et al.: minimise the KS distance over every distinct value
    MEDIAN = "median"  # TempBalance's Hill estimator: xmin = the median eigenvalue


class FixFingers(str, enum.Enum):
    """Remedies for 'fingers' (a few outlying top eigenvalues that bias the KS fit)."""

    CLIP_XMAX = "clip_xmax"  # WeightWatcher: drop top k values, k = 2..9, accept a drop > 1
    XMIN_PEAK = "xmin_peak"  # search xmin only near the peak of the log-scale ESD histogram


@dataclass(frozen=True)
class PowerLawFit:
    """Result of a power-law fit. Failed fits carry NaN numbers and a reason.

    alpha: exponent of p(x) ∝ x^-alpha; xmin / xmax: tail bounds (xmax = largest value when
    untruncated); D: KS distance; sigma: (alpha - 1) / sqrt(n_tail), the MLE's standard error;
    n_tail: number of values in the tail (WeightWatcher's num_pl_spikes); num_fingers: values
    clipped by ``fix_fingers="clip_xmax"``.
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int
    status: str = "ok"
    reason: str = ""
    num_fingers: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _failed(reason: str) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, nan, 0, status="failed", reason=reason)


def _clean(values: ArrayLike) -> tuple[FloatArray | None, str]:
    """Sorted float64 copy of the positive finite values, or (None, reason)."""
    x = np.asarray(values)
    if x.ndim != 1:
        x = x.reshape(-1)
    if x.size == 0:
        return None, "no eigenvalues"
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        return None, f"eigenvalues must be real numbers, got dtype {x.dtype}"
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        return None, f"{int((~np.isfinite(x)).sum())} eigenvalues are NaN or infinite"
    x = np.sort(x[x > ZERO_THRESHOLD])
    if x.size < 2:
        return None, f"fewer than 2 eigenvalues above {ZERO_THRESHOLD:g}"
    if x[-1] - x[0] <= FLAT_SPREAD * x[-1]:
        return None, f"all nonzero eigenvalues are equal within {FLAT_SPREAD:g} (no tail to fit)"
    return x, ""


def hill_alpha(values: ArrayLike) -> float:
    """TempBalance's Hill ('median') estimator of an ESD's *density* exponent.

    xmin = the median eigenvalue. Sort ascending, i = n // 2, k = n - i:
    alpha = 1 + k / (sum_{j >= i} ln x_j - k ln x_i), the exponent of p(x) ∝ x^-alpha, i.e.
    1 + a tail index (for the tail index of entries see
    :func:`tailwise.tails.estimators.hill_tail_index`). Raises ``ValueError`` (the same
    failure as ``hill_tail_index``) when there is no tail to fit: fewer than 2 usable
    (positive, above the zero threshold) values, non-finite values, or a flat spectrum.
    :func:`fit_power_law` with ``xmin="median"`` reports the same cases as a failed fit.

    >>> round(hill_alpha([1.0, 2.0, 4.0, 8.0]), 3)
    3.885
    """
    fit = fit_power_law(values, xmin="median")
    if not fit.ok:
        raise ValueError(f"hill_alpha: {fit.reason}")
    return fit.alpha


def _cdf_matrix(
    t: FloatArray, logx_points: FloatArray, log_xmin: FloatArray, log_r: FloatArray | None
) -> FloatArray:
    """Fitted CDF at ``exp(logx_points)`` (columns) for candidates (rows, exponent t = alpha-1)."""
    # Points below xmin are masked by the callers; clamp so they cannot overflow exp.
    z = np.maximum(logx_points[None, :] - log_xmin[:, None], 0.0)
    surv = np.exp(-t[:, None] * z)
    if log_r is None:
        return np.asarray(1.0 - surv)
    # Truncated: (1 - (x/xmin)^-t) / (1 - r^-t); t -> 0 limit is z / ln r.
    denom = -np.expm1(-t * log_r)
    small = np.abs(t * log_r) < 1e-12
    out = np.where(
        small[:, None],
        z / np.where(log_r > 0, log_r, 1.0)[:, None],
        (1.0 - surv) / np.where(small, 1.0, denom)[:, None],
    )
    return np.asarray(out)


class _Tail:
    """Sorted data prepared for vectorized tail fits.

    ``x`` sorted ascending (n values, all > 0). Distinct values ``u`` with ``first[k]`` the
    index of the first occurrence of ``u[k]``; ``S(u_k)`` for a tail starting at index i is
    ``(first[k] - i) / (end - i)``.
    """

    def __init__(self, x: FloatArray):
        self.x = x
        self.x0 = float(x[0])
        # Logs relative to the smallest value, ln(x / x0) via log1p: nearly equal values keep
        # their tiny differences (ln x itself would cancel them away in the sums below).
        self.logx = self.rel_log(x)
        self.u, self.first = np.unique(x, return_index=True)
        self.logu = self.rel_log(self.u)
        # suffix sums of ln x for O(1) MLE per candidate
        self.csum = np.concatenate(([0.0], np.cumsum(self.logx)))

    def rel_log(self, values: FloatArray | float) -> FloatArray:
        """ln(values / x0), accurate for values close to x0."""
        return np.asarray(np.log1p((np.asarray(values, dtype=np.float64) - self.x0) / self.x0))


def _mle_exponent(
    tail: _Tail, start: NDArray[np.int64], end: int, log_xmax: float | None
) -> FloatArray:
    """alpha - 1 for tails x[start:end] (vector of starts); truncated when log_xmax is set."""
    n = (end - start).astype(np.float64)
    log_xmin = tail.logx[start]
    mean_log = (tail.csum[end] - tail.csum[start]) / n - log_xmin
    if log_xmax is None:
        with np.errstate(divide="ignore"):
            return np.asarray(1.0 / mean_log)
    log_r = log_xmax - log_xmin
    target = mean_log / log_r  # in (0, 1) for nondegenerate tails
    return _solve_truncated(target) / log_r


def _h(z: FloatArray) -> FloatArray:
    """h(z) = 1/z - 1/(e^z - 1): mean of ln(x/xmin)/ln(r) under a truncated power law."""
    small = np.abs(z) < 1e-4
    zs = np.where(small, 1.0, z)
    big = 1.0 / zs - 1.0 / np.expm1(np.minimum(zs, 700.0))
    series = 0.5 - z / 12.0 + z**3 / 720.0
    return np.asarray(np.where(small, series, big))


def _solve_truncated(target: FloatArray) -> FloatArray:
    """Solve h(z) = target by bisection (h decreases from 1 to 0 over the real line)."""
    lo = np.full_like(target, -700.0)
    hi = np.full_like(target, 700.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        above = _h(mid) > target  # root is to the right
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.asarray(0.5 * (lo + hi))


def _exact_ks(
    tail: _Tail,
    cand: NDArray[np.int64],
    t: FloatArray,
    end: int,
    log_xmax: float | None,
) -> FloatArray:
    """Exact KS distance for candidate tail starts ``cand`` (indices into x)."""
    u_end = int(np.searchsorted(tail.first, end))  # distinct values inside x[:end]
    out = np.empty(cand.size)
    if cand.size == 0:
        return out
    k0 = np.searchsorted(tail.first, cand)  # distinct index of each candidate's xmin
    # Process candidates in blocks so the (candidates x points) work stays bounded.
    order = np.argsort(cand)
    width_max = u_end - int(k0.min())
    rows = max(1, _BLOCK_ENTRIES // max(width_max, 1))
    log_r_all = None if log_xmax is None else log_xmax - tail.logx[cand]
    for s in range(0, cand.size, rows):
        idx = order[s : s + rows]
        kb = int(k0[idx].min())
        pts = tail.logu[kb:u_end]
        first = tail.first[kb:u_end].astype(np.float64)
        i = cand[idx].astype(np.float64)
        n = end - i
        cdf = _cdf_matrix(
            t[idx], pts, tail.logx[cand[idx]], None if log_r_all is None else log_r_all[idx]
        )
        emp = np.maximum(first[None, :] - i[:, None], 0.0) / n[:, None]
        diff = np.abs(cdf - emp)
        diff[pts[None, :] < tail.logx[cand[idx]][:, None]] = 0.0  # points below xmin
        out[idx] = diff.max(axis=1)
    return out


def _ks_lower_bound(
    tail: _Tail,
    cand: NDArray[np.int64],
    t: FloatArray,
    end: int,
    log_xmax: float | None,
    step: int,
) -> FloatArray:
    """Lower bound on each candidate's KS distance: the exact |P - S| at every ``step``-th
    distinct value (a subset of the points the exact distance maximises over)."""
    u_end = int(np.searchsorted(tail.first, end))
    grid = np.arange(0, u_end, step)
    grid_first = tail.first[grid].astype(np.float64)
    grid_log = tail.logu[grid]
    out = np.empty(cand.size)
    rows = max(1, _BLOCK_ENTRIES // max(grid.size, 1))
    log_r_all = None if log_xmax is None else log_xmax - tail.logx[cand]
    for s in range(0, cand.size, rows):
        sl = slice(s, s + rows)
        i = cand[sl].astype(np.float64)
        cdf = _cdf_matrix(
            t[sl], grid_log, tail.logx[cand[sl]], None if log_r_all is None else log_r_all[sl]
        )
        diff = np.abs(cdf - (grid_first[None, :] - i[:, None]) / (end - i)[:, None])
        out[sl] = np.where(grid_first[None, :] >= i[:, None], diff, 0.0).max(axis=1)
    # Also the first few distinct values of each candidate's own tail: the KS maximum is often
    # just above xmin, where a global grid may have no point.
    k0 = np.searchsorted(tail.first, cand)
    local = np.minimum(k0[:, None] + np.arange(1, _LOCAL_POINTS + 1)[None, :], u_end - 1)
    i = cand.astype(np.float64)
    log_r = None if log_xmax is None else log_xmax - tail.logx[cand]
    z = tail.logu[local] - tail.logx[cand][:, None]
    surv = np.exp(-t[:, None] * z)
    if log_r is None:
        cdf_local = 1.0 - surv
    else:  # truncated; the t -> 0 limit is z / ln r
        small = np.abs(t * log_r) < 1e-12
        denom = np.where(small, 1.0, -np.expm1(-t * log_r))
        cdf_local = np.where(small[:, None], z / log_r[:, None], (1.0 - surv) / denom[:, None])
    emp_local = (tail.first[local] - i[:, None]) / (end - i)[:, None]
    return np.asarray(np.maximum(out, np.abs(cdf_local - emp_local).max(axis=1)))


def ks_distance(values: ArrayLike, alpha: float, xmin: float, xmax: float | None = None) -> float:
    """KS distance between the tail ``xmin <= x (<= xmax)`` of ``values`` and a power law.

    The fitted CDF is P(x) = 1 - (x/xmin)^(1-alpha) (normalised to [xmin, xmax] if xmax is
    given); the empirical CDF counts tail values strictly below x (``powerlaw``'s convention).
    """
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    x = x[(x >= xmin) & (x <= (np.inf if xmax is None else xmax))]
    if x.size < 2:
        return math.nan
    u, first = np.unique(x, return_index=True)
    t = alpha - 1.0
    z = np.log1p((u - xmin) / xmin)
    if xmax is None:
        cdf = -np.expm1(-t * z)
    else:
        log_r = math.log(xmax / xmin)
        cdf = z / log_r if abs(t * log_r) < 1e-12 else -np.expm1(-t * z) / -math.expm1(-t * log_r)
    return float(np.max(np.abs(cdf - first / x.size)))


def _ks_branch_and_bound(
    tail: _Tail,
    cand: NDArray[np.int64],
    t: FloatArray,
    end: int,
    log_xmax: float | None,
    n_points: int,
) -> FloatArray:
    """KS distances, exact for every candidate that could be the minimiser, inf otherwise.

    Grids of decreasing stride bound each candidate's D from below; the exact D of the few
    candidates with the smallest bounds bounds the minimum from above; a candidate whose
    lower bound exceeds it cannot win and is dropped. The last
    pass is exact, so the argmin (first on ties) is the brute-force argmin.
    """
    d = np.full(cand.size, np.inf)
    alive = np.arange(cand.size)
    best = np.inf
    step = int(math.sqrt(n_points))
    while step >= 4 and alive.size > 256:
        lower = _ks_lower_bound(tail, cand[alive], t[alive], end, log_xmax, step)
        # Tighten the upper bound on min D with the exact D of the most promising few.
        top = alive[np.argsort(lower, kind="stable")[:8]]
        todo = top[np.isinf(d[top])]
        d[todo] = _exact_ks(tail, cand[todo], t[todo], end, log_xmax)
        best = min(best, float(d[top].min()))
        alive = alive[lower <= best]
        step //= 4
    todo = alive[np.isinf(d[alive])]
    d[todo] = _exact_ks(tail, cand[todo], t[todo], end, log_xmax)
    return d


# First-order bound on the change of a candidate's KS distance when every value moves by at
# most delta (see _ks_minimum_is_stable): |dD_j| <= KS_SLACK * (alpha_j - 1) * delta / x_j.
KS_SLACK = 2.0 * (1.0 + math.exp(-1.0))


def _ks_minimum_is_stable(x: FloatArray, start: int, delta: float) -> bool:
    """Whether the KS-optimal xmin ``x[start]`` (untruncated fit over all of ``x``) remains
    the minimiser when every value of ``x`` moves by at most ``delta``.

    For a candidate x_j with exponent t_j = alpha_j - 1, P_j(x) = 1 - exp(-t_j z),
    z = ln(x / x_j): z moves by at most 2 delta / x_j, t_j by at most t_j^2 2 delta / x_j
    (the MLE t = n / sum z), and z exp(-t z) <= 1 / (e t), so the fitted CDF, hence D_j,
    moves by at most ``KS_SLACK * t_j * delta / x_j`` (first order; the empirical CDF does
    not move while no two values come within 2 delta, which the caller checks). Stable when
    every other candidate keeps D_j - slack_j > D_best + slack_best; decided with the
    branch-and-bound bounds of the fit itself, exactly for the candidates they do not rule
    out.
    """
    tail = _Tail(x)
    end = x.size
    u_end = int(np.searchsorted(tail.first, end))
    ks = np.arange(u_end - 1)
    cand = tail.first[ks].astype(np.int64)
    t = _mle_exponent(tail, cand, end, None)
    valid = np.isfinite(t) & (t > 0)
    cand, t = cand[valid], t[valid]
    best = np.flatnonzero(cand == start)
    if best.size != 1:
        return False
    b = int(best[0])
    slack = KS_SLACK * t * delta / x[cand]
    d_best = float(_exact_ks(tail, cand[b : b + 1], t[b : b + 1], end, None)[0])
    limit = d_best + slack[b] + slack  # candidate j could win if its D_j <= limit_j
    alive = np.delete(np.arange(cand.size), b)
    step = int(math.sqrt(max(u_end - 1, 1)))
    while step >= 4 and alive.size > 256:
        lower = _ks_lower_bound(tail, cand[alive], t[alive], end, None, step)
        alive = alive[lower <= limit[alive]]
        step //= 4
    d = _exact_ks(tail, cand[alive], t[alive], end, None)
    return bool(np.all(d > limit[alive]))


def _fit_fixed(tail_values: FloatArray, xmin: float, xmax: float | None) -> PowerLawFit:
    """MLE fit of ``tail_values`` (sorted, all >= xmin, <= xmax) with a given ``xmin``."""
    n = int(tail_values.size)
    if n < 2 or tail_values[0] == tail_values[-1] == xmin:
        return _failed(f"tail above xmin={xmin:.6g} has fewer than 2 distinct values")
    mean_log = float(np.mean(np.log1p((tail_values - xmin) / xmin)))
    if xmax is None:
        t = 1.0 / mean_log if mean_log > 0 else math.inf
    else:
        log_r = math.log(xmax / xmin)
        t = float(_solve_truncated(np.array([mean_log / log_r]))[0]) / log_r
    if not math.isfinite(t):
        return _failed(f"degenerate tail above xmin={xmin:.6g}")
    alpha = 1.0 + t
    return PowerLawFit(
        alpha=alpha,
        xmin=float(xmin),
        xmax=float(tail_values[-1] if xmax is None else xmax),
        D=ks_distance(tail_values, alpha, xmin, xmax),
        sigma=(alpha - 1.0) / math.sqrt(n),
        n_tail=n,
    )


def _fit_ks(
    tail: _Tail, end: int, xmax: float | None, lo: float = -math.inf, hi: float = math.inf
) -> PowerLawFit:
    """KS-optimal xmin among distinct values in [lo, hi) below the largest value in x[:end]."""
    log_xmax = None if xmax is None else float(tail.rel_log(xmax))
    u_end = int(np.searchsorted(tail.first, end))
    ks = np.arange(u_end - 1)  # every distinct value but the largest
    vals = tail.u[ks]
    ks = ks[(vals >= lo) & (vals < hi)]
    if ks.size == 0:
        return _failed("no candidate xmin in the requested range")
    cand = tail.first[ks].astype(np.int64)
    t = _mle_exponent(tail, cand, end, log_xmax)
    # Untruncated, alpha must exceed 1 for a normalisable law; truncated at xmax, any finite
    # alpha is a proper density on [xmin, xmax] (no artificial alpha range).
    valid = np.isfinite(t) & ((t > 0) if log_xmax is None else True)
    if not valid.any():
        return _failed("no candidate xmin gives a valid exponent")
    cand, t, ks = cand[valid], t[valid], ks[valid]
    d = _ks_branch_and_bound(tail, cand, t, end, log_xmax, u_end - int(ks[0]))
    best = int(np.argmin(d))
    start = int(cand[best])
    # The search's exponents come from prefix sums (fast, ~1e-12 accurate); the reported fit
    # is recomputed directly on the chosen tail to full precision.
    return _fit_fixed(tail.x[start:end], float(tail.x[start]), xmax)


def _xmin_peak_window(x: FloatArray) -> tuple[float, float]:
    """xmin search window around the peak of the ESD histogram on a log10 scale.

    100 log10-spaced bins; the peak bin's left edge p (a linear value). Window
    [0.95 p, 1.5 p], both ends linear (WeightWatcher passes log10(0.95 p) as the lower
    end next to the linear 1.5 p, mixing scales; REFERENCES §1).
    """
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10.0 ** edges[int(np.argmax(counts))]
    return 0.95 * peak, 1.5 * peak


def fit_power_law(
    evals: ArrayLike,
    *,
    xmin: str | XminMethod | float = XminMethod.KS,
    xmax: float | None = None,
    fix_fingers: str | FixFingers | None = None,
    finger_threshold: float = 1.0,
    max_fingers: int = 10,
) -> PowerLawFit:
    """Fit a continuous power law p(x) ∝ x^-alpha to the tail of ``evals``.

    Parameters
    ----------
    evals: 1-D array of eigenvalues (any order, any real dtype). Values <= 1e-5 (numerical
        zeros) are dropped; NaN/Inf or fewer than two positive values give a failed fit.
    xmin: ``"ks"`` (Clauset et al., minimise the KS distance over every distinct value),
        ``"median"`` (Hill estimator, TempBalance) or a number (fixed cut-off; the tail is
        ``x >= xmin``).
    xmax: upper cut-off; values above it are dropped and alpha is the truncated power-law
        MLE (not the biased untruncated one WeightWatcher uses).
    fix_fingers: ``None``, ``"clip_xmax"`` (refit without the top k = 2..max_fingers-1
        values; accept the first alpha that drops by more than ``finger_threshold``; stop once
        alpha <= 2), or ``"xmin_peak"`` (search xmin in [0.95 p, 1.5 p] around the peak p of
        the log-scale histogram).

    Returns a frozen :class:`PowerLawFit`; never raises on bad data (status="failed").

    Example
    -------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).pareto(2.0, 5000) + 1.0   # alpha = 3
    >>> round(fit_power_law(x).alpha, 1)
    3.0
    """
    try:
        method: XminMethod | float = XminMethod(xmin) if isinstance(xmin, str) else float(xmin)
    except ValueError:
        raise ValueError(
            f"fit_power_law: xmin must be 'ks', 'median' or a number, got {xmin!r}"
        ) from None
    try:
        fingers = None if fix_fingers is None else FixFingers(fix_fingers)
    except ValueError:
        raise ValueError(
            "fit_power_law: fix_fingers must be None, 'clip_xmax' or 'xmin_peak'; "
            f"got {fix_fingers!r}"
        ) from None
    if isinstance(method, float) and not (math.isfinite(method) and method > 0):
        raise ValueError(f"fit_power_law: a fixed xmin must be a positive number, got {xmin!r}")
    if xmax is not None and not (math.isfinite(xmax) and xmax > 0):
        raise ValueError(f"fit_power_law: xmax must be a positive number, got {xmax!r}")

    x, reason = _clean(evals)
    if x is None:
        return _failed(reason)
    end = x.size if xmax is None else int(np.searchsorted(x, xmax, side="right"))
    tail = _Tail(x)
    if end < 2:
        return _failed(f"fewer than 2 eigenvalues below xmax={xmax:g}")

    if fingers is FixFingers.CLIP_XMAX:
        return _fit_clipped(x, method, xmax, finger_threshold, max_fingers)
    if fingers is FixFingers.XMIN_PEAK:
        lo, hi = _xmin_peak_window(x[:end])
        return _fit_ks(tail, end, xmax, lo, hi)
    if method is XminMethod.KS:
        return _fit_ks(tail, end, xmax)
    if method is XminMethod.MEDIAN:
        # Hill: the tail is the top n - n//2 values by index, ties at the median included.
        return _fit_fixed(x[end // 2 : end], float(x[end // 2]), xmax)
    assert isinstance(method, float)
    start = int(np.searchsorted(x, method, side="left"))
    if start >= end:
        return _failed(f"no eigenvalue >= xmin={method:g}")
    return _fit_fixed(x[start:end], method, xmax)


def _fit_clipped(
    x: FloatArray,
    method: XminMethod | float,
    xmax: float | None,
    finger_threshold: float,
    max_fingers: int,
) -> PowerLawFit:
    """WeightWatcher's 'clip_xmax': drop the top k values while alpha falls by > threshold."""
    first = fit_power_law(x, xmin=method, xmax=xmax)
    if not first.ok:
        return first
    for k in range(2, max_fingers):
        if x.size - k < 2:
            break
        clipped = x[:-k]
        fit = fit_power_law(clipped, xmin=method, xmax=None if xmax is None else clipped[-1])
        if not fit.ok:
            break
        if fit.alpha + finger_threshold < first.alpha:
            return replace(fit, num_fingers=k)
        if fit.alpha <= 2.0:
            break
    return first
