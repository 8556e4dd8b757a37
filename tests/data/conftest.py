"""Writers of small data files in the real MNIST (IDX) and CIFAR (binary, python) formats."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def random_images(n: int, shape: Sequence[int], seed: int) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def random_labels(n: int, classes: int, seed: int) -> NDArray[np.uint8]:
    return np.random.default_rng(seed + 1000).integers(0, classes, size=n, dtype=np.uint8)


def write_idx(path: Path, magic: int, shape: Sequence[int], data: bytes) -> Path:
    """An IDX file: magic, big-endian uint32 sizes, data; gzipped when the name ends in .gz."""
    content = struct.pack(f">I{len(shape)}I", magic, *shape) + data
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        path.write_bytes(content)
    return path


def write_mnist(
    folder: Path,
    split: str,
    images: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    *,
    gz: bool = False,
) -> tuple[Path, Path]:
    """The two IDX files of ``split`` ("train" or "t10k" names) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    images_path = write_idx(
        folder / f"{prefix}-images-idx3-ubyte{suffix}", 0x803, images.shape, images.tobytes()
    )
    labels_path = write_idx(
        folder / f"{prefix}-labels-idx1-ubyte{suffix}", 0x801, labels.shape, labels.tobytes()
    )
    return images_path, labels_path


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Pickles bytes and str as Python 2 str (SHORT_BINSTRING / BINSTRING), as cPickle
    wrote the official CIFAR files, instead of Python 3's ``_codecs.encode`` reduction."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:  # Python 2 str: bytes (the files hold only ASCII)
        self.save_bytes(obj.encode("ascii"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj: Any) -> bytes:
    """``obj`` pickled at protocol 2 the way Python 2 did: str keys and array buffers as
    binary strings, numpy's array reconstruction under its old name numpy.core.multiarray."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def write_cifar_binary(
    root: Path,
    name: str,
    split: str,
    images: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    coarse: NDArray[np.uint8] | None = None,
) -> list[Path]:
    """The binary files of ``split`` under ``root/cifar-10-batches-bin`` (train split over
    the five data batches in order) or ``root/cifar-100-binary``."""
    flat = images.reshape(len(images), -1)
    if name == "cifar10":
        folder = root / "cifar-10-batches-bin"
        records = np.concatenate([labels[:, None], flat], axis=1)
        if split == "train":
            parts = np.array_split(records, 5)
            names = [f"data_batch_{i}.bin" for i in range(1, 6)]
        else:
            parts, names = [records], ["test_batch.bin"]
    else:
        folder = root / "cifar-100-binary"
        assert coarse is not None
        records = np.concatenate([coarse[:, None], labels[:, None], flat], axis=1)
        parts, names = [records], [f"{split}.bin"]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, file_name in zip(parts, names, strict=True):
        (folder / file_name).write_bytes(np.ascontiguousarray(part).tobytes())
        paths.append(folder / file_name)
    return paths


def write_cifar_python(
    root: Path,
    name: str,
    split: str,
    images: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    coarse: NDArray[np.uint8] | None = None,
    *,
    python2: bool = False,
) -> list[Path]:
    """The pickled batches of ``split`` under ``root/cifar-10-batches-py`` or
    ``root/cifar-100-python``: dicts with bytes keys, data uint8 (N, 3072), list labels,
    protocol 2 (as Python 3 writes it, or as Python 2 did with ``python2=True``)."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    dump = python2_pickle if python2 else (lambda obj: pickle.dumps(obj, protocol=2))
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        if split == "train":
            chunks = np.array_split(np.arange(len(flat)), 5)
            names = list(CIFAR10_TRAIN)
        else:
            chunks, names = [np.arange(len(flat))], ["test_batch"]
        batches = [
            {
                b"batch_label": f"batch {i}".encode(),
                b"labels": [int(v) for v in labels[index]],
                b"data": flat[index],
                b"filenames": [f"img_{j}.png".encode() for j in index],
            }
            for i, index in enumerate(chunks)
        ]
    else:
        folder = root / "cifar-100-python"
        assert coarse is not None
        names = [split]
        batches = [
            {
                b"filenames": [f"img_{j}.png".encode() for j in range(len(flat))],
                b"batch_label": b"training batch 1 of 1",
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) for v in coarse],
                b"data": flat,
            }
        ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for batch, file_name in zip(batches, names, strict=True):
        (folder / file_name).write_bytes(dump(batch))
        paths.append(folder / file_name)
    return paths


def tar_folder(folder: Path, archive: Path) -> Path:
    """``folder`` (a batches folder) as a gzipped tar archive with members ``folder.name/*``."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


class Writers:
    random_images = staticmethod(random_images)
    random_labels = staticmethod(random_labels)
    write_idx = staticmethod(write_idx)
    write_mnist = staticmethod(write_mnist)
    write_cifar_binary = staticmethod(write_cifar_binary)
    write_cifar_python = staticmethod(write_cifar_python)
    python2_pickle = staticmethod(python2_pickle)
    tar_folder = staticmethod(tar_folder)


@pytest.fixture
def writers() -> type[Writers]:
    """The file writers above (a fixture: tests/ has no package to import them from)."""
    return Writers
