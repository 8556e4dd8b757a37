"""tailwise.data.digits: shapes, ranges, split sizes, determinism, stratification, loaders."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tailwise.data import digits_loaders, load_digits_dataset


def _rows(ds: torch.utils.data.TensorDataset) -> Counter[tuple[bytes, int]]:
    x, y = ds.tensors
    return Counter(
        (row.numpy().tobytes(), int(label)) for row, label in zip(x.flatten(1), y, strict=True)
    )


@pytest.mark.parametrize(("split", "size"), [("train", 1437), ("test", 360), ("all", 1797)])
def test_sizes_and_shapes(split: str, size: int) -> None:
    images, labels = load_digits_dataset(split=split).tensors  # type: ignore[arg-type]
    assert images.shape == (size, 1, 8, 8)
    assert images.dtype == torch.float32
    assert labels.shape == (size,)
    assert labels.dtype == torch.int64
    flat, _ = load_digits_dataset(split=split, flatten=True).tensors  # type: ignore[arg-type]
    assert flat.shape == (size, 64)
    assert torch.equal(flat, images.flatten(1))


def test_values_are_intensities_over_16() -> None:
    images, labels = load_digits_dataset(split="all", dtype=torch.float64).tensors
    assert images.dtype == torch.float64
    assert images.min() == 0.0
    assert images.max() == 1.0
    assert torch.equal(images * 16, (images * 16).round())
    assert set(labels.tolist()) == set(range(10))


def test_train_and_test_partition_all() -> None:
    train = load_digits_dataset(split="train")
    test = load_digits_dataset(split="test")
    assert _rows(train) + _rows(test) == _rows(load_digits_dataset(split="all"))


def test_split_is_deterministic_by_seed() -> None:
    a = load_digits_dataset(split="test", seed=3).tensors
    b = load_digits_dataset(split="test", seed=3).tensors
    c = load_digits_dataset(split="test", seed=4).tensors
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("test_fraction", [0.1, 0.2, 0.5])
def test_split_is_stratified(test_fraction: float) -> None:
    all_counts = torch.bincount(load_digits_dataset(split="all").tensors[1], minlength=10)
    test_counts = torch.bincount(
        load_digits_dataset(split="test", test_fraction=test_fraction).tensors[1], minlength=10
    )
    assert torch.all((test_counts - test_fraction * all_counts).abs() <= 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "validation"}, "split must be one of"),
        ({"test_fraction": 0.0}, "test_fraction must be"),
        ({"test_fraction": 1.0}, "test_fraction must be"),
        ({"test_fraction": 0.001}, "at least 10"),
        ({"seed": -1}, "seed must be"),
        ({"dtype": torch.int64}, "dtype must be a floating"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_digits_dataset(**kwargs)  # type: ignore[arg-type]


def test_loaders_shapes_and_batches() -> None:
    train, test = digits_loaders(100, flatten=True, test_batch_size=50)
    images, labels = next(iter(train))
    assert images.shape == (100, 64)
    assert labels.shape == (100,)
    assert len(train) == 15  # ceil(1437 / 100)
    assert len(test) == 8  # ceil(360 / 50)


def test_train_loader_is_shuffled_reproducibly_and_test_loader_is_not() -> None:
    first_train, first_test = digits_loaders(64, seed=1)
    second_train, _ = digits_loaders(64, seed=1)
    batches = [y for _, y in first_train]
    assert all(
        torch.equal(a, b) for a, b in zip(batches, [y for _, y in second_train], strict=True)
    )
    # A second epoch of the same loader draws a new order.
    assert not torch.equal(batches[0], next(iter(first_train))[1])
    ordered = torch.cat([y for _, y in first_test])
    assert torch.equal(ordered, load_digits_dataset(split="test", seed=1).tensors[1])


def test_loaders_reject_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        digits_loaders(0)
    with pytest.raises(ValueError, match="test_batch_size must be a positive int"):
        digits_loaders(8, test_batch_size=-2)
