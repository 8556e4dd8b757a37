"""Tests of ``tailwise.sims.heavy_sgd``: the theory against closed forms and a Monte Carlo of
the definition, the SGD simulator against the theory (tail index, growth rate, divergence),
[GŞZ21]'s monotone trend, and the prunability of 003's synthetic layers.

Tolerances are Monte Carlo standard errors (4 SE unless said), seeded for determinism; the
SE of a simulated tail index is its half-sampling SE, which matched the SD over 16 seeds
(0.071 vs 0.070, 0.057 vs 0.060, 0.092 vs 0.088 for theory alpha 1.41, 1.19, 1.70).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats

from tailwise import UsageError
from tailwise.sims import heavy_sgd
from tailwise.sims.heavy_sgd import (
    SWEEP_COLUMNS,
    contraction_moment,
    gaussian_keep_ratio,
    heavy_sgd_experiment,
    linear_regression_sgd,
    lyapunov_exponent,
    prunability_curve,
    stable_prunability_experiment,
    sweep,
    tail_index_theory,
)
from tailwise.tails import synthetic_layer, synthetic_layers

# ----------------------------------------------------------------------------- theory


@pytest.mark.parametrize(
    ("eta", "b", "d"),
    [(0.1, 5, 100), (0.02, 1, 100), (0.85, 1, 1), (1.35, 5, 2), (0.3, 3, 7)],
)
def test_second_moment_has_its_closed_form(eta: float, b: int, d: int) -> None:
    # E||M e1||^2 = 1 - 2 eta + eta^2 (b + d + 1) / b (Wishart moments).
    expected = 1 - 2 * eta + eta**2 * (b + d + 1) / b
    assert contraction_moment(2.0, eta, b, d=d) == pytest.approx(expected, rel=1e-9)
    assert contraction_moment(0.0, eta, b, d=d) == pytest.approx(1.0, rel=1e-9)


def _norms_by_definition(eta: float, b: int, d: int, count: int, seed: int) -> np.ndarray:
    """||(I - (eta / b) A^T A) e1|| for ``count`` draws of a (b, d) Gaussian A, directly."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((count, b, d))
    m_e1 = -(eta / b) * np.einsum("nbd,nb->nd", a, a[:, :, 0])
    m_e1[:, 0] += 1.0
    return np.linalg.norm(m_e1, axis=1)


@pytest.mark.parametrize(("eta", "b", "d"), [(0.1, 2, 20), (0.85, 1, 1), (1.35, 5, 2)])
def test_theory_matches_a_monte_carlo_of_the_definition(eta: float, b: int, d: int) -> None:
    # The chi-square reduction of ||M e1|| is checked against M built from Gaussian rows.
    norms = _norms_by_definition(eta, b, d, 200_000, seed=1)
    logs = np.log(norms)
    gamma = lyapunov_exponent(eta, b, d=d)
    assert abs(logs.mean() - gamma) <= 4 * logs.std() / math.sqrt(logs.size)
    powers = norms**1.3
    h = contraction_moment(1.3, eta, b, d=d)
    assert abs(powers.mean() - h) <= 4 * powers.std() / math.sqrt(powers.size)


def test_tail_index_theory_is_the_root_of_the_moment_function() -> None:
    for eta, b, d in [(0.85, 1, 1), (1.35, 5, 2), (0.1805, 10, 100)]:
        alpha = tail_index_theory(eta, b, d=d)
        assert 0 < alpha < 3
        assert contraction_moment(alpha, eta, b, d=d) == pytest.approx(1.0, abs=1e-7)
        # h < 1 below the root and > 1 above it (log-convex, h'(0) = gamma < 0).
        assert (
            contraction_moment(alpha * 0.8, eta, b, d=d)
            < 1
            < contraction_moment(alpha * 1.2, eta, b, d=d)
        )
    # alpha = 2 exactly where the second moment is 1: eta = 2b / (b + d + 1).
    assert tail_index_theory(2 * 5 / 106 * 1.000001, 5, d=100) == pytest.approx(2.0, abs=1e-3)
    assert tail_index_theory(0.02, 20) == math.inf  # light tails
    assert math.isnan(tail_index_theory(0.2, 1))  # gamma > 0: no stationary law
    assert tail_index_theory(1.0, 1, d=1) < tail_index_theory(0.8, 1, d=1)  # falls with eta


