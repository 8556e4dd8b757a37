"""Command-line front end: ``tailwise analyze``, ``tails``, ``prune``, ``hessian``,
``train`` and ``compare``.

Thin layer: each command parses its options, calls the library (the function named in its
docstring does the work; a Python user gets the same), prints a rich table and writes files
atomically. The errors a user can cause, :class:`tailwise.UsageError` and
:class:`tailwise.WeightsError` (missing file, corrupt checkpoint, refused pickle, bad option),
print one line ``error: ...`` and exit with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from tailwise._errors import first_line
from tailwise._terminal import columns, fmt, plain, print_rows, select_columns
from tailwise._terminal import console as make_console


def _flag_help(option: Any) -> Any:
    # --help is a flag: no "<bool>" after it in the help (the other flags set metavar="").
    if option is not None:
        option.metavar = ""
    return option


class _Command(TyperCommand):
    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


class _Group(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


app = typer.Typer(
    name="tailwise",
    help="Look inside trained networks layer by layer: spectra, tails, curvature.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Group,
)


# Columns shown in the terminal (all columns go to --out).
_SHOWN = columns(
    "name! kind N! M! alpha! xmin D num_pl_spikes:tail log_norm log_spectral_norm:log_spec "
    "stable_rank entropy num_spikes:spikes"
)


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
    typer.Option(
        "--trust-pickle", metavar="", help="Allow unpickling arbitrary objects (trusted files)"
    ),
]
TableOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the table: .csv, .json or .parquet")
]
IncludeTensors = Annotated[
    str | None, typer.Option(help="Only parameters whose name matches this regex")
]
ExcludeTensors = Annotated[
    str | None, typer.Option(help="Skip parameters whose name matches this regex")
]
Columns = Annotated[
    str | None,
    typer.Option(help="Table columns to print, e.g. name,alpha,N,M (all: every column)"),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", metavar="", help="No progress bar and no table")
]
TABLE_SUFFIXES = (".csv", ".json", ".parquet")


@contextmanager
def _user_errors() -> Iterator[Console]:
    """Run a command body; a user's error becomes one ``error:`` line and exit status 2."""
    from tailwise._errors import UsageError
    from tailwise.weights import WeightsError

    errors = Console(stderr=True, soft_wrap=True)
    try:
        yield errors
    except (UsageError, WeightsError) as exc:
        errors.print(f"error: {first_line(exc, 400)}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def _resolve_source(source: str | None, quiet: bool, console: Console) -> tuple[Any, str]:
    if source is not None:
        return source, source
    from tailwise.reference import reference_checkpoint

    path = reference_checkpoint(progress=not quiet)
    if not quiet:
        console.print(
            f"[dim]No SOURCE given: using tailwise's reference network "
            f"(an MLP trained on scikit-learn's digits), cached at {plain(path)}[/dim]"
        )
    return path, "reference MLP (digits)"


def _wrote(console: Console, quiet: bool, path: Path | None) -> None:
    if path is not None and not quiet:
        console.print(f"wrote {plain(path)}")


def _write_table(df: Any, path: Path | None) -> None:
    if path is not None:
        from tailwise._io import write_table

        write_table(df, path)


@app.command(cls=_Command)
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
        bool,
        typer.Option("--rand-distance", metavar="", help="Also compute rand_distance (slower)"),
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="Torch device for the spectra, e.g. cuda")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="Gram matrix arithmetic: float64 | float32 | auto (float32 where it provably "
            "moves no column beyond 1e-4)"
        ),
    ] = "float64",
    trust_pickle: TrustPickle = False,
    columns: Columns = None,
    quiet: Quiet = False,
) -> None:
    """Heavy-tailed self-regularization diagnostics of every weight matrix (tailwise.analyze)."""
    console = make_console()
    with _user_errors() as errors:
        from tailwise._io import check_output_path
        from tailwise.spectral.analyze import COLUMNS
        from tailwise.spectral.analyze import analyze as run_analysis
        from tailwise.spectral.analyze import summary as summarize

        check_output_path(out, TABLE_SUFFIXES, "--out")
        check_output_path(report, (".html", ".htm"), "--report")
        shown = select_columns(columns, _SHOWN, COLUMNS)
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
            precision=precision,
            keep_evals=report is not None,
            trust_pickle=trust_pickle,
            progress=not quiet,
        )
        stats = summarize(df)
        if not quiet:
            print_rows(console, df, shown, f"tailwise analyze: {label}", "warning")
            console.print(
                "mean alpha {alpha}  alpha_weighted {alpha_weighted}  log_norm {log_norm}  "
                "log_spectral_norm {log_spectral_norm}  stable_rank {stable_rank}  mp_softrank "
                "{mp_softrank}".format(**{k: fmt(stats[k]) for k in stats})
            )
            console.print(
                f"{stats['num_ok']} ok, {stats['num_failed']} failed, {stats['num_skipped']} "
                f"skipped; {stats['num_under_trained']} under-trained (alpha > 6), "
                f"{stats['num_over_trained']} over-trained (alpha < 2)"
            )
        _write_table(df, out)
        _wrote(console, quiet, out)
        if report is not None:
            from tailwise.report import write_html

            write_html(df, report, summary=stats, progress=not quiet)
            _wrote(console, quiet, report)


