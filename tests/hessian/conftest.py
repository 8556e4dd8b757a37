"""Fixtures shared by the tests of tailwise.hessian (the dense oracle is tests/_oracles.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from tailwise._threads import single_threaded
from tailwise.models import MLP


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only waits on a shared 2-core machine (50x)."""
    with single_threaded():
        yield


class DenseOperator:
    """A dense symmetric matrix as a SymmetricOperator; counts calls and columns."""

    def __init__(self, matrix: Tensor) -> None:
        self.matrix = matrix
        self.num_params = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.calls = 0
        self.columns = 0

    def matmat(self, vectors: Tensor) -> Tensor:
        assert vectors.dtype == self.dtype and vectors.shape[0] == self.num_params
        self.calls += 1
        self.columns += vectors.shape[1]
        return self.matrix @ vectors


@pytest.fixture
def dense_operator() -> type[DenseOperator]:
    """The class :class:`DenseOperator`: ``dense_operator(matrix)`` wraps a dense matrix."""
    return DenseOperator


@pytest.fixture
def tiny_mlp() -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """A float64 tanh MLP (6 -> 5 -> 3, 53 parameters) and 10 examples in batches 4, 4, 2."""
    torch.manual_seed(0)
    model = MLP(6, [5], 3, activation="tanh").double().eval()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    return model, [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]


@pytest.fixture
def batch_norm_net() -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """A float64 MLP with BatchNorm and Dropout (in train mode) and 12 examples in 2 batches."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)
    ).double()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    return model.train(), [(x[:6], y[:6]), (x[6:], y[6:])]
