"""tailwise Hessian eigenvalues vs PyHessian 0.1 on a ~1M-parameter CNN; HVP cost and memory.

Model and data (the same for both tools, built here, no downloads): a CIFAR-style VGG without
batch norm or dropout, ``[Conv3x3 -> ReLU -> MaxPool2] x 3`` with 24, 48, 96 channels, then
``Linear(1536, 512) -> ReLU -> Linear(512, 10)``: 0.84M parameters (``--width`` scales every
width). One batch of ``--batch`` random N(0, 1) images of 3 x 32 x 32 with random labels,
cross-entropy loss, float32, eval mode. At initialization the top of this Hessian is a cluster
of nearly equal eigenvalues with negative ones of the same magnitude, unlike a trained network;
so the model first takes ``--train-steps`` full-batch SGD steps (momentum 0.9) on the batch,
which separates the top eigenvalues from the bulk (all positive, 10-20% apart).

Three parts:

1. **Top-1 and top-5 eigenvalues**, end to end from the model (building the operator included):
   tailwise ``top_eigenvalues`` with ``method="lanczos"`` (ARPACK), ``"power"`` (block power
   iteration) and ``"deflation"`` (PyHessian's algorithm), and PyHessian's
   ``hessian(...).eigenvalues`` (deflated power iteration on a retained double-backward graph,
   its defaults ``maxIter=100, tol=1e-3``, and once with ``tol=1e-4``). The two rows of the
   target (PyHessian's defaults, tailwise Lanczos with ``tol=1e-2``) run ``--repeat`` times,
   interleaved with each other and with the single runs of the other rows; the table shows the
   median time. Accuracy: the relative error of each eigenvalue against a
   reference computed independently of both tools (a float64 copy of the model, ARPACK with
   ``tol=1e-10`` on a retained double-backward graph); the table gives the largest over the k
   eigenvalues. The float32 Hessian of both tools differs from the float64 one by about 1e-6
   relative, so errors below ~1e-5 are not resolved.
2. **HVP cost**: one Hessian-vector product (tailwise forward-over-reverse and double backward;
   a block of k = 5 products through ``HessianOperator.matmat`` with and without vmap; PyHessian's
   product on its retained graph) against one gradient (forward + backward), interleaved, median.
3. **Peak memory vs model size**: 4 widths (about 0.25M, 0.5M, 1M and 2M parameters), each in a
   fresh process (run side by side) with glibc's mmap threshold fixed at 64 KiB, so freed
   buffers go back to the OS and the resident set shows what is live. After a warm-up, the peak
   resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set just before
   the call, for one gradient, one HVP and a top-1 Lanczos run (``top_eigenvalues`` defaults),
   in MiB and bytes per parameter, and the log-log slope d log(peak) / d log(N) from the
   smallest width (1 = linear in N; a dense Hessian would be 2, and 4 N^2 bytes). Widening the
   CNN multiplies N by w^2 but the activations by w only, so an HVP, whose peak is mostly
   activations at this batch, grows more slowly than N; Lanczos adds ARPACK's float64 vectors,
   a fixed number of bytes per parameter.

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
from dataclasses import dataclass
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
from tailwise.models import VGG

MIB = 2**20
CHANNELS = (24, 48, 96)
HIDDEN = 512
# Width multipliers of the memory scan: about 0.25M, 0.5M, 1M and 2M parameters.
MEMORY_WIDTHS = (0.55, 0.77, 1.09, 1.54)
QUICK_MEMORY_WIDTHS = (0.125, 0.177, 0.25, 0.354)
# tailwise's Lanczos tolerance in the comparison: ARPACK's relative residual, so the eigenvalue
# error is of order tol^2 (on this model far below the error of PyHessian's default tol 1e-3;
# Lanczos needs at least ncv products whatever the tolerance, so looser buys little).
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


class PyHessianRunner:
    """PyHessian's ``eigenvalues`` from the model, counting its Hessian-vector products."""

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

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, k: int, tol: float = 1e-3, max_iter: int = 100
    ) -> Run:
        self.count = 0
        self.module.hessian_vector_product = self._counted
        torch.manual_seed(self.seed)  # its start vectors come from the global generator
        model.zero_grad(set_to_none=True)  # it accumulates into .grad with create_graph=True
        try:
            with quiet():  # "backward() with create_graph=True ..." warning
                computer = self.module.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
                values, _ = computer.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        finally:
            self.module.hessian_vector_product = self.original
            model.zero_grad(set_to_none=True)  # break the grad <-> graph reference cycle
        del computer
        gc.collect()
        return Run(np.asarray(values, dtype=np.float64), self.count)


