"""Tables on the terminal: number formatting and the rich tables the commands print.

Two rules. Numbers are never cut: when the default columns do not fit the terminal, the
least important ones are left out, and a line says which and how to get them (``--columns``,
``--out``). Text that comes from a file (tensor names, paths, reasons) is shown as it is:
never interpreted as rich markup, and control characters (ESC, ...) are shown escaped.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "columns", "console", "fmt", "plain", "print_rows", "select_columns"]

# (column, header, must keep): a must-keep column is never left out to fit the width.
Column = tuple[str, str, bool]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_COUNTS = frozenset({"params_before", "params_after", "flops_before", "flops_after", "num_params"})
_TEXT = frozenset({"name", "layer", "kind", "method", "status", "reason", "warning", "note"})
# Width of the name column when it has to give way (it folds; numbers never do).
_NAME_MIN = 24
# ... and down to this many characters on a narrow terminal, before anything is cut.
_NAME_FLOOR = 8


def columns(spec: str) -> tuple[Column, ...]:
    """``"column:header ..."`` -> ((column, header, keep), ...); ``"~"`` in a header is a space;
    a trailing ``"!"`` on the column marks it must-keep.

    >>> columns("name! num_pl_spikes:tail")
    (('name', 'name', True), ('num_pl_spikes', 'tail', False))
    """
    found = []
    for item in spec.split():
        col, _, header = item.partition(":")
        keep = col.endswith("!")
        col = col.rstrip("!")
        found.append((col, header.replace("~", " ") if header else col, keep))
    return tuple(found)


def select_columns(
    option: str | None, default: tuple[Column, ...], available: Any
) -> tuple[Column, ...]:
    """The columns a user asked for with ``--columns a,b,c``, kept in the order given and
    never left out; ``all``: every column of the table, those that do not fit the terminal
    left out like the default ones (the must-keep ones of ``default`` never); ``default``
    when ``option`` is None. An unknown name is a :class:`tailwise.UsageError` listing the
    columns there are."""
    if option is None:
        return default
    names = [str(c) for c in available]
    headers = {col: header for col, header, _ in default}
    if option.strip().lower() == "all":
        must = {col for col, _, keep in default if keep}
        return tuple((name, headers.get(name, name), name in must) for name in names)
    else:
        wanted = [part.strip() for part in option.split(",") if part.strip()]
        unknown = [name for name in wanted if name not in names]
        if unknown or not wanted:
            from tailwise._errors import UsageError

            raise UsageError(
                f"--columns {option!r}: unknown column(s) {', '.join(unknown) or '(none given)'};"
                f" the table has: {', '.join(names)}"
            )
    return tuple((name, headers.get(name, name), True) for name in wanted)


def console() -> Console:
    """The console tables go to: the terminal's width, or 200 columns when piped."""
    found = Console()
    if not found.is_terminal:
        # Piped or captured output: keep the full table instead of squeezing it into 80 columns.
        found = Console(width=200)
    return found


def plain(value: object) -> str:
    r"""``value`` as text that is safe to print: control characters shown escaped and rich
    markup escaped (for use in markup strings; table cells use :class:`rich.text.Text`).

    >>> plain("[/bold]x\x1b[31m.weight")
    '\\[/bold]x\\x1b[31m.weight'
    """
    return escape(_visible(str(value)))


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def fmt(value: Any) -> str:
    """A number to 3 decimals (3 significant digits when very large or small), "-" if missing.

    >>> fmt(2.0), fmt(123456.0), fmt(float("nan")), fmt(None)
    ('2.000', '1.23e+05', '-', '')
    """
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


def _cell(column: str, value: Any) -> str:
    """A table cell: counts with thousands separators, numbers to 3 decimals, "-" if missing."""
    if column in _COUNTS and isinstance(value, int | float) and not math.isnan(value):
        return f"{value:,.0f}"
    return fmt(value)


def _widths(shown: tuple[Column, ...], cells: list[list[str]]) -> list[int]:
    """Width each column takes: its longest cell or header; a name column folds down to
    ``_NAME_MIN`` characters (numbers never fold)."""
    widths = [
        max([len(header), *(len(row[i]) for row in cells)])
        for i, (_, header, _) in enumerate(shown)
    ]
    return [
        min(width, _NAME_MIN) if col in ("name", "layer") else width
        for width, (col, _, _) in zip(widths, shown, strict=True)
    ]


