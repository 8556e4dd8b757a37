"""One self-contained HTML page for the results of one or several experiments.

Per experiment: the claim and where the source makes it, the figure next to what the
source's own figure or table shows, the evidence table, the verdict with its interval, the
exact command that reproduces it and the versions the trials ran with. Like every tailwise
page: CSS inline, figures as PNG ``data:`` URIs, no JavaScript, a Content-Security-Policy
that forbids loading anything, every string from the data HTML-escaped.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tailwise._errors import first_line
from tailwise._io import atomic_open, check_output_path
from tailwise.experiments.model import Analysis, Experiment
from tailwise.experiments.runner import analysis_frame, resolve_names
from tailwise.experiments.store import store_path, versions
from tailwise.report._page import escape, format_cell
from tailwise.spectral.plots import figure_to_data_uri

__all__ = ["report"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0; color: #1d2330; background: #fff; font-size: 15px; }
header { background: #1f3b5c; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 6px 0; font-size: 24px; }
header .meta span { margin-right: 22px; font-size: 13px; opacity: 0.9; }
main { padding: 8px 28px 40px 28px; max-width: 1400px; }
h2 { font-size: 19px; border-bottom: 2px solid #d5dbe3; padding-bottom: 4px; margin-top: 30px; }
.claim { font-size: 16px; margin: 8px 0; }
.location { color: #5a6475; font-size: 13px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600;
           font-size: 13px; margin-left: 8px; vertical-align: middle; }
.verdict-reproduced { background: #d4f2dc; color: #13622b; }
.verdict-not-reproduced { background: #fbd9d7; color: #8d1c14; }
.verdict-inconclusive { background: #fdeec8; color: #7a5200; }
.verdict-none { background: #e6e9ef; color: #4a5363; }
.statement { background: #f6f8fb; border-left: 4px solid #1f3b5c; padding: 8px 12px; }
.evidence-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.evidence-row figure { margin: 0; flex: 2 1 560px; }
.evidence-row figure img { max-width: 100%; height: auto; border: 1px solid #d5dbe3; }
.evidence-row aside { flex: 1 1 280px; border: 1px solid #d5dbe3; border-radius: 6px;
                      padding: 8px 12px; background: #fafbfd; font-size: 14px; }
.evidence-row aside h3 { font-size: 14px; margin: 0 0 6px 0; }
.table-wrap { overflow-x: auto; border: 1px solid #d5dbe3; border-radius: 6px; margin: 12px 0; }
table { border-collapse: collapse; font-size: 12px; width: max-content; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e3e7ee; white-space: nowrap; }
th { background: #eef1f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #9aa3b2; text-align: center; }
#summary table { width: 100%; }
#summary td { white-space: normal; }
code { background: #eef1f6; padding: 2px 6px; border-radius: 4px; font-size: 13px; }
.note { color: #5a6475; font-size: 13px; }
"""


def _verdict_badge(verdict: str | None) -> str:
    label = verdict or "no verdict"
    token = (verdict or "none").replace(" ", "-")
    return f'<span class="verdict verdict-{token}">{escape(label)}</span>'


