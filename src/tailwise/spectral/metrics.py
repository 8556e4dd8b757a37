"""Per-layer spectral metrics computed from an ESD (REFERENCES §1; source 000 §1.4, eq. 3.2).

All functions take eigenvalues of W^T W (float64, any order) and return floats or small
frozen dataclasses; ``log`` means log10 unless stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.distance import jensenshannon

from tailwise.spectral.mp import marchenko_pastur_edges

__all__ = [
    "MarchenkoPasturFit",
    "NormMetrics",
    "fit_marchenko_pastur",
    "matrix_entropy",
    "norm_metrics",
    "spectral_distance",
]

FloatArray = NDArray[np.float64]
# Quantile of the Tracy-Widom (beta = 1) law used as the margin above the MP bulk edge: an
# eigenvalue beyond lambda_+ + 2.02 s_TW is a spike at the 1% level (Johnstone 2001).
TRACY_WIDOM_99 = 2.02


@dataclass(frozen=True)
class NormMetrics:
    """Scale metrics of an ESD.

    norm = sum lambda = ||W||_F^2; spectral_norm = lambda_max = ||W||_2^2;
    stable_rank = norm / spectral_norm; alpha_weighted = alpha * log lambda_max (source 000's
    alpha-hat); log_alpha_norm = log sum lambda^alpha (the Schatten alpha-norm, NaN without
    alpha).
    """

    norm: float
    log_norm: float
    spectral_norm: float
    log_spectral_norm: float
    stable_rank: float
    alpha_weighted: float
    log_alpha_norm: float


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf if x == 0 else math.nan


def norm_metrics(evals: ArrayLike, alpha: float = math.nan) -> NormMetrics:
    """Norm-based metrics of the eigenvalues ``evals`` (shape (n,)); ``alpha`` from a PL fit."""
    lam = np.asarray(evals, dtype=np.float64)
    norm = float(lam.sum())
    top = float(lam.max()) if lam.size else math.nan
    log_top = _log10(top)
    if math.isfinite(alpha) and lam.size:
        # log10 sum lam^alpha computed as top^alpha * sum (lam/top)^alpha to avoid overflow
        rel = lam[lam > 0] / top
        log_alpha_norm = alpha * log_top + _log10(float(np.sum(rel**alpha)))
    else:
        log_alpha_norm = math.nan
    return NormMetrics(
        norm=norm,
        log_norm=_log10(norm),
        spectral_norm=top,
        log_spectral_norm=log_top,
        stable_rank=norm / top if top > 0 else math.nan,
        alpha_weighted=alpha * log_top,
        log_alpha_norm=log_alpha_norm,
    )


def matrix_entropy(evals: ArrayLike, rank: int) -> float:
    """Normalised matrix entropy (source 000 eq. 3.2): -sum p ln p / ln R.

    p_i = lambda_i / sum lambda over the nonzero eigenvalues, R = the matrix rank. 1 for a
    flat spectrum, towards 0 as one direction dominates. NaN when R < 2 (0 / 0).
    """
    lam = np.asarray(evals, dtype=np.float64)
    lam = lam[lam > 0]
    if lam.size == 0 or rank < 2:
        return math.nan
    p = lam / lam.sum()
    return float(-np.sum(p * np.log(p)) / math.log(rank))


@dataclass(frozen=True)
class MarchenkoPasturFit:
    """Marchenko-Pastur fit of an ESD scaled to mean 1.

    sigma: fitted scale of the random bulk; lambda_plus: bulk edge
    (sigma (1 + 1/sqrt(Q)))^2 on the mean-1 scale; num_spikes: eigenvalues above
    lambda_plus + 2.02 s_TW; softrank: lambda_plus / lambda_max (mp_softrank).
    """

    sigma: float
    lambda_plus: float
    num_spikes: int
    softrank: float


def tracy_widom_scale(q: float, m: int, sigma: float = 1.0) -> float:
    """Scale s_TW of the largest eigenvalue's fluctuations for X = W^T W / N, N = Q M.

    s_TW = sigma^2 (1 + 1/sqrt(Q))^(4/3) Q^(-1/2) M^(-2/3) (Johnstone 2001, in X's units).
    """
    return sigma**2 * (1 + 1 / math.sqrt(q)) ** (4 / 3) / math.sqrt(q) * m ** (-2 / 3)


def fit_marchenko_pastur(
    evals: ArrayLike, q: float, m: int, *, max_iter: int = 100
) -> MarchenkoPasturFit:
    """Fit the MP bulk of an ESD by iterated spike removal.

    The eigenvalues are scaled to mean 1 (as WeightWatcher does before its MP fit). For pure
    noise the MP mean is sigma^2, so sigma^2 = mean of the eigenvalues that are not spikes;
    spikes are those above lambda_+(sigma) + 2.02 s_TW. Start with all eigenvalues, repeat
    until the set of spikes is stable. Deterministic and O(n) per step, unlike a kernel
    density fit over a grid of sigma.

    ``q`` = N / M >= 1 and ``m`` = M (the number of eigenvalues of one matrix).
    """
    lam = np.asarray(evals, dtype=np.float64)
    if lam.size == 0 or not np.isfinite(lam).all() or lam.sum() <= 0:
        return MarchenkoPasturFit(math.nan, math.nan, 0, math.nan)
    x = np.sort(lam) * (lam.size / lam.sum())
    sigma2, edge, inside, _ = _bulk_iterations(x, q, m, max_iter)
    return MarchenkoPasturFit(
        sigma=math.sqrt(sigma2),
        lambda_plus=edge,
        num_spikes=int(x.size - inside),
        softrank=edge / float(x[-1]),
    )


def _bulk_iterations(
    x: FloatArray, q: float, m: int, max_iter: int
) -> tuple[float, float, int, list[float]]:
    """The spike-removal iteration of :func:`fit_marchenko_pastur` on sorted mean-1 values.

    Returns sigma^2, the bulk edge, the number of values inside the bulk, and the cut of
    every step (a value on the other side of any of them would change the fit: the float32
    check of :mod:`tailwise.spectral.precision` needs them).
    """
    inside = x.size
    sigma2 = 1.0
    edge = math.nan
    cuts: list[float] = []
    for _ in range(max_iter):
        bulk_mean = float(x[:inside].mean())
        if bulk_mean <= 0:
            # Only zero eigenvalues left (a low-rank matrix): keep the last positive fit.
            break
        sigma2 = bulk_mean
        edge = marchenko_pastur_edges(q, math.sqrt(sigma2))[1]
        cut = edge + TRACY_WIDOM_99 * tracy_widom_scale(q, m, math.sqrt(sigma2))
        cuts.append(cut)
        new_inside = int(np.searchsorted(x, cut, side="right"))
        if new_inside == inside or new_inside == 0:
            break
        inside = new_inside
    return sigma2, edge, inside, cuts


def spectral_distance(evals: ArrayLike, other: ArrayLike, bins: int | None = None) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the histograms of two ESDs.

    Both spectra are binned on one common grid of ``bins`` log10-spaced bins over the positive
    eigenvalues of both (default sqrt of the smaller spectrum's size, clipped to [10, 100], so
    sampling noise of small layers does not dominate), plus one bin for zero eigenvalues (log
    bins keep the bulk resolved when one large spike sets lambda_max). Used for
    ``rand_distance`` (source 000's "random distance": the ESD of W against the ESD of W with
    its entries randomly permuted).
    WeightWatcher instead feeds the two sorted eigenvalue vectors to the JS formula as if they
    were probability vectors, which is not a distance between distributions.
    """
    a = np.asarray(evals, dtype=np.float64).reshape(-1)
    b = np.asarray(other, dtype=np.float64).reshape(-1)
    edges = _log_bin_edges(a, b, bins)
    if edges is None:
        return math.nan

    def histogram(values: FloatArray) -> FloatArray:
        pos = values[values > 0]
        counts = np.histogram(np.log10(pos), edges)[0].astype(np.float64)
        return np.append(counts, float(values.size - pos.size)) / values.size

    return float(jensenshannon(histogram(a), histogram(b), base=2))


def _log_bin_edges(a: FloatArray, b: FloatArray, bins: int | None) -> FloatArray | None:
    """The log10 bin edges :func:`spectral_distance` uses for spectra ``a`` and ``b`` (None
    when either is empty or neither has a positive value)."""
    if a.size == 0 or b.size == 0:
        return None
    positive = np.concatenate([a[a > 0], b[b > 0]])
    if positive.size == 0:
        return None
    if bins is None:
        bins = int(np.clip(math.sqrt(min(a.size, b.size)), 10, 100))
    lo, hi = np.log10(positive.min()), np.log10(positive.max())
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
