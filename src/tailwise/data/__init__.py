"""Offline data sets and loaders (no downloads at run time)."""

from tailwise.data.digits import digits_loaders, load_digits_dataset
from tailwise.data.mnist1d import load_mnist1d, mnist1d_loaders

__all__ = ["digits_loaders", "load_digits_dataset", "load_mnist1d", "mnist1d_loaders"]
