"""CIFAR-10 and CIFAR-100 from the official files in a local folder (no download).

Both official formats are read (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):

- binary: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``, records of
  1 label byte + 3072 pixel bytes; ``cifar-100-binary/train.bin`` and ``test.bin``, records of
  2 label bytes (coarse, fine) + 3072 pixel bytes.
- python: ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``;
  ``cifar-100-python/train`` and ``test``: pickled dicts (Python 2, protocol 2, bytes keys)
  with ``b"data"`` (a uint8 array (N, 3072)) and ``b"labels"`` (CIFAR-10) or
  ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100), lists of ints.

The 3072 bytes of an image are three channel planes (R, G, B) of 32 rows of 32 pixels, so
they reshape to (3, 32, 32) directly.

``root`` may be the folder holding the batches folder, the batches folder itself, or the
downloaded archive (``cifar-10-python.tar.gz`` etc., or a folder holding it): archive members
are read in memory, nothing is extracted to disk, and a member larger than
:data:`MAX_MEMBER_BYTES` is refused.

The pickles are read by a restricted unpickler that resolves only the globals these files
need (numpy's array reconstruction, ``numpy.ndarray``, ``numpy.dtype``), ``_codecs.encode``
limited to latin-1 (which Python 3 writes for bytes at protocol 2) and numpy's
``_frombuffer`` (arrays re-pickled at protocol 5); any other global (a file that would run
code when unpickled) raises :class:`DataFileError` naming the file and the
refused global, before anything of it runs.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset

from tailwise._errors import UsageError
from tailwise.data._files import (
    MAX_FILE_BYTES,
    DataFileError,
    check_float_dtype,
    images_to_tensor,
    size_of,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_LAYOUTS",
    "CifarLayout",
    "CifarSource",
    "find_cifar",
    "load_cifar",
]

#: Per-channel (R, G, B) mean and standard deviation of the pixels (in [0, 1]) of the 50000
#: training images; ``normalize=True`` maps x to (x - mean) / std.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: The largest archive member read into memory (the largest official one is CIFAR-100's
#: python ``train``, 155 MB).
MAX_MEMBER_BYTES = 2**30

_PIXELS = 3 * 32 * 32
_CLASSES = {"cifar10": {"fine": 10}, "cifar100": {"fine": 100, "coarse": 20}}


@dataclass(frozen=True)
class CifarLayout:
    """One official layout: data set, format, batches folder, archive and file names."""

    name: Literal["cifar10", "cifar100"]
    format: Literal["binary", "python"]
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def files(self, split: str) -> tuple[str, ...]:
        """The file names of ``split`` ("train" or "test"), in reading order."""
        return self.train if split == "train" else self.test

    @property
    def label_bytes(self) -> int:
        """Label bytes before the pixels of a binary record (1, or 2 for coarse + fine)."""
        return 1 if self.name == "cifar10" else 2

    def describe(self) -> str:
        """E.g. ``cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin}``."""
        return f"{self.folder}/{{{', '.join(self.train + self.test)}}}"


#: The four official layouts, binary before python (preferred when both are present: no
#: unpickling).
CIFAR_LAYOUTS: tuple[CifarLayout, ...] = (
    CifarLayout(
        "cifar10",
        "binary",
        "cifar-10-batches-bin",
        "cifar-10-binary.tar.gz",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
    ),
    CifarLayout(
        "cifar10",
        "python",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
    ),
    CifarLayout(
        "cifar100",
        "binary",
        "cifar-100-binary",
        "cifar-100-binary.tar.gz",
        ("train.bin",),
        ("test.bin",),
    ),
    CifarLayout(
        "cifar100", "python", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",)
    ),
)


@dataclass(frozen=True)
class CifarSource:
    """A layout found under a root: its files in ``folder``, or in the tar archive ``archive``."""

    layout: CifarLayout
    folder: Path | None = None
    archive: Path | None = None

    @property
    def where(self) -> Path:
        place = self.folder if self.folder is not None else self.archive
        assert place is not None
        return place


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def _archive_layout(path: Path) -> CifarLayout | None:
    """The layout of a tar archive: by its official name, else by its first member's folder."""
    for layout in CIFAR_LAYOUTS:
        if path.name == layout.archive:
            return layout
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
    except (OSError, tarfile.TarError, EOFError):
        return None
    if first is None:
        return None
    top = first.name.strip("/").split("/", 1)[0]
    return next((layout for layout in CIFAR_LAYOUTS if layout.folder == top), None)


def _holds_any(folder: Path, names: Iterable[str]) -> bool:
    return any((folder / name).is_file() for name in names)


