"""One trial, run anywhere: :class:`Trial` (what a backend is given) and :func:`execute_trial`
(what a backend runs, in whatever process or machine it chooses).

A backend (:mod:`tailwise.experiments.local`, or a cluster backend) is a function

    run_trials(trials, store, *, workers, on_done, **options) -> lost trials

that calls ``execute_trial(trial, store)`` for every trial, somewhere, and hands each
returned :class:`TrialOutcome` to ``on_done`` in the calling process. ``execute_trial``
writes the trial's record, log and artifacts into the store itself, so a backend has nothing
to collect: the store (a shared folder for several machines) is the only channel. Trials it
could not finish (a worker that died) it returns; they stay pending and a later run retries
them.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tailwise._errors import UsageError, first_line
from tailwise._threads import single_threaded
from tailwise.experiments.model import Config, TrialFunction, canonical_json
from tailwise.experiments.store import (
    RECORD_COLUMNS,
    artifact_dir,
    host_and_pid,
    log_path,
    utc_now,
    versions,
    write_record,
)

__all__ = ["Backend", "Trial", "TrialOutcome", "execute_trial"]

_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Trial:
    """One grid point of one experiment with one seed, ready to run (picklable: the trial
    function is a module-level function, pickled by reference)."""

    experiment: str
    scale: str
    config: Config
    seed: int
    trial_id: str
    function: TrialFunction


@dataclass(frozen=True)
class TrialOutcome:
    """What :func:`execute_trial` reports back: ``status`` ``"ok"`` or ``"failed"``,
    ``error`` the exception's first line (empty when ok), ``seconds`` the trial's time."""

    experiment: str
    trial_id: str
    status: str
    error: str
    seconds: float


class Backend(Protocol):
    """``run_trials(trials, store, *, workers, on_done, **options) -> lost trials``."""

    def __call__(
        self,
        trials: Sequence[Trial],
        store: Path,
        *,
        workers: int | None,
        on_done: Callable[[TrialOutcome], None],
        **options: Any,
    ) -> list[Trial]: ...


def _metric_value(key: str, value: Any, where: str) -> float | int | str:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int | float | str):
        return value
    raise UsageError(
        f"{where}: metric {key!r} must be a number or a string, got {type(value).__name__}"
    )


def check_metrics(metrics: Any, config: Config, where: str) -> dict[str, float | int | str]:
    """``metrics`` as a plain dict, checked: a mapping of identifiers (none of them a record
    column or a config key) to numbers, booleans or strings."""
    if not isinstance(metrics, Mapping):
        raise UsageError(f"{where}: the trial must return a mapping, got {type(metrics).__name__}")
    checked = {}
    for key, value in metrics.items():
        if not (isinstance(key, str) and _METRIC.match(key)):
            raise UsageError(f"{where}: metric names must be identifiers, got {key!r}")
        if key in RECORD_COLUMNS or key in config:
            raise UsageError(f"{where}: metric {key!r} has the name of a record column or key")
        checked[key] = _metric_value(key, value, where)
    return checked


def _describe(exc: BaseException) -> str:
    """``"ValueError: the message's first line"`` (the type alone for an empty message)."""
    line = first_line(exc)
    name = type(exc).__name__
    return name if line == name else f"{name}: {line}"


@contextlib.contextmanager
def _seeded_globals(seed: int) -> Any:
    """The global RNGs of torch, numpy and random seeded with ``seed``, restored after: a
    trial that draws from them is deterministic, and trials of different configs with the
    same seed share their random numbers (paired comparisons)."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (seeding the legacy global RNG is the point)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def execute_trial(trial: Trial, store: str | Path) -> TrialOutcome:
    """Run ``trial`` here and write its record, log and artifacts into ``store``.

    The trial function gets a fresh ``artifacts/<trial_id>`` folder (what a failed attempt
    left there is removed first), runs on one torch thread and one BLAS thread with the
    global RNGs seeded by its seed, and its standard output and error (Python level) go to
    ``logs/<trial_id>.log``. An exception becomes a ``"failed"`` record whose ``error`` is
    its first line, with the traceback in the log: it never propagates. ``KeyboardInterrupt``
    and ``SystemExit`` do propagate, and then no record is written (the trial stays pending).
    """
    root = Path(store)
    where = f"trial {trial.experiment} {trial.trial_id}"
    artifacts = artifact_dir(root, trial.experiment, trial.trial_id)
    log = log_path(root, trial.experiment, trial.trial_id)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = utc_now()
    begin = time.perf_counter()
    status, error = "ok", ""
    metrics: dict[str, float | int | str] = {}
    machine = host_and_pid()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(
            f"{where}: scale {trial.scale}, seed {trial.seed}, config "
            f"{canonical_json(trial.config)}, host {machine['host']}, pid {machine['pid']}, "
            f"started {started}\n"
        )
        handle.flush()
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:
                with single_threaded(blas=True), _seeded_globals(trial.seed):
                    result = trial.function(dict(trial.config), trial.seed, artifacts)
                metrics = check_metrics(result, trial.config, where)
            except Exception as exc:  # a failed trial is a record, never a sunk run
                traceback.print_exc(file=handle)
                status, error = "failed", _describe(exc)
        seconds = time.perf_counter() - begin
        handle.write(f"{status} after {seconds:.3f} s\n")
    record: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "experiment": trial.experiment,
        "scale": trial.scale,
        "config": canonical_json(trial.config),
        "seed": int(trial.seed),
        "status": status,
        "error": error,
        "seconds": float(seconds) if math.isfinite(seconds) else 0.0,
        **machine,
        "started": started,
        "finished": utc_now(),
        **versions(),
        **metrics,
    }
    write_record(root, record)
    return TrialOutcome(trial.experiment, trial.trial_id, status, error, seconds)
