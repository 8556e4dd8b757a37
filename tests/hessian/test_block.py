"""block_lanczos (tailwise.hessian.block) against torch.linalg.eigh of dense symmetric matrices."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from torch import Tensor

from tailwise._errors import UsageError
from tailwise.hessian import block as block_module
from tailwise.hessian.block import BlockLanczosResult, block_lanczos, default_basis_size

F64 = torch.float64


def with_spectrum(eigenvalues: list[float] | NDArray[np.float64], seed: int = 0) -> Tensor:
    """Q diag(eigenvalues) Q^T for a random orthogonal Q (float64)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=F64))
    return q @ torch.diag(torch.as_tensor(eigenvalues, dtype=F64)) @ q.T


def start_block(n: int, b: int, seed: int = 1) -> Tensor:
    return torch.randn(n, b, generator=torch.Generator().manual_seed(seed), dtype=F64)


def expected(matrix: Tensor, which: str, k: int) -> NDArray[np.float64]:
    ascending = torch.linalg.eigvalsh(matrix).numpy()
    if which == "LA":
        return ascending[::-1][:k]
    if which == "SA":
        return ascending[:k]
    return ascending[np.argsort(-np.abs(ascending), kind="stable")][:k]


def check_pairs(matrix: Tensor, found: BlockLanczosResult, tol: float) -> None:
    """Unit, orthogonal vectors; reported residuals are the true ones; the rule holds."""
    vectors, values = found.vectors, torch.from_numpy(found.values.copy())
    gram = vectors.T @ vectors
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=F64), atol=1e-10)
    true = torch.linalg.vector_norm(matrix @ vectors - vectors * values, dim=0).numpy()
    scale = float(torch.linalg.matrix_norm(matrix, ord=2))
    np.testing.assert_allclose(found.residuals, true, atol=1e-10 * scale)
    assert np.all(true <= tol * np.abs(found.values) + 1e-10 * scale)


# --- against the dense spectrum -----------------------------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("width", [1, 2, 3])
def test_extreme_eigenpairs_match_the_dense_spectrum(which: str, width: int) -> None:
    # Both signs, the largest magnitude negative: LA, SA and LM all differ.
    values = np.concatenate([np.linspace(-9.0, -3.0, 7), np.linspace(0.1, 6.0, 73)])
    matrix = with_spectrum(values)
    calls: list[int] = []

    def matmat(v: Tensor) -> Tensor:
        calls.append(v.shape[1])
        return matrix @ v

    found = block_lanczos(matmat, start_block(80, width), k=4, which=which, tol=1e-9)
    assert found.converged
    np.testing.assert_allclose(found.values, expected(matrix, which, 4), rtol=1e-8)
    check_pairs(matrix, found, tol=1e-9)
    assert found.iterations == len(calls) and found.num_products == sum(calls)
    assert set(calls) == {width}


def test_restarts_keep_converging_with_a_small_basis() -> None:
    # Top eigenvalues 1% apart: many steps, so a basis of k + 2b = 7 columns restarts often.
    values = np.concatenate([[10.0, 9.9, 9.8], np.linspace(0.0, 9.0, 197)])
    matrix = with_spectrum(values, seed=3)
    found = block_lanczos(
        lambda v: matrix @ v, start_block(200, 2), k=3, tol=1e-10, max_iter=2000, max_basis=7
    )
    assert found.converged and found.iterations > 7 // 2
    np.testing.assert_allclose(found.values, [10.0, 9.9, 9.8], rtol=1e-9)
    check_pairs(matrix, found, tol=1e-10)


def test_a_block_resolves_a_double_eigenvalue() -> None:
    # In exact arithmetic a single start vector sees one vector of each eigenspace; a block of
    # two sees both copies of a double eigenvalue.
    values = np.concatenate([[5.0, 5.0, 4.0], np.linspace(0.0, 3.0, 57)])
    matrix = with_spectrum(values, seed=4)
    found = block_lanczos(lambda v: matrix @ v, start_block(60, 2), k=3, tol=1e-10)
    assert found.converged
    np.testing.assert_allclose(found.values, [5.0, 5.0, 4.0], rtol=1e-9)
    check_pairs(matrix, found, tol=1e-10)


