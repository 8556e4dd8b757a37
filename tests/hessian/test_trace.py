"""Tests of the Hutchinson / Hutch++ trace and the SLQ density (tailwise.hessian.trace)."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import Tensor

from _oracles import dense_hessian
from tailwise.hessian import trace as trace_module
from tailwise.hessian.trace import (
    SpectralDensity,
    TraceEstimate,
    hutchinson_trace,
    hutchpp_trace,
    spectral_density,
)

#: The ``dense_operator`` fixture of conftest.py: ``dense_operator(matrix)`` -> operator.
DenseFactory = Callable[[Tensor], Any]


def wrong_shape(dense_operator: DenseFactory, matrix: Tensor) -> Any:
    """A dense operator whose ``matmat`` returns one column too few (a broken operator)."""
    op = dense_operator(matrix)
    product = op.matmat
    op.matmat = lambda vectors: product(vectors)[:, :1]
    return op


def symmetric(eigenvalues: NDArray[np.float64], seed: int = 0) -> Tensor:
    """Q diag(eigenvalues) Q^T, float64, with a random orthogonal Q."""
    n = eigenvalues.size
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return torch.from_numpy((q * eigenvalues) @ q.T)


def integral(values: NDArray[np.float64], grid: NDArray[np.float64]) -> float:
    """Trapezoidal rule (numpy < 2 has no ``np.trapezoid``)."""
    return float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2)


def spread_spectrum(n: int = 60, seed: int = 1) -> NDArray[np.float64]:
    return np.random.default_rng(seed).normal(1.0, 2.0, n)


# --- Hutchinson ------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_over_seeds(distribution: str, dense_operator: DenseFactory) -> None:
    evals = spread_spectrum()
    op = dense_operator(symmetric(evals))
    results = [hutchinson_trace(op, 40, seed=seed, distribution=distribution) for seed in range(40)]
    estimates = np.array([r.estimate for r in results])
    spread = estimates.std(ddof=1) / math.sqrt(estimates.size)
    assert abs(estimates.mean() - evals.sum()) < 4 * spread
    # The reported standard errors are honest: most estimates lie within 3 of them.
    within = [abs(r.estimate - evals.sum()) < 3 * r.std_error for r in results]
    assert np.mean(within) >= 0.9


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_std_error_matches_theory_and_shrinks_like_one_over_sqrt_m(
    distribution: str,
    dense_operator: DenseFactory,
) -> None:
    matrix = symmetric(spread_spectrum())
    op = dense_operator(matrix)
    small = hutchinson_trace(op, 200, seed=0, distribution=distribution)
    large = hutchinson_trace(op, 3200, seed=1, distribution=distribution)
    assert large.std_error < small.std_error
    assert small.std_error / large.std_error == pytest.approx(4.0, rel=0.2)
    # Var(z^T A z) = 2 ||A||_F^2 (Gaussian), minus 2 sum A_ii^2 for Rademacher probes.
    variance = 2 * float((matrix**2).sum())
    if distribution == "rademacher":
        variance -= 2 * float((matrix.diagonal() ** 2).sum())
    assert large.std_error == pytest.approx(math.sqrt(variance / 3200), rel=0.1)


def test_hutchinson_blocks_change_calls_not_probes(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum()))
    reference = hutchinson_trace(op, 50, block_size=50).samples
    for block_size, calls in [(1, 50), (7, 8), (64, 1)]:
        op.calls = op.columns = 0
        result = hutchinson_trace(op, 50, block_size=block_size)
        assert (op.calls, op.columns, result.num_matvecs) == (calls, 50, 50)
        np.testing.assert_allclose(result.samples, reference, rtol=1e-12)


def test_hutchinson_rademacher_is_exact_on_a_diagonal_matrix(dense_operator: DenseFactory) -> None:
    diagonal = torch.linspace(-3.0, 7.0, 40, dtype=torch.float64)
    result = hutchinson_trace(dense_operator(torch.diag(diagonal)), 5, seed=3)
    assert result.estimate == pytest.approx(float(diagonal.sum()), abs=1e-10)
    assert result.std_error == pytest.approx(0.0, abs=1e-10)


def test_trace_estimate_fields_and_running_estimates(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum()))
    result = hutchinson_trace(op, 30)
    assert isinstance(result, TraceEstimate)
    assert result.samples.shape == (30,) and result.samples.dtype == np.float64
    assert result.running_estimates[-1] == pytest.approx(result.estimate, rel=1e-12)
    assert result.running_estimates[0] == pytest.approx(result.samples[0], rel=1e-12)
    assert result.low_rank_part == 0.0
    with pytest.raises(ValueError):
        result.samples[0] = 1.0  # read-only
    assert math.isnan(hutchinson_trace(op, 1).std_error)


def test_trace_estimators_are_reproducible_by_seed(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum()))
    for estimator in (hutchinson_trace, hutchpp_trace):
        first, again, other = (estimator(op, 30, seed=s) for s in (5, 5, 6))
        assert first.estimate == again.estimate
        assert first.estimate != other.estimate


def test_float32_operator_gives_the_float64_estimate(dense_operator: DenseFactory) -> None:
    matrix = symmetric(spread_spectrum())
    exact = hutchinson_trace(dense_operator(matrix), 20, seed=2).estimate
    single = hutchinson_trace(dense_operator(matrix.float()), 20, seed=2).estimate
    assert single == pytest.approx(exact, rel=1e-5)


# --- Hutch++ --------------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "num_matvecs"), [(3, 9), (5, 15), (5, 17), (8, 40)])
def test_hutchpp_is_exact_on_low_rank_matrices(
    rank: int, num_matvecs: int, dense_operator: DenseFactory
) -> None:
    evals = np.zeros(80)
    evals[:rank] = np.random.default_rng(rank).normal(0.0, 5.0, rank)  # indefinite
    op = dense_operator(symmetric(evals, seed=rank))
    result = hutchpp_trace(op, num_matvecs, seed=0)
    assert result.estimate == pytest.approx(evals.sum(), abs=1e-9)
    assert result.std_error < 1e-9
    assert result.num_matvecs == op.columns == num_matvecs


def test_hutchpp_is_not_exact_below_its_rank_budget(dense_operator: DenseFactory) -> None:
    evals = np.zeros(80)
    evals[:10] = np.linspace(1.0, 10.0, 10)
    result = hutchpp_trace(dense_operator(symmetric(evals)), 9, seed=0)  # sketch of 3 < 10
    assert abs(result.estimate - evals.sum()) > 1e-6


def test_hutchpp_beats_hutchinson_on_a_fast_decaying_spectrum(dense_operator: DenseFactory) -> None:
    evals = 1.0 / np.arange(1, 201) ** 2
    op = dense_operator(symmetric(evals))
    plain = np.array([hutchinson_trace(op, 60, seed=s).estimate for s in range(30)])
    plus = np.array([hutchpp_trace(op, 60, seed=s).estimate for s in range(30)])
    rms_plain = np.sqrt(np.mean((plain - evals.sum()) ** 2))
    rms_plus = np.sqrt(np.mean((plus - evals.sum()) ** 2))
    assert rms_plus < 0.3 * rms_plain
    assert abs(plus.mean() - evals.sum()) < 4 * plus.std(ddof=1) / math.sqrt(plus.size)


def test_hutchpp_on_a_tiny_operator_uses_fewer_products(dense_operator: DenseFactory) -> None:
    evals = np.array([1.0, 2.0, 3.0, 4.0])
    op = dense_operator(symmetric(evals))
    result = hutchpp_trace(op, 30)  # sketch of 10 > n = 4: only 4 columns are drawn
    assert result.num_matvecs == op.columns == 4 + 4 + 10
    assert result.estimate == pytest.approx(10.0, abs=1e-12)


# --- validation ---------------------------------------------------------------------------


def test_bad_arguments_are_rejected_with_their_value(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum()))
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        hutchinson_trace(op, 0)
    with pytest.raises(ValueError, match="distribution must be one of"):
        hutchinson_trace(op, 10, distribution="uniform")
    with pytest.raises(ValueError, match="block_size"):
        hutchinson_trace(op, 10, block_size=0)
    with pytest.raises(ValueError, match="at least 3, got 2"):
        hutchpp_trace(op, 2)
    with pytest.raises(ValueError, match="num_iters"):
        spectral_density(op, num_iters=0)
    with pytest.raises(ValueError, match="num_runs"):
        spectral_density(op, num_runs=True)
    with pytest.raises(ValueError, match="tol"):
        spectral_density(op, tol=-1.0)
    with pytest.raises(ValueError, match=r"returned shape \(60, 1\)"):
        hutchinson_trace(wrong_shape(dense_operator, op.matrix), 10)


# --- stochastic Lanczos quadrature ----------------------------------------------------------


def test_slq_weights_sum_to_one_and_density_integrates_to_one(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum(100)))
    density = spectral_density(op, num_iters=20, num_runs=4)
    assert isinstance(density, SpectralDensity)
    assert density.nodes.shape == density.weights.shape == (4, 20)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(density.weights >= 0)
    assert np.all(np.diff(density.nodes, axis=1) > 0)
    assert density.moment(0) == pytest.approx(1.0, abs=1e-12)
    for sigma in (None, 0.05, 1.0):
        grid, values = density.on_grid(sigma=sigma)
        assert grid.shape == values.shape == (1000,)
        assert np.all(values >= 0)
        assert integral(values, grid) == pytest.approx(1.0, abs=1e-12)


def test_slq_runs_share_one_matmat_per_step(dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum(100)))
    density = spectral_density(op, num_iters=15, num_runs=6)
    assert (op.calls, op.columns, density.num_matvecs) == (15, 90, 90)


def test_slq_mass_sits_on_the_clusters_in_proportion_to_their_sizes(
    dense_operator: DenseFactory,
) -> None:
    rng = np.random.default_rng(0)
    evals = np.concatenate([rng.normal(-1.0, 0.05, 90), rng.normal(5.0, 0.1, 30)])
    density = spectral_density(dense_operator(symmetric(evals)), num_iters=25, num_runs=30)
    finite = np.isfinite(density.nodes)
    nodes, weights = density.nodes[finite], density.weights[finite] / density.num_runs
    assert weights[nodes < 2].sum() == pytest.approx(0.75, abs=0.05)
    near = (np.abs(nodes + 1) < 0.3) | (np.abs(nodes - 5) < 0.5)
    assert weights[near].sum() > 0.99  # no mass between the clusters
    grid, values = density.on_grid()
    low = grid < 2
    assert integral(values[low], grid[low]) == pytest.approx(0.75, abs=0.05)


def test_slq_quadrature_is_exact_for_polynomials_below_degree_two_k(
    dense_operator: DenseFactory,
) -> None:
    # With Rademacher q, q_i^2 = 1/n, so q^T A^p q = tr(A^p)/n for every run of a diagonal A.
    diagonal = np.linspace(0.5, 2.0, 50) ** 2
    op = dense_operator(torch.diag(torch.from_numpy(diagonal)))
    k = 5
    density = spectral_density(op, num_iters=k, num_runs=3)
    per_run = [(density.weights * density.nodes**p).sum(axis=1) for p in range(2 * k + 1)]
    for p in range(2 * k):
        np.testing.assert_allclose(per_run[p], np.mean(diagonal**p), rtol=1e-10)
    # Degree 2k is beyond the Gauss rule: the quadrature underestimates it.
    assert np.all(per_run[2 * k] < np.mean(diagonal ** (2 * k)) * (1 - 1e-6))


def test_slq_moments_are_unbiased_for_a_dense_matrix(dense_operator: DenseFactory) -> None:
    evals = spread_spectrum(30)
    op = dense_operator(symmetric(evals))
    density = spectral_density(op, num_iters=3, num_runs=2000, seed=1)
    for p in range(6):
        per_run = (density.weights * density.nodes**p).sum(axis=1)
        error = per_run.std(ddof=1) / math.sqrt(per_run.size)
        assert abs(density.moment(p) - np.mean(evals**p)) < 4 * error + 1e-12
    assert density.moment(1) * density.num_params == pytest.approx(evals.sum(), rel=0.1)


def test_slq_largest_node_converges_to_the_largest_eigenvalue(dense_operator: DenseFactory) -> None:
    evals = spread_spectrum(300)
    op = dense_operator(symmetric(evals))
    errors = [
        evals.max() - np.nanmax(spectral_density(op, num_iters=m, num_runs=1).nodes)
        for m in (5, 10, 20, 40)
    ]
    assert all(e >= -1e-10 for e in errors)  # Ritz values lie inside the spectrum
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6 * evals.max()


def test_slq_with_n_steps_recovers_the_whole_spectrum(dense_operator: DenseFactory) -> None:
    evals = spread_spectrum(40)
    density = spectral_density(dense_operator(symmetric(evals)), num_iters=100, num_runs=2)
    assert density.nodes.shape == (2, 40)  # num_iters clipped to n
    for run in range(2):
        np.testing.assert_allclose(density.nodes[run], np.sort(evals), atol=1e-8)


def test_slq_breakdown_stops_with_the_nodes_found(dense_operator: DenseFactory) -> None:
    evals = np.repeat([1.0, 2.0, 5.0], [10, 20, 30])
    op = dense_operator(symmetric(evals))
    density = spectral_density(op, num_iters=10, num_runs=4)
    np.testing.assert_array_equal(density.num_nodes, [3, 3, 3, 3])
    assert op.calls == 3 and density.num_matvecs == 12
    np.testing.assert_allclose(density.nodes[:, :3], [[1.0, 2.0, 5.0]] * 4, atol=1e-10)
    assert np.all(np.isnan(density.nodes[:, 3:])) and np.all(density.weights[:, 3:] == 0)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, atol=1e-12)
    # Breakdown makes the quadrature exact for every power.
    assert density.moment(12) == pytest.approx(np.mean(evals**12), rel=0.5)
    grid, values = density.on_grid()
    assert np.all(np.isfinite(values))
    assert integral(values, grid) == pytest.approx(1.0, abs=1e-12)


def test_slq_breakdown_at_the_first_step_of_a_multiple_of_the_identity(
    dense_operator: DenseFactory,
) -> None:
    op = dense_operator(3.0 * torch.eye(20, dtype=torch.float64))
    density = spectral_density(op, num_iters=5, num_runs=2)
    np.testing.assert_array_equal(density.num_nodes, [1, 1])
    np.testing.assert_allclose(density.nodes[:, 0], 3.0)
    grid, values = density.on_grid()  # a zero-width spectrum still gets a grid
    assert grid[0] < 3.0 < grid[-1]
    assert grid[np.argmax(values)] == pytest.approx(3.0, abs=0.01)


def test_slq_runs_that_stop_at_different_steps_keep_their_own_results(
    dense_operator: DenseFactory,
) -> None:
    op = dense_operator(symmetric(spread_spectrum(60)))
    # A loose threshold makes runs stop when their beta first falls below 0.45 ||T||.
    batch = spectral_density(op, num_iters=30, num_runs=8, seed=4, tol=0.45)
    counts = batch.num_nodes
    assert len(set(counts.tolist())) > 1, "the runs should stop at different steps"
    assert batch.num_matvecs == counts.sum()
    np.testing.assert_allclose(batch.weights.sum(axis=1), 1.0, atol=1e-12)
    # Run 0 does not depend on the others (start vectors are drawn one run at a time).
    alone = spectral_density(op, num_iters=30, num_runs=1, seed=4, tol=0.45)
    np.testing.assert_allclose(alone.nodes[0], batch.nodes[0], rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(alone.weights[0], batch.weights[0], rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_slq_is_reproducible_by_seed(distribution: str, dense_operator: DenseFactory) -> None:
    op = dense_operator(symmetric(spread_spectrum(80)))

    def run(seed: int) -> SpectralDensity:
        return spectral_density(op, num_iters=10, num_runs=2, seed=seed, distribution=distribution)

    np.testing.assert_array_equal(run(3).nodes, run(3).nodes)
    assert not np.allclose(run(3).nodes, run(4).nodes)


def test_slq_on_a_float32_operator_matches_float64(dense_operator: DenseFactory) -> None:
    matrix = symmetric(spread_spectrum(80))
    double = spectral_density(dense_operator(matrix), num_iters=15, num_runs=2)
    single = spectral_density(dense_operator(matrix.float()), num_iters=15, num_runs=2)
    np.testing.assert_allclose(single.nodes, double.nodes, rtol=1e-4, atol=1e-4)


def test_slq_result_is_read_only_and_grid_arguments_are_checked(
    dense_operator: DenseFactory,
) -> None:
    density = spectral_density(dense_operator(symmetric(spread_spectrum(30))), num_iters=5)
    with pytest.raises(ValueError):
        density.nodes[0, 0] = 0.0
    with pytest.raises(ValueError, match="sigma"):
        density.on_grid(sigma=0.0)
    with pytest.raises(ValueError, match="num_points"):
        density.on_grid(num_points=1)
    with pytest.raises(ValueError, match="increasing"):
        density.on_grid(np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="none of the density's mass"):
        density.on_grid(np.linspace(1e3, 1e3 + 1, 10), sigma=0.01)
    with pytest.raises(ValueError, match="power"):
        density.moment(-1)
    grid, values = density.on_grid(np.linspace(-20, 20, 500), sigma=0.5)
    assert grid.shape == values.shape == (500,)


def test_docstring_examples_run() -> None:
    failures, tried = doctest.testmod(trace_module, raise_on_error=False)
    assert tried > 0 and failures == 0


# --- on a real Hessian ----------------------------------------------------------------------


def test_estimators_on_a_hessian_operator_match_the_dense_hessian() -> None:
    from torch.nn.functional import cross_entropy

    from tailwise.hessian.operator import HessianOperator
    from tailwise.models import MLP

    torch.manual_seed(0)
    model = MLP(4, [3], 3, activation="tanh").double()
    x, y = torch.randn(24, 4, dtype=torch.float64), torch.randint(0, 3, (24,))
    batches = [(x[:10], y[:10]), (x[10:20], y[10:20]), (x[20:], y[20:])]  # unequal last batch
    op = HessianOperator(model, cross_entropy, batches)

    hessian = dense_hessian(model, cross_entropy, x, y)
    evals = torch.linalg.eigvalsh(hessian).numpy()
    n = op.num_params
    assert n == 27 and hessian.shape == (n, n)

    plus = hutchpp_trace(op, 3 * n, seed=0)  # sketch of n columns spans everything: exact
    assert plus.estimate == pytest.approx(float(hessian.trace()), abs=1e-10)
    plain = hutchinson_trace(op, 200, seed=0, block_size=50)
    assert abs(plain.estimate - float(hessian.trace())) < 4 * plain.std_error
    before = op.num_matvecs
    density = spectral_density(op, num_iters=n, num_runs=2, seed=0)
    assert op.num_matvecs - before == density.num_matvecs <= 2 * n
    for run in range(2):
        found = density.nodes[run][np.isfinite(density.nodes[run])]
        # Every Ritz value is an eigenvalue; all n of them unless the run broke down early.
        assert np.abs(found[:, None] - evals[None, :]).min(axis=1).max() < 1e-8
        assert found.max() == pytest.approx(evals.max(), abs=1e-8)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, atol=1e-12)
