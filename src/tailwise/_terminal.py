"""Tables on the terminal: number formatting and the rich tables the commands print."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["columns", "console", "fmt", "print_rows"]


def columns(spec: str) -> tuple[tuple[str, str], ...]:
    """``"column:header ..."`` -> ((column, header), ...); "~" in a header is a space."""
    pairs = (item.partition(":") for item in spec.split())
    return tuple((col, header.replace("~", " ") if header else col) for col, _, header in pairs)


def console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped or captured output: keep the full table instead of squeezing it into 80 columns.
        console = Console(width=200)
    return console


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}"
    try:
        import pandas as pd

        if pd.isna(value):
            return "-"
    except (TypeError, ValueError):
        pass
    return str(value)


_COUNTS = frozenset({"params_before", "params_after", "flops_before", "flops_after", "num_params"})


def _fmt_cell(column: str, value: Any) -> str:
    """A table cell: counts with thousands separators, numbers to 3 decimals, "-" if missing."""
    if column in _COUNTS and isinstance(value, int | float) and not math.isnan(value):
        return f"{value:,.0f}"
    return fmt(value)


def print_rows(
    console: Console, df: Any, shown: tuple[tuple[str, str], ...], title: str, extra: str
) -> None:
    """A rich table of ``df``'s ``shown`` columns plus a last text column ``extra``: the
    warning (analyze), the reason (tails) or the note (prune); failures in red."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for col, header in shown:
        text = col in ("name", "kind", "layer", "method")
        table.add_column(header, justify="left" if text else "right", no_wrap=True)
    table.add_column(extra, justify="left")
    for row in df.itertuples(index=False):
        record = row._asdict()
        if record.get("status") == "skipped":
            continue
        last = str(record.get(extra) or "")
        style = {"over-trained": "red", "under-trained": "yellow"}.get(last)
        if record.get("status") == "failed":
            last, style = f"failed: {record.get('reason')}", "red"
        cells = [_fmt_cell(col, record[col]) for col, _ in shown]
        table.add_row(*cells, last or ("ok" if "status" in record else ""), style=style)
    console.print(table)
    if "status" in df.columns:
        skipped = df[df["status"] == "skipped"]
        if len(skipped):
            reasons = skipped["reason"].value_counts()
            detail = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
            console.print(f"[dim]{len(skipped)} tensors not analysed ({detail})[/dim]")
