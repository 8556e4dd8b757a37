"""tailwise.sims.nonoverlap: closed forms against Monte Carlo over Gaussian inputs, RVSM /
RVSCGD against the splitting optimizers, and source 002 Theorems 3.1-3.2 on the runs.

Monte Carlo tolerances are 4.5 standard errors of the sample mean (each test compares a
handful of numbers, so a correct formula fails with probability ~1e-5 for any seed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tailwise import UsageError
from tailwise.sims.nonoverlap import (
    SplittingTrajectory,
    _relu_lipschitz,
    binary_coarse_grad,
    binary_population_grad,
    binary_population_loss,
    limit_checks,
    monte_carlo_check,
    nonoverlap_experiment,
    population_grad,
    population_loss,
    run_rvscgd,
    run_rvsm,
    theorem_conditions,
)
from tailwise.train.splitting import RVSCGD, RVSM

Z_MAX = 4.5
SQRT_2PI = math.sqrt(2 * math.pi)


# -- an independent Monte Carlo oracle (plain sampling of the definitions) ---------------------


def sample_inputs(k: int, m: int, n: int, seed: int) -> np.ndarray:
    """n inputs Z in R^{k x m}, iid N(0, 1)."""
    return np.random.default_rng(seed).standard_normal((n, k, m))


def mean_and_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return values.mean(0), values.std(0, ddof=1) / math.sqrt(len(values))


def assert_close_mc(closed: np.ndarray, values: np.ndarray) -> None:
    mean, err = mean_and_stderr(values)
    z = np.abs(mean - closed) / err
    assert np.all(z < Z_MAX), f"closed form {closed}, Monte Carlo {mean} +- {err} (z = {z})"


def relu_output(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(1/k) sum_j relu(Z_j . w) per input: source 002 §3.1.1."""
    return np.maximum(z @ w, 0.0).mean(axis=1)


