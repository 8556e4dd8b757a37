"""``fit_power_law`` vs WeightWatcher's ``WWFit`` vs ``powerlaw.Fit`` on heavy-tailed spectra.

All three fit a continuous power law with the KS-optimal xmin (Clauset et al. 2009) to the
same array: the eigenvalues above 1e-5 (WeightWatcher drops the values <= 1e-5 before
``WWFit``; tailwise drops them itself; ``powerlaw.Fit`` gets the filtered array too). Peers:
``WWFit(data)`` and ``powerlaw.Fit(data, xmin_distance='D', parameter_ranges={'alpha':
[1, None]})`` (the call WeightWatcher makes with ``pl_package='powerlaw'``).

Spectra (``--generator``):

* ``matrix``: the eigenvalues of W^T W / N for W of shape (2n, n) with i.i.d. Student-t(3)
  entries (n eigenvalues; a Marchenko-Pastur bulk with a power-law tail).
* ``synthetic``: n values without a decomposition, for sizes where the 2n x n matrix is
  too slow to make on a laptop: 85% drawn from the Marchenko-Pastur law (aspect ratio 1/2,
  variance 1; inverse CDF on a fine grid) and 15% from a Pareto law p(x) ∝ x^-3 starting at
  the bulk edge lambda_+ = (1 + 1/sqrt(2))^2.
* ``auto`` (default): ``matrix`` up to ``--matrix-max`` (4000), ``synthetic`` above.

Each fitter is warmed up once on a small array, then timed best-of-r; a call slower than
``--once-above`` seconds is measured once (powerlaw.Fit loops over every candidate xmin in
Python: seconds at 15k values here, minutes on larger spectra).

Run: ``python benchmarks/fit_vs_powerlaw.py [--quick] [--sizes 1000 4000 15000]
[--skip-powerlaw-above N]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from _common import (
    best_of,
    fmt_ratio,
    fmt_seconds,
    machine_header,
    markdown_table,
    quiet,
    thread_report,
)
from tailwise.spectral.powerlaw import fit_power_law

ZERO_THRESHOLD = 1e-5  # WeightWatcher's EVALS_THRESH


def student_t_spectrum(n: int, rng: np.random.Generator, dof: float = 3.0) -> np.ndarray:
    """Eigenvalues of W^T W / N, W (2n, n) with Student-t(dof) entries; float64, ascending."""
    w = torch.from_numpy(rng.standard_t(dof, size=(2 * n, n)))
    gram = (w.T @ w / (2 * n)).numpy()
    return np.asarray(scipy.linalg.eigh(gram, eigvals_only=True, driver="evr"))


def pareto_mp_spectrum(
    n: int, rng: np.random.Generator, tail_share: float = 0.15, alpha: float = 3.0
) -> np.ndarray:
    """A Marchenko-Pastur bulk (ratio 1/2, variance 1) plus a Pareto(alpha) tail above its edge."""
    ratio = 0.5
    lo, hi = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    grid = np.linspace(lo, hi, 100_001)
    density = np.sqrt(np.clip((hi - grid) * (grid - lo), 0.0, None)) / (2 * np.pi * ratio * grid)
    cdf = np.concatenate(([0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))))
    n_tail = round(tail_share * n)
    bulk = np.interp(rng.random(n - n_tail), cdf / cdf[-1], grid)
    tail = hi * (1.0 + rng.pareto(alpha - 1.0, n_tail))  # density ∝ x^-alpha above hi
    return np.sort(np.concatenate((bulk, tail)))


def fit_tailwise(data: np.ndarray) -> tuple[float, float, float]:
    fit = fit_power_law(data)
    return fit.alpha, fit.xmin, fit.D


def fit_weightwatcher(data: np.ndarray) -> tuple[float, float, float]:
    from weightwatcher.WW_powerlaw import WWFit

    with quiet():
        fit = WWFit(data)
    return float(fit.alpha), float(fit.xmin), float(fit.D)


def fit_powerlaw_package(data: np.ndarray) -> tuple[float, float, float]:
    import powerlaw

    with quiet():
        fit = powerlaw.Fit(data, xmin_distance="D", parameter_ranges={"alpha": [1, None]})
        return float(fit.alpha), float(fit.xmin), float(fit.D)


@dataclass(frozen=True)
class Fitter:
    name: str
    fit: Callable[[np.ndarray], tuple[float, float, float]]
    repeat: int


def _diff(ours: tuple[float, float, float], theirs: tuple[float, float, float] | None) -> str:
    """'|Δalpha| / |Δxmin|', or '=' when both agree exactly."""
    if theirs is None:
        return "-"
    d_alpha, d_xmin = abs(ours[0] - theirs[0]), abs(ours[1] - theirs[1])
    if d_alpha == 0.0 and d_xmin == 0.0:
        return "identical"
    return f"{d_alpha:.1e} / {d_xmin:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 300, 1000; one repeat")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 15000])
    parser.add_argument(
        "--generator", choices=["auto", "matrix", "synthetic"], default="auto", help="see above"
    )
    parser.add_argument("--matrix-max", type=int, default=4000, help="auto: largest matrix n")
    parser.add_argument("--repeat", type=int, default=5, help="best of r")
    parser.add_argument("--once-above", type=float, default=10.0, help="no repeats above (s)")
    parser.add_argument(
        "--skip-powerlaw-above", type=int, default=None, help="no powerlaw.Fit for n above this"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [300, 1000] if args.quick else args.sizes
    repeat = 1 if args.quick else args.repeat

    with quiet():  # weightwatcher prints a CUDA notice on import
        import powerlaw
        import weightwatcher
    print(machine_header())
    print(f"weightwatcher {weightwatcher.__version__}, powerlaw {powerlaw.__version__}")
    fitters = [
        Fitter("tailwise", fit_tailwise, repeat),
        Fitter("WWFit", fit_weightwatcher, repeat),
        Fitter("powerlaw", fit_powerlaw_package, repeat),
    ]
    warm = pareto_mp_spectrum(200, np.random.default_rng(1))
    for fitter in fitters:
        fitter.fit(warm)
    print(thread_report())
    print(f"best of {repeat} after one warm-up; calls over {args.once_above:g} s run once\n")

    rows = []
    for n in sizes:
        rng = np.random.default_rng(args.seed + n)
        use_matrix = args.generator == "matrix" or (
            args.generator == "auto" and n <= args.matrix_max
        )
        evals = student_t_spectrum(n, rng) if use_matrix else pareto_mp_spectrum(n, rng)
        data = evals[evals > ZERO_THRESHOLD]
        times: dict[str, float] = {}
        results: dict[str, tuple[float, float, float]] = {}
        for fitter in fitters:
            if fitter.name == "powerlaw" and (
                args.skip_powerlaw_above is not None and n > args.skip_powerlaw_above
            ):
                times[fitter.name] = float("nan")
                continue
            times[fitter.name], results[fitter.name] = best_of(
                lambda f=fitter, d=data: f.fit(d), fitter.repeat, once_above=args.once_above
            )
        ours = results["tailwise"]
        rows.append(
            [
                data.size,
                "t(3) matrix" if use_matrix else "MP + Pareto",
                fmt_seconds(times["tailwise"]),
                fmt_seconds(times["WWFit"]),
                fmt_seconds(times["powerlaw"]),
                fmt_ratio(times["WWFit"], times["tailwise"]),
                fmt_ratio(times["powerlaw"], times["tailwise"]),
                f"{ours[0]:.4f}",
                f"{ours[1]:.4g}",
                _diff(ours, results.get("WWFit")),
                _diff(ours, results.get("powerlaw")),
            ]
        )
        done = ", ".join(f"{name} {fmt_seconds(t)}" for name, t in times.items())
        print(f"  n={data.size}: {done}", flush=True)

    print()
    header = [
        "n",
        "spectrum",
        "tailwise",
        "WWFit",
        "powerlaw.Fit",
        "WW/tw",
        "powerlaw/tw",
        "alpha (tw)",
        "xmin (tw)",
        "vs WWFit |Δα| / |Δxmin|",
        "vs powerlaw |Δα| / |Δxmin|",
    ]
    print(markdown_table(header, rows))
    print(f"\n{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
