"""Command-line front end: ``tailwise analyze``, ``tails``, ``prune`` and ``hessian``.

Thin layer: parse options, call the library, print a rich table, write files atomically.
Expected failures (missing file, corrupt checkpoint, refused pickle, bad option) print one
line ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


# Options shared by several commands, declared once.
WeightsSource = Annotated[
    str | None,
    typer.Argument(
        help="Model weights: .safetensors, Hugging Face folder, or .pt/.pth/.bin "
        "checkpoint. Default: tailwise's reference network (trained on first use)."
    ),
]
ModelSource = Annotated[
    str | None,
    typer.Argument(
        help="A .safetensors file written by tailwise (it records its architecture), or "
        "any weights file with --model. Default: tailwise's reference network."
    ),
]
ModelFactory = Annotated[
    str | None,
    typer.Option(help="package.module:callable building the original architecture of SOURCE"),
]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow unpickling arbitrary objects (trusted files)"),
]
TableOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the table: .csv, .json or .parquet")
]
IncludeTensors = Annotated[
    str | None, typer.Option(help="Only tensors whose name matches this regex")
]
ExcludeTensors = Annotated[
    str | None, typer.Option(help="Skip tensors whose name matches this regex")
]


@contextmanager
def _user_errors() -> Iterator[Console]:
    """Run a command body; a :class:`UsageError` becomes one ``error:`` line and exit 2."""
    errors = Console(stderr=True, soft_wrap=True)
    try:
        yield errors
    except UsageError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped or captured output: keep the full table instead of squeezing it into 80 columns.
        console = Console(width=200)
    return console


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
    from tailwise.reference import reference_checkpoint

    path = reference_checkpoint(progress=not quiet)
    if not quiet:
        console.print(
            f"[dim]No SOURCE given: using tailwise's reference network "
            f"(an MLP trained on scikit-learn's digits), cached at {path}[/dim]"
        )
    return path, "reference MLP (digits)"


@app.command()
def analyze(
    source: WeightsSource = None,
    out: TableOut = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report")
    ] = None,
    include: IncludeTensors = None,
    exclude: ExcludeTensors = None,
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
    trust_pickle: TrustPickle = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no table")
    ] = False,
) -> None:
    """Heavy-tailed self-regularization diagnostics of every weight matrix."""
    console = _console()
    with _user_errors() as errors:
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


# Columns of the tails table shown in the terminal (all columns go to --out).
_TAILS_SHOWN = (
    ("name", "layer"),
    ("kind", "kind"),
    ("num_params", "params"),
    ("alpha_mmo", "alpha_mmo"),
    ("alpha_mmo_rows", "alpha_rows"),
    ("alpha_rownorm", "alpha_rownorm"),
    ("alpha_hill", "alpha_hill"),
)


_COUNTS = frozenset({"params_before", "params_after", "flops_before", "flops_after", "num_params"})


def _fmt_count(value: Any) -> str:
    """A count with thousands separators ("-" when missing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _fmt(value)
    return "-" if math.isnan(number) else f"{number:,.0f}"


def _print_rows(
    console: Console, df: Any, shown: tuple[tuple[str, str], ...], title: str, extra: str
) -> None:
    """A rich table of ``df``'s ``shown`` columns plus a last column ``extra`` (text)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for col, header in shown:
        text = col in ("name", "kind", "layer", "method")
        table.add_column(header, justify="left" if text else "right", no_wrap=True)
    table.add_column(extra, justify="left")
    for row in df.itertuples(index=False):
        record = row._asdict()
        if record.get("status") == "skipped":
            continue
        cells = [
            _fmt_count(record[col]) if col in _COUNTS else _fmt(record[col]) for col, _ in shown
        ]
        last = record.get("reason") or record.get("note") or ""
        if record.get("status") == "failed":
            last = f"failed: {last}"
        table.add_row(*cells, str(last))
    console.print(table)


@app.command()
def tails(
    source: WeightsSource = None,
    out: TableOut = None,
    include: IncludeTensors = None,
    exclude: ExcludeTensors = None,
    center: Annotated[
        bool, typer.Option("--center/--no-center", help="Median-centre entries (source 003)")
    ] = True,
    cap: Annotated[
        float | None, typer.Option(help="Cap the MMO estimates (source 003 uses 2)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the MMO permutations")] = 0,
    trust_pickle: TrustPickle = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no table")
    ] = False,
) -> None:
    """Tail index (alpha-stable alpha) of the entries, rows and row norms of every layer."""
    console = _console()
    with _user_errors() as errors:
        _check_output(out, (".csv", ".json", ".parquet"), "--out")
        from tailwise.tails import analyze_tails
        from tailwise.weights import WeightsError

        try:
            path, label = _resolve_source(source, quiet, errors)
            df = analyze_tails(
                path,
                include=include,
                exclude=exclude,
                trust_pickle=trust_pickle,
                progress=not quiet,
                center=center,
                cap=cap,
                seed=seed,
            )
        except (WeightsError, ValueError, OSError) as exc:
            raise UsageError(str(exc).splitlines()[0]) from exc
        if not quiet:
            _print_rows(console, df, _TAILS_SHOWN, f"tailwise tails: {label}", "reason")
        if out is not None:
            from tailwise._io import write_table

            write_table(df, out)
            if not quiet:
                console.print(f"wrote {out}")


_PRUNE_SHOWN = (
    ("layer", "layer"),
    ("kind", "kind"),
    ("ratio", "ratio"),
    ("achieved", "removed"),
    ("params_before", "params"),
    ("params_after", "params after"),
    ("flops_before", "FLOPs"),
    ("flops_after", "FLOPs after"),
    ("rel_error", "rel. error"),
)
_METHODS = ("magnitude", "global-magnitude", "lowrank", "node", "channel")


def _import_factory(spec: str) -> Any:
    """``package.module:callable`` -> the callable (a model class or factory)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--model {spec!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--model {spec!r}: cannot import {module_name} ({exc})") from None
    found = getattr(module, attribute, None)
    if not callable(found):
        raise UsageError(f"--model {spec!r}: {module_name} has no callable {attribute!r}")
    return found


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected integers like 1,3,32,32") from None
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"--input-shape {text!r}: every dimension must be >= 1")
    return shape


def _load_for_pruning(
    source: str | None, model_spec: str | None, trust_pickle: bool, quiet: bool, errors: Console
) -> tuple[Any, str, dict[str, Any] | None, bool]:
    """(model, label, original architecture, is the reference network)."""
    import json

    from tailwise.prune.rebuild import ARCHITECTURE_KEY, load_pruned, read_metadata

    path, label = _resolve_source(source, quiet, errors)
    file = Path(path)
    if not file.exists():
        raise UsageError(f"no such file: {file}")
    if file.is_dir():
        raise UsageError(f"{file}: pruning needs one weights file, not a folder")
    factory = _import_factory(model_spec) if model_spec else None
    if factory is None and file.suffix != ".safetensors":
        raise UsageError(
            f"{file}: a torch checkpoint does not say which architecture it holds; "
            "pass --model package.module:callable"
        )
    meta = read_metadata(file) if file.suffix == ".safetensors" else {}
    if factory is None and ARCHITECTURE_KEY not in meta:
        raise UsageError(
            f"{file} records no tailwise architecture; pass --model package.module:callable "
            "building the original architecture"
        )
    model = load_pruned(file, factory, trust_pickle=trust_pickle)
    architecture = json.loads(meta[ARCHITECTURE_KEY]) if ARCHITECTURE_KEY in meta else None
    return model, label, architecture, source is None


def _exclude_outputs(net: Any, inputs: Any, exclude: str | None) -> str:
    """``exclude`` extended by the layers producing the model output (channel pruning keeps
    their channels, so the allocation budget must be spread over the other layers)."""
    import re

    from tailwise.prune.layers import prunable_layers
    from tailwise.prune.structured import output_layers

    names = output_layers(net, inputs, prunable_layers(net))
    parts = [f"^{re.escape(name)}$" for name in names]
    if exclude:
        parts.append(f"(?:{exclude})")
    return "|".join(parts) if parts else "(?!)"


def _digits_accuracy(model: Any) -> float:
    from tailwise.data.digits import digits_loaders
    from tailwise.train.loop import evaluate

    _, test_loader = digits_loaders(64, seed=0, flatten=True)
    return evaluate(model, test_loader)[1]


@app.command()
def prune(
    source: ModelSource = None,
    method: Annotated[
        str, typer.Option(help="magnitude | global-magnitude | lowrank | node | channel")
    ] = "magnitude",
    ratio: Annotated[
        float, typer.Option(help="Fraction of the weights (channels for 'channel') to remove")
    ] = 0.5,
    allocate: Annotated[
        str,
        typer.Option(
            help="Layer-wise ratios: uniform | lamp | erk | <analyze column>[:inverse], "
            "e.g. alpha or alpha:inverse"
        ),
    ] = "uniform",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the pruned model (.safetensors)")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the per-layer report: .html, .csv, .json or .parquet"),
    ] = None,
    include: Annotated[
        str | None, typer.Option(help="Only layers whose module name matches this regex")
    ] = None,
    exclude: Annotated[
        str | None, typer.Option(help="Skip layers whose module name matches this regex")
    ] = None,
    center: Annotated[
        bool, typer.Option("--center", help="Median-centred magnitude pruning (source 003)")
    ] = False,
    model: ModelFactory = None,
    input_shape: Annotated[
        str | None,
        typer.Option(help="Example input shape for tracing and FLOPs, e.g. 1,3,32,32"),
    ] = None,
    trust_pickle: TrustPickle = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table")] = False,
) -> None:
    """Prune a model with layer-wise ratios; write it and a report of what it cost."""
    console = _console()
    with _user_errors() as errors:
        if method not in _METHODS:
            raise UsageError(f"--method {method!r}: choose one of {', '.join(_METHODS)}")
        if not (0.0 <= ratio < 1.0):
            raise UsageError(f"--ratio {ratio}: must be in [0, 1)")
        if method == "global-magnitude" and allocate != "uniform":
            raise UsageError(
                "--method global-magnitude sets layer ratios by one global threshold; "
                "use --method magnitude with --allocate"
            )
        if center and method not in ("magnitude", "global-magnitude"):
            raise UsageError("--center applies to magnitude pruning only")
        _check_output(out, (".safetensors",), "--out")
        _check_output(report, (".html", ".htm", ".csv", ".json", ".parquet"), "--report")
        result, label, accuracy = _run_prune(
            source,
            method,
            ratio,
            allocate,
            include,
            exclude,
            center,
            model,
            input_shape,
            trust_pickle,
            quiet,
            errors,
        )
        _finish_prune(console, result, label, accuracy, out, report, quiet)


