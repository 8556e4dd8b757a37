"""top_eigenvalues (tailwise.hessian.eigen) against torch.linalg.eigvalsh of dense Hessians."""

from __future__ import annotations

import doctest
import warnings
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise.data import load_digits_dataset
from tailwise.hessian import eigen as eigen_module
from tailwise.hessian.eigen import EigenResult, top_eigenvalues
from tailwise.hessian.operator import HessianOperator
from tailwise.models import MLP

F64 = torch.float64
cross_entropy = nn.functional.cross_entropy


class Problem:
    """A float64 model, its data in two batches, its operator and dense Hessian spectrum."""

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> None:
        self.model, self.inputs, self.targets = model, inputs, targets
        half = inputs.shape[0] // 2 + 3  # unequal batches
        self.batches = [(inputs[:half], targets[:half]), (inputs[half:], targets[half:])]
        # Double backward: less fixed cost per product than forward-over-reverse on tiny models.
        self.operator = HessianOperator(
            model, cross_entropy, self.batches, hvp_method="double-backward"
        )
        self.hessian = dense_hessian(model, cross_entropy, inputs, targets, self.operator.names)
        self.spectrum: NDArray[np.float64] = torch.linalg.eigvalsh(self.hessian).numpy()

    def expected(self, which: str, k: int) -> NDArray[np.float64]:
        """The k eigenvalues top_eigenvalues should return, in its order."""
        ascending = self.spectrum
        if which == "LA":
            return ascending[::-1][:k]
        if which == "SA":
            return ascending[:k]
        return ascending[np.argsort(-np.abs(ascending), kind="stable")][:k]

    def residuals(self, result: EigenResult) -> NDArray[np.float64]:
        """||H v_j - lambda_j v_j|| per pair."""
        vectors = result.eigenvectors
        values = torch.from_numpy(result.eigenvalues.copy())
        norms: NDArray[np.float64] = (self.hessian @ vectors - vectors * values).norm(dim=0).numpy()
        return norms


@pytest.fixture(scope="module")
def random_mlp() -> Problem:
    """At initialization: eigenvalues of both signs, the largest in magnitude negative."""
    torch.manual_seed(0)
    model = MLP(6, [8], 4, activation="tanh").double()
    inputs = 3 * torch.randn(40, 6, dtype=F64)
    return Problem(model, inputs, torch.randint(0, 4, (40,)))


@pytest.fixture(scope="module")
def trained_mlp() -> Problem:
    """A digits MLP (610 parameters) trained 300 Adam steps: outliers above a bulk."""
    dataset = load_digits_dataset(split="train", flatten=True, dtype=F64)
    inputs, targets = dataset.tensors[0][:200], dataset.tensors[1][:200]
    torch.manual_seed(0)
    model = MLP(64, [8], 10, activation="tanh").double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return Problem(model, inputs, targets)


def assert_matches(result: EigenResult, expected: NDArray[np.float64], rtol: float) -> None:
    assert result.eigenvalues.shape == expected.shape
    assert result.eigenvalues.dtype == np.float64
    error = np.abs(result.eigenvalues - expected) / np.abs(expected)
    assert error.max() <= rtol, f"relative errors {error} (got {result.eigenvalues})"


# --- accuracy against the dense spectrum (004 §5.2) ----------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_matches_the_dense_spectrum(random_mlp: Problem, which: str) -> None:
    result = top_eigenvalues(random_mlp.operator, k=10, method="lanczos", which=which, tol=1e-8)
    assert result.converged and result.method == "lanczos"
    assert_matches(result, random_mlp.expected(which, 10), rtol=1e-4)
    assert result.eigenvectors.shape == (random_mlp.operator.num_params, 10)
    assert result.eigenvectors.dtype == F64
    assert np.all(random_mlp.residuals(result) <= 1e-6 * np.abs(random_mlp.spectrum).max())
    gram = result.eigenvectors.T @ result.eigenvectors
    assert torch.allclose(gram, torch.eye(10, dtype=F64), atol=1e-8)
    assert result.num_matvecs == result.iterations > 10


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_block_matches_the_dense_spectrum(random_mlp: Problem, which: str, block_size: int) -> None:
    # Two batches of unequal size (23 and 17 examples), float64, both signs in the spectrum.
    result = top_eigenvalues(random_mlp.operator, k=6, which=which, tol=1e-9, block_size=block_size)
    assert result.converged and result.method == "block"
    assert_matches(result, random_mlp.expected(which, 6), rtol=1e-7)
    assert result.eigenvectors.shape == (random_mlp.operator.num_params, 6)
    gram = result.eigenvectors.T @ result.eigenvectors
    assert torch.allclose(gram, torch.eye(6, dtype=F64), atol=1e-8)
    assert np.all(random_mlp.residuals(result) <= 1e-8 * np.abs(random_mlp.spectrum).max())
    assert result.num_matvecs == block_size * result.iterations


