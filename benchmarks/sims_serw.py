"""Senile reinforced random walks (source 002 ch. 2): simulator throughput and theory checks.

Throughput: walker-steps per second of :func:`tailwise.sims.serw.simulate_serw` (whole bouts,
vectorized over walkers and blocks of bouts) against two naive loops written here from the
definition, for the record: a numpy loop over steps (vectorized over walkers, one step at a
time, xi drawn afresh every step; timed over min(n_steps, 2000) steps, its cost per step does
not depend on n) and a pure-Python loop over the steps of one walker. Every simulator runs on
one thread of this process (numpy does not thread elementwise work).

Theory checks (numbers with their Monte Carlo standard errors):

* unperturbed 1-D: E S_n^2 ln n / n = a + b / ln n fitted over n in [10^3, n_max], a against
  (1 - ln 2)/(2 ln 2 - 1) ~ 0.794 (Prop. 2.2.1), and the same fit on the exact E S_n^2
  (:func:`exact_msd`), the bias of the fitted form; simulated E S_n^2 against the exact values;
* v = lim E|S_n|^2 / n simulated (slope over the second half) against eq. (2.2)
  (:func:`diffusion_constant`): model I delta in {0.3, 0.1, 0.03, 0.01}, models II (exponential
  and Pareto(1/2) xi) and III, d = 2, 3 unperturbed and under model I;
* rates from the theory alone: v |ln delta| (Theorem 2.3), Pareto and log-Pareto xi (Theorem
  2.4), (v - v_0) / delta in d = 2, 3 (Theorem 2.6 (i));
* the empirical bout distribution against P(T > m).

Run: ``python benchmarks/sims_serw.py [--quick] [--seed 0]``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from _common import machine_header, markdown_table
from tailwise.sims.serw import (
    SERW_1D_LIMIT,
    XiLaw,
    bout_survival,
    diffusion_constant,
    exact_msd,
    simulate_serw,
)


def naive_numpy(
    n_steps: int,
    n_walkers: int,
    *,
    d: int = 1,
    model: str = "none",
    delta: float = 0.0,
    xi: XiLaw | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The definition, one step at a time for all walkers: final positions (n_walkers, d)."""
    rng = np.random.default_rng(seed)
    two_d = 2 * d
    last = rng.integers(0, two_d, n_walkers)  # direction of the last step (k + d opposite k)
    pos = np.zeros((n_walkers, d), dtype=np.int64)
    rows = np.arange(n_walkers)
    pos[rows, last % d] += np.where(last < d, 1, -1)
    m = np.ones(n_walkers)
    for _ in range(n_steps - 1):
        q = (1.0 + m) / (two_d + m)
        if model == "I":
            q = np.clip(q - delta, 0.0, 1.0)
        elif model in ("II", "III"):
            assert xi is not None
            q = np.maximum(q - delta * xi.sample(rng, n_walkers, count=m), 0.0)
        back = rng.random(n_walkers) < q
        way_back = (last + d) % two_d
        other = (way_back + rng.integers(1, two_d, n_walkers)) % two_d if d > 1 else last
        last = np.where(back, way_back, other)
        pos[rows, last % d] += np.where(last < d, 1, -1)
        m = np.where(back, m + 1.0, 1.0)
    return pos


def naive_python(n_steps: int, seed: int = 0) -> int:
    """The unperturbed 1-D definition for one walker in plain Python: S_n."""
    rng = np.random.default_rng(seed)
    uniforms = rng.random(n_steps).tolist()
    step = 1 if uniforms[0] < 0.5 else -1
    pos, m = step, 1
    for u in uniforms[1:]:
        if u < (1.0 + m) / (2.0 + m):
            step, m = -step, m + 1
        else:
            m = 1  # in 1-D the only other neighbour is straight ahead
        pos += step
    return pos


