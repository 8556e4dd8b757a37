"""Trace and spectral density of a symmetric operator from matrix-vector products alone.

Three randomized estimators that touch A only through products A V with blocks of vectors (for
a Hessian, Hessian-vector products: one pass over the data per block):

- :func:`hutchinson_trace`: tr(A) ~ (1/m) sum_i z_i^T A z_i over m random probes z_i with
  E[z z^T] = I (Hutchinson 1989). Unbiased; its variance is 2 ||A||_F^2 / m minus the
  diagonal's share for Rademacher probes (2 ||A||_F^2 / m for Gaussian ones).
- :func:`hutchpp_trace`: Hutch++ (Meyer, Musco, Musco and Woodruff 2021, Alg. 1). A third of
  the products sketch the top of the spectrum, Q = orth(A S), whose trace tr(Q^T A Q) is taken
  exactly; Hutchinson's estimator runs on the deflated rest (I - QQ^T) A (I - QQ^T). Exact
  when rank(A) <= m / 3, and with error O(1/m) instead of O(1/sqrt(m)) for a PSD A.
- :func:`spectral_density`: stochastic Lanczos quadrature (SLQ; Golub and Meurant 2010, Ubaru,
  Chen and Saad 2017, and PyHessian's density, Yao et al. 2020). For a unit start vector q,
  q^T f(A) q = sum_i f(lambda_i) (u_i^T q)^2 is an integral against a discrete measure whose
  k-point Gauss quadrature comes from k Lanczos steps: nodes are the eigenvalues theta_j of
  the tridiagonal T_k, weights the squared first components tau_j^2 of its eigenvectors, and
  sum_j tau_j^2 f(theta_j) = q^T f(A) q exactly for polynomials f of degree < 2k. With
  E[q q^T] = I / n, the average over runs estimates the spectral density
  phi(x) = (1/n) sum_i delta(x - lambda_i).

All three accept any :class:`SymmetricOperator` (``tailwise.hessian.operator.HessianOperator``,
or a dense matrix wrapped in a small class). The arithmetic of the estimators (quadratic forms,
QR, Lanczos recurrences) is float64 whatever the operator's dtype; vectors are cast to the
operator's dtype only to be multiplied. Probes and start vectors are drawn on the CPU from a
``torch.Generator`` seeded by ``seed`` and then moved to the operator's device, so a seed gives
the same probes on every device.

Example::

    >>> import torch
    >>> class Dense:  # any object with these four members is a SymmetricOperator
    ...     def __init__(self, a):
    ...         self.a, self.num_params, self.dtype, self.device = a, len(a), a.dtype, a.device
    ...     def matmat(self, v):
    ...         return self.a @ v
    >>> a = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))  # tr = 55
    >>> round(hutchinson_trace(Dense(a), 200, seed=0).estimate)  # diagonal: exact for ±1 probes
    55
    >>> round(hutchpp_trace(Dense(a), 30).estimate, 6)  # rank 10 <= 30 / 3: exact
    55.0
    >>> density = spectral_density(Dense(a), num_iters=10, num_runs=2)
    >>> round(density.moment(1) * 10, 6)  # 10 steps on a 10 x 10 matrix: exact moments
    55.0
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from tailwise._errors import UsageError
from tailwise._progress import progress_task
from tailwise._threads import torch_work
from tailwise.hessian._budget import FLOAT64_BYTES, check_memory

Advance = Callable[..., None]

__all__ = [
    "ProbeDistribution",
    "SpectralDensity",
    "SymmetricOperator",
    "TraceEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "spectral_density",
]


class SymmetricOperator(Protocol):
    """A symmetric linear operator A of shape (n, n) that multiplies blocks of vectors.

    ``matmat(V)`` takes V of shape (n, k), dtype :attr:`dtype` on :attr:`device`, and returns
    A V of the same shape. ``HessianOperator`` satisfies this protocol.
    """

    @property
    def num_params(self) -> int:
        """n, the side of A (for a Hessian, the number of parameters)."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the vectors ``matmat`` takes and returns."""
        ...

    @property
    def device(self) -> torch.device:
        """device of the vectors ``matmat`` takes and returns."""
        ...

    def matmat(self, matrix: Tensor, /) -> Tensor:
        """A @ matrix for ``matrix`` of shape (n, k); returns shape (n, k)."""
        ...


