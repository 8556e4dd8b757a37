"""MNIST-1D from the mnist1d package's generator: shapes, determinism, splits, errors."""

from __future__ import annotations

import pytest
import torch

from tailwise.data import load_mnist1d, mnist1d_loaders
from tailwise.data.mnist1d import MNIST1D_LENGTH


def test_shapes_labels_and_split_sizes() -> None:
    train = load_mnist1d(split="train", num_samples=500)
    test = load_mnist1d(split="test", num_samples=500)
    assert (len(train), len(test)) == (400, 100)
    x, y = train.tensors
    assert x.shape == (400, MNIST1D_LENGTH) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    assert len(set(y.tolist())) == 10  # every class present
    assert torch.isfinite(x).all() and float(x.std()) > 0.1


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = load_mnist1d(num_samples=200, seed=1).tensors[0]
    b = load_mnist1d(num_samples=200, seed=1, dtype=torch.float64).tensors[0]
    c = load_mnist1d(num_samples=200, seed=2).tensors[0]
    assert torch.equal(a, b.float())
    assert not torch.equal(a, c)


def test_loaders_reshuffle_reproducibly() -> None:
    first = [y for _, y in mnist1d_loaders(64, num_samples=300)[0]]
    second = [y for _, y in mnist1d_loaders(64, num_samples=300)[0]]
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    assert sum(len(y) for y in first) == 240


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"split": "all"}, "split"), ({"num_samples": 5}, "num_samples")],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_mnist1d(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        mnist1d_loaders(0)