def _run_prune(
    source: str | None,
    method: str,
    ratio: float,
    allocation: str,
    include: str | None,
    exclude: str | None,
    center: bool,
    model_spec: str | None,
    input_shape: str | None,
    trust_pickle: bool,
    quiet: bool,
    errors: Console,
) -> tuple[Any, str, tuple[float, float] | None]:
    import torch

    from tailwise.models import example_input_shape
    from tailwise.prune import (
        allocate,
        prune_channels,
        prune_lowrank,
        prune_magnitude,
        prune_nodes,
    )
    from tailwise.weights import WeightsError

    try:
        net, label, architecture, is_reference = _load_for_pruning(
            source, model_spec, trust_pickle, quiet, errors
        )
        if input_shape is not None:
            shape: tuple[int, ...] | None = _parse_shape(input_shape)
        elif architecture is not None:
            shape = example_input_shape(architecture)
        else:
            shape = None
        if shape is None and method == "channel":
            raise UsageError("channel pruning traces the model: pass --input-shape, e.g. 1,3,32,32")
        inputs = torch.zeros(shape) if shape is not None else None
        if method == "global-magnitude":
            result = prune_magnitude(
                net,
                ratio,
                scope="global",
                center=center,
                include=include,
                exclude=exclude,
                example_inputs=inputs,
            )
        else:
            if allocation == "uniform":
                ratios: Any = ratio
            else:
                ratios = allocate(
                    net,
                    ratio,
                    allocation,
                    include=include,
                    exclude=_exclude_outputs(net, inputs, exclude)
                    if method == "channel"
                    else exclude,
                )
            if method == "magnitude":
                result = prune_magnitude(
                    net,
                    ratios,
                    center=center,
                    include=include,
                    exclude=exclude,
                    example_inputs=inputs,
                )
            elif method == "lowrank":
                result = prune_lowrank(
                    net, ratios, include=include, exclude=exclude, example_inputs=inputs
                )
            elif method == "node":
                result = prune_nodes(
                    net, ratios, include=include, exclude=exclude, example_inputs=inputs
                )
            else:
                assert inputs is not None
                result = prune_channels(net, ratios, inputs, include=include, exclude=exclude)
    except (WeightsError, ValueError, OSError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc
    accuracy = None
    if is_reference:
        accuracy = (_digits_accuracy(net), _digits_accuracy(result.model))
    return result, label, accuracy


def _finish_prune(
    console: Console,
    result: Any,
    label: str,
    accuracy: tuple[float, float] | None,
    out: Path | None,
    report: Path | None,
    quiet: bool,
) -> None:
    totals = result.totals()
    if not quiet:
        _print_rows(
            console,
            result.report,
            _PRUNE_SHOWN,
            f"tailwise prune ({result.method}): {label}",
            "note",
        )
        line = (
            f"params {totals['params_before']:,.0f} -> {totals['params_after']:,.0f} "
            f"({totals['params_ratio']:.1%} kept)"
        )
        if not math.isnan(totals["flops_ratio"]):
            line += f"; FLOPs {totals['flops_ratio']:.1%} kept"
        if accuracy is not None:
            line += f"; digits test accuracy {accuracy[0]:.2%} -> {accuracy[1]:.2%}"
        console.print(line)
    if out is not None:
        from tailwise.prune import save_pruned

        try:
            save_pruned(result, out)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--out {out}: {str(exc).splitlines()[0]}") from exc
        if not quiet:
            console.print(f"wrote {out}")
    if report is not None:
        if report.suffix.lower() in (".html", ".htm"):
            from tailwise.report import write_prune_html

            write_prune_html(result, report, source=label, accuracy=accuracy)
        else:
            from tailwise._io import write_table

            write_table(result.report, report)
        if not quiet:
            console.print(f"wrote {report}")


_DATASETS = ("digits", "mnist1d")


def _hessian_batches(
    model: Any, architecture: dict[str, Any] | None, data: str, samples: int, batch_size: int
) -> list[tuple[Any, Any]]:
    """The first ``samples`` training examples of ``data``, shaped for ``model``, in batches."""
    import torch

    from tailwise.data import load_digits_dataset, load_mnist1d

    if data == "digits":
        images = architecture is not None and architecture.get("class") != "MLP"
        x, y = load_digits_dataset(split="train", flatten=not images).tensors
    else:
        x, y = load_mnist1d(split="train").tensors
    if samples > len(y):
        raise UsageError(f"--samples {samples}: {data} has {len(y)} training examples")
    x, y = x[:samples], y[:samples]
    try:
        with torch.no_grad():
            model(x[:2])
    except Exception as exc:
        raise UsageError(
            f"the model does not accept {data} inputs of shape {tuple(x.shape[1:])}: "
            f"{str(exc).splitlines()[0][:160]}"
        ) from None
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, samples, batch_size)]


