"""The CKA heatmap of source 000 fig. 2.2: layer against layer, colour = CKA.

Drawn like the other figure modules (:mod:`tailwise.spectral.plots`,
:mod:`tailwise.hessian.plots`): Matplotlib's object-oriented API on the Agg canvas (no
pyplot state, nothing displayed), into ``ax`` when given, else into a new figure, which is
returned. The image carries ``gid="cka"``.

>>> import numpy as np
>>> fig = plot_cka(np.array([[1.0, 0.4], [0.4, 1.0]]))
>>> fig.axes[0].get_images()[0].get_gid()
'cka'
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from tailwise._errors import UsageError
from tailwise._plotting import new_axes, plain_text
from tailwise.similarity.layers import CKA_COLUMNS, cka_matrix

__all__ = ["plot_cka"]

# At most this many tick labels per axis; with more layers every k-th one is labelled.
_MAX_TICKS = 30
# Tick labels keep the end of a layer name (the part that tells layers apart).
_LABEL_CHARS = 28


def _short(name: str) -> str:
    name = name or "(model)"
    return name if len(name) <= _LABEL_CHARS else "…" + name[-(_LABEL_CHARS - 1) :]


def _as_matrix(data: pd.DataFrame | ArrayLike) -> tuple[np.ndarray, list[str], list[str]]:
    """(values (rows, cols), row labels, column labels) from a table or a matrix."""
    if isinstance(data, pd.DataFrame):
        frame = cka_matrix(data) if set(CKA_COLUMNS) <= set(data.columns) else data
        values = frame.to_numpy(dtype=np.float64)
        rows = [str(v) for v in frame.index]
        cols = [str(v) for v in frame.columns]
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 2:
            raise UsageError(f"plot_cka: expected a 2-D matrix, got shape {values.shape}")
        rows = [str(i) for i in range(values.shape[0])]
        cols = [str(j) for j in range(values.shape[1])]
    if values.size == 0:
        raise UsageError("plot_cka: the matrix is empty")
    return values, rows, cols


def _ticks(labels: list[str]) -> tuple[list[int], list[str]]:
    step = max(1, -(-len(labels) // _MAX_TICKS))
    positions = list(range(0, len(labels), step))
    return positions, [plain_text(_short(labels[i])) for i in positions]


def plot_cka(
    data: pd.DataFrame | ArrayLike,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cmap: str = "magma",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Figure:
    """Heatmap of CKA between layers (source 000 fig. 2.2).

    Args:
        data: a :func:`~tailwise.similarity.layer_cka` table (long format), a matrix
            DataFrame (rows = layers of model a, columns = layers of model b, e.g. from
            :func:`~tailwise.similarity.cka_matrix`), or a 2-D array.
        ax: axes to draw into; a new figure (about 0.18 inch per layer, 4 to 10 inches) when
            None.
        title: axes title (default "CKA"); ``$`` is shown literally.
        xlabel, ylabel: axis labels (default "layer_b" / "layer_a" for tables, "layer" for
            arrays).
        cmap, vmin, vmax: colour map and its range (CKA in [0, 1]; NaN cells stay blank).

    Returns:
        The figure drawn on. Layer 0 is at the bottom left, as in the source's figure; with
        more than 30 layers per axis every k-th one is labelled.
    """
    values, rows, cols = _as_matrix(data)
    side = float(np.clip(0.18 * max(values.shape), 4.0, 10.0))
    fig, ax = new_axes(ax, (side + 1.2, side))
    image = ax.imshow(
        np.ma.masked_invalid(values),
        origin="lower",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="auto",
    )
    image.set_gid("cka")
    x_pos, x_labels = _ticks(cols)
    y_pos, y_labels = _ticks(rows)
    ax.set_xticks(x_pos, x_labels, rotation=90, fontsize="x-small")
    ax.set_yticks(y_pos, y_labels, fontsize="x-small")
    table = isinstance(data, pd.DataFrame)
    ax.set_xlabel(xlabel if xlabel is not None else ("layer_b" if table else "layer"))
    ax.set_ylabel(ylabel if ylabel is not None else ("layer_a" if table else "layer"))
    ax.set_title(plain_text(title) if title else "CKA")
    fig.colorbar(image, ax=ax, label="CKA")
    return fig
