"""The catalogue: :data:`EXPERIMENTS`, every experiment of the source modules by name.

The experiments are declared in one small module per source document
(:mod:`~tailwise.experiments.s000`, :mod:`~tailwise.experiments.s002`,
:mod:`~tailwise.experiments.s003`, :mod:`~tailwise.experiments.s004`), each with a tuple
``EXPERIMENTS``. :func:`register` adds one more (a user's own, or a test's) and
:func:`unregister` removes it; worker processes find an experiment's trial function by its
module, so a registered experiment's functions must live in an importable module.
"""

from __future__ import annotations

from tailwise._errors import UsageError
from tailwise.experiments.model import Experiment
from tailwise.experiments.s000 import EXPERIMENTS as _S000
from tailwise.experiments.s002 import EXPERIMENTS as _S002
from tailwise.experiments.s003 import EXPERIMENTS as _S003
from tailwise.experiments.s004 import EXPERIMENTS as _S004

__all__ = ["EXPERIMENTS", "get_experiment", "register", "unregister"]

#: Every registered experiment by name, in catalogue order (source, then declaration).
EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment, *, replace: bool = False) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS`; a name already taken is a UsageError
    unless ``replace``. Returns the experiment (usable as a decorator-free one-liner)."""
    if not isinstance(experiment, Experiment):
        raise UsageError(f"register: expected an Experiment, got {type(experiment).__name__}")
    if experiment.name in EXPERIMENTS and not replace:
        raise UsageError(f"register: an experiment named {experiment.name!r} exists already")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def unregister(name: str) -> None:
    """Remove the experiment called ``name`` (nothing happens if there is none)."""
    EXPERIMENTS.pop(name, None)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is a UsageError listing the known.

    >>> get_experiment("002-serw-diffusion").source
    '002'
    """
    try:
        return EXPERIMENTS[name]
    except KeyError:
        known = ", ".join(EXPERIMENTS) or "none"
        raise UsageError(f"unknown experiment {name!r}; known: {known}") from None


for _experiment in (*_S000, *_S002, *_S003, *_S004):
    register(_experiment)
