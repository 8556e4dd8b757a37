"""Heavy tails from SGD on linear regression, and the prunability of stable layers (source 003).

**SGD on least squares** (source 003 §3.1 citing [GŞZ21]; REFERENCES §8). One data set:
A (n, d) with iid N(0, 1) entries, x0 ~ N(0, 9 I_d), y = A x0 + 3 N(0, I_n), and its OLS
solution x* = argmin ||A x - y||. Each of ``runs`` independent runs starts from
x_0 ~ 5 N(0, I_d) and takes ``steps`` SGD steps on the loss (1 / 2b) sum_{i in S_k} (a_i^T x
- y_i)^2 with a batch S_k of b distinct rows drawn uniformly (without replacement within the
batch, afresh every step; [GŞZ21]'s code takes the first b of a permutation):

    x_{k+1} = x_k - (eta / b) A_S^T (A_S x_k - y_S)                       (003 eq. 2.2)

and the iterates of the second half are averaged. With e = x - x*, the step is the random
affine recursion e_{k+1} = M_k e_k + q_k, M_k = I - (eta / b) A_S^T A_S, whose stationary law
(when it exists) has power-law tails ([GŞZ21], Kesten's theorem); 003 §3.1: larger eta / b
gives heavier tails. The tail index is measured as 003 App. A.4 and [GŞZ21]'s code do: the
*multivariate* MMO estimator (MMO15 Cor. 2.4, :func:`tailwise.tails.mmo_alpha` with
``multivariate=True``) on the ``runs`` d-vectors of averaged iterates minus x*, already
centred by x* (``center=False``). Gaussian rows are rotation invariant, so every direction of
e has the same tail index and the Euclidean norm carries it; a per-coordinate estimate would
repeat d correlated univariate estimates of the same number.

**Theory** (isotropic Gaussian rows, the online limit n -> inf). By rotation invariance
||M u|| has the law of ||M e_1|| for every unit u, and

    ||M e_1||^2 = (1 - c X)^2 + c^2 X Y,   c = eta / b,  X ~ chi2_b,  Y ~ chi2_(d-1)

independent (X = sum_i a_i1^2; the other d - 1 coordinates of A_S^T A_S e_1 are, given X,
iid N(0, X)). Hence, exactly: the top Lyapunov exponent of the products M_k ... M_1 is
gamma = E ln ||M e_1|| (:func:`lyapunov_exponent`); for gamma < 0 the recursion has a
stationary law whose tail index alpha is the positive root of h(alpha) = 1 with
h(s) = E ||M e_1||^s (:func:`contraction_moment`, :func:`tail_index_theory`; [GŞZ21] Thm. 2
for Gaussian data); for gamma > 0 the iterates grow like exp(gamma k) and there is no
stationary law. h(2) = 1 - 2 eta + eta^2 (b + d + 1) / b in closed form, so the variance is
finite iff eta < 2 b / (b + d + 1). The averaged iterate has the same tail index (an
alpha-stable limit, [GŞZ21] Cor. 11), and MMO reads any alpha >= 2 as about 2.

A finding to keep in mind: with d = 100, the stationary heavy-tailed band lies between
eta = 2b / (b + d + 1) (alpha = 2) and gamma = 0, a sliver (b = 5: eta in (0.0943, 0.0946));
on the default grid every cell is either light-tailed (alpha_theory > 16) or divergent
(gamma > 0). The alpha < 2 that the grid shows at large eta / b -- as [GŞZ21]'s figure -- is
measured on runs growing geometrically at rate gamma (the simulated growth rate matches the
exact gamma), not on a stationary law; :func:`sweep` flags those cells ``diverged``. With
small d the band is wide (d = 1, b = 1: eta in (0.67, 1.2)) and the simulated alpha matches
:func:`tail_index_theory` (tested).

**Prunability of synthetic stable layers** (003 Fig. 3, App. A.6.1 Fig. 8):
:func:`prunability_curve` gives the share of entries best-k-term magnitude pruning keeps at a
fixed relative l2 error (:func:`tailwise.tails.keep_ratio_for_error`, median-centred as 003)
for layers of :func:`tailwise.tails.synthetic_layers`. For Gaussian entries the large-N keep
ratio is closed-form (``gaussian_keep_ratio``), and a W3 (``"elliptic_matrix"``) layer is a
scaled Gaussian matrix, so its keep ratio is that value whatever alpha.

**Network version** (003 Fig. 1: mean layer tail index vs eta / b): the per-layer MMO tail
indices of a trained model are :func:`tailwise.tails.analyze_tails`'s ``alpha_mmo_rows``
(multivariate, 003's estimator) and ``alpha_mmo`` columns; 003 averages them over layers.

[GŞZ21] Gürbüzbalaban, Şimşekli, Zhu, "The heavy-tail phenomenon in SGD", ICML 2021.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import integrate, optimize, special, stats

from tailwise._errors import UsageError
from tailwise._progress import progress_bar
from tailwise._seeds import derive_seed
from tailwise._threads import single_threaded
from tailwise.sims._result import SimulationResult
from tailwise.tails import keep_ratio_for_error, mmo_alpha, synthetic_layers
from tailwise.tails.stable import LayerStructure

__all__ = [
    "ALPHA_THEORY_MAX",
    "BATCH_SIZES",
    "ETAS",
    "LAYER_KINDS",
    "PRUNABILITY_ALPHAS",
    "PRUNABILITY_COLUMNS",
    "SWEEP_COLUMNS",
    "SGDTails",
    "contraction_moment",
    "gaussian_keep_ratio",
    "heavy_sgd_experiment",
    "linear_regression_sgd",
    "lyapunov_exponent",
    "prunability_curve",
    "stable_prunability_experiment",
    "sweep",
    "tail_index_theory",
]

FloatArray = NDArray[np.float64]

#: [GŞZ21]'s grid (REFERENCES §8): batch sizes and step sizes of the sweep.
BATCH_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 20)
ETAS: tuple[float, ...] = tuple(float(v) for v in np.linspace(0.02, 0.2, 10))
#: The three synthetic layer structures of 003 App. A.6.1 (W1, W2, W3).
LAYER_KINDS: tuple[str, ...] = tuple(kind.value for kind in LayerStructure)
#: Default tail indices of ``stable-prunability``.
PRUNABILITY_ALPHAS: tuple[float, ...] = tuple(float(v) for v in np.linspace(1.1, 2.0, 10))

#: :func:`tail_index_theory` reports ``inf`` above this (h(s) < 1 up to s = 16).
ALPHA_THEORY_MAX = 16.0
# A run whose |e| passes this is stopped (set to NaN) and counted as overflowed: float64
# products overflow near 1e308 and a divergent run grows by at most exp(0.7) per step here.
_OVERFLOW = 1e100
# Overflow is checked every this many steps (a max over the iterates is not free).
_OVERFLOW_CHECK_EVERY = 8
# Random half-samples of the runs for the standard error of alpha.
_HALF_SAMPLES = 16
# Gauss-Laguerre nodes for the inner chi-square expectation (over Y).
_INNER_NODES = 96
# A divergence is called when the mean growth rate exceeds this many standard errors (at
# stationarity the z-score of the growth rate stayed within +-3 over 16 seeded cells).
_GROWTH_Z = 5.0


# --------------------------------------------------------------------------- validation


def _positive(value: Any, name: str, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UsageError(f"{where}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _integer(value: Any, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError(f"{where}: seed must be an integer >= 0, got {value!r}")
    return int(value)


def _values(values: Any, name: str, where: str, check: Callable[[Any], Any]) -> list[Any]:
    items = [values] if isinstance(values, (int, float, np.integer, np.floating)) else values
    try:
        out = [check(v) for v in items]
    except TypeError:
        raise UsageError(f"{where}: {name} must be a sequence, got {values!r}") from None
    if not out:
        raise UsageError(f"{where}: {name} is empty")
    return out


# --------------------------------------------------------------------------- theory


def _chi2_nodes(dof: int, count: int) -> tuple[FloatArray, FloatArray]:
    """Nodes and weights with sum(w f(x)) ~ E f(X), X ~ chi2_dof (Gauss-Laguerre)."""
    x, w = special.roots_genlaguerre(count, dof / 2 - 1)
    return 2.0 * x, w / math.gamma(dof / 2)


def _expect_norm(
    func: Callable[[FloatArray], FloatArray], eta: float, batch_size: int, d: int
) -> float:
    """E func(||M e_1||^2) for M = I - (eta / b) A_S^T A_S (module docstring).

    Outer expectation over X ~ chi2_b by adaptive quadrature split at X = b / eta (where
    1 - c X vanishes and ln ||M e_1|| is singular for d = 1); inner over Y ~ chi2_(d-1) by
    Gauss-Laguerre (exact for polynomials of degree < 192, e.g. h(s) at even s).
    """
    c = eta / batch_size
    if d == 1:

        def inner(t: float) -> float:
            return float(func(np.array([(1.0 - c * t) ** 2]))[0])

    else:
        y, wy = _chi2_nodes(d - 1, _INNER_NODES)

        def inner(t: float) -> float:
            return float(func((1.0 - c * t) ** 2 + c * c * t * y) @ wy)

    half = batch_size / 2
    log_norm = half * math.log(2.0) + math.lgamma(half)

    def integrand(t: float) -> float:
        # chi2_b density (quad never evaluates the endpoint t = 0, where b = 1 diverges).
        density = math.exp((half - 1) * math.log(t) - t / 2 - log_norm) if t > 0 else 0.0
        return density * inner(t)

    split = 1.0 / c
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        low = integrate.quad(integrand, 0.0, split, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
        high = integrate.quad(integrand, split, np.inf, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
    return float(low + high)


def _theory_args(eta: float, batch_size: int, d: int, where: str) -> tuple[float, int, int]:
    return (
        _positive(eta, "eta", where),
        _integer(batch_size, "batch_size", where, 1),
        _integer(d, "d", where, 1),
    )


def contraction_moment(s: float, eta: float, batch_size: int, *, d: int = 100) -> float:
    """h(s) = E ||(I - (eta / b) A_S^T A_S) e_1||^s for b iid N(0, I_d) rows (exact).

    The moment function of [GŞZ21] Thm. 2 (module docstring): h(0) = 1, log-convex, and
    h(2) = 1 - 2 eta + eta^2 (b + d + 1) / b. ``s`` >= 0.

    >>> round(contraction_moment(2.0, 0.1, 5, d=100), 6)  # 1 - 0.2 + 0.01 * 106 / 5
    1.012
    """
    where = "contraction_moment"
    eta, batch_size, d = _theory_args(eta, batch_size, d, where)
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < math.inf:
        raise UsageError(f"{where}: s must be a finite number >= 0, got {s!r}")
    half = float(s) / 2
    return _expect_norm(lambda r2: r2**half, eta, batch_size, d)


def lyapunov_exponent(eta: float, batch_size: int, *, d: int = 100) -> float:
    """Top Lyapunov exponent gamma = E ln ||(I - (eta / b) A_S^T A_S) e_1|| of SGD's products.

    Exact for isotropic Gaussian rows (module docstring): the error e = x - x* of SGD on least
    squares grows like exp(gamma k) when gamma > 0 (divergence) and has a stationary law when
    gamma < 0. Per step, natural log.

    >>> lyapunov_exponent(0.2, 1) > 0 > lyapunov_exponent(0.02, 2)  # 003's grid, d = 100
    True
    """
    eta, batch_size, d = _theory_args(eta, batch_size, d, "lyapunov_exponent")
    return _expect_norm(lambda r2: 0.5 * np.log(r2), eta, batch_size, d)


def tail_index_theory(
    eta: float, batch_size: int, *, d: int = 100, max_alpha: float = ALPHA_THEORY_MAX
) -> float:
    """Tail index of SGD's stationary law on Gaussian least squares: the root of h(alpha) = 1.

    [GŞZ21] Thm. 2 (Kesten): with h = :func:`contraction_moment`, alpha > 0 solves
    h(alpha) = 1 when :func:`lyapunov_exponent` < 0. Returns ``nan`` when gamma >= 0 (no
    stationary law: the iterates diverge) and ``inf`` when h(max_alpha) < 1 (tails lighter
    than that; MMO then reads about 2).

    >>> round(tail_index_theory(0.85, 1, d=1), 2)  # the heavy-tailed band of d = 1
    1.41
    >>> tail_index_theory(0.02, 20), tail_index_theory(0.2, 1)
    (inf, nan)
    """
    where = "tail_index_theory"
    eta, batch_size, d = _theory_args(eta, batch_size, d, where)
    max_alpha = _positive(max_alpha, "max_alpha", where)
    if lyapunov_exponent(eta, batch_size, d=d) >= 0:
        return math.nan

    def log_h(s: float) -> float:
        return math.log(_expect_norm(lambda r2: r2 ** (s / 2), eta, batch_size, d))

    if log_h(max_alpha) < 0:
        return math.inf
    # h < 1 on (0, alpha) and > 1 after (log-convex, h(0) = 1, h'(0) = gamma < 0): bracket
    # the root from the left by halving until h < 1.
    low = max_alpha / 2
    while log_h(low) >= 0:
        low /= 2
        if low < 1e-8:
            return 0.0
    return float(optimize.brentq(log_h, low, max_alpha, xtol=1e-8, rtol=1e-10))


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class _Data:
    """One least-squares data set: features (n, d), targets (n,), OLS solution (d,)."""

    features: FloatArray
    targets: FloatArray
    ols: FloatArray


def _data(n: int, d: int, seed: int) -> _Data:
    """REFERENCES §8: A ~ N(0, 1), x0 ~ N(0, 9 I), y = A x0 + 3 N(0, I); x* by lstsq."""
    rng = np.random.default_rng((seed, 0))
    features = rng.standard_normal((n, d))
    truth = 3.0 * rng.standard_normal(d)
    targets = features @ truth + 3.0 * rng.standard_normal(n)
    ols = np.asarray(np.linalg.lstsq(features, targets, rcond=None)[0], dtype=np.float64)
    return _Data(features, targets, ols)


def _batches(rng: np.random.Generator, n: int, b: int, runs: int) -> NDArray[np.int64]:
    """(runs, b) row indices, each row b distinct indices uniform over the b-subsets of n.

    Rejection: a row with a repeated index is redrawn whole, so the accepted rows are
    uniform over ordered distinct b-tuples (b << n: about b^2 / 2n of rows are redrawn).
    """
    idx = rng.integers(0, n, size=(runs, b))
    if b == 1:
        return idx
    while True:
        ordered = np.sort(idx, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        count = int(repeated.sum())
        if count == 0:
            return idx
        idx[repeated] = rng.integers(0, n, size=(count, b))


@dataclass(frozen=True)
class SGDTails:
    """Result of :func:`linear_regression_sgd`: one (eta, b) cell of [GŞZ21]'s experiment.

    Attributes:
        eta, batch_size, n, d, steps, runs: the settings.
        deviations: (runs, d) averaged iterates (second half) minus the OLS solution; the rows
            of overflowed runs are NaN.
        alpha: multivariate MMO tail index of ``deviations`` (uncapped); NaN when a run
            overflowed (the cell diverged: see ``diverged``).
        alpha_se: standard error of ``alpha``: the SD of its estimate over 16 random halves
            of the runs (for a sqrt(N)-consistent estimate the half-sample spread around the
            full estimate equals the full estimate's SD).
        growth_rate, growth_rate_se: mean over the finite runs of
            (ln|e_steps| - ln|e_(steps/2)|) / (steps - steps/2), and its standard error; the
            simulated counterpart of ``lyapunov`` when it is > 0, about 0 at stationarity.
        overflowed_runs: runs stopped because |e| passed 1e100.
        diverged: ``overflowed_runs > 0`` or ``growth_rate > 5 growth_rate_se``: the
            iterates grow geometrically; ``alpha`` then describes a transient, not a law.
        lyapunov, alpha_theory: :func:`lyapunov_exponent` and :func:`tail_index_theory` at
            (eta, b, d) (online Gaussian limit).
    """

    eta: float
    batch_size: int
    n: int
    d: int
    steps: int
    runs: int
    deviations: FloatArray = field(repr=False)
    alpha: float
    alpha_se: float
    growth_rate: float
    growth_rate_se: float
    overflowed_runs: int
    diverged: bool
    lyapunov: float
    alpha_theory: float

    @property
    def ratio(self) -> float:
        """eta / b, the ratio that sets the tails (003 §3.1)."""
        return self.eta / self.batch_size

    def row(self) -> dict[str, Any]:
        """The :func:`sweep` table row of this cell (:data:`SWEEP_COLUMNS`)."""
        low, high = _interval(self.alpha, self.alpha_se)
        return {
            "eta": self.eta,
            "batch_size": self.batch_size,
            "ratio": self.ratio,
            "alpha": self.alpha,
            "alpha_se": self.alpha_se,
            "alpha_low": low,
            "alpha_high": high,
            "alpha_theory": self.alpha_theory,
            "growth_rate": self.growth_rate,
            "growth_rate_se": self.growth_rate_se,
            "lyapunov": self.lyapunov,
            "overflowed_runs": self.overflowed_runs,
            "diverged": self.diverged,
            "diverges_theory": bool(self.lyapunov >= 0),
            "runs": self.runs,
            "steps": self.steps,
        }


#: Columns of the :func:`sweep` table (alpha_low / alpha_high: alpha -/+ 1.96 alpha_se).
SWEEP_COLUMNS: tuple[str, ...] = (
    "eta",
    "batch_size",
    "ratio",
    "alpha",
    "alpha_se",
    "alpha_low",
    "alpha_high",
    "alpha_theory",
    "growth_rate",
    "growth_rate_se",
    "lyapunov",
    "overflowed_runs",
    "diverged",
    "diverges_theory",
    "runs",
    "steps",
)


def _interval(value: float, se: float) -> tuple[float, float]:
    if not (math.isfinite(value) and math.isfinite(se)):
        return math.nan, math.nan
    return value - 1.96 * se, value + 1.96 * se


def _sgd(
    data: _Data, eta: float, b: int, runs: int, steps: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    """All runs of one cell at once: (averaged iterates - x*, ln|e| at steps/2 and at the end,
    overflowed mask). Iterates are (runs, d); each step gathers the (runs, b, d) batch rows."""
    features, targets = data.features, data.targets
    n, d = features.shape
    x = 5.0 * rng.standard_normal((runs, d))
    burn = steps // 2
    total = np.zeros((runs, d))
    log_mid = np.full(runs, np.nan)
    overflowed = np.zeros(runs, dtype=bool)
    scale = eta / b
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(steps):
            idx = _batches(rng, n, b, runs)
            rows = np.take(features, idx, axis=0)  # (runs, b, d)
            residual = np.einsum("rbd,rd->rb", rows, x) - targets[idx]
            x = x - scale * np.einsum("rbd,rb->rd", rows, residual)
            if k % _OVERFLOW_CHECK_EVERY == 0 or k == steps - 1:
                big = ~(np.abs(x).max(axis=1) < _OVERFLOW)  # NaN rows count as big
                fresh = big & ~overflowed
                if fresh.any():
                    overflowed |= fresh
                    x[fresh] = np.nan
                    if overflowed.all():
                        break
            if k >= burn:
                total += x
            if k == burn - 1:
                log_mid = np.log(np.linalg.norm(x - data.ols, axis=1))
        log_end = np.log(np.linalg.norm(x - data.ols, axis=1))
    deviations = total / (steps - burn) - data.ols
    deviations[overflowed] = np.nan
    return deviations, log_mid, log_end, overflowed


def _alpha(deviations: FloatArray, rng: np.random.Generator) -> tuple[float, float]:
    """Multivariate MMO alpha of the rows and its half-sampling standard error."""
    runs = deviations.shape[0]
    alpha = mmo_alpha(deviations, multivariate=True, center=False)
    halves = [
        mmo_alpha(deviations[rng.permutation(runs)[: runs // 2]], multivariate=True, center=False)
        for _ in range(_HALF_SAMPLES)
    ]
    spread = float(np.std(halves, ddof=1)) if np.all(np.isfinite(halves)) else math.nan
    return alpha, spread


def _cell(data: _Data, eta: float, b: int, runs: int, steps: int, seed: int) -> SGDTails:
    n, d = data.features.shape
    rng = np.random.default_rng((seed, 1))
    deviations, log_mid, log_end, overflowed = _sgd(data, eta, b, runs, steps, rng)
    growth = (log_end - log_mid) / (steps - steps // 2)
    finite = growth[np.isfinite(growth)]
    if finite.size >= 2:
        growth_rate = float(finite.mean())
        growth_se = float(finite.std(ddof=1) / math.sqrt(finite.size))
    else:
        growth_rate = growth_se = math.nan
    count = int(overflowed.sum())
    if count:
        alpha = alpha_se = math.nan
    else:
        alpha, alpha_se = _alpha(deviations, np.random.default_rng((seed, 2)))
    diverged = count > 0 or bool(growth_rate > _GROWTH_Z * growth_se)
    return SGDTails(
        eta=eta,
        batch_size=b,
        n=n,
        d=d,
        steps=steps,
        runs=runs,
        deviations=deviations,
        alpha=alpha,
        alpha_se=alpha_se,
        growth_rate=growth_rate,
        growth_rate_se=growth_se,
        overflowed_runs=count,
        diverged=diverged,
        lyapunov=lyapunov_exponent(eta, b, d=d),
        alpha_theory=tail_index_theory(eta, b, d=d),
    )


def _sgd_options(
    n: Any, d: Any, steps: Any, runs: Any, seed: Any, where: str
) -> tuple[int, int, int, int, int]:
    n = _integer(n, "n", where, 2)
    d = _integer(d, "d", where, 1)
    if n < d:
        raise UsageError(f"{where}: n must be >= d for an OLS solution, got n={n}, d={d}")
    return (
        n,
        d,
        _integer(steps, "steps", where, 2),
        _integer(runs, "runs", where, 8),
        _seed(seed, where),
    )


def linear_regression_sgd(
    eta: float,
    batch_size: int,
    *,
    n: int = 10_000,
    d: int = 100,
    steps: int = 1000,
    runs: int = 1600,
    seed: int = 0,
) -> SGDTails:
    """SGD on Gaussian least squares, ``runs`` runs at once, and the tail index of its iterates.

    REFERENCES §8 / [GŞZ21]: one data set (n, d) from ``seed`` shared by the runs; each run
    from 5 N(0, I) takes ``steps`` steps x <- x - (eta / b) A_S^T (A_S x - y_S) on batches of
    b = ``batch_size`` distinct rows, and averages its iterates over the second half. All
    runs are one (runs, d) numpy computation. Returns :class:`SGDTails`: the (runs, d)
    deviations from the OLS solution, their multivariate MMO tail index (003 App. A.4) with
    a standard error, the growth rate of |e| next to the exact Lyapunov exponent, and the
    theory's tail index. Defaults: [GŞZ21]'s n, d, steps and 1600 runs (about 1 to 10 s
    per cell on one core, growing with b).

    Raises :class:`tailwise.UsageError` for a non-positive eta, b < 1, b > n, runs < 8, ...

    >>> cell = linear_regression_sgd(0.1, 20, n=500, d=10, steps=200, runs=64, seed=0)
    >>> cell.deviations.shape, cell.diverged, 1.5 < cell.alpha < 2.5
    ((64, 10), False, True)
    """
    where = "linear_regression_sgd"
    eta = _positive(eta, "eta", where)
    b = _integer(batch_size, "batch_size", where, 1)
    n, d, steps, runs, seed = _sgd_options(n, d, steps, runs, seed, where)
    if b > n:
        raise UsageError(f"{where}: batch_size must be <= n={n}, got {b}")
    # One thread: small memory-bound steps gain nothing from BLAS threads, and a fixed thread
    # count fixes the order of float sums (the same numbers on every machine).
    with single_threaded(blas=True):
        return _cell(_data(n, d, seed), eta, b, runs, steps, seed)


def sweep(
    etas: Sequence[float] = ETAS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    *,
    runs: int = 1600,
    seed: int = 0,
    steps: int = 1000,
    n: int = 10_000,
    d: int = 100,
    progress: bool = True,
) -> pd.DataFrame:
    """[GŞZ21]'s grid: :func:`linear_regression_sgd` for every (eta, b), one row per cell.

    Defaults: b in {1, 2, 3, 4, 5, 10, 20}, eta in linspace(0.02, 0.2, 10), 1600 runs of 1000
    steps (about 3 min on one core). Every cell uses the same data set and random stream
    (``seed``), so a row equals ``linear_regression_sgd(eta, b, seed=seed, ...)``.

    Columns (:data:`SWEEP_COLUMNS`): ``eta``, ``batch_size``, ``ratio`` (eta / b),
    ``alpha`` (multivariate MMO), ``alpha_se``, ``alpha_low`` / ``alpha_high`` (95 %
    interval), ``alpha_theory`` (:func:`tail_index_theory`: inf = lighter than 16, NaN =
    no stationary law), ``growth_rate`` / ``growth_rate_se`` (simulated per-step growth of
    ln|e| over the second half), ``lyapunov`` (its exact value when > 0), ``overflowed_runs``,
    ``diverged`` (simulation) and ``diverges_theory`` (lyapunov >= 0), ``runs``, ``steps``.
    A diverged cell is a row with its flag, never an exception: its alpha is NaN when a run
    overflowed, else the alpha of geometrically growing runs.

    >>> table = sweep([0.05, 0.2], [20], runs=32, steps=100, n=200, d=5, progress=False)
    >>> table[["eta", "batch_size", "diverged"]].values.tolist()
    [[0.05, 20, False], [0.2, 20, False]]
    """
    where = "sweep"
    eta_list = _values(etas, "etas", where, lambda v: _positive(v, "eta", where))
    b_list = _values(batch_sizes, "batch_sizes", where, lambda v: _integer(v, "b", where, 1))
    n, d, steps, runs, seed = _sgd_options(n, d, steps, runs, seed, where)
    if max(b_list) > n:
        raise UsageError(f"{where}: batch sizes must be <= n={n}, got {max(b_list)}")
    cells = [(b, eta) for b in b_list for eta in eta_list]
    with single_threaded(blas=True):  # as linear_regression_sgd
        data = _data(n, d, seed)
        rows = [
            _cell(data, eta, b, runs, steps, seed).row()
            for b, eta in progress_bar(
                cells, len(cells), progress, "heavy-sgd", lambda c: f"b={c[0]} eta={c[1]:.3g}"
            )
        ]
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


# --------------------------------------------------------------------------- prunability


def gaussian_keep_ratio(error: float = 0.1) -> float:
    """Large-N keep ratio of best-k-term pruning of iid Gaussian entries at relative l2 error.

    Keeping |Z| > t leaves the relative squared error E[Z^2; |Z| <= t] / E Z^2 =
    2 Phi(t) - 1 - 2 t phi(t); the keep ratio is P(|Z| > t) = 2 (1 - Phi(t)) at the t where
    that equals ``error``^2. The limit of an alpha = 2 layer of any kind, and of an
    ``"elliptic_matrix"`` layer (a scaled Gaussian matrix) for every alpha.

    >>> round(gaussian_keep_ratio(0.1), 4)
    0.7347
    """
    target = _positive(error, "error", "gaussian_keep_ratio")
    if target >= 1:
        return 0.0
    norm = stats.norm

    def left_share(t: float) -> float:
        return float(2 * norm.cdf(t) - 1 - 2 * t * norm.pdf(t)) - target**2

    t = optimize.brentq(left_share, 0.0, 40.0, xtol=1e-14)
    return float(2 * norm.sf(t))


def _kind(kind: Any, where: str) -> str:
    try:
        return LayerStructure(kind).value
    except ValueError:
        allowed = ", ".join(repr(k) for k in LAYER_KINDS)
        raise UsageError(f"{where}: kind must be one of {allowed}, got {kind!r}") from None


def _shape(shape: Any, where: str) -> tuple[int, int]:
    try:
        rows, cols = shape
    except (TypeError, ValueError):
        raise UsageError(f"{where}: shape must be (rows, cols), got {shape!r}") from None
    return _integer(rows, "shape rows", where, 2), _integer(cols, "shape cols", where, 2)


def _alpha_value(value: Any, where: str) -> float:
    alpha = _positive(value, "alpha", where)
    if alpha > 2:
        raise UsageError(f"{where}: alphas must be in (0, 2], got {value!r}")
    return alpha


#: Columns of the :func:`prunability_curve` table.
PRUNABILITY_COLUMNS: tuple[str, ...] = (
    "kind",
    "alpha",
    "keep_ratio",
    "keep_ratio_se",
    "keep_ratio_min",
    "keep_ratio_max",
    "gaussian_keep_ratio",
    "alpha_mmo",
    "seeds",
    "error",
)


def prunability_curve(
    alphas: Sequence[float],
    *,
    kind: str = "iid",
    error: float = 0.1,
    shape: tuple[int, int] = (500, 500),
    seeds: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7),
    estimate_alpha: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Keep ratio at a fixed relative l2 error vs alpha for synthetic stable layers (003 Fig. 8).

    For every alpha and seed: a ``shape`` layer ``synthetic_layers(alpha, shape, kind)``
    (``"iid"`` W1, ``"elliptic_columns"`` W2, ``"elliptic_matrix"`` W3; 003 App. A.6.1),
    then the smallest share of entries that best-k-term magnitude pruning must keep for a
    relative l2 error <= ``error`` (median-centred, :func:`tailwise.tails.keep_ratio_for_error`;
    003 Fig. 3 uses 0.1). One row per alpha (:data:`PRUNABILITY_COLUMNS`): the mean keep
    ratio over ``seeds``, its standard error, min and max, the Gaussian limit
    (:func:`gaussian_keep_ratio`), and with ``estimate_alpha`` the mean univariate MMO tail
    index of the entries (NaN otherwise). Each layer's seed is derived from the seed, the
    kind and alpha, so curves are reproducible point by point.

    >>> curve = prunability_curve([1.2, 2.0], shape=(100, 100), seeds=[0, 1], progress=False)
    >>> bool(curve.keep_ratio.iloc[0] < curve.keep_ratio.iloc[1])  # heavier keeps less
    True
    """
    where = "prunability_curve"
    alpha_list = _values(alphas, "alphas", where, lambda v: _alpha_value(v, where))
    structure = _kind(kind, where)
    target = _positive(error, "error", where)
    rows_cols = _shape(shape, where)
    seed_list = _values(seeds, "seeds", where, lambda v: _seed(v, where))
    reference = gaussian_keep_ratio(target)
    rows = []
    for alpha in progress_bar(alpha_list, len(alpha_list), progress, f"prune {structure}"):
        kept, tails = [], []
        for seed in seed_list:
            layer_seed = derive_seed(seed, f"{structure}:{alpha!r}")
            weights = synthetic_layers(alpha, rows_cols, structure, seed=layer_seed)
            kept.append(keep_ratio_for_error(weights, target))
            if estimate_alpha:
                tails.append(mmo_alpha(weights))
        values = np.asarray(kept)
        rows.append(
            {
                "kind": structure,
                "alpha": alpha,
                "keep_ratio": float(values.mean()),
                "keep_ratio_se": (
                    float(values.std(ddof=1) / math.sqrt(values.size))
                    if values.size > 1
                    else math.nan
                ),
                "keep_ratio_min": float(values.min()),
                "keep_ratio_max": float(values.max()),
                "gaussian_keep_ratio": reference,
                "alpha_mmo": float(np.mean(tails)) if tails else math.nan,
                "seeds": int(values.size),
                "error": target,
            }
        )
    return pd.DataFrame(rows, columns=list(PRUNABILITY_COLUMNS))


# --------------------------------------------------------------------------- experiments


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) < 3:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _sweep_summary(table: pd.DataFrame) -> dict[str, float | int | str]:
    finite = table[np.isfinite(table.alpha)].sort_values("ratio")
    rho = _spearman(finite.ratio.tolist(), finite.alpha.tolist())
    # The largest ratios: the top quarter (at least 2) of the cells with an alpha.
    top = finite.tail(max(2, len(finite) // 4))
    heavy = bool(len(top) and (top.alpha_high < 2).all())
    stationary = table[~table.diverged & np.isfinite(table.alpha)]
    rho_stationary = _spearman(stationary.ratio.tolist(), stationary.alpha.tolist())
    # Cells where no run overflowed: there the mean growth covers every run.
    growing = table[(table.lyapunov > 0) & (table.overflowed_runs == 0)]
    gap = (growing.growth_rate - growing.lyapunov).abs()
    agree = int((table.diverged == table.diverges_theory).sum())
    heavy_theory = table[~table.diverges_theory & (table.alpha_theory < 2)]
    return {
        "cells": len(table),
        "cells_with_alpha": len(finite),
        "spearman_alpha_ratio": rho,
        "verdict_monotone": (
            f"{_verdict(rho <= -0.8)}: alpha falls as eta / b grows "
            f"(Spearman {rho:.2f} <= -0.8 over {len(finite)} cells)"
        ),
        "alpha_largest_ratios": float(top.alpha.mean()) if len(top) else math.nan,
        "alpha_largest_ratios_max_high": float(top.alpha_high.max()) if len(top) else math.nan,
        "verdict_heavy": (
            f"{_verdict(heavy)}: alpha < 2 at the {len(top)} largest ratios "
            "(every 95 % upper bound below 2)"
        ),
        "diverged_cells": int(table.diverged.sum()),
        "diverged_cells_theory": int(table.diverges_theory.sum()),
        "divergence_agreement": f"{agree} of {len(table)} cells agree with lyapunov >= 0",
        "growth_minus_lyapunov_max_abs": float(gap.max()) if len(gap) else math.nan,
        "spearman_stationary": rho_stationary,
        "stationary_heavy_cells_theory": len(heavy_theory),
        "note": (
            f"{int(table.diverged.sum())} of {len(table)} cells diverge (simulated growth "
            "rate > 0, matching the exact Lyapunov exponent): their alpha < 2 is that of "
            "geometrically growing runs, not of a stationary law; "
            f"{len(heavy_theory)} cells have a stationary law with alpha_theory < 2"
        ),
    }


def _draw_sweep(table: pd.DataFrame) -> Callable[[Figure], None]:
    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        sizes = sorted(table.batch_size.unique())
        colors = {b: f"C{i % 10}" for i, b in enumerate(sizes)}
        for b in sizes:
            cells = table[table.batch_size == b]
            for diverged, marker_face in ((False, colors[b]), (True, "none")):
                part = cells[(cells.diverged == diverged) & np.isfinite(cells.alpha)]
                if part.empty:
                    continue
                left.errorbar(
                    part.ratio,
                    part.alpha,
                    yerr=1.96 * part.alpha_se.fillna(0),
                    fmt="o",
                    color=colors[b],
                    mfc=marker_face,
                    ms=4,
                    label=f"b={b}" if not diverged or cells.diverged.all() else None,
                )
            right.plot(cells.lyapunov, cells.growth_rate, "o", color=colors[b], ms=4)
        theory = table[np.isfinite(table.alpha_theory)]
        if len(theory):
            left.plot(theory.ratio, theory.alpha_theory, "kx", ms=6, label="theory (stationary)")
        left.axhline(2.0, color="0.6", lw=0.8, ls="--")
        left.set_xscale("log")
        left.set_xlabel("eta / b")
        left.set_ylabel("tail index alpha (MMO)")
        left.set_title("alpha vs eta / b (hollow: diverged)", fontsize=9)
        left.legend(fontsize=7)
        finite = table[np.isfinite(table.growth_rate)]
        if len(finite):
            low = float(min(finite.lyapunov.min(), finite.growth_rate.min(), 0.0))
            high = float(max(finite.lyapunov.max(), finite.growth_rate.max(), 0.0))
            right.plot([low, 0.0, high], [0.0, 0.0, max(high, 0.0)], color="0.5", lw=0.8)
        right.set_xlabel("Lyapunov exponent (exact)")
        right.set_ylabel("simulated growth rate of ln|e|")
        right.set_title("growth vs theory: max(gamma, 0)", fontsize=9)

    return draw


def heavy_sgd_experiment(
    *,
    seed: int = 0,
    progress: bool = True,
    full: bool = False,
    runs: int | None = None,
    steps: int = 1000,
    etas: Sequence[float] = ETAS,
    batch_sizes: Sequence[int] | None = None,
    n: int = 10_000,
    d: int = 100,
) -> SimulationResult:
    """``tailwise simulate heavy-sgd``: [GŞZ21]'s sweep, alpha vs eta / b (003 §3.1).

    Options: ``runs`` (default 400; ``full``: 1600), ``batch_sizes`` (default 1, 2, 5, 10,
    20; ``full``: all of :data:`BATCH_SIZES`), ``steps`` (1000), ``etas`` (linspace(0.02,
    0.2, 10)), ``n``, ``d``. Defaults take about 40 s on one core; ``full=True`` (the
    [GŞZ21] grid) about 3 min. Table: :func:`sweep`'s. Summary: the Spearman correlation
    of alpha and eta / b with its verdict (<= -0.8), alpha at the largest ratios (< 2), the
    diverged cells (simulation and theory) and the largest gap between the simulated growth
    rate and the exact Lyapunov exponent. Figure: alpha vs eta / b coloured by b (hollow:
    diverged) and the growth rates against the theory.

    >>> result = heavy_sgd_experiment(runs=32, steps=100, etas=[0.05, 0.1], batch_sizes=[10],
    ...                               n=200, d=5, progress=False)
    >>> result.name, len(result.table)
    ('heavy-sgd', 2)
    """
    chosen_runs = runs if runs is not None else (1600 if full else 400)
    chosen_b = (
        tuple(batch_sizes)
        if batch_sizes is not None
        else (BATCH_SIZES if full else (1, 2, 5, 10, 20))
    )
    table = sweep(
        etas, chosen_b, runs=chosen_runs, seed=seed, steps=steps, n=n, d=d, progress=progress
    )
    options = {
        "seed": seed,
        "full": full,
        "runs": chosen_runs,
        "steps": steps,
        "etas": [float(e) for e in etas],
        "batch_sizes": list(chosen_b),
        "n": n,
        "d": d,
    }
    return SimulationResult("heavy-sgd", table, _sweep_summary(table), _draw_sweep(table), options)


def _slope(curve: pd.DataFrame) -> tuple[float, float]:
    """Least-squares slope of keep ratio on alpha and its standard error (from the per-alpha
    standard errors of the means)."""
    x = curve.alpha.to_numpy()
    if x.size < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = float(weights @ curve.keep_ratio.to_numpy())
    se = float(np.sqrt((weights**2 * curve.keep_ratio_se.to_numpy() ** 2).sum()))
    return slope, se


def _advantage(curve: pd.DataFrame) -> tuple[float, float]:
    """Mean over alphas of (Gaussian keep ratio - keep ratio) and its standard error."""
    gap = curve.gaussian_keep_ratio - curve.keep_ratio
    se = float(np.sqrt((curve.keep_ratio_se**2).sum()) / len(curve))
    return float(gap.mean()), se


def _prunability_summary(table: pd.DataFrame) -> dict[str, float | int | str]:
    summary: dict[str, float | int | str] = {}
    advantages: dict[str, tuple[float, float]] = {}
    for kind, curve in table.groupby("kind", sort=False):
        slope, slope_se = _slope(curve)
        advantage, advantage_se = _advantage(curve)
        advantages[str(kind)] = (advantage, advantage_se)
        summary[f"slope_{kind}"] = slope
        summary[f"slope_{kind}_se"] = slope_se
        summary[f"advantage_{kind}"] = advantage
        summary[f"advantage_{kind}_se"] = advantage_se
    if "iid" in advantages:
        slope, se = float(summary["slope_iid"]), float(summary["slope_iid_se"])
        summary["verdict_iid"] = (
            f"{_verdict(slope > 4 * se)}: heavier tails keep less for iid entries "
            f"(slope of keep ratio on alpha {slope:.3f} +- {se:.3f} > 0)"
        )
    ordered = [k for k in LAYER_KINDS if k in advantages]
    if len(ordered) >= 2:
        pairs = list(itertools.pairwise(ordered))
        shrinks = all(
            advantages[a][0] - advantages[b][0] > 4 * math.hypot(advantages[a][1], advantages[b][1])
            for a, b in pairs
        )
        text = " > ".join(f"{k} {advantages[k][0]:.3f}" for k in ordered)
        summary["verdict_shrinks"] = (
            f"{_verdict(shrinks)}: the advantage (Gaussian keep ratio - keep ratio, mean over "
            f"alpha) shrinks as entries become dependent, each step > 4 SE: {text}"
        )
    if "elliptic_matrix" in advantages:
        value, se = advantages["elliptic_matrix"]
        summary["verdict_matrix_gaussian"] = (
            f"{_verdict(abs(value) <= max(4 * se, 0.01))}: elliptic_matrix keeps as much as "
            f"Gaussian entries whatever alpha (advantage {value:.4f} +- {se:.4f})"
        )
    return summary


def _draw_prunability(table: pd.DataFrame) -> Callable[[Figure], None]:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for i, (kind, curve) in enumerate(table.groupby("kind", sort=False)):
            ax.errorbar(
                curve.alpha,
                curve.keep_ratio,
                yerr=1.96 * curve.keep_ratio_se.fillna(0),
                fmt="o-",
                color=f"C{i}",
                ms=4,
                label=str(kind),
            )
        if len(table):
            ax.axhline(
                float(table.gaussian_keep_ratio.iloc[0]),
                color="0.5",
                lw=0.8,
                ls="--",
                label="Gaussian (theory)",
            )
            error = float(table.error.iloc[0])
            ax.set_title(f"share kept at relative l2 error {error:g} (003 Fig. 8)", fontsize=9)
        ax.set_xlabel("tail index alpha")
        ax.set_ylabel("keep ratio")
        ax.legend(fontsize=8)

    return draw


def stable_prunability_experiment(
    *,
    seed: int = 0,
    progress: bool = True,
    alphas: Sequence[float] = PRUNABILITY_ALPHAS,
    kinds: Sequence[str] = LAYER_KINDS,
    error: float = 0.1,
    shape: tuple[int, int] = (500, 500),
    seeds: int = 8,
) -> SimulationResult:
    """``tailwise simulate stable-prunability``: 003 Fig. 8, keep ratio vs alpha for W1-W3.

    Options: ``alphas`` (default linspace(1.1, 2.0, 10)), ``kinds`` (the three of
    :data:`LAYER_KINDS`), ``error`` (0.1), ``shape`` ((500, 500)), ``seeds`` (8 layers per
    point, seeds ``seed`` .. ``seed + seeds - 1``). About 10 s on one core. Table: the
    :func:`prunability_curve` rows of every kind. Summary: per kind the slope of the keep
    ratio on alpha and the advantage (Gaussian keep ratio - keep ratio, mean over alphas),
    each with a standard error; verdicts: heavier tails keep less for iid entries, the
    advantage shrinks iid > elliptic_columns > elliptic_matrix, and elliptic_matrix keeps as
    much as Gaussian entries. Figure: the curves on one axes with the Gaussian level.

    >>> result = stable_prunability_experiment(alphas=[1.2, 2.0], shape=(60, 60), seeds=2,
    ...                                        progress=False)
    >>> sorted(result.table.kind.unique())
    ['elliptic_columns', 'elliptic_matrix', 'iid']
    """
    where = "stable_prunability_experiment"
    count = _integer(seeds, "seeds", where, 2)
    first = _seed(seed, where)
    kind_list = _values(kinds, "kinds", where, lambda k: _kind(k, where))
    seed_list = list(range(first, first + count))
    curves = [
        prunability_curve(
            alphas, kind=kind, error=error, shape=shape, seeds=seed_list, progress=progress
        )
        for kind in kind_list
    ]
    table = pd.concat(curves, ignore_index=True)
    options = {
        "seed": first,
        "alphas": [float(a) for a in alphas],
        "kinds": kind_list,
        "error": float(error),
        "shape": list(shape),
        "seeds": count,
    }
    return SimulationResult(
        "stable-prunability",
        table,
        _prunability_summary(table),
        _draw_prunability(table),
        options,
    )