# Columns of the tails table shown in the terminal (all columns go to --out).
_TAILS_SHOWN = columns(
    "name! kind num_params:params alpha_mmo! alpha_mmo_rows:alpha_rows alpha_rownorm alpha_hill"
)


@app.command(cls=_Command)
def tails(
    source: WeightsSource = None,
    out: TableOut = None,
    include: IncludeTensors = None,
    exclude: ExcludeTensors = None,
    center: Annotated[
        bool,
        typer.Option("--center/--no-center", metavar="", help="Median-centre entries (source 003)"),
    ] = True,
    cap: Annotated[
        float | None, typer.Option(help="Cap the MMO estimates (source 003 uses 2)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the MMO permutations")] = 0,
    trust_pickle: TrustPickle = False,
    columns: Columns = None,
    quiet: Quiet = False,
) -> None:
    """Tail index of the entries, rows and row norms of every layer (tailwise.analyze_tails)."""
    console = make_console()
    with _user_errors() as errors:
        from tailwise._io import check_output_path
        from tailwise.tails import TAILS_COLUMNS, analyze_tails

        check_output_path(out, TABLE_SUFFIXES, "--out")
        shown = select_columns(columns, _TAILS_SHOWN, TAILS_COLUMNS)
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
        if not quiet:
            print_rows(console, df, shown, f"tailwise tails: {label}", "reason")
        _write_table(df, out)
        _wrote(console, quiet, out)


_PRUNE_SHOWN = columns(
    "layer! kind ratio! achieved!:removed params_before:params params_after:params~after "
    "flops_before:FLOPs flops_after:FLOPs~after rel_error:rel.~error"
)


def _batches_for(net: Any, data: str, samples: int, batch_size: int, split: str) -> Any:
    """``samples`` examples of ``data``'s ``split`` in batches, shaped for ``net`` (vectors
    for a vector model, else the data's own shape), checked to run through it."""
    from tailwise.data import check_accepts, dataset_batches
    from tailwise.loading import example_inputs

    batches = dataset_batches(
        data,
        samples=samples,
        batch_size=batch_size,
        input_shape=_vector_shape(example_inputs(net)),
        split=split,
    )
    check_accepts(net, batches, data)
    return batches


def _test_samples(samples: int | None, data: str) -> int:
    """``samples``, or up to 1024 examples of ``data``'s test split."""
    if samples is not None:
        return samples
    from tailwise.data import resolve_dataset

    return min(1024, len(resolve_dataset(data, "test")))


def _vector_shape(example: Any) -> tuple[int, ...] | None:
    """The per-example input shape to reshape data to: a model's example input that is a
    vector (an MLP takes flattened images); None keeps the data's natural shape (a conv net
    takes images of any size, whatever size its architecture was described with)."""
    if example is None or example.ndim != 2:
        return None
    return (int(example.shape[1]),)


def _load(
    source: str | None, model: str | None, trust_pickle: bool, quiet: bool, errors: Console
) -> tuple[Any, str]:
    from tailwise.loading import load_model

    path, label = _resolve_source(source, quiet, errors)
    return load_model(path, factory=model, trust_pickle=trust_pickle), label


