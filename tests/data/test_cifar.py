"""tailwise.data.cifar: both official formats (binary records, Python 2 pickles) of CIFAR-10
and CIFAR-100 read back exactly, from folders and archives; damaged files refused; a pickle
that would run code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tailwise._errors import UsageError
from tailwise.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DataFileError,
    load_cifar,
)


def _data(n: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8),
        "labels": rng.integers(0, classes, size=n, dtype=np.uint8),
        "coarse": rng.integers(0, 20, size=n, dtype=np.uint8),
    }


def _check(dataset: Any, images: np.ndarray, labels: np.ndarray) -> None:
    x, y = dataset.tensors
    assert x.shape == (len(images), 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255))
    assert torch.equal(x, expected)
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def _write(writers: Any, root: Path, name: str, fmt: str, seed: int = 0, **kw: Any) -> dict:
    classes = 10 if name == "cifar10" else 100
    splits = {"train": _data(10, classes, seed), "test": _data(4, classes, seed + 1)}
    write = writers.write_cifar_binary if fmt == "binary" else writers.write_cifar_python
    for split, d in splits.items():
        write(root, name, split, d["images"], d["labels"], d["coarse"], **kw)
    return splits


@pytest.mark.parametrize("fmt", ["binary", "python"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_read_back_exactly(tmp_path: Path, writers: Any, name: str, fmt: str) -> None:
    splits = _write(writers, tmp_path, name, fmt)
    for split, d in splits.items():
        _check(load_cifar(tmp_path, name, split), d["images"], d["labels"])
    if name == "cifar100":
        _check(
            load_cifar(tmp_path, name, "test", label="coarse"),
            **{"images": splits["test"]["images"], "labels": splits["test"]["coarse"]},
        )


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_python2_pickles_like_the_official_files(tmp_path: Path, writers: Any, name: str) -> None:
    splits = _write(writers, tmp_path, name, "python", python2=True)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    first = (folder / ("data_batch_1" if name == "cifar10" else "train")).read_bytes()
    assert b"numpy.core.multiarray" in first and b"_codecs" not in first
    for split, d in splits.items():
        _check(load_cifar(tmp_path, name, split), d["images"], d["labels"])


def test_the_batches_folder_itself_and_channel_layout(tmp_path: Path, writers: Any) -> None:
    d = _write(writers, tmp_path, "cifar10", "binary")["train"]
    x, _ = load_cifar(tmp_path / "cifar-10-batches-bin").tensors
    _check(load_cifar(tmp_path / "cifar-10-batches-bin"), d["images"], d["labels"])
    # The first 1024 bytes of a record are the red plane, row by row.
    record = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()[:3073]
    assert torch.equal(
        x[0, 0].flatten() * 255, torch.tensor(list(record[1:1025]), dtype=torch.float32)
    )
    assert torch.equal(
        x[0, 2].flatten() * 255, torch.tensor(list(record[2049:3073]), dtype=torch.float32)
    )


@pytest.mark.parametrize("fmt", ["binary", "python"])
def test_archives_are_read_in_memory(tmp_path: Path, writers: Any, fmt: str) -> None:
    source = tmp_path / "source"
    splits = _write(writers, source, "cifar100", fmt)
    folder = "cifar-100-binary" if fmt == "binary" else "cifar-100-python"
    archive_name = f"{'cifar-100-binary' if fmt == 'binary' else 'cifar-100-python'}.tar.gz"
    root = tmp_path / "root"
    root.mkdir()
    archive = writers.tar_folder(source / folder, root / archive_name)
    before = sorted(p.name for p in root.iterdir())
    for where in (archive, root):  # the archive itself, or the folder holding it
        for split, d in splits.items():
            _check(load_cifar(where, "cifar100", split), d["images"], d["labels"])
    assert sorted(p.name for p in root.iterdir()) == before  # nothing extracted
    # A renamed archive is recognised by its members' folder.
    renamed = archive.rename(tmp_path / "download.tgz")
    _check(
        load_cifar(renamed, "cifar100", "test"),
        **{"images": splits["test"]["images"], "labels": splits["test"]["labels"]},
    )


def test_archive_missing_a_member(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path / "src", "cifar10", "binary")
    (tmp_path / "src" / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    archive = writers.tar_folder(
        tmp_path / "src" / "cifar-10-batches-bin", tmp_path / "cifar-10-binary.tar.gz"
    )
    with pytest.raises(
        DataFileError, match=r"cifar-10-binary.tar.gz: missing cifar-10-batches-bin/data_batch_4"
    ):
        load_cifar(archive)
    archive.write_bytes(b"not a tar archive")
    with pytest.raises(DataFileError, match="not a readable tar archive"):
        load_cifar(archive)


def test_binary_is_preferred_when_both_formats_are_there(tmp_path: Path, writers: Any) -> None:
    binary = _write(writers, tmp_path, "cifar10", "binary", seed=0)
    _write(writers, tmp_path, "cifar10", "python", seed=5)
    _check(load_cifar(tmp_path), binary["train"]["images"], binary["train"]["labels"])


def test_normalize_uses_the_channel_constants(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path, "cifar10", "binary")
    _write(writers, tmp_path, "cifar100", "binary")
    for name, mean, std in (
        ("cifar10", CIFAR10_MEAN, CIFAR10_STD),
        ("cifar100", CIFAR100_MEAN, CIFAR100_STD),
    ):
        plain, _ = load_cifar(tmp_path, name, "test").tensors
        normal, _ = load_cifar(tmp_path, name, "test", normalize=True).tensors
        expected = (plain - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        torch.testing.assert_close(normal, expected, rtol=0, atol=1e-6)


def test_missing_files_are_listed_with_their_place(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path, "cifar10", "binary")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(
        DataFileError,
        match=r"cifar-10-batches-bin: cifar10 \(binary\) is missing data_batch_3.bin; its "
        r"train split is data_batch_1.bin, .*data_batch_5.bin",
    ):
        load_cifar(tmp_path)
    load_cifar(tmp_path, split="test")  # the test split is complete
    with pytest.raises(
        DataFileError,
        match=r"no cifar100 files; expected.*cifar-100-binary/\{train.bin, test.bin\}",
    ):
        load_cifar(tmp_path, "cifar100")
    with pytest.raises(DataFileError, match="no such file or folder"):
        load_cifar(tmp_path / "absent")


def test_damaged_binary_files(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path, "cifar100", "binary")
    path = tmp_path / "cifar-100-binary" / "test.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(
        DataFileError, match=r"test.bin: 12291 bytes is not a whole number of cifar100 records"
    ):
        load_cifar(tmp_path, "cifar100", "test")
    path.write_bytes(b"")
    with pytest.raises(DataFileError, match=r"test.bin: 0 bytes"):
        load_cifar(tmp_path, "cifar100", "test")
    bad = bytearray(data)
    bad[3074 + 1] = 100  # the fine label of the second record
    path.write_bytes(bytes(bad))
    with pytest.raises(
        DataFileError, match=r"test.bin: label 100 at index 1 is out of range 0..99"
    ):
        load_cifar(tmp_path, "cifar100", "test")
    bad[3074 + 0] = 20  # coarse labels have 20 classes
    bad[3074 + 1] = 5
    path.write_bytes(bytes(bad))
    with pytest.raises(DataFileError, match=r"label 20 at index 1 is out of range 0..19"):
        load_cifar(tmp_path, "cifar100", "test", label="coarse")


def _pickle_batch(path: Path, batch: dict[bytes, Any]) -> None:
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"labels": [1, 2]}, r"no 'data' entry \(the batch has labels\)"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"no 'labels' entry"),
        (
            {b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]},
            r"'data' must be a uint8 array \(N, 3072\), got float32 array of shape \(2, 3072\)",
        ),
        (
            {b"data": np.zeros((2, 1024), np.uint8), b"labels": [1, 2]},
            "'data' must be .*got uint8 array of shape \\(2, 1024\\)",
        ),
        ({b"data": b"raw", b"labels": [1, 2]}, "'data' must be .*got bytes"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "2 images but 1 entries"),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, "2"]},
            "'labels' must be a list of ints",
        ),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "label 10 at index 1"),
    ],
)
def test_damaged_python_batches(
    tmp_path: Path, writers: Any, batch: dict[bytes, Any], message: str
) -> None:
    _write(writers, tmp_path, "cifar10", "python")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    _pickle_batch(path, batch)
    with pytest.raises(DataFileError, match=rf"test_batch: {message}"):
        load_cifar(tmp_path, split="test")


def test_unreadable_pickles(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path, "cifar10", "python")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataFileError, match="test_batch: not a readable CIFAR python batch"):
        load_cifar(tmp_path, split="test")
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataFileError, match="test_batch: a CIFAR python batch is a dict, got list"):
        load_cifar(tmp_path, split="test")


class _RunsCode:
    """Unpickling this calls os.system: what a hostile "data batch" would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("payload", [_RunsCode, _Evaluates])