def step_output(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """1' sigma(Z w), sigma the step function: source 002 eq. 3.3."""
    return (z @ w > 0).sum(axis=1).astype(float)


def problem(m: int, seed: int, zero_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A unit teacher (with zeros) and a unit start, from one seed."""
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(m)
    w_star[rng.permutation(m)[: round(zero_share * m)]] = 0.0
    w0 = rng.standard_normal(m)
    return w_star / np.linalg.norm(w_star), w0 / np.linalg.norm(w0)


CASES = [(1, 3, 0), (2, 4, 1), (5, 3, 2)]  # (k, m, seed)


# -- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "m", "seed"), CASES)
def test_relu_loss_and_gradient_match_monte_carlo(k: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    w, w_star = rng.standard_normal(m), rng.standard_normal(m)
    z = sample_inputs(k, m, 60_000, seed)
    diff = relu_output(z, w) - relu_output(z, w_star)
    assert_close_mc(population_loss(w, w_star, k), diff**2)
    # d/dw of the per-input loss (defined a.e.): 2 diff (1/k) sum_j 1[Z_j . w > 0] Z_j
    per_input = 2 * diff[:, None] * ((z @ w > 0)[..., None] * z).mean(axis=1)
    assert_close_mc(population_grad(w, w_star, k), per_input)


@pytest.mark.parametrize(("k", "m", "seed"), CASES)
def test_relu_gradient_is_the_derivative_of_the_loss(k: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, w_star = rng.standard_normal(m), rng.standard_normal(m)
    h = 1e-6
    numeric = np.array(
        [
            (population_loss(w + h * e, w_star, k) - population_loss(w - h * e, w_star, k))
            / (2 * h)
            for e in np.eye(m)
        ]
    )
    np.testing.assert_allclose(population_grad(w, w_star, k), numeric, atol=1e-8)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_relu_critical_points_of_source_lemma_4(k: int) -> None:
    w_star = np.array([0.6, -0.8, 0.0])
    # minimum at w*, value a |w*|^2 / k^2 at 0 (a = b + k/2), and for k > 1 the saddle at
    # -(k^2 - k) / (k^2 + (pi - 1) k) w* (source 002 Lemma 4)
    assert float(population_loss(w_star, w_star, k)) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(population_grad(w_star, w_star, k), 0.0, atol=1e-15)
    a = (k * k - k) / (2 * math.pi) + k / 2
    assert float(population_loss(np.zeros(3), w_star, k)) == pytest.approx(a / k**2)
    saddle = -(k * k - k) / (k * k + (math.pi - 1) * k) * w_star
    if k > 1:
        np.testing.assert_allclose(population_grad(saddle, w_star, k), 0.0, atol=1e-14)


def test_relu_functions_evaluate_rows_separately() -> None:
    rng = np.random.default_rng(0)
    w, w_star = rng.standard_normal((3, 4, 5)), rng.standard_normal(5)
    loss, grad = population_loss(w, w_star, 3), population_grad(w, w_star, 3)
    assert loss.shape == (3, 4) and grad.shape == (3, 4, 5)
    np.testing.assert_allclose(loss[1, 2], population_loss(w[1, 2], w_star, 3), rtol=1e-14)
    np.testing.assert_allclose(grad[2, 0], population_grad(w[2, 0], w_star, 3), rtol=1e-14)


def test_relu_lipschitz_bound_holds_for_the_hessian() -> None:
    """The a.e. Hessian (by central differences of the gradient) never exceeds the bound on
    |w| >= min_norm; the bound is attained at |w| = min_norm, angle pi/2 (or radially)."""
    rng = np.random.default_rng(3)
    m, h = 4, 1e-6
    for k in (1, 2, 4, 9):
        w_star = rng.standard_normal(m)
        min_norm = 0.3 * np.linalg.norm(w_star)
        bound = _relu_lipschitz(k, float(np.linalg.norm(w_star)), min_norm)
        worst = 0.0
        for _ in range(40):
            w = rng.standard_normal(m)
            w *= min_norm * (1 + rng.exponential()) / np.linalg.norm(w)
            hess = np.array(
                [
                    (population_grad(w + h * e, w_star, k) - population_grad(w - h * e, w_star, k))
                    / (2 * h)
                    for e in np.eye(m)
                ]
            )
            worst = max(worst, float(np.linalg.norm(hess, 2)))
        assert worst <= bound * (1 + 1e-5), (k, worst, bound)
        assert worst >= 0.5 * bound  # not a vacuous bound


@pytest.mark.parametrize(("k", "m", "seed"), CASES)
def test_binary_loss_and_coarse_gradient_match_monte_carlo(k: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    w, w_star = rng.standard_normal(m), rng.standard_normal(m)
    z = sample_inputs(k, m, 60_000, seed)
    diff = step_output(z, w) - step_output(z, w_star)
    assert_close_mc(binary_population_loss(w, w_star, k), diff**2)
    # eq. 3.6: the chain rule of (3.5) with the ReLU derivative 1[x > 0] in place of sigma'
    coarse = diff[:, None] * ((z @ w > 0)[..., None] * z).sum(axis=1)
    assert_close_mc(binary_coarse_grad(w, w_star, k), coarse)


@pytest.mark.parametrize(("k", "m", "seed"), CASES)
def test_binary_true_gradient_matches_derivative_and_monte_carlo(k: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    w, w_star = rng.standard_normal(m), rng.standard_normal(m)
    grad = binary_population_grad(w, w_star, k)
    h = 1e-6
    numeric = np.array(
        [
            (
                binary_population_loss(w + h * e, w_star, k)
                - binary_population_loss(w - h * e, w_star, k)
            )
            / (2 * h)
            for e in np.eye(m)
        ]
    )
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    # Monte Carlo: the per-input gradient is 0 a.e.; differentiating k P(sign(Z.w) !=
    # sign(Z.w*)) in w puts the mass on the hyperplane Z.w = 0 (density 1 / (sqrt(2 pi) |w|)
    # at 0), where a patch Z = P G (G ~ N(0, I), P the projection orthogonal to w) moves
    # from agreeing to disagreeing: grad = -k / (sqrt(2 pi) |w|) E[P G sign(P G . w*)].
    g = np.random.default_rng(seed).standard_normal((100_000, m))
    wh = w / np.linalg.norm(w)
    pg = g - np.outer(g @ wh, wh)
    surface = -k / (SQRT_2PI * np.linalg.norm(w)) * pg * np.sign(pg @ w_star)[:, None]
    assert_close_mc(grad, surface)


def test_coarse_gradient_is_the_source_form_and_correlates_with_the_true_gradient() -> None:
    rng = np.random.default_rng(4)
    for k in (1, 3, 6):
        w, w_star = rng.standard_normal(7), rng.standard_normal(7)
        wh, vh = w / np.linalg.norm(w), w_star / np.linalg.norm(w_star)
        theta = math.acos(float(np.clip(wh @ vh, -1, 1)))
        source = k / SQRT_2PI * (wh - math.cos(theta / 2) * (wh + vh) / np.linalg.norm(wh + vh))
        coarse = binary_coarse_grad(w, w_star, k)
        np.testing.assert_allclose(coarse, source, atol=1e-12)  # eq. 3.23
        assert float(coarse @ binary_population_grad(w, w_star, k)) > 0  # source 002 Lemma 2


def test_binary_functions_are_scale_invariant() -> None:
    rng = np.random.default_rng(5)
    w, w_star = rng.standard_normal(6), rng.standard_normal(6)
    for c in (0.01, 3.0):
        assert binary_population_loss(c * w, 2 * w_star, 4) == pytest.approx(
            binary_population_loss(w, w_star, 4), rel=1e-12
        )
        np.testing.assert_allclose(
            binary_coarse_grad(c * w, w_star, 4), binary_coarse_grad(w, w_star, 4)
        )
        np.testing.assert_allclose(
            binary_population_grad(c * w, w_star, 4), binary_population_grad(w, w_star, 4) / c
        )
    assert float(binary_population_loss(-w_star, w_star, 3)) == pytest.approx(3.0)  # t = pi


@pytest.mark.parametrize("model", ["relu", "binary"])
def test_monte_carlo_check_agrees_and_its_error_shrinks(model: str) -> None:
    w, w_star = np.array([0.3, -1.0, 0.5]), np.array([1.0, 0.2, 0.0])
    small = monte_carlo_check(w, w_star, 3, model=model, samples=5_000, seed=1)
    large = monte_carlo_check(w, w_star, 3, model=model, samples=80_000, seed=2)
    assert (large.z.abs() < Z_MAX).all() and (small.z.abs() < Z_MAX).all()
    ratio = (small.stderr / large.stderr).to_numpy()
    np.testing.assert_allclose(ratio, 4.0, rtol=0.15)  # 1 / sqrt(samples)
    expected = 1 + 3 * (1 if model == "relu" else 2)
    assert len(large) == expected
    again = monte_carlo_check(w, w_star, 3, model=model, samples=5_000, seed=1)
    assert again.equals(small)


# -- RVSM / RVSCGD against the splitting optimizers --------------------------------------------


@pytest.mark.parametrize("penalty", ["l1", "l0", "tl1"])
def test_run_rvsm_and_rvscgd_are_the_splitting_optimizers(penalty: str) -> None:
    """Algorithms 1-2 here and in tailwise.train.splitting (RVSM / RVSCGD around plain SGD,
    fed the population gradients) give the same iterates."""
    w_star, w0 = problem(6, seed=7, zero_share=0.5)
    k, eta, beta, lam, steps = 3, 0.4, 0.1, 0.02, 25
    for algorithm, wrapper, grad in (
        ("rvsm", RVSM, population_grad),
        ("rvscgd", RVSCGD, binary_coarse_grad),
    ):
        run = (run_rvsm if algorithm == "rvsm" else run_rvscgd)(
            w0, w_star, k, eta=eta, beta=beta, lam=lam, penalty=penalty, steps=steps, a=0.5
        )
        p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        opt = wrapper(torch.optim.SGD([p], lr=eta), [p], penalty=penalty, lam=lam, beta=beta, a=0.5)
        np.testing.assert_allclose(opt.sparse_weights()["0"].numpy(), run.u[0], atol=1e-15)
        for t in range(steps):
            p.grad = torch.from_numpy(grad(p.detach().numpy(), w_star, k))
            opt.step()
            np.testing.assert_allclose(p.detach().numpy(), run.w[t + 1], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(opt.sparse_weights()["0"].numpy(), run.u[t + 1], atol=1e-12)


def test_trajectory_shapes_and_batched_runs_match_single_runs() -> None:
    rng = np.random.default_rng(8)
    w_star = rng.standard_normal(5)
    w0 = rng.standard_normal((3, 5))
    for runner in (run_rvsm, run_rvscgd):
        batch = runner(w0, w_star, 3, eta=0.5, beta=0.05, lam=0.01, steps=40)
        assert isinstance(batch, SplittingTrajectory)
        assert batch.w.shape == batch.u.shape == (41, 3, 5)
        for name in ("loss", "lagrangian", "coarse_lagrangian", "angle", "sparsity"):
            assert getattr(batch, name).shape == (41, 3)
        for i in range(3):
            single = runner(w0[i], w_star, 3, eta=0.5, beta=0.05, lam=0.01, steps=40)
            np.testing.assert_allclose(batch.w[:, i], single.w, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(batch.lagrangian[:, i], single.lagrangian, rtol=1e-12)
        np.testing.assert_array_equal(batch.w_star, w_star)


def test_lagrangian_is_loss_plus_penalty_plus_coupling() -> None:
    w_star, w0 = problem(8, seed=9, zero_share=0.5)
    run = run_rvsm(w0, w_star, 2, eta=0.5, beta=0.3, lam=0.05, penalty="tl1", steps=10, a=2.0)
    t = 4
    w, u = run.w[t], run.u[t]
    rho = np.sum(3.0 * np.abs(u) / (2.0 + np.abs(u)))
    expected = population_loss(w, w_star, 2) + 0.05 * rho + 0.15 * np.sum((w - u) ** 2)
    assert run.lagrangian[t] == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_allclose(run.coarse_lagrangian, run.lagrangian)  # RVSM: the same
    run = run_rvscgd(w0, w_star, 2, eta=0.5, beta=0.3, lam=0.05, penalty="l0", steps=10)
    w, u = run.w[t], run.u[t]
    coupling = 0.05 * np.count_nonzero(u) + 0.15 * np.sum((w - u) ** 2)
    assert run.lagrangian[t] == pytest.approx(2 * run.angle[t] / math.pi + coupling, rel=1e-12)
    potential = 2 * (1 - math.cos(run.angle[t])) / (2 * SQRT_2PI)
    assert run.coarse_lagrangian[t] == pytest.approx(potential + coupling, rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(run.w, axis=-1), 1.0, rtol=1e-14)


# -- source 002 Theorems 3.1 and 3.2 -----------------------------------------------------------

# Inside the conditions for every unit start / teacher pair with angle < pi - delta:
# RVSM k = 4: beta = 0.05 < delta sin(delta) / (4 pi) for delta >= 0.84; lam / beta = 0.1 <
# 1 / sqrt(20); eta = 1 < 1 / (beta + L) = 1.86 on |w| >= 1/2 (the runs stay above 0.88).
# RVSCGD k = 4: beta = 0.2 < 4 sin(delta) / (2 sqrt(2 pi)) for delta >= 0.253; lam = 0.02 <
# 4 / (2 sqrt(2 pi 20)) = 0.178; eta = 0.25 < 1 / (beta + 4 / sqrt(2 pi)) = 0.557, and
# eta |E g + beta (w - u)| <= 0.25 (0.8 * 2 + 0.2 * 0.45) < 1/2.
SETTINGS = {
    "rvsm": {"eta": 1.0, "beta": 0.05, "lam": 0.005},
    "rvscgd": {"eta": 0.25, "beta": 0.2, "lam": 0.02},
}
RUNNERS = {"rvsm": run_rvsm, "rvscgd": run_rvscgd}


def scalar_prox_objective(x: np.ndarray, y: float, t: float, penalty: str, a: float) -> np.ndarray:
    """1/2 (x - y)^2 + t P(x) on a grid of x (the oracle of u = prox(w))."""
    size = np.abs(x)
    value = {"l1": size, "l0": (x != 0).astype(float), "tl1": (a + 1) * size / (a + size)}
    return 0.5 * (x - y) ** 2 + t * value[penalty]


def assert_is_prox(u: np.ndarray, w: np.ndarray, t: float, penalty: str, a: float) -> None:
    for ui, wi in zip(u, w, strict=True):
        grid = np.concatenate([np.linspace(-abs(wi) - 1, abs(wi) + 1, 20_001), [0.0, wi]])
        best = scalar_prox_objective(grid, wi, t, penalty, a).min()
        mine = scalar_prox_objective(np.array([ui]), wi, t, penalty, a)[0]
        assert mine <= best + 1e-9, (ui, wi, penalty)


@pytest.mark.parametrize("algorithm", ["rvsm", "rvscgd"])
@pytest.mark.parametrize("penalty", ["l1", "l0", "tl1"])
def test_theorem_conditions_give_descent_sparsity_and_the_limit(
    algorithm: str, penalty: str
) -> None:
    settings = SETTINGS[algorithm]
    k, m, a = 4, 20, 1.0
    rises = []
    for seed in range(12):
        w_star, w0 = problem(m, seed, zero_share=0.5)
        run = RUNNERS[algorithm](w0, w_star, k, penalty=penalty, steps=400, a=a, **settings)
        conditions = theorem_conditions(run)
        assert conditions["met"] == "yes", conditions
        # the Lagrangian RVSM / RVSCGD descend never rises beyond rounding
        descended = run.lagrangian if algorithm == "rvsm" else run.coarse_lagrangian
        assert np.all(np.diff(descended) <= 1e-12 * np.abs(descended[:-1])), seed
        rises.append(float(np.max(np.diff(run.lagrangian))))
        # the angle never exceeds pi - delta for any admissible delta: here the start's angle
        assert run.angle.max() <= float(conditions["angle_bound"]) + 1e-12
        # the limit: a fixed point with u = prox(w), eqs. 3.13 / 3.14, the sine relation,
        # angle < delta and (RVSCGD) the distance bound (3.15)
        checks = limit_checks(run)
        assert checks["step"] < 1e-12 and checks["stationarity"] < 1e-10
        assert_is_prox(run.u[-1], run.w[-1], settings["lam"] / settings["beta"], penalty, a)
        assert checks["relation"] < 1e-10 and checks["scale"] > 0
        assert checks["sine_lhs"] == pytest.approx(float(checks["sine_rhs"]), rel=1e-8, abs=1e-14)
        assert checks["angle"] < float(conditions["delta"])
        if algorithm == "rvscgd":
            assert checks["distance"] <= checks["distance_bound"] + 1e-12
        # u is sparse: zero wherever w* is (half of the entries)
        zeros = w_star == 0
        assert np.all(run.u[-1][zeros] == 0)
        assert run.sparsity[-1] >= 0.5
    if algorithm == "rvscgd" and penalty == "l1":
        # Theorem 3.2 also claims the Lagrangian on the binarized loss k t / pi decreases
        # monotonically; under these very conditions it rises at some steps of some runs
        # (see run_rvscgd's docstring).
        assert max(rises) > 1e-6


def test_theorem_conditions_report_what_fails() -> None:
    w_star, w0 = problem(20, seed=0, zero_share=0.5)
    run = run_rvsm(w0, w_star, 4, eta=3.0, beta=1.0, lam=0.9, steps=5)
    met = str(theorem_conditions(run)["met"])
    assert met.startswith("no:") and "eta < eta_max" in met and "lam bound" in met
    assert "beta < delta sin(delta)" in met
    run = run_rvscgd(w0, w_star, 4, eta=0.25, beta=2.0, lam=0.02, steps=5)
    assert "beta < k / (2 sqrt(2 pi))" in str(theorem_conditions(run)["met"])
    with pytest.raises(UsageError, match="single run"):
        theorem_conditions(run_rvsm(np.stack([w0, w0]), w_star, 4, eta=1, beta=0.1, lam=0, steps=1))


# -- the experiment ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rvsm", "rvscgd"])
def test_experiment_table_summary_figure_and_seed(algorithm: str) -> None:
    result = nonoverlap_experiment(algorithm=algorithm, steps=150, samples=4000, progress=False)
    assert result.name == f"nonoverlap-{algorithm}"
    assert result.summary["verdict"] == "pass", result.summary
    assert result.summary["theorem"] == ("3.1" if algorithm == "rvsm" else "3.2")
    assert list(result.table.columns) == [
        "step",
        "loss",
        "lagrangian",
        "coarse_lagrangian",
        "angle",
        "sparsity_u",
        "distance",
        "norm_w",
    ]
    assert len(result.table) == 151
    assert result.summary["sparsity_u"] >= result.summary["sparsity_w_star"] == 0.5
    assert abs(result.summary["mc_loss"] - result.summary["loss_closed_form"]) < (
        Z_MAX * result.summary["mc_loss_stderr"]
    )
    assert result.options["algorithm"] == algorithm and result.options["seed"] == 0
    fig = result.figure()
    assert len(fig.axes) == 3
    labels = fig.axes[2].get_legend_handles_labels()[1]
    assert labels == ["w*", "w (final)", "u (final)"]
    again = nonoverlap_experiment(algorithm=algorithm, steps=150, samples=4000, progress=False)
    assert again.table.equals(result.table) and again.summary == result.summary
    other = nonoverlap_experiment(
        algorithm=algorithm, seed=1, steps=150, samples=4000, progress=False
    )
    assert not other.table.equals(result.table)


def test_experiment_reports_a_failed_condition() -> None:
    result = nonoverlap_experiment(algorithm="rvsm", beta=1.0, steps=50, progress=False)
    assert str(result.summary["verdict"]).startswith("fail: conditions no:")


# -- bad input ---------------------------------------------------------------------------------

W, STAR = np.array([1.0, 0.5]), np.array([0.0, 1.0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: population_loss(W, np.zeros(2), 2), "w_star must be nonzero"),
        (lambda: population_loss(W, STAR[:1], 2), "w has 2 entries per filter, w_star 1"),
        (lambda: population_loss(W, np.ones((2, 2)), 2), "w_star must have shape"),
        (lambda: population_loss(np.empty(0), STAR, 2), "m >= 1"),
        (lambda: population_loss(W, STAR, 0), "k .* must be an int >= 1, got 0"),
        (lambda: population_loss(W, STAR, True), "k .* must be an int >= 1, got True"),
        (lambda: population_loss(W, STAR, 2.5), "k .* must be an int >= 1"),
        (lambda: population_loss([np.nan, 1.0], STAR, 2), "non-finite"),
        (lambda: population_loss(["a", "b"], STAR, 2), "array of numbers"),
        (lambda: population_grad(np.zeros(2), STAR, 2), "w must be nonzero"),
        (lambda: binary_population_loss(np.zeros(2), STAR, 2), "w must be nonzero"),
        (lambda: binary_population_grad(STAR * 3, STAR, 2), "parallel"),
        (lambda: binary_population_grad(-STAR, STAR, 2), "parallel"),
        (lambda: binary_coarse_grad(W, [0, 0], 2), "w_star must be nonzero"),
        (lambda: run_rvsm(W, STAR, 2, eta=0, beta=1, lam=0, steps=1), "eta must be > 0"),
        (lambda: run_rvsm(W, STAR, 2, eta=1, beta=-1, lam=0, steps=1), "beta must be a finite"),
        (lambda: run_rvsm(W, STAR, 2, eta=1, beta=1, lam=-1, steps=1), "lam must be a finite"),
        (lambda: run_rvsm(W, STAR, 2, eta=1, beta=1, lam=0, steps=-1), "steps must be an int"),
        (lambda: run_rvsm(W, STAR, 2, eta=1, beta=1, lam=0, steps=1.5), "steps must be an int"),
        (
            lambda: run_rvscgd(W, STAR, 2, eta=1, beta=1, lam=0, steps=1, penalty="l2"),
            "penalty must be one of 'l0', 'l1', 'tl1', got 'l2'",
        ),
        (lambda: run_rvsm(W, STAR, 2, eta=1, beta=1, lam=0, steps=1, a=0), "a must be > 0"),
        (lambda: run_rvsm(W, STAR, 2, eta=1e6, beta=1, lam=0, steps=50), "lower it"),
        (lambda: limit_checks("run"), "expected a SplittingTrajectory"),
        (
            lambda: limit_checks(run_rvsm(W, STAR, 2, eta=1, beta=1, lam=0, steps=0)),
            "steps >= 1",
        ),
        (lambda: monte_carlo_check(W, STAR, 2, model="sign"), "model must be"),
        (lambda: monte_carlo_check(W, STAR, 2, samples=1), "samples must be an int >= 2"),
        (lambda: monte_carlo_check(np.ones((2, 2)), STAR, 2), r"shape \(m,\)"),
        (lambda: nonoverlap_experiment(algorithm="adam", progress=False), "algorithm must be"),
        (lambda: nonoverlap_experiment(m=0, progress=False), "m must be an int >= 1"),
        (lambda: nonoverlap_experiment(zero_share=1.0, progress=False), "no nonzero entry"),
        (lambda: nonoverlap_experiment(eta=-1.0, progress=False), "eta must be"),
    ],
)
def test_bad_input_is_a_usage_error(call: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        call()  # type: ignore[operator]


# -- thorough (slow) ---------------------------------------------------------------------------


@pytest.mark.slow
def test_closed_forms_at_a_million_inputs() -> None:
    """The closed forms agree with 10^6 Gaussian inputs to within 4.5 standard errors
    (standard errors ~1e-3 of the values): any wrong constant or sign would show."""
    rng = np.random.default_rng(11)
    for k, m in ((2, 3), (6, 2)):
        w, w_star = rng.standard_normal(m), rng.standard_normal(m)
        for model in ("relu", "binary"):
            table = monte_carlo_check(w, w_star, k, model=model, samples=1_000_000, seed=k)
            assert (table.z.abs() < Z_MAX).all(), table


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rvsm", "rvscgd"])
def test_theorems_over_many_problems(algorithm: str) -> None:
    """Across dimensions, patch counts and 40 random problems each: with parameters set
    inside the theorem's conditions, descent, the angle bound and the limit relations hold."""
    for m in (10, 50):
        for k in (2, 4, 8):
            if algorithm == "rvsm":
                beta = 0.2 / k  # < delta sin(delta) / (k pi) for delta >= 0.8
                eta = 0.9 / (beta + _relu_lipschitz(k, 1.0, 0.5))
            else:
                beta = 0.05 * k  # < k sin(delta) / (2 sqrt(2 pi)) for delta >= 0.126
                eta = 0.3 / (beta + k / SQRT_2PI)
            lam = (
                0.5 * beta / math.sqrt(m)
                if algorithm == "rvsm"
                else 0.5 * k / (2 * SQRT_2PI * math.sqrt(m))
            )
            for seed in range(40):
                w_star, w0 = problem(m, 1000 + seed, zero_share=0.5)
                run = RUNNERS[algorithm](w0, w_star, k, eta=eta, beta=beta, lam=lam, steps=2000)
                conditions = theorem_conditions(run)
                if conditions["met"] != "yes":  # a start within delta of -w* (rare)
                    assert "theta0" in str(conditions["met"])
                    continue
                descended = run.lagrangian if algorithm == "rvsm" else run.coarse_lagrangian
                assert np.all(np.diff(descended) <= 1e-12 * np.abs(descended[:-1]))
                assert run.angle.max() <= float(conditions["angle_bound"]) + 1e-12
                checks = limit_checks(run)
                assert checks["relation"] < 1e-8, (m, k, seed, checks)
                assert checks["angle"] < float(conditions["delta"])
                if algorithm == "rvscgd":
                    assert checks["distance"] <= checks["distance_bound"] + 1e-12
                assert np.all(run.u[-1][w_star == 0] == 0)
