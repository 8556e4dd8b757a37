"""Tests of the continuous power-law fitter (tailwise.spectral.powerlaw).

Oracles, from strongest to weakest:

* a brute-force Clauset-Shalizi-Newman fit written here (one loop over every candidate xmin,
  REFERENCES §1), which ``fit_power_law``'s branch-and-bound must reproduce to rounding;
* the ``powerlaw`` package (2.0.0) and the Clauset et al. (2009) reference data it ships,
  with the published exponents and cut-offs of REFERENCES §1;
* WeightWatcher 0.7.7's own fitter ``WWFit`` on untied data;
* statistical properties (recovery of a known exponent, invariances, truncation bias).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.optimize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from tailwise.spectral.powerlaw import (
    ZERO_THRESHOLD,
    PowerLawFit,
    fit_power_law,
    hill_alpha,
    ks_distance,
)

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------------------
# Brute-force oracle
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    alpha: float
    xmin: float
    D: float
    n_tail: int


def brute_force_candidates(values: FloatArray) -> list[Candidate]:
    """Every candidate fit of the Clauset et al. procedure, one loop per candidate xmin.

    Values <= ZERO_THRESHOLD are dropped (documented behaviour of ``fit_power_law``); the
    candidates are every distinct value but the largest; alpha = 1 + n / sum ln(x / xmin);
    D = max over the distinct tail values x of |P(x) - S(x)| with P(x) = 1 - (x/xmin)^(1-alpha)
    and S(x) the share of the tail strictly below x.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    x = x[x > ZERO_THRESHOLD]
    distinct, first = np.unique(x, return_index=True)
    out = []
    for k in range(distinct.size - 1):
        xmin = distinct[k]
        start = first[k]
        tail = x[start:]
        n = tail.size
        # ln(x / xmin) as log1p of the exactly computed relative excess: accurate even when
        # the tail spans only a few ulps (nearly degenerate spectra)
        log_ratio = np.log1p((tail - xmin) / xmin)
        alpha = 1.0 + n / np.sum(log_ratio)
        below = (first[k:] - start) / n
        cdf = -np.expm1((1.0 - alpha) * np.log1p((distinct[k:] - xmin) / xmin))
        out.append(Candidate(float(alpha), float(xmin), float(np.max(np.abs(cdf - below))), n))
    return out


def assert_matches_brute_force(values: FloatArray, fit: PowerLawFit) -> None:
    """fit_power_law's KS fit is the brute-force minimiser of D (first on exact ties).

    Two candidates whose D differ by a few ulps can swap places between two correct
    implementations, so when the winner is within 1e-12 of another candidate's D, any of the
    tied candidates is accepted (the minimum D itself must still agree).
    """
    candidates = brute_force_candidates(values)
    if not candidates:
        assert not fit.ok
        assert fit.reason
        return
    assert fit.ok, fit.reason
    best_d = min(c.D for c in candidates)
    assert_close(fit.D, best_d, rel=1e-10, abs_tol=1e-14)
    near = [c for c in candidates if c.D - best_d <= best_d * 1e-12 + 1e-15]
    match = [c for c in near if c.xmin == fit.xmin]
    assert match, f"xmin {fit.xmin} is not among the KS minimisers {[c.xmin for c in near]}"
    chosen = match[0]
    assert fit.alpha == pytest.approx(chosen.alpha, rel=1e-10)
    assert_close(fit.D, chosen.D, rel=1e-10, abs_tol=1e-14)
    assert fit.n_tail == chosen.n_tail
    assert fit.sigma == pytest.approx((chosen.alpha - 1) / math.sqrt(chosen.n_tail), rel=1e-10)
    assert fit.xmax == float(np.max(values))


def assert_close(got: float, expected: float, rel: float = 1e-10, abs_tol: float = 0.0) -> None:
    """got == expected within rel (and abs_tol); a function, as ruff reads `fit.D` as a constant."""
    np.testing.assert_allclose(got, expected, rtol=rel, atol=abs_tol)


def pareto(alpha: float, n: int, rng: np.random.Generator, xmin: float = 1.0) -> FloatArray:
    """Samples of p(x) ∝ x^-alpha on [xmin, inf) by inverse CDF."""
    return np.asarray(xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0)))