def test_block_default_tolerance_on_a_trained_model(trained_mlp: Problem) -> None:
    # The default rule ||H v - lambda v|| <= 1e-3 |lambda| on outliers above a bulk: the
    # eigenvalue error is of order (1e-3)^2 / relative gap, far below 1e-3.
    for k in (1, 5):
        result = top_eigenvalues(trained_mlp.operator, k=k)
        assert result.converged and result.method == "block"
        assert_matches(result, trained_mlp.expected("LA", k), rtol=1e-5)
        residuals = trained_mlp.residuals(result)
        assert np.all(residuals <= 1e-3 * np.abs(result.eigenvalues) * (1 + 1e-6))


def test_block_and_arpack_agree_on_the_model_api(trained_mlp: Problem) -> None:
    block = top_eigenvalues(
        trained_mlp.model, cross_entropy, trained_mlp.batches, k=4, tol=1e-10, progress=False
    )
    arpack = top_eigenvalues(
        trained_mlp.model,
        cross_entropy,
        trained_mlp.batches,
        k=4,
        method="lanczos",
        tol=1e-10,
        progress=False,
    )
    assert (block.method, arpack.method) == ("block", "lanczos")
    np.testing.assert_allclose(block.eigenvalues, arpack.eigenvalues, rtol=1e-9)
    ncv = top_eigenvalues(trained_mlp.operator, k=2, ncv=12)  # an ARPACK setting: ARPACK
    assert ncv.method == "lanczos"


def test_orders_follow_which(random_mlp: Problem) -> None:
    la = top_eigenvalues(random_mlp.operator, k=4, which="LA").eigenvalues
    sa = top_eigenvalues(random_mlp.operator, k=4, which="SA").eigenvalues
    lm = top_eigenvalues(random_mlp.operator, k=4, which="LM").eigenvalues
    assert np.all(np.diff(la) < 0) and np.all(np.diff(sa) > 0)
    assert np.all(np.diff(np.abs(lm)) < 0)
    assert sa[0] < 0 < la[0] and lm[0] < 0  # this Hessian's largest magnitude is negative


def test_power_iteration_matches_the_dense_spectrum(trained_mlp: Problem) -> None:
    result = top_eigenvalues(trained_mlp.operator, k=5, method="power", tol=1e-10)
    assert result.converged and result.method == "power"
    assert_matches(result, trained_mlp.expected("LM", 5), rtol=1e-4)
    assert result.num_matvecs == 5 * result.iterations
    assert np.all(trained_mlp.residuals(result) <= 1e-3 * np.abs(trained_mlp.spectrum).max())


def test_power_iteration_with_004s_tolerance(trained_mlp: Problem) -> None:
    # 004's stopping rule, sum (Q - Q_prev)^2 < 1e-3, with the Rayleigh-Ritz read-out.
    result = top_eigenvalues(trained_mlp.operator, k=3, method="power")
    assert result.converged
    assert_matches(result, trained_mlp.expected("LM", 3), rtol=1e-2)


def test_power_iteration_handles_a_negative_top_eigenvalue(random_mlp: Problem) -> None:
    # The column of a negative eigenvalue flips sign at every QR: without aligning signs the
    # change sum (Q - Q_prev)^2 would stay near 4 and the iteration would never stop.
    result = top_eigenvalues(random_mlp.operator, k=1, method="power", tol=1e-12)
    assert result.converged and result.iterations < 200
    assert result.eigenvalues[0] < 0
    assert_matches(result, random_mlp.expected("LM", 1), rtol=1e-6)