@app.command()
def hessian(
    source: ModelSource = None,
    data: Annotated[str, typer.Option(help="Data the loss is taken over: digits | mnist1d")] = (
        "digits"
    ),
    samples: Annotated[int, typer.Option(help="Number of training examples used")] = 512,
    batch_size: Annotated[int, typer.Option(help="Examples per Hessian-vector pass")] = 256,
    top_k: Annotated[int, typer.Option("--top-k", help="Number of top eigenvalues")] = 5,
    method: Annotated[str, typer.Option(help="lanczos | power | deflation")] = "lanczos",
    trace: Annotated[bool, typer.Option("--trace", help="Estimate the trace (Hutch++)")] = False,
    density: Annotated[
        Path | None,
        typer.Option(help="Write the spectral density (SLQ) plot: .png or .svg"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the results (.json)")] = (
        None
    ),
    params: Annotated[
        str | None, typer.Option(help="Only parameters whose name matches this regex")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random start and probe vectors")] = 0,
    model: ModelFactory = None,
    trust_pickle: TrustPickle = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing")] = False,
) -> None:
    """Top eigenvalues, trace and spectral density of the loss Hessian (cross-entropy)."""
    console = _console()
    with _user_errors() as errors:
        if data not in _DATASETS:
            raise UsageError(f"--data {data!r}: choose one of {', '.join(_DATASETS)}")
        if top_k < 1:
            raise UsageError(f"--top-k {top_k}: must be >= 1")
        if samples < 1 or batch_size < 1:
            raise UsageError("--samples and --batch-size must be >= 1")
        _check_output(out, (".json",), "--out")
        _check_output(density, (".png", ".svg"), "--density")
        results = _run_hessian(
            source,
            model,
            trust_pickle,
            quiet,
            errors,
            data,
            samples,
            batch_size,
            top_k,
            method,
            trace,
            density is not None,
            params,
            seed,
        )
        if not quiet:
            _print_hessian(console, results)
        if density is not None:
            from tailwise._io import atomic_path
            from tailwise.hessian import plot_density

            figure = plot_density(
                results.pop("_density"), title=f"Hessian spectral density ({data})"
            )
            with atomic_path(density) as tmp:
                figure.savefig(tmp, format=density.suffix.lstrip(".").lower(), dpi=100)
            if not quiet:
                console.print(f"wrote {density}")
        results.pop("_density", None)
        if out is not None:
            import json

            from tailwise._io import atomic_open

            with atomic_open(out, "w") as handle:
                json.dump(results, handle, indent=2)
            if not quiet:
                console.print(f"wrote {out}")


def _run_hessian(
    source: str | None,
    model_spec: str | None,
    trust_pickle: bool,
    quiet: bool,
    errors: Console,
    data: str,
    samples: int,
    batch_size: int,
    top_k: int,
    method: str,
    trace: bool,
    density: bool,
    params: str | None,
    seed: int,
) -> dict[str, Any]:
    import re
    import time

    import torch

    from tailwise.hessian import HessianOperator, hutchpp_trace, spectral_density, top_eigenvalues
    from tailwise.weights import WeightsError

    try:
        net, label, architecture, _ = _load_for_pruning(
            source, model_spec, trust_pickle, quiet, errors
        )
        batches = _hessian_batches(net, architecture, data, samples, batch_size)
        names = None
        if params is not None:
            pattern = re.compile(params)
            names = [n for n, _ in net.named_parameters() if pattern.search(n)]
            if not names:
                raise UsageError(f"--params {params!r} matches no parameter")
        start = time.perf_counter()
        operator = HessianOperator(
            net.eval(), torch.nn.functional.cross_entropy, batches, params=names
        )
        eig = top_eigenvalues(
            operator, k=min(top_k, operator.num_params - 1), method=method, seed=seed
        )
        results: dict[str, Any] = {
            "source": label,
            "data": data,
            "samples": samples,
            "num_params": operator.num_params,
            "loss": float(operator.loss()),
            "method": eig.method,
            "eigenvalues": [float(v) for v in eig.eigenvalues],
            "converged": bool(eig.converged),
            "eigen_matvecs": eig.num_matvecs,
        }
        if trace:
            estimate = hutchpp_trace(operator, num_matvecs=99, seed=seed)
            results["trace"] = float(estimate.estimate)
            results["trace_std_error"] = float(estimate.std_error)
        if density:
            found = spectral_density(
                operator, num_iters=min(80, operator.num_params), num_runs=2, seed=seed
            )
            results["_density"] = found
            results["density_nodes"] = found.nodes.tolist()
            results["density_weights"] = found.weights.tolist()
        results["seconds"] = time.perf_counter() - start
    except re.error as exc:
        raise UsageError(f"--params {params!r}: invalid regular expression ({exc})") from None
    except (WeightsError, ValueError, OSError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc
    return results


def _print_hessian(console: Console, results: dict[str, Any]) -> None:
    console.print(
        f"tailwise hessian: {results['source']} on {results['data']} "
        f"({results['samples']} examples, {results['num_params']:,} parameters)"
    )
    table = Table(header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("eigenvalue", justify="right")
    for i, value in enumerate(results["eigenvalues"], start=1):
        table.add_row(str(i), f"{value:.6g}")
    console.print(table)
    line = f"loss {results['loss']:.4f}; {results['method']}: {results['eigen_matvecs']} HVPs"
    if not results["converged"]:
        line += " (not converged)"
    if "trace" in results:
        line += f"; trace {results['trace']:.6g} +- {results['trace_std_error']:.2g} (Hutch++)"
    console.print(line + f"; {results['seconds']:.1f} s")


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
