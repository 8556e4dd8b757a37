"""Running experiments: :func:`run` (``tailwise experiment run``; ``resume`` is running
again), :func:`status`, :func:`list_experiments`.

:func:`run` plans the trials of every experiment asked for (grid of the scale x seeds),
skips those the store holds as done (a record with status ``"ok"``; failed ones are retried),
hands the rest to a backend (:data:`BACKENDS`: ``"local"``, a process pool; a cluster backend
is one more module with the same ``run_trials`` function, see
:mod:`tailwise.experiments.trials`), then analyzes each experiment whose trials are all done
and keeps its verdict in the store. A run killed at any moment leaves only complete records:
running it again finishes what is missing.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tailwise._errors import UsageError, first_line
from tailwise._progress import progress_task
from tailwise.experiments.model import Analysis, Experiment, canonical_json, trial_id
from tailwise.experiments.registry import EXPERIMENTS, get_experiment
from tailwise.experiments.store import (
    load,
    read_statuses,
    read_verdict,
    store_path,
    utc_now,
    write_verdict,
)
from tailwise.experiments.trials import Backend, Trial, TrialOutcome

__all__ = [
    "BACKENDS",
    "ExperimentRun",
    "RunReport",
    "analysis_frame",
    "list_experiments",
    "plan",
    "resolve_names",
    "run",
    "status",
]

#: Backend name -> "module:function" of its ``run_trials``.
BACKENDS: dict[str, str] = {
    "local": "tailwise.experiments.local:run_trials",
    "ray": "tailwise.experiments.ray_backend:run_trials",
}


@dataclass(frozen=True)
class ExperimentRun:
    """One experiment of a :func:`run`: its trials (``total`` planned, ``done_before`` found
    done in the store, ``ran`` now, of which ``failed``, and ``lost`` to dead workers), the
    wall time of its trials, and the verdict of the analysis (None when trials are missing
    or the analysis failed; ``statement`` then says why)."""

    name: str
    scale: str
    seeds: int
    total: int
    done_before: int
    ran: int
    failed: int
    lost: int
    seconds: float
    verdict: str | None
    statement: str


@dataclass(frozen=True)
class RunReport:
    """What :func:`run` returns: one :class:`ExperimentRun` per experiment, the whole run's
    wall time and the store it wrote to."""

    experiments: tuple[ExperimentRun, ...]
    seconds: float
    store: Path

    def table(self) -> pd.DataFrame:
        """One row per experiment (the fields of :class:`ExperimentRun`)."""
        return pd.DataFrame([asdict(e) for e in self.experiments])

    @property
    def complete(self) -> bool:
        """Every planned trial is done (none failed or lost)."""
        return all(e.failed == 0 and e.lost == 0 for e in self.experiments)


def resolve_names(names: str | Sequence[str]) -> list[Experiment]:
    """The experiments ``names`` asks for: names, or ``"all"`` (every available one).
    Unknown names and unavailable experiments are UsageErrors."""
    asked = [names] if isinstance(names, str) else list(names)
    if not asked:
        raise UsageError("run: name at least one experiment (or 'all')")
    chosen: list[Experiment] = []
    for name in asked:
        if name == "all":
            found = [e for e in EXPERIMENTS.values() if not e.missing()]
        else:
            experiment = get_experiment(name)
            missing = experiment.missing()
            if missing:
                raise UsageError(f"experiment {name} is unavailable: needs {', '.join(missing)}")
            found = [experiment]
        chosen.extend(e for e in found if e not in chosen)
    return chosen


def _seed_count(experiment: Experiment, seeds: int | None) -> int:
    if seeds is None:
        return experiment.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"run: seeds must be an int >= 1, got {seeds!r}")
    return seeds


def plan(experiment: Experiment, scale: str, seeds: int | None = None) -> list[Trial]:
    """Every trial of ``experiment`` at ``scale``: its grid x seeds 0 .. seeds - 1 (default
    the experiment's), grid point by grid point."""
    count = _seed_count(experiment, seeds)
    return [
        Trial(experiment.name, scale, config, seed, trial_id(experiment.name, scale, config, seed),
              experiment.trial)
        for config in experiment.configs(scale)
        for seed in range(count)
    ]  # fmt: skip


def _backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"run: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, _, function = BACKENDS[name].partition(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise UsageError(f"run: backend {name!r} is not available here ({exc})") from None
    backend: Backend = getattr(loaded, function)
    return backend


def analysis_frame(
    experiment: Experiment, scale: str, store: Path, seeds: int | None = None
) -> tuple[pd.DataFrame, int]:
    """The finished (status ``"ok"``) trials of ``experiment`` at ``scale`` whose config is
    in the grid, as :func:`load` gives them; with ``seeds``, only seeds below it. Also
    returns the number of trials that the grid and those seeds expect (with ``seeds=None``:
    the grid size times the seeds found)."""
    frame = load(experiment.name, store)
    if frame.empty:
        return frame, 0
    wanted = {canonical_json(config) for config in experiment.configs(scale)}
    keep = (frame["scale"] == scale) & (frame["status"] == "ok") & frame["config"].isin(wanted)
    if seeds is not None:
        keep &= frame["seed"] < seeds
    done = frame[keep].reset_index(drop=True)
    found_seeds = seeds if seeds is not None else done["seed"].nunique()
    return done, len(wanted) * int(found_seeds)


def _analyze(
    experiment: Experiment, scale: str, store: Path, seeds: int, expected: int, lost: int
) -> tuple[str | None, str]:
    """(verdict, statement) of the trials in the store; kept there when complete."""
    frame, _ = analysis_frame(experiment, scale, store, seeds)
    if len(frame) < expected:
        why = f" ({lost} lost: a worker process died before finishing them)" if lost else ""
        return None, f"{len(frame)} of {expected} trials done{why}; run again to finish"
    try:
        analysis: Analysis = experiment.analyze(frame)
    except Exception as exc:  # an analysis bug must not hide the other experiments' results
        return None, f"analysis failed: {type(exc).__name__}: {first_line(exc)}"
    write_verdict(
        store,
        experiment.name,
        scale,
        {
            "verdict": analysis.verdict,
            "statement": analysis.statement,
            "scale": scale,
            "seeds": seeds,
            "trials": len(frame),
            "analyzed": utc_now(),
        },
    )
    return analysis.verdict, analysis.statement


def run(
    names: str | Sequence[str],
    *,
    scale: str = "quick",
    seeds: int | None = None,
    backend: str = "local",
    workers: int | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    backend_options: Mapping[str, Any] | None = None,
) -> RunReport:
    """Run (or resume) the experiments ``names`` at ``scale`` and analyze them.

    Args:
        names: experiment names (:data:`~tailwise.experiments.EXPERIMENTS`), or ``"all"``.
        scale: ``"quick"`` (minutes on a laptop) or another scale every experiment has
            (``"full"``: the source's setting).
        seeds: seeds 0 .. seeds - 1 per grid point; default each experiment's own.
        backend: ``"local"`` (a process pool) or another name of :data:`BACKENDS`.
        workers: processes of the local backend (default min(2, CPUs); 0 runs the trials in
            this process).
        store: the results folder (default ``$TAILWISE_EXPERIMENTS`` or
            ``./tailwise-experiments``).
        progress: a bar over trials on stderr (terminals only).
        backend_options: further keyword options of the backend (a cluster's address).

    Trials already done in the store are skipped, failed ones retried. A trial that raises
    is recorded as failed (error and traceback in its log) and the run goes on. Every
    experiment whose trials are then all done is analyzed and its verdict kept in the store.
    Bad names, scales, seeds or backends raise :class:`tailwise.UsageError` before any trial.

    >>> import tempfile
    >>> from tailwise.experiments import Analysis, Experiment, register, unregister
    >>> def square(config, seed, artifacts):
    ...     return {"y": config["x"] ** 2}
    >>> def always(trials):
    ...     return Analysis(trials[["x", "y"]], "reproduced", "y = x^2", lambda fig: None, "")
    >>> _ = register(Experiment("000-demo-squares", "000", "y = x^2", "nowhere",
    ...                         {"quick": [{"x": 1}, {"x": 2}]}, square, always, seeds=1))
    >>> with tempfile.TemporaryDirectory() as folder:  # workers=0: in this process
    ...     first = run("000-demo-squares", store=folder, workers=0, progress=False)
    ...     again = run("000-demo-squares", store=folder, workers=0, progress=False)
    >>> first.experiments[0].ran, again.experiments[0].ran, again.experiments[0].verdict
    (2, 0, 'reproduced')
    >>> unregister("000-demo-squares")
    """
    chosen = resolve_names(names)
    backend_run = _backend(backend)
    root = store_path(store)
    planned = {e.name: plan(e, scale, seeds) for e in chosen}  # checks scale and seeds first
    start = time.perf_counter()
    pending: list[Trial] = []
    done_before: dict[str, int] = {}
    for experiment in chosen:
        statuses = read_statuses(root, experiment.name)
        trials = planned[experiment.name]
        todo = [t for t in trials if statuses.get(t.trial_id) != "ok"]
        done_before[experiment.name] = len(trials) - len(todo)
        pending.extend(todo)
    ran = dict.fromkeys(planned, 0)
    failed = dict.fromkeys(planned, 0)
    seconds = dict.fromkeys(planned, 0.0)
    with progress_task("experiments", len(pending), progress) as advance:

        def on_done(outcome: TrialOutcome) -> None:
            ran[outcome.experiment] += 1
            failed[outcome.experiment] += outcome.status != "ok"
            seconds[outcome.experiment] += outcome.seconds
            advance(1, description=f"{outcome.experiment} {outcome.status}")

        lost_trials = backend_run(
            pending, root, workers=workers, on_done=on_done, **dict(backend_options or {})
        )
    lost = dict.fromkeys(planned, 0)
    for trial in lost_trials:
        lost[trial.experiment] += 1
    runs = []
    for experiment in chosen:
        trials = planned[experiment.name]
        count = _seed_count(experiment, seeds)
        verdict, statement = _analyze(
            experiment, scale, root, count, len(trials), lost[experiment.name]
        )
        runs.append(
            ExperimentRun(
                name=experiment.name,
                scale=scale,
                seeds=count,
                total=len(trials),
                done_before=done_before[experiment.name],
                ran=ran[experiment.name],
                failed=failed[experiment.name],
                lost=lost[experiment.name],
                seconds=seconds[experiment.name],
                verdict=verdict,
                statement=statement,
            )
        )
    return RunReport(tuple(runs), time.perf_counter() - start, root)


def status(name: str, store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Where experiment ``name`` stands in ``store``, one row per scale: ``scale``,
    ``configs`` (grid points), ``seeds`` (the default), ``expected`` (configs x seeds),
    ``done``, ``failed``, ``pending`` (of the expected trials), ``stored`` (records of that
    scale, other seeds included), and the last analysis's ``verdict``, ``statement``,
    ``analyzed`` (empty when none).

    >>> table = status("002-serw-diffusion", store="/nonexistent")
    >>> table[["scale", "expected", "done", "pending"]].values.tolist()
    [['quick', 42, 0, 42], ['full', 126, 0, 126]]
    """
    experiment = get_experiment(name)
    root = store_path(store)
    statuses = read_statuses(root, name)
    frame = load(name, root) if statuses else None
    rows = []
    for scale in experiment.scales:
        trials = plan(experiment, scale)
        states = [statuses.get(t.trial_id) for t in trials]
        last = read_verdict(root, name, scale) or {}
        stored = 0 if frame is None else int((frame["scale"] == scale).sum())
        rows.append(
            {
                "scale": scale,
                "configs": len(experiment.configs(scale)),
                "seeds": experiment.seeds,
                "expected": len(trials),
                "done": states.count("ok"),
                "failed": states.count("failed"),
                "pending": states.count(None),
                "stored": stored,
                "verdict": str(last.get("verdict", "")),
                "statement": str(last.get("statement", "")),
                "analyzed": str(last.get("analyzed", "")),
            }
        )
    return pd.DataFrame(rows)


def list_experiments(store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The catalogue with the state of ``store``: one row per experiment with ``name``,
    ``source``, ``claim``, ``location``, ``substitution``, ``scales`` (comma-separated),
    ``seeds``, ``quick_minutes``, ``availability`` (``"available"`` or ``"unavailable:
    needs X"``), ``quick_done`` (``"done/expected"`` trials at the quick scale with the
    default seeds) and ``verdict`` (the last quick-scale verdict, empty when none).

    >>> table = list_experiments(store="/nonexistent")
    >>> {"name", "claim", "availability", "verdict"} <= set(table.columns)
    True
    """
    root = store_path(store)
    rows = []
    for experiment in EXPERIMENTS.values():
        missing = experiment.missing()
        trials = plan(experiment, "quick")
        statuses = read_statuses(root, experiment.name)
        done = sum(statuses.get(t.trial_id) == "ok" for t in trials)
        last = read_verdict(root, experiment.name, "quick") or {}
        rows.append(
            {
                "name": experiment.name,
                "source": experiment.source,
                "claim": experiment.claim,
                "location": experiment.location,
                "substitution": experiment.substitution,
                "scales": ", ".join(experiment.scales),
                "seeds": experiment.seeds,
                "quick_minutes": experiment.quick_minutes,
                "availability": (
                    f"unavailable: needs {', '.join(missing)}" if missing else "available"
                ),
                "quick_done": f"{done}/{len(trials)}",
                "verdict": str(last.get("verdict", "")),
            }
        )
    columns = ["name", "source", "claim", "location", "substitution", "scales", "seeds",
               "quick_minutes", "availability", "quick_done", "verdict"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
