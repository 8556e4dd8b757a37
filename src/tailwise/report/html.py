"""One self-contained HTML page for an analysis table.

The page needs nothing but itself: CSS is inline, figures are PNG ``data:`` URIs, there is no
JavaScript, and a Content-Security-Policy forbids loading anything from elsewhere. Every string
that comes from the table (layer names, reasons, the source) is HTML-escaped.

Example::

    >>> from tailwise.spectral.analyze import analyze  # doctest: +SKIP
    >>> from tailwise.report import write_html  # doctest: +SKIP
    >>> df = analyze(model, keep_evals=True, progress=False)  # doctest: +SKIP
    >>> write_html(df, "report.html")  # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import html
import importlib.metadata
import math
import numbers
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from tailwise._io import atomic_open
from tailwise.spectral.plots import figure_to_data_uri, plot_alpha, plot_esd_loglog, plot_esd_mp

__all__ = ["write_html"]

# Columns that count things: shown without decimals even when NaNs made them float.
_INTEGER_COLUMNS = frozenset(
    {"N", "M", "rf", "num_evals", "num_pl_spikes", "matrix_rank", "rank_loss", "num_spikes"}
)
# Table columns shown first and last; the others keep the frame's order.
_LEADING_COLUMNS = ("name", "kind", "status", "warning", "alpha")
_TRAILING_COLUMNS = ("reason",)
_LAYER_FIGURE_DPI = 80
_ALPHA_FIGURE_DPI = 100

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0; color: #1d2330; background: #fff; font-size: 15px; }
header { background: #1f3b5c; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 6px 0; font-size: 24px; }
header .meta { font-size: 13px; opacity: 0.9; }
header .meta span { margin-right: 22px; }
main { padding: 8px 28px 40px 28px; }
h2 { font-size: 19px; border-bottom: 2px solid #d5dbe3; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 15px; margin: 0 0 4px 0; word-break: break-all; }
.summary { display: flex; flex-wrap: wrap; gap: 8px; margin: 0; }
.summary div { border: 1px solid #d5dbe3; border-radius: 6px; padding: 6px 12px;
               background: #f6f8fb; min-width: 120px; }
.summary dt { font-size: 12px; color: #5a6475; }
.summary dd { margin: 0; font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure-wide img, .esd-figure img { max-width: 100%; height: auto; display: block; }
.table-wrap { overflow-x: auto; border: 1px solid #d5dbe3; border-radius: 6px; }
table#layers { border-collapse: collapse; font-size: 12px; width: max-content; }
#layers th, #layers td { padding: 3px 7px; border-bottom: 1px solid #e3e7ee; white-space: nowrap; }
#layers th { position: sticky; top: 0; background: #eef1f6; text-align: left; }
#layers td.num { text-align: right; font-variant-numeric: tabular-nums; }
#layers td.na { color: #9aa3b2; text-align: center; }
#layers td.reason { white-space: normal; min-width: 220px; max-width: 420px; }
#layers td.name { max-width: 360px; overflow: hidden; text-overflow: ellipsis; }
#layers tbody tr:nth-child(even) { background: #fafbfd; }
#layers tbody tr.row-failed { background: #fdecec; }
#layers tbody tr.row-skipped { color: #6b7483; background: #f1f2f4; }
td.warning-under-trained { background: #ffe2b8; font-weight: 600; }
td.warning-over-trained { background: #ffc9c9; font-weight: 600; }
td.status-failed { color: #b3261e; font-weight: 600; }
td.status-skipped { color: #6b7483; font-style: italic; }
.note { color: #5a6475; font-size: 13px; }
.esd-figure { border: 1px solid #d5dbe3; border-radius: 6px; padding: 10px 12px;
              margin: 14px 0; }
.esd-figure .facts { font-size: 12px; color: #5a6475; margin: 0 0 6px 0; }
a { color: #1f5fa8; }
"""

# No script, nothing from elsewhere: images only as data: URIs, styles only inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


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
        handle.write(_page_start(title, df))
        handle.write(_summary_block(summary))
        handle.write(_alpha_block(df))
        handle.write(_table_block(df, {layer.position for layer in shown}))
        handle.write(_figures_intro("esd" in df.attrs, len(shown), len(layers)))
        for layer in shown:
            handle.write(_layer_block(layer))
        handle.write("</main>\n</body>\n</html>\n")
    return target


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _version() -> str:
    try:
        return importlib.metadata.version("tailwise")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _page_start(title: str, df: pd.DataFrame) -> str:
    source = df.attrs.get("source", "")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header>\n<h1>{_escape(title)}</h1>\n<div class="meta">'
        f'<span class="source">source: {_escape(source) if source else "unknown"}</span>'
        f'<span class="date">generated: {date}</span>'
        f'<span class="layers">layers: {len(df)}</span>'
        f'<span class="version">tailwise {_escape(_version())}</span>'
        "</div>\n</header>\n<main>\n"
    )


