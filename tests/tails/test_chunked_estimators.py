"""The estimators read their samples a chunk at a time (issue 13 §3): each chunked piece is
checked here against the whole-array NumPy computation it replaces, exactly where the
arithmetic is the same, and the estimates against the REFERENCES §4 formula on permuted
copies (the oracle the chunking avoids building)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from tailwise.tails import estimators
from tailwise.tails.estimators import (
    MMOForm,
    _block_logs,
    _kth_magnitudes,
    _median,
    _Samples,
    _samples,
    hill_tail_index,
    mmo_alpha,
    mmo_block_sizes,
    real_array,
)
from tailwise.tails.stable import sample_elliptic, sample_sas


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 values: every pass crosses many chunk boundaries."""
    monkeypatch.setattr(estimators, "_CHUNK_VALUES", 7)


def _cases() -> list[NDArray[np.floating]]:
    rng = np.random.default_rng(0)
    return [
        rng.standard_cauchy(1001),  # odd: one exact zero after centring
        rng.standard_cauchy(1000).astype(np.float32),
        np.round(rng.standard_normal(999), 1),  # many ties
        1e-300 * rng.standard_t(2, 500),  # tiny scale: float32 rounding underflows
        1e300 * rng.standard_t(2, 500),  # huge scale: float32 rounding overflows
        np.r_[np.zeros(60), rng.standard_normal(41)],  # mostly zeros
        rng.integers(-3, 4, 800).astype(np.float64),
    ]


