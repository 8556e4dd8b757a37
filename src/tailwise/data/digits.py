"""Scikit-learn's bundled 8x8 handwritten digits as torch data sets (offline, no download).

1797 grey-scale images of the digits 0-9, 8x8 pixels with integer intensities 0..16, about
180 per class. Pixel values are scaled to [0, 1] by dividing by 16.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, TensorDataset

Split = Literal["train", "test", "all"]

NUM_CLASSES = 10
IMAGE_SIZE = 8
NUM_FEATURES = IMAGE_SIZE * IMAGE_SIZE
_MAX_INTENSITY = 16.0
_SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Images (1797, 8, 8) scaled to [0, 1] and labels (1797,), read once per process."""
    # Imported here: sklearn takes ~1 s to import and most of tailwise never needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / _MAX_INTENSITY
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_split_args(split: str, test_fraction: float, seed: int, dtype: torch.dtype) -> None:
    if split not in _SPLITS:
        raise ValueError(f"load_digits_dataset: split must be one of {_SPLITS}, got {split!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"load_digits_dataset: test_fraction must be a number in (0, 1), got {test_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"load_digits_dataset: seed must be an int in [0, 2**32), got {seed!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"load_digits_dataset: dtype must be a floating torch.dtype, got {dtype!r}"
        )


def _split_indices(
    labels: NDArray[np.int64], test_fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stratified (train, test) index arrays, each sorted; the same for the same seed."""
    from sklearn.model_selection import train_test_split

    n = labels.shape[0]
    n_test = math.ceil(test_fraction * n)
    if n_test < NUM_CLASSES or n - n_test < NUM_CLASSES:
        raise ValueError(
            f"load_digits_dataset: test_fraction={test_fraction} gives {n_test} test and "
            f"{n - n_test} train images of {n}; each split needs at least {NUM_CLASSES} "
            "(one per class)"
        )
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, stratify=labels, random_state=int(seed), shuffle=True
    )
    return np.sort(train_idx), np.sort(test_idx)


def load_digits_dataset(
    *,
    split: Split = "train",
    test_fraction: float = 0.2,
    seed: int = 0,
    flatten: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """The digits data set (or its stratified train / test part) as a ``TensorDataset``.

    Items are ``(image, label)``: ``image`` of shape (1, 8, 8), or (64,) with ``flatten=True``,
    values in [0, 1] and dtype ``dtype``; ``label`` an int64 scalar in 0..9.

    The split is stratified by class and depends only on ``seed`` and ``test_fraction``:
    ``ceil(test_fraction * 1797)`` images go to ``"test"`` (360 by default), the rest to
    ``"train"`` (1437); ``"all"`` is all 1797 in the original order. Within a split the
    images keep their original relative order.

    >>> ds = load_digits_dataset(split="test", flatten=True)
    >>> len(ds), tuple(ds[0][0].shape)
    (360, (64,))
    """
    _check_split_args(split, test_fraction, seed, dtype)
    images, labels = _raw_digits()
    if split == "all":
        index = np.arange(labels.shape[0])
    else:
        train_idx, test_idx = _split_indices(labels, test_fraction, seed)
        index = train_idx if split == "train" else test_idx
    shape = (-1, NUM_FEATURES) if flatten else (-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    x = torch.from_numpy(images[index].reshape(shape)).to(dtype)
    y = torch.from_numpy(labels[index].copy())
    return TensorDataset(x, y)


def _check_batch_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"digits_loaders: {name} must be a positive int, got {value!r}")


def digits_loaders(
    batch_size: int = 64,
    *,
    seed: int = 0,
    flatten: bool = False,
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
    test_batch_size: int | None = None,
) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    """Train and test loaders over the digits split of :func:`load_digits_dataset`.

    The train loader reshuffles every epoch from a ``torch.Generator`` seeded with ``seed``,
    so two freshly built loaders yield the same batches in the same order; the test loader
    does not shuffle. Batches are ``[images, labels]`` with images (B, 1, 8, 8) or (B, 64)
    and labels (B,) int64. ``test_batch_size`` defaults to ``batch_size``.

    >>> train, test = digits_loaders(32, flatten=True)
    >>> images, labels = next(iter(train))
    >>> tuple(images.shape), tuple(labels.shape)
    ((32, 64), (32,))
    """
    _check_batch_size("batch_size", batch_size)
    if test_batch_size is not None:
        _check_batch_size("test_batch_size", test_batch_size)
    train_set = load_digits_dataset(
        split="train", test_fraction=test_fraction, seed=seed, flatten=flatten, dtype=dtype
    )
    test_set = load_digits_dataset(
        split="test", test_fraction=test_fraction, seed=seed, flatten=flatten, dtype=dtype
    )
    generator = torch.Generator().manual_seed(int(seed))
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
    test_loader = DataLoader(test_set, batch_size=test_batch_size or batch_size, shuffle=False)
    return train_loader, test_loader
