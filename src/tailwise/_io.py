"""Atomic file writing: nothing a user asked to be written is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tailwise._errors import UsageError


class OutputError(UsageError):
    """A file a user asked for cannot be written (no space, no permission, a directory in
    the way); the previous file, if any, is untouched."""


_TEMP_SUFFIX = ".tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove temporary files of ``target`` left by writers that were killed (SIGKILL, power
    loss): their names carry the writing process's id, which is no longer running."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for found in target.parent.iterdir():
            name = found.name
            if not (name.startswith(prefix) and name.endswith(_TEMP_SUFFIX)):
                continue
            pid = name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    found.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    For writers that want a file name (``DataFrame.to_parquet``, ``safetensors.save_file``,
    ``Figure.savefig``). On any exception (Ctrl-C and SIGTERM under the command line too)
    the temporary file is removed and ``path`` is untouched; temporary files of writers
    killed outright are removed by the next write of the same file. The parent directory is
    created if missing. The file gets the permissions a plain ``open()`` gives (the umask).
    A file-system failure (no space, read-only, a directory in the way) raises
    :class:`OutputError` naming the file.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=target.parent
        )
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        # Writers may replace the file they were given (mkstemp makes 0600): set the mode last.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
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
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise UsageError(
            f"{what} {target}: unsupported suffix {target.suffix or '(none)'!r}; "
            f"use {' or '.join(suffixes)}"
        )
    if target.is_dir():
        raise UsageError(f"{what} {target}: is a directory")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{what} {target}: the file exists and is not writable")
    ancestor = target.parent if str(target.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{what} {target}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {target}: directory {ancestor} is not writable")