def test_a_pickle_that_runs_code_is_refused_and_does_not_run(
    tmp_path: Path, writers: Any, protocol: int, payload: type
) -> None:
    _write(writers, tmp_path, "cifar10", "python")
    marker = tmp_path / "pwned"
    # Reference check: the payload does run under a plain pickle.loads.
    pickle.loads(pickle.dumps(payload(tmp_path / "control"), protocol=protocol))
    assert (tmp_path / "control").exists()
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = {b"labels": payload(marker), b"data": np.zeros((2, 3072), np.uint8)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    refused = "(posix|os).system" if payload is _RunsCode else "(builtins|__builtin__).eval"
    with pytest.raises(
        DataFileError, match=rf"data_batch_2: refused to unpickle the global {refused}"
    ):
        load_cifar(tmp_path)
    assert not marker.exists()


def test_only_latin1_encoding_is_allowed(tmp_path: Path, writers: Any) -> None:
    """Python 3 writes bytes at protocol 2 as _codecs.encode(text, "latin1"); the unpickler
    allows that call and no other codec."""
    import pickletools

    _write(writers, tmp_path, "cifar10", "python")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    content = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, protocol=2)
    assert b"latin1" in content
    path.write_bytes(content.replace(b"latin1", b"rot_13", 1))
    assert any(op.name == "GLOBAL" for op, _, _ in pickletools.genops(path.read_bytes()))
    with pytest.raises(DataFileError, match="only latin-1 is allowed"):
        load_cifar(tmp_path, split="test")


def test_bad_arguments(tmp_path: Path, writers: Any) -> None:
    _write(writers, tmp_path, "cifar10", "binary")
    with pytest.raises(UsageError, match="name must be 'cifar10' or 'cifar100'"):
        load_cifar(tmp_path, "cifar5")
    with pytest.raises(UsageError, match="split must be"):
        load_cifar(tmp_path, split="val")
    with pytest.raises(UsageError, match="label must be one of 'fine' for cifar10"):
        load_cifar(tmp_path, label="coarse")
    with pytest.raises(UsageError, match="dtype must be a floating"):
        load_cifar(tmp_path, dtype=torch.uint8)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_batches_repickled_by_python3_load_too(tmp_path: Path, writers: Any, protocol: int) -> None:
    d = _write(writers, tmp_path, "cifar10", "python")["test"]
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    _check(load_cifar(tmp_path, split="test"), d["images"], d["labels"])
