"""HSIC on centred Gram matrices: the numerical core of :mod:`tailwise.similarity`.

Notation (source 000 eq. 2.15; Kornblith et al. 2019; Song et al. 2012): n examples, K and L
the n x n kernel matrices of two representations of them, H = I - 1 1^T / n.

- biased:   HSIC_0(K, L) = tr(K H L H) / (n - 1)^2                          (000 eq. 2.15)
- unbiased: HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2))
                            - 2 / (n - 2) 1^T K~ L~ 1] / (n (n - 3))       (Song et al. 2012)
  with K~, L~ = K, L with their diagonals set to zero (n >= 4).

Both are unchanged when K is replaced by H K H: for HSIC_0 because H is idempotent; for
HSIC_1 because it is a U-statistic of k_ij + k_qr - k_iq - k_jr (i, j, q, r distinct), from
which row and column means cancel. So every Gram matrix here is double-centred first: for
the linear kernel that is the Gram matrix of the centred features, which avoids the
cancellation that large feature means (ReLU outputs) would cause.

Everything is float64, on the device of the data (CPU for devices without float64).
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailwise._errors import UsageError

__all__ = [
    "Kernel",
    "as_matrix",
    "centred_gram",
    "compute_device",
    "double_centre",
    "hsic_matrix",
    "hsic_pairs",
    "linear_hsic_features",
    "min_examples",
    "parse_fraction",
    "parse_kernel",
    "parse_sigma",
]

# Feature columns converted to float64 at a time when a Gram matrix is accumulated.
_BLOCK_BYTES = 8 * 2**20


class Kernel(str, enum.Enum):
    """The kernel of a CKA: ``"linear"`` (k(x, y) = x . y) or ``"rbf"``
    (k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), Kornblith et al. 2019)."""

    LINEAR = "linear"
    RBF = "rbf"


def parse_kernel(kernel: Kernel | str, where: str) -> Kernel:
    try:
        return Kernel(kernel)
    except ValueError:
        allowed = ", ".join(repr(k.value) for k in Kernel)
        raise UsageError(f"{where}: kernel must be one of {allowed}; got {kernel!r}") from None


def parse_sigma(
    sigma: float | tuple[float, float] | None, kernel: Kernel, where: str
) -> tuple[float | None, float | None]:
    """``sigma`` as one bandwidth per representation (None: from the median distance)."""
    if sigma is None:
        return None, None
    if kernel is not Kernel.RBF:
        raise UsageError(f"{where}: sigma is the RBF bandwidth; it needs kernel='rbf'")
    pair = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    if len(pair) != 2 or not all(_positive(s) for s in pair):
        raise UsageError(
            f"{where}: sigma must be a finite positive number or a pair of them; got {sigma!r}"
        )
    return float(pair[0]), float(pair[1])


def parse_fraction(median_fraction: float, where: str) -> float:
    if not _positive(median_fraction):
        raise UsageError(
            f"{where}: median_fraction must be a finite positive number; got {median_fraction!r}"
        )
    return float(median_fraction)


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def min_examples(unbiased: bool) -> int:
    """Fewest examples an estimate needs: 4 for HSIC_1 (its n (n - 3) and n - 2), else 2."""
    return 4 if unbiased else 2


def compute_device(device: torch.device) -> torch.device:
    """Where float64 work on data from ``device`` runs: there, unless it has no float64 (MPS)."""
    return torch.device("cpu") if device.type == "mps" else device


def as_matrix(x: Any, what: str, where: str) -> Tensor:
    """``x`` (a NumPy array, a tensor or an array-like) as an (n, features) tensor.

    More than two dimensions are flattened per example (the first dimension indexes the
    examples); a 1-D input is n examples of one feature. The dtype is kept (a tensor stays
    on its device). Raises :class:`UsageError` for 0-D, empty, complex or non-numeric input
    and for NaN/Inf values, naming ``what`` (``"X"``) and ``where`` (``"cka"``).
    """
    if isinstance(x, Tensor):
        tensor = x.detach()
    else:
        try:
            array = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {what} is not an array ({exc})") from None
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise UsageError(f"{where}: {what} must hold real numbers; got dtype {array.dtype}")
        tensor = torch.from_numpy(np.array(array, dtype=np.float64, order="C"))
    if tensor.is_complex() or not (tensor.is_floating_point() or _is_integer(tensor)):
        raise UsageError(f"{where}: {what} must hold real numbers; got dtype {tensor.dtype}")
    if tensor.ndim == 0:
        raise UsageError(f"{where}: {what} is a scalar; expected (examples, features)")
    matrix = tensor.reshape(tensor.shape[0], -1) if tensor.ndim != 1 else tensor.reshape(-1, 1)
    if matrix.shape[1] == 0:
        raise UsageError(f"{where}: {what} of shape {tuple(tensor.shape)} has no features")
    if matrix.is_floating_point() and not bool(torch.isfinite(matrix).all()):
        bad = int((~torch.isfinite(matrix)).sum())
        raise UsageError(
            f"{where}: {what} holds {bad} NaN/Inf value(s) (shape {tuple(tensor.shape)})"
        )
    return matrix


def _is_integer(tensor: Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex()


def _column_blocks(x: Tensor) -> int:
    return max(1, _BLOCK_BYTES // (8 * max(x.shape[0], 1)))


def _linear_gram(x: Tensor, device: torch.device) -> tuple[Tensor, bool]:
    """(Gram matrix of the centred features Xc Xc^T (n, n) float64, whether X is constant).

    Accumulated over column blocks converted to float64 one at a time, so a float32
    activation of any width costs no float64 copy of itself.
    """
    n = x.shape[0]
    gram = torch.zeros((n, n), dtype=torch.float64, device=device)
    constant = True
    step = _column_blocks(x)
    for start in range(0, x.shape[1], step):
        part = x[:, start : start + step].to(device=device, dtype=torch.float64)
        constant = constant and bool((part == part[:1]).all())
        part = part - part.mean(dim=0, keepdim=True)
        gram += part @ part.T
    return gram, constant


def _median_distance(sq_distances: Tensor) -> float:
    """Median of the distances ||x_i - x_j|| over the n (n - 1) / 2 pairs i < j
    (the mean of the two middle values for an even count, as ``numpy.median``)."""
    n = sq_distances.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1, device=sq_distances.device)
    values = sq_distances[rows, cols]
    count = values.numel()
    low = torch.kthvalue(values, (count + 1) // 2).values
    high = torch.kthvalue(values, count // 2 + 1).values
    return 0.5 * (math.sqrt(float(low)) + math.sqrt(float(high)))


def double_centre(k: Tensor) -> Tensor:
    """H K H for a symmetric K: K minus its row and column means plus its grand mean."""
    row = k.mean(dim=1, keepdim=True)
    return k - row - row.T + row.mean()


def centred_gram(
    x: Tensor,
    kernel: Kernel,
    *,
    sigma: float | None = None,
    median_fraction: float = 1.0,
    device: torch.device | None = None,
    where: str = "cka",
) -> Tensor:
    """H K H, the double-centred kernel matrix (n, n) float64 of the rows of ``x`` (n, p).

    Linear: K = X X^T, so H K H = Xc Xc^T with Xc the centred features. RBF: K_ij =
    exp(-||x_i - x_j||^2 / (2 sigma^2)) with sigma = ``median_fraction`` x the median
    distance between distinct examples unless ``sigma`` is given (Kornblith et al. 2019).
    A constant representation (every example equal) gives exact zeros, so that its HSIC
    with anything is 0 and the CKA NaN (not the ratio of rounding errors).
    """
    target = compute_device(device if device is not None else x.device)
    gram, constant = _linear_gram(x, target)
    if constant:
        return torch.zeros_like(gram)
    if kernel is Kernel.LINEAR:
        return gram
    norms = torch.diagonal(gram)
    sq = (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    if sigma is None:
        sigma = median_fraction * _median_distance(sq)
        if not sigma > 0:
            raise UsageError(
                f"{where}: the median distance between examples is 0 (more than half of the "
                f"{x.shape[0]} examples are equal), so the RBF bandwidth would be 0; pass sigma"
            )
    return double_centre(torch.exp(sq / (-2.0 * sigma * sigma)))


def _parts(grams: Tensor, unbiased: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(flattened K~ (L, n^2), 1^T K~ 1 (L,), K~ 1 (L, n)) of centred Grams (L, n, n).

    For the biased estimator K~ is the centred Gram itself (the other two are unused).
    """
    if unbiased:
        grams = grams - torch.diag_embed(torch.diagonal(grams, dim1=1, dim2=2))
    rows = grams.sum(dim=2)
    return grams.reshape(grams.shape[0], -1), rows.sum(dim=1), rows


