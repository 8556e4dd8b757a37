"""tailwise Hessian eigenvalues, trace and density vs PyHessian 0.1 on a ~1M-parameter CNN.

Model and data (the same for both tools, built here, no downloads): a CIFAR-style VGG without
batch norm or dropout, ``[Conv3x3 -> ReLU -> MaxPool2] x 3`` with 24, 48, 96 channels, then
``Linear(1536, 512) -> ReLU -> Linear(512, 10)``: 0.84M parameters (``--width`` scales every
width). One batch of ``--batch`` random N(0, 1) images of 3 x 32 x 32 with random labels,
cross-entropy loss, float32, eval mode. At initialization the top of this Hessian is a cluster
of nearly equal eigenvalues with negative ones of the same magnitude, unlike a trained network;
so the model first takes ``--train-steps`` full-batch SGD steps (momentum 0.9) on the batch,
which separates the top eigenvalues from the bulk (all positive, 10-20% apart).

Every row is end to end from the model, building the operator (and, for tailwise, its
determinism check) included, at each tool's defaults unless the row says otherwise. Both
tools multiply through a retained gradient graph: PyHessian always, tailwise by default
(``retain_graph=None``: the graph is kept when it is small against the machine's memory).

1. **Top-1 and top-5 eigenvalues**: tailwise ``top_eigenvalues(model, loss, data, k)`` at its
   defaults (block Lanczos, ``tol=1e-3``), and with ``retain_graph=False``, ARPACK
   (``method="lanczos"``), ``"power"`` and ``"deflation"``; PyHessian's
   ``hessian(...).eigenvalues`` (deflated power iteration, its defaults ``maxIter=100,
   tol=1e-3``, and once with ``tol=1e-4``). The two default rows run ``--repeat`` times,
   interleaved with each other and with the single runs of the other rows; the table shows
   the median time. Accuracy: the relative error of each eigenvalue against a reference
   computed independently of both tools (a float64 copy of the model, ARPACK with
   ``tol=1e-10`` on a retained double-backward graph); the table gives the largest over the k
   eigenvalues. The float32 Hessian of both tools differs from the float64 one by about 1e-7
   relative, so smaller errors are not resolved. Target: tailwise's defaults >= 2x faster than
   PyHessian's with >= 100x smaller error, for k = 1 and k = 5.
2. **Trace**: PyHessian's ``trace()`` (Hutchinson with Rademacher probes, one product each,
   stopped when the running mean changes by < 1e-3 relative, at most 100) against tailwise's
   ``hutchinson_trace`` and ``hutchpp_trace`` (Hutch++) on a ``HessianOperator``, each over
   ``--trace-seeds`` seeds, with tailwise's budget equal to PyHessian's median number of
   products (Hutchinson also with ``retain_graph=False``: blocks of 16 probes through vmap)
   and at its defaults (100 and 99 products). Accuracy is the standard error of the
   estimate (std of the probes' quadratic forms / sqrt(number of probes); Hutch++'s sketch
   is exact), its root mean square over the seeds; the mean estimates show the estimators
   agree. Target: tailwise's Hutchinson with as many probes as PyHessian (the same
   estimator, so the same accuracy in distribution) in <= 1/2 of PyHessian's time.
3. **Spectral density**: PyHessian's ``density()`` (SLQ: 100 Lanczos steps, one run;
   ``torch.eig``, removed from torch since 1.9, is supplied as ``torch.linalg.eigh`` of the
   symmetric tridiagonal matrix) against tailwise's ``spectral_density(op, num_iters=100,
   num_runs=1)``, the same estimator, so the same accuracy in distribution; shown: the
   largest node against the reference top eigenvalue and n x the first moment (a trace
   estimate). Target: <= 1/2 of PyHessian's time.
4. **Float64 model**: part 1's default rows on a float64 copy of the model and data.
5. **HVP cost**: one Hessian-vector product (tailwise forward-over-reverse and double
   backward; a block of k = 5 products through ``HessianOperator.matmat`` with and without
   vmap; a product on tailwise's and PyHessian's retained graphs) against one gradient
   (forward + backward), interleaved, median.
6. **Peak memory vs model size**: 4 widths (about 0.25M, 0.5M, 1M and 2M parameters), each in a
   fresh process (run side by side) with glibc's mmap threshold fixed at 64 KiB, so freed
   buffers go back to the OS and the resident set shows what is live. After a warm-up, the peak
   resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set just before
   the call, for one gradient, one HVP, tailwise's default top-1 and top-5 and PyHessian's
   top-1 and top-5, in MiB and bytes per parameter, the bytes tailwise's retained graph holds
   (``HessianOperator.graph_bytes``), and the log-log slope d log(peak) / d log(N) of the
   top-5 runs from the smallest width (1 = linear in N; a dense Hessian would be 2, and 4 N^2
   bytes). Widening the CNN multiplies N by w^2 but the activations by w only, so what is
   mostly activations grows more slowly than N.

Run: ``python benchmarks/hessian_vs_pyhessian.py [--quick] [--threads 1] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor, nn
from torch.nn import functional as F

from _common import (
    fmt_ratio,
    fmt_seconds,
    limit_threads,
    machine_header,
    markdown_table,
    quiet,
    thread_report,
)
from tailwise.hessian.eigen import top_eigenvalues
from tailwise.hessian.hvp import hvp
from tailwise.hessian.operator import HessianOperator
from tailwise.hessian.trace import hutchinson_trace, hutchpp_trace, spectral_density
from tailwise.models import VGG

MIB = 2**20
CHANNELS = (24, 48, 96)
HIDDEN = 512
# Width multipliers of the memory scan: about 0.25M, 0.5M, 1M and 2M parameters.
MEMORY_WIDTHS = (0.55, 0.77, 1.09, 1.54)
QUICK_MEMORY_WIDTHS = (0.125, 0.177, 0.25, 0.354)
# ARPACK's relative residual in one row (the former comparison): the eigenvalue error is of
# order tol^2; Lanczos needs at least ncv products whatever the tolerance.
LANCZOS_TOL = 1e-2


# ---------------------------------------------------------------------------------------------
# Model, data, reference


def build_cnn(width: float, seed: int) -> nn.Module:
    """The benchmark's VGG-style CNN with every width multiplied by ``width`` (eval mode)."""
    c1, c2, c3 = (max(1, round(c * width)) for c in CHANNELS)
    torch.manual_seed(seed)
    model = VGG(
        (c1, "M", c2, "M", c3, "M"),
        in_channels=3,
        num_classes=10,
        image_size=32,
        batch_norm=False,
        hidden=(max(1, round(HIDDEN * width)),),
    )
    return model.eval()