def test_deflation_matches_the_dense_spectrum(trained_mlp: Problem) -> None:
    result = top_eigenvalues(trained_mlp.operator, k=5, method="deflation", tol=1e-9, max_iter=500)
    assert result.converged and result.method == "deflation"
    assert_matches(result, trained_mlp.expected("LM", 5), rtol=1e-4)
    assert result.num_matvecs == result.iterations
    assert np.all(trained_mlp.residuals(result) <= 1e-3 * np.abs(trained_mlp.spectrum).max())


def test_lanczos_on_the_trained_model_with_the_model_api(trained_mlp: Problem) -> None:
    result = top_eigenvalues(
        trained_mlp.model, cross_entropy, trained_mlp.batches, k=10, hvp_method="double-backward"
    )
    assert_matches(result, trained_mlp.expected("LA", 10), rtol=1e-4)


def test_parameter_subset_gives_the_blocks_eigenvalues(trained_mlp: Problem) -> None:
    names = ["layers.1.weight", "layers.1.bias"]  # the head: the last 90 parameters
    result = top_eigenvalues(
        trained_mlp.model, cross_entropy, trained_mlp.batches, k=3, params=names
    )
    block = trained_mlp.hessian[-90:, -90:]
    expected = torch.linalg.eigvalsh(block).numpy()[::-1][:3]
    assert_matches(result, expected, rtol=1e-4)
    assert result.eigenvectors.shape == (90, 3)


def test_float32_model_agrees_with_float64(trained_mlp: Problem) -> None:
    model32 = MLP(64, [8], 10, activation="tanh")
    model32.load_state_dict(trained_mlp.model.state_dict())
    batches32 = [(x.float(), y) for x, y in trained_mlp.batches]
    result = top_eigenvalues(model32, cross_entropy, batches32, k=3)
    assert_matches(result, trained_mlp.expected("LA", 3), rtol=1e-4)


# --- API ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["block", "lanczos", "power", "deflation"])
def test_seeds_reproduce(random_mlp: Problem, method: str) -> None:
    which = "LM"
    options = {"k": 2, "method": method, "which": which, "max_iter": 30}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the power methods may not converge
        first = top_eigenvalues(random_mlp.operator, seed=3, **options)  # type: ignore[arg-type]
        second = top_eigenvalues(random_mlp.operator, seed=3, **options)  # type: ignore[arg-type]
        other = top_eigenvalues(random_mlp.operator, seed=4, **options)  # type: ignore[arg-type]
    assert np.array_equal(first.eigenvalues, second.eigenvalues)
    assert torch.equal(first.eigenvectors, second.eigenvectors)
    assert not torch.equal(first.eigenvectors.abs(), other.eigenvectors.abs())


def test_operator_and_model_calls_agree(random_mlp: Problem) -> None:
    from_operator = top_eigenvalues(random_mlp.operator, k=3)
    from_model = top_eigenvalues(random_mlp.model, cross_entropy, random_mlp.batches, k=3)
    np.testing.assert_allclose(from_operator.eigenvalues, from_model.eigenvalues, rtol=1e-10)
    assert from_operator.method == "block"  # the default solver


def test_default_is_the_largest_algebraic_eigenvalue(random_mlp: Problem) -> None:
    result = top_eigenvalues(random_mlp.model, cross_entropy, random_mlp.batches)
    assert_matches(result, random_mlp.expected("LA", 1), rtol=1e-6)


def test_result_is_frozen(random_mlp: Problem) -> None:
    result = top_eigenvalues(random_mlp.operator, k=2)
    with pytest.raises(FrozenInstanceError):
        result.converged = False  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.eigenvalues[0] = 0.0


