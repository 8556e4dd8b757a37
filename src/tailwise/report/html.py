"""One self-contained HTML page for an analysis table.

The page needs nothing but itself: CSS is inline, figures are PNG ``data:`` URIs, there is no
JavaScript, and a Content-Security-Policy forbids loading anything from elsewhere. Every string
that comes from the table (layer names, reasons, the source) is HTML-escaped.

Example (written into a temporary folder here)::

    >>> import pathlib, tempfile
    >>> from torch import nn
    >>> from tailwise.spectral.analyze import analyze
    >>> from tailwise.report import write_html
    >>> df = analyze(nn.Linear(64, 32), keep_evals=True, progress=False)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_html(df, pathlib.Path(folder) / "report.html").name
    'report.html'
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from tailwise._io import atomic_open
from tailwise._progress import progress_bar
from tailwise.report._page import (
    PAGE_END,
    escape,
    format_cell,
    page_start,
    summary_block,
    table_block,
)
from tailwise.spectral.plots import figure_to_data_uri, plot_alpha, plot_esd_loglog, plot_esd_mp

__all__ = ["write_html"]

_LAYER_FIGURE_DPI = 80
_ALPHA_FIGURE_DPI = 100


@dataclass(frozen=True)
class _LayerFigure:
    """A table row that has kept eigenvalues: its row position, the row and the ESD."""

    position: int
    row: pd.Series
    evals: NDArray[np.float64]


def write_html(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    title: str = "tailwise analysis",
    summary: Mapping[str, object] | None = None,
    max_layer_figures: int = 200,
    progress: bool = True,
) -> Path:
    """Write an analysis table as one self-contained HTML file.

    The page holds a header (title, ``df.attrs["source"]``, date), a summary block, the
    alpha-per-layer figure, the full table (``<table id="layers">``, one row per layer,
    skipped and failed rows with their reasons) and, for every layer whose eigenvalues are in
    ``df.attrs["esd"]`` (``analyze(..., keep_evals=True)``), a block
    ``<section class="esd-figure" id="esd-<row #>">`` with the log-log ESD and power-law fit
    beside the Marchenko-Pastur fit.

    Args:
        df: table from ``tailwise.spectral.analyze.analyze``.
        path: file to write; written atomically (a failure leaves any old file intact).
        title: page title.
        summary: model-level numbers to show; ``tailwise.spectral.analyze.summary(df)``
            when None.
        max_layer_figures: at most this many per-layer figures (the first ones in row
            order); the page says when some were left out.
        progress: a bar over the per-layer figures (on stderr, only on a terminal): a
            transformer's report takes seconds.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_html: df must be a pandas DataFrame, got {type(df).__name__}")
    if isinstance(max_layer_figures, bool) or not isinstance(max_layer_figures, int):
        raise TypeError(f"write_html: max_layer_figures must be an int, got {max_layer_figures!r}")
    if max_layer_figures < 0:
        raise ValueError(f"write_html: max_layer_figures must be >= 0, got {max_layer_figures}")
    if summary is None:
        from tailwise.spectral.analyze import summary as summarize

        summary = summarize(df)

    layers = list(_layers_with_evals(df))
    shown = layers[:max_layer_figures]
    target = Path(path)
    with atomic_open(target, "w") as handle:
        handle.write(page_start(title, df))
        handle.write(summary_block(summary))
        handle.write(_alpha_block(df))
        handle.write(table_block(df, {layer.position for layer in shown}))
        handle.write(_figures_intro("esd" in df.attrs, len(shown), len(layers)))
        for layer in progress_bar(shown, len(shown), progress, "report"):
            handle.write(_layer_block(layer))
        handle.write(PAGE_END)
    return target


