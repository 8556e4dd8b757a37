"""Verdicts from confidence intervals over seeds.

A claim becomes a predicate on one number (a mean over seeds, a share of seeds, a paired
difference): "the quantity is above b", "below b" or "within [a, b]". With its 95 %
confidence interval [low, high] over seeds:

- above b: reproduced if low > b; not reproduced if high <= b; inconclusive otherwise;
- below b: the mirror image;
- within [a, b] (an equivalence test, "agrees with the theory within a tolerance"):
  reproduced if a <= low and high <= b; not reproduced if the interval misses [a, b]
  entirely; inconclusive when it overlaps an edge.

So a verdict is "reproduced" or "not reproduced" only when the seeds settle it, and
"inconclusive" when more seeds could change it. A claim made of several predicates is
reproduced when all are, not reproduced when any is not (:func:`combine`).

Intervals: :func:`mean_interval` (Student t over seeds, the seeds independent replicates)
and :func:`proportion_interval` (Clopper-Pearson, exact, for "every seed passed" claims).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tailwise._errors import UsageError
from tailwise.experiments.model import Verdict

__all__ = [
    "Interval",
    "combine",
    "mean_interval",
    "proportion_interval",
    "verdict_above",
    "verdict_below",
    "verdict_within",
]


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval, from ``n`` seeds."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def text(self, digits: int = 3) -> str:
        """``"0.512 [0.498, 0.526] (95 % CI, 3 seeds)"``.

        >>> Interval(0.5, 0.25, 0.75, 3).text(2)
        '0.5 [0.25, 0.75] (95 % CI, 3 seeds)'
        """
        return (
            f"{self.estimate:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}] "
            f"({self.confidence * 100:.0f} % CI, {self.n} seed{'s' if self.n != 1 else ''})"
        )


def _confidence(confidence: float) -> float:
    if not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise UsageError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` (one per seed) with its Student-t interval,
    mean -/+ t_{n-1} sd / sqrt(n). NaNs are dropped; one value gives (-inf, inf), none a NaN
    estimate. Equal values give a zero-width interval.

    >>> i = mean_interval([1.0, 2.0, 3.0])
    >>> round(i.estimate, 6), round(i.low, 4), round(i.high, 4)
    (2.0, -0.4841, 4.4841)
    """
    level = _confidence(confidence)
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, level)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, level)


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The share ``successes / n`` with its exact (Clopper-Pearson) interval.

    >>> i = proportion_interval(10, 10)
    >>> i.estimate, round(i.low, 4), i.high
    (1.0, 0.6915, 1.0)
    """
    level = _confidence(confidence)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise UsageError(f"proportion_interval: n must be an int >= 1, got {n!r}")
    if not 0 <= successes <= n:
        raise UsageError(f"proportion_interval: successes must be in [0, {n}], got {successes}")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(stats.beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(stats.beta.ppf(1 - tail, successes + 1, n - successes))
    return Interval(successes / n, low, high, int(n), level)


def verdict_above(interval: Interval, bound: float) -> Verdict:
    """The claim "the quantity is > ``bound``".

    >>> verdict_above(Interval(1.0, 0.5, 1.5, 3), 0.0)
    'reproduced'
    >>> verdict_above(Interval(1.0, -0.5, 1.5, 3), 0.0)
    'inconclusive'
    """
    if math.isnan(interval.low) or math.isnan(interval.high):
        return "inconclusive"
    if interval.low > bound:
        return "reproduced"
    if interval.high <= bound:
        return "not reproduced"
    return "inconclusive"


def verdict_below(interval: Interval, bound: float) -> Verdict:
    """The claim "the quantity is < ``bound``".

    >>> verdict_below(Interval(1.0, 0.5, 1.5, 3), 0.0)
    'not reproduced'
    """
    if math.isnan(interval.low) or math.isnan(interval.high):
        return "inconclusive"
    if interval.high < bound:
        return "reproduced"
    if interval.low >= bound:
        return "not reproduced"
    return "inconclusive"


def verdict_within(interval: Interval, low: float, high: float) -> Verdict:
    """The claim "the quantity lies in [``low``, ``high``]" (an equivalence test).

    >>> verdict_within(Interval(1.0, 0.9, 1.1, 5), 0.8, 1.2)
    'reproduced'
    >>> verdict_within(Interval(2.0, 1.9, 2.1, 5), 0.8, 1.2)
    'not reproduced'
    """
    if not low <= high:
        raise UsageError(f"verdict_within: low must be <= high, got {low} and {high}")
    if math.isnan(interval.low) or math.isnan(interval.high):
        return "inconclusive"
    if low <= interval.low and interval.high <= high:
        return "reproduced"
    if interval.high < low or interval.low > high:
        return "not reproduced"
    return "inconclusive"


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict of a claim made of several predicates: reproduced when all are, not
    reproduced when any is not, inconclusive otherwise (and for no predicate at all).

    >>> combine(["reproduced", "inconclusive"]), combine(["inconclusive", "not reproduced"])
    ('inconclusive', 'not reproduced')
    """
    if not verdicts:
        return "inconclusive"
    if "not reproduced" in verdicts:
        return "not reproduced"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "inconclusive"