class ProbeDistribution(str, enum.Enum):
    """Distribution of the entries of random probe / start vectors (both have E[z z^T] = I)."""

    RADEMACHER = "rademacher"  # ±1 with probability 1/2: the lower-variance choice
    GAUSSIAN = "gaussian"  # standard normal


@dataclass(frozen=True, eq=False)
class TraceEstimate:
    """A randomized estimate of tr(A).

    Attributes:
        estimate: the estimate of tr(A), ``low_rank_part + samples.mean()``.
        std_error: standard error of ``estimate``, ``samples.std(ddof=1) / sqrt(len(samples))``
            (NaN with a single probe). Hutch++'s low-rank part is exact given its sketch, so
            only the probes contribute.
        num_matvecs: products with A spent (columns passed to ``matmat``).
        samples: shape (num_probes,), float64: the quadratic forms z_i^T B z_i of the probes,
            with B = A for Hutchinson and B = (I - QQ^T) A (I - QQ^T) for Hutch++.
        low_rank_part: tr(Q^T A Q) of Hutch++'s sketch; 0.0 for Hutchinson.
    """

    estimate: float
    std_error: float
    num_matvecs: int
    samples: NDArray[np.float64]
    low_rank_part: float = 0.0

    @property
    def running_estimates(self) -> NDArray[np.float64]:
        """Shape (num_probes,): the estimate after the first 1, 2, ..., num_probes probes."""
        counts = np.arange(1, self.samples.size + 1, dtype=np.float64)
        result: NDArray[np.float64] = self.low_rank_part + np.cumsum(self.samples) / counts
        return result


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Spectral density phi(x) = (1/R) sum_r sum_j weights[r, j] delta(x - nodes[r, j]) by SLQ.

    Attributes:
        nodes: shape (R, m), float64: per run r, the Ritz values theta_j of the Lanczos
            tridiagonal T (ascending). A run that broke down after k < m steps (its Krylov
            space was invariant) has k nodes; the rest of its row is NaN.
        weights: shape (R, m), float64: the squared first components tau_j^2 of the
            eigenvectors of T (0 on NaN nodes); every row sums to 1.
        num_params: n, the side of the operator; ``n * moment(p)`` estimates tr(A^p).
        num_matvecs: products with A spent (columns passed to ``matmat``, all runs).

    The density integrates to 1 and is unbiased for phi against any polynomial of degree
    < 2 k, where k is the number of steps a run took: E[sum_j tau_j^2 theta_j^p] = tr(A^p) / n.
    """

    nodes: NDArray[np.float64]
    weights: NDArray[np.float64]
    num_params: int
    num_matvecs: int

    @property
    def num_runs(self) -> int:
        """R, the number of independent start vectors."""
        return int(self.nodes.shape[0])

    @property
    def num_nodes(self) -> NDArray[np.int64]:
        """Shape (R,): Lanczos steps each run took (m, or fewer after a breakdown)."""
        return np.isfinite(self.nodes).sum(axis=1).astype(np.int64)

    def moment(self, power: int) -> float:
        """The p-th moment of the density, (1/R) sum_{r,j} weights[r,j] nodes[r,j]^p.

        An unbiased estimate of tr(A^p) / n for p < 2 * (steps per run); ``moment(1)`` times
        ``num_params`` is a trace estimate.
        """
        if isinstance(power, bool) or not isinstance(power, int) or power < 0:
            raise UsageError(f"moment: power must be a non-negative int, got {power!r}")
        finite = np.isfinite(self.nodes)
        total = float(np.sum(self.weights[finite] * self.nodes[finite] ** power))
        return total / self.num_runs

    def on_grid(
        self,
        grid: ArrayLike | None = None,
        *,
        sigma: float | None = None,
        num_points: int = 1000,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The density smoothed by Gaussians of width sigma, evaluated on a grid.

        phi_sigma(x) = (1/R) sum_{r,j} weights[r,j] N(x; nodes[r,j], sigma^2), divided by its
        trapezoidal integral over the grid so that it integrates to 1 there (as PyHessian's
        ``density_generate`` does).

        Args:
            grid: increasing points x, shape (P,); default ``num_points`` evenly spaced points
                from (smallest node - 5 sigma) to (largest node + 5 sigma). A grid that misses
                part of the mass gets the rest scaled up by the normalisation.
            sigma: standard deviation of the Gaussians, in eigenvalue units; default 1 % of
                the spectral range (largest - smallest node; of max(|node|, 1) when all nodes
                coincide). Keep it several grid spacings wide.
            num_points: P for the default grid, at least 2.

        Returns:
            ``(grid, density)``, both shape (P,), float64.
        """
        finite = np.isfinite(self.nodes)
        nodes = self.nodes[finite]
        weights = self.weights[finite] / self.num_runs
        low, high = float(nodes.min()), float(nodes.max())
        if sigma is None:
            span = high - low
            sigma = 0.01 * (span if span > 0 else max(abs(high), 1.0))
        elif not (math.isfinite(sigma) and sigma > 0):
            raise UsageError(f"on_grid: sigma must be a positive finite float, got {sigma!r}")
        if grid is None:
            if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
                raise UsageError(f"on_grid: num_points must be an int >= 2, got {num_points!r}")
            points = np.linspace(low - 5 * sigma, high + 5 * sigma, num_points)
        else:
            points = np.asarray(grid, dtype=np.float64)
            if points.ndim != 1 or points.size < 2 or not np.all(np.diff(points) > 0):
                raise UsageError("on_grid: grid must be 1-D, increasing, with at least 2 points")
        density = _gaussian_mixture(points, nodes, weights, sigma)
        integral = float(np.sum((density[1:] + density[:-1]) * np.diff(points)) / 2)
        if not integral > 0:
            raise UsageError(
                f"on_grid: the grid [{points[0]:.4g}, {points[-1]:.4g}] holds none of the "
                f"density's mass (nodes in [{low:.4g}, {high:.4g}], sigma = {sigma:.4g})"
            )
        return points, density / integral