def _scale(n: int, unbiased: bool) -> tuple[float, float, float]:
    """(1 / normaliser, weight of the (1^T K~ 1)(1^T L~ 1) term, weight of 1^T K~ L~ 1)."""
    if unbiased:
        return 1.0 / (n * (n - 3)), 1.0 / ((n - 1) * (n - 2)), -2.0 / (n - 2)
    return 1.0 / (n - 1) ** 2, 0.0, 0.0


def hsic_matrix(grams_a: Tensor, grams_b: Tensor, unbiased: bool) -> Tensor:
    """HSIC of every pair: (La, Lb) from centred Grams (La, n, n) and (Lb, n, n)."""
    n = grams_a.shape[-1]
    fa, sa, ua = _parts(grams_a, unbiased)
    fb, sb, ub = _parts(grams_b, unbiased)
    norm, w_sums, w_cross = _scale(n, unbiased)
    out = fa @ fb.T
    if unbiased:
        out = out + w_sums * torch.outer(sa, sb) + w_cross * (ua @ ub.T)
    return out * norm


def hsic_pairs(grams_a: Tensor, grams_b: Tensor, unbiased: bool) -> Tensor:
    """HSIC of corresponding pairs: (L,) from centred Grams (L, n, n) and (L, n, n)."""
    n = grams_a.shape[-1]
    fa, sa, ua = _parts(grams_a, unbiased)
    fb, sb, ub = _parts(grams_b, unbiased)
    norm, w_sums, w_cross = _scale(n, unbiased)
    out = (fa * fb).sum(dim=1)
    if unbiased:
        out = out + w_sums * sa * sb + w_cross * (ua * ub).sum(dim=1)
    return out * norm


