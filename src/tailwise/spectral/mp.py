"""Marchenko-Pastur law: density and bulk edges (source 000 eq. 1.6)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def marchenko_pastur_edges(q: float, sigma: float = 1.0) -> tuple[float, float]:
    """Bulk edges (lambda_minus, lambda_plus) = sigma^2 (1 -/+ 1/sqrt(Q))^2 for Q = N/M >= 1."""
    if q < 1:
        raise ValueError(f"marchenko_pastur_edges: Q = N/M must be >= 1, got {q}")
    if sigma <= 0:
        raise ValueError(f"marchenko_pastur_edges: sigma must be > 0, got {sigma}")
    root = 1.0 / np.sqrt(q)
    return float(sigma**2 * (1 - root) ** 2), float(sigma**2 * (1 + root) ** 2)


def marchenko_pastur_pdf(x: ArrayLike, q: float, sigma: float = 1.0) -> NDArray[np.float64]:
    """Marchenko-Pastur density of the eigenvalues of X = W^T W / N (source 000 eq. 1.6).

    rho(lambda) = Q / (2 pi sigma^2 lambda) * sqrt((lambda_+ - lambda)(lambda - lambda_-))
    on [lambda_-, lambda_+], zero elsewhere; ``x`` any shape, result the same shape.
    For W of shape N x M with iid entries of variance sigma^2, Q = N / M >= 1.
    """
    lo, hi = marchenko_pastur_edges(q, sigma)
    lam = np.asarray(x, dtype=np.float64)
    inside = (lam > lo) & (lam < hi) & (lam > 0)
    out = np.zeros_like(lam)
    li = lam[inside]
    out[inside] = q / (2 * np.pi * sigma**2 * li) * np.sqrt((hi - li) * (li - lo))
    return out