@pytest.mark.parametrize("values", _cases())
def test_median_is_numpys_float64_median_exactly(values: NDArray[np.floating]) -> None:
    assert _median(values) == np.median(values.astype(np.float64))
    rows = values[: (values.size // 4) * 4].reshape(-1, 4)
    np.testing.assert_array_equal(_median(rows), np.median(rows.astype(np.float64), axis=0))


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize("values", _cases())
def test_kth_magnitudes_are_exact_order_statistics(values: NDArray[np.floating]) -> None:
    samples = _samples(values, center=True)
    centred = values.astype(np.float64) - _median(values)
    expected = np.sort(np.abs(centred))
    ranks = [0, 1, values.size // 2 - 1, values.size // 2, values.size - 1]
    found = _kth_magnitudes(samples, ranks)
    assert found == {k: float(expected[k]) for k in ranks}


def _block_logs_by_numpy(rows: NDArray[np.float64], m: int, floor: float) -> NDArray[np.float64]:
    n = rows.shape[0] // m
    sums = rows[: n * m].reshape(n, m, *rows.shape[1:]).sum(axis=1)
    magnitudes = np.abs(sums) if sums.ndim == 1 else np.linalg.norm(sums, axis=1)
    return np.log(np.maximum(magnitudes, floor))


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize("shape", [(1000,), (503, 3)])
@pytest.mark.parametrize("permuted", [False, True])
def test_block_logs_of_a_permuted_order_match_a_permuted_copy(
    shape: tuple[int, ...], permuted: bool
) -> None:
    rng = np.random.default_rng(1)
    values = rng.standard_cauchy(shape).astype(np.float32)
    samples = _samples(values, center=True)
    order = rng.permutation(shape[0]).astype(np.int32) if permuted else None
    copy = values.astype(np.float64) - _median(values)
    if order is not None:
        copy = copy[order]
    sizes = [2, 5, 10, 17, 50, 100]  # 17: blocks that straddle chunks of 7 values
    floor = 1e-9
    kept = _block_logs(samples, sizes, floor, order, keep=True)
    sums = _block_logs(samples, sizes, floor, order, keep=False)
    for m in sizes:
        expected = _block_logs_by_numpy(copy, m, floor)
        np.testing.assert_allclose(kept[m], expected, rtol=1e-13, atol=0)
        assert sums[m] == pytest.approx(float(expected.sum()), rel=1e-12)


def _formula(x: NDArray[np.float64], m: int) -> float:
    """REFERENCES §4 mean form on samples (N,) or rows (N, d), written out directly."""
    rows = x if x.ndim == 2 else x[:, None]
    n = rows.shape[0] // m
    log_y = np.log(np.linalg.norm(rows[: n * m].reshape(n, m, -1).sum(axis=1), axis=1)).mean()
    log_x = np.log(np.linalg.norm(rows, axis=1)).mean()
    return float(math.log(m) / (log_y - log_x))


@pytest.mark.parametrize("multivariate", [False, True])
def test_permuted_estimates_match_the_formula_on_permuted_copies(multivariate: bool) -> None:
    # Continuous data of even size: no sample equals the median, so no floor is involved.
    if multivariate:
        x = np.asarray(sample_elliptic(1.4, 3000, 4, seed=2))
        centred = x - np.median(x, axis=0)
    else:
        x = np.asarray(sample_sas(1.4, 6000, seed=2))
        centred = x - np.median(x)
    rng = np.random.default_rng(7)
    sizes = mmo_block_sizes(len(x))
    per_order = []
    for _ in range(3):
        permuted = centred[rng.permutation(len(x))]
        per_order.append(np.median([_formula(permuted, m) for m in sizes]))
    expected = np.median(per_order)
    found = mmo_alpha(x, multivariate=multivariate, permutations=3, seed=7)
    assert found == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("form", ["mean", "order"])
@pytest.mark.parametrize("multivariate", [False, True])
def test_chunk_size_does_not_change_the_estimates(
    monkeypatch: pytest.MonkeyPatch, form: str, multivariate: bool
) -> None:
    x = np.asarray(sample_elliptic(1.6, 2001, 3, seed=3), dtype=np.float32)
    x = x if multivariate else x.reshape(-1)
    options = {"multivariate": multivariate, "form": form, "permutations": 2, "seed": 1}
    reference = mmo_alpha(x, **options)
    hill = hill_tail_index(x, k=40)
    monkeypatch.setattr(estimators, "_CHUNK_VALUES", 11)
    assert mmo_alpha(x, **options) == pytest.approx(reference, rel=1e-12)
    assert hill_tail_index(x, k=40) == pytest.approx(hill, rel=1e-12)


def test_real_array_reads_float32_and_float64_in_place() -> None:
    x32 = np.ones((3, 4), dtype=np.float32)
    assert real_array(x32, "t") is x32
    x64 = np.ones(5)
    assert real_array(x64, "t") is x64
    assert real_array(np.ones(3, dtype=np.float16), "t").dtype == np.float32
    assert real_array(np.arange(3), "t").dtype == np.float64
    transposed = real_array(np.ones((3, 4)).T, "t")
    assert transposed.flags.c_contiguous and transposed.shape == (4, 3)
    with pytest.raises(ValueError, match=r"^t: 2 of 4 values are NaN or infinite$"):
        real_array([1.0, np.nan, np.inf, 2.0], "t")


def test_inputs_are_never_written_to() -> None:
    x = np.asarray(sample_sas(1.5, 4000, seed=4), dtype=np.float32).reshape(1000, 4)
    before = x.copy()
    mmo_alpha(x, permutations=2)
    mmo_alpha(x, multivariate=True, permutations=2)
    hill_tail_index(x)
    np.testing.assert_array_equal(x, before)


def test_samples_rows_are_the_centred_float64_values() -> None:
    values = np.random.default_rng(5).standard_normal((9, 2)).astype(np.float32)
    samples = _Samples(values, np.array([0.5, -0.25]))
    expected = values.astype(np.float64) - np.array([0.5, -0.25])
    np.testing.assert_array_equal(samples.rows(2, 7), expected[2:7])
    out = np.empty((3, 2))
    assert samples.take(np.array([8, 0, 4]), out=out) is out
    np.testing.assert_array_equal(out, expected[[8, 0, 4]])
    assert MMOForm("mean") is MMOForm.MEAN
