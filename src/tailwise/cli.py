"""Command-line front end: ``tailwise analyze`` (more verbs arrive with later features).

Thin layer: parse options, call the library, print a rich table, write files atomically.
Expected failures (missing file, corrupt checkpoint, refused pickle, bad option) print one
line ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="tailwise",
    help="Look inside trained networks layer by layer: spectra, tails, curvature.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Columns shown in the terminal (all columns go to --out).
_SHOWN = (
    ("name", "layer"),
    ("kind", "kind"),
    ("N", "N"),
    ("M", "M"),
    ("alpha", "alpha"),
    ("xmin", "xmin"),
    ("D", "D"),
    ("num_pl_spikes", "tail"),
    ("log_norm", "log_norm"),
    ("log_spectral_norm", "log_spec"),
    ("stable_rank", "stable_rank"),
    ("entropy", "entropy"),
    ("num_spikes", "spikes"),
)


class UsageError(Exception):
    """An expected, user-facing failure: printed as one line, exit status 2."""


def _fmt(value: Any) -> str:
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


def _print_table(console: Console, df: Any, summary: dict[str, Any], source: str) -> None:
    table = Table(title=f"tailwise analyze: {source}", title_justify="left", header_style="bold")
    for _, header in _SHOWN:
        text = header in ("layer", "kind")
        table.add_column(header, justify="left" if text else "right", no_wrap=True)
    table.add_column("status / warning", justify="left")
    for row in df.itertuples(index=False):
        record = row._asdict()
        if record["status"] == "skipped":
            continue
        cells = [_fmt(record[col]) for col, _ in _SHOWN]
        note = record["warning"] or ""
        style = {"over-trained": "red", "under-trained": "yellow"}.get(note, "")
        if record["status"] != "ok":
            note = f"{record['status']}: {record['reason']}"
            style = "red"
        table.add_row(*cells, note or "ok", style=style or None)
    console.print(table)
    skipped = df[df["status"] == "skipped"]
    if len(skipped):
        reasons = skipped["reason"].value_counts()
        detail = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        console.print(f"[dim]{len(skipped)} tensors not analysed ({detail})[/dim]")
    console.print(
        "mean alpha {alpha}  alpha_weighted {alpha_weighted}  log_norm {log_norm}  "
        "log_spectral_norm {log_spectral_norm}  stable_rank {stable_rank}  mp_softrank "
        "{mp_softrank}".format(**{k: _fmt(summary[k]) for k in summary})
    )
    console.print(
        f"{summary['num_ok']} ok, {summary['num_failed']} failed, {summary['num_skipped']} "
        f"skipped; {summary['num_under_trained']} under-trained (alpha > 6), "
        f"{summary['num_over_trained']} over-trained (alpha < 2)"
    )


def _resolve_source(source: str | None, quiet: bool, console: Console) -> tuple[Any, str]:
    if source is not None:
        return source, source
    from tailwise.models.reference import reference_checkpoint

    path = reference_checkpoint(progress=not quiet)
    if not quiet:
        console.print(
            f"[dim]No SOURCE given: analysing tailwise's reference network "
            f"(an MLP trained on scikit-learn's digits), cached at {path}[/dim]"
        )
    return path, "reference MLP (digits)"


@app.command()
def analyze(
    source: Annotated[
        str | None,
        typer.Argument(
            help="Model weights: .safetensors, Hugging Face folder, or .pt/.pth/.bin "
            "checkpoint. Default: tailwise's reference network (trained on first use)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the table: .csv, .json or .parquet")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report")
    ] = None,
    include: Annotated[
        str | None, typer.Option(help="Only tensors whose name matches this regex")
    ] = None,
    exclude: Annotated[
        str | None, typer.Option(help="Skip tensors whose name matches this regex")
    ] = None,
    fit: Annotated[str, typer.Option(help="xmin of the power-law fit: ks | median")] = "ks",
    xmax: Annotated[
        float | None, typer.Option(help="Upper cut-off (truncated power-law MLE)")
    ] = None,
    fix_fingers: Annotated[str | None, typer.Option(help="clip_xmax | xmin_peak")] = None,
    conv: Annotated[str, typer.Option(help="Conv kernels: pooled | slices | flatten")] = "pooled",
    normalize: Annotated[
        str | None, typer.Option(help="'N' for X = W^T W / N (default: W^T W)")
    ] = None,
    rand_distance: Annotated[
        bool, typer.Option("--rand-distance", help="Also compute rand_distance (slower)")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="Torch device for the spectra, e.g. cuda")
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option("--trust-pickle", help="Allow unpickling arbitrary objects (trusted files)"),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no table")
    ] = False,
) -> None:
    """Heavy-tailed self-regularization diagnostics of every weight matrix."""
    console = Console()
    if not console.is_terminal:
        # Piped or captured output: keep the full table instead of squeezing it into 80 columns.
        console = Console(width=200)
    errors = Console(stderr=True, soft_wrap=True)
    try:
        _check_output(out, (".csv", ".json", ".parquet"), "--out")
        _check_output(report, (".html", ".htm"), "--report")
        from tailwise.spectral.analyze import analyze as run_analysis
        from tailwise.spectral.analyze import summary as summarize
        from tailwise.weights import WeightsError

        try:
            path, label = _resolve_source(source, quiet, errors)
            df = run_analysis(
                path,
                include=include,
                exclude=exclude,
                fit=fit,
                xmax=xmax,
                fix_fingers=fix_fingers,
                conv=conv,
                normalize=normalize,
                rand_distance=rand_distance,
                device=device,
                keep_evals=report is not None,
                trust_pickle=trust_pickle,
                progress=not quiet,
            )
        except (WeightsError, ValueError, OSError) as exc:
            raise UsageError(str(exc).splitlines()[0]) from exc
        stats = summarize(df)
        if not quiet:
            _print_table(console, df, stats, label)
        if out is not None:
            from tailwise._io import write_table

            write_table(df, out)
            if not quiet:
                console.print(f"wrote {out}")
        if report is not None:
            from tailwise.report import write_html

            write_html(df, report, summary=stats)
            if not quiet:
                console.print(f"wrote {report}")
    except UsageError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def _check_output(path: Path | None, suffixes: tuple[str, ...], option: str) -> None:
    """Validate an output path before any work is done."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise UsageError(
            f"{option} {path}: unsupported suffix {path.suffix or '(none)'!r}; "
            f"use {' or '.join(suffixes)}"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable")


@app.callback()
def _main() -> None:
    """tailwise: HT-SR diagnostics, compression and curvature for PyTorch models."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