# ----------------------------------------------------------------------------- simulator


@pytest.mark.parametrize(("eta", "b", "d", "runs"), [(0.85, 1, 1, 2000), (0.95, 1, 1, 2000)])
def test_simulated_tail_index_matches_the_theory(eta: float, b: int, d: int, runs: int) -> None:
    # The stationary heavy-tailed regime (wide for d = 1): MMO of the averaged iterates.
    cell = linear_regression_sgd(eta, b, d=d, runs=runs, steps=1000, seed=3)
    assert not cell.diverged and cell.overflowed_runs == 0
    assert cell.alpha_theory < 2
    assert abs(cell.alpha - cell.alpha_theory) <= 4 * cell.alpha_se
    assert 0.02 < cell.alpha_se < 0.2


def test_growth_rate_of_a_divergent_cell_is_the_lyapunov_exponent() -> None:
    cell = linear_regression_sgd(0.08, 2, runs=200, steps=400, seed=0)
    assert cell.lyapunov > 0 and cell.diverged and not cell.overflowed_runs
    assert math.isfinite(cell.alpha) and cell.alpha < 2  # [GŞZ21]'s "heavy tail" here
    # 1 % of gamma for the finite data set (n = 10^4 rows, not the online Gaussian limit):
    # over 8 seeds the z-score of growth - gamma averaged +1.3.
    tolerance = 4 * cell.growth_rate_se + 0.01 * cell.lyapunov
    assert abs(cell.growth_rate - cell.lyapunov) <= tolerance


def test_ols_centred_deviations_have_mean_zero() -> None:
    # Given the data, E[x_k] -> x* (the mean batch gradient vanishes there): the runs'
    # mean deviation is 0 within its SE; the chi-square of the d z-scores is ~ chi2_d.
    cell = linear_regression_sgd(0.1, 20, runs=200, steps=400, seed=0)
    dev = cell.deviations
    se = dev.std(axis=0, ddof=1) / math.sqrt(dev.shape[0])
    chi2 = float(((dev.mean(axis=0) / se) ** 2).sum())
    assert chi2 < stats.chi2(dev.shape[1]).ppf(1 - 1e-4)
    # Control: centred at the true x0 instead of the OLS solution, the test rejects.
    rng = np.random.default_rng((0, 0))  # the data's stream (heavy_sgd._data): A, then x0
    rng.standard_normal((10_000, 100))
    truth = 3.0 * rng.standard_normal(100)
    shifted = dev + heavy_sgd._data(10_000, 100, 0).ols - truth
    chi2_shifted = float(((shifted.mean(axis=0) / se) ** 2).sum())
    assert chi2_shifted > stats.chi2(dev.shape[1]).ppf(1 - 1e-4)


def test_divergence_is_reported_not_raised() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings leak out
        cell = linear_regression_sgd(0.2, 1, runs=16, steps=1000, seed=0)
    assert cell.diverged and cell.overflowed_runs == 16
    assert math.isnan(cell.alpha) and np.isnan(cell.deviations).all()
    assert cell.lyapunov > 0 and math.isnan(cell.alpha_theory)
    row = cell.row()
    assert row["diverged"] and row["diverges_theory"]


def test_batches_are_uniform_subsets_without_repeats() -> None:
    rng = np.random.default_rng(0)
    idx = heavy_sgd._batches(rng, 5, 3, 60_000)
    ordered = np.sort(idx, axis=1)
    assert (np.diff(ordered, axis=1) > 0).all()
    codes = (ordered * np.array([25, 5, 1])).sum(axis=1)
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 10  # C(5, 3) subsets, all equally likely
    assert stats.chisquare(counts).pvalue > 1e-4


def test_seeded_and_a_sweep_row_is_a_cell() -> None:
    options = {"runs": 16, "steps": 60, "n": 300, "d": 6, "seed": 4}
    first = linear_regression_sgd(0.15, 3, **options)
    again = linear_regression_sgd(0.15, 3, **options)
    np.testing.assert_array_equal(first.deviations, again.deviations)
    table = sweep([0.05, 0.15], [3], progress=False, **options)
    assert list(table.columns) == list(SWEEP_COLUMNS)
    row = table[table.eta == 0.15].iloc[0]
    assert row.alpha == first.alpha and row.growth_rate == first.growth_rate


