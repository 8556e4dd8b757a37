"""tailwise ``analyze`` vs WeightWatcher 0.7.7 ``analyze`` on BERT- and ResNet18-shaped models.

Models (random weights, built here; no downloads):

* ``bert``: a BERT-base-shaped encoder stack, 12 blocks of q, k, v, o = Linear(768, 768),
  Linear(768, 3072), Linear(3072, 768): 72 matrices (embeddings and pooler left out).
* ``resnet18``: the 20 convolutions of ResNet18 with their shapes (7x7 3->64, 16 3x3, three
  1x1 downsamples) and the fc 512 -> 1000: 21 matrices. Convolutions are pooled over the
  kernel positions by both tools (WeightWatcher's default, tailwise's ``conv="pooled"``).
* ``*-ht`` ("heavy-tailed"): the same shapes with every weight multiplied by an i.i.d.
  Student-t field (2.5 degrees of freedom by default), so the ESDs have power-law tails with
  alpha of about 2-6 like trained models, instead of the alpha ~ 10-20 of a random init.

Both tools run their defaults (KS-optimal xmin, W^T W scale, pooled convolutions) on the same
module. Each tool is warmed up once on a tiny model (imports, thread pools, LAPACK
workspaces), then timed best-of-r on the full model. WeightWatcher always runs on the CPU;
``--device cuda`` runs tailwise's decompositions on a GPU. ``--threads 1`` caps torch and every
BLAS / OpenMP pool for both tools: on a shared machine the default pools spin-wait against
each other and timings swing by 10x or more.

Run: ``python benchmarks/analyze_vs_weightwatcher.py [--quick] [--device cuda] [--repeat 3]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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
from tailwise.spectral.analyze import analyze

# (out, in, kernel) of ResNet18's convolutions, in forward order; kernel 1 = downsample.
RESNET18_CONVS: tuple[tuple[int, int, int], ...] = (
    (64, 3, 7),
    *[(64, 64, 3)] * 4,
    (128, 64, 3), (128, 128, 3), (128, 64, 1), (128, 128, 3), (128, 128, 3),
    (256, 128, 3), (256, 256, 3), (256, 128, 1), (256, 256, 3), (256, 256, 3),
    (512, 256, 3), (512, 512, 3), (512, 256, 1), (512, 512, 3), (512, 512, 3),
)  # fmt: skip


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
    return out


def run_tailwise(model: nn.Module, device: str | None) -> pd.DataFrame:
    df = analyze(model, progress=False, device=device)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return df


def run_weightwatcher(model: nn.Module) -> pd.DataFrame:
    import weightwatcher

    with quiet():
        return weightwatcher.WeightWatcher(model=model).analyze()


def compare(tw: pd.DataFrame, ww: pd.DataFrame) -> pd.DataFrame:
    """One row per matrix both tools fitted: alpha, xmin and D side by side."""
    ours = tw[tw["status"] == "ok"].set_index("name")[["alpha", "xmin", "D", "num_evals"]]
    theirs = ww.assign(name=ww["longname"].astype(str) + ".weight").set_index("name")
    theirs = theirs[["alpha", "xmin", "D", "num_evals"]].astype("float64")
    both = ours.merge(theirs, left_index=True, right_index=True, suffixes=("_tw", "_ww"))
    both = both[np.isfinite(both["alpha_ww"]) & (both["alpha_ww"] > 0)]  # WW: -1 = failed
    return both.assign(dalpha=(both["alpha_tw"] - both["alpha_ww"]).abs())


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
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    if args.threads is not None:
        limit_threads(args.threads)

    with quiet():  # it prints a CUDA notice on import
        import weightwatcher

    print(machine_header())
    print(f"weightwatcher {weightwatcher.__version__}; tailwise device: {args.device or 'cpu'}")

    warm = nn.Sequential(nn.Linear(64, 32), nn.Conv2d(8, 16, 3))
    run_tailwise(warm, args.device)
    run_weightwatcher(warm)
    print(thread_report())
    print(f"best of {repeat} after one warm-up; a call over {args.once_above:g} s runs once\n")

    rows, mismatches = [], []
    for case in cases(args.quick, not args.no_heavy_tailed, args.dof, args.seed):
        model = case.build()
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
    print(f"\n{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
