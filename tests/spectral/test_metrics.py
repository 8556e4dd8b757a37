"""Tests of the per-layer spectral metrics (tailwise.spectral.metrics) and the
Marchenko-Pastur law (tailwise.spectral.mp), against the formulas of REFERENCES §1."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
from numpy.typing import NDArray

from tailwise.spectral.metrics import (
    TRACY_WIDOM_99,
    fit_marchenko_pastur,
    matrix_entropy,
    norm_metrics,
    spectral_distance,
    tracy_widom_scale,
)
from tailwise.spectral.mp import marchenko_pastur_edges, marchenko_pastur_pdf

FloatArray = NDArray[np.float64]


@functools.cache
def gaussian_evals(n: int, m: int, seed: int, spikes: tuple[float, ...] = ()) -> FloatArray:
    """Eigenvalues of W^T W (ascending) for W = G + sum_k s_k sqrt(n) u_k v_k^T, G iid N(0, 1)
    of shape n x m, u_k, v_k orthonormal: a Marchenko-Pastur bulk plus planted spikes."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, m))
    if spikes:
        u = np.linalg.qr(rng.standard_normal((n, len(spikes))))[0]
        v = np.linalg.qr(rng.standard_normal((m, len(spikes))))[0]
        w = w + u @ np.diag(np.asarray(spikes) * math.sqrt(n)) @ v.T
    values = np.linalg.eigvalsh(w.T @ w)
    values.setflags(write=False)
    return values


def heavy_tailed_evals(seed: int) -> FloatArray:
    w = np.random.default_rng(seed).standard_t(2.5, size=(300, 150))
    return np.asarray(np.linalg.eigvalsh(w.T @ w))


# --------------------------------------------------------------------------------------
# norm metrics
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.7, 2.5, 4.0])
def test_norm_metrics_match_hand_formulas(alpha: float) -> None:
    lam = heavy_tailed_evals(0)
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(lam)  # any order
    got = norm_metrics(shuffled, alpha)
    assert got.norm == pytest.approx(lam.sum(), rel=1e-12)
    assert got.log_norm == pytest.approx(math.log10(lam.sum()), rel=1e-12)
    assert got.spectral_norm == lam.max()
    assert got.log_spectral_norm == pytest.approx(math.log10(lam.max()), rel=1e-12)
    assert got.stable_rank == pytest.approx(lam.sum() / lam.max(), rel=1e-12)
    assert got.alpha_weighted == pytest.approx(alpha * math.log10(lam.max()), rel=1e-12)
    assert got.log_alpha_norm == pytest.approx(math.log10(np.sum(lam**alpha)), rel=1e-12)


def test_norm_is_squared_frobenius_norm() -> None:
    w = np.random.default_rng(2).standard_normal((40, 25))
    lam = np.linalg.eigvalsh(w.T @ w)
    got = norm_metrics(lam, 2.0)
    assert got.norm == pytest.approx(np.sum(w**2), rel=1e-12)
    assert got.spectral_norm == pytest.approx(np.linalg.norm(w, 2) ** 2, rel=1e-12)


def test_norm_metrics_without_alpha() -> None:
    got = norm_metrics([1.0, 2.0, 4.0])
    assert math.isnan(got.alpha_weighted)
    assert math.isnan(got.log_alpha_norm)
    assert got.norm == 7.0 and got.spectral_norm == 4.0
    assert got.stable_rank == pytest.approx(7.0 / 4.0)


@pytest.mark.parametrize("alpha", [50.0, 300.0, 2000.0])
def test_log_alpha_norm_does_not_overflow(alpha: float) -> None:
    lam = heavy_tailed_evals(3) * 1e3  # lambda_max ~ 1e7: lambda^alpha overflows float64
    assert alpha * math.log10(lam.max()) > 308  # lambda_max^alpha > float64 max
    expected = scipy.special.logsumexp(alpha * np.log(lam)) / math.log(10)
    got = norm_metrics(lam, alpha)
    assert math.isfinite(got.log_alpha_norm)
    assert got.log_alpha_norm == pytest.approx(expected, rel=1e-12)
    # and tiny eigenvalues underflowing to 0 do not matter
    small = norm_metrics(lam * 1e-12, alpha)
    assert small.log_alpha_norm == pytest.approx(expected - 12 * alpha, rel=1e-12)


def test_norm_metrics_with_zero_eigenvalues() -> None:
    lam = np.array([0.0, 0.0, 1.0, 3.0])
    got = norm_metrics(lam, 2.0)
    assert got.log_alpha_norm == pytest.approx(math.log10(10.0))
    assert got.stable_rank == pytest.approx(4.0 / 3.0)


