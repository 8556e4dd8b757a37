"""The one thread policy: torch's OpenMP pool and the BLAS pool never run against each other.

On a machine with few cores, torch's intra-op pool and the OpenBLAS/MKL pool of NumPy/SciPy
spin-wait for each other when both are active in one process (measured on 2 cores: Hessian
top-5 eigenvalues 3.6x slower, ``analyze`` up to 30x slower on a loaded machine; see
``benchmarks/threads.py``). Every code path that mixes them says, at its entry, which library
does the heavy work:

- :func:`torch_work` (Hessian-vector products, training, pruning): torch keeps its threads,
  BLAS gets one;
- :func:`blas_work` (spectra through LAPACK, tail estimators): BLAS keeps its threads, torch
  gets one.

What is limited, and how:

- torch's intra-op threads (``torch.set_num_threads``), which govern torch's OpenMP pool and
  the MKL / oneDNN torch links statically (threadpoolctl cannot see those);
- every BLAS library threadpoolctl finds loaded (NumPy's and SciPy's OpenBLAS, or MKL),
  through ``user_api="blas"``. SciPy's LAPACK is imported first, so that its OpenBLAS (a
  separate copy from NumPy's in the wheels) is among them even when the block imports it.
  Torch's own ``libgomp`` (threadpoolctl's ``user_api="openmp"``) is left to torch's setting:
  limiting it would also limit torch in :func:`torch_work`.
- torch's inter-op pool is not touched: eager CPU autograd runs on the calling thread and
  never uses it (it serves ``torch.jit.fork``), and torch allows setting it only once per
  process.

``TAILWISE_THREADS=N`` (1 <= N <= 4 x the core count) sets the thread count of the working
pool; default: as configured when the outermost block is entered (torch's and BLAS's own
defaults, i.e. the core count, or ``OMP_NUM_THREADS`` / a caller's ``torch.set_num_threads``).
``TAILWISE_THREADS=off`` (or ``none`` / ``0``) disables the policy: both pools as they are.
Any other value raises :class:`tailwise.UsageError` at the entry of the block, before any
work. Settings are restored when the block ends; blocks nest (a :func:`torch_work` inside a
:func:`blas_work` gives torch back its configured threads, and the reverse), and a
:func:`single_threaded` block caps every block nested in it at one thread.

The settings are process-wide (torch's and BLAS's thread counts are) and changed only by the
Python thread that entered the outermost open block: a block entered in another thread while
it is open (a worker of a thread pool) runs with that setting and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

__all__ = ["ENV_VAR", "blas_work", "single_threaded", "thread_setting", "torch_work"]

ENV_VAR = "TAILWISE_THREADS"
_OFF = ("off", "none", "0")


def _max_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def thread_setting() -> int | bool | None:
    """``TAILWISE_THREADS`` parsed: None (unset: default), False (``off``), or N threads.

    Raises :class:`tailwise.UsageError` for anything else (a word, a negative number, more
    than 4 x the core count), naming the variable and the accepted values.
    """
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if not raw:
        return None
    if raw in _OFF:
        return False
    high = _max_threads()
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 1 <= value <= high:
        from tailwise._errors import UsageError

        raise UsageError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r}: expected a thread count from 1 to {high} "
            "(4 x the cores), or 'off' to leave torch's and BLAS's threads as they are"
        )
    return value


@dataclass(frozen=True)
class _Frame:
    """One open block: the counts it runs with, and what blocks nested in it start from."""

    torch_threads: int
    blas_threads: int
    base_torch: int  # "torch keeps its threads" inside this block means this many
    base_blas: int  # "BLAS keeps its threads" likewise
    torch_capped: bool = False  # inside single_threaded: TAILWISE_THREADS=N does not lift it
    blas_capped: bool = False


@dataclass
class _Bottom:
    """What was in effect before the outermost block, restored when the last block ends."""

    controller: Any  # threadpoolctl.ThreadpoolController over the libraries loaded then
    owner: int  # the Python thread that entered the outermost block
    torch_threads: int
    blas_threads: list[int]  # per BLAS library of the controller


_LOCK = threading.RLock()
_STACK: list[_Frame] = []
_TOKENS: list[object] = []  # parallel to _STACK
_BOTTOM: list[_Bottom] = []  # zero or one entry
_CONTROLLER: list[tuple[int, Any]] = []  # (len(sys.modules) when made, controller)


def _blas_controllers(controller: Any) -> list[Any]:
    return [lib for lib in controller.lib_controllers if lib.user_api == "blas"]


def _open_bottom() -> _Bottom:
    # Load NumPy's and SciPy's BLAS before looking: a block that imports scipy.linalg lazily
    # would otherwise run it unlimited. (Both are dependencies; usually already imported.)
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    # Scanning the loaded libraries costs ~1 ms: done again only after new modules were
    # imported (a new BLAS comes with an import), not at every outermost block (a training
    # step that applies a regularizer opens one).
    key = len(sys.modules)
    if _CONTROLLER and _CONTROLLER[0][0] == key:
        controller = _CONTROLLER[0][1]
    else:
        controller = ThreadpoolController()
        _CONTROLLER[:] = [(key, controller)]
    return _Bottom(
        controller=controller,
        owner=threading.get_ident(),
        torch_threads=torch.get_num_threads(),
        blas_threads=[lib.num_threads for lib in _blas_controllers(controller)],
    )


def _apply(bottom: _Bottom, torch_threads: int, blas_threads: int | list[int]) -> None:
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    libraries = _blas_controllers(bottom.controller)
    counts = blas_threads if isinstance(blas_threads, list) else [blas_threads] * len(libraries)
    for library, count in zip(libraries, counts, strict=True):
        if library.num_threads != count:
            library.set_num_threads(count)


def _frame(kind: str, parent: _Frame, setting: int | bool | None) -> _Frame:
    """The frame of a ``kind`` block (torch / blas / single / single-blas) inside ``parent``."""
    if kind == "single":
        return replace(parent, torch_threads=1, base_torch=1, torch_capped=True)
    if kind == "single-blas":
        return _Frame(1, 1, 1, 1, torch_capped=True, blas_capped=True)
    if setting is False:
        return parent  # policy off: the pools as they are
    threads_torch, threads_blas = parent.base_torch, parent.base_blas
    if isinstance(setting, int):
        threads_torch = threads_torch if parent.torch_capped else setting
        threads_blas = threads_blas if parent.blas_capped else setting
    if kind == "torch":
        return replace(parent, torch_threads=threads_torch, blas_threads=1)
    return replace(parent, torch_threads=1, blas_threads=threads_blas)


@contextlib.contextmanager
def _block(kind: str) -> Iterator[None]:
    """Push the frame of a ``kind`` block, apply it; pop it and re-apply at the end."""
    setting = thread_setting() if kind in ("torch", "blas") else None
    with _LOCK:
        if _STACK and _BOTTOM[0].owner != threading.get_ident():
            # torch's thread count cannot be set reliably from another thread (it is partly
            # per-thread OpenMP state): a block in a worker thread runs with the setting of
            # the thread that opened the outermost block.
            nested_elsewhere = True
        else:
            nested_elsewhere = False
            if not _STACK:
                _BOTTOM[:] = [_open_bottom()]
    if nested_elsewhere:
        yield
        return
    with _LOCK:
        bottom = _BOTTOM[0]
        if _STACK:
            parent = _STACK[-1]
        else:
            blas_now = max(bottom.blas_threads, default=1)
            parent = _Frame(bottom.torch_threads, blas_now, bottom.torch_threads, blas_now)
        frame = _frame(kind, parent, setting)
        token = object()  # identifies this block's entry (frames may be equal or shared)
        _STACK.append(frame)
        _TOKENS.append(token)
        _apply(bottom, frame.torch_threads, frame.blas_threads)
    try:
        yield
    finally:
        with _LOCK:
            index = _TOKENS.index(token)  # the top: blocks of one thread nest
            del _STACK[index], _TOKENS[index]
            if _STACK:
                _apply(bottom, _STACK[-1].torch_threads, _STACK[-1].blas_threads)
            else:
                _apply(bottom, bottom.torch_threads, bottom.blas_threads)
                _BOTTOM.clear()


@contextlib.contextmanager
def torch_work() -> Iterator[None]:
    """Torch does the heavy work in this block: BLAS gets one thread, torch its configured count.

    >>> with torch_work():
    ...     _ = torch.ones(3) @ torch.ones(3)
    """
    with _block("torch"):
        yield


@contextlib.contextmanager
def blas_work() -> Iterator[None]:
    """NumPy/SciPy BLAS/LAPACK does the heavy work in this block: torch gets one thread.

    >>> import numpy as np
    >>> with blas_work():
    ...     _ = np.ones((3, 3)) @ np.ones(3)
    """
    with _block("blas"):
        yield


@contextlib.contextmanager
def single_threaded(*, blas: bool = False) -> Iterator[None]:
    """Run the block with one torch intra-op thread (and, with ``blas=True``, one BLAS thread);
    the previous settings are restored after. Blocks nested in it get at most one thread each.

    Small matrices gain nothing from intra-op threads, a fixed thread count fixes the order
    of float sums (reproducible results), and parallel workers each want one core. Not part
    of the policy: ``TAILWISE_THREADS`` does not change it.
    """
    with _block("single-blas" if blas else "single"):
        yield
