"""MNIST (and Fashion-MNIST) from the original IDX files in a local folder (no download).

The four files of LeCun's distribution, gzipped (``.gz``) or not::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   (60000 examples)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte    (10000 examples)

in the folder itself, in ``raw/``, or in ``MNIST/raw/`` / ``FashionMNIST/raw/`` /
``KMNIST/raw/`` (the layout other libraries download into). Fashion-MNIST ships files with
the same names and format.

IDX format: a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type 0x08 = unsigned byte),
then ``ndim`` big-endian uint32 sizes, then the data in C order. Images are magic
0x00000803 (n, rows, cols), labels 0x00000801 (n,). A file is read only as far as its header
promises; wrong magic, a short or over-long file, a count that differs between images and
labels, or a label outside 0..9 raise :class:`DataFileError` naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset

from tailwise._errors import UsageError
from tailwise.data._files import (
    MAX_FILE_BYTES,
    DataFileError,
    check_at_end,
    check_float_dtype,
    images_to_tensor,
    open_maybe_gzip,
    read_exactly,
    size_of,
)

__all__ = [
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_STD",
    "find_mnist_folder",
    "load_mnist",
    "mnist_image_shape",
]

#: The IDX file names of each split: (images, labels), each also accepted with ``.gz``.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Mean and standard deviation of MNIST's 60000 training images' pixels in [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_CLASSES = 10
#: Sub-folders of ``root`` searched, in order, after ``root`` itself.
MNIST_SUBFOLDERS = ("raw", "MNIST/raw", "FashionMNIST/raw", "KMNIST/raw")

_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def _candidates(name: str) -> tuple[str, str]:
    return name, name + ".gz"


def _has_mnist_file(folder: Path) -> bool:
    return any(
        (folder / candidate).is_file()
        for pair in MNIST_FILES.values()
        for name in pair
        for candidate in _candidates(name)
    )


def find_mnist_folder(root: str | os.PathLike[str]) -> Path | None:
    """The folder under ``root`` that holds MNIST IDX files (``root`` itself, ``raw/``,
    ``MNIST/raw/``, ...), or None when none does."""
    base = Path(root)
    for folder in (base, *(base / sub for sub in MNIST_SUBFOLDERS)):
        if folder.is_dir() and _has_mnist_file(folder):
            return folder
    return None


def _find_file(folder: Path, name: str) -> Path:
    for candidate in _candidates(name):
        if (folder / candidate).is_file():
            return folder / candidate
    raise DataFileError(
        f"{folder}: no {name} (or {name}.gz); an MNIST folder holds "
        + ", ".join(n for pair in MNIST_FILES.values() for n in pair)
    )


def _read_idx(path: Path, magic: int, dims: int, what: str) -> tuple[tuple[int, ...], bytes]:
    """The sizes and the raw bytes of an unsigned-byte IDX file with ``dims`` dimensions."""
    with open_maybe_gzip(path) as handle:
        header = read_exactly(handle, 4 + 4 * dims, path, "the IDX header")
        (found,) = struct.unpack(">I", header[:4])
        if found != magic:
            raise DataFileError(
                f"{path}: not an IDX {what} file: magic number 0x{found:08x}, expected "
                f"0x{magic:08x}"
            )
        shape = struct.unpack(f">{dims}I", header[4:])
        size = int(np.prod(shape, dtype=np.int64))
        if size > MAX_FILE_BYTES:
            raise DataFileError(
                f"{path}: header promises {shape} = {size} bytes, more than the "
                f"{MAX_FILE_BYTES} a data file may hold (a damaged header?)"
            )
        if path.suffix != ".gz":
            # Compare with the file's size first: no read of a file that cannot be right.
            actual = size_of(path)
            if actual != len(header) + size:
                kind = "truncated" if actual < len(header) + size else "longer than its header says"
                raise DataFileError(
                    f"{path}: {kind}: the header promises {shape} ({len(header) + size} bytes "
                    f"with the header), the file holds {actual}"
                )
        described = f"{what} of shape {shape}"
        data = read_exactly(handle, size, path, described)
        check_at_end(handle, path, described)
    return tuple(int(d) for d in shape), data


def mnist_image_shape(root: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(1, rows, cols) of the images under ``root``, from the first image file's header
    (the data is not read); (1, 28, 28) when the folder holds only label files."""
    folder = find_mnist_folder(root)
    if folder is None:
        _missing(Path(root))
    for images_name, _ in MNIST_FILES.values():
        for candidate in _candidates(images_name):
            path = folder / candidate
            if path.is_file():
                with open_maybe_gzip(path) as handle:
                    header = read_exactly(handle, 16, path, "the IDX header")
                magic, _, rows, cols = struct.unpack(">IIII", header)
                if magic != _IMAGES_MAGIC:
                    raise DataFileError(
                        f"{path}: not an IDX images file: magic number 0x{magic:08x}, "
                        f"expected 0x{_IMAGES_MAGIC:08x}"
                    )
                return 1, rows, cols
    return 1, 28, 28


