"""Offline data sets and loaders (no downloads at run time)."""

from tailwise.data.batches import check_accepts, dataset_batches
from tailwise.data.digits import digits_loaders, load_digits_dataset
from tailwise.data.mnist1d import load_mnist1d, mnist1d_loaders
from tailwise.data.synthetic import (
    regression_dataset,
    regression_loaders,
    regression_teacher,
    xor_dataset,
    xord_dataset,
    xord_loaders,
)

__all__ = [
    "check_accepts",
    "dataset_batches",
    "digits_loaders",
    "load_digits_dataset",
    "load_mnist1d",
    "mnist1d_loaders",
    "regression_dataset",
    "regression_loaders",
    "regression_teacher",
    "xor_dataset",
    "xord_dataset",
    "xord_loaders",
]
