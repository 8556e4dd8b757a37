"""tailwise ``analyze`` vs WeightWatcher 0.7.7 ``analyze``; the precision of the Gram matrices;
a 7B-parameter-shaped (Llama-like) model layer shape by layer shape.

Models (weights built here, no downloads; no pretrained weights exist offline, so "realistic"
means synthetic weights with the spectra of trained ones):

* ``bert``: a BERT-base-shaped encoder stack, 12 blocks of q, k, v, o = Linear(768, 768),
  Linear(768, 3072), Linear(3072, 768): 72 matrices (embeddings and pooler left out).
* ``resnet18``: the 20 convolutions of ResNet18 with their shapes (7x7 3->64, 16 3x3, three
  1x1 downsamples) and the fc 512 -> 1000: 21 matrices. Convolutions are pooled over the
  kernel positions by both tools (WeightWatcher's default, tailwise's ``conv="pooled"``).
* ``*-ht`` ("heavy-tailed"): the same shapes with every weight multiplied by an i.i.d.
  Student-t field (2.5 degrees of freedom by default), so the ESDs have power-law tails with
  alpha of about 2-6 like trained models, instead of the alpha ~ 10-20 of a random init.
* ``bert-pl`` ("power law", realistic synthetic): every matrix W = L diag(s) R^T + E with
  s_k = k^(-1/a) (a drawn in [1, 3] per matrix), L, R Gaussian with orthonormal-on-average
  columns and E a Gaussian bulk at 2% of the top singular value: ESDs with a power-law tail
  (alpha about 1.5-3) over a Marchenko-Pastur bulk, as in trained transformers.

Tables (every one printed with the machine's load; the machine may be shared):

1. tailwise at its default (``precision="float64"``) vs WeightWatcher, with alpha agreement.
2. Precision: the same models at ``precision="float64" | "auto" | "float32"``; the share of
   ``auto``'s rows that used float32; the largest change of any column against float64
   (relative to :func:`tailwise.spectral.precision.column_scale`); and the LAPACK floor of
   the same matrices -- the Gram matrices and their eigenvalues alone (SciPy ``?syrk`` +
   ``eigh``, on the same worker threads), float64 and float32 Gram -- with analyze's time
   as a ratio of it.
3. ``--llama``: the layer shapes of a 7B Llama-like model (q/k/v/o 4096 x 4096, gate/up
   11008 x 4096, down 4096 x 11008, embedding/lm_head 32000 x 4096), ``--llama-layers``
   synthetic ``bert-pl``-style matrices of each, timed per layer for tailwise (float64 and
   auto) and WeightWatcher, extrapolated to the full model (32 blocks: 128, 64, 32 and 2
   matrices). ``--quick`` divides every side by 4.
4. ``--calibrate``: the error model of ``precision="auto"``: per family of layers, the
   largest eigenvalue error of the float32 Gram route in units of eps32 * lambda_max, and
   for every bounded column the largest ratio of its actual change to the first-order bound
   of :func:`tailwise.spectral.precision.change_bounds`.

Both tools run their defaults (KS-optimal xmin, W^T W scale, pooled convolutions) on the same
module. Each tool is warmed up once on a tiny model (imports, thread pools, LAPACK
workspaces), then timed best-of-r on the full model. tailwise analyses an in-memory model's
layers on one worker thread per core (single-threaded BLAS each); WeightWatcher runs with
torch at one thread and BLAS at its default thread count (``tailwise._threads.blas_work``):
left to mix torch's OpenMP pool with OpenBLAS's, its SVDs ran 15x slower on this loaded
2-core machine. ``--device cuda`` runs tailwise's decompositions on a GPU. ``--threads 1``
caps torch and every BLAS / OpenMP pool for both tools.

Run: ``python benchmarks/analyze_vs_weightwatcher.py [--quick] [--device cuda] [--repeat 3]
[--llama] [--calibrate]``
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from _common import (
    best_of,
    fmt_ratio,
    fmt_seconds,
    limit_threads,
    machine_header,
    markdown_table,
    quiet,
    thread_report,
)
from tailwise._threads import blas_work, single_threaded
from tailwise.spectral.analyze import COLUMNS, TEXT_COLUMNS, analyze
from tailwise.spectral.esd import Precision, _gram_eigenvalues_cpu, eigenvalues, layer_matrices
from tailwise.spectral.powerlaw import fit_power_law
from tailwise.spectral.precision import BOUNDED_COLUMNS, change_bounds, column_scale
from tailwise.weights import iter_layers

# (out, in, kernel) of ResNet18's convolutions, in forward order; kernel 1 = downsample.
RESNET18_CONVS: tuple[tuple[int, int, int], ...] = (
    (64, 3, 7),
    *[(64, 64, 3)] * 4,
    (128, 64, 3), (128, 128, 3), (128, 64, 1), (128, 128, 3), (128, 128, 3),
    (256, 128, 3), (256, 256, 3), (256, 128, 1), (256, 256, 3), (256, 256, 3),
    (512, 256, 3), (512, 512, 3), (512, 256, 1), (512, 512, 3), (512, 512, 3),
)  # fmt: skip

# Layer shapes (out, in) of a 7B Llama-like model and how many of each it has (32 blocks).
LLAMA_SHAPES: tuple[tuple[str, int, int, int], ...] = (
    ("q/k/v/o", 4096, 4096, 4 * 32),
    ("gate/up", 11008, 4096, 2 * 32),
    ("down", 4096, 11008, 32),
    ("embed/lm_head", 32000, 4096, 2),
)
PRECISIONS = ("float64", "auto", "float32")
EPS32 = float(np.finfo(np.float32).eps)


def bert_stack(blocks: int = 12, hidden: int = 768, intermediate: int = 3072) -> nn.Module:
    def block() -> nn.Module:
        return nn.ModuleDict(
            {
                "query": nn.Linear(hidden, hidden),
                "key": nn.Linear(hidden, hidden),
                "value": nn.Linear(hidden, hidden),
                "attention_output": nn.Linear(hidden, hidden),
                "intermediate": nn.Linear(hidden, intermediate),
                "output": nn.Linear(intermediate, hidden),
            }
        )

    return nn.ModuleDict({"layer": nn.ModuleList(block() for _ in range(blocks))})


def resnet18_stack(width_divisor: int = 1, classes: int = 1000) -> nn.Module:
    convs = nn.ModuleList(
        nn.Conv2d(
            max(1, c_in // width_divisor) if c_in > 3 else c_in,
            max(1, c_out // width_divisor),
            k,
            bias=False,
        )
        for c_out, c_in, k in RESNET18_CONVS
    )
    return nn.ModuleDict({"convs": convs, "fc": nn.Linear(512 // width_divisor, classes)})


@torch.no_grad()
def make_heavy_tailed(model: nn.Module, dof: float, seed: int) -> nn.Module:
    """Multiply every weight matrix elementwise by i.i.d. Student-t(``dof``) noise, in place."""
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        if name.endswith("weight") and param.ndim >= 2:
            noise = rng.standard_t(dof, size=tuple(param.shape))
            param.mul_(torch.from_numpy(noise).to(param.dtype))
    return model


def power_law_weight(
    out: int, inp: int, exponent: float, generator: torch.Generator, rank: int = 1024
) -> torch.Tensor:
    """W = L diag(s) R^T + E (out, inp), float32: s_k = k^(-1/exponent) for k <= rank, L and
    R Gaussian scaled to unit-norm columns on average, E a Gaussian bulk whose top singular
    value is about 2% of s_1 (the module docstring's "realistic synthetic" weights)."""
    r = min(rank, out, inp)
    s = torch.arange(1, r + 1, dtype=torch.float32) ** (-1.0 / exponent)
    left = torch.randn(out, r, generator=generator) / math.sqrt(out)
    right = torch.randn(inp, r, generator=generator) / math.sqrt(inp)
    noise = torch.randn(out, inp, generator=generator)
    noise *= 0.02 / (math.sqrt(out) + math.sqrt(inp))
    return (left * s) @ right.T + noise


@torch.no_grad()
def make_power_law(model: nn.Module, seed: int) -> nn.Module:
    """Replace every weight matrix by :func:`power_law_weight`, exponent drawn in [1, 3]."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("weight") and param.ndim == 2:
            exponent = 1.0 + 2.0 * float(torch.rand((), generator=gen))
            param.copy_(power_law_weight(*param.shape, exponent, gen))
    return model


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]


def cases(quick: bool, heavy_tailed: bool, dof: float, seed: int) -> list[Case]:
    def bert() -> nn.Module:
        torch.manual_seed(seed)
        return bert_stack(1, 128, 512) if quick else bert_stack()

    def resnet() -> nn.Module:
        torch.manual_seed(seed)
        return resnet18_stack(8, 100) if quick else resnet18_stack()

    out = [Case("bert", bert), Case("resnet18", resnet)]
    if heavy_tailed:
        out += [
            Case(f"bert-ht (t{dof:g})", lambda: make_heavy_tailed(bert(), dof, seed)),
            Case(f"resnet18-ht (t{dof:g})", lambda: make_heavy_tailed(resnet(), dof, seed)),
        ]
    out.append(Case("bert-pl", lambda: make_power_law(bert(), seed)))
    return out


WORKERS: list[int | None] = [None]  # --workers: analyze's worker threads (None: its default)


def run_tailwise(model: nn.Module, device: str | None, precision: str = "float64") -> pd.DataFrame:
    df = analyze(model, progress=False, device=device, precision=precision, workers=WORKERS[0])
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return df


def run_weightwatcher(model: nn.Module) -> pd.DataFrame:
    import weightwatcher

    with quiet(), blas_work():
        return weightwatcher.WeightWatcher(model=model).analyze()


def compare(tw: pd.DataFrame, ww: pd.DataFrame) -> pd.DataFrame:
    """One row per matrix both tools fitted: alpha, xmin and D side by side."""
    ours = tw[tw["status"] == "ok"].set_index("name")[["alpha", "xmin", "D", "num_evals"]]
    theirs = ww.assign(name=ww["longname"].astype(str) + ".weight").set_index("name")
    theirs = theirs[["alpha", "xmin", "D", "num_evals"]].astype("float64")
    both = ours.merge(theirs, left_index=True, right_index=True, suffixes=("_tw", "_ww"))
    both = both[np.isfinite(both["alpha_ww"]) & (both["alpha_ww"] > 0)]  # WW: -1 = failed
    return both.assign(dalpha=(both["alpha_tw"] - both["alpha_ww"]).abs())


def largest_change(
    reference: pd.DataFrame, other: pd.DataFrame, same_rank: bool = False
) -> tuple[float, str]:
    """The largest change of any numeric column of ``other`` against ``reference`` (rows by
    name, status ok in both; with ``same_rank`` only rows whose rank did not change),
    relative to :func:`column_scale`; and the column."""
    ref = reference.set_index("name")
    got = other.set_index("name").loc[ref.index]
    ok = (ref["status"] == "ok") & (got["status"] == "ok")
    if same_rank:
        ok &= ref["matrix_rank"] == got["matrix_rank"]
    worst, where = 0.0, "-"
    for column in COLUMNS:
        if column in TEXT_COLUMNS:
            continue
        a = ref.loc[ok, column].astype("float64").to_numpy()
        b = got.loc[ok, column].astype("float64").to_numpy()
        alpha = ref.loc[ok, "alpha"].astype("float64").to_numpy()
        for x, y, al in zip(a, b, alpha, strict=True):
            if (math.isnan(x) and math.isnan(y)) or x == y:
                continue
            change = abs(x - y) / max(column_scale(column, x, al), 1e-300)
            if not change <= worst:
                worst, where = change, column
    return worst, where


def analysed_matrices(model: nn.Module) -> list[torch.Tensor]:
    """Every matrix analyze decomposes (conv slices of a pooled stack one by one)."""
    out = []
    for layer in iter_layers(model):
        if layer.status == "ok" and layer.kind.analysed:
            for _, stack, _ in layer_matrices(layer.tensor(), layer.kind):
                out.extend(stack)
    return out


def lapack_floor(matrices: list[torch.Tensor], precision: Precision, workers: int) -> float:
    """Wall time of the Gram matrices + eigenvalues alone on ``workers`` threads, one BLAS
    thread each (analyze's own layout for an in-memory model on the CPU)."""
    with single_threaded(blas=True), ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter()
        list(pool.map(lambda m: _gram_eigenvalues_cpu(m, precision), matrices))
        return time.perf_counter() - start


def precision_table(
    models: list[tuple[str, nn.Module]], device: str | None, repeat: int, once_above: float
) -> str:
    rows = []
    workers = WORKERS[0] or os.cpu_count() or 1
    for name, model in models:
        times, tables = {}, {}
        for precision in PRECISIONS:
            times[precision], tables[precision] = best_of(
                lambda m=model, p=precision: run_tailwise(m, device, p), repeat, once_above
            )
        ok = tables["auto"]["status"] == "ok"
        in32 = int((tables["auto"].loc[ok, "precision"] == "float32").sum())
        change_auto = largest_change(tables["float64"], tables["auto"])
        change_32 = largest_change(tables["float64"], tables["float32"], same_rank=True)
        rank_32 = int(
            (tables["float32"]["matrix_rank"] != tables["float64"]["matrix_rank"])[ok].sum()
        )
        floor64 = floor32 = math.nan
        if device is None or torch.device(device).type == "cpu":
            matrices = analysed_matrices(model)
            floor64 = min(lapack_floor(matrices, Precision.FLOAT64, workers) for _ in range(repeat))
            floor32 = min(lapack_floor(matrices, Precision.FLOAT32, workers) for _ in range(repeat))
        rows.append(
            [
                name,
                fmt_seconds(times["float64"]),
                fmt_seconds(times["auto"]),
                fmt_seconds(times["float32"]),
                f"{in32} / {int(ok.sum())}",
                f"{change_auto[0]:.1e} ({change_auto[1]})",
                f"{rank_32} / {int(ok.sum())}",
                f"{change_32[0]:.1e} ({change_32[1]})",
                fmt_seconds(floor64),
                fmt_seconds(floor32),
                fmt_ratio(times["float64"], floor64),
                fmt_ratio(times["float32"], floor32),
            ]
        )
    header = [
        "model",
        "float64",
        "auto",
        "float32",
        "auto rows in float32",
        "auto: largest change",
        "float32: rank lower (floor)",
        "float32: largest change, other rows",
        "floor float64",
        "floor float32 Gram",
        "float64 / floor",
        "float32 / floor",
    ]
    return markdown_table(header, rows)


def llama_models(
    quick: bool, layers: int, seed: int
) -> Iterator[tuple[str, tuple[int, int], int, nn.Module]]:
    """One module of ``layers`` synthetic Linear layers per 7B layer shape."""
    gen = torch.Generator().manual_seed(seed)
    divisor = 4 if quick else 1
    for label, out, inp, count in LLAMA_SHAPES:
        out, inp = out // divisor, inp // divisor
        module = nn.Sequential(*(nn.Linear(inp, out, bias=False) for _ in range(layers)))
        with torch.no_grad():
            for linear in module:
                exponent = 1.0 + 2.0 * float(torch.rand((), generator=gen))
                linear.weight.copy_(power_law_weight(out, inp, exponent, gen))
        yield label, (out, inp), count, module


def llama_table(quick: bool, layers: int, seed: int, with_ww: bool) -> str:
    rows, totals = [], {"float64": 0.0, "auto": 0.0, "ww": 0.0}
    for label, (out, inp), count, module in llama_models(quick, layers, seed):
        per_layer = {}
        tables = {}
        for precision in ("float64", "auto"):
            seconds, tables[precision] = best_of(
                lambda m=module, p=precision: run_tailwise(m, None, p), 1
            )
            per_layer[precision] = seconds / layers
        ww_seconds = math.nan
        dalpha = math.nan
        if with_ww:
            ww_seconds, ww = best_of(lambda m=module: run_weightwatcher(m), 1)
            ww_seconds /= layers
            both = compare(tables["float64"], ww)
            dalpha = float((both["dalpha"] / both["alpha_ww"]).max()) if len(both) else math.nan
        in32 = int((tables["auto"]["precision"] == "float32").sum())
        change = largest_change(tables["float64"], tables["auto"])
        totals["float64"] += count * per_layer["float64"]
        totals["auto"] += count * per_layer["auto"]
        totals["ww"] += count * ww_seconds
        rows.append(
            [
                f"{label} {out} x {inp}",
                count,
                fmt_seconds(per_layer["float64"]),
                fmt_seconds(per_layer["auto"]),
                f"{in32} / {layers}",
                f"{change[0]:.1e}",
                fmt_seconds(ww_seconds),
                fmt_ratio(ww_seconds, per_layer["float64"]),
                fmt_ratio(ww_seconds, per_layer["auto"]),
                f"{dalpha:.1e}",
            ]
        )
    rows.append(
        [
            "whole model (extrapolated)",
            sum(count for *_, count in LLAMA_SHAPES),
            fmt_seconds(totals["float64"]),
            fmt_seconds(totals["auto"]),
            "",
            "",
            fmt_seconds(totals["ww"]),
            fmt_ratio(totals["ww"], totals["float64"]),
            fmt_ratio(totals["ww"], totals["auto"]),
            "",
        ]
    )
    header = [
        "layer shape (out x in)",
        "in model",
        "tailwise float64 / layer",
        "tailwise auto / layer",
        "auto in float32",
        "auto: largest change",
        "WeightWatcher / layer",
        "speed-up float64",
        "speed-up auto",
        "max rel |Δalpha| vs WW",
    ]
    return markdown_table(header, rows)


def calibration_layers(seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Families of layers for the error model (float32 weights)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shapes = [(300, 100), (2048, 512), (3072, 768), (512, 2048), (1024, 1024)]
    for out, inp in shapes:
        for dof in (2.1, 2.5, 3.0, 4.0, 6.0):
            w = rng.standard_normal((out, inp)) * rng.standard_t(dof, (out, inp)) * 0.02
            yield f"student-t {dof:g}", torch.from_numpy(w).float()
        yield "gaussian", torch.randn(out, inp, generator=gen) * 0.02
        for exponent in (1.0, 1.5, 3.0):
            yield f"power law {exponent:g} + bulk", power_law_weight(out, inp, exponent, gen)
        rank = min(out, inp) // 8
        low = torch.randn(out, rank, generator=gen) @ torch.randn(rank, inp, generator=gen)
        yield "low rank + noise", low * 0.01 + torch.randn(out, inp, generator=gen) * 0.002


def calibration_table(seed: int) -> str:
    families: dict[str, dict[str, float]] = {}
    for family, weight in calibration_layers(seed):
        [(_, esd32)] = eigenvalues(weight, precision="float32")
        [(_, esd64)] = eigenvalues(weight, precision="float64")
        stats = families.setdefault(family, {"layers": 0, "certain": 0, "error": 0.0})
        stats["layers"] += 1
        top = float(esd64.evals[-1])
        # esd32's eigenvalues at or below the float32 floor are 0 (not data): compare above it
        kept = esd32.evals > 0
        stats["error"] = max(
            stats["error"], float(np.abs(esd32.evals - esd64.evals)[kept].max()) / (EPS32 * top)
        )
        fit32 = fit_power_law(esd32.evals)
        bounds = change_bounds(esd32, fit32)
        if not all(value <= 1e-4 for value in bounds.values()):
            continue
        stats["certain"] += 1
        df64 = analyze({"w": weight}, progress=False, precision="float64").iloc[0]
        df32 = analyze({"w": weight}, progress=False, precision="float32").iloc[0]
        for column in BOUNDED_COLUMNS:
            bound = bounds.get(column, 0.0)
            if column not in df64 or bound <= 0:
                continue
            a, b = float(df64[column]), float(df32[column])
            change = abs(a - b) / max(column_scale(column, a, float(df64["alpha"])), 1e-300)
            stats[column] = max(stats.get(column, 0.0), change / bound)
    # norm's "bound" is its measured change (ESD.trace_error): nothing to calibrate
    columns = [c for c in BOUNDED_COLUMNS if c != "norm" and any(c in s for s in families.values())]
    rows = [
        [family, f"{int(s['certain'])} / {int(s['layers'])}", f"{s['error']:.2f}"]
        + [f"{s[c]:.3f}" if c in s else "-" for c in columns]
        for family, s in families.items()
    ]
    worst = {c: max((s.get(c, 0.0) for s in families.values()), default=0.0) for c in columns}
    rows.append(["all", "", ""] + [f"{worst[c]:.3f}" for c in columns])
    header = ["family", "certain", "max |dλ| / (eps32 λmax)"] + [
        f"{c}: change/bound" for c in columns
    ]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, one repeat (< 60 s)")
    parser.add_argument("--device", default=None, help="tailwise device, e.g. cuda (WW: CPU)")
    parser.add_argument("--repeat", type=int, default=3, help="best of r for both tools")
    parser.add_argument(
        "--once-above", type=float, default=30.0, help="a call slower than this (s) runs once"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="cap torch and BLAS/OpenMP threads (both tools)"
    )
    parser.add_argument(
        "--no-heavy-tailed", action="store_true", help="skip the Student-t variants"
    )
    parser.add_argument("--dof", type=float, default=2.5, help="Student-t degrees of freedom")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--show-mismatches", type=int, default=3, help="layers listed per model where alpha differs"
    )
    parser.add_argument("--no-precision", action="store_true", help="skip the precision table")
    parser.add_argument("--llama", action="store_true", help="the 7B-shaped section (minutes)")
    parser.add_argument("--llama-layers", type=int, default=2, help="matrices per layer shape")
    parser.add_argument("--no-ww-llama", action="store_true", help="llama: skip WeightWatcher")
    parser.add_argument("--calibrate", action="store_true", help="the float32 error model")
    parser.add_argument("--only", choices=("models", "llama", "calibrate"), default=None)
    parser.add_argument(
        "--workers", type=int, default=None, help="analyze's worker threads (default: cores)"
    )
    args = parser.parse_args()
    WORKERS[0] = args.workers
    repeat = 1 if args.quick else args.repeat
    if args.threads is not None:
        limit_threads(args.threads)

    with quiet():  # it prints a CUDA notice on import
        import weightwatcher

    print(machine_header())
    print(f"weightwatcher {weightwatcher.__version__}; tailwise device: {args.device or 'cpu'}")

    warm = nn.Sequential(nn.Linear(64, 32), nn.Conv2d(8, 16, 3))
    for precision in PRECISIONS:
        run_tailwise(warm, args.device, precision)
    run_weightwatcher(warm)
    print(thread_report())
    workers = args.workers or os.cpu_count() or 1
    print(f"tailwise: {workers} worker thread(s); WeightWatcher: torch 1 thread, BLAS as above")
    print(f"best of {repeat} after one warm-up; a call over {args.once_above:g} s runs once\n")

    if args.only in (None, "models"):
        models_section(args, repeat)
    if args.llama or args.only == "llama":
        print(f"\n7B-shaped layers ({args.llama_layers} synthetic matrices per shape, timed once):")
        print(llama_table(args.quick, args.llama_layers, args.seed, not args.no_ww_llama))
        print(f"{machine_header()} (after the llama section)")
    if args.calibrate or args.only == "calibrate":
        print("\nError model of precision='auto' (float32 Gram vs float64):")
        print(calibration_table(args.seed))
    print(f"\n{machine_header()} (after the run)")


def models_section(args: argparse.Namespace, repeat: int) -> None:
    rows, mismatches, built = [], [], []
    for case in cases(args.quick, not args.no_heavy_tailed, args.dof, args.seed):
        model = case.build()
        built.append((case.name, model))
        t_tw, df_tw = best_of(
            lambda m=model: run_tailwise(m, args.device), repeat, once_above=args.once_above
        )
        t_ww, df_ww = best_of(
            lambda m=model: run_weightwatcher(m), repeat, once_above=args.once_above
        )
        both = compare(df_tw, df_ww)
        n_ok = int((df_tw["status"] == "ok").sum())
        close = (both["dalpha"] <= 1e-3 * both["alpha_ww"].abs()).sum()
        rows.append(
            [
                case.name,
                f"{n_ok} / {len(df_ww)}",
                fmt_seconds(t_tw),
                fmt_seconds(t_ww),
                fmt_ratio(t_ww, t_tw),
                f"{both['dalpha'].max():.2e}" if len(both) else "-",
                f"{both['dalpha'].median():.2e}" if len(both) else "-",
                f"{int(close)} / {len(both)}",
                f"{df_tw.loc[df_tw['status'] == 'ok', 'alpha'].median():.2f}",
            ]
        )
        worst = both.sort_values("dalpha", ascending=False).head(args.show_mismatches)
        for name, r in worst[worst["dalpha"] > 1e-3 * worst["alpha_ww"].abs()].iterrows():
            mismatches.append(
                [case.name, name, int(r["num_evals_tw"]), f"{r['alpha_tw']:.4f}",
                 f"{r['alpha_ww']:.4f}", f"{r['xmin_tw']:.5g}", f"{r['xmin_ww']:.5g}",
                 f"{r['D_tw']:.5f}", f"{r['D_ww']:.5f}"]
            )  # fmt: skip

    header = [
        "model",
        "#matrices (tw / WW)",
        "tailwise",
        "WeightWatcher",
        "speed-up (WW/tw)",
        "max |Δalpha|",
        "median |Δalpha|",
        "#within 1e-3 rel",
        "median alpha",
    ]
    print(markdown_table(header, rows))
    if mismatches:
        print("\nLargest alpha differences (beyond 1e-3 relative):")
        print(
            markdown_table(
                ["model", "layer", "evals", "alpha tw", "alpha WW", "xmin tw", "xmin WW",
                 "D tw", "D WW"],
                mismatches,
            )
        )  # fmt: skip
    if not args.no_precision:
        print(f"\nPrecision of the Gram matrices ({machine_header()}):")
        print(precision_table(built, args.device, repeat, args.once_above))


if __name__ == "__main__":
    main()
