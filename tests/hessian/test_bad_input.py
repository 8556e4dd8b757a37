"""Issue 9 §4: bad data and budgets give one clear UsageError from the library API.

Random forward passes are refused on every run, data that does not fit the model or holds
NaN/Inf is named as such (not a raw torch error), and sizes that cannot be given or held are
refused before any pass over the data or any allocation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy, mse_loss

from tailwise._errors import UsageError
from tailwise.hessian import (
    HessianOperator,
    _budget,
    hutchinson_trace,
    hutchpp_trace,
    spectral_density,
    summarize,
    top_eigenvalues,
)
from tailwise.models import MLP

Batches = list[tuple[Tensor, Tensor]]


class OneUnitDropout(nn.Module):
    """Functional dropout on a single hidden unit: two passes agree half the time."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 1), nn.Linear(1, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(nn.functional.dropout(self.first(x), 0.5, training=True))


class Counting(nn.Module):
    """Counts forward passes of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out: Tensor = self.inner(x)
        return out


def mlp_and_data() -> tuple[nn.Module, Batches]:
    torch.manual_seed(0)
    model = MLP(6, [5], 3, activation="tanh").double().eval()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    return model, [(x[:4], y[:4]), (x[4:], y[4:])]


@pytest.mark.parametrize("seed", range(16))
def test_functional_dropout_is_refused_on_every_run(seed: int) -> None:
    """Before: two losses compared, equal whenever both masks kept (or dropped) the unit."""
    torch.manual_seed(seed)
    model = OneUnitDropout().double()
    data = (torch.randn(1, 4, dtype=torch.float64), torch.tensor([1]))
    with pytest.raises(UsageError, match="draws random numbers in its forward pass"):
        HessianOperator(model, cross_entropy, data)
    with pytest.raises(UsageError, match="draws random numbers"):
        top_eigenvalues(model, cross_entropy, data, k=1, progress=False)
    with pytest.raises(UsageError, match="draws random numbers"):
        summarize(model, cross_entropy, data, top_k=1, progress=False)
    HessianOperator(model, cross_entropy, data, check_deterministic=False)  # on purpose: allowed


def test_a_shuffling_loader_is_not_mistaken_for_a_random_forward() -> None:
    """The loader draws from the default generator between batches, not during a forward."""
    model, batches = mlp_and_data()
    dataset = torch.utils.data.TensorDataset(*(torch.cat(t) for t in zip(*batches, strict=True)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True)
    assert HessianOperator(model, cross_entropy, loader).num_params == 53


def nan_inputs(batches: Batches) -> Batches:
    x, y = batches[1]
    x = x.clone()
    x[2, 3] = float("nan")
    return [batches[0], (x, y)]


def wrong_width(batches: Batches) -> Batches:
    return [(x[:, :5], y) for x, y in batches]


def short_targets(batches: Batches) -> Batches:
    return [(x, y[:-1]) for x, y in batches]


def bad_classes(batches: Batches) -> Batches:
    return [(x, y + 7) for x, y in batches]


BAD_DATA: dict[str, tuple[Callable[[Batches], Batches], str]] = {
    "nan inputs": (nan_inputs, r"batch 1: the inputs hold 1 NaN/Inf value"),
    "wrong width": (wrong_width, r"failed on a batch of inputs of shape \(4, 5\).*fit the model"),
    "short targets": (
        short_targets,
        r"batch 0: inputs of shape \(4, 6\) and targets .* \(4 vs 3\)",
    ),
    "bad classes": (bad_classes, r"failed on a batch .*does the data fit the model"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("check", [True, False])
def test_data_that_does_not_fit_is_a_usage_error(case: str, check: bool) -> None:
    model, batches = mlp_and_data()
    make, message = BAD_DATA[case]
    data = make(batches)
    if check:
        with pytest.raises(UsageError, match=message):
            HessianOperator(model, cross_entropy, data)
        with pytest.raises(UsageError, match=message):
            summarize(model, cross_entropy, data, top_k=1, progress=False)
    else:  # no pass at construction: the first product, loss or gradient finds it
        for call in ("matvec", "loss", "gradient", "eigen"):
            op = HessianOperator(model, cross_entropy, data, check_deterministic=False)
            with pytest.raises(UsageError, match=message):
                if call == "matvec":
                    op.matvec(torch.ones(op.num_params, dtype=torch.float64))
                elif call == "loss":
                    op.loss()
                elif call == "gradient":
                    op.gradient()
                else:
                    top_eigenvalues(op, k=1, progress=False)


def test_non_finite_targets_and_parameters_are_usage_errors() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    y[0, 1] = float("inf")
    with pytest.raises(UsageError, match="batch 0: the targets hold 1 NaN/Inf"):
        HessianOperator(model, mse_loss, (x, y))
    y[0, 1] = 0.0
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(UsageError, match="the loss over the data is nan, not finite"):
        HessianOperator(model, mse_loss, (x, y))


def test_errors_after_the_data_was_validated_are_not_relabelled() -> None:
    """Once one pass succeeded, a failing forward is a bug, not bad data: raised as is."""
    model, batches = mlp_and_data()
    op = HessianOperator(model, cross_entropy, batches)

    def broken(output: Tensor, target: Tensor) -> Tensor:
        raise RuntimeError("boom")

    op._loss_fn = broken
    with pytest.raises(RuntimeError, match="boom"):
        op.loss()


def test_top_k_beyond_the_parameters_is_refused_before_any_pass() -> None:
    """Issue: summarize(top_k=10**9) tried to allocate 294 GiB (k clipped to n - 1)."""
    model, batches = mlp_and_data()
    counted = Counting(model)
    with pytest.raises(UsageError, match=r"top_k=1,000,000,000 is more than the 52 eigenvalues"):
        summarize(counted, cross_entropy, batches, top_k=10**9, progress=False)
    assert counted.calls == 0
    op = HessianOperator(model, cross_entropy, batches)
    before = op.num_matvecs
    with pytest.raises(UsageError, match=r"k must be in \[1, 52\], got 1000000000: the n=53"):
        top_eigenvalues(op, k=10**9, progress=False)
    with pytest.raises(UsageError, match=r"k must be in \[1, 53\], got 54"):
        top_eigenvalues(op, k=54, method="power", progress=False)
    assert op.num_matvecs == before


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """A machine of 16 KiB: blocks of more than ~38 vectors of 53 parameters do not fit."""
    limit = 16 * 1024
    monkeypatch.setattr(_budget, "memory_limit", lambda device: limit)
    return limit


def test_budgets_beyond_memory_are_refused_before_any_work(small_memory: int) -> None:
    model, batches = mlp_and_data()
    counted = Counting(model)
    for options, message in [
        ({"top_k": 40, "solver": "power"}, r"power iteration on a block of k=40 .* needs"),
        ({"top_k": 1, "trace": True, "trace_matvecs": 10**6}, r"num_matvecs=1,000,000"),
        ({"top_k": 1, "density": True, "density_runs": 1000}, r"num_runs=1,000 vectors of n=53"),
    ]:
        with pytest.raises(UsageError, match=message + r".*more than this machine's memory"):
            summarize(counted, cross_entropy, batches, progress=False, **options)  # type: ignore[arg-type]
    assert counted.calls == 0

    op = HessianOperator(model, cross_entropy, batches)
    before = op.num_matvecs
    with pytest.raises(UsageError, match=r"Lanczos basis of ncv=50 vectors"):
        top_eigenvalues(op, k=40, ncv=50, progress=False)
    with pytest.raises(UsageError, match=r"hutchpp_trace: num_matvecs=3,000"):
        hutchpp_trace(op, 3000, progress=False)
    with pytest.raises(UsageError, match=r"hutchinson_trace: num_samples=1,000,000"):
        hutchinson_trace(op, 10**6, block_size=10**6, progress=False)
    with pytest.raises(UsageError, match=r"spectral_density: the Lanczos basis"):
        spectral_density(op, num_iters=53, num_runs=100, progress=False)
    assert op.num_matvecs == before
    # What fits still runs.
    assert hutchpp_trace(op, 9, progress=False).num_matvecs == 9
