"""One answer to "which data set does ``--data`` mean": a built-in name or a local folder.

Every command and function that takes a data set (``tailwise train --data``, ``tailwise
hessian --data``, :func:`dataset_batches`, :func:`dataset_loaders`) resolves it here:

- ``"digits"``: scikit-learn's 8 x 8 digits (:func:`load_digits_dataset`), images (1, 8, 8);
- ``"mnist1d"``: MNIST-1D signals (40,) (:func:`load_mnist1d`);
- a path: a folder (or archive) holding MNIST / Fashion-MNIST IDX files or CIFAR-10 /
  CIFAR-100 in the binary or python format (:func:`load_mnist`, :func:`load_cifar`),
  detected from the file names. A folder holding two different data sets is refused (point
  to the one you mean).

Names win over folders: a folder called ``digits`` in the working directory is given as
``./digits``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.dataloader import _BaseDataLoaderIter

from tailwise._errors import UsageError
from tailwise._seeds import derive_seed
from tailwise.data.augment import AUGMENTATIONS, AugmentedDataset
from tailwise.data.cifar import CIFAR_LAYOUTS, find_cifar, load_cifar
from tailwise.data.digits import load_digits_dataset
from tailwise.data.mnist import (
    MNIST_FILES,
    MNIST_SUBFOLDERS,
    find_mnist_folder,
    load_mnist,
    mnist_image_shape,
)
from tailwise.data.mnist1d import MNIST1D_LENGTH, load_mnist1d

__all__ = ["BUILTIN_DATASETS", "DatasetInfo", "dataset_info", "dataset_loaders", "resolve_dataset"]

#: The data sets known by name (generated or bundled: no files needed).
BUILTIN_DATASETS = ("digits", "mnist1d")

DatasetSpec = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set before seeing it.

    ``name``: ``"digits"``, ``"mnist1d"``, ``"mnist"`` (also ``"fashion-mnist"`` /
    ``"kmnist"`` when found in a folder of that name), ``"cifar10"`` or ``"cifar100"``;
    ``input_shape``: one example's natural shape ((1, 8, 8), (40,), (1, 28, 28),
    (3, 32, 32)); ``num_classes``: the number of labels; ``format``: ``"builtin"``,
    ``"idx"``, ``"binary"`` or ``"python"``; ``path``: where the files are (None for a
    built-in data set).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    format: str
    path: Path | None = None

    @property
    def in_channels(self) -> int:
        """Channels of an image (its first dimension); 1 for a signal."""
        return self.input_shape[0] if len(self.input_shape) == 3 else 1


def _accepted_layouts() -> str:
    mnist = ", ".join(n for pair in MNIST_FILES.values() for n in pair)
    cifar = "; ".join(f"{layout.describe()} (or {layout.archive})" for layout in CIFAR_LAYOUTS)
    return (
        f"MNIST / Fashion-MNIST IDX files ({mnist}, each optionally .gz) in the folder or in "
        f"{', '.join(s + '/' for s in MNIST_SUBFOLDERS)}; {cifar}"
    )


def _unknown(spec: DatasetSpec, reason: str) -> UsageError:
    return UsageError(
        f"{reason}: a data set is {' or '.join(map(repr, BUILTIN_DATASETS))}, or a folder "
        f"holding one of: {_accepted_layouts()}"
    )


def _mnist_name(folder: Path) -> str:
    parent = folder.parent.name if folder.name == "raw" else ""
    return {"FashionMNIST": "fashion-mnist", "KMNIST": "kmnist"}.get(parent, "mnist")


@dataclass(frozen=True)
class _Local:
    info: DatasetInfo
    root: Path


def _detect(spec: DatasetSpec) -> _Local:
    """The one data set under the path ``spec``; UsageError if none or several."""
    root = Path(spec)
    if not root.exists():
        raise _unknown(spec, f"unknown data set {str(spec)!r} (no such name, file or folder)")
    found: list[DatasetInfo] = []
    if root.is_dir():
        mnist_folder = find_mnist_folder(root)
        if mnist_folder is not None:
            found.append(DatasetInfo(_mnist_name(mnist_folder), (1, 28, 28), 10, "idx", root))
    names_seen: set[str] = set()
    for source in find_cifar(root):
        layout = source.layout
        if layout.name in names_seen:  # binary and python of one data set: binary is read
            continue
        names_seen.add(layout.name)
        classes = 10 if layout.name == "cifar10" else 100
        found.append(DatasetInfo(layout.name, (3, 32, 32), classes, layout.format, root))
    if not found:
        raise _unknown(spec, f"{root}: no data set found")
    if len(found) > 1:
        raise UsageError(
            f"{root}: holds several data sets ({', '.join(info.name for info in found)}); "
            "give the folder of the one you mean"
        )
    return _Local(found[0], root)


def _check_split(where: str, split: str) -> None:
    if split not in ("train", "test"):
        raise UsageError(f"{where}: split must be 'train' or 'test', got {split!r}")


def dataset_info(spec: DatasetSpec) -> DatasetInfo:
    """Name, natural input shape and number of classes of the data set ``spec`` names,
    without loading it (a folder is only looked at; MNIST's shape is read from a header).

    >>> dataset_info("digits")
    DatasetInfo(name='digits', input_shape=(1, 8, 8), num_classes=10, format='builtin', path=None)
    """
    if isinstance(spec, str) and spec in BUILTIN_DATASETS:
        shape = (1, 8, 8) if spec == "digits" else (MNIST1D_LENGTH,)
        return DatasetInfo(spec, shape, 10, "builtin")
    if not isinstance(spec, (str, os.PathLike)):
        raise UsageError(f"a data set is a name or a path, got {spec!r}")
    local = _detect(spec)
    if local.info.format == "idx":
        # MNIST-like files can hold other image sizes: the header knows.
        return _with_shape(local.info, mnist_image_shape(local.root))
    return local.info


def _with_shape(info: DatasetInfo, shape: tuple[int, ...]) -> DatasetInfo:
    return DatasetInfo(info.name, shape, info.num_classes, info.format, info.path)


def resolve_dataset(
    spec: DatasetSpec, split: Literal["train", "test"] | str = "train"
) -> TensorDataset:
    """The ``split`` of the data set ``spec`` names, as ``(inputs, labels int64)``.

    ``spec``: ``"digits"`` (images (1, 8, 8); the default 1437 / 360 split of
    :func:`load_digits_dataset`), ``"mnist1d"`` (signals (40,); 3200 / 800), or a path to a
    folder or archive of MNIST (images (1, 28, 28)) or CIFAR-10 / CIFAR-100 (images
    (3, 32, 32), fine labels) files in one of the official layouts. Images are in [0, 1]
    (not normalized: augment first, normalize in the model or after).

    Raises:
        UsageError: an unknown name, a path without a data set (the message lists the
            accepted layouts), a folder holding several, a bad split.
        DataFileError: a damaged file (a UsageError too).

    >>> images, labels = resolve_dataset("digits", split="test").tensors
    >>> tuple(images.shape), labels.dtype
    ((360, 1, 8, 8), torch.int64)
    """
    _check_split("resolve_dataset", split)
    if isinstance(spec, str) and spec in BUILTIN_DATASETS:
        if spec == "digits":
            return load_digits_dataset(split="train" if split == "train" else "test")
        return load_mnist1d(split="train" if split == "train" else "test")
    if not isinstance(spec, (str, os.PathLike)):
        raise UsageError(f"a data set is a name or a path, got {spec!r}")
    local = _detect(spec)
    if local.info.format == "idx":
        return load_mnist(local.root, split)
    return load_cifar(local.root, local.info.name, split)


class _EpochLoader(DataLoader[Any]):
    """A shuffling loader whose every pass is a function of (seed, epoch) alone.

    Each iteration reseeds the shuffling generator from ``(seed, epoch)``, tells an
    :class:`AugmentedDataset` the epoch (before any worker starts), and then advances the
    epoch; :meth:`set_epoch` jumps (a resumed run calls it with the next epoch).
    """

    def __init__(self, dataset: Dataset[Any], batch_size: int, seed: int) -> None:
        self._shuffle_generator = torch.Generator()
        super().__init__(
            dataset, batch_size=batch_size, shuffle=True, generator=self._shuffle_generator
        )
        self._seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (an int >= 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"set_epoch: epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __iter__(self) -> _BaseDataLoaderIter:
        self._shuffle_generator.manual_seed(derive_seed(self._seed, f"shuffle {self.epoch}"))
        if isinstance(self.dataset, AugmentedDataset):
            self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def _check_batch_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"dataset_loaders: {name} must be a positive int, got {value!r}")
    return value


def dataset_loaders(
    spec: DatasetSpec,
    batch_size: int = 64,
    *,
    seed: int = 0,
    augment: Literal["standard", "augmix"] | str | None = None,
    test_batch_size: int | None = None,
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Train and test loaders over the data set ``spec`` (:func:`resolve_dataset`).

    The train loader shuffles, and augments when ``augment`` is ``"standard"`` (4-pixel
    padded random crop and horizontal flip) or ``"augmix"`` (the same, then AugMix;
    :data:`AUGMENTATIONS`), both deterministic given ``seed`` and the epoch: pass k (0-based)
    of the loader shuffles with a generator seeded from ``(seed, k)`` and augments example
    i with one seeded from ``(seed, k, i)``, so two loaders built alike yield the same
    batches, and ``train.set_epoch(k)`` makes a resumed run see what an uninterrupted one
    saw in epoch k. The test loader neither shuffles nor augments; ``test_batch_size``
    defaults to ``batch_size``. Batches are ``[inputs (B, *shape), labels (B,) int64]``.

    >>> train, test = dataset_loaders("digits", 32, augment="standard")
    >>> images, labels = next(iter(train))
    >>> tuple(images.shape), len(test.dataset)
    ((32, 1, 8, 8), 360)
    """
    batch_size = _check_batch_size("batch_size", batch_size)
    if test_batch_size is not None:
        test_batch_size = _check_batch_size("test_batch_size", test_batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"dataset_loaders: seed must be an int >= 0, got {seed!r}")
    if augment is not None and augment not in AUGMENTATIONS:
        raise UsageError(
            f"dataset_loaders: augment must be None or one of {', '.join(AUGMENTATIONS)}, "
            f"got {augment!r}"
        )
    train_set: Dataset[Any] = resolve_dataset(spec, "train")
    test_set = resolve_dataset(spec, "test")
    if augment is not None:
        shape = tuple(test_set.tensors[0].shape[1:])
        if len(shape) != 3:
            raise UsageError(
                f"dataset_loaders: augment={augment!r} needs images (C, H, W); the examples "
                f"of {spec} have shape {shape}"
            )
        train_set = AugmentedDataset(train_set, augment, seed=seed)
    train = _EpochLoader(train_set, batch_size, seed)
    test = DataLoader(test_set, batch_size=test_batch_size or batch_size, shuffle=False)
    return train, test
