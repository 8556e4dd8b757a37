"""Intervals over seeds and the verdicts drawn from them, against scipy's intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tailwise import UsageError
from tailwise.experiments.verdicts import (
    Interval,
    combine,
    mean_interval,
    proportion_interval,
    verdict_above,
    verdict_below,
    verdict_within,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_mean_interval_is_students_t(values: list[float], confidence: float) -> None:
    interval = mean_interval(values, confidence)
    x = np.asarray(values)
    assert interval.n == len(values)
    assert interval.estimate == pytest.approx(x.mean(), rel=1e-12, abs=1e-9)
    if x.std() == 0:
        assert interval.low == interval.high == pytest.approx(x.mean())
        return
    low, high = stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert interval.low == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert interval.high == pytest.approx(high, rel=1e-9, abs=1e-9)


def test_mean_interval_edge_cases() -> None:
    one = mean_interval([2.0])
    assert (one.estimate, one.low, one.high, one.n) == (2.0, -math.inf, math.inf, 1)
    none = mean_interval([math.nan])
    assert none.n == 0 and math.isnan(none.estimate)
    with pytest.raises(UsageError, match="confidence"):
        mean_interval([1.0, 2.0], 1.5)


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 7), (10, 10), (19, 20)])
def test_proportion_interval_is_clopper_pearson(k: int, n: int) -> None:
    interval = proportion_interval(k, n)
    oracle = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert interval.estimate == k / n
    assert interval.low == pytest.approx(oracle.low, abs=1e-12)
    assert interval.high == pytest.approx(oracle.high, abs=1e-12)


def test_verdicts_from_intervals() -> None:
    above, straddles = Interval(1, 0.5, 1.5, 4), Interval(0, -1, 1, 4)
    below = Interval(-1, -2, -0.5, 4)
    assert [verdict_above(i, 0.0) for i in (above, straddles, below)] == [
        "reproduced",
        "inconclusive",
        "not reproduced",
    ]
    assert [verdict_below(i, 0.0) for i in (above, straddles, below)] == [
        "not reproduced",
        "inconclusive",
        "reproduced",
    ]
    # the bound itself: "above 0" is not reproduced by an interval ending at 0
    assert verdict_above(Interval(0, -1, 0, 3), 0.0) == "not reproduced"
    assert verdict_within(Interval(1, 0.97, 1.03, 5), 0.95, 1.05) == "reproduced"
    assert verdict_within(Interval(1, 0.9, 1.03, 5), 0.95, 1.05) == "inconclusive"
    assert verdict_within(Interval(1.2, 1.1, 1.3, 5), 0.95, 1.05) == "not reproduced"
    unbounded = Interval(1.0, -math.inf, math.inf, 1)
    assert verdict_above(unbounded, 0.0) == verdict_within(unbounded, 0, 2) == "inconclusive"
    nan = Interval(math.nan, math.nan, math.nan, 0)
    assert (
        verdict_above(nan, 0)
        == verdict_below(nan, 0)
        == verdict_within(nan, 0, 1)
        == ("inconclusive")
    )
    with pytest.raises(UsageError, match="low must be <= high"):
        verdict_within(above, 1.0, 0.0)


def test_combine() -> None:
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "not reproduced", "reproduced"]) == "not reproduced"
    assert combine([]) == "inconclusive"


def test_interval_text() -> None:
    assert Interval(0.5, 0.25, 0.75, 1).text(2) == "0.5 [0.25, 0.75] (95 % CI, 1 seed)"