def _fit(
    shown: tuple[Column, ...], cells: list[list[str]], extra: str, width: int
) -> tuple[list[int], list[str]]:
    """Indices of the columns that fit ``width`` (must-keep ones always), and the names of
    those left out, dropped from the right end of the table."""
    widths = _widths(shown, cells)
    last = min(max([len(extra), *(len(row[-1]) for row in cells)]), _NAME_MIN)
    kept = list(range(len(shown)))

    def total() -> int:
        # Each column costs its width plus 3 (padding and border); one more border at the end.
        return sum(widths[i] for i in kept) + last + 3 * (len(kept) + 1) + 1

    dropped: list[str] = []
    for i in reversed(range(len(shown))):
        if total() <= width:
            break
        if not shown[i][2]:
            kept.remove(i)
            dropped.append(shown[i][0])
    return kept, dropped[::-1]


# Narrowest a folding text column (name, layer, the last one) gets before the table is
# drawn wider than the terminal instead.
_FOLD_MIN = 4


def print_rows(out: Console, df: Any, shown: tuple[Column, ...], title: str, extra: str) -> None:
    """A rich table of ``df``'s ``shown`` columns plus a last text column ``extra``: the
    warning (analyze), the reason (tails) or the note (prune); failures in red. Columns that
    do not fit the console are left out (say which); numbers are never cut."""
    rows = [
        record
        for record in (row._asdict() for row in df.itertuples(index=False))
        if record.get("status") != "skipped"
    ]
    cells = []
    styles = []
    for record in rows:
        last = str(record.get(extra) or "")
        style = {"over-trained": "red", "under-trained": "yellow"}.get(last)
        if record.get("status") == "failed":
            last, style = f"failed: {record.get('reason')}", "red"
        elif not last and record.get("reason"):
            last = str(record.get("reason"))
        last = last or ("ok" if "status" in record else "")
        cells.append([_visible(_cell(col, record[col])) for col, _, _ in shown] + [_visible(last)])
        styles.append(style)
    kept, dropped = _fit(shown, cells, extra, out.width)
    widths = _widths(shown, cells)
    # Must-keep columns still too wide (a narrow terminal): the name column folds further.
    last_width = min(max([len(extra), *(len(row[-1]) for row in cells)]), _NAME_MIN)
    excess = sum(widths[i] for i in kept) + last_width + 3 * (len(kept) + 1) + 1 - out.width
    for i in kept:
        if excess > 0 and shown[i][0] in ("name", "layer"):
            give = min(excess, widths[i] - _NAME_FLOOR)
            if give > 0:
                widths[i] -= give
                excess -= give
    folding = [i for i in kept if shown[i][0] in ("name", "layer")]
    rigid = sum(widths[i] for i in kept if i not in folding) + 3 * (len(kept) + 1) + 1
    needed = None
    if rigid + _FOLD_MIN * (len(folding) + 1) > out.width:
        # Columns the user named (must-keep) that cannot fit even so: the table is drawn at
        # its natural width, wider than the terminal (lines wrap), rather than letting rich
        # squeeze or cut the numbers.
        widths = _widths(shown, cells)
        needed = sum(widths[i] for i in kept) + last_width + 3 * (len(kept) + 1) + 1
    table = Table(title=Text(_visible(title)), title_justify="left", header_style="bold")
    for i in kept:
        col, header, _ = shown[i]
        if col in ("name", "layer"):
            table.add_column(header, justify="left", overflow="fold", min_width=widths[i])
        else:
            side: Literal["left", "right"] = "left" if col in _TEXT else "right"
            table.add_column(header, justify=side, no_wrap=True, min_width=widths[i])
    table.add_column(extra, justify="left", overflow="fold")
    for row, style in zip(cells, styles, strict=True):
        table.add_row(*(Text(row[i]) for i in kept), Text(row[-1]), style=style)
    terminal = out.width
    if needed is not None:
        out.width = needed  # rich.Console.print(width=) cannot go above the console's width
    try:
        out.print(table, crop=needed is None)
    finally:
        out.width = terminal
    if needed is not None:
        out.print(
            f"[dim]the chosen columns need {needed} characters; the terminal has "
            f"{out.width}: fewer --columns, or --out for a file[/dim]",
            highlight=False,
        )
    if dropped:
        out.print(
            f"[dim]{len(dropped)} column(s) left out to fit {out.width} characters: "
            f"{', '.join(dropped)}; --columns NAME,... picks columns (--columns all), --out "
            "writes every column[/dim]",
            highlight=False,
        )
    if "status" in df.columns:
        skipped = df[df["status"] == "skipped"]
        if len(skipped):
            reasons = skipped["reason"].value_counts()
            detail = ", ".join(f"{count} {plain(reason)}" for reason, count in reasons.items())
            out.print(f"[dim]{len(skipped)} tensors not analysed ({detail})[/dim]", highlight=False)
