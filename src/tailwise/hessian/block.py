"""Block Lanczos with full reorthogonalization and thick restarts, on blocks of products.

The default solver of :func:`tailwise.hessian.top_eigenvalues` (``method="block"``). It sees a
symmetric operator A (n x n) only through ``matmat``, one block of b columns per call, so for a
Hessian one pass over the data serves b products (REFERENCES §6; source 004 §3.9 computes the
same extreme eigenpairs by power iteration, which needs several times more products).

Algorithm (Golub and Underwood 1977, block Lanczos; thick restart as in Wu and Simon 2000 and
Stewart's Krylov-Schur 2001). Keep an orthonormal basis V = [V_old, Q_j] (n x m, float64) and
the projection T = V^T A V (m x m). One iteration multiplies the newest block Q_j (n x b):

    C = V^T (A Q_j),  W = A Q_j - V C,  C <- C + V^T W,  W <- W - V (V^T W)   (twice: full
    reorthogonalization, "twice is enough"), T[:, j] = C, T[j, :] = C^T,

so T is the exact projection, not the three-term recurrence's approximation of it. The Ritz
pairs are T = Y diag(theta) Y^T, x = V y; since A V = V T + W E_j^T (E_j selects the last block),
the residual of a Ritz pair is A x - theta x = W y_j (y_j: the rows of y on Q_j), so with
W = Q_{j+1} B (QR) its norm ||B y_j|| costs no product. A pair has converged when

    ||A x - theta x|| <= tol * max(|theta|, eps^(2/3) ||T||)                     (ARPACK's rule)

which bounds the eigenvalue error by ||r|| and, once theta is separated from the rest of the
spectrum by a gap delta, by ||r||^2 / delta (Parlett, The Symmetric Eigenvalue Problem, §11.7).
The next block is Q_{j+1}. When the basis is full, it is restarted with the p Ritz vectors
nearest the wanted end (T becomes diag(theta_keep)) and continues with Q_{j+1}: the residuals
of the kept vectors lie in span(Q_{j+1}), so no Krylov information about them is lost.

A block Krylov method converges for clustered eigenvalues (up to b of them) where single-vector
Lanczos stalls, and for b = 1 it is Lanczos with full reorthogonalization. All arithmetic is in
the dtype of the start block (float64, float32 on Apple's MPS); the products are cast by the
operator.

>>> import torch
>>> spectrum = torch.cat([torch.tensor([10.0, 9.0, 8.0]), torch.linspace(0, 1, 97)]).double()
>>> start = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
>>> found = block_lanczos(lambda v: spectrum[:, None] * v, start, k=3, which="LA", tol=1e-8)
>>> found.values.round(6).tolist(), found.converged, found.num_products
([10.0, 9.0, 8.0], True, 18)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from tailwise._errors import UsageError

__all__ = ["BlockLanczosResult", "block_lanczos", "default_basis_size"]

MatMat = Callable[[Tensor], Tensor]
# A new direction whose norm after the projection is at most this share of the norm of the
# product it came from is a breakdown: the basis is invariant in that direction up to the
# rounding of the products (about 1e-7 relative for a float32 model), and a random direction
# takes its place. Far below any useful tol, so a converging pair never triggers it.
_BREAKDOWN = 1e-6
_WHICH = ("LA", "SA", "LM")


@dataclass(frozen=True, eq=False)
class BlockLanczosResult:
    """What :func:`block_lanczos` found.

    Attributes:
        values: shape (k,), float64, ordered from the wanted end: descending for ``"LA"``,
            ascending for ``"SA"``, descending by magnitude for ``"LM"``; NaN for pairs
            ``max_iter`` left no room for (fewer than k basis columns).
        vectors: shape (n, k), unit columns in the order of ``values``, the start block's
            dtype and device.
        residuals: shape (k,), float64: ||A x_j - theta_j x_j|| of each pair (inf where
            ``values`` is NaN).
        iterations: block products (calls of ``matmat``).
        num_products: columns multiplied in all (the sum of the block widths).
        converged: whether every pair met the stopping rule within ``max_iter``.
    """

    values: NDArray[np.float64]
    vectors: Tensor
    residuals: NDArray[np.float64]
    iterations: int
    num_products: int
    converged: bool


def default_basis_size(n: int, k: int, block_size: int) -> int:
    """The default largest basis: ``min(n, max(20, 2 k + 4 b))`` columns.

    Large enough that the top few eigenpairs of a network's Hessian converge before the first
    restart (measured on CIFAR-shaped CNNs: 8-12 products for k = 1, 16-24 for k = 5 with
    b = 2), small enough that the basis (8 bytes per entry) stays a few times the ARPACK basis
    of :func:`tailwise.hessian.top_eigenvalues` ``(method="lanczos")``.
    """
    return min(n, max(20, 2 * k + 4 * block_size))


def _wanted_order(theta: Tensor, which: str) -> Tensor:
    """Indices of the Ritz values ``theta`` (ascending) from the wanted end."""
    if which == "LA":
        return torch.arange(theta.numel() - 1, -1, -1)
    if which == "SA":
        return torch.arange(theta.numel())
    return torch.argsort(-theta.abs(), stable=True)


def _project_out(basis: Tensor, block: Tensor, local: int = 0) -> tuple[Tensor, Tensor]:
    """``block`` (b, n) minus its projection on the orthonormal rows of ``basis`` (m, n); and
    the coefficients (m, b). Rows are the vectors: contiguous for BLAS.

    The last ``local`` rows are projected out first: in a Lanczos step they carry almost all
    of the product (the three-term recurrence), so the following full classical Gram-Schmidt
    pass only removes rounding. That pass is repeated when it removed more than
    1 - 1/sqrt(2) of a row's norm (the DGKS criterion, Daniel, Gragg, Kaufman and Stewart
    1976), after which the result is orthogonal to the basis to rounding ("twice is
    enough"). The whole basis is read twice, rarely four times.
    """
    coefficients = torch.zeros((basis.shape[0], block.shape[0]), dtype=block.dtype)
    coefficients = coefficients.to(block.device)
    if 0 < local < basis.shape[0]:
        recent = basis[-local:]
        near = recent @ block.T
        block = block - near.T @ recent
        coefficients[-local:] = near
    for _ in range(2):
        before = torch.linalg.vector_norm(block, dim=1)
        again = basis @ block.T
        block = block - again.T @ basis
        coefficients += again
        after = torch.linalg.vector_norm(block, dim=1)
        if bool((after >= before / math.sqrt(2)).all()):
            break
    return block, coefficients


def _orthonormal_extension(
    basis: Tensor, block: Tensor, reference: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, bool]:
    """Q (b, n) and B (b, b) with block^T = Q^T B (QR), the rows of Q orthonormal and
    orthogonal to the rows of ``basis``; and whether a breakdown replaced a row.

    ``block`` (b, n) is already orthogonal to ``basis``. A row whose new component (the
    diagonal of B) is at most ``_BREAKDOWN`` times ``reference`` (b,) (the norms of the products
    it came from; 0 for a start block) is a breakdown: the basis is invariant in that direction,
    and a random direction orthogonal to everything takes its place, so the space keeps growing
    (its coupling in B stays ~0).
    """
    q_t, coupling = torch.linalg.qr(block.T)
    q = q_t.T.contiguous()
    lost = coupling.diagonal().abs() <= _BREAKDOWN * reference.to(coupling)
    replaced = bool(lost.any())
    for _ in range(3):
        if bool(lost.any()):
            fresh = torch.randn(int(lost.sum()), q.shape[1], generator=generator, dtype=q.dtype)
            q[lost] = fresh.to(q.device)
        elif not replaced:
            break  # Q = block B^-1 is orthogonal to the basis already
        q = _project_out(basis, q)[0]
        q_t, r = torch.linalg.qr(q.T)
        q = q_t.T.contiguous()
        lost = r.diagonal().abs() < 0.5  # a row that lay (mostly) in span(basis)
        replaced = True
    return q, coupling, replaced


def _rotate_in_place(basis: Tensor, end: int, rotation: Tensor) -> None:
    """basis[:p] = rotation (p, end) @ basis[:end], a slab of columns at a time, so the restart
    needs no second copy of the basis (each slab is read whole before it is written)."""
    keep = rotation.shape[0]
    width = max(1, (1 << 22) // max(end, 1))  # about 32 MiB of float64 per slab
    for start in range(0, basis.shape[1], width):
        slab = basis[:end, start : start + width]
        basis[:keep, start : start + width] = rotation @ slab


def block_lanczos(
    matmat: MatMat,
    start: Tensor,
    k: int,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 1000,
    max_basis: int | None = None,
    seed: int = 0,
) -> BlockLanczosResult:
    """The k extreme eigenpairs of a symmetric A from block products ``matmat(V) = A V``.

    Args:
        matmat: takes V (n, b) in ``start``'s dtype and device and returns A V, same shape.
        start: the start block (n, b); its b columns (orthonormalized here) fix the block
            size. A random block: a start orthogonal to a wanted eigenvector can miss it.
        k: the number of eigenpairs, 1 <= k <= n.
        which: ``"LA"`` (largest algebraic), ``"SA"`` (smallest) or ``"LM"`` (largest
            magnitude).
        tol: the relative residual of the stopping rule (module docstring), > 0.
        max_iter: the most block products.
        max_basis: the most basis columns kept between restarts, at least k + 2 b (default
            :func:`default_basis_size`); memory: ``max_basis`` n-vectors of ``start``'s dtype.
        seed: seeds the random directions that replace a block the basis already spans.

    Returns:
        A :class:`BlockLanczosResult`; ``converged=False`` leaves the last Ritz pairs.
    """
    if start.ndim != 2 or start.shape[1] < 1:
        raise UsageError(f"block_lanczos: start must have shape (n, b), got {tuple(start.shape)}")
    n, width = start.shape
    if which not in _WHICH:
        raise UsageError(f"block_lanczos: which must be one of {list(_WHICH)}, got {which!r}")
    if not 1 <= k <= n:
        raise UsageError(f"block_lanczos: k must be in [1, {n}], got {k}")
    if not tol > 0:
        raise UsageError(f"block_lanczos: tol must be > 0, got {tol!r}")
    if max_iter < 1:
        raise UsageError(f"block_lanczos: max_iter must be >= 1, got {max_iter}")
    size = default_basis_size(n, k, width) if max_basis is None else max_basis
    if size < min(n, k + 2 * width):
        raise UsageError(
            f"block_lanczos: max_basis must be at least k + 2 b = {k + 2 * width} (or n), "
            f"got {size}"
        )
    size = min(size, n)
    dtype, device = start.dtype, start.device
    generator = torch.Generator().manual_seed(seed)
    eps23 = float(torch.finfo(dtype).eps) ** (2 / 3)

    # basis[i] is the i-th basis vector: rows are contiguous n-vectors.
    basis = torch.empty((size, n), dtype=dtype, device=device)
    projection = torch.zeros((size, size), dtype=torch.float64)
    block, _, _ = _orthonormal_extension(
        basis[:0], start.T, torch.zeros(width, dtype=dtype), generator
    )
    block = block[: min(width, size)]
    begin = 0  # first row of the block to multiply; basis[:begin] is complete
    basis[: block.shape[0]] = block
    iterations = products = 0
    converged = False
    theta = torch.zeros(0, dtype=torch.float64)
    rotation = torch.zeros((0, 0), dtype=torch.float64)
    norms = torch.zeros(0, dtype=torch.float64)
    wanted = torch.zeros(0, dtype=torch.int64)
    end = 0
    while True:
        b = block.shape[0]
        end = begin + b
        image = matmat(basis[begin:end].T)
        iterations += 1
        products += b
        if tuple(image.shape) != (n, b):
            raise UsageError(
                f"block_lanczos: matmat returned shape {tuple(image.shape)} for a block of "
                f"shape {(n, b)}"
            )
        image = image.T.to(dtype)
        residual, coefficients = _project_out(basis[:end], image, local=2 * b)
        columns = coefficients.to(torch.float64).cpu()
        projection[:end, begin:end] = columns
        projection[begin:end, :end] = columns.T
        square = projection[begin:end, begin:end]
        projection[begin:end, begin:end] = (square + square.T) / 2
        theta, rotation = torch.linalg.eigh(projection[:end, :end])
        order = _wanted_order(theta, which)
        wanted = order[: min(k, end)]
        broke = False
        if end < n:
            following, coupling, broke = _orthonormal_extension(
                basis[:end], residual, torch.linalg.vector_norm(image, dim=1), generator
            )
            last_rows = rotation[begin:end, wanted]
            norms = torch.linalg.vector_norm(coupling.to(torch.float64).cpu() @ last_rows, dim=0)
        else:  # the basis spans everything: T is A in that basis, the pairs are exact
            following = basis[:0]
            norms = torch.zeros(wanted.numel(), dtype=torch.float64)
        scale = float(theta.abs().max()) if theta.numel() else 0.0
        floor = eps23 * scale
        # After a breakdown the pairs are exact in the invariant space found so far; an
        # eigenvalue outside it (a multiplicity beyond the block size) shows only once the
        # fresh directions are multiplied, so convergence waits for them.
        if (
            not broke
            and wanted.numel() == k
            and bool((norms <= tol * torch.clamp(theta[wanted].abs(), min=floor)).all())
        ):
            converged = True
            break
        if iterations >= max_iter or end >= n:
            converged = end >= n
            break
        next_width = min(width, n - end, following.shape[0])
        following = following[:next_width]
        if end + next_width > size:  # restart with the Ritz vectors nearest the wanted end
            keep = min(end, max(k + next_width, (size + k) // 2), size - next_width)
            kept = order[:keep]
            _rotate_in_place(basis, end, rotation[:, kept].T.to(dtype=dtype, device=device))
            projection.zero_()
            projection[:keep, :keep] = torch.diag(theta[kept])
            end = keep
        basis[end : end + next_width] = following
        begin = end
        block = basis[begin : begin + next_width]

    vectors = (rotation[:, wanted].T.to(dtype=dtype, device=device) @ basis[:end]).T
    values = theta[wanted].numpy().astype(np.float64)
    residuals = norms.numpy().astype(np.float64)
    missing = k - values.size  # max_iter ran out before the basis had k columns
    if missing:
        values = np.concatenate([values, np.full(missing, np.nan)])
        residuals = np.concatenate([residuals, np.full(missing, np.inf)])
        vectors = torch.cat([vectors, vectors.new_full((n, missing), float("nan"))], dim=1)
    return BlockLanczosResult(
        values=values,
        vectors=vectors,
        residuals=residuals,
        iterations=iterations,
        num_products=products,
        converged=converged,
    )