def make_batch(batch: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    return images, labels


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pretrain(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> tuple[float, float]:
    """``steps`` full-batch SGD steps (lr 0.05, momentum 0.9); the loss before and after."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    return before, after


@dataclass
class Reference:
    eigenvalues: NDArray[np.float64]  # descending by magnitude
    residuals: NDArray[np.float64]  # ||H v - lambda v|| / |lambda|
    products: int
    seconds: float


def reference_spectrum(model: nn.Module, x: Tensor, y: Tensor, k: int) -> Reference:
    """The k eigenvalues of largest magnitude of the float64 Hessian, ARPACK tol 1e-10.

    Independent of both tools: a float64 copy of the model, the gradient built once with
    ``create_graph=True`` and every product a backward pass through it (as PyHessian does).
    """
    start = time.perf_counter()
    twin = copy.deepcopy(model).double()
    params = [p for p in twin.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    loss = F.cross_entropy(twin(x.double()), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    count = 0

    def matvec(vector: NDArray[np.float64]) -> NDArray[np.float64]:
        nonlocal count
        count += 1
        pieces = torch.split(torch.from_numpy(np.ascontiguousarray(vector).reshape(-1)), sizes)
        v = [piece.view_as(p) for piece, p in zip(pieces, params, strict=True)]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        out: NDArray[np.float64] = torch.cat([h.reshape(-1) for h in hv]).numpy()
        return out

    n = sum(sizes)
    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(12345).standard_normal(n)
    values, vectors = eigsh(operator, k=k, which="LM", tol=1e-10, ncv=max(2 * k + 1, 20), v0=v0)
    order = np.argsort(-np.abs(values))
    values, vectors = values[order], vectors[:, order]
    residuals = np.array(
        [
            np.linalg.norm(matvec(vectors[:, j]) - values[j] * vectors[:, j]) / abs(values[j])
            for j in range(k)
        ]
    )
    return Reference(values, residuals, count - k, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Part 1: eigenvalues


@dataclass
class Run:
    eigenvalues: NDArray[np.float64]
    products: int


def _eig_shim(matrix: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
    """``torch.eig`` (removed in torch 1.9) for PyHessian's symmetric tridiagonal T: values as
    an (m, 2) real/imaginary table and the eigenvectors as columns."""
    values, vectors = torch.linalg.eigh(matrix)
    return torch.stack([values, torch.zeros_like(values)], dim=1), vectors


class PyHessianRunner:
    """PyHessian's ``eigenvalues``, ``trace`` and ``density`` from the model, counting its
    Hessian-vector products (its constructor's forward and backward pass are timed too)."""

    def __init__(self, seed: int) -> None:
        from pyhessian import hessian  # noqa: F401  (import cost outside the timings)

        # pyhessian/__init__ rebinds the name ``pyhessian.hessian`` to the class.
        self.module: Any = sys.modules["pyhessian.hessian"]
        self.original = self.module.hessian_vector_product
        self.seed = seed
        self.count = 0

    def _counted(self, *args: Any) -> Any:
        self.count += 1
        return self.original(*args)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, seed: int, call: Any) -> Any:
        self.count = 0
        self.module.hessian_vector_product = self._counted
        torch.manual_seed(seed)  # its random vectors come from the global generator
        model.zero_grad(set_to_none=True)  # it accumulates into .grad with create_graph=True
        previous = torch.get_default_dtype()
        # Its random vectors are drawn in the default dtype: the model's, for a float64 model.
        torch.set_default_dtype(next(model.parameters()).dtype)
        try:
            with quiet():  # "backward() with create_graph=True ..." warning
                computer = self.module.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
                result = call(computer)
        finally:
            torch.set_default_dtype(previous)
            self.module.hessian_vector_product = self.original
            model.zero_grad(set_to_none=True)  # break the grad <-> graph reference cycle
        del computer
        gc.collect()
        return result

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, k: int, tol: float = 1e-3, max_iter: int = 100
    ) -> Run:
        values, _ = self._run(
            model,
            x,
            y,
            self.seed,
            lambda h: h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k),
        )
        return Run(np.asarray(values, dtype=np.float64), self.count)

    def trace(self, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> tuple[list[float], int]:
        samples = self._run(model, x, y, seed, lambda h: h.trace())
        return [float(v) for v in samples], self.count

    def density(
        self, model: nn.Module, x: Tensor, y: Tensor, seed: int, steps: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
        had = hasattr(torch, "eig")
        saved = getattr(torch, "eig", None)
        torch.eig = _eig_shim  # type: ignore[attr-defined]
        try:
            nodes, weights = self._run(model, x, y, seed, lambda h: h.density(iter=steps, n_v=1))
        finally:
            if had:
                torch.eig = saved  # type: ignore[attr-defined]
            else:
                del torch.eig  # type: ignore[attr-defined]
        return np.asarray(nodes[0]), np.asarray(weights[0]), self.count


def tailwise_runner(
    method: str | None = None, tol: float | None = None, retain_graph: bool | None = None
) -> Callable[[nn.Module, Tensor, Tensor, int], Run]:
    def run(model: nn.Module, x: Tensor, y: Tensor, k: int) -> Run:
        result = top_eigenvalues(
            model,
            F.cross_entropy,
            (x, y),
            k=k,
            method=method,
            tol=tol,
            retain_graph=retain_graph,
            progress=False,
        )
        return Run(np.asarray(result.eigenvalues, dtype=np.float64), result.num_matvecs)

    return run


def by_magnitude(values: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = values[np.argsort(-np.abs(values), kind="stable")]
    return out


def max_relative(values: NDArray[np.float64], reference: NDArray[np.float64]) -> float:
    """Largest |a_i - b_i| / |b_i| with both sorted by magnitude (NaN counts as infinite)."""
    a, b = by_magnitude(values), by_magnitude(reference)[: values.size]
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.max(np.abs(a - b) / np.abs(b)))


def fmt_values(values: NDArray[np.float64]) -> str:
    return ", ".join(f"{v:.5g}" for v in by_magnitude(values))


def interleaved(
    variants: dict[str, tuple[Callable[[], Run], int]], rounds: int
) -> dict[str, tuple[list[float], Run]]:
    """Round r runs every variant whose run count exceeds r, in order; times, last result."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, Run] = {}
    for r in range(rounds):
        for name, (fn, runs) in variants.items():
            if r >= runs:
                continue
            gc.collect()
            start = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], last[name]) for name in variants}


PYHESSIAN = "PyHessian (tol 1e-3, maxIter 100: defaults)"
DEFAULT = "tailwise defaults (block, tol 1e-3, retained graph)"


@dataclass
class Verdict:
    """One target line: tailwise's defaults against PyHessian's, same run."""

    what: str
    tailwise_time: float
    tailwise_error: float
    pyhessian_time: float
    pyhessian_error: float
    speedup_needed: float = 2.0
    accuracy_needed: float = 100.0

    @property
    def met(self) -> bool:
        return (
            self.pyhessian_time >= self.speedup_needed * self.tailwise_time
            and self.pyhessian_error >= self.accuracy_needed * self.tailwise_error
        )

    def line(self) -> str:
        return (
            f"{self.what}: tailwise {fmt_seconds(self.tailwise_time)} (error "
            f"{self.tailwise_error:.1e}) vs PyHessian {fmt_seconds(self.pyhessian_time)} (error "
            f"{self.pyhessian_error:.1e}): {fmt_ratio(self.pyhessian_time, self.tailwise_time)} "
            f"faster, {self.pyhessian_error / max(self.tailwise_error, 1e-300):.3g}x smaller "
            f"error (needed: {self.speedup_needed:g}x faster"
            + (f", {self.accuracy_needed:g}x smaller error" if self.accuracy_needed else "")
            + f") -> {'MET' if self.met else 'NOT MET'}"
        )


def eigen_part(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    reference: Reference,
    repeat: int,
    seed: int,
    full: bool = True,
) -> tuple[list[Verdict], list[list[object]]]:
    """The eigenvalue table; the two default rows run ``repeat`` times, the others once.

    ``full=False``: only the two default rows (the float64 part).
    """
    pyhessian = PyHessianRunner(seed)
    tools: dict[str, tuple[Callable[[nn.Module, Tensor, Tensor, int], Run], int]] = {
        PYHESSIAN: (pyhessian, repeat),
        DEFAULT: (tailwise_runner(), repeat),
    }
    if full:
        tools.update(
            {
                "tailwise block, retain_graph=False": (
                    tailwise_runner(retain_graph=False),
                    1,
                ),
                f"tailwise lanczos (ARPACK, tol {LANCZOS_TOL:g})": (
                    tailwise_runner("lanczos", LANCZOS_TOL),
                    1,
                ),
                "tailwise lanczos (ARPACK, tol 1e-6: its default)": (
                    tailwise_runner("lanczos"),
                    1,
                ),
                "tailwise power (tol 1e-3: its default)": (tailwise_runner("power"), 1),
                "tailwise deflation (tol 1e-3: its default)": (tailwise_runner("deflation"), 1),
                "PyHessian (tol 1e-4, maxIter 100)": (
                    lambda m, a, b, k: pyhessian(m, a, b, k, tol=1e-4),
                    1,
                ),
            }
        )
    verdicts: list[Verdict] = []
    rows: list[list[object]] = []
    for k in (1, 5):
        variants: dict[str, tuple[Callable[[], Run], int]] = {
            name: (functools.partial(fn, model, x, y, k), runs)
            for name, (fn, runs) in tools.items()
        }
        timed = interleaved(variants, repeat)
        base_time = statistics.median(timed[PYHESSIAN][0])
        base_values = timed[PYHESSIAN][1].eigenvalues
        for name, (times, run) in timed.items():
            med = statistics.median(times)
            rows.append(
                [
                    k,
                    name,
                    len(times),
                    fmt_seconds(med),
                    run.products,
                    fmt_ratio(base_time, med),
                    f"{max_relative(run.eigenvalues, reference.eigenvalues):.1e}",
                    "-"
                    if name == PYHESSIAN
                    else f"{max_relative(run.eigenvalues, base_values):.1e}",
                    fmt_values(run.eigenvalues),
                ]
            )
        verdicts.append(
            Verdict(
                f"top-{k}",
                statistics.median(timed[DEFAULT][0]),
                max_relative(timed[DEFAULT][1].eigenvalues, reference.eigenvalues),
                base_time,
                max_relative(base_values, reference.eigenvalues),
            )
        )
    return verdicts, rows


# ---------------------------------------------------------------------------------------------
# Part 2: trace, part 3: density


@dataclass
class TraceRun:
    estimate: float
    std_error: float
    products: int
    seconds: float


def _standard_error(samples: Sequence[float]) -> float:
    return (
        float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
    )


def trace_part(
    model: nn.Module, x: Tensor, y: Tensor, seeds: int
) -> tuple[Verdict, list[list[object]]]:
    """PyHessian's trace() against Hutchinson and Hutch++ at its budget and their defaults."""
    pyhessian = PyHessianRunner(0)
    found: dict[str, list[TraceRun]] = {}

    def pyhessian_run(seed: int) -> TraceRun:
        start = time.perf_counter()
        samples, count = pyhessian.trace(model, x, y, seed)
        seconds = time.perf_counter() - start
        return TraceRun(float(np.mean(samples)), _standard_error(samples), count, seconds)

    def tailwise_run(
        estimator: Callable[..., Any], budget: int, seed: int, retain: bool | None
    ) -> TraceRun:
        gc.collect()
        start = time.perf_counter()
        operator = HessianOperator(model, F.cross_entropy, (x, y), retain_graph=retain)
        estimate = estimator(operator, budget, seed=seed, progress=False)
        seconds = time.perf_counter() - start
        return TraceRun(estimate.estimate, estimate.std_error, estimate.num_matvecs, seconds)

    found[PYHESSIAN_TRACE] = [pyhessian_run(seed) for seed in range(seeds)]
    budget = max(3, round(statistics.median(run.products for run in found[PYHESSIAN_TRACE])))
    same = f"tailwise hutchinson_trace, {budget} probes (PyHessian's median)"
    same_vmap = same + ", retain_graph=False (vmap blocks of 16)"
    variants: dict[str, tuple[Callable[..., Any], int, bool | None]] = {
        same: (hutchinson_trace, budget, None),
        same_vmap: (hutchinson_trace, budget, False),
        f"tailwise hutchpp_trace, {budget} products (PyHessian's median)": (
            hutchpp_trace,
            budget,
            None,
        ),
        "tailwise hutchinson_trace, 100 probes (default)": (hutchinson_trace, 100, None),
        "tailwise hutchpp_trace, 99 products (default)": (hutchpp_trace, 99, None),
    }
    for name, (estimator, size, retain) in variants.items():
        found[name] = [tailwise_run(estimator, size, seed, retain) for seed in range(seeds)]
    base = found[PYHESSIAN_TRACE]
    base_time = statistics.median(run.seconds for run in base)
    base_error = _rms([run.std_error for run in base])
    rows: list[list[object]] = []
    for name, runs in found.items():
        med = statistics.median(run.seconds for run in runs)
        error = _rms([run.std_error for run in runs])
        estimates = [run.estimate for run in runs]
        spread = np.std(estimates) / math.sqrt(len(runs))
        rows.append(
            [
                name,
                len(runs),
                fmt_seconds(med),
                f"{statistics.mean(run.products for run in runs):.0f}",
                fmt_ratio(base_time, med),
                f"{error:.3g}",
                f"{error / abs(statistics.mean(estimates)):.1e}",
                f"{statistics.mean(estimates):.4g} ± {spread:.2g}",
            ]
        )
    # Equal accuracy: the same estimator (Rademacher Hutchinson) with as many probes; the
    # standard errors of the few seeds only confirm it. The faster of the two product paths.
    fastest = min((same, same_vmap), key=lambda n: statistics.median(r.seconds for r in found[n]))
    verdict = Verdict(
        f"trace at equal accuracy ({fastest.removeprefix('tailwise ')}; RMS standard error)",
        statistics.median(run.seconds for run in found[fastest]),
        _rms([run.std_error for run in found[fastest]]),
        base_time,
        base_error,
        accuracy_needed=0.0,
    )
    return verdict, rows


PYHESSIAN_TRACE = "PyHessian trace() (tol 1e-3, maxIter 100: defaults)"


def _rms(values: Sequence[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def density_part(
    model: nn.Module, x: Tensor, y: Tensor, reference: Reference, steps: int, repeat: int
) -> tuple[Verdict, list[list[object]]]:
    """PyHessian's density() against tailwise's spectral_density, both one run of ``steps``."""
    pyhessian = PyHessianRunner(0)
    n = num_params(model)
    top = float(reference.eigenvalues[0])

    def pyhessian_run() -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
        return pyhessian.density(model, x, y, 0, steps)

    def tailwise_run() -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
        operator = HessianOperator(model, F.cross_entropy, (x, y))
        density = spectral_density(operator, num_iters=steps, num_runs=1, progress=False)
        return density.nodes[0], density.weights[0], density.num_matvecs

    times: dict[str, list[float]] = {PYHESSIAN_DENSITY: [], TAILWISE_DENSITY: []}
    last: dict[str, tuple[NDArray[np.float64], NDArray[np.float64], int]] = {}
    for _ in range(repeat):
        for name, fn in ((PYHESSIAN_DENSITY, pyhessian_run), (TAILWISE_DENSITY, tailwise_run)):
            gc.collect()
            start = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - start)
    rows: list[list[object]] = []
    errors = {}
    base_time = statistics.median(times[PYHESSIAN_DENSITY])
    for name in times:
        nodes, weights, products = last[name]
        finite = np.isfinite(nodes)
        largest = float(np.max(nodes[finite]))
        errors[name] = abs(largest - top) / top
        med = statistics.median(times[name])
        rows.append(
            [
                name,
                len(times[name]),
                fmt_seconds(med),
                products,
                fmt_ratio(base_time, med),
                f"{errors[name]:.1e}",
                f"{n * float(np.sum(weights[finite] * nodes[finite])):.4g}",
            ]
        )
    verdict = Verdict(
        f"density (SLQ, {steps} steps; error of the largest node)",
        statistics.median(times[TAILWISE_DENSITY]),
        errors[TAILWISE_DENSITY],
        base_time,
        errors[PYHESSIAN_DENSITY],
        accuracy_needed=0.0,
    )
    return verdict, rows


DENSITY_STEPS = 100
PYHESSIAN_DENSITY = "PyHessian density() (iter 100, n_v 1: defaults)"
TAILWISE_DENSITY = "tailwise spectral_density(num_iters=100, num_runs=1)"


# ---------------------------------------------------------------------------------------------
# Part 5: HVP cost


def hvp_part(model: nn.Module, x: Tensor, y: Tensor, rounds: int, block: int) -> list[list[object]]:
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    generator = torch.Generator().manual_seed(1)
    vector = {name: torch.randn(p.shape, generator=generator) for name, p in named.items()}
    vlist = list(vector.values())
    vmapped = HessianOperator(model, F.cross_entropy, (x, y), retain_graph=False)
    looped = HessianOperator(model, F.cross_entropy, (x, y), vectorize=False, retain_graph=False)
    kept = HessianOperator(model, F.cross_entropy, (x, y), retain_graph=True)
    flat = torch.randn(vmapped.num_params, block, generator=generator)

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def gradient() -> object:
        return torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def fwd_over_rev() -> object:
        return hvp(model, F.cross_entropy, x, y, vector)

    def double_backward() -> object:
        return hvp(model, F.cross_entropy, x, y, vector, hvp_method="double-backward")

    def matvec() -> object:
        return vmapped.matvec(flat[:, 0])

    def block_vmap() -> object:
        return vmapped.matmat(flat)

    def block_loop() -> object:
        return looped.matmat(flat)

    def kept_matvec() -> object:
        return kept.matvec(flat[:, 0])

    def kept_block() -> object:
        return kept.matmat(flat)

    retained: list[Any] = []

    def pyhessian_setup() -> object:
        # PyHessian's constructor on one batch: forward + backward(create_graph=True).
        model.zero_grad(set_to_none=True)
        retained.clear()
        loss = F.cross_entropy(model(x), y)
        with quiet():
            loss.backward(create_graph=True)
        retained.append([p.grad + 0.0 for p in params if p.grad is not None])
        model.zero_grad(set_to_none=True)
        return retained

    pyhessian_setup()

    def pyhessian_product() -> object:
        return torch.autograd.grad(retained[0], params, grad_outputs=vlist, retain_graph=True)

    variants: dict[str, tuple[Callable[[], object], int]] = {
        "forward only (no grad)": (forward, 1),
        "gradient (forward + backward)": (gradient, 1),
        "tailwise hvp, forward-over-reverse": (fwd_over_rev, 1),
        "tailwise hvp, double backward": (double_backward, 1),
        "tailwise HessianOperator.matvec": (matvec, 1),
        f"tailwise matmat k={block}, vmap (per product)": (block_vmap, block),
        f"tailwise matmat k={block}, loop (per product)": (block_loop, block),
        "tailwise matvec on its retained graph": (kept_matvec, 1),
        f"tailwise matmat k={block} on its retained graph (per product)": (kept_block, block),
        "PyHessian setup (forward + backward, create_graph)": (pyhessian_setup, 1),
        "PyHessian product on the retained graph": (pyhessian_product, 1),
    }
    for fn, _ in variants.values():  # warm-up (and vmap's first-call check)
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fn, per) in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / per)
    retained.clear()
    model.zero_grad(set_to_none=True)
    gc.collect()
    grad_time = statistics.median(times["gradient (forward + backward)"])
    rows: list[list[object]] = []
    for name in variants:
        med = statistics.median(times[name])
        rows.append(
            [name, fmt_seconds(med), fmt_seconds(min(times[name])), fmt_ratio(med, grad_time)]
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Part 6: memory (one child process per width)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_increase_kib(fn: Callable[[], object]) -> int:
    """Peak resident set during ``fn()`` above the resident set just before it (KiB)."""
    gc.collect()
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    gc.collect()
    return peak - baseline


MEMORY_KEYS = (
    ("gradient_kib", "gradient"),
    ("hvp_kib", "one HVP"),
    ("top1_kib", "tailwise top-1"),
    ("top5_kib", "tailwise top-5"),
    ("pyhessian1_kib", "PyHessian top-1"),
    ("pyhessian5_kib", "PyHessian top-5"),
)


def memory_child(width: float, batch: int, seed: int, threads: int) -> None:
    limit_threads(threads)
    model = build_cnn(width, seed)
    x, y = make_batch(batch, seed)
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    vector = {name: torch.randn_like(p) for name, p in named.items()}
    pyhessian = PyHessianRunner(seed)

    def gradient() -> object:
        return torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def one_hvp() -> object:
        return hvp(model, F.cross_entropy, x, y, vector)

    def top(k: int) -> Callable[[], object]:
        return lambda: top_eigenvalues(model, F.cross_entropy, (x, y), k=k, progress=False)

    def peer(k: int) -> Callable[[], object]:
        return lambda: pyhessian(model, x, y, k)

    # Warm-up: lazy imports, oneDNN primitives, ARPACK; freed buffers are returned to the OS.
    gradient()
    one_hvp()
    tiny = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    tiny_data = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    top_eigenvalues(tiny, F.cross_entropy, tiny_data, k=1, progress=False)
    pyhessian(tiny, *tiny_data, 1)
    result: dict[str, float] = {"width": width, "params": num_params(model)}
    calls = (gradient, one_hvp, top(1), top(5), peer(1), peer(5))
    for (key, _), call in zip(MEMORY_KEYS, calls, strict=True):
        result[key] = _peak_increase_kib(call)
    result["graph_kib"] = HessianOperator(model, F.cross_entropy, (x, y)).graph_bytes / 1024
    print(json.dumps(result))


def memory_part(widths: Sequence[float], batch: int, seed: int, threads: int) -> list[list[object]]:
    env = dict(os.environ)
    # glibc: serve every allocation of 64 KiB or more by mmap and unmap it on free, so the
    # resident set shows live memory, not freed memory glibc keeps for reuse.
    env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    # The children only measure their own resident set: run them side by side.
    processes = []
    for width in widths:
        command = [sys.executable, __file__, "--memory-child", str(width)]
        command += ["--batch", str(batch), "--seed", str(seed), "--threads", str(threads)]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    found = []
    for width, process in zip(widths, processes, strict=True):
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory child (width {width}) failed:\n{stderr[-3000:]}")
        found.append(json.loads(stdout.strip().splitlines()[-1]))
    rows: list[list[object]] = []
    first = found[0]
    for item in found:
        n = item["params"]
        cells: list[object] = [f"{item['width']:g}", f"{n / 1e6:.3f}M"]
        for key, _ in MEMORY_KEYS:
            cells.append(f"{item[key] / 1024:.1f} ({item[key] * 1024 / n:.0f})")
        cells.append(f"{item['graph_kib'] / 1024:.1f}")
        for key in ("top5_kib", "pyhessian5_kib"):
            if item is first:
                cells.append("-")
            else:
                ratio = math.log(item[key] / first[key]) / math.log(n / first["params"])
                cells.append(f"{ratio:.2f}")
        dense = 4 * n * n
        cells.append(f"{dense / 2**40:.2f} TiB" if dense >= 2**40 else f"{dense / 2**30:.1f} GiB")
        rows.append(cells)
    return rows


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one round, < 1 min")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the eigenvalue timings")
    parser.add_argument("--hvp-rounds", type=int, default=5, help="rounds of the HVP timings")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier of the CNN")
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-batch", type=int, default=32, help="batch of the memory scan")
    parser.add_argument("--trace-seeds", type=int, default=3, help="seeds of the trace runs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch, args.seed, args.threads)
        return
    if args.quick:
        args.width, args.batch, args.train_steps, args.memory_batch = 0.25, 32, 20, 16
        args.repeat, args.hvp_rounds, args.trace_seeds = 1, 3, 2
    limit_threads(args.threads)
    import pyhessian  # noqa: F401

    print(machine_header())
    print(thread_report())
    model = build_cnn(args.width, args.seed)
    x, y = make_batch(args.batch, args.seed)
    before, after = pretrain(model, x, y, args.train_steps)
    n = num_params(model)
    print(
        f"model: VGG-style CNN, width {args.width:g}, {n:,} parameters; batch {args.batch} "
        f"random images 3x32x32, random labels; loss {before:.3f} -> {after:.3f} after "
        f"{args.train_steps} SGD steps"
    )
    reference = reference_spectrum(model, x, y, k=6)
    print(
        f"reference (float64, ARPACK tol 1e-10, {reference.products} products, "
        f"{fmt_seconds(reference.seconds)}): {fmt_values(reference.eigenvalues)}; "
        f"max residual {reference.residuals.max():.1e}"
    )
    if np.all(reference.eigenvalues > 0):
        print("the 6 eigenvalues of largest magnitude are positive: largest algebraic = magnitude")
    else:
        print("WARNING: negative eigenvalues among the 6 of largest magnitude (LM != LA)")

    verdicts: list[Verdict] = []
    eigen_header = [
        "k",
        "tool / method",
        "runs",
        "median time",
        "HVPs",
        "speed-up vs PyHessian",
        "max rel. err vs reference",
        "max rel. diff vs PyHessian",
        "eigenvalues (by magnitude)",
    ]
    print(f"\n## 1. Top-k eigenvalues (median of {args.repeat} interleaved rounds)\n")
    found, rows = eigen_part(model, x, y, reference, args.repeat, args.seed)
    verdicts += found
    print(markdown_table(eigen_header, rows))

    print(f"\n## 2. Trace ({args.trace_seeds} seeds each)\n")
    verdict, rows = trace_part(model, x, y, args.trace_seeds)
    verdicts.append(verdict)
    header = [
        "tool / estimator",
        "runs",
        "median time",
        "HVPs",
        "speed-up vs PyHessian",
        "RMS std. error",
        "relative",
        "mean estimate ± its spread",
    ]
    print(markdown_table(header, rows))

    print(f"\n## 3. Spectral density (SLQ, median of {args.repeat} interleaved rounds)\n")
    verdict, rows = density_part(model, x, y, reference, DENSITY_STEPS, args.repeat)
    verdicts.append(verdict)
    header = [
        "tool",
        "runs",
        "median time",
        "HVPs",
        "speed-up vs PyHessian",
        "largest node: rel. err vs reference",
        "n x mean node (trace)",
    ]
    print(markdown_table(header, rows))

    print("\n## 4. Float64 model: the default rows of part 1\n")
    model64 = copy.deepcopy(model).double()
    found, rows = eigen_part(model64, x.double(), y, reference, args.repeat, args.seed, full=False)
    verdicts += [replace(v, what=f"{v.what}, float64") for v in found]
    print(markdown_table(eigen_header, rows))
    del model64
    gc.collect()

    print("\n## Targets (same run)\n")
    for verdict in verdicts:
        print(f"- {verdict.line()}")

    print(f"\n## 5. Hessian-vector product vs one gradient (median of {args.hvp_rounds} rounds)\n")
    rows = hvp_part(model, x, y, args.hvp_rounds, block=5)
    print(markdown_table(["computation", "median", "best", "/ gradient"], rows))

    if not args.skip_memory:
        widths = QUICK_MEMORY_WIDTHS if args.quick else MEMORY_WIDTHS
        print(
            f"\n## 6. Peak memory above the resident set before the call, batch "
            f"{args.memory_batch}, one fresh process per width: MiB (bytes per parameter)\n"
        )
        rows = memory_part(widths, args.memory_batch, args.seed, args.threads)
        header = [
            "width",
            "params N",
            *(label for _, label in MEMORY_KEYS),
            "tailwise graph_bytes (MiB)",
            "slope tailwise top-5",
            "slope PyHessian top-5",
            "dense H (4 N^2 B)",
        ]
        print(markdown_table(header, rows))
    print(f"\n{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
