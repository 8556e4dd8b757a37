"""tailwise.data.mnist: IDX files (raw and gzipped, every folder layout) read back exactly;
damaged, truncated and mismatched files refused with the file's name."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tailwise._errors import UsageError
from tailwise.data import DataFileError, load_mnist
from tailwise.data.mnist import mnist_image_shape


def _expected(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255))[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["", "raw", "MNIST/raw", "FashionMNIST/raw"])
def test_files_are_read_back_exactly(tmp_path: Path, writers: Any, gz: bool, sub: str) -> None:
    train_images = writers.random_images(7, (28, 28), seed=0)
    train_labels = writers.random_labels(7, 10, seed=0)
    test_images = writers.random_images(3, (28, 28), seed=1)
    test_labels = writers.random_labels(3, 10, seed=1)
    folder = tmp_path / sub if sub else tmp_path
    writers.write_mnist(folder, "train", train_images, train_labels, gz=gz)
    writers.write_mnist(folder, "test", test_images, test_labels, gz=gz)
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        x, y = load_mnist(tmp_path, split).tensors
        expected_x, expected_y = _expected(images, labels)
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
        assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_dtype_and_every_pixel_value(tmp_path: Path, writers: Any) -> None:
    images = np.arange(256 * 4, dtype=np.int64).reshape(1, 32, 32) % 256
    writers.write_mnist(tmp_path, "test", images.astype(np.uint8), np.array([3], np.uint8))
    x, y = load_mnist(tmp_path, "test", dtype=torch.float64).tensors
    assert x.dtype == torch.float64 and x.shape == (1, 1, 32, 32)  # other sizes work too
    assert torch.equal(x.flatten() * 255, torch.from_numpy(images.flatten()).double())
    assert y.tolist() == [3]
    assert mnist_image_shape(tmp_path) == (1, 32, 32)


def test_gzip_and_raw_side_by_side_read_the_same(tmp_path: Path, writers: Any) -> None:
    images = writers.random_images(4, (28, 28), seed=2)
    labels = writers.random_labels(4, 10, seed=2)
    writers.write_mnist(tmp_path / "a", "train", images, labels, gz=True)
    writers.write_mnist(tmp_path / "b", "train", images, labels, gz=False)
    a = load_mnist(tmp_path / "a").tensors
    b = load_mnist(tmp_path / "b").tensors
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.fixture
def folder(tmp_path: Path, writers: Any) -> Path:
    writers.write_mnist(
        tmp_path,
        "train",
        writers.random_images(5, (28, 28), seed=3),
        writers.random_labels(5, 10, seed=3),
    )
    return tmp_path


def test_wrong_magic_names_the_file(folder: Path, writers: Any) -> None:
    path = folder / "train-images-idx3-ubyte"
    writers.write_idx(path, 0x801, (5 * 784,), bytes(5 * 784))  # a labels header
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte: not an IDX images file"):
        load_mnist(folder)
    labels = folder / "train-labels-idx1-ubyte"
    writers.write_idx(labels, 0x00000903, (5,), bytes(5))  # int32 instead of ubyte
    writers.write_idx(path, 0x803, (5, 28, 28), bytes(5 * 784))
    with pytest.raises(DataFileError, match=r"labels-idx1-ubyte: .*magic number 0x00000903"):
        load_mnist(folder)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_overlong_files(tmp_path: Path, writers: Any, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    images = tmp_path / f"train-images-idx3-ubyte{suffix}"
    labels = tmp_path / f"train-labels-idx1-ubyte{suffix}"
    writers.write_idx(labels, 0x801, (5,), bytes(5))
    writers.write_idx(images, 0x803, (5, 28, 28), bytes(4 * 784 + 10))
    with pytest.raises(DataFileError, match=rf"{images.name}: truncated"):
        load_mnist(tmp_path)
    writers.write_idx(images, 0x803, (5, 28, 28), bytes(5 * 784 + 1))
    with pytest.raises(DataFileError, match=rf"{images.name}: longer than its header says"):
        load_mnist(tmp_path)
    # A header cut short.
    if gz:
        with gzip.open(images, "wb") as handle:
            handle.write(struct.pack(">II", 0x803, 5))
    else:
        images.write_bytes(struct.pack(">II", 0x803, 5))
    with pytest.raises(DataFileError, match=rf"{images.name}: truncated: the IDX header"):
        load_mnist(tmp_path)


def test_a_huge_promise_is_not_believed(tmp_path: Path, writers: Any) -> None:
    """A header promising far more than the file holds fails at the file's end (gzip) or
    before reading (raw), without allocating what it promised."""
    writers.write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, (5,), bytes(5))
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    writers.write_idx(gz, 0x803, (5_000_000, 28, 28), bytes(784))
    with pytest.raises(DataFileError, match="truncated"):
        load_mnist(tmp_path)
    gz.unlink()
    writers.write_idx(tmp_path / "train-images-idx3-ubyte", 0x803, (2**31, 2**16, 2**8), b"")
    with pytest.raises(DataFileError, match="more than the"):
        load_mnist(tmp_path)


def test_count_mismatch_names_both_files(folder: Path, writers: Any) -> None:
    writers.write_idx(folder / "train-labels-idx1-ubyte", 0x801, (4,), bytes(4))
    with pytest.raises(
        DataFileError,
        match=r"train-images-idx3-ubyte holds 5 images but .*train-labels-idx1-ubyte holds 4",
    ):
        load_mnist(folder)


def test_labels_out_of_range(folder: Path, writers: Any) -> None:
    writers.write_idx(folder / "train-labels-idx1-ubyte", 0x801, (5,), bytes([1, 2, 10, 3, 4]))
    with pytest.raises(
        DataFileError, match=r"labels-idx1-ubyte: label 10 at index 2 is out of range 0..9"
    ):
        load_mnist(folder)


def test_missing_files_and_folders(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DataFileError, match=r"no t10k-images-idx3-ubyte \(or .*\.gz\)"):
        load_mnist(folder, "test")
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFileError, match="no train-labels-idx1-ubyte"):
        load_mnist(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileError, match=r"empty: no MNIST IDX files .* MNIST/raw/"):
        load_mnist(empty)
    with pytest.raises(DataFileError, match="no such folder"):
        load_mnist(tmp_path / "absent")


def test_a_damaged_gzip_stream(tmp_path: Path, writers: Any) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    writers.write_idx(path, 0x803, (5, 28, 28), bytes(5 * 784))
    data = bytearray(path.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\xff"  # the CRC
    path.write_bytes(bytes(data))
    writers.write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, (5,), bytes(5))
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte.gz: damaged"):
        load_mnist(tmp_path)


def test_bad_arguments(folder: Path) -> None:
    with pytest.raises(UsageError, match="split must be 'train' or 'test'"):
        load_mnist(folder, "validation")
    with pytest.raises(UsageError, match="dtype must be a floating"):
        load_mnist(folder, dtype=torch.int64)