def tailwise_runner(
    method: str, tol: float | None
) -> Callable[[nn.Module, Tensor, Tensor, int], Run]:
    def run(model: nn.Module, x: Tensor, y: Tensor, k: int) -> Run:
        result = top_eigenvalues(
            model, F.cross_entropy, (x, y), k=k, method=method, tol=tol, progress=False
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
LANCZOS = f"tailwise lanczos (tol {LANCZOS_TOL:g})"


def eigen_part(
    model: nn.Module, x: Tensor, y: Tensor, reference: Reference, repeat: int, seed: int
) -> tuple[dict[int, dict[str, tuple[float, Run]]], list[list[object]]]:
    """The eigenvalue table; the target's two rows run ``repeat`` times, the others once."""
    pyhessian = PyHessianRunner(seed)
    tools: dict[str, tuple[Callable[[nn.Module, Tensor, Tensor, int], Run], int]] = {
        PYHESSIAN: (pyhessian, repeat),
        LANCZOS: (tailwise_runner("lanczos", LANCZOS_TOL), repeat),
        "tailwise lanczos (tol 1e-6: default)": (tailwise_runner("lanczos", None), 1),
        "tailwise power (tol 1e-3: default)": (tailwise_runner("power", None), 1),
        "tailwise deflation (tol 1e-3: default)": (tailwise_runner("deflation", None), 1),
        "PyHessian (tol 1e-4, maxIter 100)": (
            lambda m, a, b, k: pyhessian(m, a, b, k, tol=1e-4),
            1,
        ),
    }
    results: dict[int, dict[str, tuple[float, Run]]] = {}
    rows: list[list[object]] = []
    for k in (1, 5):
        variants: dict[str, tuple[Callable[[], Run], int]] = {
            name: (functools.partial(fn, model, x, y, k), runs)
            for name, (fn, runs) in tools.items()
        }
        timed = interleaved(variants, repeat)
        base_time = statistics.median(timed[PYHESSIAN][0])
        base_values = timed[PYHESSIAN][1].eigenvalues
        results[k] = {}
        for name, (times, run) in timed.items():
            med = statistics.median(times)
            results[k][name] = (med, run)
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
    return results, rows


# ---------------------------------------------------------------------------------------------
# Part 2: HVP cost


def hvp_part(model: nn.Module, x: Tensor, y: Tensor, rounds: int, block: int) -> list[list[object]]:
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    generator = torch.Generator().manual_seed(1)
    vector = {name: torch.randn(p.shape, generator=generator) for name, p in named.items()}
    vlist = list(vector.values())
    vmapped = HessianOperator(model, F.cross_entropy, (x, y))
    looped = HessianOperator(model, F.cross_entropy, (x, y), vectorize=False)
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
# Part 3: memory (one child process per width)


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


def memory_child(width: float, batch: int, seed: int, threads: int) -> None:
    limit_threads(threads)
    model = build_cnn(width, seed)
    x, y = make_batch(batch, seed)
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    vector = {name: torch.randn_like(p) for name, p in named.items()}

    def gradient() -> object:
        return torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def one_hvp() -> object:
        return hvp(model, F.cross_entropy, x, y, vector)

    def lanczos() -> object:
        return top_eigenvalues(model, F.cross_entropy, (x, y), k=1, progress=False)

    # Warm-up: lazy imports, oneDNN primitives, ARPACK; freed buffers are returned to the OS.
    gradient()
    one_hvp()
    tiny = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    top_eigenvalues(tiny, F.cross_entropy, (torch.randn(8, 4), torch.randint(0, 2, (8,))), k=1)
    result = {
        "width": width,
        "params": num_params(model),
        "gradient_kib": _peak_increase_kib(gradient),
        "hvp_kib": _peak_increase_kib(one_hvp),
        "lanczos_kib": _peak_increase_kib(lanczos),
    }
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
        for key in ("gradient_kib", "hvp_kib", "lanczos_kib"):
            cells.append(f"{item[key] / 1024:.1f} ({item[key] * 1024 / n:.0f})")
        for key in ("hvp_kib", "lanczos_kib"):
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
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch, args.seed, args.threads)
        return
    if args.quick:
        args.width, args.batch, args.train_steps, args.memory_batch = 0.25, 32, 20, 16
        args.repeat, args.hvp_rounds = 1, 3
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

    print(f"\n## Top-k eigenvalues (median of {args.repeat} interleaved rounds)\n")
    results, rows = eigen_part(model, x, y, reference, args.repeat, args.seed)
    header = [
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
    print(markdown_table(header, rows))
    ph_time, ph_run = results[5][PYHESSIAN]
    tw_time, tw_run = results[5][LANCZOS]
    ph_err = max_relative(ph_run.eigenvalues, reference.eigenvalues)
    tw_err = max_relative(tw_run.eigenvalues, reference.eigenvalues)
    met = tw_time <= 0.5 * ph_time and tw_err <= ph_err
    print(
        f"\nTarget (tailwise top-5 in <= 1/2 of PyHessian's time at equal or better accuracy): "
        f"lanczos tol {LANCZOS_TOL:g} {fmt_seconds(tw_time)} (error {tw_err:.1e}) vs PyHessian "
        f"{fmt_seconds(ph_time)} (error {ph_err:.1e}): {tw_time / ph_time:.2f}x the time -> "
        f"{'MET' if met else 'NOT MET'}"
    )

    print(f"\n## Hessian-vector product vs one gradient (median of {args.hvp_rounds} rounds)\n")
    rows = hvp_part(model, x, y, args.hvp_rounds, block=5)
    print(markdown_table(["computation", "median", "best", "/ gradient"], rows))

    if not args.skip_memory:
        widths = QUICK_MEMORY_WIDTHS if args.quick else MEMORY_WIDTHS
        print(
            f"\n## Peak memory above the resident set before the call, batch {args.memory_batch}"
            ", one fresh process per width: MiB (bytes per parameter)\n"
        )
        rows = memory_part(widths, args.memory_batch, args.seed, args.threads)
        header = [
            "width",
            "params N",
            "gradient",
            "one HVP",
            "Lanczos top-1",
            "slope HVP",
            "slope Lanczos",
            "dense H (4 N^2 B)",
        ]
        print(markdown_table(header, rows))
    print(f"\n{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
