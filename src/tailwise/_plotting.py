"""Matplotlib helpers shared by the figure modules (``spectral.plots``, ``hessian.plots``).

Package-internal (the bottom floor): figures are drawn with the object-oriented API on the
Agg canvas, never through pyplot's global state.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

__all__ = ["MAX_TITLE_CHARS", "new_axes", "plain_text", "root_figure"]

#: Titles longer than this are shortened from the left (the end of a layer name matters).
MAX_TITLE_CHARS = 70


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return ``(root figure, axes)``: ``ax`` itself, or one axes on a new Agg figure.

    >>> fig, ax = new_axes(None, (4.0, 3.0))
    >>> new_axes(ax, (1.0, 1.0))[0] is fig
    True
    """
    if ax is not None:
        return root_figure(ax), ax
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def root_figure(ax: Axes) -> Figure:
    """The top-level :class:`Figure` holding ``ax`` (through any subfigures)."""
    parent: Figure | SubFigure | None = ax.get_figure()
    while isinstance(parent, SubFigure):
        parent = parent.get_figure()
    if not isinstance(parent, Figure):
        raise ValueError("plots: the given axes do not belong to a figure")
    return parent


def plain_text(text: str) -> str:
    """Text safe for Matplotlib: a ``$`` in a layer name must not start mathtext.

    >>> plain_text("cost $5")
    'cost \\\\$5'
    """
    if len(text) > MAX_TITLE_CHARS:
        text = "…" + text[-(MAX_TITLE_CHARS - 1) :]
    return text.replace("$", r"\$")