def truncated_pareto(
    alpha: float, n: int, xmin: float, xmax: float, rng: np.random.Generator
) -> FloatArray:
    """Samples of p(x) ∝ x^-alpha on [xmin, xmax] by inverse CDF.

    F(x) = (1 - (x/xmin)^-t) / (1 - r^-t) with t = alpha - 1, r = xmax / xmin, so
    x = xmin * (1 - u (1 - r^-t))^(-1/t).
    """
    t = alpha - 1.0
    u = rng.random(n)
    return np.asarray(xmin * (1.0 - u * (1.0 - (xmax / xmin) ** -t)) ** (-1.0 / t))


def heavy_tailed_evals(n: int, m: int, dof: float, seed: int) -> FloatArray:
    """Eigenvalues of W^T W for a Student-t(dof) matrix W of shape n x m (heavy-tailed ESD)."""
    w = np.random.default_rng(seed).standard_t(dof, size=(n, m))
    return np.asarray(np.linalg.eigvalsh(w.T @ w))


def mp_bulk_evals(n: int, m: int, seed: int) -> FloatArray:
    """Eigenvalues of W^T W for a Gaussian matrix (a Marchenko-Pastur bulk, no tail)."""
    w = np.random.default_rng(seed).standard_normal((n, m))
    return np.asarray(np.linalg.eigvalsh(w.T @ w))


