"""Reproductions of the sources' claims: ``tailwise experiment list | run | status | report``.

An :class:`Experiment` declares one claim of a source document with its grids per scale, a
trial function (one grid point, one seed -> metrics) and an analysis (all trials -> table,
figure, verdict with a confidence interval over seeds). The catalogue (:data:`EXPERIMENTS`)
is declared in one module per source (:mod:`~tailwise.experiments.s000`, ``s002``,
``s003``, ``s004``).

- :func:`run` runs (or resumes) experiments through a backend (``"local"``: a process pool)
  and writes one record per trial into a results store (:mod:`~tailwise.experiments.store`:
  one Parquet file per trial, written atomically; :func:`load` reads them as a DataFrame);
- :func:`status` and :func:`list_experiments` say where things stand;
- :func:`report` renders one self-contained HTML page.
"""

from tailwise.experiments.model import Analysis, Experiment, trial_id
from tailwise.experiments.registry import EXPERIMENTS, get_experiment, register, unregister
from tailwise.experiments.report import report
from tailwise.experiments.runner import (
    ExperimentRun,
    RunReport,
    list_experiments,
    run,
    status,
)
from tailwise.experiments.store import load

__all__ = [
    "EXPERIMENTS",
    "Analysis",
    "Experiment",
    "ExperimentRun",
    "RunReport",
    "get_experiment",
    "list_experiments",
    "load",
    "register",
    "report",
    "run",
    "status",
    "trial_id",
    "unregister",
]
