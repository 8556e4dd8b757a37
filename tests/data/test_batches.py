"""tailwise.data.batches: named data sets as loss batches, and the model-accepts check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tailwise._errors import UsageError
from tailwise.data import (
    check_accepts,
    dataset_batches,
    load_cifar,
    load_digits_dataset,
    load_mnist,
    load_mnist1d,
)
from tailwise.models import MLP, SmallCNN


def test_digits_in_their_natural_shape_and_order() -> None:
    batches = dataset_batches("digits", samples=100, batch_size=32)
    assert [tuple(x.shape) for x, _ in batches] == [(32, 1, 8, 8)] * 3 + [(4, 1, 8, 8)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected_x, expected_y = load_digits_dataset(split="train").tensors
    assert torch.equal(x, expected_x[:100]) and torch.equal(y, expected_y[:100])
    assert x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize(("name", "shape"), [("digits", (64,)), ("mnist1d", (1, 40))])
def test_input_shape_reshapes_each_example(name: str, shape: tuple[int, ...]) -> None:
    (x, y), *_ = dataset_batches(name, samples=10, batch_size=10, input_shape=shape)
    assert tuple(x.shape) == (10, *shape) and tuple(y.shape) == (10,)


def test_mnist1d_and_the_test_split() -> None:
    batches = dataset_batches("mnist1d", samples=50, batch_size=50, split="test")
    expected = load_mnist1d(split="test").tensors[0][:50]
    assert torch.equal(batches[0][0], expected)


def test_bad_values_are_usage_errors_naming_the_numbers() -> None:
    with pytest.raises(UsageError, match=r"samples must be in \[1, 1437\].*got 5000"):
        dataset_batches("digits", samples=5000, batch_size=10)
    with pytest.raises(UsageError, match="got 0"):
        dataset_batches("digits", samples=0, batch_size=10)
    with pytest.raises(UsageError, match="batch_size"):
        dataset_batches("digits", samples=10, batch_size=0)
    with pytest.raises(UsageError, match="unknown data set 'cifar'"):
        dataset_batches("cifar", samples=10, batch_size=10)
    with pytest.raises(UsageError, match=r"input_shape \(63,\)"):
        dataset_batches("digits", samples=10, batch_size=10, input_shape=(63,))
    with pytest.raises(UsageError, match="split"):
        dataset_batches("digits", samples=10, batch_size=10, split="validation")


def test_check_accepts_passes_and_fails_with_one_clear_line() -> None:
    flat = dataset_batches("digits", samples=8, batch_size=4, input_shape=(64,))
    check_accepts(MLP(64, [8], 10), flat, "digits")
    with pytest.raises(UsageError, match=r"does not accept digits inputs of shape \(64,\)"):
        check_accepts(SmallCNN(1, 10, channels=(2, 3)), flat, "digits")
    signals = dataset_batches("mnist1d", samples=8, batch_size=4)
    with pytest.raises(UsageError, match=r"does not accept mnist1d inputs of shape \(40,\)"):
        check_accepts(MLP(64, [8], 10), signals, "mnist1d")


def test_check_accepts_leaves_the_model_alone() -> None:
    model = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)).train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    check_accepts(
        model, dataset_batches("digits", samples=4, batch_size=4, input_shape=(64,)), "digits"
    )
    assert model.training and all(m.training for m in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def _cifar_folder(writers: Any, root: Path) -> Path:
    for split, n in (("train", 10), ("test", 6)):
        writers.write_cifar_binary(
            root,
            "cifar10",
            split,
            writers.random_images(n, (3, 32, 32), seed=n),
            writers.random_labels(n, 10, seed=n),
        )
    return root


def test_a_cifar_folder_in_its_natural_shape(tmp_path: Path, writers: Any) -> None:
    _cifar_folder(writers, tmp_path)
    batches = dataset_batches(str(tmp_path), samples=5, batch_size=2, split="test")
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 32, 32)] * 2 + [(1, 3, 32, 32)]
    expected_x, expected_y = load_cifar(tmp_path, split="test").tensors
    assert torch.equal(torch.cat([x for x, _ in batches]), expected_x[:5])
    assert torch.equal(torch.cat([y for _, y in batches]), expected_y[:5])
    (flat, _), *_ = dataset_batches(tmp_path, samples=3, batch_size=3, input_shape=(3072,))
    assert flat.shape == (3, 3072)
    check_accepts(SmallCNN(3, 10, channels=(2, 3), image_size=32), batches, str(tmp_path))
    with pytest.raises(UsageError, match=r"samples must be in \[1, 10\]"):
        dataset_batches(tmp_path, samples=11, batch_size=2)
    with pytest.raises(UsageError, match=r"input_shape \(784,\) does not fit .*\(3, 32, 32\)"):
        dataset_batches(tmp_path, samples=2, batch_size=2, input_shape=(784,))


def test_an_mnist_folder(tmp_path: Path, writers: Any) -> None:
    raw = tmp_path / "MNIST" / "raw"
    writers.write_mnist(
        raw, "train", writers.random_images(4, (28, 28), 0), writers.random_labels(4, 10, 0)
    )
    batches = dataset_batches(tmp_path, samples=4, batch_size=4)
    assert torch.equal(batches[0][0], load_mnist(tmp_path).tensors[0])
    assert batches[0][0].shape == (4, 1, 28, 28)


def test_a_path_without_data(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no data set found"):
        dataset_batches(tmp_path, samples=1, batch_size=1)
    with pytest.raises(UsageError, match="or give a folder of MNIST / CIFAR files"):
        dataset_batches(str(tmp_path / "absent"), samples=1, batch_size=1)