def rate(fn: Callable[[], object], steps: float, repeat: int) -> float:
    """Best walker-steps per second over ``repeat`` runs (the minimum time: on a shared
    machine other processes only ever add time)."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return steps / best


def throughput(quick: bool) -> str:
    cases: list[tuple[str, dict[str, object], int, int, int]] = [
        # label, options, n_steps, walkers (bouts), walkers (naive numpy)
        ("d=1 unperturbed", {}, 10**3, 100_000, 10_000),
        ("d=1 unperturbed", {}, 10**5, 10_000, 10_000),
        ("d=1 unperturbed", {}, 10**6, 4_000, 10_000),
        ("d=1 model I, delta=0.3", {"model": "I", "delta": 0.3}, 10**4, 10_000, 10_000),
        ("d=1 model I, delta=0.03", {"model": "I", "delta": 0.03}, 10**4, 10_000, 10_000),
        ("d=1 model II, exp xi, 0.1", {"model": "II", "delta": 0.1}, 10**4, 10_000, 10_000),
        ("d=2 unperturbed", {"d": 2}, 10**4, 10_000, 10_000),
        ("d=3 unperturbed", {"d": 3}, 10**4, 10_000, 10_000),
    ]
    if quick:
        cases = [(a, b, min(n, 10**4), min(w, 5000), min(v, 2000)) for a, b, n, w, v in cases]
    rows = []
    for label, opts, n, walkers, naive_walkers in cases:
        fast = rate(
            lambda n=n, walkers=walkers, opts=opts: simulate_serw(
                n,
                walkers,
                times=[n],
                progress=False,
                **opts,  # type: ignore[arg-type]
            ),
            float(n) * walkers,
            1 if quick else 3,
        )
        naive_n = min(n, 2000)
        loop = rate(
            lambda naive_n=naive_n, opts=opts, naive_walkers=naive_walkers: naive_numpy(
                naive_n,
                naive_walkers,
                xi=XiLaw.exponential() if opts.get("model") else None,
                **opts,  # type: ignore[arg-type]
            ),
            float(naive_n) * naive_walkers,
            1,
        )
        rows.append(
            [label, f"{n:.0e}", walkers, f"{fast:.3g}", f"{loop:.3g}", f"{fast / loop:.0f}x"]
        )
    py = rate(lambda: naive_python(10**6), 1e6, 1 if quick else 3)
    rows.append(["d=1 unperturbed, pure Python, 1 walker", "1e+06", 1, "-", f"{py:.3g}", "-"])
    header = ["walk", "n_steps", "walkers", "bouts: steps/s", "naive loop: steps/s", "speed-up"]
    return markdown_table(header, rows)


def fit_check(quick: bool, seed: int) -> str:
    n_max, walkers = (10**5, 8000) if quick else (10**6, 40_000)
    times = np.unique(np.geomspace(1000, n_max, 16).astype(np.int64))
    result = simulate_serw(n_max, walkers, times=times, seed=seed, progress=False)
    fit = result.inverse_log_fit(t_min=1000)
    exact = exact_msd(n_max)[times]
    logs = np.log(times)
    design = np.stack([np.ones(times.size), 1 / logs], axis=1)
    a_exact = np.linalg.lstsq(design, exact * logs / times, rcond=None)[0][0]
    z_exact = (result.msd - exact) / result.msd_stderr
    rows = [
        [
            f"a (simulation, a + b/ln n over [1e3, {n_max:.0e}])",
            f"{fit.a:.4f} +- {fit.a_stderr:.4f}",
            f"{(fit.a - SERW_1D_LIMIT) / fit.a_stderr:+.2f}",
        ],
        ["a (same fit on the exact E S_n^2)", f"{a_exact:.4f}", "-"],
        ["(1 - ln 2)/(2 ln 2 - 1)", f"{SERW_1D_LIMIT:.4f}", "-"],
        [
            f"E S_n^2 ln n / n at n = {n_max:.0e}: simulated / exact",
            f"{fit.a + fit.b / logs[-1]:.4f} (fit), {result.msd[-1] * logs[-1] / n_max:.4f} +- "
            f"{result.msd_stderr[-1] * logs[-1] / n_max:.4f} / {exact[-1] * logs[-1] / n_max:.4f}",
            f"{z_exact[-1]:+.2f}",
        ],
        [
            f"max |z| simulated vs exact E S_n^2 over {times.size} times",
            f"{np.abs(z_exact).max():.2f}",
            "-",
        ],
    ]
    return f"{walkers} walkers, {n_max:.0e} steps\n\n" + markdown_table(
        ["unperturbed 1-D (Prop. 2.2.1)", "value", "z"], rows
    )


def diffusion_check(quick: bool, seed: int) -> str:
    n, walkers = (4000, 5000) if quick else (20_000, 20_000)
    cases: list[tuple[int, str, float, XiLaw | None, str]] = [
        (1, "I", 0.3, None, ""),
        (1, "I", 0.1, None, ""),
        (1, "I", 0.03, None, ""),
        (1, "I", 0.01, None, ""),
        (1, "II", 0.1, XiLaw.exponential(), "exponential(1)"),
        (1, "II", 0.1, XiLaw.pareto(0.5), "Pareto(1/2), infinite mean"),
        (1, "III", 0.1, XiLaw.exponential(growth=1), "k * exponential(1)"),
        (2, "none", 0.0, None, ""),
        (2, "I", 0.1, None, ""),
        (3, "none", 0.0, None, ""),
        (3, "I", 0.1, None, ""),
    ]
    rows = []
    for index, (d, model, delta, law, text) in enumerate(cases):
        r = simulate_serw(
            n,
            walkers,
            d=d,
            model=model,
            delta=delta,
            xi=law,  # type: ignore[arg-type]
            times=[n // 2, n],
            seed=seed + index,
            progress=False,
        )
        v, err = r.msd_slope()
        theory = diffusion_constant(model, delta, d=d, xi=law)  # type: ignore[arg-type]
        rows.append(
            [
                d,
                model,
                f"{delta:g}",
                text,
                f"{v:.4f} +- {err:.4f}",
                f"{theory:.4f}",
                f"{(v - theory) / err:+.2f}",
            ]
        )
    header = ["d", "model", "delta", "xi", "v simulated", "v eq. (2.2)", "z"]
    return f"{walkers} walkers, {n} steps, v = slope of E|S_n|^2 over [n/2, n]\n\n" + (
        markdown_table(header, rows)
    )


def rates() -> str:
    rows = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        v_i = diffusion_constant("I", delta)
        v_p = diffusion_constant("II", delta, xi=XiLaw.pareto(0.5))
        v_l = diffusion_constant("II", delta, xi=XiLaw.log_pareto())
        slopes = [
            (diffusion_constant("I", delta, d=d) - diffusion_constant("none", 0.0, d=d)) / delta
            for d in (2, 3)
        ]
        rows.append(
            [
                f"{delta:.0e}",
                f"{v_i:.4f}",
                f"{v_i * abs(math.log(delta)):.4f}",
                f"{v_p * abs(math.log(delta)):.4f}",
                f"{v_l * math.log(abs(math.log(delta))):.4f}",
                f"{slopes[0]:.4f}",
                f"{slopes[1]:.4f}",
            ]
        )
    header = [
        "delta",
        "v (I, 1-D)",
        "v |ln delta| (I)",
        "v |ln delta| (II, Pareto 1/2)",
        "v ln|ln delta| (II, log-Pareto)",
        "(v - v0)/delta d=2",
        "(v - v0)/delta d=3",
    ]
    return markdown_table(header, rows) + (
        f"\n\nlimits: model I v |ln delta| -> {SERW_1D_LIMIT:.4f}; Pareto(1/2) -> "
        f"{SERW_1D_LIMIT / 0.5:.4f} (escape ~ delta^(1/2))"
    )


def bout_check(seed: int) -> str:
    rows = []
    for model, delta in (("none", 0.0), ("I", 0.05)):
        r = simulate_serw(
            1000,
            20_000,
            model=model,
            delta=delta,
            n_bouts=8,
            times=[1000],  # type: ignore[arg-type]
            seed=seed,
            progress=False,
        )
        lengths = r.bouts.ravel()
        survival = bout_survival(1000, model=model, delta=delta)  # type: ignore[arg-type]
        m = np.array([1, 2, 5, 10, 30, 100, 300, 999])
        emp = np.array([np.mean(lengths > k) for k in m])
        z = (emp - survival[m]) / np.sqrt(survival[m] * (1 - survival[m]) / lengths.size)
        rows.append([model, f"{delta:g}", lengths.size, f"{np.abs(z).max():.2f}"])
    return markdown_table(["model", "delta", "bouts", "max |z| of P(T > m), 8 values of m"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_header())
    print("\n## Throughput (walker-steps per second, one thread)\n")
    print(throughput(args.quick))
    print("\n## Unperturbed 1-D: E S_n^2 ln n / n -> 0.794\n")
    print(fit_check(args.quick, args.seed))
    print("\n## Diffusion constants: simulation against eq. (2.2)\n")
    print(diffusion_check(args.quick, args.seed))
    print("\n## Rates as delta -> 0 (theory, Theorems 2.3, 2.4, 2.6)\n")
    print(rates())
    print("\n## Bout lengths against P(T > m)\n")
    print(bout_check(args.seed))


if __name__ == "__main__":
    main()
