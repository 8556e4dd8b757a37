"""Training-step time of the regularizers of source 004 (Table 4.1) relative to plain SGD.

Each regularizer runs :func:`tailwise.train.regularized_step` (zero_grad, forward, backward,
``regularizer.apply``, ``optimizer.step``) on its own copy of the same model, with plain SGD
(lr 0.01) on one fixed batch; the baseline is the same step without a regularizer. The rules:

* ``L2`` (every step) and ``L2Stopped`` / ``L2StoppedSelective`` before tau: lambda theta, no
  Hessian-vector product (HVP);
* ``L2Stopped`` after tau: no term at all (what remains is the cost of ``apply``);
* ``Metric``, ``SelectiveL2`` and ``L2StoppedSelective`` after tau: one HVP H theta per step
  (forward-over-reverse by default; Metric also with ``hvp_method="double-backward"``).

The limit of the Hessian rules is one HVP on top of the SGD step, so the table also times the
HVP alone (``tailwise.hessian.hvp`` with v = theta) and one gradient: a Hessian rule's step
should cost about ``1 + HVP / SGD step`` times the SGD step.

Cases: an MLP 64-256-256-10 on a batch of 128 scikit-learn digits; tailwise's ``SmallCNN`` (two
conv blocks with batch norm, train mode) on the same digits as 1x8x8 images; and the 0.84M
parameter CIFAR-shaped CNN of ``hessian_vs_pyhessian.py`` on 128 random 3x32x32 images.
Every round runs each variant once, in a shuffled order; the tables give the median step time
and the median over rounds of the per-round ratio to the SGD step of that round.

Run: ``python benchmarks/regularizer_overhead.py [--quick] [--threads 1] [--rounds 100]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from _common import (
    fmt_ratio,
    fmt_seconds,
    limit_threads,
    machine_header,
    markdown_table,
    thread_report,
)
from hessian_vs_pyhessian import build_cnn, make_batch
from tailwise.data.digits import load_digits_dataset
from tailwise.hessian.hvp import hvp
from tailwise.models import MLP, SmallCNN
from tailwise.train.regularizers import (
    L2,
    L2Stopped,
    L2StoppedSelective,
    Metric,
    Regularizer,
    SelectiveL2,
    regularized_step,
)

LAM = 1e-4
OMEGA = 0.1
TAU = 10
LR = 0.01


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    batch: tuple[Tensor, Tensor]
    rounds: int  # at the default --rounds 100


def digits_batch(size: int, flatten: bool) -> tuple[Tensor, Tensor]:
    data = load_digits_dataset(split="train", flatten=flatten)
    x, y = data.tensors
    return x[:size].contiguous(), y[:size].contiguous()


def cases(quick: bool, seed: int) -> list[Case]:
    def seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(seed)
            return build().train()

        return make

    found = [
        Case(
            "MLP 64-256-256-10, digits",
            seeded(lambda: MLP(64, [256, 256], 10)),
            digits_batch(128, True),
            100,
        ),
        Case(
            "SmallCNN (32, 64) + BN, digits 8x8",
            seeded(lambda: SmallCNN(1, 10, channels=(32, 64), image_size=8)),
            digits_batch(128, False),
            100,
        ),
    ]
    if quick:
        return found
    cifar = Case(
        "CNN 0.84M, random 3x32x32",
        lambda: build_cnn(1.0, seed).train(),
        make_batch(128, seed),
        15,
    )
    return [*found, cifar]


def variants() -> dict[str, tuple[Regularizer | None, int]]:
    """name -> (regularizer or None for plain SGD, the time t passed to it)."""
    return {
        "SGD": (None, 0),
        "L2": (L2(LAM), 0),
        "L2Stopped, t < tau": (L2Stopped(LAM, TAU), 0),
        "L2Stopped, t >= tau": (L2Stopped(LAM, TAU), TAU),
        "Metric": (Metric(LAM), 0),
        "Metric (double backward)": (Metric(LAM, hvp_method="double-backward"), 0),
        "SelectiveL2": (SelectiveL2(LAM, OMEGA), 0),
        "L2StoppedSelective, t < tau": (L2StoppedSelective(LAM, TAU, OMEGA), 0),
        "L2StoppedSelective, t >= tau": (L2StoppedSelective(LAM, TAU, OMEGA), TAU),
    }


def run_case(case: Case, rounds: int, seed: int) -> tuple[list[list[object]], str]:
    x, y = case.batch
    loss_fn = F.cross_entropy
    setups = variants()
    models = {name: case.build() for name in setups}
    optimizers = {
        name: torch.optim.SGD(model.parameters(), lr=LR) for name, model in models.items()
    }

    def step(name: str) -> Callable[[], object]:
        regularizer, t = setups[name]
        model, optimizer = models[name], optimizers[name]
        if regularizer is None:

            def sgd() -> object:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                return loss.detach()

            return sgd
        return lambda: regularized_step(model, optimizer, loss_fn, x, y, regularizer, t)

    probe = case.build()
    params = [p for p in probe.parameters() if p.requires_grad]
    theta = {name: p.detach().clone() for name, p in probe.named_parameters() if p.requires_grad}

    def gradient() -> object:
        return torch.autograd.grad(loss_fn(probe(x), y), params)

    def theta_hvp() -> object:
        return hvp(probe, loss_fn, x, y, theta)

    work: dict[str, Callable[[], object]] = {name: step(name) for name in setups}
    work["gradient alone (forward + backward)"] = gradient
    work["HVP alone (H theta, default method)"] = theta_hvp
    times: dict[str, list[float]] = {name: [] for name in work}
    order = list(work)
    rng = random.Random(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # warm-up
            for fn in work.values():
                fn()
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                start = time.perf_counter()
                work[name]()
                times[name].append(time.perf_counter() - start)
    # tailwise's own warnings (an HVP method falling back); torch's deprecation notices aside.
    notes = sorted(
        {str(w.message).splitlines()[0][:200] for w in caught if w.category is RuntimeWarning}
    )

    sgd = times["SGD"]
    rows: list[list[object]] = []
    for name in work:
        per_round = [t / s for t, s in zip(times[name], sgd, strict=True)]
        q1, med, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
        regularizer = setups[name][0] if name in setups else None
        hvps = "1" if "HVP" in name else "-"
        if regularizer is not None:
            hvps = f"{regularizer.stats.hvp_count / regularizer.stats.steps:.0f}"
        elif name == "SGD":
            hvps = "0"
        rows.append(
            [
                name,
                fmt_seconds(statistics.median(times[name])),
                f"{med:.2f}x ({q1:.2f}-{q3:.2f})",
                hvps,
            ]
        )
    hvp_time = statistics.median(times["HVP alone (H theta, default method)"])
    grad_time = statistics.median(times["gradient alone (forward + backward)"])
    sgd_time = statistics.median(sgd)
    summary = (
        f"HVP / gradient = {fmt_ratio(hvp_time, grad_time)}; HVP / SGD step = "
        f"{fmt_ratio(hvp_time, sgd_time)}: a step with one HVP should take about "
        f"{1 + hvp_time / sgd_time:.2f}x the SGD step"
    )
    if notes:
        summary += "\nwarnings: " + "; ".join(notes)
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two digits cases, 20 rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument(
        "--rounds",
        type=int,
        default=100,
        help="rounds for the digits cases (the CIFAR-shaped CNN gets 15 per 100)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit_threads(args.threads)
    print(machine_header())
    print(thread_report())
    print(f"plain SGD lr {LR}; lambda {LAM}, omega {OMEGA}, tau {TAU} (t = 0 or t = tau)\n")
    scale = 0.2 if args.quick else args.rounds / 100
    for case in cases(args.quick, args.seed):
        rounds = max(5, round(case.rounds * scale))
        model = case.build()
        n = sum(p.numel() for p in model.parameters())
        print(
            f"## {case.name}: {n:,} parameters, batch {case.batch[1].shape[0]}, {rounds} rounds\n"
        )
        rows, summary = run_case(case, rounds, args.seed)
        header = ["step", "median", "/ SGD step (quartiles)", "HVPs per step"]
        print(markdown_table(header, rows))
        print(f"\n{summary}\n")
    print(f"{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
