"""Offline data sets and loaders (no downloads at run time)."""

from tailwise.data.digits import digits_loaders, load_digits_dataset

__all__ = ["digits_loaders", "load_digits_dataset"]
