"""The local backend: a process pool on this machine (the default; no service to start).

Trials run in ``workers`` processes started with the ``spawn`` method (a clean interpreter
each: no state inherited from the caller, the same behaviour on Linux and macOS); each runs
its trial on one torch thread and one BLAS thread (:func:`~tailwise.experiments.trials.
execute_trial`), so ``workers`` processes use ``workers`` cores. ``workers=0`` runs the
trials one after the other in the calling process (for debuggers and doctests).

A worker that dies (killed, out of memory, a crash in native code) breaks the pool: the
trials that had no outcome yet are returned as lost (they stay pending; a later run retries
them). Ctrl-C cancels the trials not yet started and terminates the pool's processes; what
they were writing is never a record (records are written atomically, at the end).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tailwise._errors import UsageError
from tailwise.experiments.trials import Trial, TrialOutcome, execute_trial

__all__ = ["default_workers", "run_trials"]


def default_workers() -> int:
    """min(2, the number of CPUs): the quick scale is sized for two cores."""
    return max(1, min(2, os.cpu_count() or 1))


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UsageError(f"run: workers must be an int >= 0, got {workers!r}")
    return workers


def run_trials(
    trials: Sequence[Trial],
    store: Path,
    *,
    workers: int | None = None,
    on_done: Callable[[TrialOutcome], None],
    **options: Any,
) -> list[Trial]:
    """Run ``trials`` in a local process pool; call ``on_done`` with each outcome as it
    arrives. Returns the trials lost to a dead worker (empty normally).

    ``workers``: processes (default :func:`default_workers`; 0: in this process).
    No other option is accepted.
    """
    if options:
        raise UsageError(f"backend local: unknown options {sorted(options)}")
    count = _check_workers(workers)
    if not trials:
        return []
    if count == 0:
        for trial in trials:
            on_done(execute_trial(trial, store))
        return []
    context = multiprocessing.get_context("spawn")
    before = {child.pid for child in multiprocessing.active_children()}
    pool = ProcessPoolExecutor(max_workers=min(count, len(trials)), mp_context=context)
    lost: list[Trial] = []
    try:
        futures: dict[Future[TrialOutcome], Trial] = {
            pool.submit(execute_trial, trial, str(store)): trial for trial in trials
        }
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                lost.append(futures[future])
                continue
            on_done(outcome)
    except BaseException:
        # Ctrl-C (or an error in on_done): drop what has not started, stop the workers.
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            if child.pid not in before:
                child.terminate()
        raise
    pool.shutdown(wait=True)
    return lost