def _table(frame: pd.DataFrame, table_id: str) -> str:
    columns = [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, values, strict=True):
            text, kind = format_cell(column, value)
            cells.append(f'<td class="{kind}">{text}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _versions_line(frame: pd.DataFrame) -> str:
    """The distinct versions the trials ran with."""
    parts = []
    for column, label in (
        ("tailwise_version", "tailwise"),
        ("torch_version", "torch"),
        ("numpy_version", "numpy"),
        ("python_version", "python"),
    ):
        found = sorted({str(v) for v in frame.get(column, pd.Series(dtype=object)).dropna()})
        parts.append(f"{label} {' / '.join(found) if found else 'unknown'}")
    return ", ".join(parts)


def _head(experiment: Experiment, scale: str, verdict: str | None) -> str:
    """The opening of an experiment's section: name, verdict badge, claim and location."""
    where = f"source {experiment.source}, {experiment.location}"
    if experiment.substitution:
        where += f"; {scale} scale: {experiment.substitution}"
    return (
        f'<section id="exp-{escape(experiment.name)}" class="experiment">\n'
        f"<h2>{escape(experiment.name)}{_verdict_badge(verdict)}</h2>\n"
        f'<p class="claim">{escape(experiment.claim)}</p>\n'
        f'<p class="location">{escape(where)}</p>\n'
    )


def _section(experiment: Experiment, scale: str, store: Path) -> tuple[str, str | None]:
    """The ``<section>`` of one experiment, and its verdict (None without one)."""
    frame, expected = analysis_frame(experiment, scale, store)
    seeds = int(frame["seed"].nunique()) if len(frame) else experiment.seeds
    command = experiment.command(scale, seeds)
    if frame.empty:
        body = (
            f'<p class="statement">No finished trials at the {escape(scale)} scale. Run '
            f"<code>{escape(command)}</code>.</p>\n"
        )
        return _head(experiment, scale, None) + body + "</section>\n", None
    try:
        analysis: Analysis | None = experiment.analyze(frame)
        problem = ""
    except Exception as exc:  # shown in the page; the other sections still render
        analysis, problem = None, f"{type(exc).__name__}: {first_line(exc)}"
    complete = len(frame) >= expected
    status = (
        f"{len(frame)} trials ({frame['seed'].nunique()} seeds x "
        f"{len(experiment.configs(scale))} grid points)"
        + ("" if complete else f", {expected - len(frame)} missing: the verdict is provisional")
    )
    reproduce = (
        f'<p class="reproduce">Reproduce: <code>{escape(command)}</code></p>\n'
        f'<p class="note">Trials ran with {escape(_versions_line(frame))}; {escape(status)}.</p>\n'
    )
    if analysis is None:
        body = f'<p class="statement">The analysis failed: {escape(problem)}</p>\n' + reproduce
        return _head(experiment, scale, None) + body + "</section>\n", None
    image = figure_to_data_uri(analysis.figure(), "png", dpi=100)
    body = (
        f'<p class="statement"><b>{escape(analysis.verdict)}</b>: '
        f"{escape(analysis.statement)}</p>\n"
        '<div class="evidence-row">\n'
        f'<figure><img alt="{escape(experiment.name)} figure" src="{image}"></figure>\n'
        f"<aside><h3>What the source shows</h3><p>{escape(analysis.source_numbers)}</p></aside>\n"
        "</div>\n" + _table(analysis.table, f"table-{experiment.name}") + reproduce
    )
    return _head(experiment, scale, analysis.verdict) + body + "</section>\n", (analysis.verdict)


def report(
    names: str | list[str] | tuple[str, ...],
    out: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    scale: str = "quick",
) -> Path:
    """Write one self-contained HTML page about the experiments ``names`` (or ``"all"``) at
    ``scale`` from the results in ``store``; return its path.

    Each experiment's section is analyzed from the finished trials found (all seeds run so
    far); an experiment without any says how to run it. ``out`` must end in ``.html`` and
    is written atomically.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     page = report("002-serw-diffusion", pathlib.Path(folder) / "r.html", store=folder)
    ...     "No finished trials" in page.read_text()
    True
    """
    chosen = resolve_names(names)
    target = Path(out)
    check_output_path(target, (".html",), "report out")
    root = store_path(store)
    sections, summary = [], []
    for experiment in chosen:
        html, verdict = _section(experiment, scale, root)
        sections.append(html)
        summary.append(
            f'<tr><td><a href="#exp-{escape(experiment.name)}">{escape(experiment.name)}</a></td>'
            f"<td>{_verdict_badge(verdict)}</td><td>{escape(experiment.claim)}</td></tr>"
        )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mine = versions()
    title = "tailwise experiments" if len(chosen) > 1 else f"tailwise experiment {chosen[0].name}"
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{escape(title)}</h1><div class="meta">'
        f"<span>scale: {escape(scale)}</span><span>store: {escape(root)}</span>"
        f"<span>generated: {now}</span>"
        f"<span>tailwise {escape(mine['tailwise_version'])}, torch "
        f"{escape(mine['torch_version'])}, numpy {escape(mine['numpy_version'])}, python "
        f"{escape(mine['python_version'])}</span></div></header>\n<main>\n"
        '<section id="summary"><h2>Summary</h2><div class="table-wrap"><table>'
        "<thead><tr><th>experiment</th><th>verdict</th><th>claim</th></tr></thead><tbody>"
        + "".join(summary)
        + "</tbody></table></div></section>\n"
        + "".join(sections)
        + "</main>\n</body>\n</html>\n"
    )
    with atomic_open(target, "w") as handle:
        handle.write(page)
    return target
