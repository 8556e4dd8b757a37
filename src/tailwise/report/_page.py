"""The pieces every tailwise HTML page shares (package-internal to ``tailwise.report``).

A page is ``page_start(title, df)``, any number of ``<section>`` blocks (``summary_block``,
``table_block``, figures), then ``PAGE_END``. The rules: CSS inline, figures as ``data:``
URIs, no JavaScript, a Content-Security-Policy that forbids loading anything from elsewhere,
and every string that comes from the data HTML-escaped (``escape``).
"""

from __future__ import annotations

import html
import importlib.metadata
import math
import numbers
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np
import pandas as pd

__all__ = ["PAGE_END", "escape", "format_cell", "page_start", "summary_block", "table_block"]

# Columns that count things: shown without decimals even when NaNs made them float.
_INTEGER_COLUMNS = frozenset(
    {"N", "M", "rf", "num_evals", "num_pl_spikes", "matrix_rank", "rank_loss", "num_spikes"}
)
# Table columns shown first and last; the others keep the frame's order.
_LEADING_COLUMNS = ("name", "kind", "status", "warning", "alpha")
_TRAILING_COLUMNS = ("reason",)

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


def escape(value: object) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes.

    >>> escape('<a href="x">')
    '&lt;a href=&quot;x&quot;&gt;'
    """
    return html.escape(str(value), quote=True)


def _version() -> str:
    try:
        return importlib.metadata.version("tailwise")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def page_start(title: str, df: pd.DataFrame) -> str:
    """``<!DOCTYPE html>`` up to the opening ``<main>``: head (CSP, inline CSS) and a header
    with the title, ``df.attrs["source"]``, the date, ``len(df)`` layers and the version."""
    source = df.attrs.get("source", "")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header>\n<h1>{escape(title)}</h1>\n<div class="meta">'
        f'<span class="source">source: {escape(source) if source else "unknown"}</span>'
        f'<span class="date">generated: {date}</span>'
        f'<span class="layers">layers: {len(df)}</span>'
        f'<span class="version">tailwise {escape(_version())}</span>'
        "</div>\n</header>\n<main>\n"
    )


def _format_number(value: float) -> str:
    """Four significant digits; exponent notation from 1e4 up and below 1e-4."""
    if value == 0:
        return "0"
    return f"{value:.4g}"


def summary_block(summary: Mapping[str, object]) -> str:
    """``<section id="summary">``: one ``<dt>``/``<dd>`` pair per entry of ``summary``."""
    items = []
    for key, value in summary.items():
        text, _ = format_cell(str(key), value)
        items.append(f"<div><dt>{escape(key)}</dt><dd>{text}</dd></div>")
    body = f'<dl class="summary">{"".join(items)}</dl>' if items else '<p class="note">None.</p>'
    return f'<section id="summary">\n<h2>Summary</h2>\n{body}\n</section>\n'


def format_cell(column: str, value: object) -> tuple[str, str]:
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
    return escape(value), "text"


def _column_order(columns: list[str]) -> list[str]:
    """Identity and verdict first (they must be visible without scrolling), reason last."""
    first = [c for c in _LEADING_COLUMNS if c in columns]
    last = [c for c in _TRAILING_COLUMNS if c in columns]
    return first + [c for c in columns if c not in first and c not in last] + last


def table_block(df: pd.DataFrame, figured: set[int]) -> str:
    """``<section id="table">`` with ``<table id="layers">``, one row per row of ``df``.

    Rows whose position is in ``figured`` link their name to ``#esd-<position>``.
    """
    frame_columns = [str(column) for column in df.columns]
    columns = _column_order(frame_columns)
    df = df.set_axis(frame_columns, axis=1)[columns]
    head = "<th>#</th>" + "".join(f"<th>{escape(column)}</th>" for column in columns)
    rows = []
    for position, values in enumerate(df.itertuples(index=False, name=None)):
        status = str(values[columns.index("status")]) if "status" in columns else "ok"
        reason = values[columns.index("reason")] if "reason" in columns else ""
        cells = [f'<td class="num">{position}</td>']
        for column, value in zip(columns, values, strict=True):
            text, kind = format_cell(column, value)
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
                tip = f' title="{escape(reason)}"'  # the reason column is far to the right
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


# Closes what page_start opened.
PAGE_END = "</main>\n</body>\n</html>\n"
