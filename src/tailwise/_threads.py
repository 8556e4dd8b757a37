"""The one thread policy: torch's OpenMP pool and the BLAS pool never run against each other.

On a machine with few cores, torch's intra-op pool and the OpenBLAS/MKL pool of NumPy/SciPy
spin-wait for each other when both are active in one process (measured on 2 cores: Hessian
top-5 eigenvalues 3.6x slower, ``analyze`` up to 30x slower on a loaded machine). Every code
path that mixes them says which library does the heavy work:

- :func:`torch_work` (Hessian-vector products, training, pruning): torch keeps its threads,
  BLAS gets one;
- :func:`blas_work` (spectra through LAPACK, tail estimators): BLAS keeps its threads, torch
  gets one.

``TAILWISE_THREADS=N`` sets the thread count of the working pool (default: as configured,
i.e. the core count); ``TAILWISE_THREADS=off`` disables the policy (both pools as they are).
Settings are restored when the block ends; blocks nest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["ENV_VAR", "blas_work", "single_threaded", "torch_work"]

ENV_VAR = "TAILWISE_THREADS"


def _setting() -> int | bool | None:
    """None: default; False: policy off; an int: threads for the working pool."""
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if not raw:
        return None
    if raw in ("off", "none", "0"):
        return False
    try:
        value = int(raw)
    except ValueError:
        from tailwise._errors import UsageError

        raise UsageError(f"{ENV_VAR}={raw!r}: expected a positive integer or 'off'") from None
    if value < 1:
        from tailwise._errors import UsageError

        raise UsageError(f"{ENV_VAR}={raw!r}: expected a positive integer or 'off'")
    return value


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=count, user_api="blas"):
        yield


@contextlib.contextmanager
def torch_work() -> Iterator[None]:
    """Torch does the heavy work in this block: BLAS gets one thread.

    >>> with torch_work():
    ...     _ = torch.ones(3) @ torch.ones(3)
    """
    setting = _setting()
    if setting is False:
        yield
        return
    with _blas_threads(1), _torch_threads(setting if isinstance(setting, int) else None):
        yield


@contextlib.contextmanager
def blas_work() -> Iterator[None]:
    """NumPy/SciPy BLAS/LAPACK does the heavy work in this block: torch gets one thread.

    >>> import numpy as np
    >>> with blas_work():
    ...     _ = np.ones((3, 3)) @ np.ones(3)
    """
    setting = _setting()
    if setting is False:
        yield
        return
    with _torch_threads(1), _blas_threads(setting if isinstance(setting, int) else None):
        yield


@contextlib.contextmanager
def single_threaded(*, blas: bool = False) -> Iterator[None]:
    """Run the block with one torch intra-op thread (and, with ``blas=True``, one thread in
    every BLAS/OpenMP pool threadpoolctl knows); the previous settings are restored after.

    Small matrices gain nothing from intra-op threads, a fixed thread count fixes the order
    of float sums (reproducible results), and parallel workers each want one core.
    """
    with _torch_threads(1):
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                yield
        else:
            yield