# --------------------------------------------------------------------------------------
# matrix entropy
# --------------------------------------------------------------------------------------


def entropy_by_hand(lam: FloatArray, rank: int) -> float:
    """Source 000 eq. 3.2: -sum p ln p / ln R, p = lambda / sum lambda."""
    p = lam[lam > 0] / lam[lam > 0].sum()
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def test_matrix_entropy_flat_spectrum_is_one() -> None:
    assert matrix_entropy(np.full(64, 3.7), 64) == pytest.approx(1.0, rel=1e-12)


def test_matrix_entropy_one_dominant_eigenvalue_is_near_zero() -> None:
    lam = np.concatenate([[1e12], np.full(99, 1.0)])
    assert 0 <= matrix_entropy(lam, 100) < 1e-8
    # rank-1 matrix padded with exact zeros: p = (1, 0, ...) -> entropy 0
    assert matrix_entropy(np.array([0.0, 0.0, 5.0]), 2) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_matrix_entropy_matches_formula(seed: int) -> None:
    lam = heavy_tailed_evals(seed)
    got = matrix_entropy(np.random.default_rng(seed).permutation(lam), lam.size)
    assert got == pytest.approx(entropy_by_hand(lam, lam.size), rel=1e-12)
    assert 0 < got < 1


def test_matrix_entropy_undefined_below_rank_two() -> None:
    assert math.isnan(matrix_entropy([5.0], 1))
    assert math.isnan(matrix_entropy([], 10))
    assert math.isnan(matrix_entropy([0.0, 0.0], 2))


# --------------------------------------------------------------------------------------
# Marchenko-Pastur fit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "seed"), [(2000, 500, 0), (1000, 250, 1), (1000, 250, 2)])
def test_mp_fit_on_pure_noise(n: int, m: int, seed: int) -> None:
    lam = gaussian_evals(n, m, seed)
    q = n / m
    fit = fit_marchenko_pastur(lam, q, m)
    assert abs(fit.sigma - 1.0) < 0.05
    assert fit.num_spikes <= 1
    assert fit.lambda_plus == pytest.approx(fit.sigma**2 * (1 + 1 / math.sqrt(q)) ** 2)
    # the largest eigenvalue of pure noise sits at the bulk edge (Tracy-Widom fluctuations)
    assert fit.softrank == pytest.approx(1.0, abs=0.05)


def test_mp_fit_on_pure_noise_has_no_spikes() -> None:
    assert fit_marchenko_pastur(gaussian_evals(2000, 500, 0), 4.0, 500).num_spikes == 0


def test_mp_fit_is_scale_invariant() -> None:
    # W^T W and W^T W / N give the same fit (eigenvalues are scaled to mean 1 first)
    lam = gaussian_evals(1000, 250, 1)
    scaled, plain = fit_marchenko_pastur(lam / 1000, 4.0, 250), fit_marchenko_pastur(lam, 4.0, 250)
    # pytest.approx does not look inside dataclasses: compare the fields, to rounding
    assert scaled.num_spikes == plain.num_spikes
    for field in ("sigma", "lambda_plus", "softrank"):
        assert getattr(scaled, field) == pytest.approx(getattr(plain, field), rel=1e-12)


@pytest.mark.parametrize("strength", [3.0, 10.0, 100.0])
def test_mp_fit_counts_planted_spikes(strength: float) -> None:
    # rank-3 signal with singular values strength * sqrt(N) * (1, 1.5, 2): far beyond the
    # bulk edge sqrt(N) + sqrt(M) = 1.5 sqrt(N)
    spikes = (strength, 1.5 * strength, 2 * strength)
    lam = gaussian_evals(2000, 500, 3, spikes)
    fit = fit_marchenko_pastur(lam, 4.0, 500)
    assert fit.num_spikes == 3
    # sigma^2 is the mean of the non-spike eigenvalues on the mean-1 scale
    scaled = lam / lam.mean()
    assert fit.sigma**2 == pytest.approx(scaled[:-3].mean(), rel=1e-12)
    cut = fit.lambda_plus + TRACY_WIDOM_99 * tracy_widom_scale(4.0, 500, fit.sigma)
    assert np.sum(scaled > cut) == 3
    assert fit.softrank == pytest.approx(fit.lambda_plus / scaled.max(), rel=1e-12)


def test_tracy_widom_scale_formula() -> None:
    q, m, sigma = 4.0, 500, 1.3
    expected = sigma**2 * (1 + 1 / math.sqrt(q)) ** (4 / 3) / math.sqrt(q) * m ** (-2 / 3)
    assert tracy_widom_scale(q, m, sigma) == pytest.approx(expected, rel=1e-14)


