"""Shared helpers of the benchmark scripts: timing, quiet peers, machine description.

The scripts are run as ``python benchmarks/<name>.py`` (this folder is then on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch


def best_of(
    fn: Callable[[], Any], repeat: int, once_above: float = float("inf")
) -> tuple[float, Any]:
    """Best wall time (seconds) of ``repeat`` calls of ``fn`` and the last call's result.

    The minimum, not the mean: on a shared machine other processes only ever add time.
    A call slower than ``once_above`` seconds is not repeated (minutes-long peers).
    """
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        if best > once_above:
            break
    return best, result


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout, stderr, warnings and logging (WeightWatcher and powerlaw are chatty)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def limit_threads(count: int) -> None:
    """Cap torch's intra-op threads and every BLAS / OpenMP pool at ``count``, for good.

    On a loaded machine, torch's OpenMP threads and SciPy's OpenBLAS threads spin-wait
    against each other; one thread per pool makes timings far more repeatable.
    """
    torch.set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits

        _LIMITS.append(threadpool_limits(limits=count))  # kept alive: the limit stays
    except ImportError:
        pass


_LIMITS: list[Any] = []


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unavailable"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def thread_report() -> str:
    """torch intra-op threads and every BLAS / OpenMP pool loaded so far (threadpoolctl)."""
    parts = [f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads"]
    try:
        from threadpoolctl import threadpool_info

        pools = [
            f"{p.get('internal_api')}={p.get('num_threads')} ({os.path.basename(p['filepath'])})"
            for p in threadpool_info()
        ]
        parts.append(f"numpy {np.__version__}; thread pools: " + ", ".join(pools))
    except ImportError:
        parts.append(f"numpy {np.__version__}; threadpoolctl not installed")
    return "\n".join(parts)


def machine_header() -> str:
    return f"{platform.platform()}, Python {platform.python_version()}; {load_average()}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def fmt_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(numerator: float, denominator: float) -> str:
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator <= 0:
        return "-"
    return f"{numerator / denominator:.1f}x"
