"""What an experiment is: :class:`Experiment` (a claim, its grids, a trial, an analysis),
:class:`Analysis` (what the analysis of all trials gives) and :func:`trial_id`.

An experiment reproduces one claim of a source document (issue 14, §1):

- ``grids`` holds, per scale, the list of grid points (configs). ``"quick"`` runs in minutes
  on two CPU cores with offline data (what it substitutes is in ``substitution``); ``"full"``,
  where the source has a setting, is the source's.
- ``trial(config, seed, artifacts) -> metrics`` runs one grid point with one seed. It is
  deterministic given (config, seed), may write files into ``artifacts`` (a folder of its own)
  and returns a flat mapping of numbers and short strings.
- ``analyze(trials) -> Analysis`` turns the table of every finished trial of one scale (one
  row per trial: the config's keys, ``seed`` and the metrics as columns) into a table, a
  figure, and a verdict from a stated predicate with a confidence interval over seeds
  (:mod:`tailwise.experiments.verdicts`).

A trial's identity is :func:`trial_id`: a hash of (experiment, scale, config, seed), so a run
that is started again skips what is done.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tailwise._errors import UsageError

__all__ = [
    "RECORD_COLUMNS",
    "VERDICTS",
    "Analysis",
    "Config",
    "Experiment",
    "Metrics",
    "TrialFunction",
    "Verdict",
    "canonical_json",
    "trial_id",
]

Verdict = Literal["reproduced", "not reproduced", "inconclusive"]
#: The three verdicts, in the order a summary lists them.
VERDICTS: tuple[Verdict, ...] = ("reproduced", "not reproduced", "inconclusive")

Config = Mapping[str, Any]
Metrics = Mapping[str, float | int | str]
#: ``trial(config, seed, artifact_dir) -> metrics``.
TrialFunction = Callable[[Config, int, Path], Metrics]

#: The columns every trial record has (:mod:`tailwise.experiments.store`), in this order;
#: the metrics follow. No config key or metric may take one of these names.
RECORD_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "experiment",
    "scale",
    "config",
    "seed",
    "status",
    "error",
    "seconds",
    "host",
    "pid",
    "started",
    "finished",
    "tailwise_version",
    "torch_version",
    "numpy_version",
    "python_version",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (tuples become lists); anything else is a UsageError."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{where}: config values must be finite, got {value!r}")
        return value
    if isinstance(value, list | tuple):
        return [_plain(item, where) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item, where) for key, item in value.items()}
    raise UsageError(
        f"{where}: config values must be JSON data (str, int, float, bool, None, lists), "
        f"got {type(value).__name__} {value!r}"
    )


def canonical_json(value: Any) -> str:
    """The one text of ``value`` (keys sorted, no spaces, tuples as lists): equal data, equal
    text, whatever the key order.

    >>> canonical_json({"b": (1, 2.5), "a": "x"})
    '{"a":"x","b":[1,2.5]}'
    """
    return json.dumps(
        _plain(value, "canonical_json"), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def trial_id(experiment: str, scale: str, config: Config, seed: int) -> str:
    """The id of one trial: the first 16 hex digits of the SHA-256 of the canonical JSON of
    ``{"experiment", "scale", "config", "seed"}``. Stable across processes, machines and
    Python versions (float text is Python's shortest round-trip repr); changes with any
    of the four.

    >>> trial_id("002-serw-diffusion", "quick", {"model": "I", "delta": 0.1}, 0)
    'f6ac11af10f8c246'
    >>> trial_id("x", "quick", {"a": 1, "b": 2}, 0) == trial_id("x", "quick", {"b": 2, "a": 1}, 0)
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"trial_id: seed must be an int >= 0, got {seed!r}")
    text = canonical_json(
        {"experiment": experiment, "scale": scale, "config": dict(config), "seed": seed}
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Analysis:
    """What an experiment's analysis gives for all trials of one scale.

    Attributes:
        table: the evidence, one row per grid point or compared quantity (means and
            intervals over seeds), shown in the report.
        verdict: ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"`` (the interval
            straddles the claim's bound), about the claim as the source states it (a claim
            that something fails is reproduced when it fails).
        statement: one line: the predicate with its numbers and confidence interval.
        draw: draws the figure on an empty Matplotlib :class:`Figure`.
        source_numbers: what the source's figure or table shows, with its numbers where the
            source gives them, to read next to the figure.

    >>> a = Analysis(pd.DataFrame({"x": [1]}), "reproduced", "x = 1", lambda fig: None, "x = 1")
    >>> a.figure().get_size_inches().tolist()
    [8.0, 4.0]
    """

    table: pd.DataFrame
    verdict: Verdict
    statement: str
    draw: Callable[[Figure], None]
    source_numbers: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise UsageError(f"Analysis: verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def figure(self, figsize: tuple[float, float] = (8.0, 4.0)) -> Figure:
        """A new Agg :class:`Figure` with the analysis drawn on it (no pyplot state)."""
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        self.draw(fig)
        return fig


@dataclass(frozen=True)
class Experiment:
    """One reproduction of one claim of a source document (module docstring).

    Attributes:
        name: ``"<source>-<slug>"``, lowercase letters, digits, dots and dashes
            (``"002-serw-diffusion"``); the name on the command line.
        source: the source document, ``"000"``, ``"002"``, ``"003"`` or ``"004"``.
        claim: the claim in one sentence, as the source makes it.
        location: where the source makes it (``"Theorems 2.3-2.6"``, ``"table 3.1"``).
        grids: per scale, the grid points: a non-empty sequence of configs (mappings of
            JSON data) for each scale; ``"quick"`` must exist.
        trial: ``trial(config, seed, artifact_dir) -> metrics`` (deterministic given config
            and seed; a module-level function, so that worker processes can import it).
        analyze: ``analyze(trials) -> Analysis`` over the finished trials of one scale.
        seeds: the default number of seeds (seeds 0 .. seeds - 1).
        quick_minutes: estimated wall time of the quick scale on 2 CPU cores.
        substitution: what the quick scale substitutes for the source's setting
            (``"digits instead of CIFAR-10"``), shown in the claim line; empty if nothing.
        needs: modules the experiment needs (``"ray"``); one that cannot be imported
            makes it unavailable (``list``: "unavailable: needs X"; ``run`` refuses it).
    """

    name: str
    source: str
    claim: str
    location: str
    grids: Mapping[str, Sequence[Config]]
    trial: TrialFunction
    analyze: Callable[[pd.DataFrame], Analysis]
    seeds: int = 3
    quick_minutes: float = 1.0
    substitution: str = ""
    needs: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        where = f"Experiment {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UsageError(f"{where}: the name must be lowercase letters, digits, '.' and '-'")
        if "quick" not in self.grids:
            raise UsageError(f"{where}: grids must have a 'quick' scale")
        for scale, grid in self.grids.items():
            if not _NAME.match(scale):
                raise UsageError(f"{where}: scale names are lowercase words, got {scale!r}")
            if isinstance(grid, str | bytes) or not isinstance(grid, Sequence) or not grid:
                raise UsageError(f"{where}: grid {scale!r} must be a non-empty list of configs")
            texts = set()
            for config in grid:
                if not isinstance(config, Mapping):
                    raise UsageError(f"{where}: grid {scale!r} holds a {type(config).__name__}")
                bad = [key for key in config if not (isinstance(key, str) and _KEY.match(key))]
                if bad:
                    raise UsageError(f"{where}: config keys must be identifiers, got {bad}")
                taken = [key for key in config if key in RECORD_COLUMNS]
                if taken:
                    raise UsageError(f"{where}: config keys {taken} are names of record columns")
                text = canonical_json(config)
                if text in texts:
                    raise UsageError(f"{where}: grid {scale!r} repeats the config {text}")
                texts.add(text)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise UsageError(f"{where}: seeds must be an int >= 1, got {self.seeds!r}")
        if not callable(self.trial) or not callable(self.analyze):
            raise UsageError(f"{where}: trial and analyze must be callables")

    @property
    def scales(self) -> tuple[str, ...]:
        """The scales the experiment has, ``"quick"`` first."""
        return ("quick", *sorted(s for s in self.grids if s != "quick"))

    def configs(self, scale: str) -> list[dict[str, Any]]:
        """The grid of ``scale`` as plain dicts; an unknown scale is a UsageError."""
        if scale not in self.grids:
            raise UsageError(
                f"experiment {self.name}: no scale {scale!r}; it has {', '.join(self.scales)}"
            )
        return [dict(config) for config in self.grids[scale]]

    def missing(self) -> tuple[str, ...]:
        """The modules of ``needs`` that cannot be imported here."""
        absent = []
        for module in self.needs:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                absent.append(module)
        return tuple(absent)

    def claim_line(self) -> str:
        """The claim with its source location and what the quick scale substitutes."""
        line = f"{self.claim} (source {self.source}, {self.location})"
        return f"{line}; quick scale: {self.substitution}" if self.substitution else line

    def command(self, scale: str = "quick", seeds: int | None = None) -> str:
        """The command line that reproduces this experiment."""
        return (
            f"tailwise experiment run {self.name} --scale {scale} "
            f"--seeds {self.seeds if seeds is None else seeds}"
        )
