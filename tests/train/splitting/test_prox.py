"""tailwise.train.splitting.prox: every operator against the brute-force argmin on a grid."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from torch import Tensor

from tailwise import UsageError
from tailwise.train.splitting import (
    group_norms,
    prox_group_l0,
    prox_group_l1,
    prox_l0,
    prox_l1,
    prox_tl1,
    tl1_threshold,
)

GRID = np.linspace(-8.0, 8.0, 1_600_001)  # step 1e-5
STEP = GRID[1] - GRID[0]

Penalty = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def _l1(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.abs(x)


def _l0(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return (x != 0).astype(np.float64)


def _tl1(a: float) -> Penalty:
    def rho(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return (a + 1.0) * np.abs(x) / (a + np.abs(x))

    return rho


def _brute(y: float, t: float, penalty: Penalty) -> float:
    """argmin over GRID of 1/2 (x - y)^2 + t P(x)."""
    objective = 0.5 * (GRID - y) ** 2 + t * penalty(GRID)
    return float(GRID[int(np.argmin(objective))])


def _ys(thresholds: list[float], avoid: float = 1e-3) -> list[float]:
    """Values of y across [-5, 5] and around each threshold, none within ``avoid`` of one
    (where 0 and the nonzero candidate tie and either is a minimizer)."""
    ys = [*np.linspace(-5.0, 5.0, 41).tolist(), 0.0]
    for tau in thresholds:
        ys += [s * (tau + d) for s in (-1.0, 1.0) for d in (-0.05, -2 * avoid, 2 * avoid, 0.05)]
    return [y for y in ys if all(abs(abs(y) - tau) > avoid for tau in thresholds)]


def _check(prox: Callable[[Tensor], Tensor], ys: list[float], t: float, penalty: Penalty) -> None:
    got = prox(torch.tensor(ys, dtype=torch.float64)).numpy()
    want = np.array([_brute(y, t, penalty) for y in ys])
    np.testing.assert_allclose(got, want, atol=2 * STEP, rtol=0)
    # Exact zeros where the minimizer is 0: the sparsity the splitting methods count.
    assert np.array_equal(got == 0, np.abs(want) < STEP / 2)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.7])
def test_prox_l1_is_the_argmin(t: float) -> None:
    _check(lambda y: prox_l1(y, t), _ys([t]), t, _l1)


@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
def test_prox_l0_is_the_argmin(t: float) -> None:
    tau = math.sqrt(2 * t)
    _check(lambda y: prox_l0(y, t), _ys([tau]), t, _l0)
    # Hard threshold: the survivors are y itself.
    y = torch.tensor([tau + 0.01, -(tau + 0.2)], dtype=torch.float64)
    assert torch.equal(prox_l0(y, t), y)


# (t, a): regime 1 is t <= a^2 / (2 (a + 1)), regime 2 is above.
TL1_CASES = [
    (0.1, 1.0, 1),
    (0.3, 3.0, 1),
    (0.25, 1.0, 1),  # the regime boundary itself
    (1.0, 1.0, 2),
    (0.05, 0.2, 2),
    (2.0, 0.5, 2),
]


@pytest.mark.parametrize(("t", "a", "regime"), TL1_CASES)
def test_prox_tl1_is_the_argmin_in_both_regimes(t: float, a: float, regime: int) -> None:
    boundary = a * a / (2 * (a + 1))
    assert (t <= boundary) == (regime == 1)
    tau = tl1_threshold(t, a)
    _check(lambda y: prox_tl1(y, t, a), _ys([tau]), t, _tl1(a))


def test_tl1_threshold_formulas_and_continuity() -> None:
    # Regime 1: tau = t (a + 1) / a, and the prox leaves 0 continuously at tau.
    assert tl1_threshold(0.1, 1.0) == pytest.approx(0.2)
    just_above = prox_tl1(torch.tensor([0.2 + 1e-6], dtype=torch.float64), 0.1, 1.0)
    assert 0 < float(just_above) < 1e-4
    # Regime 2: tau = sqrt(2 t (a + 1)) - a / 2, and the prox jumps there (0 and the nonzero
    # candidate tie at tau: the objective of both is the same).
    t, a = 1.0, 1.0
    tau = tl1_threshold(t, a)
    assert tau == pytest.approx(math.sqrt(2 * t * (a + 1)) - a / 2)
    jump = float(prox_tl1(torch.tensor([tau + 1e-9], dtype=torch.float64), t, a))
    assert jump > 0.5

    def objective(x: float, y: float) -> float:
        return 0.5 * (x - y) ** 2 + t * (a + 1) * abs(x) / (a + abs(x))

    assert objective(jump, tau) == pytest.approx(objective(0.0, tau), abs=1e-6)


def test_prox_tl1_does_not_threshold_at_t() -> None:
    # Many copies zero only |y| <= t; the true threshold (a = 1, regime 1) is 2t.
    t = 0.1
    y = torch.tensor([0.15, -0.19], dtype=torch.float64)
    assert torch.equal(prox_tl1(y, t, 1.0), torch.zeros(2, dtype=torch.float64))
    assert _brute(0.15, t, _tl1(1.0)) == 0.0


def test_prox_tl1_interpolates_between_l0_and_l1() -> None:
    y = torch.linspace(-3, 3, 61, dtype=torch.float64)
    # Large a: rho_a -> |x|, the soft threshold.
    torch.testing.assert_close(prox_tl1(y, 0.4, 1e6), prox_l1(y, 0.4), atol=1e-5, rtol=0)
    # t = 0 is the identity for every penalty.
    for prox in (prox_l1, prox_l0, lambda v, t: prox_tl1(v, t, 0.7)):
        assert torch.equal(prox(y, 0.0), y)


def test_dtype_shape_device_are_kept() -> None:
    w = torch.randn(3, 4, 5, dtype=torch.float32)
    for out in (
        prox_l1(w, 0.1),
        prox_l0(w, 0.1),
        prox_tl1(w, 0.1, 1.0),
        prox_group_l1(w, 0.1, 1),
        prox_group_l0(w, 0.1, 2),
    ):
        assert out.shape == w.shape and out.dtype == w.dtype and out.device == w.device


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-4, 4), min_size=1, max_size=6),
    st.floats(0.0, 2.0),
    st.floats(0.05, 5.0),
    st.lists(st.floats(-0.5, 0.5), min_size=6, max_size=6),
)
def test_prox_value_is_never_beaten_by_a_nearby_point(
    ys: list[float], t: float, a: float, shift: list[float]
) -> None:
    """Optimality: the objective at prox(y) is at most the objective at any other point."""
    y = torch.tensor(ys, dtype=torch.float64)
    other = y + torch.tensor(shift[: len(ys)], dtype=torch.float64)
    cases = [
        (prox_l1(y, t), lambda x: x.abs()),
        (prox_l0(y, t), lambda x: (x != 0).double()),
        (prox_tl1(y, t, a), lambda x: (a + 1) * x.abs() / (a + x.abs())),
    ]
    for x, penalty in cases:
        for candidate in (other, torch.zeros_like(y), y):
            best = 0.5 * (x - y) ** 2 + t * penalty(x)
            rival = 0.5 * (candidate - y) ** 2 + t * penalty(candidate)
            assert bool((best <= rival + 1e-9).all())


# -- group operators ----------------------------------------------------------------------------

GRID2 = np.linspace(-3.0, 3.0, 1201)  # 2-D grid, step 5e-3
STEP2 = GRID2[1] - GRID2[0]


def _brute_group(y: NDArray[np.float64], t: float, kind: str) -> NDArray[np.float64]:
    """argmin over a 2-D grid (plus the origin) of 1/2 ||x - y||^2 + t P(x), P a group penalty."""
    x1, x2 = np.meshgrid(GRID2, GRID2, indexing="ij")
    norm = np.hypot(x1, x2)
    penalty = norm if kind == "l1" else (norm > 0).astype(np.float64)
    objective = 0.5 * ((x1 - y[0]) ** 2 + (x2 - y[1]) ** 2) + t * penalty
    i, j = np.unravel_index(int(np.argmin(objective)), objective.shape)
    return np.array([GRID2[i], GRID2[j]])


@pytest.mark.parametrize("kind", ["l1", "l0"])
@pytest.mark.parametrize("t", [0.3, 1.1])
def test_group_prox_is_the_argmin_per_group(kind: str, t: float) -> None:
    # A (2, 5) tensor grouped along dim=1: five groups of two entries (the columns).
    rng = np.random.default_rng(4)
    w = rng.uniform(-2.0, 2.0, size=(2, 5))
    w[:, 1] *= 0.1  # a group well inside the threshold
    tau = t if kind == "l1" else math.sqrt(2 * t)
    norms = np.hypot(w[0], w[1])
    assert np.all(np.abs(norms - tau) > 0.02), "keep clear of the tie at the threshold"
    prox = prox_group_l1 if kind == "l1" else prox_group_l0
    got = prox(torch.tensor(w), t, dim=1).numpy()
    for g in range(5):
        want = _brute_group(w[:, g], t, kind)
        np.testing.assert_allclose(got[:, g], want, atol=2 * STEP2, rtol=0)
        assert (np.abs(got[:, g]).sum() == 0) == bool(np.all(np.abs(want) < STEP2 / 2))


def _radial_group_l1(w: NDArray[np.float64], t: float) -> NDArray[np.float64]:
    """Oracle for a group of any size: the minimizer lies on the ray of w (the objective is
    symmetric about it), so minimize 1/2 (r - ||w||)^2 + t |r| over a fine grid of r."""
    norm = float(np.linalg.norm(w))
    r = np.linspace(0.0, norm, 200_001)
    best = r[int(np.argmin(0.5 * (r - norm) ** 2 + t * r))]
    return np.zeros_like(w) if norm == 0 else best * w / norm


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_group_l1_on_conv_weights_groups_the_chosen_dimension(dim: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    w.select(dim, 1).mul_(0.05)  # one weak group
    t = 1.5
    got = prox_group_l1(w, t, dim)
    moved_w = w.movedim(dim, 0).numpy()
    moved_got = got.movedim(dim, 0).numpy()
    for g in range(moved_w.shape[0]):
        want = _radial_group_l1(moved_w[g].ravel(), t)
        np.testing.assert_allclose(moved_got[g].ravel(), want, atol=1e-4, rtol=0)
    assert torch.equal(got.select(dim, 1), torch.zeros_like(w.select(dim, 1)))


def test_group_l0_keeps_strong_groups_untouched() -> None:
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]], dtype=torch.float64)
    out = prox_group_l0(w, 2.0, dim=0)  # sqrt(2 t) = 2: norms 5, 1, 0
    assert torch.equal(out, torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    # Zero groups stay zero (no division by their zero norm) in the lasso too.
    assert torch.equal(prox_group_l1(w, 0.5, 0)[2], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(prox_group_l1(w, 0.0, 0), w)


def test_one_dimensional_groups_are_single_entries() -> None:
    y = torch.tensor([-2.0, 0.3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(prox_group_l1(y, 0.5, 0), prox_l1(y, 0.5))
    torch.testing.assert_close(prox_group_l0(y, 0.5, 0), prox_l0(y, 0.5))
    torch.testing.assert_close(group_norms(y, 0), y.abs())


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prox_l1(torch.ones(2), -0.1), "prox_l1: t must be a finite number >= 0"),
        (lambda: prox_l0(torch.ones(2), float("nan")), "prox_l0: t must be a finite number"),
        (lambda: prox_tl1(torch.ones(2), 0.1, 0.0), "prox_tl1: a must be > 0"),
        (lambda: prox_tl1(torch.ones(2), 0.1, -1.0), "prox_tl1: a must be a finite number"),
        (lambda: prox_l1([1.0, 2.0], 0.1), "prox_l1: y must be a torch.Tensor, got list"),
        (lambda: prox_l1(torch.ones(2, dtype=torch.int64), 0.1), "floating-point"),
        (lambda: prox_l1(torch.ones(2), "0.1"), "t must be a number >= 0, got '0.1'"),
        (lambda: prox_group_l1(torch.ones(2, 3), 0.1, 2), "dim=2 is out of range"),
        (lambda: prox_group_l0(torch.ones(2, 3), 0.1, 1.0), "dim must be an int"),
        (lambda: prox_group_l1(torch.tensor(1.0), 0.1, 0), "at least one dimension"),
        (lambda: tl1_threshold(-1.0, 1.0), "tl1_threshold: t must be"),
    ],
)
def test_bad_arguments_are_usage_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        call()
