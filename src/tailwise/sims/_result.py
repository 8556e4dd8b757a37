"""The one result type of every simulator experiment (what ``tailwise simulate NAME`` prints).

A simulator module returns plain arrays/dataclasses from its core functions; an *experiment*
(one per CLI name) bundles a table, the headline numbers compared with the theory, and a
figure-drawing function into a :class:`SimulationResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["SimulationResult"]


@dataclass(frozen=True)
class SimulationResult:
    """One simulator experiment's output.

    Attributes:
        name: the experiment's CLI name (``"serw"``, ``"heavy-sgd"``, ...).
        table: one row per grid point (or time), simulation and theory side by side.
        summary: headline numbers (``{"a": 0.79, "a_stderr": 0.01, "theory": 0.794}``),
            each a float, int or short string; what the note / CLI prints as verdict lines.
        draw: draws the figure on a given (empty) Matplotlib figure.
        options: the options the experiment ran with (seed included), for the record.

    >>> import pandas as pd
    >>> r = SimulationResult("demo", pd.DataFrame({"x": [1]}), {"x": 1}, lambda fig: None)
    >>> r.figure().get_size_inches().tolist()
    [6.4, 4.8]
    """

    name: str
    table: pd.DataFrame
    summary: Mapping[str, float | int | str]
    draw: Callable[[Figure], None]
    options: Mapping[str, Any] = field(default_factory=dict)

    def figure(self, figsize: tuple[float, float] = (6.4, 4.8)) -> Figure:
        """A new Agg :class:`Figure` with this result drawn on it (no pyplot state)."""
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        self.draw(fig)
        return fig
