"""tailwise.sims.nonoverlap: throughput of RVSM on the population loss, and the theory checks.

1. Throughput (steps per second, best of ``--repeat``): :func:`run_rvsm` (numpy over the
   filter's entries, and over independent runs when ``w0`` has a leading dimension) against
   a naive loop written here, for the record: one Python loop per step and per entry
   (``math`` on lists; the same closed-form gradient and soft threshold). The naive loop's
   trajectory is checked against run_rvsm's before it is timed.
2. Closed forms against Monte Carlo over ``--samples`` Gaussian inputs
   (:func:`monte_carlo_check`): for each model and (k, m), the largest |z| over the loss and
   every gradient entry, and the largest error relative to the standard error's scale.
3. Theorems 3.1 / 3.2 of source 002 over ``--problems`` random problems (m = 20, k = 4, w*
   with half its entries zero, parameters inside the conditions as in the experiment's
   defaults): share of runs whose (source's) Lagrangian decreased monotonically, the largest
   relative rise, the same for RVSCGD's coarse Lagrangian, the limit angle against delta,
   the distance against the bound (3.15), the limit relation residual and u's sparsity.

Run: ``python benchmarks/sims_nonoverlap.py [--steps 20000] [--samples 1000000]
[--problems 200] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from _common import best_of, limit_threads, machine_header, markdown_table
from tailwise.sims.nonoverlap import (
    limit_checks,
    monte_carlo_check,
    run_rvscgd,
    run_rvsm,
    theorem_conditions,
)


def naive_rvsm(
    w0: list[float], w_star: list[float], k: int, eta: float, beta: float, lam: float, steps: int
) -> list[list[float]]:
    """RVSM with the l1 penalty, one Python loop per step and per entry (the record)."""
    a_coef = (k * k - k) / (2 * math.pi) + k / 2
    b_coef = (k * k - k) / (2 * math.pi)
    t = lam / beta
    ns = math.sqrt(sum(x * x for x in w_star))
    w = list(w0)
    u = [math.copysign(max(abs(x) - t, 0.0), x) for x in w]
    path = [w]
    for _ in range(steps):
        nw = math.sqrt(sum(x * x for x in w))
        cos = sum(x * y for x, y in zip(w, w_star, strict=True)) / (nw * ns)
        theta = math.acos(max(-1.0, min(1.0, cos)))
        coef = (2 * a_coef - k * ns * math.sin(theta) / (math.pi * nw) - 2 * b_coef * ns / nw) / (
            k * k
        )
        along = (math.pi - theta) / (k * math.pi)
        w = [
            wi - eta * (coef * wi - along * si + beta * (wi - ui))
            for wi, si, ui in zip(w, w_star, u, strict=True)
        ]
        u = [math.copysign(max(abs(x) - t, 0.0), x) for x in w]
        path.append(w)
    return path


def problem(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(m)
    w_star[rng.permutation(m)[: m // 2]] = 0.0
    w0 = rng.standard_normal(m)
    return w_star / np.linalg.norm(w_star), w0 / np.linalg.norm(w0)


def throughput(steps: int, repeat: int) -> str:
    k, eta, beta, lam = 4, 1.0, 0.05, 0.005
    rows = []
    for m, runs in ((20, 1), (20, 1000), (10_000, 1)):
        w_star, w0 = problem(m, 0)
        start = np.tile(w0, (runs, 1)) if runs > 1 else w0
        n = max(10, steps // runs) if runs > 1 else (steps if m < 1000 else steps // 10)
        vectorized, run = best_of(
            lambda s=start, ws=w_star, n=n: run_rvsm(
                s, ws, k, eta=eta, beta=beta, lam=lam, steps=n
            ),
            repeat,
        )
        naive_n = max(10, n // 10) if m >= 1000 else n
        naive_s, path = best_of(
            lambda w=w0, ws=w_star, n=naive_n: naive_rvsm(list(w), list(ws), k, eta, beta, lam, n),
            1 if m >= 1000 else repeat,
        )
        single = run.w[:, 0] if runs > 1 else run.w
        agree = float(np.max(np.abs(np.array(path) - single[: naive_n + 1])))
        ours = n * runs / vectorized
        naive = naive_n / naive_s  # the naive loop does one run at a time
        rows.append(
            [
                m,
                runs,
                f"{ours:,.0f}",
                f"{naive:,.0f}",
                f"{ours / naive:.1f}x",
                f"{agree:.1e}",
            ]
        )
    return markdown_table(
        ["m", "runs", "run_rvsm run-steps/s", "naive loop steps/s", "speed-up", "max |diff|"], rows
    )


def monte_carlo(samples: int) -> str:
    rows = []
    rng = np.random.default_rng(7)
    for k, m in ((1, 3), (4, 5), (16, 20)):
        w, w_star = rng.standard_normal(m), rng.standard_normal(m)
        for model in ("relu", "binary"):
            table = monte_carlo_check(w, w_star, k, model=model, samples=samples, seed=k)
            for prefix in ("loss", "grad", "coarse_grad"):
                part = table[table.quantity.str.replace(r"\[\d+\]", "", regex=True) == prefix]
                if part.empty:
                    continue
                name = {"relu": "ReLU", "binary": "binary"}[model] + " " + prefix
                scale = float(np.max(np.abs(part.closed_form)))
                rows.append(
                    [
                        name,
                        k,
                        m,
                        f"{scale:.4g}",
                        f"{float(np.max(np.abs(part.monte_carlo - part.closed_form))):.2e}",
                        f"{float(np.max(part.stderr)):.2e}",
                        f"{float(np.max(np.abs(part.z))):.2f}",
                    ]
                )
    return markdown_table(
        ["quantity", "k", "m", "max |closed form|", "max |MC - closed|", "max stderr", "max |z|"],
        rows,
    )


def theorems(problems: int) -> str:
    k, m = 4, 20
    settings = {
        "rvsm": (run_rvsm, {"eta": 1.0, "beta": 0.05, "lam": 0.005}),
        "rvscgd": (run_rvscgd, {"eta": 0.25, "beta": 0.2, "lam": 0.02}),
    }
    rows = []
    for name, (runner, options) in settings.items():
        met = monotone = coarse_monotone = 0
        rise = coarse_rise = 0.0
        angles, deltas, ratio, relation, sparsity = [], [], [], [], []
        for seed in range(problems):
            w_star, w0 = problem(m, 100 + seed)
            run = runner(w0, w_star, k, steps=400, **options)
            conditions = theorem_conditions(run)
            if conditions["met"] != "yes":
                continue
            met += 1
            for values, is_coarse in ((run.lagrangian, False), (run.coarse_lagrangian, True)):
                step_rise = float(np.max(np.diff(values) / np.abs(values[:-1])))
                if is_coarse:
                    coarse_monotone += step_rise <= 1e-12
                    coarse_rise = max(coarse_rise, step_rise)
                else:
                    monotone += step_rise <= 1e-12
                    rise = max(rise, step_rise)
            checks = limit_checks(run)
            angles.append(float(checks["angle"]))
            deltas.append(float(conditions["delta"]))
            relation.append(float(checks["relation"]))
            sparsity.append(float(run.sparsity[-1]))
            if name == "rvscgd":
                ratio.append(float(checks["distance"] / checks["distance_bound"]))
        rows.append(
            [
                name,
                f"{met}/{problems}",
                f"{monotone}/{met} (max rise {rise:.1e})",
                f"{coarse_monotone}/{met} (max rise {coarse_rise:.1e})"
                if name == "rvscgd"
                else "=",
                f"{max(angles):.4f} < {min(deltas):.4f}",
                f"{max(ratio):.3f}" if ratio else "-",
                f"{max(relation):.1e}",
                f"{min(sparsity):.2f} / 0.50",
            ]
        )
    return markdown_table(
        [
            "algorithm",
            "conditions met",
            "Lagrangian monotone",
            "coarse Lagrangian monotone",
            "max limit angle < delta",
            "max distance / (3.15)",
            "max relation residual",
            "min sparsity(u) / w*",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    limit_threads(1)
    print(machine_header())
    print("\n## Throughput: RVSM steps on the closed-form population loss (k = 4, l1)\n")
    print(throughput(args.steps, args.repeat))
    print(f"\n## Closed forms vs Monte Carlo ({args.samples:,} Gaussian inputs each)\n")
    print(monte_carlo(args.samples))
    print(f"\n## Theorems 3.1 / 3.2 over {args.problems} random problems (m = 20, k = 4)\n")
    print(theorems(args.problems))


if __name__ == "__main__":
    main()