def _alpha_block(df: pd.DataFrame) -> str:
    if "alpha" not in df.columns:
        return (
            '<section id="alpha"><h2>α per layer</h2>'
            '<p class="note">No alpha column.</p></section>\n'
        )
    uri = figure_to_data_uri(plot_alpha(df), dpi=_ALPHA_FIGURE_DPI)
    return (
        '<section id="alpha">\n<h2>α per layer</h2>\n'
        '<p class="note">Power-law exponent of each layer\'s ESD tail; the shaded band is the '
        "well-trained range 2 ≤ α ≤ 6 (α &gt; 6: under-trained, α &lt; 2: over-trained).</p>\n"
        f'<div class="figure-wide"><img id="alpha-figure" src="{uri}" '
        'alt="alpha per layer"></div>\n</section>\n'
    )


def _layers_with_evals(df: pd.DataFrame) -> Iterator[_LayerFigure]:
    """Rows, in order, whose name has eigenvalues in ``df.attrs["esd"]``."""
    esd = df.attrs.get("esd") or {}
    if not esd or "name" not in df.columns:
        return
    for position, (_, row) in enumerate(df.iterrows()):
        evals = esd.get(row["name"])
        if evals is not None:
            yield _LayerFigure(position, row, np.asarray(evals, dtype=np.float64))


def _figures_intro(has_esd: bool, shown: int, total: int) -> str:
    parts = ['<section id="figures">\n<h2>Empirical spectral densities</h2>\n']
    if not has_esd:
        parts.append(
            '<p class="note">No eigenvalues were kept: run '
            "<code>analyze(..., keep_evals=True)</code> to include per-layer figures.</p>\n"
        )
    elif shown < total:
        parts.append(
            f'<p class="note" id="figures-truncated">Showing ESD figures for the first {shown} '
            f"of {total} layers (max_layer_figures={shown}).</p>\n"
        )
    else:
        parts.append(
            '<p class="note">Left: log-log density with the power-law fit from xmin. Right: the '
            "ESD scaled to mean 1 with the fitted Marchenko-Pastur density and its bulk edge "
            "λ+.</p>\n"
        )
    parts.append("</section>\n")
    return "".join(parts)


def _number(row: pd.Series, column: str) -> float:
    """``row[column]`` as a float; NaN when missing or not a number."""
    value = row.get(column)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _layer_block(layer: _LayerFigure) -> str:
    row = layer.row
    name = str(row.get("name", ""))
    alpha, xmin, xmax = _number(row, "alpha"), _number(row, "xmin"), _number(row, "xmax")
    q = _number(row, "Q")
    if not math.isfinite(q):
        n, m = _number(row, "N"), _number(row, "M")
        q = n / m if math.isfinite(n) and math.isfinite(m) and m > 0 else math.nan

    # Fixed margins: a layout engine would triple the time per figure, and a report may
    # hold hundreds of them.
    fig = Figure(figsize=(11.0, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.14, top=0.91, wspace=0.2)
    alpha_text = f"α = {alpha:.3g}" if math.isfinite(alpha) else "no power-law fit"
    plot_esd_loglog(
        layer.evals,
        alpha=alpha,
        xmin=xmin,
        xmax=xmax if math.isfinite(xmax) else None,
        title=f"log-log ESD, {alpha_text}",
        ax=left,
    )
    plot_esd_mp(layer.evals, q=q, mp_sigma=_number(row, "mp_sigma"), title="MP fit", ax=right)
    uri = figure_to_data_uri(fig, dpi=_LAYER_FIGURE_DPI)

    facts = [f"{layer.evals.size} eigenvalues"]
    for column in ("kind", "N", "M", "alpha", "warning", "status"):
        if column in row.index:
            text, kind = format_cell(column, row[column])
            if kind != "na" and text:
                facts.append(f"{escape(column)}: {text}")
    return (
        f'<section class="esd-figure" id="esd-{layer.position}">\n'
        f"<h3>#{layer.position} {escape(name)}</h3>\n"
        f'<p class="facts">{" · ".join(facts)}</p>\n'
        f'<img src="{uri}" alt="ESD of layer {escape(name)}">\n</section>\n'
    )