def test_running_out_of_iterations_is_reported(trained_mlp: Problem) -> None:
    for method in ("power", "deflation"):
        with pytest.warns(RuntimeWarning, match="did not converge"):
            result = top_eigenvalues(
                trained_mlp.operator, k=3, method=method, tol=1e-14, max_iter=3
            )
        assert not result.converged
        assert result.eigenvalues.shape == (3,) and np.all(np.isfinite(result.eigenvalues))
        assert result.num_matvecs == 9
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = top_eigenvalues(
            trained_mlp.operator, k=5, method="lanczos", which="SA", tol=1e-14, max_iter=1
        )
    assert not result.converged and result.eigenvalues.shape == (5,)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = top_eigenvalues(trained_mlp.operator, k=5, tol=1e-14, max_iter=4)
    assert not result.converged and result.num_matvecs == 8 and result.iterations == 4
    assert np.all(np.isfinite(result.eigenvalues))  # 8 columns: 5 Ritz pairs
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = top_eigenvalues(trained_mlp.operator, k=5, tol=1e-14, max_iter=1)
    assert result.eigenvalues.shape == (5,) and np.isnan(result.eigenvalues).sum() == 3


def test_bad_arguments_raise_clear_errors(random_mlp: Problem) -> None:
    op = random_mlp.operator
    n = op.num_params
    with pytest.raises(ValueError, match="which must be 'LM'"):
        top_eigenvalues(op, k=2, method="power", which="LA")
    with pytest.raises(ValueError, match="method must be one of"):
        top_eigenvalues(op, method="arnoldi")
    with pytest.raises(ValueError, match="which must be one of"):
        top_eigenvalues(op, which="BE")
    with pytest.raises(ValueError, match=rf"k must be in \[1, {n - 1}\]"):
        top_eigenvalues(op, k=n)
    with pytest.raises(ValueError, match="k must be in"):
        top_eigenvalues(op, k=0, method="power")
    with pytest.raises(ValueError, match="must not be given with a HessianOperator"):
        top_eigenvalues(op, cross_entropy, k=2)
    with pytest.raises(ValueError, match="needs loss_fn and data"):
        top_eigenvalues(random_mlp.model, k=2)
    with pytest.raises(ValueError, match="ncv is a Lanczos setting"):
        top_eigenvalues(op, k=2, method="power", ncv=10)
    with pytest.raises(ValueError, match="ncv is a Lanczos setting"):
        top_eigenvalues(op, k=2, method="block", ncv=10)
    with pytest.raises(ValueError, match="block_size is a setting of method='block'"):
        top_eigenvalues(op, k=2, method="lanczos", block_size=2)
    with pytest.raises(ValueError, match=rf"block_size must be in \[1, {n - 1}\]"):
        top_eigenvalues(op, k=2, block_size=0)
    with pytest.raises(ValueError, match="tol must be"):
        top_eigenvalues(op, tol=0.0)
    with pytest.raises(TypeError, match=r"nn\.Module or a HessianOperator"):
        top_eigenvalues("model", cross_entropy, random_mlp.batches)  # type: ignore[arg-type]


def test_memory_is_linear_in_the_number_of_parameters() -> None:
    # n = 195,426: an (n, n) float64 matrix would need 306 GB.
    dataset = load_digits_dataset(split="train", flatten=True)
    torch.manual_seed(0)
    model = MLP(64, [600, 256], 10).eval()
    data = (dataset.tensors[0][:32], dataset.tensors[1][:32])
    result = top_eigenvalues(model, cross_entropy, data, tol=1e-2, hvp_method="double-backward")
    assert result.eigenvectors.shape == (195_426, 1)
    assert result.converged and result.eigenvalues[0] > 0


def test_block_memory_beyond_the_machine_is_refused(
    random_mlp: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tailwise.hessian import _budget

    monkeypatch.setattr(_budget, "memory_limit", lambda device: 32 * 1024)  # 44 vectors of 92
    before = random_mlp.operator.num_matvecs
    with pytest.raises(ValueError, match=r"block Lanczos basis of 48 vectors.*more than"):
        top_eigenvalues(random_mlp.operator, k=20)  # 48 + 4 x 2 + 20 vectors
    assert random_mlp.operator.num_matvecs == before
    assert top_eigenvalues(random_mlp.operator, k=2).converged  # 20 + 8 + 2 vectors fit


def test_doctests() -> None:
    result = doctest.testmod(eigen_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
