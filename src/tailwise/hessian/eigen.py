"""Extreme eigenvalues of the loss Hessian from Hessian-vector products (source 004 §3.9).

One entry point, :func:`top_eigenvalues`, with four methods on a :class:`HessianOperator`:

- ``"block"`` (default): block Lanczos with full reorthogonalization and thick restarts
  (:func:`tailwise.hessian.block.block_lanczos`) on :meth:`HessianOperator.matmat`, b columns
  per product call (one pass over the data, or one backward pass through each retained
  gradient graph per column). Any of ``which="LA"`` (largest algebraic), ``"SA"`` (smallest
  algebraic) or ``"LM"`` (largest magnitude). Stops on ARPACK's relative-residual rule, checked
  after every block, so it spends no product beyond the one that meets it.
- ``"lanczos"``: implicitly restarted Lanczos, ``scipy.sparse.linalg.eigsh`` (ARPACK) on
  :meth:`HessianOperator.to_scipy`, float64 Lanczos vectors, one product per step; at least
  ``ncv`` products whatever the tolerance. Any ``which``.
- ``"power"``: simultaneous (block) power iteration, source 004 Algorithm 1: Q random (n, k)
  orthonormalized by QR, then Z = H Q (one block product, one pass over the data) and
  Q, R = QR(Z) until sum (Q - Q_prev)^2 < tol (004 uses 1e-3).
- ``"deflation"``: power iteration one eigenpair at a time, orthogonalized against the pairs
  already found, stopped when the eigenvalue estimate changes by less than ``tol`` relative:
  what PyHessian's ``eigenvalues`` does (Yao et al. 2020), for comparison with it.

Power iteration converges to the eigenvalues of largest *magnitude* (rate |lambda_{k+1}| /
|lambda_k|), so ``"power"`` and ``"deflation"`` only support ``which="LM"``; at a minimum of the
loss the top of the spectrum is positive and LM and LA agree.

>>> import torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
>>> data = (torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,)))
>>> result = top_eigenvalues(model, nn.functional.cross_entropy, data, k=2)
>>> result.eigenvalues.shape, tuple(result.eigenvectors.shape), result.converged
((2,), (23, 2), True)
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._progress import progress_task
from tailwise._threads import torch_work
from tailwise.hessian._budget import FLOAT64_BYTES, check_memory
from tailwise.hessian.block import block_lanczos, default_basis_size
from tailwise.hessian.hvp import HVPMethod
from tailwise.hessian.operator import Data, HessianOperator, LossFn

__all__ = ["EigenMethod", "EigenResult", "EigenSolver", "Which", "top_eigenvalues"]


class EigenSolver(str, enum.Enum):
    """The algorithm of :func:`top_eigenvalues` (its ``method``)."""

    BLOCK = "block"
    LANCZOS = "lanczos"
    POWER = "power"
    DEFLATION = "deflation"


#: Former name of :class:`EigenSolver` (``tailwise.spectral.esd.EigenMethod`` is another enum).
EigenMethod = EigenSolver


class Which(str, enum.Enum):
    """Which end of the spectrum :func:`top_eigenvalues` returns (ARPACK's names)."""

    LARGEST_ALGEBRAIC = "LA"
    SMALLEST_ALGEBRAIC = "SA"
    LARGEST_MAGNITUDE = "LM"


#: Default ``tol`` per method: the relative residual (block: 1e-3, so the eigenvalue error is
#: at most about 1e-5 relative where the eigenvalue is 10% from the next one, 1e-8 to 1e-6
#: measured on CIFAR-shaped CNNs, and never above 1e-3; ARPACK, which cannot stop between
#: restarts, 1e-6), 004's subspace change, PyHessian's relative eigenvalue change.
DEFAULT_TOL: dict[EigenSolver, float] = {
    EigenSolver.BLOCK: 1e-3,
    EigenSolver.LANCZOS: 1e-6,
    EigenSolver.POWER: 1e-3,
    EigenSolver.DEFLATION: 1e-3,
}
#: Default ``max_iter`` per method: block products, ARPACK restarts, block iterations,
#: iterations per eigenpair (PyHessian's ``maxIter``).
DEFAULT_MAX_ITER: dict[EigenSolver, int] = {
    EigenSolver.BLOCK: 1000,
    EigenSolver.LANCZOS: 1000,
    EigenSolver.POWER: 1000,
    EigenSolver.DEFLATION: 100,
}


@dataclass(frozen=True, eq=False)
class EigenResult:
    """Eigenpairs of a Hessian found by :func:`top_eigenvalues`.

    Attributes:
        eigenvalues: shape (k,), float64. Order: descending by value for ``which="LA"``,
            ascending by value for ``"SA"`` (the most negative first), descending by magnitude
            for ``"LM"`` (and so for ``"power"`` and ``"deflation"``). NaN where Lanczos did not
            converge (see ``converged``).
        eigenvectors: shape (n, k), float64, unit columns, on the operator's device, in the
            order of ``eigenvalues``; column j is the flat vector of
            :meth:`HessianOperator.unflatten`.
        num_matvecs: Hessian-vector products over the full data spent (a block of k counts k).
        iterations: block: block products; Lanczos: products (ARPACK does not report its
            restarts); power: block iterations; deflation: power steps summed over the
            eigenpairs.
        converged: whether the stopping rule was met (for every eigenpair) within ``max_iter``.
        method: ``"block"``, ``"lanczos"``, ``"power"`` or ``"deflation"``.
    """

    eigenvalues: NDArray[np.float64]
    eigenvectors: Tensor
    num_matvecs: int
    iterations: int
    converged: bool
    method: str


def _enum_value(where: str, name: str, kind: type[enum.Enum], value: object) -> enum.Enum:
    try:
        return kind(value)
    except ValueError:
        allowed = [member.value for member in kind]
        raise UsageError(f"{where}: {name} must be one of {allowed}, got {value!r}") from None


def _build_operator(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None,
    data: Data | None,
    params: Sequence[str] | None,
    hvp_method: HVPMethod | str | None,
    retain_graph: bool | None,
) -> HessianOperator:
    if isinstance(model, HessianOperator):
        given = [
            name
            for name, value in (
                ("loss_fn", loss_fn),
                ("data", data),
                ("params", params),
                ("hvp_method", hvp_method),
                ("retain_graph", retain_graph),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"top_eigenvalues: {', '.join(given)} must not be given with a HessianOperator "
                "(it has its own); pass them to HessianOperator instead"
            )
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            "top_eigenvalues: model must be an nn.Module or a HessianOperator, got "
            f"{type(model).__name__}"
        )
    if loss_fn is None or data is None:
        raise UsageError("top_eigenvalues: a model needs loss_fn and data")
    return HessianOperator(
        model,
        loss_fn,
        data,
        params=params,
        hvp_method=hvp_method,
        retain_graph=retain_graph,
    )


def _check_int(where: str, name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UsageError(f"{where}: {name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UsageError(f"{where}: {name} must be {bounds}, got {value!r}")
    return int(value)


def top_eigenvalues(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: Data | None = None,
    k: int = 1,
    *,
    method: EigenSolver | str | None = None,
    which: Which | str | None = None,
    params: Sequence[str] | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    hvp_method: HVPMethod | str | None = None,
    ncv: int | None = None,
    block_size: int | None = None,
    retain_graph: bool | None = None,
    progress: bool = True,
) -> EigenResult:
    """The k extreme eigenvalues and eigenvectors of the Hessian of the full-data loss.

    Either ``top_eigenvalues(model, loss_fn, data, k, ...)``, which builds a
    :class:`HessianOperator` (with ``params``, ``hvp_method`` and ``retain_graph``, and its
    determinism check: call ``model.eval()`` first), or ``top_eigenvalues(operator, k=k, ...)``
    on a prebuilt one (then ``loss_fn``, ``data``, ``params``, ``hvp_method`` and
    ``retain_graph`` must be left out).

    Args:
        model: an ``nn.Module`` or a :class:`HessianOperator`.
        loss_fn, data, params, hvp_method, retain_graph: as for :class:`HessianOperator`
            (``retain_graph``: keep each batch's gradient graph and multiply through it,
            chosen automatically when it is small against the machine's memory).
        k: number of eigenpairs, 1 <= k < n for ``"block"`` and ``"lanczos"``, k <= n for the
            power methods.
        method: the solver (:class:`EigenSolver`): ``"block"`` (block Lanczos,
            :mod:`tailwise.hessian.block`), ``"lanczos"`` (ARPACK), ``"power"`` (004
            Algorithm 1) or ``"deflation"`` (PyHessian). Default ``"block"``, or
            ``"lanczos"`` when ``ncv`` (an ARPACK setting) is given.
        which: ``"LA"``, ``"SA"`` or ``"LM"`` (see :class:`Which`); default ``"LA"`` for
            block and Lanczos and ``"LM"``, the only choice, for the power methods.
        tol: stopping tolerance; default :data:`DEFAULT_TOL`. Block and Lanczos: the relative
            residual, ||H v - lambda v|| <= tol |lambda| (ARPACK's rule; the eigenvalue error is
            then at most tol |lambda| and usually of order tol^2 |lambda| / relative gap, plus
            the float rounding of the products; block's default 1e-3 gives 1e-8 to 1e-6 on
            CIFAR-shaped CNNs). Power: 004's rule sum_ij (Q - Q_prev)_ij^2 < tol (column signs
            aligned first). Deflation: |lambda_t - lambda_{t-1}| < tol (|lambda_{t-1}| + 1e-6)
            per eigenpair.
        max_iter: default :data:`DEFAULT_MAX_ITER`. Block: block products; Lanczos: ARPACK
            restarts; power: block iterations; deflation: iterations per eigenpair.
        seed: seeds the start vector(s), drawn on the CPU in float64: a seed gives the same
            result on every run.
        ncv: Lanczos only: the number of Lanczos vectors ARPACK keeps between restarts, in
            (k, n]; it is also the fewest products a run can take. Default, at most n:
            ``max(2k + 1, k + 6)`` for ``"LA"`` and ``"LM"``, whose eigenvalues are the
            well-separated outliers at the top of a network's Hessian (measured on a digits
            CNN, k = 1: 8 products, against 21 with SciPy's default max(2k + 1, 20)); SciPy's
            ``max(2k + 1, 20)`` for ``"SA"``, whose eigenvalues sit at the edge of the dense
            bulk near zero and need the larger basis (71 products, against 284 with 7).
        block_size: block only: b, the columns per product call, in [1, n - 1]. Default
            (:func:`default_block_size`): with retained gradient graphs, where a column costs
            the same alone or in a block, 1 for k = 1 and 2 otherwise (the fewest products:
            b = 2 resolves pairs of close eigenvalues); without, where a pass over the data
            serves the whole block, min(k + 1, 4).
        progress: show the number of Hessian-vector products on stderr (terminals only).

    Returns:
        :class:`EigenResult`, eigenvalues ordered as ``which`` says. ``converged=False`` (with
        a ``RuntimeWarning``) when ``max_iter`` ran out; power and deflation then return their
        last estimates, Lanczos NaN for the pairs that had not converged.

    Bad values raise :class:`tailwise.UsageError` before any product: k out of range (k larger
    than the selected parameters allow is refused, never clipped), and a k, ``ncv`` or
    ``block_size`` whose float64 blocks of n-vectors would not fit the memory of the machine
    (or device).

    Threads: the block runs under the torch-work policy of ``tailwise._threads`` (torch keeps
    its threads, SciPy's BLAS gets one; ``TAILWISE_THREADS`` overrides).

    Accuracy: the products are computed in the model's dtype and summed in float64; with a
    float32 model the eigenvalues carry the products' rounding (1e-7 to 1e-6 relative on
    digits MLPs and CNNs). Use a float64 model (``model.double()`` and float64 data) for
    reference values.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 1).double()  # least squares: H = 2 [X 1]^T [X 1] / N
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    >>> found = top_eigenvalues(model, nn.functional.mse_loss, (x, y), k=2, progress=False)
    >>> design = torch.cat([x, torch.ones(16, 1, dtype=torch.float64)], dim=1)
    >>> exact = torch.linalg.eigvalsh(2 * design.T @ design / 16).flip(0)[:2].numpy()
    >>> found.method, bool(np.allclose(found.eigenvalues, exact, rtol=1e-5))
    ('block', True)
    """
    with torch_work():
        return _top_eigenvalues(
            model,
            loss_fn,
            data,
            k,
            method,
            which,
            params,
            tol,
            max_iter,
            seed,
            hvp_method,
            ncv,
            block_size,
            retain_graph,
            progress,
        )


def default_block_size(k: int, retained: bool) -> int:
    """The default ``block_size`` of ``method="block"`` for k eigenpairs.

    With retained gradient graphs (``HessianOperator.retains_graph``) every column is its own
    backward pass, so the fewest products win: b = 1 (Lanczos) for k = 1, b = 2 otherwise
    (measured on CIFAR-shaped CNNs, top-5 to 1e-6: 16-20 products with b = 2, 18-21 with 3,
    24-28 with 4). Without, one pass over the data serves the block (and ``vmap`` shares the
    forward pass between its columns): min(k + 1, 4).

    >>> default_block_size(1, retained=True), default_block_size(5, retained=True)
    (1, 2)
    >>> default_block_size(1, retained=False), default_block_size(5, retained=False)
    (2, 4)
    """
    if retained:
        return 1 if k == 1 else 2
    return min(k + 1, 4)


def memory_needed(
    n: int,
    k: int,
    method: EigenSolver,
    ncv: int | None = None,
    block_size: int | None = None,
) -> tuple[int, str]:
    """Bytes of float64 n-vectors :func:`top_eigenvalues` holds at once, and what they are.

    Block: the basis of :func:`tailwise.hessian.block.default_basis_size` vectors, 4 blocks
    of b (the block, its product, the next block and a QR) and the k eigenvectors (default
    b: 2); Lanczos: ARPACK's basis of ``ncv`` vectors, its 3 work vectors and the k
    eigenvectors; power: the block, its product and QR (about 4 k vectors); deflation: k found
    vectors and 3 more.
    """
    if method is EigenSolver.BLOCK:
        width = 2 if block_size is None else block_size
        basis = default_basis_size(n, k, width)
        columns = basis + 4 * width + k
        what = (
            f"the block Lanczos basis of {basis} vectors, blocks of {width} and k={k} "
            f"eigenvectors of n={n:,}"
        )
    elif method is EigenSolver.LANCZOS:
        columns = (ncv if ncv is not None else k + 1) + 3 + k
        what = f"the Lanczos basis of ncv={ncv} vectors and k={k} eigenvectors of n={n:,}"
    elif method is EigenSolver.POWER:
        columns = 4 * k
        what = f"power iteration on a block of k={k} vectors of n={n:,}"
    else:
        columns = k + 3
        what = f"deflation over k={k} vectors of n={n:,}"
    return columns * n * FLOAT64_BYTES, what


def _top_eigenvalues(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None,
    data: Data | None,
    k: int,
    method: EigenSolver | str | None,
    which: Which | str | None,
    params: Sequence[str] | None,
    tol: float | None,
    max_iter: int | None,
    seed: int,
    hvp_method: HVPMethod | str | None,
    ncv: int | None,
    block_size: int | None,
    retain_graph: bool | None,
    progress: bool,
) -> EigenResult:
    where = "top_eigenvalues"
    if method is None:
        method = EigenSolver.LANCZOS if ncv is not None else EigenSolver.BLOCK
    method = EigenSolver(_enum_value(where, "method", EigenSolver, method))
    krylov = method in (EigenSolver.BLOCK, EigenSolver.LANCZOS)
    if which is None:
        which = Which.LARGEST_ALGEBRAIC if krylov else Which.LARGEST_MAGNITUDE
    which = Which(_enum_value(where, "which", Which, which))
    if not krylov and which is not Which.LARGEST_MAGNITUDE:
        raise UsageError(
            f"top_eigenvalues: method={method.value!r} converges to the eigenvalues of largest "
            f"magnitude, so which must be 'LM', got {which.value!r}; use method='block' or "
            "'lanczos' for 'LA' or 'SA'"
        )
    seed = _check_int(where, "seed", seed, 0)
    tol = DEFAULT_TOL[method] if tol is None else tol
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise UsageError(f"{where}: tol must be a number > 0, got {tol!r}")
    max_iter = _check_int(
        where, "max_iter", DEFAULT_MAX_ITER[method] if max_iter is None else max_iter, 1
    )
    if ncv is not None and method is not EigenSolver.LANCZOS:
        raise UsageError(f"{where}: ncv is a Lanczos setting, got it with method={method.value!r}")
    if block_size is not None and method is not EigenSolver.BLOCK:
        raise UsageError(
            f"{where}: block_size is a setting of method='block', got it with "
            f"method={method.value!r}"
        )
    operator = _build_operator(model, loss_fn, data, params, hvp_method, retain_graph)
    n = operator.num_params
    high = n - 1 if krylov else n
    if high < 1:
        raise UsageError(f"{where}: method={method.value!r} needs at least 2 parameters, got n={n}")
    if not isinstance(k, bool) and isinstance(k, (int, np.integer)) and k > high:
        raise UsageError(
            f"{where}: k must be in [1, {high}], got {k}: the n={n:,} selected parameters "
            f"give at most {high:,} eigenvalues with method={method.value!r}"
            + (" (Krylov methods: k < n)" if krylov else "")
        )
    k = _check_int(where, "k", k, 1, high)
    if method is EigenSolver.BLOCK:
        if block_size is None:
            block_size = min(n - 1, default_block_size(k, operator.retains_graph))
        else:
            block_size = _check_int(where, "block_size", block_size, 1, n - 1)
    if ncv is None:
        ncv = min(n, max(2 * k + 1, 20 if which is Which.SMALLEST_ALGEBRAIC else k + 6))
    else:
        ncv = _check_int(where, "ncv", ncv, k + 1, n)
    needed, what = memory_needed(
        n,
        k,
        method,
        ncv if method is EigenSolver.LANCZOS else None,
        block_size,
    )
    device = torch.device("cpu") if method is EigenSolver.LANCZOS else operator.device
    check_memory(where, what, needed, device)
    start = operator.num_matvecs
    label = f"eigenvalues ({method.value})"
    with (
        progress_task(label, None, progress) as advance,
        operator._reporting(
            lambda count: advance(count, description=f"{operator.num_matvecs - start} HVPs")
        ),
    ):
        if method is EigenSolver.BLOCK:
            assert block_size is not None
            values, vectors, iterations, converged = _block(
                operator, k, which, tol, max_iter, seed, block_size
            )
        elif method is EigenSolver.LANCZOS:
            values, vectors, iterations, converged = _lanczos(
                operator, k, which, tol, max_iter, seed, ncv
            )
        elif method is EigenSolver.POWER:
            values, vectors, iterations, converged = _simultaneous_power(
                operator, k, tol, max_iter, seed
            )
        else:
            values, vectors, iterations, converged = _deflated_power(
                operator, k, tol, max_iter, seed
            )
    if not converged:
        warnings.warn(
            f"top_eigenvalues: method={method.value!r} did not converge to tol={tol} within "
            f"max_iter={max_iter}",
            RuntimeWarning,
            stacklevel=2,
        )
    order = _order(values, which)
    eigenvalues = np.ascontiguousarray(values[order], dtype=np.float64)
    eigenvalues.setflags(write=False)
    return EigenResult(
        eigenvalues=eigenvalues,
        eigenvectors=vectors[:, torch.from_numpy(order).to(vectors.device)],
        num_matvecs=operator.num_matvecs - start,
        iterations=iterations,
        converged=converged,
        method=method.value,
    )


def _order(values: NDArray[np.float64], which: Which) -> NDArray[np.int64]:
    """Indices putting ``values`` in the order of :class:`EigenResult` (NaN last)."""
    if which is Which.LARGEST_ALGEBRAIC:
        key = -values
    elif which is Which.SMALLEST_ALGEBRAIC:
        key = values
    else:
        key = -np.abs(values)
    order: NDArray[np.int64] = np.argsort(key, kind="stable")
    return order


def _work_dtype(device: torch.device) -> torch.dtype:
    # Apple's MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _random_block(n: int, k: int, seed: int) -> Tensor:
    """(n, k) standard normal, drawn on the CPU in float64 (the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, k), generator=generator, dtype=torch.float64)


def _start_block(operator: HessianOperator, k: int, seed: int) -> Tensor:
    """:func:`_random_block` on the operator's device."""
    block = _random_block(operator.num_params, k, seed)
    return block.to(device=operator.device, dtype=_work_dtype(operator.device))


def _block(
    operator: HessianOperator,
    k: int,
    which: Which,
    tol: float,
    max_iter: int,
    seed: int,
    block_size: int,
) -> tuple[NDArray[np.float64], Tensor, int, bool]:
    """Block Lanczos (:func:`tailwise.hessian.block.block_lanczos`) on ``operator.matmat``."""
    found = block_lanczos(
        operator.matmat,
        _start_block(operator, block_size, seed),
        k,
        which=which.value,
        tol=tol,
        max_iter=max_iter,
        seed=seed,
    )
    return found.values, found.vectors, found.iterations, found.converged


def _lanczos(
    operator: HessianOperator,
    k: int,
    which: Which,
    tol: float,
    max_iter: int,
    seed: int,
    ncv: int,
) -> tuple[NDArray[np.float64], Tensor, int, bool]:
    """ARPACK's implicitly restarted Lanczos on the float64 SciPy view of H."""
    start = operator.num_matvecs
    v0 = _random_block(operator.num_params, 1, seed)[:, 0].numpy()
    try:
        values, vectors = eigsh(
            operator.to_scipy(),
            k=k,
            which=which.value,
            tol=tol,
            maxiter=max_iter,
            v0=v0,
            ncv=ncv,
        )
        converged = True
    except ArpackNoConvergence as exc:
        # Keep the pairs that did converge; the rest are NaN so that the shapes stay (k,).
        found = np.asarray(exc.eigenvalues, dtype=np.float64)
        values = np.full(k, np.nan)
        values[: found.size] = found
        vectors = np.full((operator.num_params, k), np.nan)
        vectors[:, : found.size] = exc.eigenvectors
        converged = False
    eigenvectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float64))
    device = operator.device
    eigenvectors = eigenvectors.to(device=device, dtype=_work_dtype(device))
    iterations = operator.num_matvecs - start
    return np.asarray(values, dtype=np.float64), eigenvectors, iterations, converged


def _orthonormal_columns(block: Tensor) -> Tensor:
    """Q of the reduced QR of ``block`` (n, k)."""
    q, _ = torch.linalg.qr(block)
    return q


def _rayleigh_ritz(basis: Tensor, products: Tensor) -> tuple[NDArray[np.float64], Tensor]:
    """Ritz pairs of H on span(basis) from ``products`` = H basis, without new products.

    T = Q^T H Q (k, k) has the Rayleigh quotients q_j^T H q_j on its diagonal; its
    eigendecomposition T = U diag(theta) U^T gives Ritz values theta and vectors Q U, the best
    approximations from the subspace, also when the columns of Q mix close eigenvalues.
    """
    projected = basis.T @ products
    projected = (projected + projected.T) / 2
    values, rotation = torch.linalg.eigh(projected)
    return values.cpu().to(torch.float64).numpy(), basis @ rotation


def _simultaneous_power(
    operator: HessianOperator, k: int, tol: float, max_iter: int, seed: int
) -> tuple[NDArray[np.float64], Tensor, int, bool]:
    """Source 004 Algorithm 1 with a sign-aligned stopping rule and a Rayleigh-Ritz read-out.

    QR fixes each column of Q only up to sign, and a negative eigenvalue flips its column at
    every step, so each new column is multiplied by the sign of its inner product with the
    previous one before sum (Q - Q_prev)^2 is taken. 004 reads the eigenvalues off diag(R),
    whose signs are arbitrary (REFERENCES §6); here they are the Ritz values of the last
    product Z = H Q_prev (:func:`_rayleigh_ritz`), which costs no further products.
    """
    basis = _orthonormal_columns(_start_block(operator, k, seed))
    converged = False
    iterations = 0
    products = basis
    while iterations < max_iter:
        iterations += 1
        products = operator.matmat(basis)
        new_basis = _orthonormal_columns(products)
        signs = torch.sign((new_basis * basis).sum(dim=0))
        new_basis = new_basis * torch.where(signs == 0, torch.ones_like(signs), signs)
        change = float(((new_basis - basis) ** 2).sum())
        if change < tol:
            converged = True
            break
        if iterations < max_iter:  # keep (basis, products = H basis) paired for the read-out
            basis = new_basis
    values, vectors = _rayleigh_ritz(basis, products)
    return values, vectors, iterations, converged


def _orthogonalize(vector: Tensor, found: list[Tensor]) -> Tensor:
    """``vector`` minus its projection on the (orthonormal) found vectors, twice (stability)."""
    if not found:
        return vector
    basis = torch.stack(found, dim=1)
    for _ in range(2):
        vector = vector - basis @ (basis.T @ vector)
    return vector


def _deflated_power(
    operator: HessianOperator, k: int, tol: float, max_iter: int, seed: int
) -> tuple[NDArray[np.float64], Tensor, int, bool]:
    """PyHessian's ``eigenvalues``: power iteration per eigenpair, deflated by projection.

    For pair i: v random unit, orthogonal to the pairs found; repeat lambda = v^T H v,
    v <- H v orthogonalized and normalized, until |lambda_t - lambda_{t-1}| <
    tol (|lambda_{t-1}| + 1e-6). The pair returned is (lambda_t, v_t), the vector whose
    Rayleigh quotient lambda_t is.
    """
    starts = _start_block(operator, k, seed)
    found: list[Tensor] = []
    values: list[float] = []
    total = 0
    all_converged = True
    for index in range(k):
        vector = _orthogonalize(starts[:, index], found)
        vector = vector / vector.norm()
        previous: float | None = None
        value = math.nan
        converged = False
        for _ in range(max_iter):
            product = operator.matvec(vector)
            value = float(vector @ product)
            total += 1
            if previous is not None and abs(value - previous) < tol * (abs(previous) + 1e-6):
                converged = True
                break
            previous = value
            following = _orthogonalize(product, found)
            norm = following.norm()
            if not norm > 0:  # H is zero on the rest of the space: v is an eigenvector of 0
                converged = True
                break
            vector = following / norm
        all_converged = all_converged and converged
        found.append(vector)
        values.append(value)
    return np.asarray(values, dtype=np.float64), torch.stack(found, dim=1), total, all_converged