@app.command(cls=_Command)
def prune(
    source: ModelSource = None,
    method: Annotated[
        str,
        typer.Option(
            help="magnitude | global-magnitude | lowrank | node | channel | zero-channels "
            "(remove the channels structured training zeroed; --ratio unused)"
        ),
    ] = "magnitude",
    ratio: Annotated[
        float, typer.Option(help="Fraction of the weights (channels for 'channel') to remove")
    ] = 0.5,
    allocate: Annotated[
        str,
        typer.Option(
            help="Layer-wise ratios: uniform | lamp | erk | alpha_pruning | "
            "<analyze column>[:inverse], e.g. alpha or alpha:inverse"
        ),
    ] = "uniform",
    epsilon: Annotated[
        float, typer.Option(help="Spread of --allocate alpha_pruning: ratios 1 +- epsilon")
    ] = 0.3,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the pruned model (.safetensors)")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the per-layer report: .html, .csv, .json or .parquet"),
    ] = None,
    include: IncludeTensors = None,
    exclude: ExcludeTensors = None,
    center: Annotated[
        bool,
        typer.Option("--center", metavar="", help="Median-centred magnitude pruning (source 003)"),
    ] = False,
    protect_outputs: Annotated[
        bool,
        typer.Option(
            "--protect-outputs/--prune-outputs",
            metavar="",
            help="Leave the output layer(s) unpruned",
        ),
    ] = True,
    model: ModelFactory = None,
    input_shape: Annotated[
        str | None,
        typer.Option(help="Example input shape for tracing and FLOPs, e.g. 1,3,32,32"),
    ] = None,
    trust_pickle: TrustPickle = False,
    data: Annotated[
        str | None,
        typer.Option(
            help="Measure test accuracy before/after on: digits | mnist1d | a MNIST / CIFAR "
            "folder (default for the reference network: digits)"
        ),
    ] = None,
    finetune: Annotated[
        int,
        typer.Option(
            "--finetune", metavar="EPOCHS", help="Fine-tune the pruned model for EPOCHS on --data"
        ),
    ] = 0,
    layerwise: Annotated[
        str | None,
        typer.Option(
            help="Layer-wise lr of the fine-tuning from alpha: tb | sqrt | ... (source 000)"
        ),
    ] = None,
    lr: Annotated[float, typer.Option(help="Base learning rate of the fine-tuning")] = 0.01,
    columns: Columns = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No table")] = False,
) -> None:
    """Prune a model with layer-wise ratios; write it and a report (tailwise.prune.prune;
    --finetune: tailwise.train.finetune)."""
    console = make_console()
    with _user_errors() as errors:
        from tailwise._errors import UsageError
        from tailwise._io import check_output_path
        from tailwise.loading import example_inputs, has_architecture, load_model
        from tailwise.prune import FILE_METHODS, prune_file, save_pruned
        from tailwise.prune import prune as run_prune
        from tailwise.prune.report import REPORT_COLUMNS

        check_output_path(report, (".html", ".htm", *TABLE_SUFFIXES), "--report")
        shown = select_columns(columns, _PRUNE_SHOWN, REPORT_COLUMNS)
        if finetune < 0:
            raise UsageError(f"--finetune must be a number of epochs >= 0, got {finetune}")
        if layerwise is not None and not finetune:
            raise UsageError("--layerwise sets the fine-tuning's learning rates: add --finetune")
        if data is None and source is None:
            data = "digits"  # the reference network's data
        if finetune and data is None:
            raise UsageError("--finetune needs --data (digits, mnist1d or a MNIST / CIFAR folder)")
        path, label = _resolve_source(source, quiet, errors)
        if model is None and method in FILE_METHODS and not has_architecture(path):
            if data is not None and source is not None:
                raise UsageError(
                    f"{source} records no architecture, so it is pruned as a weights file and "
                    "cannot run on --data; give --model to build the network"
                )
            # Weights without an architecture: masks need no model, prune the file itself.
            found = prune_file(
                path,
                out,
                ratio,
                method=method,
                allocation=allocate,
                include=include,
                exclude=exclude,
                protect_outputs=protect_outputs,
                center=center,
                trust_pickle=trust_pickle,
                progress=not quiet,
                epsilon=epsilon,
            )
            _print_pruned(console, found, shown, label, None, quiet, None, None)
            if found.written and not quiet:
                console.print(f"wrote {len(found.written)} file(s) to {plain(found.out)}")
            for skipped in found.not_copied:
                errors.print(f"not copied (weights in another format): {plain(skipped)}")
            _prune_report(console, found, report, label, None, quiet)
            return
        check_output_path(out, (".safetensors",), "--out")
        net = load_model(path, factory=model, trust_pickle=trust_pickle)
        result = run_prune(
            net,
            ratio,
            method=method,
            allocation=allocate,
            example_inputs=example_inputs(net, input_shape),
            include=include,
            exclude=exclude,
            protect_outputs=protect_outputs,
            center=center,
            progress=not quiet,
            epsilon=epsilon,
        )
        accuracy = None
        tuned = None
        if data is not None:
            from tailwise.train import accuracy_on
            from tailwise.train import finetune as run_finetune

            before = accuracy_on(net, data)
            if finetune:
                tuned = run_finetune(
                    result.model,
                    data,
                    epochs=finetune,
                    lr=lr,
                    layerwise=layerwise,
                    progress=not quiet,
                )
                accuracy = (before, tuned.accuracy_after)
            else:
                accuracy = (before, accuracy_on(result.model, data))
        _print_pruned(console, result, shown, label, accuracy, quiet, data, tuned)
        if out is not None:
            save_pruned(result, out)
            _wrote(console, quiet, out)
        _prune_report(console, result, report, label, accuracy, quiet)


