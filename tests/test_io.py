"""Atomic writes (``tailwise._io``): late failures are one :class:`OutputError` naming the file,
the old file stays intact, no temporary file is left behind, the umask is honoured, and
temporary files of killed writers are cleaned up (issue 9, item 4)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import tailwise
from tailwise._io import OutputError, atomic_open, atomic_path, check_output_path, write_table

ROOT = os.geteuid() == 0
needs_permissions = pytest.mark.skipif(ROOT, reason="root ignores file permissions")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_output_error_is_a_usage_error() -> None:
    assert issubclass(OutputError, tailwise.UsageError)


def test_temp_file_is_hidden_beside_the_target_and_named_by_pid(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".table.csv.{os.getpid()}.")
        assert tmp.name.endswith(".tmp")
        assert tmp.exists() and not target.exists()
        tmp.write_text("x")
    assert target.read_text() == "x"
    assert leftovers(tmp_path) == []


def test_a_directory_in_the_way_is_one_output_error_and_leaves_it_intact(
    tmp_path: Path,
) -> None:
    """A late failure: os.replace onto a non-empty directory fails after the work."""
    target = tmp_path / "table.csv"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OutputError) as caught, atomic_path(target) as tmp:
        tmp.write_text("new")
    message = str(caught.value)
    assert str(target) in message and "\n" not in message
    assert isinstance(caught.value.__cause__, OSError)
    assert (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert leftovers(tmp_path) == []


def test_a_parent_that_is_a_file_is_one_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("data")
    target = blocker / "sub" / "t.csv"
    with pytest.raises(OutputError, match=re.escape(str(target))), atomic_path(target):
        pytest.fail("the body must not run")
    assert blocker.read_text() == "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_disk_full_during_the_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    with atomic_open(target) as handle:
        handle.write("old")
    with pytest.raises(OutputError) as caught, atomic_open(target) as handle:
        handle.write("new, half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(target) in str(caught.value)
    assert os.strerror(errno.ENOSPC) in str(caught.value)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_failed_replace_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "table.csv"
    write_table(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="cannot write"):
        write_table(pd.DataFrame({"a": [2, 3]}), target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, ValueError, SystemExit])
def test_other_exceptions_pass_through_and_leave_nothing(
    tmp_path: Path, interrupt: type[BaseException]
) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(interrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        raise interrupt()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("umask_022")
def test_atomic_path_and_atomic_open_honour_the_umask(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"a")
    with atomic_open(tmp_path / "b.txt") as handle:
        handle.write("b")
    with atomic_open(tmp_path / "c.bin", "wb") as handle:
        handle.write(b"c")
    write_table(pd.DataFrame({"x": [1]}), tmp_path / "d.csv")
    for name in ("a.bin", "b.txt", "c.bin", "d.csv"):
        assert mode(tmp_path / name) == 0o644, name
    os.umask(0o002)
    with atomic_open(tmp_path / "e.txt") as handle:
        handle.write("e")
    assert mode(tmp_path / "e.txt") == 0o664


@pytest.mark.usefixtures("umask_022")
def test_the_umask_holds_when_the_writer_replaces_the_temp_file(tmp_path: Path) -> None:
    """safetensors writes its own temporary file and renames it onto the path it is given."""
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file({"w": torch.zeros(3, 2)}, str(tmp))
    assert mode(target) == 0o644
    assert leftovers(tmp_path) == []
    # Replacing an existing file: the new mode comes from the umask, not from the old file.
    target.chmod(0o600)
    with atomic_path(target) as tmp:
        save_file({"w": torch.ones(3, 2)}, str(tmp))
    assert mode(target) == 0o644


def test_temp_files_of_dead_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    dead = tmp_path / f".table.csv.{dead_pid()}.abc.tmp"
    live = tmp_path / f".table.csv.{os.getpid()}.abc.tmp"
    other = tmp_path / f".other.csv.{dead_pid()}.abc.tmp"  # another file's: not ours to remove
    odd = tmp_path / ".table.csv.notapid.abc.tmp"
    for path in (dead, live, other, odd):
        path.write_text("partial")
    with atomic_open(target) as handle:
        handle.write("done")
    assert target.read_text() == "done"
    assert not dead.exists()
    assert live.exists() and other.exists() and odd.exists()


def test_check_output_path_accepts_a_new_file_in_new_folders(tmp_path: Path) -> None:
    check_output_path(tmp_path / "a" / "b" / "t.csv", (".csv",), "--out")
    check_output_path(tmp_path / "t.csv", (".csv",), "--out")
    (tmp_path / "t.csv").write_text("old")
    check_output_path(tmp_path / "t.csv", (".csv",), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # nothing created


def test_check_output_path_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(tailwise.UsageError, match=r"--out .*t\.csv: is a directory"):
        check_output_path(tmp_path / "t.csv", (".csv",), "--out")


@pytest.mark.parametrize("below", ["t.csv", "sub/t.csv", "sub/deeper/t.csv"])
def test_check_output_path_refuses_a_parent_that_is_a_file(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("data")
    with pytest.raises(tailwise.UsageError, match="is a file, not a directory") as caught:
        check_output_path(blocker / below, (".csv",), "--report")
    assert str(blocker) in str(caught.value) and "--report" in str(caught.value)


@needs_permissions
def test_check_output_path_refuses_an_unwritable_ancestor(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for target in (locked / "t.csv", locked / "new" / "deeper" / "t.csv"):
            with pytest.raises(tailwise.UsageError, match="not writable") as caught:
                check_output_path(target, (".csv",), "--out")
            assert str(locked) in str(caught.value)
    finally:
        locked.chmod(0o755)


@needs_permissions
def test_check_output_path_refuses_an_unwritable_file(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old")
    target.chmod(0o444)
    with pytest.raises(tailwise.UsageError, match="exists and is not writable"):
        check_output_path(target, (".csv",), "--out")


@needs_permissions
def test_atomic_path_into_a_read_only_folder_is_one_output_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        target = locked / "new" / "t.csv"
        with pytest.raises(OutputError, match="cannot write"), atomic_path(target):
            pytest.fail("the body must not run")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