def test_sweep_alpha_falls_with_eta_over_b() -> None:
    # A reduced but honest grid: d = 100 as [GŞZ21], 3 batch sizes x 5 step sizes.
    table = sweep(
        [0.02, 0.06, 0.1, 0.14, 0.2], [2, 5, 20], runs=200, steps=600, seed=1, progress=False
    )
    summary = heavy_sgd._sweep_summary(table)
    assert summary["spearman_alpha_ratio"] <= -0.8
    assert str(summary["verdict_monotone"]).startswith("pass")
    assert str(summary["verdict_heavy"]).startswith("pass")  # alpha < 2 at the top ratios
    assert (table.diverged == table.diverges_theory).all()
    # Light-tailed cells (theory alpha > 16) read about 2 by MMO.
    light = table[table.alpha_theory == math.inf]
    assert (abs(light.alpha - 2) <= 4 * light.alpha_se + 0.05).all()


@pytest.mark.slow
def test_full_grid_alpha_falls_with_eta_over_b() -> None:
    # [GŞZ21]'s grid (all 7 batch sizes x 10 step sizes), 400 runs of 1000 steps.
    table = sweep(runs=400, seed=2, progress=False)
    summary = heavy_sgd._sweep_summary(table)
    assert summary["spearman_alpha_ratio"] <= -0.8
    assert str(summary["verdict_heavy"]).startswith("pass")
    assert (table.diverged == table.diverges_theory).all()


@pytest.mark.slow
@pytest.mark.parametrize(("eta", "b", "d"), [(0.75, 1, 1), (1.6, 5, 1), (1.35, 5, 2)])
def test_simulated_tail_index_matches_the_theory_over_seeds(eta: float, b: int, d: int) -> None:
    # Pooled over 6 seeds: the mean estimate within 4 SE of the theory (SE of the mean), with
    # the MMO estimator's own bias at finite sample allowed for (-0.06 to -0.08 measured near
    # alpha 1.5-1.7, where the averaged iterate is furthest from its stable limit).
    cells = [linear_regression_sgd(eta, b, d=d, runs=1000, seed=s) for s in range(6)]
    alphas = np.array([c.alpha for c in cells])
    se = float(np.mean([c.alpha_se for c in cells])) / math.sqrt(len(cells))
    assert abs(alphas.mean() - cells[0].alpha_theory) <= 4 * se + 0.08


# ----------------------------------------------------------------------------- prunability


def test_synthetic_layers_is_synthetic_layer_reordered() -> None:
    for kind in heavy_sgd.LAYER_KINDS:
        np.testing.assert_array_equal(
            synthetic_layers(1.4, (7, 5), kind, seed=3), synthetic_layer(kind, 1.4, (7, 5), seed=3)
        )
    np.testing.assert_array_equal(
        synthetic_layers(1.4, (7, 5), seed=3), synthetic_layer("iid", 1.4, (7, 5), seed=3)
    )


def test_gaussian_keep_ratio_matches_sampled_gaussian_layers() -> None:
    rng = np.random.default_rng(0)
    from tailwise.tails import keep_ratio_for_error

    kept = [keep_ratio_for_error(rng.standard_normal(200_000), 0.1) for _ in range(6)]
    assert abs(np.mean(kept) - gaussian_keep_ratio(0.1)) <= 4 * np.std(kept, ddof=1) / 6**0.5 + 1e-4
    assert gaussian_keep_ratio(0.3) < gaussian_keep_ratio(0.1) < gaussian_keep_ratio(0.01)


def test_iid_heavier_tails_keep_less_and_alpha_two_is_gaussian() -> None:
    # The keep ratio of one layer spreads widely at alpha = 1.5 (0.0001 to 0.41): 16 seeds.
    curve = prunability_curve(
        [1.2, 1.5, 1.8, 2.0], kind="iid", shape=(300, 300), seeds=range(16), progress=False
    )
    keep = curve.keep_ratio.to_numpy()
    se = curve.keep_ratio_se.to_numpy()
    assert (np.diff(keep) > 4 * np.hypot(se[1:], se[:-1])).all()
    # alpha = 2 entries are N(0, 2): the Gaussian limit (finite-N slack 1e-3 for 9e4 entries).
    assert abs(keep[-1] - curve.gaussian_keep_ratio.iloc[-1]) <= 4 * se[-1] + 1e-3