def _print_pruned(
    console: Console,
    result: Any,
    shown: Any,
    label: str,
    accuracy: tuple[float, float] | None,
    quiet: bool,
    data: str | None,
    tuned: Any,
) -> None:
    if quiet:
        return
    print_rows(console, result.report, shown, f"tailwise prune ({result.method}): {label}", "note")
    totals = result.totals()
    line = (
        f"params {totals['params_before']:,.0f} -> {totals['params_after']:,.0f} "
        f"({totals['params_ratio']:.1%} kept)"
    )
    if not math.isnan(totals["flops_ratio"]):
        line += f"; FLOPs {totals['flops_ratio']:.1%} kept"
    if accuracy is not None and tuned is None:
        line += f"; {data} test accuracy {accuracy[0]:.2%} -> {accuracy[1]:.2%}"
    console.print(line)
    if tuned is not None and accuracy is not None:
        epochs = len(tuned.metrics)
        console.print(
            f"{data} test accuracy: {accuracy[0]:.2%} before pruning, {tuned.accuracy_before:.2%} "
            f"pruned, {tuned.accuracy_after:.2%} after fine-tuning {epochs} epoch(s)"
        )


def _prune_report(
    console: Console,
    result: Any,
    report: Path | None,
    label: str,
    accuracy: tuple[float, float] | None,
    quiet: bool,
) -> None:
    if report is not None and report.suffix.lower() in (".html", ".htm"):
        from tailwise.report import write_prune_html

        write_prune_html(result, report, source=label, accuracy=accuracy)
    else:
        _write_table(result.report, report)
    _wrote(console, quiet, report)


@app.command(cls=_Command)
def hessian(
    source: ModelSource = None,
    data: Annotated[
        str,
        typer.Option(help="Data the loss is taken over: digits | mnist1d | a MNIST / CIFAR folder"),
    ] = "digits",
    samples: Annotated[int, typer.Option(help="Number of training examples used")] = 512,
    batch_size: Annotated[int, typer.Option(help="Examples per Hessian-vector pass")] = 256,
    top_k: Annotated[int, typer.Option("--top-k", help="Number of top eigenvalues")] = 5,
    method: Annotated[
        str, typer.Option(help="block (block Lanczos) | lanczos (ARPACK) | power | deflation")
    ] = "block",
    retain_graph: Annotated[
        bool | None,
        typer.Option(
            "--retain-graph/--no-retain-graph",
            metavar="",
            help="Keep each batch's gradient graph for the products (default: automatic, "
            "when small against memory)",
        ),
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", metavar="", help="Estimate the trace (Hutch++)")
    ] = False,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print nothing")] = False,
) -> None:
    """Top eigenvalues, trace and density of the loss Hessian (tailwise.hessian.summarize)."""
    console = make_console()
    with _user_errors() as errors:
        import torch

        from tailwise._io import check_output_path
        from tailwise.hessian import summarize

        check_output_path(out, (".json",), "--out")
        check_output_path(density, (".png", ".svg"), "--density")
        net, label = _load(source, model, trust_pickle, quiet, errors)
        batches = _batches_for(net, data, samples, batch_size, "train")
        found = summarize(
            net,
            torch.nn.functional.cross_entropy,
            batches,
            top_k=top_k,
            solver=method,
            retain_graph=retain_graph,
            trace=trace,
            density=density is not None,
            include=params,
            seed=seed,
            progress=not quiet,
        )
        if not quiet:
            _print_hessian(console, found, label, data, samples)
        if density is not None and found.density is not None:
            from tailwise._io import atomic_path
            from tailwise.hessian import plot_density

            figure = plot_density(found.density, title=f"Hessian spectral density ({data})")
            with atomic_path(density) as tmp:
                figure.savefig(tmp, format=density.suffix.lstrip(".").lower(), dpi=100)
            _wrote(console, quiet, density)
        if out is not None:
            import json

            from tailwise._io import atomic_open

            record = {"source": label, "data": data, "samples": samples, **found.to_dict()}
            with atomic_open(out, "w") as handle:
                json.dump(record, handle, indent=2)
            _wrote(console, quiet, out)


