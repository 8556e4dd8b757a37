"""Offline data sets and loaders (no downloads at run time).

Built in: scikit-learn's digits, MNIST-1D, the synthetic sets of source 004. From local files:
MNIST / Fashion-MNIST (IDX) and CIFAR-10 / CIFAR-100 (binary or python format), read without
executing anything. :func:`resolve_dataset` turns what a user gives ``--data`` into a data
set; :mod:`tailwise.data.augment` has tensor augmentations (random crop, flip, AugMix).
"""

from tailwise.data._files import DataFileError
from tailwise.data.augment import (
    AUGMENTATIONS,
    AUGMIX_OPS,
    AugmentedDataset,
    augmix,
    augmix_weights,
    random_crop,
    random_hflip,
)
from tailwise.data.batches import check_accepts, dataset_batches
from tailwise.data.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    load_cifar,
)
from tailwise.data.digits import digits_loaders, load_digits_dataset
from tailwise.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist
from tailwise.data.mnist1d import load_mnist1d, mnist1d_loaders
from tailwise.data.resolve import (
    BUILTIN_DATASETS,
    DatasetInfo,
    dataset_info,
    dataset_loaders,
    resolve_dataset,
)
from tailwise.data.synthetic import (
    regression_dataset,
    regression_loaders,
    regression_teacher,
    xor_dataset,
    xord_dataset,
    xord_loaders,
)

__all__ = [
    "AUGMENTATIONS",
    "AUGMIX_OPS",
    "BUILTIN_DATASETS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "AugmentedDataset",
    "DataFileError",
    "DatasetInfo",
    "augmix",
    "augmix_weights",
    "check_accepts",
    "dataset_batches",
    "dataset_info",
    "dataset_loaders",
    "digits_loaders",
    "load_cifar",
    "load_digits_dataset",
    "load_mnist",
    "load_mnist1d",
    "mnist1d_loaders",
    "random_crop",
    "random_hflip",
    "regression_dataset",
    "regression_loaders",
    "regression_teacher",
    "resolve_dataset",
    "xor_dataset",
    "xord_dataset",
    "xord_loaders",
]
