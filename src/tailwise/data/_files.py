"""What the local file loaders share: the error they raise and bounded reads.

A data file is read only as far as its own format promises (a header's counts, a record
size), never "to the end, whatever that is": a damaged or hostile file cannot make a loader
allocate more than the data it claims to hold, and a file longer or shorter than it claims is
an error naming it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import IO

import numpy as np
import torch
from numpy.typing import NDArray

from tailwise._errors import UsageError

__all__ = [
    "MAX_FILE_BYTES",
    "DataFileError",
    "check_at_end",
    "check_float_dtype",
    "images_to_tensor",
    "open_maybe_gzip",
    "read_exactly",
    "size_of",
]

# What a damaged file (or gzip stream) raises while it is read.
_READ_ERRORS = (OSError, EOFError, zlib.error)
_CHUNK = 2**26  # 64 MiB: a read never allocates more than this ahead of the data

#: The largest data file (decompressed) a loader reads: 4 GiB. The largest official file is
#: MNIST's train-images-idx3-ubyte (47 MB); the bound only stops damaged headers.
MAX_FILE_BYTES = 4 * 2**30


class DataFileError(UsageError):
    """A data file is missing, damaged or not in the format its name says; the message names
    the file and what was expected."""


def open_maybe_gzip(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed on the fly when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_exactly(handle: IO[bytes], size: int, path: Path | str, what: str) -> bytes:
    """Exactly ``size`` bytes from ``handle``; :class:`DataFileError` if the file ends early
    (``what`` says what was being read, e.g. "10000 images of 28 x 28")."""
    # In chunks: one read(size) would allocate ``size`` bytes up front, whatever the file holds.
    chunks: list[bytes] = []
    held = 0
    try:
        while held < size:
            chunk = handle.read(min(_CHUNK, size - held))
            if not chunk:
                break
            chunks.append(chunk)
            held += len(chunk)
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: damaged while reading {what} ({exc})") from None
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) != size:
        raise DataFileError(
            f"{path}: truncated: {what} need {size} bytes, the file holds {len(data)}"
        )
    return data


def check_at_end(handle: IO[bytes], path: Path | str, what: str) -> None:
    """:class:`DataFileError` unless ``handle`` is at its end: a file longer than its header
    says is not the file it claims to be. Reads at most one byte."""
    try:
        extra = handle.read(1)
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: damaged after {what} ({exc})") from None
    if extra:
        raise DataFileError(f"{path}: longer than its header says (data after {what})")


def size_of(path: Path) -> int:
    """The size of ``path`` in bytes (:class:`DataFileError` if it cannot be read)."""
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def check_float_dtype(where: str, dtype: torch.dtype) -> None:
    """:class:`tailwise.UsageError` unless ``dtype`` is a floating torch dtype."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise UsageError(f"{where}: dtype must be a floating torch.dtype, got {dtype!r}")


def images_to_tensor(images: NDArray[np.uint8], dtype: torch.dtype) -> torch.Tensor:
    """uint8 images (any shape) as ``dtype`` values v / 255 in [0, 1], in memory of their own
    (the input may be a read-only view of a file's bytes): one copy, straight to ``dtype``."""
    numpy_dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(dtype)
    if numpy_dtype is None:  # float16 / bfloat16: through a uint8 copy
        return torch.from_numpy(np.array(images, dtype=np.uint8)).to(dtype).div_(255)
    return torch.from_numpy(images.astype(numpy_dtype)).div_(255)