def _print_hessian(console: Console, found: Any, label: str, data: str, samples: int) -> None:
    console.print(
        f"tailwise hessian: {label} on {data} ({samples} examples, {found.num_params:,} parameters)"
    )
    table = Table(header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("eigenvalue", justify="right")
    for i, value in enumerate(found.eigenvalues, start=1):
        table.add_row(str(i), f"{value:.6g}")
    console.print(table)
    line = f"loss {found.loss:.4f}; {found.solver}: {found.eigen_matvecs} HVPs"
    if not found.converged:
        line += " (not converged)"
    if found.trace is not None:
        line += f"; trace {found.trace:.6g} +- {found.trace_std_error:.2g} (Hutch++)"
    console.print(line + f"; {found.seconds:.1f} s")


def _explicit(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


_TRAIN_SHOWN = columns(
    "epoch! train_loss train_acc test_loss test_acc! dense_test_acc:dense_acc sparsity lr seconds"
)


@app.command(cls=_Command)
def train(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="resnet20 | resnet18 | vgg19 | mlp | ... (tailwise.models)")
    ] = "resnet20",
    data: Annotated[str, typer.Option(help="digits | mnist1d | a MNIST / CIFAR folder")] = "digits",
    epochs: Annotated[int, typer.Option(help="Epochs of the whole run")] = 200,
    batch_size: Annotated[int, typer.Option(help="Training examples per step")] = 128,
    lr: Annotated[float, typer.Option(help="Base learning rate")] = 0.1,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay")] = 5e-4,
    schedule: Annotated[
        str, typer.Option(help="cosine (source 000 eq. 2.12) | step (x0.1 at 50% and 75%)")
    ] = "cosine",
    layerwise: Annotated[
        str | None,
        typer.Option(help="Layer-wise lr from alpha: tb | sqrt | identity | ... (source 000)"),
    ] = None,
    regularizer: Annotated[
        str | None,
        typer.Option(help="metric | selective-l2 | l2-stopped | l2-stopped-selective (004)"),
    ] = None,
    reg_lambda: Annotated[float, typer.Option(help="Regularization rate lambda")] = 1e-4,
    reg_omega: Annotated[float, typer.Option(help="Selective L2 threshold omega")] = 0.01,
    reg_tau: Annotated[int, typer.Option(help="Epochs of L2 before it stops (tau)")] = 10,
    width: Annotated[float, typer.Option(help="Width multiplier of the model")] = 1.0,
    augment: Annotated[str | None, typer.Option(help="standard (crop + flip) | augmix")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialization, shuffling, augmentation")] = 0,
    adversarial: Annotated[
        str | None,
        typer.Option(help="Adversarial training on this attack: pgd10 | fgsm | ... (002)"),
    ] = None,
    adv_eps: Annotated[
        float, typer.Option(help="L-inf radius of --adversarial (pixels in [0, 1])")
    ] = 8 / 255,
    sparse: Annotated[
        str | None,
        typer.Option(
            help="Sparse training (002): rvsm-l0 | rvsm-l1 | rvsm-tl1 | rgsm-group_l1 | "
            "rgsm-group_l0 | admm | admm-channel"
        ),
    ] = None,
    sparse_lam: Annotated[float, typer.Option(help="RVSM lambda / RGSM lambda_1")] = 1e-5,
    sparse_beta: Annotated[float, typer.Option(help="RVSM / RGSM splitting beta")] = 1e-2,
    sparse_lam2: Annotated[float, typer.Option(help="RGSM lambda_2 (group norm term)")] = 0.0,
    sparse_ratio: Annotated[float, typer.Option(help="ADMM target sparsity")] = 0.6,
    sparse_rho: Annotated[float, typer.Option(help="ADMM rho")] = 1e-2,
    sparse_bn: Annotated[
        bool,
        typer.Option(
            "--sparse-bn",
            metavar="",
            help="Re-estimate the sparse model's BatchNorm statistics before evaluating it",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory: config, metrics.jsonl, checkpoints"),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", metavar="", help="Continue the run in --out from its last completed epoch"
        ),
    ] = False,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cuda")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", metavar="", help="No progress bar and no table")
    ] = False,
) -> None:
    """Train a model of the zoo, optionally with layer-wise lr (tailwise.train.train_run).

    With --resume only the options given on the command line are checked against the stored
    run; the others come from its config.json."""
    console = make_console()
    with _user_errors():
        from tailwise.train import TrainConfig, train_run

        fields = set(TrainConfig.__dataclass_fields__)
        given = {
            name: value
            for name, value in ctx.params.items()
            if name in fields and (not resume or _explicit(ctx, name))
        }
        run = train_run(given, out, resume=resume, device=device, progress=not quiet)
        if quiet:
            return
        if run.resumed_from and run.resumed_from >= len(run.metrics):
            console.print(f"the run in {plain(out)} had already finished")
        title = f"tailwise train: {run.run_dir or 'not written'}"
        shown_rows = run.metrics.tail(10).assign(
            note=lambda df: ["best" if e == run.best_epoch else "" for e in df["epoch"]]
        )
        shown = tuple(c for c in _TRAIN_SHOWN if c[0] in shown_rows.columns)
        print_rows(console, shown_rows, shown, title, "note")
        last = run.metrics.iloc[-1]
        console.print(
            f"{len(run.metrics)} epochs; test accuracy {last['test_acc']:.2%} last, "
            f"{run.best_acc:.2%} best (epoch {run.best_epoch})"
        )
        if run.run_dir is not None:
            _wrote(console, quiet, run.run_dir)


