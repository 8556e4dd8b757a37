"""One call for the usual curvature summary: top eigenvalues, and optionally trace and density.

:func:`summarize` is what ``tailwise hessian`` prints and writes: it builds one
:class:`~tailwise.hessian.operator.HessianOperator` over the data and runs
:func:`~tailwise.hessian.eigen.top_eigenvalues`, :func:`~tailwise.hessian.trace.hutchpp_trace`
and :func:`~tailwise.hessian.trace.spectral_density` on it, with every budget a parameter.

>>> import torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
>>> data = (torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,)))
>>> found = summarize(model, nn.functional.cross_entropy, data, top_k=2, trace=True,
...                   progress=False)
>>> found.num_params, len(found.eigenvalues), found.converged
(23, 2, True)
>>> list(found.to_dict())[:6]
['num_params', 'loss', 'method', 'eigenvalues', 'converged', 'eigen_matvecs']
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tailwise._errors import UsageError
from tailwise._modules import model_device
from tailwise._threads import torch_work
from tailwise.hessian._budget import check_memory
from tailwise.hessian.eigen import EigenSolver, memory_needed, top_eigenvalues
from tailwise.hessian.hvp import HVPMethod, named_parameters
from tailwise.hessian.operator import Data, HessianOperator, LossFn
from tailwise.hessian.trace import (
    SpectralDensity,
    check_hutchpp_memory,
    check_slq_memory,
    hutchpp_trace,
    spectral_density,
)

__all__ = ["HessianSummary", "summarize"]


@dataclass(frozen=True, eq=False)
class HessianSummary:
    """What :func:`summarize` found about the Hessian of the full-data loss.

    Attributes:
        num_params: n, the number of parameters the Hessian is taken over.
        names: those parameters' names, in ``model.named_parameters`` order.
        loss: the full-data loss at the model's parameters.
        solver: the eigen-solver used (``"lanczos"``, ``"power"`` or ``"deflation"``).
        eigenvalues: the top eigenvalues, largest first (NaN where Lanczos did not converge).
        converged: whether the solver met its tolerance.
        eigen_matvecs: Hessian-vector products the eigen-solver spent.
        trace: Hutch++ estimate of tr(H), or None when not asked for.
        trace_std_error: its standard error, or None.
        trace_matvecs: products the trace spent (0 when not asked for).
        density: the SLQ :class:`~tailwise.hessian.trace.SpectralDensity`, or None.
        seconds: wall-clock time of the whole computation.
    """

    num_params: int
    names: tuple[str, ...]
    loss: float
    solver: str
    eigenvalues: tuple[float, ...]
    converged: bool
    eigen_matvecs: int
    trace: float | None
    trace_std_error: float | None
    trace_matvecs: int
    density: SpectralDensity | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``tailwise hessian --out x.json`` writes).

        Keys: ``num_params, loss, method`` (the solver), ``eigenvalues, converged,
        eigen_matvecs``; ``trace, trace_std_error`` when the trace was estimated;
        ``density_nodes, density_weights`` (lists of R runs of m values, NaN-padded nodes)
        when the density was; then ``seconds``.
        """
        result: dict[str, Any] = {
            "num_params": self.num_params,
            "loss": self.loss,
            "method": self.solver,
            "eigenvalues": list(self.eigenvalues),
            "converged": self.converged,
            "eigen_matvecs": self.eigen_matvecs,
        }
        if self.trace is not None:
            result["trace"] = self.trace
            result["trace_std_error"] = self.trace_std_error
        if self.density is not None:
            result["density_nodes"] = self.density.nodes.tolist()
            result["density_weights"] = self.density.weights.tolist()
        result["seconds"] = self.seconds
        return result


def _positive(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"summarize: {name} must be an int >= {low}, got {value!r}")
    return value


def _selected(model: nn.Module, include: str | None) -> list[str] | None:
    """Names of the trainable parameters matching ``include`` (re.search); None for all."""
    if include is None:
        return None
    try:
        pattern = re.compile(include)
    except (re.error, TypeError) as exc:
        raise UsageError(
            f"summarize: include {include!r} is not a regular expression ({exc})"
        ) from None
    names = [
        name for name, p in model.named_parameters() if p.requires_grad and pattern.search(name)
    ]
    if not names:
        raise UsageError(
            f"summarize: include {include!r} matches no parameter of the model "
            f"(its parameters: {', '.join(n for n, _ in list(model.named_parameters())[:6])}"
            f"{', ...' if len(list(model.parameters())) > 6 else ''})"
        )
    return names


@contextlib.contextmanager
def _in_eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode for the block; every module's own train/eval flag is put back."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _check_budgets(
    model: nn.Module,
    n: int,
    top_k: int,
    how: EigenSolver,
    trace: bool,
    trace_matvecs: int,
    density: bool,
    density_iters: int,
    density_runs: int,
) -> None:
    """Refuse, before any work, what the n selected parameters cannot give or hold."""
    if n < 1:
        return  # HessianOperator says there is nothing to differentiate
    krylov = how in (EigenSolver.LANCZOS, EigenSolver.BLOCK)
    high = n - 1 if krylov else n
    if top_k > high:
        raise UsageError(
            f"summarize: top_k={top_k:,} is more than the {high:,} eigenvalues solver="
            f"{how.value!r} can give for the n={n:,} selected parameters"
            + (" (Lanczos: k < n)" if krylov else "")
        )
    cpu, device = torch.device("cpu"), model_device(model)
    ncv = min(n, max(2 * top_k + 1, top_k + 6)) if how is EigenSolver.LANCZOS else None
    needed, what = memory_needed(n, top_k, how, ncv)
    check_memory("summarize", what, needed, cpu if how is EigenSolver.LANCZOS else device)
    if trace:
        check_hutchpp_memory("summarize", n, trace_matvecs, device)
    if density:
        check_slq_memory("summarize", n, min(density_iters, n), density_runs, device)