def _gaussian_mixture(
    points: NDArray[np.float64],
    nodes: NDArray[np.float64],
    weights: NDArray[np.float64],
    sigma: float,
) -> NDArray[np.float64]:
    """sum_j weights[j] N(points; nodes[j], sigma^2), shape (P,), in chunks of the grid."""
    density = np.empty_like(points)
    chunk = max(1, 4_000_000 // max(nodes.size, 1))  # bounds the (chunk, K) temporary
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for start in range(0, points.size, chunk):
        x = points[start : start + chunk, None]
        kernel = np.exp(-0.5 * ((x - nodes[None, :]) / sigma) ** 2)
        density[start : start + chunk] = norm * (kernel @ weights)
    return density


# --- validation and shared helpers -------------------------------------------------------


def _positive_int(where: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {name} must be a positive int, got {value!r}")
    return value


def _distribution(where: str, value: ProbeDistribution | str) -> ProbeDistribution:
    try:
        return ProbeDistribution(value)
    except ValueError:
        allowed = [d.value for d in ProbeDistribution]
        raise UsageError(f"{where}: distribution must be one of {allowed}, got {value!r}") from None


def _dimension(where: str, op: SymmetricOperator) -> int:
    n = op.num_params
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"{where}: the operator's num_params must be a positive int, got {n!r}")
    return n


def _probes(generator: torch.Generator, n: int, k: int, distribution: ProbeDistribution) -> Tensor:
    """Shape (n, k) float64 on the CPU: iid Rademacher or standard normal entries.

    Drawn one column at a time, so the i-th probe of a seed does not depend on how the probes
    are grouped into blocks (or on how many runs there are).
    """
    columns = []
    for _ in range(k):
        if distribution is ProbeDistribution.RADEMACHER:
            signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64)
            columns.append(signs.to(torch.float64).mul_(2).sub_(1))
        else:
            columns.append(torch.randn((n,), generator=generator, dtype=torch.float64))
    return torch.stack(columns, dim=1)


