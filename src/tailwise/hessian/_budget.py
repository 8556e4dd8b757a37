"""Memory budgets of the curvature estimators, checked before anything is allocated.

Every estimator keeps a few float64 blocks of n-vectors (n: the number of parameters): an
ARPACK basis of ``ncv`` columns, a power-iteration block of k, a Hutch++ sketch, an SLQ basis
of ``num_iters x num_runs``. A user value (``top_k=10**9``, ``density_runs=10**6``) can ask for
far more than any machine holds; :func:`check_memory` turns that into a
:class:`tailwise.UsageError` naming the sizes, instead of a 294 GiB allocation attempt.

The stated limit is the memory of the device the block lives on: the machine's physical
memory for the CPU (``os.sysconf``), the device's total memory for CUDA. Blocks that fit that
may still not fit next to everything else; those fail as usual, with an out-of-memory error.
"""

from __future__ import annotations

import os

import torch

from tailwise._errors import UsageError

__all__ = ["FLOAT64_BYTES", "check_memory", "memory_limit"]

FLOAT64_BYTES = 8


def memory_limit(device: torch.device) -> int:
    """Bytes of memory on ``device``: physical memory for the CPU, total memory for CUDA."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no stated limit
        return 2**63 - 1


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def check_memory(where: str, what: str, nbytes: int, device: torch.device) -> None:
    """Raise :class:`UsageError` if ``nbytes`` for ``what`` exceed the memory of ``device``.

    ``what`` says which option asked for it, e.g. ``"the Lanczos basis of ncv=41 vectors of
    n=137,000"``; the message adds both sizes and the place it would live.
    """
    limit = memory_limit(device)
    if nbytes > limit:
        place = "this machine's memory" if device.type == "cpu" else f"the memory of {device}"
        raise UsageError(
            f"{where}: {what} needs {_gib(nbytes)}, more than {place} ({_gib(limit)}); "
            "ask for fewer"
        )
