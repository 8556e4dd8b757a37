"""Cost of the splitting wrappers (RVSM, RGSM, ADMM) relative to the wrapped optimizer alone.

Same model, same batch, same SGD (lr 0.05, momentum 0.9, weight decay 5e-4); the wrappers
split every Linear/Conv weight. For each method two times are measured per training step
(the mean over ``--steps`` steps after 3 warm-up steps, best of ``--repeat``):

* ``step``: ``optimizer.step()`` alone -- the wrapper's extra work (the coupling term
  ``beta (w - u)`` added to the gradient, the prox of every split weight; for ADMM the
  penalty ``rho (W - Z + U)``, with its per-round projection amortized over ``update_every``
  = 391 steps, one CIFAR epoch of batches of 128);
* ``train step``: ``zero_grad`` + forward + backward + ``step``, what a user waits for. On
  a shared machine the forward and backward passes vary far more than the wrapper's cost, so
  the last column also gives the derived ratio 1 + (step - SGD step) / SGD train step: the
  wrappers change nothing but the step.

Ratios are against plain SGD on the same machine in the same run; the methods take turns
within each timed pass. One torch / BLAS thread by default (``--threads``): on a shared
2-core machine more threads mostly wait on each other.

Models: ``resnet20`` (CIFAR ResNet20, 0.27M parameters, batches of 128 3x32x32 random images:
compute-heavy per parameter) and ``mlp`` (784 -> 1024 -> 1024 -> 10, 1.86M parameters,
batches of 128: little compute per parameter, the worst case for the wrappers).

Run: ``python benchmarks/splitting_overhead.py [--steps 20] [--repeat 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from _common import fmt_ratio, limit_threads, machine_header, markdown_table, thread_report
from tailwise.models import MLP, create_model
from tailwise.train.splitting import ADMM, RGSM, RVSM, splittable_weights

Builder = Callable[[nn.Module, torch.optim.Optimizer], torch.optim.Optimizer]

METHODS: dict[str, Builder] = {
    "SGD": lambda model, sgd: sgd,
    "RVSM l0": lambda model, sgd: RVSM(sgd, model, penalty="l0", lam=1e-6, beta=0.1),
    "RVSM l1": lambda model, sgd: RVSM(sgd, model, penalty="l1", lam=1e-6, beta=0.1),
    "RVSM Tl1": lambda model, sgd: RVSM(sgd, model, penalty="tl1", lam=1e-6, beta=0.1),
    "RGSM group lasso": lambda model, sgd: RGSM(
        sgd, model, penalty="group_l1", lam1=0.05, beta=1.0, lam2=1e-5
    ),
    "ADMM": lambda model, sgd: ADMM(sgd, model, sparsity=0.6, rho=1e-2, update_every=391),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_case(name: str, batch_size: int, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "resnet20":
        model: nn.Module = create_model("resnet20")
        x = torch.randn(batch_size, 3, 32, 32, generator=generator)
    else:
        model = MLP(784, [1024, 1024], 10)
        x = torch.randn(batch_size, 784, generator=generator)
    y = torch.randint(0, 10, (batch_size,), generator=generator)
    return model.to(device), x.to(device), y.to(device)


class Timer:
    """One method on its own copy of the model; :meth:`run` times ``count`` training steps."""

    def __init__(self, base: nn.Module, build: Builder) -> None:
        self.model = copy.deepcopy(base)
        sgd = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.optimizer = build(self.model, sgd)
        self.best_step = self.best_total = float("inf")

    def run(self, x: Tensor, y: Tensor, count: int, record: bool) -> None:
        device = x.device
        step_time = 0.0
        sync(device)
        start = time.perf_counter()
        for _ in range(count):
            self.optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(self.model(x), y).backward()
            sync(device)
            before = time.perf_counter()
            self.optimizer.step()
            sync(device)
            step_time += time.perf_counter() - before
        total = time.perf_counter() - start
        if record:
            self.best_step = min(self.best_step, step_time / count)
            self.best_total = min(self.best_total, total / count)


def time_methods(
    base: nn.Module, x: Tensor, y: Tensor, steps: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """{method: (seconds per optimizer.step(), seconds per training step)}, best of
    ``repeat`` passes; the methods take turns within each pass, so a burst of load from
    elsewhere hits all of them rather than one."""
    timers = {method: Timer(base, build) for method, build in METHODS.items()}
    for timer in timers.values():
        timer.run(x, y, 3, record=False)  # warm-up
    for _ in range(repeat):
        for timer in timers.values():
            timer.run(x, y, steps, record=True)
    return {method: (t.best_step, t.best_total) for method, t in timers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best of)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=["resnet20", "mlp"])
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument(
        "--device", action="append", help="cpu / cuda (default: cpu, and cuda if available)"
    )
    args = parser.parse_args()
    devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    limit_threads(args.threads)
    print(machine_header())
    print(thread_report())
    rows = []
    for device_name in devices:
        device = torch.device(device_name)
        for model_name in args.models:
            base, x, y = make_case(model_name, args.batch_size, device)
            split = sum(p.numel() for p in splittable_weights(base).values())
            times = time_methods(base, x, y, args.steps, args.repeat)
            sgd_step, sgd_total = times["SGD"]
            for method, (step, total) in times.items():
                rows.append(
                    [
                        device_name,
                        model_name,
                        f"{split / 1e6:.2f}M",
                        method,
                        f"{step * 1e3:.2f} ms",
                        fmt_ratio(step, sgd_step),
                        f"{total * 1e3:.1f} ms",
                        f"{total / sgd_total:.2f}x",
                        f"{1.0 + (step - sgd_step) / sgd_total:.3f}x",
                    ]
                )
    print()
    print(
        f"batch {args.batch_size}; mean over {args.steps} steps, best of {args.repeat}; "
        "ratios against SGD alone on the same model and batch"
    )
    header = [
        "device",
        "model",
        "split weights",
        "method",
        "step",
        "step / SGD step",
        "train step",
        "train step / SGD",
        "(SGD train step + extra step) / SGD",
    ]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