def _apply(
    where: str,
    op: SymmetricOperator,
    vectors: Tensor,
    block_size: int,
    advance: Advance | None = None,
) -> Tensor:
    """A @ vectors for float64 ``vectors`` of shape (n, k), ``block_size`` columns per call.

    Returns float64 on ``vectors``' device; each block is cast to the operator's dtype and
    device for the product. ``advance(k)`` is called after each block of k products.
    """
    blocks = []
    for start in range(0, vectors.shape[1], block_size):
        block = vectors[:, start : start + block_size]
        product = op.matmat(block.to(device=op.device, dtype=op.dtype))
        if tuple(product.shape) != tuple(block.shape):
            raise UsageError(
                f"{where}: operator.matmat returned shape {tuple(product.shape)} for input "
                f"of shape {tuple(block.shape)}"
            )
        blocks.append(product.to(device=vectors.device, dtype=torch.float64))
        if advance is not None:
            advance(block.shape[1])
    return torch.cat(blocks, dim=1)


def _quadratic_forms(vectors: Tensor, products: Tensor) -> NDArray[np.float64]:
    """z_i^T (A z_i) per column, shape (k,), float64 numpy."""
    forms: NDArray[np.float64] = (vectors * products).sum(dim=0).cpu().numpy()
    return forms


def _from_samples(
    samples: NDArray[np.float64], num_matvecs: int, low_rank_part: float = 0.0
) -> TraceEstimate:
    samples = np.ascontiguousarray(samples, dtype=np.float64)
    samples.setflags(write=False)
    std_error = (
        float(samples.std(ddof=1) / math.sqrt(samples.size)) if samples.size > 1 else math.nan
    )
    return TraceEstimate(
        estimate=low_rank_part + float(samples.mean()),
        std_error=std_error,
        num_matvecs=num_matvecs,
        samples=samples,
        low_rank_part=low_rank_part,
    )


