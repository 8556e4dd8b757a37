"""Tests of ``tailwise.tails.estimators``: MMO (mean and order forms, univariate and
multivariate) and Hill, against known tail indices and the REFERENCES §4 formula."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from tailwise.spectral.powerlaw import hill_alpha as spectral_hill_alpha
from tailwise.tails import estimators
from tailwise.tails.estimators import hill_tail_index, mmo_alpha, mmo_block_sizes
from tailwise.tails.stable import sample_elliptic, sample_sas

ALPHAS = (1.2, 1.5, 1.8)
N_LARGE = 200_000  # REFERENCES §4: 200k SaS samples give 1.20 / 1.51 / 1.80


def mmo_by_formula(x: NDArray[np.float64], m: int) -> float:
    """REFERENCES §4 mean form, uncentred, written out directly (x: (N,) or (N, d))."""
    samples = x if x.ndim == 2 else x[:, None]
    n = samples.shape[0] // m
    blocks = samples[: n * m].reshape(n, m, -1).sum(axis=1)
    log_y = np.log(np.linalg.norm(blocks, axis=1)).mean()
    log_x = np.log(np.linalg.norm(samples, axis=1)).mean()
    return float(math.log(m) / (log_y - log_x))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_univariate_mmo_recovers_the_stable_index(alpha: float) -> None:
    x = sample_sas(alpha, N_LARGE, seed=0)
    assert mmo_alpha(x) == pytest.approx(alpha, abs=0.05)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_multivariate_mmo_recovers_the_index_of_elliptic_rows(alpha: float) -> None:
    rows = sample_elliptic(alpha, N_LARGE, 3, seed=1)
    assert mmo_alpha(rows, multivariate=True) == pytest.approx(alpha, abs=0.05)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_multivariate_mmo_recovers_the_index_of_iid_rows(alpha: float) -> None:
    # Rows with iid SaS coordinates are multivariate stable too (spectral measure on the axes).
    rows = np.asarray(sample_sas(alpha, (N_LARGE // 4, 4), seed=2))
    assert mmo_alpha(rows, multivariate=True) == pytest.approx(alpha, abs=0.05)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_order_statistic_form_is_close(alpha: float) -> None:
    # Looser than the mean form: one order statistic (the sample median of |Y| and of |X|)
    # per block size carries less information than the mean of all N logs, and at the large
    # block sizes only N / m = 200 block sums are left, so its spread is larger.
    x = sample_sas(alpha, N_LARGE, seed=3)
    assert mmo_alpha(x, form="order") == pytest.approx(alpha, abs=0.1)
    rows = sample_elliptic(alpha, N_LARGE // 2, 2, seed=4)
    assert mmo_alpha(rows, multivariate=True, form="order") == pytest.approx(alpha, abs=0.1)


def test_gaussian_data_give_two_and_heavier_tails_smaller_values() -> None:
    gaussian = np.random.default_rng(0).standard_normal(50_000)
    assert mmo_alpha(gaussian) == pytest.approx(2.0, abs=0.05)
    cauchy = sample_sas(1.0, 50_000, seed=0)
    assert mmo_alpha(cauchy) == pytest.approx(1.0, abs=0.05)
    assert mmo_alpha(sample_sas(0.6, 50_000, seed=0)) == pytest.approx(0.6, abs=0.05)


def test_block_sizes_follow_references() -> None:
    assert mmo_block_sizes(200_000) == [2, 5, 10, 20, 50, 100, 400, 500, 1000]
    assert mmo_block_sizes(4) == [2]
    assert mmo_block_sizes(7) == [2]  # prime: no divisor block size above 1
    assert mmo_block_sizes(24) == [2, 4, 5, 10]  # 4 = largest divisor <= sqrt(24)
    assert mmo_block_sizes(36) == [2, 5, 6, 10]  # m <= N / 2 drops 20
    assert mmo_block_sizes(2001) == [2, 5, 10, 20, 29, 50, 100, 500, 1000]  # 2001 = 3 * 23 * 29


def test_explicit_block_size_is_the_references_formula() -> None:
    x = np.asarray(sample_sas(1.4, 10_007, seed=5))  # prime N: a remainder is left out
    for m in (2, 7, 100):
        assert mmo_alpha(x, m=m, center=False) == pytest.approx(mmo_by_formula(x, m), rel=1e-12)
    rows = np.asarray(sample_elliptic(1.4, 3001, 5, seed=6))
    assert mmo_alpha(rows, multivariate=True, m=20, center=False) == pytest.approx(
        mmo_by_formula(rows, 20), rel=1e-12
    )


def test_default_is_the_median_over_the_block_sizes() -> None:
    x = np.asarray(sample_sas(1.3, 5000, seed=7))
    expected = np.median([mmo_by_formula(x, m) for m in mmo_block_sizes(x.size)])
    assert mmo_alpha(x, center=False) == pytest.approx(expected, rel=1e-12)


def test_order_form_uses_medians() -> None:
    x = np.asarray(sample_sas(1.3, 4000, seed=8))
    m = 10
    sums = np.abs(x.reshape(-1, m).sum(axis=1))
    # 400 block sums: the 200th smallest; 4000 samples: the 2000th smallest.
    expected = math.log(m) / (math.log(np.sort(sums)[199]) - math.log(np.sort(np.abs(x))[1999]))
    assert mmo_alpha(x, m=m, form="order", center=False) == pytest.approx(expected, rel=1e-12)


def test_median_centring_makes_a_shift_irrelevant() -> None:
    x = np.asarray(sample_sas(1.5, 50_000, seed=9))
    assert mmo_alpha(x + 100.0) == pytest.approx(mmo_alpha(x), abs=1e-9)
    # Without centring the offset dominates the block sums (they grow like m): alpha -> 1.
    assert mmo_alpha(x + 100.0, center=False) < 1.1
    rows = np.asarray(sample_elliptic(1.5, 20_000, 3, seed=10))
    offset = np.array([100.0, -50.0, 3.0])
    assert mmo_alpha(rows + offset, multivariate=True) == pytest.approx(
        mmo_alpha(rows, multivariate=True), abs=1e-9
    )
    assert mmo_alpha(rows + offset, multivariate=True, center=False) < 1.1


def test_scale_invariance_even_with_exact_zeros() -> None:
    x = np.asarray(sample_sas(1.5, 20_001, seed=11))  # odd N: one exact zero after centring
    reference = mmo_alpha(x)
    for scale in (1e-30, 1e-3, 1e12):
        assert mmo_alpha(scale * x) == pytest.approx(reference, rel=1e-9)


def test_cap() -> None:
    uniform = np.random.default_rng(1).uniform(-1, 1, 20_000)
    assert mmo_alpha(uniform) > 2.0  # lighter than Gaussian
    assert mmo_alpha(uniform, cap=2.0) == 2.0
    heavy = sample_sas(1.2, 20_000, seed=12)
    assert mmo_alpha(heavy, cap=2.0) == mmo_alpha(heavy)


def test_permutations_are_seeded_and_undo_neighbour_dependence() -> None:
    rows = np.asarray(sample_elliptic(1.5, 4000, 100, seed=13))
    flat = rows.reshape(-1)  # neighbours in a row share its mixing variable
    # In stored order, blocks of <= 100 entries sum within one Gaussian row: alpha ~ 2.
    assert mmo_alpha(flat) > 1.85
    shuffled = mmo_alpha(flat, permutations=5, seed=0)
    assert shuffled == pytest.approx(1.5, abs=0.05)
    assert mmo_alpha(flat, permutations=5, seed=0) == shuffled
    one = mmo_alpha(flat, permutations=1, seed=3)
    centred = flat - np.median(flat)
    order = np.random.default_rng(3).permutation(flat.size)
    assert one == pytest.approx(mmo_alpha(centred[order], center=False), rel=1e-12)


def test_torch_tensors_of_any_float_dtype() -> None:
    x = np.asarray(sample_sas(1.5, 20_000, seed=14), dtype=np.float32)
    expected = mmo_alpha(x)
    assert isinstance(expected, float)
    assert mmo_alpha(torch.from_numpy(x)) == expected
    assert mmo_alpha(torch.from_numpy(x).requires_grad_()) == expected
    assert mmo_alpha(torch.from_numpy(x).double()) == expected  # float32 values exactly
    assert mmo_alpha(torch.from_numpy(x).to(torch.bfloat16)) == pytest.approx(1.5, abs=0.1)
    assert hill_tail_index(torch.from_numpy(x)) == hill_tail_index(x)
    rows = torch.from_numpy(x).reshape(-1, 4)
    assert mmo_alpha(rows, multivariate=True) == mmo_alpha(rows.numpy(), multivariate=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors() -> None:
    x = torch.from_numpy(np.asarray(sample_sas(1.5, 20_000, seed=15)))
    assert mmo_alpha(x.cuda()) == mmo_alpha(x)
    assert hill_tail_index(x.cuda()) == hill_tail_index(x)


def test_input_errors_say_what_and_how_many() -> None:
    with pytest.raises(ValueError, match="at least 4 samples, got 3"):
        mmo_alpha([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 4 rows, got 2"):
        mmo_alpha(np.ones((2, 3)), multivariate=True)
    with pytest.raises(ValueError, match="2 of 10 values are NaN or infinite"):
        mmo_alpha([1.0, np.nan, np.inf, *range(7)])
    with pytest.raises(ValueError, match="shape \\(n, d\\)"):
        mmo_alpha(np.ones((4, 3, 2)), multivariate=True)
    with pytest.raises(ValueError, match="m=50 needs at least 100 samples, got 99"):
        mmo_alpha(np.arange(99.0), m=50)
    with pytest.raises(ValueError, match="block size m must be an integer >= 2"):
        mmo_alpha(np.arange(99.0), m=1)
    with pytest.raises(ValueError, match="form must be 'mean' or 'order'"):
        mmo_alpha(np.arange(99.0), form="median")
    with pytest.raises(ValueError, match="at least half of the 100 values equal the centre"):
        mmo_alpha(np.zeros(100))
    with pytest.raises(ValueError, match="cap must be"):
        mmo_alpha(np.arange(99.0), cap=0)
    with pytest.raises(ValueError, match="permutations must be"):
        mmo_alpha(np.arange(99.0), permutations=-1)
    with pytest.raises(TypeError, match="complex"):
        mmo_alpha(torch.ones(10, dtype=torch.complex64))
    with pytest.raises(TypeError, match="real numbers"):
        mmo_alpha(np.array(["a", "b", "c", "d"]))


@pytest.mark.parametrize("alpha", [0.8, 1.5, 3.0])
def test_hill_recovers_the_pareto_index(alpha: float) -> None:
    rng = np.random.default_rng(16)
    pareto = rng.pareto(alpha, 100_000) + 1.0  # P(Z > t) = t^-alpha, t >= 1
    assert hill_tail_index(pareto, center=False) == pytest.approx(alpha, rel=0.1)
    assert hill_tail_index(pareto, k=2000, center=False) == pytest.approx(alpha, rel=0.05)
    # Exactly symmetric (median 0): the centred default sees |x| = the Pareto sample twice.
    symmetric = np.concatenate([pareto, -pareto])
    assert hill_tail_index(symmetric, k=4000) == pytest.approx(alpha, rel=0.05)


def test_hill_formula_and_default_k() -> None:
    z = np.array([8.0, 1.0, 4.0, 2.0, 0.5, 16.0])
    # Two largest (16, 8) over the third (4): 2 / (ln 4 + ln 2).
    assert hill_tail_index(z, k=2, center=False) == pytest.approx(2 / math.log(8))
    assert estimators.default_hill_k(100) == 10
    assert estimators.default_hill_k(101) == 11
    assert estimators.default_hill_k(2) == 1
    x = np.asarray(sample_sas(1.5, 1000, seed=17))
    assert hill_tail_index(x) == hill_tail_index(x, k=32)


def test_hill_relation_to_the_spectral_density_estimator() -> None:
    # The spectral estimator returns 1 + a tail index, with the k values above the median
    # eigenvalue counted as k + 1 (TempBalance's convention): module docstring.
    evals = np.random.default_rng(18).pareto(2.5, 1001) + 1.0
    n = evals.size
    k = n - n // 2 - 1
    tail = hill_tail_index(evals, k=k, center=False)
    assert spectral_hill_alpha(evals) - 1.0 == pytest.approx((k + 1) / k * tail, rel=1e-12)


def test_hill_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        hill_tail_index([1.0])
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 9\]"):
        hill_tail_index(np.arange(10.0), k=10)
    with pytest.raises(ValueError, match="only 2 of 10 values differ from the centre"):
        hill_tail_index([0.0] * 8 + [1.0, 2.0], k=3, center=False)
    with pytest.raises(ValueError, match="1 of 3 values are NaN"):
        hill_tail_index([1.0, 2.0, np.nan])
    assert hill_tail_index([1.0, 1.0, 1.0, 0.5], k=2, center=False) == math.inf


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(estimators, raise_on_error=False)
    assert tried > 0
    assert failures == 0


def test_hill_alpha_is_a_deprecated_alias_of_hill_tail_index() -> None:
    x = np.random.default_rng(5).standard_cauchy(1000)
    assert estimators.hill_alpha is hill_tail_index
    assert estimators.hill_alpha(x) == hill_tail_index(x)
    assert "hill_alpha" not in estimators.__all__
    import tailwise.tails

    assert "hill_tail_index" in tailwise.tails.__all__
    assert not hasattr(tailwise.tails, "hill_alpha")


@pytest.mark.parametrize("values", [[], [1.0], [1.0, np.nan, 2.0, 3.0]])
def test_both_hill_estimators_fail_the_same_way(values: list[float]) -> None:
    # Fewer than 2 usable values (or unusable ones): ValueError naming the function, never NaN.
    with pytest.raises(ValueError, match=r"^hill_tail_index: "):
        hill_tail_index(values)
    with pytest.raises(ValueError, match=r"^hill_alpha: "):
        spectral_hill_alpha(values)
