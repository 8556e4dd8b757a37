"""Atomic file writing: nothing a user asked to be written is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    For writers that want a file name (``DataFrame.to_parquet``, ``safetensors.save_file``,
    ``Figure.savefig``). On any exception the temporary file is removed and ``path`` is
    untouched. The parent directory is created if missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


TABLE_FORMATS = (".csv", ".json", ".parquet")


def write_table(df: Any, path: str | os.PathLike[str]) -> Path:
    """Write a pandas DataFrame atomically; the format comes from the suffix.

    ``.csv`` (no index), ``.json`` (a list of row records) or ``.parquet`` (needs pyarrow:
    ``pip install 'tailwise[parquet]'``). ``df.attrs`` (eigenvalue arrays, options) are not
    written. Raises ``ValueError`` for another suffix.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(
            f"cannot write {target}: unknown table format {suffix or '(none)'!r}; "
            f"use one of {', '.join(TABLE_FORMATS)}"
        )
    plain = df.copy()
    plain.attrs = {}
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"cannot write {target}: parquet needs pyarrow (pip install 'tailwise[parquet]')"
            ) from None
        with atomic_path(target) as tmp:
            plain.to_parquet(tmp, index=False)
        return target
    with atomic_open(target, "w") as handle:
        if suffix == ".csv":
            plain.to_csv(handle, index=False)
        else:
            plain.to_json(handle, orient="records", indent=1)
    return target


def check_output_path(
    path: str | os.PathLike[str] | None, suffixes: tuple[str, ...], what: str
) -> None:
    """Refuse an output path before any work is done: an unsupported suffix or a directory
    that exists but is not writable raises :class:`tailwise.UsageError` naming ``what``.

    >>> check_output_path("table.csv", (".csv", ".json"), "--out")
    >>> check_output_path("table.txt", (".csv",), "--out")
    Traceback (most recent call last):
    ...
    tailwise._errors.UsageError: --out table.txt: unsupported suffix '.txt'; use .csv
    """
    if path is None:
        return
    from tailwise._errors import UsageError

    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise UsageError(
            f"{what} {target}: unsupported suffix {target.suffix or '(none)'!r}; "
            f"use {' or '.join(suffixes)}"
        )
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"{what} {target}: directory {parent} is not writable")