def check_hutchpp_memory(where: str, n: int, num_matvecs: int, device: torch.device) -> None:
    """UsageError if Hutch++'s float64 blocks for ``num_matvecs`` exceed ``device``'s memory."""
    sketch_size = min(num_matvecs // 3, n)
    num_probes = num_matvecs - 2 * (num_matvecs // 3)
    check_memory(
        where,
        f"num_matvecs={num_matvecs:,} (a sketch of {sketch_size:,} and {num_probes:,} probes "
        f"of n={n:,})",
        (4 * sketch_size + 3 * num_probes) * n * FLOAT64_BYTES,
        device,
    )


def check_slq_memory(
    where: str, n: int, num_iters: int, num_runs: int, device: torch.device
) -> None:
    """UsageError if the SLQ basis (num_iters x num_runs n-vectors) exceeds ``device``'s memory."""
    check_memory(
        where,
        f"the Lanczos basis of num_iters={num_iters:,} x num_runs={num_runs:,} vectors of n={n:,}",
        (num_iters + 4) * num_runs * n * FLOAT64_BYTES,
        device,
    )


# --- trace estimators --------------------------------------------------------------------


def hutchinson_trace(
    op: SymmetricOperator,
    num_samples: int = 100,
    *,
    seed: int = 0,
    distribution: ProbeDistribution | str = ProbeDistribution.RADEMACHER,
    block_size: int = 16,
    progress: bool = True,
) -> TraceEstimate:
    """Hutchinson's estimate tr(A) ~ (1/m) sum_{i<m} z_i^T A z_i with random probes z_i.

    Args:
        op: symmetric operator A of shape (n, n) (only ``matmat`` is called).
        num_samples: m, the number of probes (= products with A).
        seed: seed of the CPU ``torch.Generator`` the probes are drawn from.
        distribution: ``"rademacher"`` (entries ±1; never worse, and exact on a diagonal A)
            or ``"gaussian"``.
        block_size: probes per ``matmat`` call (for a Hessian operator, one data pass each);
            larger is faster and takes more memory. The probes, and so the result, do not
            depend on it.
        progress: show the products done on stderr (terminals only).

    Returns:
        A :class:`TraceEstimate` with the m quadratic forms as ``samples`` and the standard
        error std(samples) / sqrt(m).

    Example::

        >>> class Identity:
        ...     num_params, dtype, device = 50, torch.float64, torch.device("cpu")
        ...     def matmat(self, v): return v
        >>> hutchinson_trace(Identity(), 10).estimate  # ||z||^2 = n for ±1 probes
        50.0
    """
    where = "hutchinson_trace"
    n = _dimension(where, op)
    num_samples = _positive_int(where, "num_samples", num_samples)
    block_size = _positive_int(where, "block_size", block_size)
    kind = _distribution(where, distribution)
    block = min(block_size, num_samples)
    check_memory(
        where,
        f"num_samples={num_samples:,} probes in blocks of {block} vectors of n={n:,}",
        (3 * block * n + num_samples) * FLOAT64_BYTES,
        op.device,
    )
    generator = torch.Generator().manual_seed(seed)
    samples = []
    with torch_work(), progress_task("trace (Hutchinson)", num_samples, progress) as advance:
        for start in range(0, num_samples, block_size):
            probes = _probes(generator, n, min(block_size, num_samples - start), kind)
            probes = probes.to(op.device)
            products = _apply(where, op, probes, block_size, advance)
            samples.append(_quadratic_forms(probes, products))
    return _from_samples(np.concatenate(samples), num_matvecs=num_samples)


def hutchpp_trace(
    op: SymmetricOperator,
    num_matvecs: int = 99,
    *,
    seed: int = 0,
    distribution: ProbeDistribution | str = ProbeDistribution.RADEMACHER,
    block_size: int = 16,
    progress: bool = True,
) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021, Alg. 1): exact trace of a sketch plus Hutchinson on the rest.

    With m = ``num_matvecs``, k = m // 3 and g = m - 2 k:

    1. S: n x k random signs; Q = orth(A S), n x k (reduced QR, float64);
    2. tr(A) = tr(Q^T A Q) + tr((I - QQ^T) A (I - QQ^T)); the first term costs k products
       (A Q), the second is estimated from g probes G as (1/g) sum_i w_i^T A w_i with
       w_i = (I - QQ^T) g_i (A symmetric, so one projection suffices).

    Unbiased (G is independent of S); exact when rank(A) <= k, as then range(Q) holds range(A).
    Beats Hutchinson when the spectrum decays fast (a Hessian's outliers, say).

    Args:
        op: symmetric operator A of shape (n, n).
        num_matvecs: m >= 3, the total number of products with A (fewer when k > n: the
            sketch then has n columns, Q spans everything and the estimate is exact).
        seed: seed of the CPU ``torch.Generator`` for S and G.
        distribution: entries of S and G, ``"rademacher"`` or ``"gaussian"``.
        block_size: columns per ``matmat`` call.
        progress: show the products done on stderr (terminals only).

    Returns:
        A :class:`TraceEstimate`: ``low_rank_part`` = tr(Q^T A Q), ``samples`` the g
        deflated quadratic forms, ``std_error`` from those alone.
    """
    where = "hutchpp_trace"
    n = _dimension(where, op)
    num_matvecs = _positive_int(where, "num_matvecs", num_matvecs)
    if num_matvecs < 3:
        raise UsageError(f"{where}: num_matvecs must be at least 3, got {num_matvecs}")
    block_size = _positive_int(where, "block_size", block_size)
    kind = _distribution(where, distribution)
    generator = torch.Generator().manual_seed(seed)
    # A sketch of more than n columns adds nothing (Q has at most n): never draw more.
    sketch_size = min(num_matvecs // 3, n)
    num_probes = num_matvecs - 2 * (num_matvecs // 3)
    check_hutchpp_memory(where, n, num_matvecs, op.device)

    with torch_work(), progress_task("trace (Hutch++)", num_matvecs, progress) as advance:
        sketch = _probes(generator, n, sketch_size, kind).to(op.device)
        basis = torch.linalg.qr(_apply(where, op, sketch, block_size, advance)).Q  # (n, <= k)
        products = _apply(where, op, basis, block_size, advance)
        low_rank_part = float(_quadratic_forms(basis, products).sum())

        probes = _probes(generator, n, num_probes, kind).to(op.device)
        probes = probes - basis @ (basis.T @ probes)
        samples = _quadratic_forms(probes, _apply(where, op, probes, block_size, advance))
    used = sketch_size + basis.shape[1] + num_probes
    return _from_samples(samples, num_matvecs=used, low_rank_part=low_rank_part)


# --- stochastic Lanczos quadrature -------------------------------------------------------


def spectral_density(
    op: SymmetricOperator,
    *,
    num_iters: int = 100,
    num_runs: int = 1,
    seed: int = 0,
    distribution: ProbeDistribution | str = ProbeDistribution.RADEMACHER,
    tol: float | None = None,
    progress: bool = True,
) -> SpectralDensity:
    """Spectral density of A by stochastic Lanczos quadrature, all runs advanced together.

    Each run r starts from q_1 = z / ||z|| (z random, so E[q q^T] = I / n) and takes
    k <= m = min(num_iters, n) Lanczos steps

        w = A q_j - alpha_j q_j - beta_{j-1} q_{j-1},  alpha_j = q_j^T A q_j,
        w <- w - Q_j (Q_j^T w)  (twice: full reorthogonalization against q_1..q_j),
        beta_j = ||w||,  q_{j+1} = w / beta_j,

    giving the tridiagonal T with diagonal alpha and off-diagonal beta. Its eigenpairs
    T = U diag(theta) U^T (``scipy.linalg.eigh_tridiagonal``) give the nodes theta_j and weights
    U[0, j]^2 of the run (Golub-Welsch). The R runs share one ``matmat`` per step: an (n, R)
    block, so m data passes in all for a Hessian operator.

    Breakdown: when beta_j <= tol * ||T_j|| (estimated by the largest |alpha| + beta so far),
    span(q_1..q_j) is invariant under A and the quadrature is exact for every polynomial: the
    run stops with j nodes (its row of ``nodes`` is NaN-padded). After m = n steps a run is
    complete in any case.

    Args:
        op: symmetric operator A of shape (n, n).
        num_iters: m, the Lanczos steps per run (clipped to n).
        num_runs: R, independent start vectors (the variance of the density falls like 1/R).
        seed: seed of the CPU ``torch.Generator`` for the start vectors.
        distribution: entries of z, ``"rademacher"`` or ``"gaussian"``.
        tol: relative breakdown threshold; default 100 eps of the operator's dtype (capped at
            1e-4), the size of the rounding in its products.
        progress: show the products done on stderr (terminals only).

    Returns:
        A :class:`SpectralDensity` with ``nodes`` and ``weights`` of shape (R, m).

    Memory: the float64 Lanczos basis, m * n * R * 8 bytes, on the operator's device; more
    than the device holds raises :class:`tailwise.UsageError` before anything is allocated.
    """
    where = "spectral_density"
    n = _dimension(where, op)
    num_iters = min(_positive_int(where, "num_iters", num_iters), n)
    num_runs = _positive_int(where, "num_runs", num_runs)
    kind = _distribution(where, distribution)
    if tol is None:
        tol = min(100 * torch.finfo(op.dtype).eps, 1e-4)
    elif not (math.isfinite(tol) and tol >= 0):
        raise UsageError(f"{where}: tol must be a non-negative finite float, got {tol!r}")

    check_slq_memory(where, n, num_iters, num_runs, op.device)

    with torch_work():
        start = _probes(torch.Generator().manual_seed(seed), n, num_runs, kind).to(op.device)
        start = start / torch.linalg.vector_norm(start, dim=0)
        with progress_task("spectral density (SLQ)", num_iters * num_runs, progress) as advance:
            alphas, betas, steps, num_matvecs = _block_lanczos_recurrence(
                op, start, num_iters, tol, advance
            )

        nodes = np.full((num_runs, num_iters), np.nan)
        weights = np.zeros((num_runs, num_iters))
        for run in range(num_runs):
            k = int(steps[run])
            theta, vectors = eigh_tridiagonal(alphas[:k, run], betas[: k - 1, run])
            nodes[run, :k] = theta
            weights[run, :k] = vectors[0] ** 2
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return SpectralDensity(nodes=nodes, weights=weights, num_params=n, num_matvecs=num_matvecs)


def _block_lanczos_recurrence(
    op: SymmetricOperator, start: Tensor, num_iters: int, tol: float, advance: Advance
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], int]:
    """R independent Lanczos recurrences (not block Lanczos: the runs never mix).

    Args:
        start: (n, R) float64 unit columns on the operator's device.

    Returns:
        ``(alphas (m, R), betas (m, R), steps (R,), num_matvecs)``: run r's tridiagonal has
        diagonal ``alphas[:steps[r], r]`` and off-diagonal ``betas[:steps[r] - 1, r]``.
    """
    where = "spectral_density"
    n, num_runs = start.shape
    # Run-major layout (R, m, n): each run's basis is one contiguous (m, n) block, so the
    # reorthogonalization is two batched matrix products without copies of the basis.
    basis = torch.zeros((num_runs, num_iters, n), dtype=torch.float64, device=start.device)
    basis[:, 0] = start.T
    alphas = np.zeros((num_iters, num_runs))
    betas = np.zeros((num_iters, num_runs))
    steps = np.full(num_runs, num_iters, dtype=np.int64)
    norm_estimate = np.zeros(num_runs)
    active = np.ones(num_runs, dtype=bool)
    num_matvecs = 0
    for j in range(num_iters):
        columns = torch.from_numpy(np.flatnonzero(active)).to(start.device)
        # Only running columns are multiplied; stopped ones stay zero through the updates.
        w = torch.zeros((num_runs, n), dtype=torch.float64, device=start.device)
        w[columns] = _apply(where, op, basis[columns, j].T, num_runs, advance).T
        num_matvecs += int(columns.numel())
        alpha = (basis[:, j] * w).sum(dim=1)
        alphas[j, active] = alpha.cpu().numpy()[active]
        if j == num_iters - 1:
            break
        w -= alpha[:, None] * basis[:, j]
        if j > 0:
            w -= torch.from_numpy(betas[j - 1]).to(w)[:, None] * basis[:, j - 1]
        done = basis[:, : j + 1]  # (R, j + 1, n)
        for _ in range(2):  # "twice is enough" (Kahan, Parlett): orthogonal to rounding
            coefficients = torch.bmm(done, w.unsqueeze(2))  # (R, j + 1, 1)
            w -= torch.bmm(done.transpose(1, 2), coefficients).squeeze(2)
        beta = torch.linalg.vector_norm(w, dim=1).cpu().numpy()
        previous = betas[j - 1] if j > 0 else 0.0
        norm_estimate = np.maximum(norm_estimate, np.abs(alphas[j]) + beta + previous)
        broke = active & (beta <= tol * norm_estimate)
        steps[broke] = j + 1
        active &= ~broke
        betas[j, active] = beta[active]
        if not active.any():
            break
        scale = torch.from_numpy(np.where(active, beta, np.inf)).to(w)
        basis[:, j + 1] = w / scale[:, None]  # stopped runs get the zero vector
    return alphas, betas, steps, num_matvecs