def linear_hsic_features(
    x: Tensor, y: Tensor, unbiased: bool, device: torch.device
) -> tuple[float, float, float]:
    """(HSIC(K, L), HSIC(K, K), HSIC(L, L)) of linear kernels without n x n matrices.

    With centred features Xc, Yc and d_K, d_L their squared row norms (diag K, diag L):
    tr(K L) = ||Xc^T Yc||_F^2, K 1 = 0, so K~ 1 = -d_K, 1^T K~ 1 = -sum d_K and
    tr(K~ L~) = tr(K L) - d_K . d_L. Costs O(n (p q + p^2 + q^2)) instead of O(n^2 (p + q)).
    """
    n = x.shape[0]
    xc = x.to(device=device, dtype=torch.float64)
    yc = y.to(device=device, dtype=torch.float64)
    xc = xc - xc.mean(dim=0, keepdim=True)
    yc = yc - yc.mean(dim=0, keepdim=True)
    dx, dy = (xc * xc).sum(dim=1), (yc * yc).sum(dim=1)
    norm, w_sums, w_cross = _scale(n, unbiased)

    def hsic(a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> float:
        cross = float(torch.linalg.matrix_norm(a.T @ b) ** 2)
        if not unbiased:
            return cross * norm
        dot = float(da @ db)
        return (cross - dot + w_sums * float(da.sum()) * float(db.sum()) + w_cross * dot) * norm

    return hsic(xc, yc, dx, dy), hsic(xc, xc, dx, dx), hsic(yc, yc, dy, dy)