def test_elliptic_matrix_keeps_as_much_as_gaussian_whatever_alpha() -> None:
    curve = prunability_curve(
        [1.1, 1.5, 1.9], kind="elliptic_matrix", shape=(300, 300), progress=False
    )
    gap = (curve.keep_ratio - curve.gaussian_keep_ratio).abs()
    assert (gap <= 4 * curve.keep_ratio_se + 1e-3).all()


def test_the_advantage_shrinks_as_entries_become_dependent() -> None:
    result = stable_prunability_experiment(
        alphas=[1.2, 1.4, 1.6], shape=(300, 300), seeds=12, progress=False
    )
    summary = result.summary
    iid, columns, matrix = (
        (float(summary[f"advantage_{k}"]), float(summary[f"advantage_{k}_se"]))
        for k in ("iid", "elliptic_columns", "elliptic_matrix")
    )
    assert iid[0] - columns[0] > 4 * math.hypot(iid[1], columns[1])
    assert columns[0] - matrix[0] > 4 * math.hypot(columns[1], matrix[1])
    assert abs(matrix[0]) <= 4 * matrix[1] + 1e-3
    for key in ("verdict_iid", "verdict_shrinks", "verdict_matrix_gaussian"):
        assert str(summary[key]).startswith("pass"), summary[key]


# ----------------------------------------------------------------------------- experiments


def test_heavy_sgd_experiment_result() -> None:
    result = heavy_sgd_experiment(
        runs=32, steps=200, etas=[0.02, 0.2], batch_sizes=[1, 20], progress=False
    )
    assert result.name == "heavy-sgd"
    assert list(result.table.columns) == list(SWEEP_COLUMNS) and len(result.table) == 4
    assert {"spearman_alpha_ratio", "verdict_monotone", "verdict_heavy", "diverged_cells"} <= set(
        result.summary
    )
    assert result.options["runs"] == 32 and result.options["batch_sizes"] == [1, 20]
    assert all(isinstance(v, (int, float, str)) for v in result.summary.values())
    fig = result.figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 2


def test_stable_prunability_experiment_result() -> None:
    result = stable_prunability_experiment(
        alphas=[1.5, 2.0], shape=(50, 50), seeds=2, progress=False
    )
    assert result.name == "stable-prunability"
    assert len(result.table) == 6 and result.options["seeds"] == 2
    assert {"slope_iid", "advantage_elliptic_matrix", "verdict_shrinks"} <= set(result.summary)
    assert len(result.figure().axes) == 1


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_regression_sgd(-1, 2), "eta must be a positive"),
        (lambda: linear_regression_sgd(float("nan"), 2), "eta must be a positive"),
        (lambda: linear_regression_sgd(0.1, 0), "batch_size must be an integer >= 1"),
        (lambda: linear_regression_sgd(0.1, 2, runs=4), "runs must be an integer >= 8"),
        (lambda: linear_regression_sgd(0.1, 2, n=50, d=100), "n must be >= d"),
        (lambda: linear_regression_sgd(0.1, 60, n=50, d=5), "batch_size must be <= n=50"),
        (lambda: linear_regression_sgd(0.1, 2, seed=-1), "seed must be an integer >= 0"),
        (lambda: sweep([], [1]), "etas is empty"),
        (lambda: sweep([0.1], [0]), "b must be an integer >= 1"),
        (lambda: tail_index_theory(0.1, 2, d=0), "d must be an integer >= 1"),
        (lambda: contraction_moment(-1.0, 0.1, 2), "s must be a finite number >= 0"),
        (lambda: prunability_curve([1.5], kind="dense"), "kind must be one of"),
        (lambda: prunability_curve([2.5]), "alphas must be in (0, 2]"),
        (lambda: prunability_curve([1.5], shape=(10,)), "shape must be (rows, cols)"),
        (lambda: prunability_curve([1.5], error=0), "error must be a positive"),
        (lambda: stable_prunability_experiment(seeds=1), "seeds must be an integer >= 2"),
        (lambda: gaussian_keep_ratio(-0.1), "error must be a positive"),
    ],
)
def test_bad_input_raises_usage_error(call: object, message: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        call()  # type: ignore[operator]
    assert message in str(info.value)
