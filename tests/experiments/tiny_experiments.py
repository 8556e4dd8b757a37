"""Tiny experiments for the runner's tests: module-level trial functions (worker processes
import this module by name) that count their calls in files and can be made to fail."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from tailwise.experiments import Analysis, Experiment
from tailwise.experiments.verdicts import mean_interval, verdict_above

#: The ``registered`` fixture of conftest.py: ``registered(experiment) -> experiment``.
Register = Callable[[Experiment], Experiment]

EVIL_CLAIM = 'y grows with x <script>alert("x")</script> & stays finite'


def counting_trial(config: Mapping[str, Any], seed: int, artifacts: Path) -> dict[str, Any]:
    """y = x^2 + seed, after ``sleep`` seconds; fails (ValueError) while the file
    ``config["fail_if"]`` exists, kills its process while ``config["exit_if"]`` exists; one
    file per completed call in ``config["calls"]``."""
    time.sleep(float(config.get("sleep", 0.0)))
    if config.get("exit_if") and Path(config["exit_if"]).exists():
        os._exit(3)  # a worker process that dies (killed, out of memory, a native crash)
    flag = config.get("fail_if")
    if flag and Path(flag).exists():
        print("about to fail")  # goes to the trial's log
        raise ValueError(f"flag {flag} is set")
    (artifacts / "note.txt").write_text(f"x={config['x']} seed={seed}\n")
    calls = Path(config["calls"])
    calls.mkdir(parents=True, exist_ok=True)
    (calls / f"{config['x']}_{seed}_{os.getpid()}_{uuid.uuid4().hex}").touch()
    return {"y": config["x"] ** 2 + seed, "label": f"x{config['x']}", "even": config["x"] % 2 == 0}


def calls_of(calls: Path, x: int, seed: int) -> int:
    """How many calls of :func:`counting_trial` completed for (x, seed)."""
    return len(list(calls.glob(f"{x}_{seed}_*"))) if calls.exists() else 0


def analyze_growth(trials: pd.DataFrame) -> Analysis:
    """y grows with x: the per-seed slope of y on x, over seeds, is > 0."""
    slopes = [
        float(pd.Series(part["y"].to_numpy()).diff().mean()) if len(part) > 1 else 0.0
        for _, part in trials.sort_values("x").groupby("seed")
    ]
    interval = mean_interval(slopes)
    table = trials.groupby("x", as_index=False)["y"].mean()

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.plot(table["x"], table["y"], "o-")
        ax.set(xlabel="x", ylabel="y", title="y against x")

    return Analysis(
        table,
        verdict_above(interval, 0.0),
        f"mean step of y = {interval.text(3)} (claim > 0)",
        draw,
        "the source shows y = x^2 <b>exactly</b>",
    )


def tiny(
    name: str, calls: Path, xs: Sequence[int] = (1, 2, 3), seeds: int = 2, **extra: Any
) -> Experiment:
    """An experiment over x in ``xs`` whose trials count their calls in ``calls``."""
    grid = [{"x": x, "calls": str(calls), **extra} for x in xs]
    return Experiment(
        name=name,
        source="000",
        claim=EVIL_CLAIM,
        location="nowhere, table 0",
        grids={"quick": grid, "test": grid[:1]},
        trial=counting_trial,
        analyze=analyze_growth,
        seeds=seeds,
        quick_minutes=0.01,
        substitution="squares instead of anything",
    )