def summarize(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    top_k: int = 5,
    solver: EigenSolver | str = EigenSolver.BLOCK,
    trace: bool = False,
    trace_matvecs: int = 99,
    density: bool = False,
    density_iters: int = 80,
    density_runs: int = 2,
    include: str | None = None,
    seed: int = 0,
    hvp_method: HVPMethod | str | None = None,
    retain_graph: bool | None = None,
    progress: bool = True,
) -> HessianSummary:
    """Top eigenvalues, and optionally the trace and spectral density, of the loss Hessian.

    The Hessian is that of the full-data loss over ``data`` (see
    :class:`~tailwise.hessian.operator.HessianOperator`), taken in evaluation mode: the model
    is put in eval mode for the computation and every module's train/eval flag is restored
    afterwards. Nothing else about the model changes, and it is not moved: the batches are
    moved to its device.

    Args:
        model, loss_fn, data: as for :class:`~tailwise.hessian.operator.HessianOperator`.
        top_k: number of top eigenvalues, at most n - 1 for ``"block"`` and ``"lanczos"`` (n
            for the power methods): more raises :class:`tailwise.UsageError` (never a
            shorter answer).
        solver: :class:`~tailwise.hessian.eigen.EigenSolver`, the ``method`` of
            :func:`~tailwise.hessian.eigen.top_eigenvalues`.
        trace: also estimate tr(H) by Hutch++ with ``trace_matvecs`` (>= 3) products.
        density: also estimate the spectral density by SLQ with ``min(density_iters, n)``
            Lanczos steps in each of ``density_runs`` runs.
        include: a regular expression; only parameters whose name it matches (``re.search``)
            are taken (the Hessian block over them). Matching nothing raises
            :class:`tailwise.UsageError`.
        seed: seeds the start vectors and probes.
        hvp_method: see :class:`~tailwise.hessian.hvp.HVPMethod`.
        retain_graph: keep each batch's gradient graph for the products (None: while they
            take at most 1/8 of the memory; see
            :class:`~tailwise.hessian.operator.HessianOperator`).
        progress: progress bars on stderr (terminals only), one per stage.

    Returns:
        A :class:`HessianSummary`; ``to_dict()`` gives its JSON form.

    Bad option values raise :class:`tailwise.UsageError`, before any pass over the data: also
    a ``top_k`` beyond the selected parameters, and budgets (``top_k``, ``trace_matvecs``,
    ``density_iters`` x ``density_runs``) whose float64 blocks of n-vectors would not fit the
    memory of the machine (or device). Bad data (NaN/Inf, not fitting the model, random
    forward passes) raises it at the first pass (see
    :class:`~tailwise.hessian.operator.HessianOperator`).

    Threads: runs under the torch-work policy of ``tailwise._threads`` (torch keeps its
    threads, SciPy's BLAS gets one; ``TAILWISE_THREADS`` overrides).
    """
    top_k = _positive("top_k", top_k)
    try:
        how = EigenSolver(solver)
    except ValueError:
        allowed = ", ".join(s.value for s in EigenSolver)
        raise UsageError(f"summarize: solver must be one of {allowed}, got {solver!r}") from None
    if trace:
        trace_matvecs = _positive("trace_matvecs", trace_matvecs, low=3)
    if density:
        density_iters = _positive("density_iters", density_iters)
        density_runs = _positive("density_runs", density_runs)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"summarize: seed must be an int >= 0, got {seed!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"summarize: model must be an nn.Module, got {type(model).__name__}")
    names = _selected(model, include)
    n = sum(p.numel() for p in named_parameters(model, names).values())
    _check_budgets(model, n, top_k, how, trace, trace_matvecs, density, density_iters, density_runs)

    start = time.perf_counter()
    with torch_work(), _in_eval_mode(model):
        operator = HessianOperator(
            model,
            loss_fn,
            data,
            params=names,
            hvp_method=hvp_method,
            retain_graph=retain_graph,
        )
        found = top_eigenvalues(operator, k=top_k, method=how, seed=seed, progress=progress)
        loss = float(operator.loss())
        trace_value: float | None = None
        trace_error: float | None = None
        trace_spent = 0
        if trace:
            estimate = hutchpp_trace(
                operator, num_matvecs=trace_matvecs, seed=seed, progress=progress
            )
            trace_value, trace_error = float(estimate.estimate), float(estimate.std_error)
            trace_spent = estimate.num_matvecs
        spectrum = None
        if density:
            spectrum = spectral_density(
                operator,
                num_iters=min(density_iters, n),
                num_runs=density_runs,
                seed=seed,
                progress=progress,
            )
    return HessianSummary(
        num_params=n,
        names=operator.names,
        loss=loss,
        solver=found.method,
        eigenvalues=tuple(float(v) for v in found.eigenvalues),
        converged=bool(found.converged),
        eigen_matvecs=found.num_matvecs,
        trace=trace_value,
        trace_std_error=trace_error,
        trace_matvecs=trace_spent,
        density=spectrum,
        seconds=time.perf_counter() - start,
    )
