"""Helpers the catalogue's analyses share: intervals per grid point, paired differences by
seed, a worst case, an interval plot (package-internal)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from tailwise.experiments.model import Verdict
from tailwise.experiments.verdicts import Interval, mean_interval

__all__ = [
    "draw_intervals",
    "group_intervals",
    "paired_difference",
    "share_text",
    "worst",
]


def group_intervals(
    trials: pd.DataFrame, by: Sequence[str], column: str, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per group of ``by`` (sorted by the keys): the group's keys, then ``<column>``,
    ``<column>_low``, ``<column>_high`` (the mean over seeds and its Student-t interval) and
    ``seeds``."""
    rows = []
    for keys, part in trials.groupby(list(by), sort=True, dropna=False):
        values = keys if isinstance(keys, tuple) else (keys,)
        interval = mean_interval(part[column], confidence)
        rows.append(
            {
                **dict(zip(by, values, strict=True)),
                column: interval.estimate,
                f"{column}_low": interval.low,
                f"{column}_high": interval.high,
                "seeds": interval.n,
            }
        )
    return pd.DataFrame(rows)


def paired_difference(
    trials: pd.DataFrame, key: str, first: Any, second: Any, column: str
) -> pd.Series:
    """Per seed, ``column`` of the trial with ``key == first`` minus that with
    ``key == second`` (seeds that lack either are left out): a paired comparison, the two
    sharing the seed's random numbers."""
    by_seed = trials.pivot_table(index="seed", columns=key, values=column, aggfunc="mean")
    if first not in by_seed.columns or second not in by_seed.columns:
        return pd.Series(dtype=np.float64)
    return (by_seed[first] - by_seed[second]).dropna()


def worst(
    table: pd.DataFrame, verdicts: Sequence[Verdict], distance: Callable[[pd.Series], float]
) -> int:
    """The row to quote: the first "not reproduced", else the first "inconclusive", else the
    one of largest ``distance`` (how far its interval reaches from the claim)."""
    for wanted in ("not reproduced", "inconclusive"):
        for position, verdict in enumerate(verdicts):
            if verdict == wanted:
                return position
    scores = [distance(row) for _, row in table.iterrows()]
    return int(np.nanargmax(scores)) if scores else 0


def share_text(successes: int, n: int, interval: Interval) -> str:
    """``"20 of 20 (share 95 % CI [0.83, 1.00])"``."""
    return f"{successes} of {n} (share 95 % CI [{interval.low:.2f}, {interval.high:.2f}])"


def draw_intervals(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    table: pd.DataFrame,
    column: str,
    *,
    label: str | None = None,
    color: str | None = None,
    marker: str = "o",
) -> None:
    """Means of ``column`` with their intervals (``<column>_low`` / ``_high``) at ``x``;
    infinite bounds (one seed) are drawn as points only."""
    mean = table[column].to_numpy(dtype=np.float64)
    low = table[f"{column}_low"].to_numpy(dtype=np.float64)
    high = table[f"{column}_high"].to_numpy(dtype=np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    below = np.where(finite, mean - low, 0.0)
    above = np.where(finite, high - mean, 0.0)
    ax.errorbar(
        np.asarray(x, dtype=np.float64),
        mean,
        yerr=np.vstack([below, above]),
        fmt=marker,
        ms=4,
        capsize=3,
        label=label,
        color=color,
    )


def finite_or_nan(value: float) -> float:
    """``value`` if finite, else NaN (for tables)."""
    return value if math.isfinite(value) else math.nan
