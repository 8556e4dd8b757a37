"""tailwise.data.synthetic: XOR, XORD and the regression data of source 004 §4.2."""

from __future__ import annotations

import pytest
import torch

from tailwise.data.synthetic import (
    regression_dataset,
    regression_loaders,
    regression_teacher,
    xor_dataset,
    xord_dataset,
    xord_loaders,
)


def test_xor_is_the_four_points_of_004() -> None:
    X, y = xor_dataset()
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert X.tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    assert y.tolist() == [0, 1, 1, 0]
    X64, signed = xor_dataset(signed=True, dtype=torch.float64)
    assert X64.dtype == signed.dtype == torch.float64
    assert signed.tolist() == [-1.0, 1.0, 1.0, -1.0]


def _positive_pairs(X: torch.Tensor, C: int) -> torch.Tensor:
    pairs = X.reshape(X.shape[0], C, 2)
    return (pairs[..., 0] != pairs[..., 1]).sum(dim=1)


@pytest.mark.parametrize(("C", "n", "seed"), [(5, 22, 0), (5, 64, 7), (3, 16, 1), (1, 2, 0)])
def test_xord_construction(C: int, n: int, seed: int) -> None:
    X, y = xord_dataset(C, n, seed=seed)
    assert X.shape == (n, 2 * C) and y.shape == (n,)
    assert set(X.unique().tolist()) <= {-1.0, 1.0}
    positive_pairs = _positive_pairs(X, C)
    assert torch.equal(y, (positive_pairs > 0).long())  # positive iff some pair disagrees
    assert positive_pairs.max() <= 1  # 004: at most one positive pair
    assert y.tolist() == [1, 0] * (n // 2)  # balanced, alternating
    assert X.unique(dim=0).shape[0] == n  # all samples distinct


def test_xord_is_seeded() -> None:
    first, second, other = xord_dataset(seed=3), xord_dataset(seed=3), xord_dataset(seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_xord_can_use_every_negative_string() -> None:
    X, y = xord_dataset(3, 16, seed=0)
    negatives = X[y == 0]
    assert negatives.unique(dim=0).shape[0] == 8 == 2**3
    with pytest.raises(ValueError, match="exceeds the 2\\^C = 8"):
        xord_dataset(3, 18)
    with pytest.raises(ValueError, match="n must be even"):
        xord_dataset(5, 21)
    with pytest.raises(ValueError, match="C must be an int >= 1"):
        xord_dataset(0, 2)


def test_xord_loaders_are_disjoint_balanced_splits_of_004_sizes() -> None:
    train, test = xord_loaders(seed=0)
    (x_train, y_train), (x_test, y_test) = next(iter(train)), next(iter(test))
    assert x_train.shape == (12, 10) and x_test.shape == (10, 10)
    assert int(y_train.sum()) == 6 and int(y_test.sum()) == 5
    rows = torch.cat([x_train, x_test]).unique(dim=0)
    assert rows.shape[0] == 22
    signed_train, _ = xord_loaders(batch_size=4, signed=True)
    assert next(iter(signed_train))[1].dtype == torch.float32
    with pytest.raises(ValueError, match="n_test must be even"):
        xord_loaders(n_test=9)


def test_regression_is_the_formula_of_004() -> None:
    teacher = regression_teacher(16, c=1.0, seed=5, dtype=torch.float64)
    X, y = regression_dataset(
        500, 16, a=1.5, b=2.0, noise=0.0, seed=5, teacher=teacher, dtype=torch.float64
    )
    W, B = teacher
    assert X.shape == (500, 16) and y.shape == (500, 1)
    expected = 1.5 * torch.sin(X @ W) + 1.5 * (X @ B)
    torch.testing.assert_close(y[:, 0], expected, rtol=1e-12, atol=1e-12)
    assert float(X.min()) >= 0 and float(X.max()) <= 2.0 and float(X.max()) > 1.9
    assert float(W.min()) >= 0 and float(W.max()) <= 1.0


def test_regression_noise_and_default_teacher() -> None:
    X, y = regression_dataset(4000, 8, noise=0.5, seed=2, dtype=torch.float64)
    W, B = regression_teacher(8, seed=2, dtype=torch.float64)
    residual = y[:, 0] - (torch.sin(X @ W) + X @ B)
    assert abs(float(residual.mean())) < 5 * 0.5 / 4000**0.5
    assert float(residual.std()) == pytest.approx(0.5, rel=0.05)


def test_regression_defaults_match_004_variance() -> None:
    _, y = regression_dataset(seed=0)
    assert y.shape == (2000, 1)
    assert 24 < float(y.var()) < 36  # 004 §4.2.3: 29.66 and 30.98 for its two draws


def test_regression_is_seeded() -> None:
    first, second = regression_dataset(50, 4, seed=1), regression_dataset(50, 4, seed=1)
    other = regression_dataset(50, 4, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_regression_loaders_split_80_20() -> None:
    train, test = regression_loaders(100, 8, batch_size=16, seed=0)
    assert len(train) == 5 and len(test) == 2  # batches of 16 over 80 and 20 samples
    x, y = next(iter(train))
    assert x.shape == (16, 8) and y.shape == (16, 1)
    X, Y = regression_dataset(100, 8, seed=0)
    x_test, y_test = next(iter(regression_loaders(100, 8, batch_size=20, seed=0)[1]))
    assert torch.equal(x_test, X[80:]) and torch.equal(y_test, Y[80:])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: regression_dataset(0, 4), "n must be an int >= 1"),
        (lambda: regression_dataset(10, 4, noise=-1.0), "noise must be"),
        (lambda: regression_dataset(10, 4, a=float("nan")), "a must be a finite"),
        (lambda: regression_dataset(10, 4, teacher=regression_teacher(5)), "teacher must be"),
        (lambda: regression_loaders(10, 4, train_fraction=1.0), "train_fraction"),
        (lambda: xor_dataset(dtype=torch.int64), "floating"),
    ],
)
def test_bad_arguments_are_rejected(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()
