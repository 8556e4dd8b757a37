"""Source 003's claims: heavy tails from SGD (§2, after [GŞZ21]) and the prunability of
heavy-tailed layers (Fig. 3, App. A.6.1 Fig. 8).

Experiments (:data:`EXPERIMENTS`):

- ``003-sgd-tail-index``: SGD on Gaussian least squares; the multivariate MMO tail index of
  the averaged iterates over a grid of (eta, b) (:func:`tailwise.sims.linear_regression_sgd`).
  The claim is tested as 003 states it, for the *stationary* law: a cell whose iterates
  grow geometrically (simulated growth rate > 0, the exact Lyapunov exponent > 0) has no
  stationary law, and its alpha is not evidence for one.
- ``003-stable-prunability``: the share of entries best-k-term pruning keeps at relative
  error 0.1, against alpha, for iid, elliptic-column and elliptic-matrix stable layers
  (:func:`tailwise.sims.prunability_curve`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from tailwise.experiments._evidence import draw_intervals, group_intervals
from tailwise.experiments.model import Analysis, Config, Experiment, Metrics, Verdict
from tailwise.experiments.verdicts import (
    combine,
    mean_interval,
    verdict_above,
    verdict_below,
    verdict_within,
)

__all__ = [
    "EXPERIMENTS",
    "analyze_prunability",
    "analyze_sgd_tails",
    "prunability_trial",
    "sgd_tail_trial",
]

# --------------------------------------------------------------------------- SGD tail index


def sgd_tail_trial(config: Config, seed: int, artifacts: Path) -> Metrics:
    """One (eta, b) cell: ``runs`` SGD runs on one data set drawn from the seed."""
    from tailwise.sims import linear_regression_sgd

    cell = linear_regression_sgd(
        float(config["eta"]),
        int(config["b"]),
        n=int(config["n"]),
        d=int(config["d"]),
        steps=int(config["steps"]),
        runs=int(config["runs"]),
        seed=seed,
    )
    return {
        "ratio": cell.ratio,
        "alpha": cell.alpha,
        "alpha_se": cell.alpha_se,
        "alpha_theory": cell.alpha_theory,
        "growth_rate": cell.growth_rate,
        "lyapunov": cell.lyapunov,
        "overflowed_runs": cell.overflowed_runs,
        "diverged": int(cell.diverged),
    }


def _spearman(part: pd.DataFrame) -> float:
    finite = part[np.isfinite(part["alpha"])]
    if len(finite) < 3:
        return math.nan
    return float(stats.spearmanr(finite["ratio"], finite["alpha"]).statistic)


def analyze_sgd_tails(trials: pd.DataFrame) -> Analysis:
    """Two predicates over seeds: (a) alpha falls as eta / b grows: the Spearman
    correlation of alpha with eta / b over the cells (with an alpha) is < 0; (b) heavy
    tails in the stationary law: the number of cells that did not diverge and whose alpha is
    below 2 (its 95 % upper bound) is > 0."""
    per_seed = []
    for seed, part in trials.groupby("seed"):
        upper = part["alpha"] + 1.96 * part["alpha_se"]
        heavy = (part["diverged"] == 0) & (upper < 2)
        heavy_any = np.isfinite(part["alpha"]) & (upper < 2)
        per_seed.append(
            {
                "seed": seed,
                "spearman": _spearman(part),
                "stationary_heavy_cells": int(heavy.sum()),
                "heavy_cells": int(heavy_any.sum()),
                "heavy_cells_diverged": int((heavy_any & (part["diverged"] == 1)).sum()),
            }
        )
    seeds = pd.DataFrame(per_seed)
    rho = mean_interval(seeds["spearman"])
    stationary = mean_interval(seeds["stationary_heavy_cells"])
    verdicts: list[Verdict] = [verdict_below(rho, 0.0), verdict_above(stationary, 0.0)]
    table = group_intervals(trials, ["b", "eta"], "alpha")
    extra = trials.groupby(["b", "eta"], sort=False).agg(
        ratio=("ratio", "first"),
        diverged=("diverged", "mean"),
        lyapunov=("lyapunov", "first"),
        alpha_theory=("alpha_theory", "first"),
    )
    table = table.merge(extra.reset_index(), on=["b", "eta"])
    table = table[["b", "eta", "ratio", "alpha", "alpha_low", "alpha_high", "seeds",
                   "alpha_theory", "lyapunov", "diverged"]]  # fmt: skip
    table = table.rename(columns={"diverged": "diverged_share"})
    heavy = int(seeds["heavy_cells"].sum())
    heavy_diverged = int(seeds["heavy_cells_diverged"].sum())
    statement = (
        f"Spearman(alpha, eta/b) = {rho.text(3)} (claim < 0): {verdicts[0]}; stationary "
        f"cells with alpha < 2 per seed = {stationary.text(3)} (claim > 0): {verdicts[1]}; "
        f"{heavy_diverged} of the {heavy} cell-seeds with alpha < 2 diverged (their iterates "
        "grow at the Lyapunov rate: no stationary law)"
    )

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        for i, (b, part) in enumerate(table.groupby("b")):
            color = f"C{i % 10}"
            stationary_part = part[part["diverged_share"] < 0.5]
            diverged_part = part[part["diverged_share"] >= 0.5]
            if len(stationary_part):
                draw_intervals(left, stationary_part["ratio"], stationary_part, "alpha",
                               color=color, label=f"b={b}")  # fmt: skip
            if len(diverged_part):
                left.plot(
                    diverged_part["ratio"],
                    diverged_part["alpha"],
                    "o",
                    mfc="none",
                    color=color,
                    label=None if len(stationary_part) else f"b={b}",
                )
        left.axhline(2.0, color="0.5", ls="--", lw=0.8)
        left.set(xscale="log", xlabel="eta / b", ylabel="tail index alpha (MMO)",
                 title="alpha vs eta / b (hollow: diverged)")  # fmt: skip
        left.legend(fontsize="x-small")
        right.plot(trials["lyapunov"], trials["growth_rate"], "o", ms=3)
        low = float(min(trials["lyapunov"].min(), 0.0))
        high = float(max(trials["lyapunov"].max(), 0.0))
        right.plot([low, 0, high], [0, 0, high], color="0.5", lw=0.8, label="max(gamma, 0)")
        right.set(xlabel="Lyapunov exponent gamma (exact)", ylabel="simulated growth rate",
                  title="growth of |x - x*| per step")  # fmt: skip
        right.legend(fontsize="small")

    return Analysis(
        table,
        combine(verdicts),
        statement,
        draw,
        "003 §2 (citing [GŞZ21]): in linear regression with Gaussian data the tail index of "
        "the stationary SGD iterates falls as eta grows or b shrinks, below 2 (infinite "
        "variance) for large eta / b; 003 App. A.4 measures it with the multivariate MMO "
        "estimator on the averaged iterates ([GŞZ21]'s figure: alpha from about 2 down to "
        "about 1 over eta in [0.02, 0.2], b in {1, ..., 20}, d = 100, n = 10^4).",
    )


def _sgd_grid(etas: list[float], batches: list[int], runs: int, n: int, d: int) -> list[Config]:
    return [
        {"eta": eta, "b": b, "n": n, "d": d, "steps": 1000, "runs": runs}
        for b in batches
        for eta in etas
    ]


SGD_TAILS = Experiment(
    name="003-sgd-tail-index",
    source="003",
    claim=(
        "In SGD on linear regression the stationary iterates' tail index alpha falls as "
        "eta / b grows, below 2 (heavy tails) for large eta / b"
    ),
    location="§2 'The heavy-tail phenomenon' (after [GŞZ21]), App. A.4",
    grids={
        "quick": _sgd_grid([0.02, 0.06, 0.1, 0.14, 0.2], [2, 5, 10, 20], 400, 10_000, 100),
        "full": _sgd_grid(
            [round(float(x), 6) for x in np.linspace(0.02, 0.2, 10)],
            [1, 2, 3, 4, 5, 10, 20],
            1600,
            10_000,
            100,
        ),
    },
    trial=sgd_tail_trial,
    analyze=analyze_sgd_tails,
    seeds=3,
    quick_minutes=1.0,
    substitution="400 runs per cell on a 5 x 4 grid of (eta, b) instead of 1600 on 10 x 7",
)

# --------------------------------------------------------------------------- prunability

#: "The advantage disappears": |Gaussian keep ratio - keep ratio| at most this.
VANISHED = 0.02


def prunability_trial(config: Config, seed: int, artifacts: Path) -> Metrics:
    """One synthetic stable layer of ``kind`` and ``alpha``: the share of entries
    best-k-term pruning keeps at relative l2 error ``max_error``, and the Gaussian level."""
    from tailwise.sims import prunability_curve

    curve = prunability_curve(
        [float(config["alpha"])],
        kind=config["kind"],
        error=float(config["max_error"]),
        shape=(int(config["rows"]), int(config["cols"])),
        seeds=[seed],
        progress=False,
    )
    row = curve.iloc[0]
    keep = float(row["keep_ratio"])
    gaussian = float(row["gaussian_keep_ratio"])
    return {"keep_ratio": keep, "gaussian_keep_ratio": gaussian, "advantage": gaussian - keep}


def _slope(part: pd.DataFrame) -> float:
    x = part["alpha"].to_numpy(dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, part["keep_ratio"].to_numpy(dtype=np.float64), 1)[0])


def analyze_prunability(trials: pd.DataFrame) -> Analysis:
    """Three predicates over seeds: (a) iid layers: the slope of the keep ratio on alpha is
    > 0 (heavier tails keep fewer entries); (b) the advantage (Gaussian keep ratio - keep
    ratio, mean over alpha) of iid layers exceeds that of elliptic-column layers (paired by
    seed); (c) elliptic-matrix layers: the advantage lies within -/+ :data:`VANISHED`."""
    per_seed = []
    for (seed, kind), part in trials.groupby(["seed", "kind"]):
        per_seed.append(
            {
                "seed": seed,
                "kind": kind,
                "slope": _slope(part),
                "advantage": float(part["advantage"].mean()),
            }
        )
    seeds = pd.DataFrame(per_seed)
    advantage = seeds.pivot(index="seed", columns="kind", values="advantage")
    slope = seeds.pivot(index="seed", columns="kind", values="slope")
    verdicts: list[Verdict] = []
    parts = []
    if "iid" in slope:
        interval = mean_interval(slope["iid"])
        verdicts.append(verdict_above(interval, 0.0))
        parts.append(f"iid slope of keep ratio on alpha = {interval.text(3)} (claim > 0)")
    if {"iid", "elliptic_columns"} <= set(advantage.columns):
        interval = mean_interval(advantage["iid"] - advantage["elliptic_columns"])
        verdicts.append(verdict_above(interval, 0.0))
        parts.append(f"advantage iid - elliptic columns = {interval.text(3)} (claim > 0)")
    if "elliptic_matrix" in advantage:
        interval = mean_interval(advantage["elliptic_matrix"])
        verdicts.append(verdict_within(interval, -VANISHED, VANISHED))
        parts.append(
            f"elliptic-matrix advantage = {interval.text(3)} (claim within -/+{VANISHED:g})"
        )
    statement = "; ".join(f"{p}: {v}" for p, v in zip(parts, verdicts, strict=True))
    table = group_intervals(trials, ["kind", "alpha"], "keep_ratio")
    kinds = {k: i for i, k in enumerate(("iid", "elliptic_columns", "elliptic_matrix"))}
    table = table.sort_values(["kind", "alpha"], key=lambda c: c.map(kinds) if c.name == "kind"
                              else c).reset_index(drop=True)  # fmt: skip
    table["gaussian_keep_ratio"] = float(trials["gaussian_keep_ratio"].iloc[0])

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for i, (kind, part) in enumerate(table.groupby("kind", sort=False)):
            draw_intervals(ax, part["alpha"], part, "keep_ratio", color=f"C{i}", label=str(kind))
            ax.plot(part["alpha"], part["keep_ratio"], "-", color=f"C{i}", lw=0.8)
        ax.axhline(float(table["gaussian_keep_ratio"].iloc[0]), color="0.5", ls="--",
                   label="Gaussian (alpha = 2)")  # fmt: skip
        ax.set(xlabel="tail index alpha", ylabel="share of entries kept",
               title="kept at relative l2 error 0.1, 95 % CI over seeds")  # fmt: skip
        ax.legend(fontsize="small")

    return Analysis(
        table,
        combine(verdicts),
        statement,
        draw,
        "003 Fig. 3: at relative error 0.1, trained layers with a smaller tail index keep "
        "fewer parameters; App. A.6.1 Fig. 8: synthetic SaS layers show the same for iid "
        "entries (W1), and 'as the layer parameters become correlated (W2: elliptic columns, "
        "W3: one elliptic vector), the prunability advantage conferred by heavier tails "
        "disappears'. The figures give no table of numbers.",
    )


def _prunability_grid(alphas: list[float], rows: int, cols: int) -> list[Config]:
    return [
        {"kind": kind, "alpha": alpha, "rows": rows, "cols": cols, "max_error": 0.1}
        for kind in ("iid", "elliptic_columns", "elliptic_matrix")
        for alpha in alphas
    ]


PRUNABILITY = Experiment(
    name="003-stable-prunability",
    source="003",
    claim=(
        "Heavier-tailed layers with independent entries keep fewer entries at a fixed pruning "
        "error, and the advantage disappears as the entries become correlated"
    ),
    location="Fig. 3; App. A.6.1, Fig. 8",
    grids={
        "quick": _prunability_grid([1.1, 1.3, 1.5, 1.7, 1.9], 300, 300),
        "full": _prunability_grid(
            [round(float(a), 6) for a in np.linspace(1.1, 2.0, 10)], 1000, 1000
        ),
    },
    trial=prunability_trial,
    analyze=analyze_prunability,
    seeds=4,
    quick_minutes=0.2,
    substitution="300 x 300 synthetic layers, 5 tail indices",
)

EXPERIMENTS: tuple[Experiment, ...] = (SGD_TAILS, PRUNABILITY)