# --------------------------------------------------------------------------------------
# 1. Brute-force parity
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["pareto2", "pareto3.5", "lognormal", "rounded", "student_t_esd", "mp_bulk", "tiny"],
)
def test_ks_fit_equals_brute_force_fixed_cases(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    values = {
        "pareto2": lambda: pareto(2.0, 3000, rng),
        "pareto3.5": lambda: pareto(3.5, 1500, rng, xmin=0.02),
        "lognormal": lambda: rng.lognormal(0.0, 1.5, 2000),
        # heavy ties: 1-decimal rounding of a heavy-tailed sample
        "rounded": lambda: np.round(pareto(2.5, 4000, rng), 1),
        "student_t_esd": lambda: heavy_tailed_evals(600, 400, 2.5, 1),
        "mp_bulk": lambda: mp_bulk_evals(500, 300, 2),
        "tiny": lambda: np.array([1.0, 2.0, 4.0]),
    }[name]()
    assert_matches_brute_force(values, fit_power_law(values))


def test_ks_fit_equals_brute_force_with_zeros_and_small_values() -> None:
    # rank-deficient ESD: exact zeros and numerical zeros (<= 1e-5) are not part of any tail
    rng = np.random.default_rng(5)
    values = np.concatenate([np.zeros(50), rng.uniform(0, 1e-5, 30), pareto(2.2, 500, rng)])
    fit = fit_power_law(values)
    assert_matches_brute_force(values, fit)
    assert fit.xmin > ZERO_THRESHOLD


@pytest.mark.parametrize("spread", [1e-6, 1e-9])
def test_ks_fit_equals_brute_force_nearly_degenerate(spread: float) -> None:
    # Nearly equal eigenvalues (an orthogonal matrix has all singular values 1 up to
    # rounding): ln(x / xmin) is tiny, and summing it as a difference of prefix sums of ln x
    # (which are ~ N ln x large) loses the digits. The data are resolved (thousands of
    # distinct values), so the exact fit is well defined.
    rng = np.random.default_rng(23)
    x = 1e6 * (1.0 + spread * rng.random(1000))
    assert np.unique(x).size > 800
    fit = fit_power_law(x)
    candidates = brute_force_candidates(x)
    best = min(candidates, key=lambda c: c.D)
    assert fit.xmin == best.xmin
    assert fit.alpha == pytest.approx(best.alpha, rel=1e-8)
    assert_close(fit.D, best.D, rel=1e-8)


def test_flat_spectrum_within_rounding_is_a_failed_fit() -> None:
    # Below a 1e-10 relative spread the differences are rounding noise (an orthogonal layer's
    # eigenvalues through the Gram route differ by ~1e-13): the fit fails instead of
    # reporting an "alpha" of 1e12 (or a negative one, as the prefix-sum formula did).
    rng = np.random.default_rng(23)
    fit = fit_power_law(1e6 * (1.0 + 1e-12 * rng.random(1000)))
    assert fit.status == "failed" and "equal within" in fit.reason


@st.composite
def spectra(draw: st.DrawFn) -> FloatArray:
    """Random 1-D samples: several laws, sizes 2..1500, optionally rounded (ties)."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.one_of(st.integers(2, 40), st.integers(41, 1500)))
    law = draw(st.sampled_from(["pareto", "lognormal", "exponential", "uniform", "esd"]))
    rng = np.random.default_rng(seed)
    if law == "pareto":
        x = pareto(draw(st.floats(1.2, 8.0)), n, rng, xmin=draw(st.floats(1e-3, 1e3)))
    elif law == "lognormal":
        x = rng.lognormal(draw(st.floats(-3, 3)), draw(st.floats(0.1, 3)), n)
    elif law == "exponential":
        x = rng.exponential(draw(st.floats(0.01, 100)), n)
    elif law == "uniform":
        x = rng.uniform(0.0, draw(st.floats(0.01, 100)), n)
    else:
        m = max(2, min(n, 200))
        w = rng.standard_t(draw(st.floats(1.5, 6.0)), size=(m + draw(st.integers(0, 200)), m))
        x = np.linalg.eigvalsh(w.T @ w)
    decimals = draw(st.one_of(st.none(), st.integers(0, 3)))
    if decimals is not None:
        x = np.round(x, decimals)
    return np.asarray(x, dtype=np.float64)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=spectra())
def test_ks_fit_equals_brute_force_random(values: FloatArray) -> None:
    assert_matches_brute_force(values, fit_power_law(values))


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(1e-4, 1e4, allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, 1.0, 2.0, 1e-6]),
        ),
        min_size=0,
        max_size=30,
    )
)
def test_ks_fit_equals_brute_force_small_lists(values: list[float]) -> None:
    # Small hand-made edge cases: exact ties, zeros, numerical zeros, two-value samples.
    x = np.asarray(values, dtype=np.float64)
    fit = fit_power_law(x)
    if np.unique(x[x > ZERO_THRESHOLD]).size < 2:
        assert not fit.ok and fit.reason
        assert math.isnan(fit.alpha)
    else:
        assert_matches_brute_force(x, fit)


# --------------------------------------------------------------------------------------
# 2. The powerlaw package and the Clauset et al. (2009) reference data
# --------------------------------------------------------------------------------------

# (name, scale, published alpha, published xmin in scaled units or None). Published values:
# REFERENCES §1 (Clauset, Shalizi & Newman 2009, Table 6.1); fires and quakes have none there.
CLAUSET_SETS = [
    ("blackouts", 1e-3, 2.27, 230.0),
    ("cities", 1e-3, 2.37, 52.46),
    ("fires", 1.0, None, None),
    ("flares", 1.0, 1.79, 323.0),
    ("quakes", 1.0, None, None),
    ("surnames", 1e-3, 2.20, 14.92),
]
SLOW_SETS = {"cities", "fires"}  # powerlaw.Fit takes 2-4 s on these (Python loop over xmin)


def clauset_data(name: str, scale: float) -> FloatArray:
    powerlaw = pytest.importorskip("powerlaw")
    # load_test_dataset returns a 1-D float64 array read by np.genfromtxt from the shipped
    # text file (raw values, no header, no NaN).
    raw = powerlaw.load_test_dataset(name)
    assert isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.dtype == np.float64
    assert np.isfinite(raw).all()
    x = raw * scale
    # Both filters are inert on these data: powerlaw drops values <= 0 (only when some value
    # is exactly 0), tailwise drops values <= 1e-5. Smallest scaled value is 1e-3 (cities).
    assert x.min() > ZERO_THRESHOLD
    return np.asarray(x)


def set_params(slow: set[str]) -> list[object]:
    return [
        pytest.param(*row, marks=pytest.mark.slow) if row[0] in slow else pytest.param(*row)
        for row in CLAUSET_SETS
    ]


def powerlaw_fit(x: FloatArray) -> object:
    """powerlaw.Fit with KS selection of xmin, its output and warnings silenced.

    parameter_ranges={'alpha': [1, None]}: powerlaw's default range (0, 3] would silently
    mark steeper candidates invalid (REFERENCES §1 defects).
    """
    powerlaw = pytest.importorskip("powerlaw")
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, xmin_distance="D", parameter_ranges={"alpha": [1, None]}, verbose=0)
        _ = fit.power_law  # fits the distribution while output is silenced
        return fit


@pytest.mark.parametrize(("name", "scale", "alpha_pub", "xmin_pub"), set_params(SLOW_SETS))
def test_clauset_data_matches_powerlaw_package(
    name: str, scale: float, alpha_pub: float | None, xmin_pub: float | None
) -> None:
    x = clauset_data(name, scale)
    fit = fit_power_law(x)
    reference = powerlaw_fit(x)
    distinct = np.unique(x)
    # powerlaw differs from tailwise in two ways, accounted for here:
    # (1) it never tries the second-largest distinct value as xmin (its search range excludes
    #     the maximum, then it drops the last unique value) -- tailwise and Clauset et al. do;
    # (2) it refits alpha numerically when the closed-form MLE is outside (1.5, 3]; the refit
    #     starts from the closed form, which is the maximum, so it stays there.
    tried = reference.xmin_fitting_results
    np.testing.assert_array_equal(tried["xmins"], distinct[:-2])
    assert tried["valid_fits"].all()
    brute = {c.xmin: c for c in brute_force_candidates(x)}
    assert set(brute) == set(distinct[:-1])
    np.testing.assert_allclose(tried["alphas"], [brute[v].alpha for v in distinct[:-2]], rtol=1e-9)
    np.testing.assert_allclose(tried["distances"], [brute[v].D for v in distinct[:-2]], rtol=1e-9)
    # so the fits agree whenever the optimum is not the second-largest value, as here
    assert fit.xmin < distinct[-2]
    assert fit.xmin == reference.xmin
    assert fit.alpha == pytest.approx(reference.power_law.alpha, rel=1e-9)
    assert_close(fit.D, reference.power_law.D, rel=1e-9)


@pytest.mark.parametrize(("name", "scale", "alpha_pub", "xmin_pub"), set_params(set()))
def test_clauset_data_matches_brute_force_and_publication(
    name: str, scale: float, alpha_pub: float | None, xmin_pub: float | None
) -> None:
    x = clauset_data(name, scale)
    fit = fit_power_law(x)
    assert_matches_brute_force(x, fit)
    if alpha_pub is not None:
        # published to 2 decimals (3 significant digits for xmin)
        assert round(fit.alpha, 2) == alpha_pub
        assert fit.xmin == pytest.approx(xmin_pub, rel=5e-3)


def test_no_runtime_warnings_on_reference_data() -> None:
    # A valid fit should not leak numpy overflow warnings to the user.
    x = clauset_data("fires", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit = fit_power_law(x)
    assert fit.ok


# --------------------------------------------------------------------------------------
# 3. WeightWatcher's fitter on untied data
# --------------------------------------------------------------------------------------


def ww_fit(x: FloatArray) -> tuple[float, float, float]:
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fit = ww_powerlaw.WWFit(x)
    return float(fit.alpha), float(fit.xmin), float(fit.D)


@pytest.mark.parametrize(
    ("n", "kind", "seed"),
    [(20, "pareto", 0), (57, "pareto", 1), (200, "esd", 2), (1500, "pareto", 3), (200, "mp", 4)],
)
def test_matches_weightwatcher_on_untied_data(n: int, kind: str, seed: int) -> None:
    # WWFit uses a different estimator below SMALL_N_CUTOFF = 20 values (a bias-corrected
    # alpha = 1 + (n - 1) / sum ln(x / xmin) and an xmin objective D - 0.868 / sqrt(n)),
    # so parity holds from 20 values on. Its empirical CDF is k/n, which equals tailwise's
    # "share strictly below" only when all values are distinct (hence untied data).
    rng = np.random.default_rng(seed)
    if kind == "pareto":
        x = pareto(2.5, n, rng)
    elif kind == "esd":
        x = heavy_tailed_evals(n + 100, n, 3.0, seed)
    else:
        x = mp_bulk_evals(2 * n, n, seed)
    assert np.unique(x).size == x.size and x.min() > ZERO_THRESHOLD
    fit = fit_power_law(x)
    alpha, xmin, d = ww_fit(x)
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert_close(fit.D, d, rel=1e-10)


# --------------------------------------------------------------------------------------
# 4. Statistical properties
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0, 4.0, 6.0])
def test_recovers_pareto_exponent(alpha: float) -> None:
    x = pareto(alpha, 5000, np.random.default_rng(int(alpha * 10)))
    known = fit_power_law(x, xmin=1.0)
    assert known.n_tail == 5000
    assert abs(known.alpha - alpha) < 4 * (alpha - 1) / math.sqrt(5000)
    ks = fit_power_law(x)
    assert ks.ok
    assert abs(ks.alpha - alpha) < 4 * ks.sigma
    assert ks.sigma == pytest.approx((ks.alpha - 1) / math.sqrt(ks.n_tail))


def test_order_invariance() -> None:
    rng = np.random.default_rng(11)
    x = np.round(heavy_tailed_evals(500, 300, 3.0, 11), 2)
    reference = fit_power_law(x)
    for _ in range(3):
        assert fit_power_law(rng.permutation(x)) == reference
    assert fit_power_law(x, xmin="median") == fit_power_law(x[::-1], xmin="median")


@pytest.mark.parametrize("c", [1e-3, 0.37, 7.3, 1e4])
def test_scale_invariance(c: float) -> None:
    x = pareto(2.5, 2000, np.random.default_rng(12))
    base = fit_power_law(x)
    scaled = fit_power_law(x * c)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-9)
    assert scaled.xmin == pytest.approx(base.xmin * c, rel=1e-12)
    assert scaled.n_tail == base.n_tail
    assert_close(scaled.D, base.D, rel=1e-9)
    median = fit_power_law(x * c, xmin="median")
    assert median.alpha == pytest.approx(fit_power_law(x, xmin="median").alpha, rel=1e-9)


def hill_by_hand(values: FloatArray) -> tuple[float, float, int]:
    """REFERENCES §1: sort ascending, i = n // 2, k = n - i,
    alpha = 1 + k / (sum_{j >= i} ln x_j - k ln x_i)."""
    x = np.sort(values)
    i = x.size // 2
    k = x.size - i
    return 1.0 + k / (np.sum(np.log(x[i:])) - k * np.log(x[i])), float(x[i]), k


@pytest.mark.parametrize("n", [3, 10, 11, 999, 1000])
def test_median_xmin_is_hill_estimator(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.lognormal(0.0, 2.0, n) if n > 3 else np.array([1.0, 3.0, 9.0])
    alpha, xmin, k = hill_by_hand(x)
    fit = fit_power_law(x, xmin="median")
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.xmin == xmin
    assert fit.n_tail == k
    assert hill_alpha(x) == pytest.approx(alpha, rel=1e-12)
    assert_close(fit.D, ks_distance(x, fit.alpha, fit.xmin), rel=1e-12)


def test_median_xmin_with_ties() -> None:
    x = np.round(pareto(2.0, 1001, np.random.default_rng(13)), 1)
    alpha, xmin, k = hill_by_hand(x)
    fit = fit_power_law(x, xmin="median")
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.n_tail == k
    assert fit.xmin == xmin


def test_hill_alpha_raises_without_two_positive_values() -> None:
    # The same failure as tailwise.tails.hill_tail_index: ValueError, never NaN.
    with pytest.raises(ValueError, match=r"^hill_alpha: no eigenvalues"):
        hill_alpha([])
    with pytest.raises(ValueError, match=r"^hill_alpha: fewer than 2 eigenvalues"):
        hill_alpha([0.0, 0.0, 5.0])
    with pytest.raises(ValueError, match=r"^hill_alpha: .*NaN or infinite"):
        hill_alpha([1.0, 2.0, math.nan])
    # two values: the "median tail" is the single top value, the formula is 1 + 1/0
    fit = fit_power_law([1.0, 3.0], xmin="median")
    assert fit.status == "failed" and fit.reason
    assert math.isnan(fit.alpha)
    with pytest.raises(ValueError, match=f"^hill_alpha: {re.escape(fit.reason)}$"):
        hill_alpha([1.0, 3.0])


def test_fixed_xmin_at_data_value() -> None:
    x = pareto(2.5, 3000, np.random.default_rng(14))
    xmin = float(np.sort(x)[1000])
    tail = x[x >= xmin]
    fit = fit_power_law(x, xmin=xmin)
    assert fit.xmin == xmin
    assert fit.n_tail == tail.size
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / xmin)), rel=1e-12)
    assert_close(fit.D, ks_distance(x, fit.alpha, xmin), rel=1e-12)


def test_fixed_xmin_between_data_values_uses_given_xmin() -> None:
    # REFERENCES §1 and powerlaw.Fit(xmin=...): the MLE for a fixed cut-off uses that cut-off,
    # alpha = 1 + n / sum ln(x / xmin) over the tail {x >= xmin}, whether or not xmin is a
    # data value (the textbook "known xmin" Pareto MLE).
    x = np.array([1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0])
    fit = fit_power_law(x, xmin=1.0)
    expected = 1 + x.size / np.sum(np.log(x / 1.0))
    assert fit.n_tail == x.size
    assert fit.xmin == 1.0
    assert fit.alpha == pytest.approx(expected, rel=1e-12)


def test_fixed_xmin_above_all_values_fails() -> None:
    fit = fit_power_law([1.0, 2.0, 3.0], xmin=10.0)
    assert fit.status == "failed" and "xmin" in fit.reason


def truncated_mle_by_root(tail: FloatArray, xmin: float, xmax: float) -> float:
    """Truncated power law MLE: root in alpha of the score of
    l(alpha) = n ln(alpha - 1) - n ln(xmin^(1-alpha) - xmax^(1-alpha)) - alpha sum ln x."""
    n = tail.size
    s = np.sum(np.log(tail))

    def score(alpha: float) -> float:
        t = alpha - 1.0
        a, b = xmin**-t, xmax**-t
        # d/dalpha of -n ln(a - b) = n (a ln xmin - b ln xmax) / (a - b)
        return n / t + n * (a * math.log(xmin) - b * math.log(xmax)) / (a - b) - s

    # A truncated law is normalisable for any alpha, so the root may lie below 1.
    return float(scipy.optimize.brentq(score, -29.0, 51.0, xtol=1e-14, rtol=1e-14))


def test_truncated_mle_recovers_alpha_where_untruncated_is_biased() -> None:
    alpha, xmin, xmax, n = 2.0, 1.0, 10.0, 20000
    x = truncated_pareto(alpha, n, xmin, xmax, np.random.default_rng(15))
    # Standard error of the truncated MLE from its Fisher information per sample,
    # 1/t^2 - (ln r)^2 r^-t / (1 - r^-t)^2 (t = alpha - 1, r = xmax / xmin): ~1.7 (alpha-1)/sqrt(n)
    t, log_r = alpha - 1.0, math.log(xmax / xmin)
    info = 1 / t**2 - log_r**2 * math.exp(-t * log_r) / (-math.expm1(-t * log_r)) ** 2
    sigma = 1.0 / math.sqrt(info * n)
    truncated = fit_power_law(x, xmin=xmin, xmax=xmax)
    untruncated = fit_power_law(x, xmin=xmin)
    assert abs(truncated.alpha - alpha) < 4 * sigma
    # Ignoring xmax (WeightWatcher) overestimates alpha: no sample lies beyond xmax, which the
    # untruncated law reads as a steeper tail. Expected: 1 + 1 / E[ln x] = 2.34 here.
    assert untruncated.alpha - alpha > 0.25
    assert untruncated.alpha - alpha > 20 * sigma
    # and the bisection solves the likelihood equation exactly
    tail = x[x >= truncated.xmin]
    assert truncated.alpha == pytest.approx(
        truncated_mle_by_root(tail, truncated.xmin, xmax), rel=1e-10
    )


def test_truncated_fit_reports_the_cutoff_and_its_ks_distance() -> None:
    # PowerLawFit.xmax is the tail's upper bound; with xmax given, the fitted (normalised)
    # CDF lives on [xmin, xmax], so xmax is the given cut-off, and ks_distance with the same
    # xmax reproduces D.
    xmax = 100.0
    x = truncated_pareto(2.0, 3000, 1.0, xmax, np.random.default_rng(16))
    fit = fit_power_law(x, xmax=xmax)
    assert fit.ok
    assert_close(fit.D, ks_distance(x, fit.alpha, fit.xmin, xmax), rel=1e-10)
    assert fit.xmax == xmax


def test_truncated_ks_fit_drops_values_above_xmax() -> None:
    x = pareto(2.5, 3000, np.random.default_rng(17))
    xmax = float(np.quantile(x, 0.99))
    fit = fit_power_law(x, xmax=xmax)
    assert fit.n_tail == int(np.sum((x >= fit.xmin) & (x <= xmax)))
    assert fit.alpha == pytest.approx(
        truncated_mle_by_root(x[(x >= fit.xmin) & (x <= xmax)], fit.xmin, xmax), rel=1e-10
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_truncated_ks_fit_equals_brute_force(seed: int) -> None:
    # xmin="ks" with xmax: every candidate's alpha is the truncated MLE (root of the score)
    # and its D is measured against the CDF normalised on [xmin, xmax].
    rng = np.random.default_rng(100 + seed)
    x = np.concatenate([rng.exponential(1.0, 150), 1.0 + truncated_pareto(2.5, 250, 1, 50, rng)])
    xmax = 40.0
    kept = np.sort(x[x <= xmax])
    best: tuple[float, float, float] | None = None
    for xmin in np.unique(kept)[:-1]:
        tail = kept[kept >= xmin]
        alpha = truncated_mle_by_root(tail, xmin, xmax)
        d = ks_distance(kept, alpha, xmin, xmax)
        if best is None or d < best[2]:
            best = (alpha, float(xmin), d)
    assert best is not None
    fit = fit_power_law(x, xmax=xmax)
    assert fit.xmin == best[1]
    assert fit.alpha == pytest.approx(best[0], rel=1e-9)
    assert_close(fit.D, best[2], rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_distance_agrees_with_fit(seed: int) -> None:
    x = np.round(heavy_tailed_evals(400, 250, 2.5, seed), 3)
    fit = fit_power_law(x)
    assert ks_distance(x, fit.alpha, fit.xmin) == pytest.approx(fit.D, rel=1e-12)


def test_ks_distance_by_hand() -> None:
    x = np.array([1.0, 2.0, 2.0, 4.0])
    alpha = 2.0
    # distinct values 1, 2, 4: S = 0, 1/4, 3/4; P = 0, 1/2, 3/4 -> D = 1/4
    assert ks_distance(x, alpha, 1.0) == pytest.approx(0.25)
    assert math.isnan(ks_distance(x, alpha, 4.0))  # one value in the tail


def clip_xmax_by_hand(x: FloatArray, threshold: float = 1.0, max_fingers: int = 10) -> tuple:
    """WeightWatcher's rule (REFERENCES §1): refit without the top k values, k = 2..9; accept
    the first fit whose alpha drops by more than `threshold`; stop once alpha <= 2."""
    x = np.sort(x)
    first = fit_power_law(x)
    for k in range(2, max_fingers):
        fit = fit_power_law(x[:-k])
        if fit.alpha + threshold < first.alpha:
            return fit.alpha, fit.xmin, k
        if fit.alpha <= 2.0:
            break
    return first.alpha, first.xmin, 0


def finger_spectrum(seed: int) -> FloatArray:
    """A Marchenko-Pastur bulk with a 'finger': 3 nearly equal eigenvalues 10% beyond the
    bulk edge. The KS fit then picks a short top tail with a spuriously large alpha."""
    bulk = mp_bulk_evals(1000, 300, seed)
    return np.concatenate([bulk, bulk.max() * np.array([1.10, 1.111, 1.122])])


@pytest.mark.parametrize("seed", [0, 2])
def test_clip_xmax_removes_fingers(seed: int) -> None:
    x = finger_spectrum(seed)
    plain = fit_power_law(x)
    fixed = fit_power_law(x, fix_fingers="clip_xmax")
    assert plain.alpha > 10
    assert fixed.alpha < plain.alpha - 1.0
    assert fixed.num_fingers >= 1
    assert (fixed.alpha, fixed.xmin, fixed.num_fingers) == pytest.approx(clip_xmax_by_hand(x))
    assert fixed.xmax < x.max()


def test_clip_xmax_keeps_fit_when_outliers_lower_alpha() -> None:
    # Three huge outliers make the tail look heavier (lower alpha); removing them raises alpha,
    # which WeightWatcher's rule never accepts: the unclipped fit is returned.
    bulk = heavy_tailed_evals(600, 300, 3.0, 18)
    x = np.concatenate([bulk, bulk.max() * np.array([10.0, 20.0, 30.0])])
    plain = fit_power_law(x)
    fixed = fit_power_law(x, fix_fingers="clip_xmax")
    assert fixed == plain
    assert fixed.num_fingers == 0


def test_clip_xmax_on_clean_power_law_changes_nothing() -> None:
    x = pareto(2.5, 2000, np.random.default_rng(19))
    assert fit_power_law(x, fix_fingers="clip_xmax") == fit_power_law(x)


def histogram_peak(x: FloatArray) -> float:
    """Left edge (linear scale) of the most populated of 100 log10-spaced bins."""
    counts, edges = np.histogram(np.log10(x), bins=100)
    return float(10.0 ** edges[int(np.argmax(counts))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xmin_peak_searches_near_histogram_peak(seed: int) -> None:
    x = heavy_tailed_evals(800, 400, 3.0, seed)
    peak = histogram_peak(x)
    fit = fit_power_law(x, fix_fingers="xmin_peak")
    assert fit.ok
    assert 0.95 * peak <= fit.xmin <= 1.5 * peak
    # and it is the KS minimiser within that window
    window = [c for c in brute_force_candidates(x) if 0.95 * peak <= c.xmin < 1.5 * peak]
    best = min(window, key=lambda c: c.D)
    assert fit.xmin == best.xmin
    assert fit.alpha == pytest.approx(best.alpha, rel=1e-10)
    assert_close(fit.D, best.D, rel=1e-10)


# --------------------------------------------------------------------------------------
# 5. Bad inputs and options
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ([], "no eigenvalues"),
        (np.zeros(10), "fewer than 2"),
        (np.full(10, 3.0), "equal"),
        ([1.0, 2.0, math.nan, 3.0], "NaN"),
        ([1.0, 2.0, math.inf, 3.0], "infinite"),
        ([5.0], "fewer than 2"),
        ([-1.0, -2.0, -3.0], "fewer than 2"),
        (np.array([1 + 1j, 2 + 0j]), "real"),
        (np.array(["1", "2"]), "real"),
    ],
)
def test_bad_inputs_fail_without_raising(values: object, needle: str) -> None:
    for xmin in ("ks", "median", 1.0):
        fit = fit_power_law(values, xmin=xmin)  # type: ignore[arg-type]
        assert fit.status == "failed"
        assert not fit.ok
        assert needle in fit.reason
        assert math.isnan(fit.alpha) and math.isnan(fit.D) and fit.n_tail == 0


def test_two_dimensional_input_is_flattened() -> None:
    x = pareto(2.5, 600, np.random.default_rng(20))
    assert fit_power_law(x.reshape(20, 30)) == fit_power_law(x)
    assert fit_power_law(x.reshape(20, 30), xmin="median") == fit_power_law(x, xmin="median")


def test_negative_values_are_dropped() -> None:
    x = pareto(2.5, 600, np.random.default_rng(21))
    with_negatives = np.concatenate([x, -x[:100], [-1e-3]])
    assert fit_power_law(with_negatives) == fit_power_law(x)
    assert fit_power_law(with_negatives, xmin="median") == fit_power_law(x, xmin="median")


def test_other_dtypes_and_containers() -> None:
    x = pareto(2.5, 500, np.random.default_rng(22)).astype(np.float32)
    expected = fit_power_law(x.astype(np.float64))
    assert fit_power_law(x) == expected
    assert fit_power_law(list(x)) == expected
    ints = np.arange(1, 200)
    assert fit_power_law(ints) == fit_power_law(ints.astype(np.float64))


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"xmin": "foo"}, "xmin"),
        ({"xmin": -1}, "xmin"),
        ({"xmin": 0.0}, "xmin"),
        ({"xmin": math.nan}, "xmin"),
        ({"xmax": 0}, "xmax"),
        ({"xmax": -2.0}, "xmax"),
        ({"xmax": math.nan}, "xmax"),
        ({"fix_fingers": "bar"}, "fix_fingers"),
    ],
)
def test_invalid_options_raise_value_error_naming_option(kwargs: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        fit_power_law([1.0, 2.0, 3.0], **kwargs)