def test_an_invariant_subspace_is_extended_with_fresh_directions() -> None:
    # Three distinct eigenvalues: the Krylov space of a 2-column block is invariant after 3
    # blocks (6 dimensions), fewer than the k = 8 pairs asked for: the breakdown adds random
    # directions and the pairs found there are eigenpairs too. (Which copies of a multiple
    # eigenvalue they find is up to the random directions: an eigenvalue whose multiplicity
    # exceeds the block size can be missed, as by every Krylov method.)
    values = np.array([3.0] * 4 + [2.0] * 10 + [1.0] * 16)
    matrix = with_spectrum(values, seed=5)
    found = block_lanczos(lambda v: matrix @ v, start_block(30, 2), k=8, tol=1e-10)
    assert found.converged and found.num_products > 6
    distance = np.abs(found.values[:, None] - np.array([1.0, 2.0, 3.0])[None]).min(axis=1)
    assert np.all(distance <= 1e-9) and found.values[0] == pytest.approx(3.0)
    check_pairs(matrix, found, tol=1e-10)


def test_a_basis_spanning_everything_gives_the_exact_spectrum() -> None:
    matrix = with_spectrum([4.0, -2.0, 1.0, 0.5, 0.0, 3.0], seed=6)
    found = block_lanczos(lambda v: matrix @ v, start_block(6, 2), k=6, which="LA", tol=1e-14)
    assert found.converged and found.num_products == 6
    np.testing.assert_allclose(found.values, [4.0, 3.0, 1.0, 0.5, 0.0, -2.0], atol=1e-12)


def test_running_out_of_iterations_leaves_the_last_ritz_pairs() -> None:
    matrix = with_spectrum(np.linspace(1.0, 2.0, 50), seed=7)
    found = block_lanczos(lambda v: matrix @ v, start_block(50, 2), k=3, tol=1e-14, max_iter=3)
    assert not found.converged and found.iterations == 3
    assert np.all(np.isfinite(found.values)) and np.all(found.values <= 2.0 + 1e-12)
    short = block_lanczos(lambda v: matrix @ v, start_block(50, 1), k=3, tol=1e-14, max_iter=2)
    assert not short.converged  # two columns for three pairs: the third is NaN
    assert np.isnan(short.values[2]) and np.isinf(short.residuals[2])
    assert short.vectors.shape == (50, 3) and torch.isnan(short.vectors[:, 2]).all()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(8, 40),
    k=st.integers(1, 4),
    width=st.integers(1, 3),
    which=st.sampled_from(["LA", "SA", "LM"]),
    seed=st.integers(0, 2**16),
)
def test_random_symmetric_matrices(n: int, k: int, width: int, which: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=F64)
    matrix = (a + a.T) / 2
    found = block_lanczos(
        lambda v: matrix @ v, start_block(n, width, seed), k=k, which=which, tol=1e-10
    )
    assert found.converged
    scale = float(torch.linalg.matrix_norm(matrix, ord=2))
    np.testing.assert_allclose(found.values, expected(matrix, which, k), atol=1e-8 * scale)


# --- API ----------------------------------------------------------------------------------


def test_bad_arguments_raise_usage_errors() -> None:
    matrix = with_spectrum(np.linspace(1.0, 2.0, 10))

    def matmat(v: Tensor) -> Tensor:
        return matrix @ v

    start = start_block(10, 2)
    for kwargs, message in [
        ({"k": 0}, r"k must be in \[1, 10\]"),
        ({"k": 11}, r"k must be in \[1, 10\]"),
        ({"k": 2, "which": "BE"}, "which must be one of"),
        ({"k": 2, "tol": 0.0}, "tol must be > 0"),
        ({"k": 2, "max_iter": 0}, "max_iter must be >= 1"),
        ({"k": 3, "max_basis": 6}, r"max_basis must be at least k \+ 2 b = 7"),
    ]:
        with pytest.raises(UsageError, match=message):
            block_lanczos(matmat, start, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"start must have shape \(n, b\)"):
        block_lanczos(matmat, start[:, 0], k=1)
    with pytest.raises(UsageError, match="matmat returned shape"):
        block_lanczos(lambda v: matrix @ v[:, :1], start, k=1)


def test_default_basis_size() -> None:
    assert default_basis_size(10**6, 1, 1) == 20
    assert default_basis_size(10**6, 10, 4) == 36
    assert default_basis_size(12, 5, 2) == 12


def test_doctests() -> None:
    result = doctest.testmod(block_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