def find_cifar(
    root: str | os.PathLike[str], name: Literal["cifar10", "cifar100"] | str | None = None
) -> list[CifarSource]:
    """The CIFAR layouts under ``root`` (of data set ``name`` only, if given), binary first.

    A layout is found as its batches folder under ``root`` (``root/cifar-10-batches-py``),
    as ``root`` itself (a folder holding its files), or as its tar archive (``root``, or
    ``root/cifar-10-python.tar.gz``); the first of these that exists counts.
    """
    base = Path(root)
    layouts = [layout for layout in CIFAR_LAYOUTS if name is None or layout.name == name]
    if base.is_file():
        if not _is_archive(base):
            return []
        found_layout = _archive_layout(base)
        if found_layout is None or found_layout not in layouts:
            return []
        return [CifarSource(found_layout, archive=base)]
    if not base.is_dir():
        return []
    found = []
    for layout in layouts:
        names = layout.train + layout.test
        if _holds_any(base / layout.folder, names):
            found.append(CifarSource(layout, folder=base / layout.folder))
        elif _holds_any(base, names):  # the layouts' file names are all different
            found.append(CifarSource(layout, folder=base))
        elif (base / layout.archive).is_file():
            found.append(CifarSource(layout, archive=base / layout.archive))
    return found


# ---------------------------------------------------------------------------- reading files


def _read_folder_file(path: Path) -> bytes:
    size = size_of(path)
    if size > MAX_FILE_BYTES:
        raise DataFileError(f"{path}: {size} bytes, more than a CIFAR file holds")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_archive_members(archive: Path, folder: str, names: tuple[str, ...]) -> list[bytes]:
    """The members ``folder/<name>`` of a tar archive, in memory, in the order of ``names``."""
    wanted = {f"{folder}/{name}": name for name in names}
    data: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                key = member.name.lstrip("./")
                if key not in wanted:
                    continue
                if not member.isfile():
                    raise DataFileError(f"{archive}: {member.name} is not a regular file")
                if member.size > MAX_MEMBER_BYTES:
                    raise DataFileError(
                        f"{archive}: {member.name} is {member.size} bytes, more than the "
                        f"{MAX_MEMBER_BYTES} a CIFAR file holds"
                    )
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                content = handle.read(member.size)
                if len(content) != member.size:
                    raise DataFileError(f"{archive}: {member.name} is truncated")
                data[wanted[key]] = content
                if len(data) == len(names):
                    break
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataFileError(f"{archive}: not a readable tar archive ({exc})") from None
    missing = [name for name in names if name not in data]
    if missing:
        raise DataFileError(
            f"{archive}: missing {', '.join(f'{folder}/{m}' for m in missing)}; expected "
            f"{', '.join(f'{folder}/{n}' for n in names)}"
        )
    return [data[name] for name in names]


def _read_files(found: CifarSource, split: str) -> list[tuple[str, bytes]]:
    """(display path, bytes) of each file of ``split``, in reading order."""
    layout = found.layout
    names = layout.files(split)
    if found.archive is not None:
        contents = _read_archive_members(found.archive, layout.folder, names)
        return [
            (f"{found.archive}:{layout.folder}/{name}", content)
            for name, content in zip(names, contents, strict=True)
        ]
    assert found.folder is not None
    missing = [name for name in names if not (found.folder / name).is_file()]
    if missing:
        raise DataFileError(
            f"{found.folder}: {layout.name} ({layout.format}) is missing "
            f"{', '.join(missing)}; its {split} split is {', '.join(names)}"
        )
    return [(str(found.folder / name), _read_folder_file(found.folder / name)) for name in names]


