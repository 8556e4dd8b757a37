"""MNIST-1D (Greydanus 2020) from the ``mnist1d`` package's generator: offline, seeded.

Each sample is a 1-D signal of 40 points made from one of ten digit templates by random
padding, translation, correlated noise, shear and scaling (the package's default arguments);
the label is the digit 0-9. A small data set on which architectures differ, generated in
well under a second, so it needs no download.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["MNIST1D_LENGTH", "load_mnist1d", "mnist1d_loaders"]

MNIST1D_LENGTH = 40
"""Length of one MNIST-1D signal (the package's default)."""


@lru_cache(maxsize=4)
def _generate(
    num_samples: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    arrays = (
        np.asarray(data["x"], dtype=np.float64),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float64),
        np.asarray(data["y_test"], dtype=np.int64),
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def load_mnist1d(
    *,
    split: Literal["train", "test"] = "train",
    num_samples: int = 4000,
    seed: int = 42,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """MNIST-1D as a ``TensorDataset`` of (signal (40,), label int64 in 0..9).

    ``num_samples`` are generated with ``seed`` (the package's default is 4000 and 42); the
    package's 80/20 split gives ``"train"`` and ``"test"``. The same arguments give the same
    data in every process.

    >>> ds = load_mnist1d(split="test", num_samples=1000)
    >>> len(ds), tuple(ds[0][0].shape)
    (200, (40,))
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist1d: split must be 'train' or 'test', got {split!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"load_mnist1d: num_samples must be an int >= 10, got {num_samples!r}")
    x, y, x_test, y_test = _generate(num_samples, int(seed))
    xs, ys = (x, y) if split == "train" else (x_test, y_test)
    return TensorDataset(torch.from_numpy(xs.copy()).to(dtype), torch.from_numpy(ys.copy()))


def mnist1d_loaders(
    batch_size: int = 64,
    *,
    num_samples: int = 4000,
    seed: int = 42,
    dtype: torch.dtype = torch.float32,
) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    """Train (reshuffled every epoch from a generator seeded with ``seed``) and test loaders.

    >>> train, test = mnist1d_loaders(100, num_samples=1000)
    >>> len(train.dataset), len(test.dataset)
    (800, 200)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"mnist1d_loaders: batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    train = load_mnist1d(split="train", num_samples=num_samples, seed=seed, dtype=dtype)
    test = load_mnist1d(split="test", num_samples=num_samples, seed=seed, dtype=dtype)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(test, batch_size=batch_size, shuffle=False),
    )
