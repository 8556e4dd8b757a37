"""tailwise.data.resolve: names and every folder layout resolved to the right data set;
clear errors otherwise; loaders deterministic given the seed and the epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tailwise._errors import UsageError
from tailwise.data import (
    BUILTIN_DATASETS,
    AugmentedDataset,
    DatasetInfo,
    dataset_info,
    dataset_loaders,
    load_cifar,
    load_digits_dataset,
    load_mnist,
    load_mnist1d,
    resolve_dataset,
)


def _mnist(writers: Any, folder: Path, gz: bool = False, size: int = 28) -> Path:
    for split, n in (("train", 6), ("test", 3)):
        writers.write_mnist(
            folder,
            split,
            writers.random_images(n, (size, size), seed=n),
            writers.random_labels(n, 10, seed=n),
            gz=gz,
        )
    return folder


def _cifar(writers: Any, root: Path, name: str, fmt: str) -> Path:
    classes = 10 if name == "cifar10" else 100
    write = writers.write_cifar_binary if fmt == "binary" else writers.write_cifar_python
    for split, n in (("train", 10), ("test", 5)):
        write(
            root,
            name,
            split,
            writers.random_images(n, (3, 32, 32), seed=n),
            writers.random_labels(n, classes, seed=n),
            writers.random_labels(n, 20, seed=n + 7),
        )
    return root


def _same(a: Any, b: Any) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a.tensors, b.tensors, strict=True))


def test_builtin_names() -> None:
    assert BUILTIN_DATASETS == ("digits", "mnist1d")
    assert dataset_info("digits") == DatasetInfo("digits", (1, 8, 8), 10, "builtin")
    assert dataset_info("mnist1d").input_shape == (40,)
    assert dataset_info("mnist1d").in_channels == 1
    assert _same(resolve_dataset("digits", "test"), load_digits_dataset(split="test"))
    assert _same(resolve_dataset("mnist1d"), load_mnist1d(split="train"))


@pytest.mark.parametrize(
    ("sub", "gz", "name"),
    [
        ("", False, "mnist"),
        ("raw", True, "mnist"),
        ("MNIST/raw", True, "mnist"),
        ("FashionMNIST/raw", False, "fashion-mnist"),
    ],
)
def test_mnist_layouts(tmp_path: Path, writers: Any, sub: str, gz: bool, name: str) -> None:
    _mnist(writers, tmp_path / sub if sub else tmp_path, gz=gz)
    info = dataset_info(tmp_path)
    assert (info.name, info.input_shape, info.num_classes, info.format) == (
        name,
        (1, 28, 28),
        10,
        "idx",
    )
    assert info.in_channels == 1 and info.path == tmp_path
    for split in ("train", "test"):
        assert _same(resolve_dataset(tmp_path, split), load_mnist(tmp_path, split))
    assert len(resolve_dataset(str(tmp_path), "test")) == 3


def test_mnist_shape_comes_from_the_header(tmp_path: Path, writers: Any) -> None:
    _mnist(writers, tmp_path, size=20)
    assert dataset_info(tmp_path).input_shape == (1, 20, 20)


@pytest.mark.parametrize("fmt", ["binary", "python"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_layouts(tmp_path: Path, writers: Any, name: str, fmt: str) -> None:
    _cifar(writers, tmp_path, name, fmt)
    folder = next(tmp_path.iterdir())
    for root in (tmp_path, folder):  # the parent folder or the batches folder itself
        info = dataset_info(root)
        classes = 10 if name == "cifar10" else 100
        assert (info.name, info.input_shape, info.num_classes, info.format) == (
            name,
            (3, 32, 32),
            classes,
            fmt,
        )
        assert info.in_channels == 3
        assert _same(resolve_dataset(root, "test"), load_cifar(tmp_path, name, "test"))


def test_cifar_archive(tmp_path: Path, writers: Any) -> None:
    _cifar(writers, tmp_path / "src", "cifar10", "python")
    archive = writers.tar_folder(
        tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz"
    )
    assert dataset_info(archive).name == "cifar10"
    assert _same(resolve_dataset(archive, "test"), load_cifar(tmp_path / "src", split="test"))


def test_both_cifar_formats_are_one_data_set(tmp_path: Path, writers: Any) -> None:
    _cifar(writers, tmp_path, "cifar10", "binary")
    _cifar(writers, tmp_path, "cifar10", "python")
    assert dataset_info(tmp_path).format == "binary"


def test_several_data_sets_in_one_folder(tmp_path: Path, writers: Any) -> None:
    _cifar(writers, tmp_path, "cifar10", "binary")
    _mnist(writers, tmp_path / "MNIST" / "raw")
    with pytest.raises(UsageError, match=r"holds several data sets \(mnist, cifar10\)"):
        resolve_dataset(tmp_path)


def test_nothing_found_lists_the_accepted_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(UsageError, match="no data set found") as caught:
        resolve_dataset(tmp_path)
    message = str(caught.value)
    for expected in (
        "'digits' or 'mnist1d'",
        "train-images-idx3-ubyte",
        "MNIST/raw/",
        "cifar-10-batches-bin/{data_batch_1.bin",
        "cifar-10-batches-py/",
        "cifar-100-binary/{train.bin, test.bin}",
        "cifar-100-python/{train, test}",
        "cifar-100-python.tar.gz",
    ):
        assert expected in message, expected
    with pytest.raises(
        UsageError, match=r"unknown data set 'cifar10' \(no such name, file or folder\)"
    ):
        dataset_info("cifar10")
    with pytest.raises(UsageError, match="a data set is a name or a path"):
        resolve_dataset(3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="split must be"):
        resolve_dataset("digits", "validation")


def test_a_damaged_file_is_a_usage_error(tmp_path: Path, writers: Any) -> None:
    _mnist(writers, tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x01")
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte: truncated"):
        resolve_dataset(tmp_path, "test")


# -------------------------------------------------------------------------- loaders


def _labels(loader: Any) -> list[list[int]]:
    return [labels.tolist() for _, labels in loader]


def test_loaders_shapes_and_sizes(tmp_path: Path, writers: Any) -> None:
    _cifar(writers, tmp_path, "cifar10", "binary")
    train, test = dataset_loaders(tmp_path, 4, test_batch_size=2)
    images, labels = next(iter(train))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert len(train) == 3 and len(test) == 3  # ceil(10 / 4), ceil(5 / 2)
    ordered = torch.cat([y for _, y in test])
    assert torch.equal(ordered, load_cifar(tmp_path, split="test").tensors[1])


@pytest.mark.parametrize("augment", [None, "standard", "augmix"])
def test_each_pass_is_a_function_of_seed_and_epoch(
    tmp_path: Path, writers: Any, augment: str | None
) -> None:
    _cifar(writers, tmp_path, "cifar10", "binary")
    first, _ = dataset_loaders(tmp_path, 4, seed=3, augment=augment)
    epochs = [[(x.clone(), y.clone()) for x, y in first] for _ in range(3)]
    again, _ = dataset_loaders(tmp_path, 4, seed=3, augment=augment)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(epochs[0], list(again), strict=True)
    )
    # A resumed run: a fresh loader told to start at epoch 2 repeats the uninterrupted one.
    resumed, _ = dataset_loaders(tmp_path, 4, seed=3, augment=augment)
    resumed.set_epoch(2)  # type: ignore[attr-defined]
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(epochs[2], list(resumed), strict=True)
    )
    assert [y.tolist() for _, y in epochs[0]] != [y.tolist() for _, y in epochs[1]]
    if augment is not None:
        assert isinstance(first.dataset, AugmentedDataset)
        x = load_cifar(tmp_path).tensors[0]
        batch = epochs[0][0][0]
        assert batch.shape == (4, 3, 32, 32)
        assert float(batch.min()) >= 0 and float(batch.max()) <= 1
        assert not any(torch.equal(image, x[i]) for image in batch for i in range(len(x)))
    other, _ = dataset_loaders(tmp_path, 4, seed=4, augment=augment)
    assert _labels(other) != [y.tolist() for _, y in epochs[0]]


def test_loader_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="batch_size must be a positive int"):
        dataset_loaders("digits", 0)
    with pytest.raises(UsageError, match="test_batch_size must be a positive int"):
        dataset_loaders("digits", 8, test_batch_size=-1)
    with pytest.raises(UsageError, match="seed must be"):
        dataset_loaders("digits", 8, seed=-1)
    with pytest.raises(UsageError, match="augment must be None or one of standard, augmix"):
        dataset_loaders("digits", 8, augment="cutmix")
    with pytest.raises(UsageError, match=r"needs images \(C, H, W\).*shape \(40,\)"):
        dataset_loaders("mnist1d", 8, augment="standard")
    with pytest.raises(UsageError, match="no data set found"):
        dataset_loaders(tmp_path, 8)
    train, _ = dataset_loaders("digits", 8)
    with pytest.raises(UsageError, match="epoch must be"):
        train.set_epoch(-1)  # type: ignore[attr-defined]


def test_digits_loader_with_augmix_runs() -> None:
    train, _ = dataset_loaders("digits", 16, augment="augmix")
    images, _ = next(iter(train))
    assert images.shape == (16, 1, 8, 8)
    assert np.isfinite(images.numpy()).all()