def test_mp_fit_degenerate_inputs() -> None:
    for bad in ([], [0.0, 0.0], [1.0, math.nan]):
        fit = fit_marchenko_pastur(bad, 2.0, 2)
        assert math.isnan(fit.sigma) and fit.num_spikes == 0


# --------------------------------------------------------------------------------------
# Marchenko-Pastur density
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1.0, 1.5, 4.0, 10.0, 100.0])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_mp_pdf_integrates_to_one(q: float, sigma: float) -> None:
    lo, hi = marchenko_pastur_edges(q, sigma)

    def pdf(x: float) -> float:
        return float(marchenko_pastur_pdf(np.array([x]), q, sigma)[0])

    # Q = 1: lambda_- = 0 with a 1/sqrt(lambda) singularity, integrable; quad's QAGS copes
    total, _ = scipy.integrate.quad(pdf, lo, hi, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    mean, _ = scipy.integrate.quad(lambda x: x * pdf(x), lo, hi, limit=200)
    assert mean == pytest.approx(sigma**2, rel=1e-6)  # E[lambda] of W^T W / N is sigma^2


def test_mp_pdf_support_and_shape() -> None:
    lo, hi = marchenko_pastur_edges(4.0)
    assert (lo, hi) == pytest.approx((0.25, 2.25))
    x = np.array([[0.0, 0.1, lo], [hi, 3.0, -1.0]])
    out = marchenko_pastur_pdf(x, 4.0)
    assert out.shape == x.shape
    assert np.all(out == 0.0)
    assert marchenko_pastur_pdf(1.0, 4.0) > 0


def test_mp_pdf_matches_simulated_spectrum() -> None:
    # The density is that of X = W^T W / N for W of shape N x M with unit-variance entries.
    n, m = 2000, 500
    x = gaussian_evals(n, m, 0) / n
    lo, hi = marchenko_pastur_edges(n / m)
    for point in np.linspace(lo, hi, 9)[1:-1]:
        cdf, _ = scipy.integrate.quad(lambda t: float(marchenko_pastur_pdf(t, n / m)), lo, point)
        assert np.mean(x <= point) == pytest.approx(cdf, abs=0.02)


@pytest.mark.parametrize(("q", "sigma"), [(0.5, 1.0), (2.0, 0.0), (2.0, -1.0)])
def test_mp_edges_reject_invalid_parameters(q: float, sigma: float) -> None:
    with pytest.raises(ValueError, match="Q = N/M" if q < 1 else "sigma"):
        marchenko_pastur_edges(q, sigma)


# --------------------------------------------------------------------------------------
# spectral distance
# --------------------------------------------------------------------------------------


def test_spectral_distance_identical_is_zero() -> None:
    lam = heavy_tailed_evals(4)
    assert spectral_distance(lam, lam) == pytest.approx(0.0, abs=1e-12)
    assert spectral_distance(lam, np.random.default_rng(0).permutation(lam)) == pytest.approx(
        0.0, abs=1e-12
    )


@pytest.mark.parametrize("seed", range(4))
def test_spectral_distance_bounded_and_symmetric(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.exponential(1.0, rng.integers(10, 500))
    b = rng.lognormal(0.0, 1.0, rng.integers(10, 500))
    d = spectral_distance(a, b)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(spectral_distance(b, a), rel=1e-12)


def test_spectral_distance_large_for_different_spectra() -> None:
    # disjoint supports: JS distance (base 2) is 1
    assert spectral_distance(np.linspace(0.0, 1.0, 50), np.linspace(9.0, 10.0, 80)) == (
        pytest.approx(1.0, abs=1e-12)
    )
    # An MP bulk against a very heavy-tailed ESD (Student-t(1.5) entries) of the same shape
    # and mean: far apart, compared with the binning noise between two MP samples (~0.19 with
    # 250 eigenvalues in 100 bins).
    mp = gaussian_evals(1000, 250, 1)
    w = np.random.default_rng(5).standard_t(1.5, size=(1000, 250))
    heavy = np.linalg.eigvalsh(w.T @ w)
    heavy = heavy * (mp.mean() / heavy.mean())
    noise = spectral_distance(mp, gaussian_evals(1000, 250, 2))
    assert noise < 0.3
    assert spectral_distance(mp, heavy) > max(0.45, 2 * noise)


def test_spectral_distance_of_empty_spectrum_is_nan() -> None:
    assert math.isnan(spectral_distance([], [1.0, 2.0]))
    assert math.isnan(spectral_distance([0.0], [0.0]))