def _parse_binary(
    where: str, data: bytes, layout: CifarLayout, label: str
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    record = layout.label_bytes + _PIXELS
    if not data or len(data) % record:
        raise DataFileError(
            f"{where}: {len(data)} bytes is not a whole number of {layout.name} records of "
            f"{record} bytes ({layout.label_bytes} label + {_PIXELS} pixel bytes)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    column = 0 if layout.name == "cifar10" or label == "coarse" else 1
    labels = records[:, column].astype(np.int64)
    return records[:, layout.label_bytes :].reshape(-1, 3, 32, 32), labels


# What the official pickles reference, resolved to the objects themselves (never imported by
# the name the file gives).
def _numpy_function(name: str, modules: tuple[str, ...]) -> Callable[..., Any]:
    for module in modules:
        try:
            function: Callable[..., Any] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        return function
    raise ImportError(f"numpy's {name} was not found")  # pragma: no cover


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2, and nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin-1 is allowed")
    return text.encode("latin1")


def _allowed_globals() -> Mapping[tuple[str, str], Any]:
    reconstruct = _numpy_function(
        "_reconstruct", ("numpy._core.multiarray", "numpy.core.multiarray")
    )
    frombuffer = _numpy_function("_frombuffer", ("numpy._core.numeric", "numpy.core.numeric"))
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        # Arrays re-pickled at protocol 5 (Python 3.8+ with protocol=5): an array from bytes.
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals of :func:`_allowed_globals`; anything else is refused."""

    def __init__(self, data: bytes, where: str) -> None:
        # Python 2 pickles: str becomes bytes (keys b"data", array buffers stay bytes).
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._where = where
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DataFileError(
                f"{self._where}: refused to unpickle the global {module}.{name}: a CIFAR "
                "python batch holds only dicts, lists, bytes, numbers and numpy arrays"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DataFileError(f"{self._where}: refused a persistent id in a CIFAR pickle")


def _unpickle(where: str, data: bytes) -> dict[str, Any]:
    try:
        loaded = _CifarUnpickler(data, where).load()
    except DataFileError:
        raise
    except Exception as exc:  # anything a damaged pickle raises (UnpicklingError, EOF, ...)
        raise DataFileError(f"{where}: not a readable CIFAR python batch ({exc!r})") from None
    if not isinstance(loaded, dict):
        raise DataFileError(f"{where}: a CIFAR python batch is a dict, got {type(loaded).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in loaded.items()}


def _parse_python(
    where: str, data: bytes, layout: CifarLayout, label: str
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    batch = _unpickle(where, data)
    key = "labels" if layout.name == "cifar10" else f"{label}_labels"
    for needed in ("data", key):
        if needed not in batch:
            raise DataFileError(
                f"{where}: no {needed!r} entry (the batch has {', '.join(sorted(batch))})"
            )
    images = batch["data"]
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 2
        and images.shape[1] == _PIXELS
    ):
        shown = (
            f"{images.dtype} array of shape {images.shape}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise DataFileError(f"{where}: 'data' must be a uint8 array (N, {_PIXELS}), got {shown}")
    raw = batch[key]
    if not (
        isinstance(raw, (list, tuple, np.ndarray))
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw)
    ):
        raise DataFileError(f"{where}: {key!r} must be a list of ints")
    labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise DataFileError(f"{where}: {len(images)} images but {len(labels)} entries in {key!r}")
    return images.reshape(-1, 3, 32, 32), labels


def _check_labels(where: str, labels: NDArray[np.int64], classes: int) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise DataFileError(
            f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{classes - 1}"
        )


def _not_found(root: Path, name: str) -> DataFileError:
    layouts = [layout for layout in CIFAR_LAYOUTS if layout.name == name]
    if not root.exists():
        return DataFileError(f"{root}: no such file or folder (looking for {name})")
    listed = "; ".join(f"{layout.describe()} or the archive {layout.archive}" for layout in layouts)
    return DataFileError(
        f"{root}: no {name} files; expected, in this folder or as this folder: {listed}"
    )


def load_cifar(
    root: str | os.PathLike[str],
    name: Literal["cifar10", "cifar100"] | str = "cifar10",
    split: Literal["train", "test"] | str = "train",
    *,
    label: Literal["fine", "coarse"] | str = "fine",
    normalize: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """CIFAR-10 or CIFAR-100 files under ``root`` (binary or python format) as a ``TensorDataset``.

    Args:
        root: the folder holding ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` /
            ``cifar-100-binary`` / ``cifar-100-python`` (or their ``.tar.gz`` archives), that
            batches folder itself, or the archive itself.
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` (the five data batches of CIFAR-10 in order, or CIFAR-100's
            ``train``) or ``"test"``.
        label: CIFAR-100's ``"fine"`` (100 classes, default) or ``"coarse"`` (20
            superclasses) labels; CIFAR-10 has only ``"fine"``.
        normalize: map each channel c to (x - mean[c]) / std[c] with :data:`CIFAR10_MEAN`,
            :data:`CIFAR10_STD` (or the CIFAR-100 constants); default keep [0, 1].
        dtype: a floating dtype for the images.

    Returns:
        ``(images (N, 3, 32, 32) in [0, 1] (pixel / 255), labels (N,) int64)``, in file
        order (N = 50000 / 10000 for the official files). When both formats are present the
        binary one is read.

    Raises:
        DataFileError: no files, a missing batch (the message lists the expected files and
            where), a file that is not a whole number of records, a damaged or refused
            pickle, images and labels of different counts, a label out of range.
    """
    if name not in _CLASSES:
        raise UsageError(f"load_cifar: name must be 'cifar10' or 'cifar100', got {name!r}")
    if split not in ("train", "test"):
        raise UsageError(f"load_cifar: split must be 'train' or 'test', got {split!r}")
    if label not in _CLASSES[name]:
        raise UsageError(
            f"load_cifar: label must be one of {', '.join(map(repr, _CLASSES[name]))} for "
            f"{name}, got {label!r}"
        )
    check_float_dtype("load_cifar", dtype)
    base = Path(root)
    found = find_cifar(base, name)
    if not found:
        raise _not_found(base, name)
    chosen = found[0]
    parse = _parse_binary if chosen.layout.format == "binary" else _parse_python
    images, labels = [], []
    for where, data in _read_files(chosen, split):
        batch_images, batch_labels = parse(where, data, chosen.layout, label)
        _check_labels(where, batch_labels, _CLASSES[name][label])
        images.append(batch_images)
        labels.append(batch_labels)
    x = images_to_tensor(np.concatenate(images) if len(images) > 1 else images[0], dtype)
    if normalize:
        mean, std = (
            (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
        )
        x.sub_(torch.tensor(mean, dtype=dtype)[:, None, None])
        x.div_(torch.tensor(std, dtype=dtype)[:, None, None])
    return TensorDataset(x, torch.from_numpy(np.concatenate(labels)))
