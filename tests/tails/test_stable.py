"""Tests of ``tailwise.tails.stable``: the CMS samplers against ``scipy.stats.levy_stable``,
the elliptic construction, backends, seeds and source 003's synthetic layers."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from scipy import stats

from tailwise.tails import stable
from tailwise.tails.stable import (
    sample_elliptic,
    sample_sas,
    sample_skewed_stable,
    synthetic_layer,
)

N = 100_000
PROBABILITIES = np.linspace(0.02, 0.98, 25)


def elliptic_scale(alpha: float) -> float:
    """REFERENCES §4: the mixing scale 2 cos(pi alpha / 4)^(2 / alpha), for index alpha / 2."""
    return 2.0 * math.cos(math.pi * alpha / 4) ** (2.0 / alpha)


def matches_cdf(sample: object, cdf: Callable[[NDArray[np.float64]], NDArray[np.float64]]) -> bool:
    """Does the true CDF at the sample's p-quantiles equal p (within 5 binomial SDs)?

    F(q_p) of an empirical quantile has SD sqrt(p (1 - p) / n); 25 points at 5 SDs keep the
    false-alarm rate below 1e-5 while a 5 % scale error moves F by ~10 SDs (see the control).
    """
    values = np.asarray(sample, dtype=np.float64).reshape(-1)
    quantiles = np.quantile(values, PROBABILITIES)
    tolerance = 5.0 * np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / values.size)
    return bool(np.all(np.abs(cdf(quantiles) - PROBABILITIES) <= tolerance))


def sas_cdf(alpha: float) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    return lambda q: np.asarray(stats.levy_stable.cdf(q, alpha, 0.0))


@pytest.mark.parametrize("alpha", [0.7, 1.0, 1.5, 1.9, 2.0])
def test_sas_matches_scipy_levy_stable(alpha: float) -> None:
    assert matches_cdf(sample_sas(alpha, N, seed=1), sas_cdf(alpha))


@pytest.mark.parametrize("alpha", [0.7, 1.5])
def test_torch_backend_matches_scipy_levy_stable(alpha: float) -> None:
    sample = sample_sas(alpha, N, seed=2, backend="torch")
    assert isinstance(sample, torch.Tensor)
    assert sample.dtype == torch.float64 and sample.device.type == "cpu"
    assert matches_cdf(sample.numpy(), sas_cdf(alpha))


def test_the_cdf_check_has_power() -> None:
    sample = np.asarray(sample_sas(1.5, N, seed=1))
    assert not matches_cdf(1.05 * sample, sas_cdf(1.5))  # 5 % too wide
    assert not matches_cdf(sample_sas(1.6, N, seed=1), sas_cdf(1.5))  # wrong index


def test_special_cases_cauchy_and_gaussian() -> None:
    cauchy = sample_sas(1.0, N, seed=3)
    assert matches_cdf(cauchy, stats.cauchy.cdf)
    gaussian = np.asarray(sample_sas(2.0, N, seed=4))
    assert matches_cdf(gaussian, stats.norm(scale=math.sqrt(2.0)).cdf)  # SaS(2) = N(0, 2)


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_skewed_sampler_matches_scipy_levy_stable(alpha: float) -> None:
    scale = elliptic_scale(2 * alpha)
    sample = np.asarray(sample_skewed_stable(alpha, N, scale=scale, seed=5))
    assert (sample > 0).all()
    assert matches_cdf(sample, lambda q: np.asarray(stats.levy_stable.cdf(q, alpha, 1.0, 0, scale)))
    unit = np.asarray(sample_skewed_stable(alpha, N, seed=6))
    assert matches_cdf(unit, lambda q: np.asarray(stats.levy_stable.cdf(q, alpha, 1.0)))


@pytest.mark.parametrize("alpha", [0.8, 1.5, 2.0])
def test_elliptic_marginals_are_standard_sas(alpha: float) -> None:
    rows = np.asarray(sample_elliptic(alpha, N, 3, seed=7))
    assert rows.shape == (N, 3)
    for j in range(3):
        assert matches_cdf(rows[:, j], sas_cdf(alpha)), f"coordinate {j}"


def test_elliptic_coordinates_share_the_mixing_variable() -> None:
    rows = np.asarray(sample_elliptic(1.2, 20_000, 2, seed=8))
    iid = np.asarray(sample_sas(1.2, (20_000, 2), seed=8))
    dependent = stats.spearmanr(np.abs(rows[:, 0]), np.abs(rows[:, 1])).statistic
    independent = stats.spearmanr(np.abs(iid[:, 0]), np.abs(iid[:, 1])).statistic
    assert dependent > 0.2
    assert abs(independent) < 0.05
    # The ratio of two coordinates of one row is a ratio of Gaussians: standard Cauchy.
    assert matches_cdf(rows[:, 0] / rows[:, 1], stats.cauchy.cdf)


@pytest.mark.parametrize(
    "draw",
    [
        lambda backend, seed: sample_sas(0.8, 50_000, seed=seed, backend=backend),
        lambda backend, seed: sample_sas(1.7, 50_000, seed=seed, backend=backend),
        lambda backend, seed: sample_skewed_stable(0.6, 50_000, seed=seed, backend=backend),
        lambda backend, seed: sample_elliptic(1.4, 25_000, 2, seed=seed, backend=backend),
    ],
    ids=["sas-0.8", "sas-1.7", "skewed-0.6", "elliptic-1.4"],
)
def test_backends_agree_in_distribution(draw: Callable[[str, int], object]) -> None:
    from_numpy = np.asarray(draw("numpy", 9)).reshape(-1)
    tensor = draw("torch", 9)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64
    from_torch = tensor.numpy().reshape(-1)
    assert stats.ks_2samp(from_numpy, from_torch).pvalue > 1e-3
    assert not np.array_equal(from_numpy, from_torch)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_seeds_reproduce(backend: str) -> None:
    def draws(seed: int) -> list[NDArray[np.float64]]:
        samples = [
            sample_sas(1.5, 100, seed=seed, backend=backend),
            sample_skewed_stable(0.5, 100, seed=seed, backend=backend),
            sample_elliptic(1.5, 10, 3, seed=seed, backend=backend),
            synthetic_layer("elliptic_columns", 1.5, (4, 5), seed=seed, backend=backend),
        ]
        return [np.asarray(s) for s in samples]

    for first, second in zip(draws(0), draws(0), strict=True):
        np.testing.assert_array_equal(first, second)
    for first, other in zip(draws(0), draws(1), strict=True):
        assert not np.array_equal(first, other)


def test_generators_are_accepted_and_advance() -> None:
    rng = np.random.default_rng(0)
    first, second = sample_sas(1.5, 10, seed=rng), sample_sas(1.5, 10, seed=rng)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, sample_sas(1.5, 10, seed=np.random.default_rng(0)))
    gen = torch.Generator().manual_seed(0)
    tensor = sample_sas(1.5, 10, seed=gen, backend="torch")
    assert isinstance(tensor, torch.Tensor)
    assert torch.equal(tensor, torch.as_tensor(sample_sas(1.5, 10, seed=0, backend="torch")))
    with pytest.raises(TypeError, match=r"torch\.Generator needs backend='torch'"):
        sample_sas(1.5, 10, seed=torch.Generator())
    with pytest.raises(TypeError, match="numpy Generator needs backend='numpy'"):
        sample_sas(1.5, 10, seed=np.random.default_rng(), backend="torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda() -> None:
    sample = sample_sas(1.5, N, seed=0, backend="torch", device="cuda")
    assert isinstance(sample, torch.Tensor) and sample.device.type == "cuda"
    assert matches_cdf(sample.cpu().numpy(), sas_cdf(1.5))
    rows = sample_elliptic(1.5, 1000, 3, seed=0, backend="torch", device="cuda")
    assert isinstance(rows, torch.Tensor) and rows.device.type == "cuda"


def test_synthetic_layers_have_the_structures_of_003() -> None:
    shape = (400, 300)
    iid = np.asarray(synthetic_layer("iid", 1.3, shape, seed=10))
    columns = np.asarray(synthetic_layer("elliptic_columns", 1.3, shape, seed=10))
    matrix = np.asarray(synthetic_layer("elliptic_matrix", 1.3, shape, seed=10))
    for layer in (iid, columns, matrix):
        assert layer.shape == shape and layer.dtype == np.float64
    # W3 is one scalar times a Gaussian matrix; W2 is Gaussian within each column (one scale
    # per column); W1 has heavy tails within every column.
    assert matches_cdf(matrix / np.sqrt((matrix**2).mean() / 2.0), stats.norm(scale=2**0.5).cdf)
    column_kurtosis = stats.kurtosis(columns, axis=0, fisher=False)
    assert np.median(column_kurtosis) == pytest.approx(3.0, abs=0.3)
    assert np.median(stats.kurtosis(iid, axis=0, fisher=False)) > 20.0
    # Marginally every structure is SaS(1.3) (W2 pooled over many short columns, so that the
    # pooled entries are nearly independent draws).
    assert matches_cdf(iid, sas_cdf(1.3))
    assert matches_cdf(synthetic_layer("elliptic_columns", 1.3, (2, 50_000), seed=11), sas_cdf(1.3))


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 2\], got 2.5"):
        sample_sas(2.5, 10)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 2\], got 0"):
        sample_elliptic(0, 10, 2)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.0"):
        sample_skewed_stable(1.0, 10)
    with pytest.raises(ValueError, match="scale must be a positive"):
        sample_skewed_stable(0.5, 10, scale=-1.0)
    with pytest.raises(ValueError, match="backend must be one of 'numpy', 'torch'"):
        sample_sas(1.5, 10, backend="jax")
    with pytest.raises(ValueError, match="kind must be one of 'iid', 'elliptic_columns'"):
        synthetic_layer("columns", 1.5, (3, 3))
    with pytest.raises(ValueError, match=r"shape must be \(rows, cols\)"):
        synthetic_layer("iid", 1.5, (3, 3, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must not be negative"):
        sample_sas(1.5, -1)
    with pytest.raises(ValueError, match="device is only used by backend='torch'"):
        sample_sas(1.5, 3, device="cpu")


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(stable, raise_on_error=False)
    assert tried > 0
    assert failures == 0
