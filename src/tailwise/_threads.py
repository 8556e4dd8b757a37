"""Thread-count control shared by training and analysis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def single_threaded(*, blas: bool = False) -> Iterator[None]:
    """Run the block with one torch intra-op thread (and, with ``blas=True``, one thread in
    every BLAS/OpenMP pool threadpoolctl knows); the previous settings are restored after.

    Small matrices gain nothing from intra-op threads, a fixed thread count fixes the order
    of float sums (reproducible results), and parallel workers each want one core.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(previous)
