"""One entry point for every simulator experiment: :func:`simulate` (``tailwise simulate``).

The experiments are the ``*_experiment`` functions of :mod:`tailwise.sims.serw`,
:mod:`tailwise.sims.nonoverlap` and :mod:`tailwise.sims.heavy_sgd`, registered here under
their command-line names (:data:`SIMULATIONS`). :func:`simulate` runs one and writes its
table and figure atomically; :func:`parse_options` turns ``key=value`` strings into the
experiment's keyword options, typed by the option's default.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tailwise._errors import UsageError
from tailwise._io import TABLE_FORMATS, atomic_open, atomic_path, check_output_path, write_table
from tailwise.sims._result import SimulationResult

__all__ = [
    "FIGURE_FORMATS",
    "SIMULATIONS",
    "SIMULATION_NAMES",
    "parse_options",
    "simulate",
    "simulation_options",
]

#: name -> (module, experiment function, options fixed by the name).
SIMULATIONS: Mapping[str, tuple[str, str, Mapping[str, Any]]] = {
    "serw": ("tailwise.sims.serw", "serw_experiment", {}),
    "serw-diffusion": ("tailwise.sims.serw", "serw_diffusion_experiment", {}),
    "nonoverlap-rvsm": (
        "tailwise.sims.nonoverlap",
        "nonoverlap_experiment",
        {"algorithm": "rvsm"},
    ),
    "nonoverlap-rvscgd": (
        "tailwise.sims.nonoverlap",
        "nonoverlap_experiment",
        {"algorithm": "rvscgd"},
    ),
    "heavy-sgd": ("tailwise.sims.heavy_sgd", "heavy_sgd_experiment", {}),
    "stable-prunability": ("tailwise.sims.heavy_sgd", "stable_prunability_experiment", {}),
}
SIMULATION_NAMES: tuple[str, ...] = tuple(SIMULATIONS)
FIGURE_FORMATS = (".png", ".svg", ".pdf")
_RUNTIME = frozenset({"seed", "progress"})


def _experiment(name: str) -> tuple[Callable[..., SimulationResult], Mapping[str, Any]]:
    if name not in SIMULATIONS:
        raise UsageError(f"unknown simulation {name!r}; choose one of {', '.join(SIMULATIONS)}")
    module, function, fixed = SIMULATIONS[name]
    return getattr(importlib.import_module(module), function), fixed


def simulation_options(name: str) -> dict[str, Any]:
    """The options of simulation ``name`` and their defaults (``seed`` and ``progress``, and
    what the name fixes, excluded).

    >>> simulation_options("nonoverlap-rvsm")["steps"]
    400
    """
    function, fixed = _experiment(name)
    return {
        key: parameter.default
        for key, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and key not in _RUNTIME
        and key not in fixed
    }


def _scalar(text: str, like: Any, where: str) -> Any:
    """``text`` as the type of ``like`` (a default value); None or a string default: the
    most specific of int, float, bool, None and str."""
    lowered = text.strip().lower()
    if isinstance(like, bool) or (like is None and lowered in ("true", "false")):
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false, got {text!r}")
    if like is None and lowered in ("none", "null", ""):
        return None
    if isinstance(like, int | np.integer) or like is None:
        try:
            return int(text)
        except ValueError:
            if isinstance(like, int | np.integer):
                raise UsageError(f"{where}: expected an integer, got {text!r}") from None
    if isinstance(like, float | np.floating) or like is None:
        try:
            value = float(text)
        except ValueError:
            if like is not None:
                raise UsageError(f"{where}: expected a number, got {text!r}") from None
        else:
            if not math.isfinite(value):
                raise UsageError(f"{where}: expected a finite number, got {text!r}")
            return value
    return text


def parse_options(name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=200", "deltas=0.3,0.1"]`` -> ``{"steps": 200, "deltas": (0.3, 0.1)}`` for
    simulation ``name``: each value takes the type of the option's default (a tuple default:
    comma-separated values of its first element's type); dashes in keys may stand for
    underscores. Unknown keys and unreadable values raise :class:`tailwise.UsageError`.

    >>> parse_options("nonoverlap-rvsm", ["steps=50", "penalty=l0"])
    {'steps': 50, 'penalty': 'l0'}
    """
    known = simulation_options(name)
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"simulate {name}: options are key=value, got {pair!r}")
        if key not in known:
            raise UsageError(
                f"simulate {name}: unknown option {key!r}; options: {', '.join(known) or 'none'}"
            )
        default = known[key]
        where = f"simulate {name}: option {key}"
        if isinstance(default, tuple | list):
            like = default[0] if len(default) else None
            parsed[key] = tuple(_scalar(part, like, where) for part in text.split(",") if part)
        else:
            parsed[key] = _scalar(text, default, where)
    return parsed


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def _write_outputs(result: SimulationResult, out: Path | None, plot: Path | None) -> list[Path]:
    written = []
    if out is not None:
        if out.suffix.lower() == ".json":
            record = {
                "name": result.name,
                "options": _jsonable(result.options),
                "summary": _jsonable(result.summary),
                "table": _jsonable(json.loads(result.table.to_json(orient="records"))),
            }
            with atomic_open(out, "w") as handle:
                json.dump(record, handle, indent=1)
        else:
            write_table(result.table, out)
        written.append(out)
    if plot is not None:
        figure = result.figure()
        with atomic_path(plot) as tmp:
            figure.savefig(tmp, format=plot.suffix.lstrip(".").lower(), dpi=100)
        written.append(plot)
    return written


def simulate(
    name: str,
    *,
    seed: int = 0,
    progress: bool = True,
    out: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    **options: Any,
) -> SimulationResult:
    """Run the simulator experiment ``name`` (:data:`SIMULATION_NAMES`) and write its outputs.

    ``options``: the experiment's keyword options (:func:`simulation_options`; strings from a
    command line go through :func:`parse_options`). ``out``: the table as ``.csv`` or
    ``.parquet``, or ``.json`` holding the name, options, summary and table together.
    ``plot``: the figure as ``.png``, ``.svg`` or ``.pdf``. Both are checked before the run
    and written atomically after it. Every experiment is seeded: the same ``seed`` and
    options give the same table.

    >>> result = simulate("nonoverlap-rvsm", steps=50, progress=False)
    >>> result.name, len(result.table) > 0
    ('nonoverlap-rvsm', True)
    """
    function, fixed = _experiment(name)
    known = simulation_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(
            f"simulate {name}: unknown option(s) {unknown}; options: {', '.join(known)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"simulate {name}: seed must be an integer >= 0, got {seed!r}")
    out_path = Path(out) if out is not None else None
    plot_path = Path(plot) if plot is not None else None
    check_output_path(out_path, TABLE_FORMATS, "out")
    check_output_path(plot_path, FIGURE_FORMATS, "plot")
    result = function(seed=int(seed), progress=progress, **fixed, **options)
    _write_outputs(result, out_path, plot_path)
    return result