def _format_number(value: float) -> str:
    """Four significant digits; exponent notation from 1e4 up and below 1e-4."""
    if value == 0:
        return "0"
    return f"{value:.4g}"


def _summary_block(summary: Mapping[str, object]) -> str:
    items = []
    for key, value in summary.items():
        text, _ = _format_cell(str(key), value)
        items.append(f"<div><dt>{_escape(key)}</dt><dd>{text}</dd></div>")
    body = f'<dl class="summary">{"".join(items)}</dl>' if items else '<p class="note">None.</p>'
    return f'<section id="summary">\n<h2>Summary</h2>\n{body}\n</section>\n'


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


def _format_cell(column: str, value: object) -> tuple[str, str]:
    """(escaped text, CSS class) of one table cell."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "–", "na"
    if value is pd.NA or value is pd.NaT:
        return "–", "na"
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), "bool"
    if isinstance(value, numbers.Integral):
        return str(int(value)), "num"
    if isinstance(value, numbers.Real):
        number = float(value)
        if column in _INTEGER_COLUMNS and number.is_integer():
            return str(int(number)), "num"
        if math.isinf(number):
            return ("∞" if number > 0 else "−∞"), "num"
        return _format_number(number), "num"
    return _escape(value), "text"


def _column_order(columns: list[str]) -> list[str]:
    """Identity and verdict first (they must be visible without scrolling), reason last."""
    first = [c for c in _LEADING_COLUMNS if c in columns]
    last = [c for c in _TRAILING_COLUMNS if c in columns]
    return first + [c for c in columns if c not in first and c not in last] + last


def _table_block(df: pd.DataFrame, figured: set[int]) -> str:
    frame_columns = [str(column) for column in df.columns]
    columns = _column_order(frame_columns)
    df = df.set_axis(frame_columns, axis=1)[columns]
    head = "<th>#</th>" + "".join(f"<th>{_escape(column)}</th>" for column in columns)
    rows = []
    for position, values in enumerate(df.itertuples(index=False, name=None)):
        status = str(values[columns.index("status")]) if "status" in columns else "ok"
        reason = values[columns.index("reason")] if "reason" in columns else ""
        cells = [f'<td class="num">{position}</td>']
        for column, value in zip(columns, values, strict=True):
            text, kind = _format_cell(column, value)
            classes = [kind]
            if column == "name":
                classes.append("name")
                if position in figured:
                    text = f'<a href="#esd-{position}">{text}</a>'
            elif column == "warning" and isinstance(value, str) and value:
                classes.append("warning warning-" + _css_token(value))
            elif column == "status" and isinstance(value, str):
                classes.append("status status-" + _css_token(value))
            elif column == "reason":
                classes.append("reason")
            tip = ""
            if column == "status" and isinstance(reason, str) and reason:
                tip = f' title="{_escape(reason)}"'  # the reason column is far to the right
            cells.append(f'<td class="{" ".join(classes)}"{tip}>{text}</td>')
        row_class = f"row-{_css_token(status)}"
        rows.append(f'<tr id="layer-{position}" class="{row_class}">{"".join(cells)}</tr>')
    body = "\n".join(rows)
    return (
        '<section id="table">\n<h2>Layers</h2>\n'
        f'<p class="note">{len(df)} rows; skipped and failed layers keep their reason. '
        "Eigenvalues are those of W<sup>T</sup>W; log is log<sub>10</sub>.</p>\n"
        f'<div class="table-wrap"><table id="layers">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>\n</section>\n"
    )


def _css_token(value: str) -> str:
    """A class-name-safe token (letters, digits, '-') of a table value."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in value)


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
            text, kind = _format_cell(column, row[column])
            if kind != "na" and text:
                facts.append(f"{_escape(column)}: {text}")
    return (
        f'<section class="esd-figure" id="esd-{layer.position}">\n'
        f"<h3>#{layer.position} {_escape(name)}</h3>\n"
        f'<p class="facts">{" · ".join(facts)}</p>\n'
        f'<img src="{uri}" alt="ESD of layer {_escape(name)}">\n</section>\n'
    )