def _read_images(path: Path) -> NDArray[np.uint8]:
    shape, data = _read_idx(path, _IMAGES_MAGIC, 3, "images")
    n, rows, cols = shape
    if n == 0 or rows == 0 or cols == 0:
        raise DataFileError(f"{path}: holds no images (header sizes {shape})")
    return np.frombuffer(data, dtype=np.uint8).reshape(n, 1, rows, cols)


def _read_labels(path: Path, classes: int) -> NDArray[np.uint8]:
    _, data = _read_idx(path, _LABELS_MAGIC, 1, "labels")
    labels = np.frombuffer(data, dtype=np.uint8)
    if labels.size and int(labels.max()) >= classes:
        bad = int(np.argmax(labels >= classes))
        raise DataFileError(
            f"{path}: label {int(labels[bad])} at index {bad} is out of range 0..{classes - 1}"
        )
    return labels


def load_mnist(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] | str = "train",
    *,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """MNIST (or Fashion-MNIST) IDX files under ``root`` as a ``TensorDataset``.

    Args:
        root: the folder holding the IDX files, gzipped or not, or a folder with them in
            ``raw/``, ``MNIST/raw/``, ``FashionMNIST/raw/`` or ``KMNIST/raw/``.
        split: ``"train"`` (``train-*`` files) or ``"test"`` (``t10k-*`` files).
        dtype: a floating dtype for the images.

    Returns:
        ``(images (N, 1, rows, cols) in [0, 1] (pixel / 255), labels (N,) int64 in 0..9)``,
        in file order; rows = cols = 28 for MNIST and Fashion-MNIST.

    Raises:
        DataFileError: no IDX file under ``root``, a missing file of the split, wrong magic,
            a truncated or over-long file, different counts of images and labels, a label
            outside 0..9 (the message names the file).

    >>> import struct, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     raw = pathlib.Path(tmp, "MNIST", "raw")
    ...     raw.mkdir(parents=True)
    ...     pixels = struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(2 * 784)
    ...     digits = struct.pack(">II", 0x801, 2) + bytes([7, 1])
    ...     _ = (raw / "t10k-images-idx3-ubyte").write_bytes(pixels)
    ...     _ = (raw / "t10k-labels-idx1-ubyte").write_bytes(digits)
    ...     images, labels = load_mnist(tmp, split="test").tensors
    >>> tuple(images.shape), labels.tolist()
    ((2, 1, 28, 28), [7, 1])
    """
    if split not in MNIST_FILES:
        raise UsageError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    check_float_dtype("load_mnist", dtype)
    folder = find_mnist_folder(root)
    if folder is None:
        _missing(Path(root))
    images_name, labels_name = MNIST_FILES[split]
    images_path = _find_file(folder, images_name)
    labels_path = _find_file(folder, labels_name)
    images = _read_images(images_path)
    labels = _read_labels(labels_path, MNIST_CLASSES)
    if len(images) != len(labels):
        raise DataFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return TensorDataset(images_to_tensor(images, dtype), torch.from_numpy(labels.astype(np.int64)))


def _missing(root: Path) -> NoReturn:
    if not root.is_dir():
        raise DataFileError(f"{root}: no such folder (an MNIST folder holds the IDX files)")
    names = ", ".join(n for pair in MNIST_FILES.values() for n in pair)
    places = ", ".join(sub + "/" for sub in MNIST_SUBFOLDERS)
    raise DataFileError(f"{root}: no MNIST IDX files ({names}, or .gz) in it or in {places}")
