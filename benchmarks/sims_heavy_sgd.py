"""Heavy-tailed SGD simulator (tailwise.sims.heavy_sgd): throughput and the theory checks.

Usage: ``python benchmarks/sims_heavy_sgd.py [--full] [--quick]``

1. Throughput in run-steps per second: the vectorized simulator (all runs of a cell as one
   (runs, d) computation, one thread) against a naive per-run, per-step loop written here
   for the record (batches by ``rng.choice(n, b, replace=False)``, and as [GŞZ21]'s notebook
   does, the first b of a fresh permutation of the n rows).
2. The sweep (issue 12 §3): alpha vs eta / b with the Spearman check, the divergent cells
   against the exact Lyapunov exponent; ``--full`` runs [GŞZ21]'s grid with 1600 runs
   (several minutes), the default the CLI's reduced grid (400 runs, b in 1, 2, 5, 10, 20).
3. The stationary theory check: simulated alpha (MMO, half-sampling SE) against the Kesten
   tail index in the heavy-tailed band of small d.
4. stable-prunability: slopes and advantages of the keep ratio vs alpha for W1, W2, W3.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from _common import limit_threads, machine_header, markdown_table
from tailwise.sims import heavy_sgd
from tailwise.sims.heavy_sgd import (
    heavy_sgd_experiment,
    linear_regression_sgd,
    stable_prunability_experiment,
)


def naive_runs(
    data: object, eta: float, b: int, runs: int, steps: int, seed: int, permutation: bool
) -> np.ndarray:
    """One run after another, one step at a time: the loop the simulator replaces."""
    features, targets, ols = data.features, data.targets, data.ols  # type: ignore[attr-defined]
    n, d = features.shape
    rng = np.random.default_rng(seed)
    out = np.empty((runs, d))
    for r in range(runs):
        x = 5.0 * rng.standard_normal(d)
        total = np.zeros(d)
        for k in range(steps):
            batch = rng.permutation(n)[:b] if permutation else rng.choice(n, b, replace=False)
            rows = features[batch]
            x = x - (eta / b) * rows.T @ (rows @ x - targets[batch])
            if k >= steps // 2:
                total += x
        out[r] = total / (steps - steps // 2) - ols
    return out


def throughput(quick: bool) -> None:
    data = heavy_sgd._data(10_000, 100, 0)
    steps = 1000
    rows = []
    for b in (1, 5, 20):
        runs = 400 if quick else 1600
        start = time.perf_counter()
        heavy_sgd._sgd(data, 0.02, b, runs, steps, np.random.default_rng(0))
        fast = runs * steps / (time.perf_counter() - start)
        naive_count = 4 if quick else 16
        speeds = []
        for permutation in (False, True):
            start = time.perf_counter()
            naive_runs(data, 0.02, b, naive_count, steps, 0, permutation)
            speeds.append(naive_count * steps / (time.perf_counter() - start))
        rows.append(
            [
                b,
                runs,
                f"{fast:,.0f}",
                f"{speeds[0]:,.0f}",
                f"{speeds[1]:,.0f}",
                f"{fast / speeds[0]:.0f}x",
                f"{fast / speeds[1]:.0f}x",
            ]
        )
    print("## Throughput (run-steps per second, d = 100, n = 10^4, eta = 0.02, one thread)\n")
    header = [
        "b",
        "runs",
        "vectorized",
        "naive choice",
        "naive permutation",
        "vs choice",
        "vs perm",
    ]
    print(markdown_table(header, rows))


def fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    return (
        f"{value:.{digits}f}"
        if se is None or not math.isfinite(se)
        else (f"{value:.{digits}f} ± {se:.{digits}f}")
    )


def sweep_table(full: bool) -> None:
    start = time.perf_counter()
    result = heavy_sgd_experiment(full=full, progress=False)
    seconds = time.perf_counter() - start
    table = result.table
    print(
        f"\n## Sweep ({'full [GŞZ21] grid' if full else 'CLI default'}: "
        f"{result.options['runs']} runs x {result.options['steps']} steps, {seconds:.0f} s)\n"
    )
    rows = [
        [
            int(r.batch_size),
            f"{r.eta:.2f}",
            f"{r.ratio:.4f}",
            fmt(r.alpha, r.alpha_se),
            fmt(r.alpha_theory, digits=2),
            fmt(r.growth_rate, r.growth_rate_se, 4),
            f"{r.lyapunov:+.4f}",
            int(r.overflowed_runs),
            "yes" if r.diverged else "no",
        ]
        for r in table.itertuples()
    ]
    header = [
        "b",
        "eta",
        "eta/b",
        "alpha (MMO)",
        "alpha theory",
        "growth",
        "Lyapunov",
        "overflowed",
        "diverged",
    ]
    print(markdown_table(header, rows))
    print()
    for key, value in result.summary.items():
        print(f"- {key}: {value}")


def stationary_check(quick: bool) -> None:
    cases = [(0.75, 1, 1), (0.85, 1, 1), (0.95, 1, 1), (1.6, 5, 1), (1.35, 5, 2)]
    seeds = range(2 if quick else 6)
    rows = []
    for eta, b, d in cases:
        cells = [linear_regression_sgd(eta, b, d=d, runs=2000, seed=s) for s in seeds]
        alphas = np.array([c.alpha for c in cells])
        se = float(np.mean([c.alpha_se for c in cells])) / math.sqrt(len(cells))
        theory = cells[0].alpha_theory
        rows.append(
            [
                d,
                b,
                eta,
                fmt(theory),
                fmt(float(alphas.mean()), se),
                f"{(alphas.mean() - theory) / se:+.1f}",
                len(cells),
            ]
        )
    print(
        "\n## Stationary heavy tails: simulated alpha vs the Kesten tail index "
        "(2000 runs x 1000 steps, mean over seeds ± SE)\n"
    )
    print(markdown_table(["d", "b", "eta", "theory", "simulated", "z", "seeds"], rows))


def prunability() -> None:
    start = time.perf_counter()
    result = stable_prunability_experiment(progress=False)
    seconds = time.perf_counter() - start
    print(f"\n## stable-prunability (500 x 500 layers, 8 seeds, error 0.1, {seconds:.0f} s)\n")
    for key, value in result.summary.items():
        print(f"- {key}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="[GŞZ21]'s full grid, 1600 runs")
    parser.add_argument("--quick", action="store_true", help="fewer runs and seeds")
    args = parser.parse_args()
    limit_threads(1)
    print(machine_header(), "\n")
    throughput(args.quick)
    sweep_table(args.full)
    stationary_check(args.quick)
    prunability()


if __name__ == "__main__":
    main()