_ATTACK_SHOWN = columns("attack! eps accuracy! correct examples linf l2 seconds")


@app.command(cls=_Command)
def attack(
    source: ModelSource = None,
    data: Annotated[
        str, typer.Option(help="Test data: digits | mnist1d | a MNIST / CIFAR folder")
    ] = "digits",
    attacks: Annotated[
        str, typer.Option(help="Comma-separated: natural, fgsm, ifgsm<k>, pgd<k>, cw, cw<k>")
    ] = "natural,fgsm,ifgsm20,cw",
    eps: Annotated[
        str, typer.Option(help="L-inf radius for pixels in [0, 1], e.g. 0.1 or 8/255")
    ] = "8/255",
    samples: Annotated[
        int | None, typer.Option(help="Test examples attacked (default: up to 1024)")
    ] = None,
    eot: Annotated[
        int, typer.Option(help="Average logits over this many passes (stochastic models)")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of random starts")] = 0,
    model: ModelFactory = None,
    trust_pickle: TrustPickle = False,
    out: TableOut = None,
    quiet: Quiet = False,
) -> None:
    """Natural and adversarial accuracy, source 002's A1-A4 (tailwise.attacks.robust_accuracy)."""
    console = make_console()
    with _user_errors() as errors:
        from tailwise._errors import UsageError
        from tailwise._io import check_output_path
        from tailwise.attacks import robust_accuracy

        check_output_path(out, TABLE_SUFFIXES, "--out")
        try:
            top, _, bottom = eps.partition("/")
            radius = float(top) / float(bottom) if bottom else float(top)
        except (ValueError, ZeroDivisionError):
            raise UsageError(
                f"--eps must be a number or a fraction like 8/255, got {eps!r}"
            ) from None
        names = tuple(name.strip() for name in attacks.split(",") if name.strip())
        if not names:
            raise UsageError("--attacks names no attack")
        net, label = _load(source, model, trust_pickle, quiet, errors)
        samples = _test_samples(samples, data)
        batches = _batches_for(net, data, samples, min(samples, 256), "test")
        table = robust_accuracy(
            net,
            batches,
            names,
            eps=radius,
            eot_samples=eot,
            seed=seed,
            progress=not quiet,
        )
        if not quiet:
            title = f"tailwise attack: {label} on {data} ({samples} test examples)"
            print_rows(console, table, _ATTACK_SHOWN, title, "status")
        _write_table(table, out)
        _wrote(console, quiet, out)


_COMPARE_SHOWN = columns(
    "name! N M rel_frobenius!:rel_F sv_distance:sv_dist esd_distance:esd_dist "
    "cka alpha_a alpha_b delta_alpha!"
)


@app.command(cls=_Command)
def compare(
    source_a: Annotated[str, typer.Argument(help="First weights (file or folder)")],
    source_b: Annotated[str, typer.Argument(help="Second weights, same architecture")],
    data: Annotated[
        str | None,
        typer.Option(
            help="Also CKA of matching layers on this data (the test split): digits | "
            "mnist1d | a MNIST / CIFAR folder; needs models (tailwise files or --model)"
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(help="Test examples CKA is computed on (default: up to 1024)"),
    ] = None,
    model: ModelFactory = None,
    out: TableOut = None,
    include: IncludeTensors = None,
    exclude: ExcludeTensors = None,
    trust_pickle: TrustPickle = False,
    columns: Columns = None,
    quiet: Quiet = False,
) -> None:
    """Compare two checkpoints layer by layer (tailwise.similarity.compare)."""
    console = make_console()
    with _user_errors():
        from tailwise._io import check_output_path
        from tailwise.similarity import COMPARE_COLUMNS
        from tailwise.similarity import compare as run_compare

        check_output_path(out, TABLE_SUFFIXES, "--out")
        shown = select_columns(columns, _COMPARE_SHOWN, COMPARE_COLUMNS)
        a: Any = source_a
        b: Any = source_b
        batches = None
        if data is not None:  # CKA runs the two networks: build them
            from tailwise.loading import load_model

            a = load_model(source_a, factory=model, trust_pickle=trust_pickle)
            b = load_model(source_b, factory=model, trust_pickle=trust_pickle)
            samples = _test_samples(samples, data)
            batches = _batches_for(a, data, samples, min(samples, 256), "test")
        df = run_compare(
            a,
            b,
            data=batches,
            include=include,
            exclude=exclude,
            trust_pickle=trust_pickle,
            progress=not quiet,
        )
        if not quiet:
            print_rows(console, df, shown, f"tailwise compare: {source_a} vs {source_b}", "status")
        _write_table(df, out)
        _wrote(console, quiet, out)


@app.command(cls=_Command)
def simulate(
    name: Annotated[
        str,
        typer.Argument(
            help="serw | serw-diffusion | nonoverlap-rvsm | nonoverlap-rvscgd | heavy-sgd | "
            "stable-prunability"
        ),
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-O",
            metavar="KEY=VALUE",
            help="An option of the simulation, repeatable (lists: comma-separated); "
            "--show-options lists them",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the table (.csv, .parquet) or everything (.json)"),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the figure (.png, .svg, .pdf)")] = None,
    show_options: Annotated[
        bool,
        typer.Option("--show-options", metavar="", help="List the options and defaults; no run"),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Run a theory simulator of sources 002 / 003 and compare it with the theory
    (tailwise.sims.simulate)."""
    console = make_console()
    with _user_errors():
        from tailwise.sims import parse_options, simulation_options
        from tailwise.sims import simulate as run_simulate

        if show_options:
            table = Table(title=f"tailwise simulate {name}: options", title_justify="left")
            table.add_column("option")
            table.add_column("default")
            for key, default in simulation_options(name).items():
                shown = fmt(default) if isinstance(default, float) else str(default)
                table.add_row(Text(key), Text(shown))
            console.print(table)
            return
        options = parse_options(name, option or [])
        result = run_simulate(name, seed=seed, progress=not quiet, out=out, plot=plot, **options)
        if not quiet:
            table = Table(title=f"tailwise simulate {name}", title_justify="left")
            table.add_column("result")
            table.add_column("value")
            for key, value in result.summary.items():
                shown = fmt(value) if isinstance(value, float) else str(value)
                table.add_row(Text(key), Text(shown))
            console.print(table)
            console.print(f"{len(result.table)} table rows (--out to keep them)")
        _wrote(console, quiet, out)
        _wrote(console, quiet, plot)


experiment_app = typer.Typer(
    name="experiment",
    help="Reproduce the sources' claims: list, run (or resume), status, report.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(experiment_app)

StoreOption = Annotated[
    Path | None,
    typer.Option(help="Results folder (default: $TAILWISE_EXPERIMENTS or ./tailwise-experiments)"),
]
_EXPERIMENTS_SHOWN = columns("name! source location quick_minutes:min availability quick_done:done")
_RUN_SHOWN = columns("name! scale seeds total done_before:before ran failed lost seconds")


@experiment_app.command("list", cls=_Command)
def experiment_list(store: StoreOption = None, quiet: Quiet = False) -> None:
    """The catalogue: claim, source, scales, estimated quick time, stored results
    (tailwise.experiments.list_experiments)."""
    console = make_console()
    with _user_errors():
        from tailwise.experiments import list_experiments

        table = list_experiments(store=store)
        if quiet:
            return
        print_rows(console, table, _EXPERIMENTS_SHOWN, "tailwise experiments", "verdict")
        for row in table.itertuples(index=False):
            console.print(f"[bold]{plain(row.name)}[/bold]: {plain(row.claim)}")


def _run_experiments(
    names: list[str],
    scale: str,
    seeds: int | None,
    backend: str,
    address: str | None,
    workers: int | None,
    store: Path | None,
    quiet: bool,
) -> None:
    console = make_console()
    with _user_errors() as errors:
        from tailwise.experiments import run as run_experiments

        found = run_experiments(
            names,
            scale=scale,
            seeds=seeds,
            backend=backend,
            workers=workers,
            store=store,
            progress=not quiet,
            backend_options={"address": address} if address is not None else None,
        )
        if not quiet:
            table = found.table()
            print_rows(console, table, _RUN_SHOWN, f"tailwise experiment run ({scale})", "verdict")
            for item in found.experiments:
                console.print(f"[bold]{plain(item.name)}[/bold]: {plain(item.statement)}")
            console.print(f"{found.seconds:.1f} s; results in {plain(found.store)}")
        if not found.complete:
            errors.print("some trials failed or were lost: run the same command again to retry")
            raise typer.Exit(code=1)


@experiment_app.command("run", cls=_Command)
def experiment_run(
    names: Annotated[list[str], typer.Argument(help="Experiment names, or all")],
    scale: Annotated[str, typer.Option(help="quick (a laptop) | full (the source's)")] = "quick",
    seeds: Annotated[
        int | None, typer.Option(help="Seeds per grid point (default: each experiment's)")
    ] = None,
    backend: Annotated[str, typer.Option(help="local (a process pool)")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Cluster address, for a cluster backend")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: min(2, CPUs))")
    ] = None,
    store: StoreOption = None,
    quiet: Quiet = False,
) -> None:
    """Run (or resume) experiments: done trials are skipped, failed ones retried
    (tailwise.experiments.run)."""
    _run_experiments(names, scale, seeds, backend, address, workers, store, quiet)


@experiment_app.command("resume", cls=_Command)
def experiment_resume(
    names: Annotated[list[str], typer.Argument(help="Experiment names, or all")],
    scale: Annotated[str, typer.Option(help="quick | full")] = "quick",
    seeds: Annotated[int | None, typer.Option(help="Seeds per grid point")] = None,
    backend: Annotated[str, typer.Option(help="local (a process pool)")] = "local",
    address: Annotated[str | None, typer.Option(help="Cluster address")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
    store: StoreOption = None,
    quiet: Quiet = False,
) -> None:
    """The same as run: finish what a stopped run left (tailwise.experiments.run)."""
    _run_experiments(names, scale, seeds, backend, address, workers, store, quiet)


@experiment_app.command("status", cls=_Command)
def experiment_status(
    name: Annotated[str, typer.Argument(help="Experiment name")],
    store: StoreOption = None,
    quiet: Quiet = False,
) -> None:
    """Trials expected, done, failed and pending per scale, and the last verdict
    (tailwise.experiments.status)."""
    console = make_console()
    with _user_errors():
        from tailwise.experiments import status

        table = status(name, store=store)
        if not quiet:
            shown = columns("scale! configs seeds expected done failed pending")
            print_rows(console, table, shown, f"tailwise experiment status: {name}", "verdict")
            for row in table.itertuples(index=False):
                if row.statement:
                    console.print(f"{plain(row.scale)}: {plain(row.statement)}")


@experiment_app.command("report", cls=_Command)
def experiment_report(
    names: Annotated[list[str], typer.Argument(help="Experiment names, or all")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write")],
    scale: Annotated[str, typer.Option(help="quick | full")] = "quick",
    store: StoreOption = None,
    quiet: Quiet = False,
) -> None:
    """One self-contained HTML page: claims, figures, tables, verdicts, commands
    (tailwise.experiments.report)."""
    console = make_console()
    with _user_errors():
        from tailwise.experiments import report

        written = report(names if names != ["all"] else "all", out, store=store, scale=scale)
        _wrote(console, quiet, written)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tailwise {version('tailwise')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", callback=_version, is_eager=True, help="Print the version"
        ),
    ] = False,
) -> None:
    """tailwise: HT-SR diagnostics, compression and curvature for PyTorch models."""


def main() -> None:
    """Console-script entry point: Ctrl-C ends with status 130 and no traceback, SIGTERM
    like Ctrl-C (files being written are removed: every write is atomic)."""
    import signal
    import sys

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit as exc:
        # Typer turns a KeyboardInterrupt in a command into a silent exit with status 130.
        if exc.code == 130:
            sys.stderr.write("interrupted\n")
        raise


if __name__ == "__main__":
    main()
