"""Time to allocate and prune a ~100M-parameter model, stage by stage, and where it goes.

Models (float32, random weights made heavy-tailed, built here; no downloads):

* ``stack`` (default): 8 transformer-shaped blocks of 4 x Linear(1024, 1024) (q, k, v, o),
  Linear(1024, 4096) and Linear(4096, 1024): 48 matrices, 100.7M parameters.
* ``wide``: Linear(4096, 4096) x 2, Linear(4096, 8192), Linear(8192, 4096): 4 matrices,
  100.7M parameters. Its low-rank stage runs four float64 SVDs of 4096-wide matrices (minutes
  on two cores); ``--skip-lowrank`` leaves it out.

``--quick`` builds one ``stack`` block (12.6M parameters). Every weight is multiplied by an
i.i.d. Student-t field (``--dof`` degrees of freedom, 3 by default; ``--dof 0``: plain init)
so that the spectra have power-law tails, like a trained model's, and alpha varies by layer.

Stages of the pipeline ``analyze -> allocate -> prune``, each timed once (they take seconds to
minutes, and the whole run should stay within a few minutes):

1. ``tailwise.analyze(model)``: the spectra and power-law fits (the ``alpha`` column);
2. ``allocate(model, ratio, "alpha", analysis=df)``: per-layer ratios from alpha;
3. ``prune_magnitude(model, ratios)``: layer-wise magnitude masks with those ratios;
4. ``prune_lowrank(model, ratios)``: rank-k factor pairs with those ratios.

The share column is each stage's part of the sum of the four (3 and 4 are alternatives; both
are shown). Then global magnitude pruning, ``prune_magnitude(model, ratio, scope="global")``,
against ``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured,
amount=ratio)`` on the same weights: time, weights zeroed by each, and masks compared (ties
of |w| at the threshold may be broken differently). A third row computes tailwise's global
keep-masks with one ``torch.kthvalue`` instead of a sort (masks only, nothing attached): the
time the hot spot could take, and a check that it gives the same masks.

Pruning runs ``inplace=True`` on a copy made before its timer; the copy's time (what
``inplace=False`` adds) is its own row. Peak RSS is sampled every 10 ms during each stage.
Each pruning stage runs under ``cProfile``; the functions with the most self time are listed
with their caller (the hot spot to fix). One thread by default: on a shared machine, more
threads spin-wait against other processes (a float64 SVD then swings by 5-10x).

Run: ``python benchmarks/prune_large.py [--quick] [--model stack|wide] [--ratio 0.5]``
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import math
import os
import pstats
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import psutil
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from _common import fmt_seconds, limit_threads, machine_header, markdown_table, thread_report
from tailwise.prune import PruneResult, prunable_layers, prune_lowrank, prune_magnitude
from tailwise.prune.allocate import allocate
from tailwise.spectral.analyze import analyze

MIB = 2**20


# ---------------------------------------------------------------------------------------------
# Models


def stack_model(blocks: int, hidden: int = 1024, intermediate: int = 4096) -> nn.Module:
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


def wide_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4096, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 8192), nn.Linear(8192, 4096)
    )


@torch.no_grad()
def make_heavy_tailed(model: nn.Module, dof: int, seed: int) -> None:
    """Multiply every weight matrix by i.i.d. Student-t(``dof``) noise, Z / sqrt(chi2 / dof)."""
    generator = torch.Generator().manual_seed(seed)
    for module in prunable_layers(model).values():
        weight = module.weight
        chi2 = torch.zeros_like(weight)
        for _ in range(dof):
            chi2.addcmul_(z := torch.randn(weight.shape, generator=generator), z)
        weight.mul_(torch.randn(weight.shape, generator=generator)).div_(chi2.div_(dof).sqrt_())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Measurement: wall time, peak RSS, cProfile


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_rss: int = 0  # bytes, during the stage
    base_rss: int = 0  # bytes, before it
    profile: pstats.Stats | None = None
    result: Any = None
    notes: list[str] = field(default_factory=list)


@contextmanager
def rss_sampler(stage: Stage, every: float = 0.01) -> Iterator[None]:
    process = psutil.Process()
    stage.base_rss = stage.peak_rss = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            stage.peak_rss = max(stage.peak_rss, process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        stage.peak_rss = max(stage.peak_rss, process.memory_info().rss)


def run_stage(name: str, fn: Callable[[], Any], profile: bool = False) -> Stage:
    gc.collect()
    stage = Stage(name)
    profiler = cProfile.Profile() if profile else None
    with rss_sampler(stage):
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            stage.result = fn()
        finally:
            if profiler is not None:
                profiler.disable()
            stage.seconds = time.perf_counter() - start
    if profiler is not None:
        stage.profile = pstats.Stats(profiler)
    return stage


def _where(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":  # a builtin: "<built-in method torch.sort>" / "<method 'clone' of ...>"
        return name.strip("<>").replace("built-in method ", "").replace(" objects", "")
    parts = path.split(os.sep)
    short = "/".join(parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else
                     parts[parts.index("src") + 1 :] if "src" in parts else parts[-2:])  # fmt: skip
    return f"{short}:{line}({name})"


def hot_spots(stage: Stage, top: int) -> list[list[object]]:
    """The ``top`` functions by self time, each with the caller that spent most of it there."""
    assert stage.profile is not None
    entries = stage.profile.stats  # type: ignore[attr-defined]
    total = stage.seconds
    rows = []
    for func, (_, calls, self_time, _, callers) in sorted(
        entries.items(), key=lambda kv: -kv[1][2]
    )[:top]:
        caller = max(callers.items(), key=lambda kv: kv[1][2], default=None)
        rows.append(
            [
                stage.name,
                _where(func),
                _where(caller[0]) if caller else "-",
                calls,
                fmt_seconds(self_time),
                f"{self_time / total:.0%}",
            ]
        )
    return rows


def fmt_mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Global magnitude: tailwise vs torch.nn.utils.prune


def torch_global(model: nn.Module, ratio: float) -> nn.Module:
    params = [(module, "weight") for module in prunable_layers(model).values()]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=ratio)
    return model


def keep_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight_mask.bool() for name, m in prunable_layers(model).items()}


@torch.no_grad()
def kthvalue_masks(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """Reference: the keep-masks of tailwise's global magnitude pruning (the ``floor(ratio * n)``
    smallest |w|, ties at the threshold dropped in position order, as its stable sort does)
    from one ``torch.kthvalue`` instead of a sort; masks only, nothing attached to the model."""
    layers = prunable_layers(model)
    flat = torch.cat([m.weight.detach().to(torch.float64).abs().flatten() for m in layers.values()])
    remove = math.floor(ratio * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if remove > 0:
        threshold = torch.kthvalue(flat, remove).values
        below = flat < threshold
        keep.masked_fill_(below, False)
        left = remove - int(below.sum())
        keep[torch.nonzero(flat == threshold).flatten()[:left]] = False
    sizes = [m.weight.numel() for m in layers.values()]
    return {
        name: part.view_as(m.weight)
        for (name, m), part in zip(layers.items(), keep.split(sizes), strict=True)
    }


def compare_global(
    dense: nn.Module, ratio: float, profile: bool
) -> tuple[list[list[object]], list[Stage], str]:
    stages, masks = [], []
    for label, fn in (
        ("tailwise prune_magnitude(scope='global')", lambda m: keep_masks(prune_magnitude(
            m, ratio, scope="global", inplace=True).model)),
        ("torch global_unstructured(L1Unstructured)", lambda m: keep_masks(torch_global(m, ratio))),
        ("reference: kthvalue keep-masks only", lambda m: kthvalue_masks(m, ratio)),
    ):  # fmt: skip
        work = copy.deepcopy(dense)
        stage = run_stage(label, lambda fn=fn, work=work: fn(work), profile)
        masks.append(stage.result)
        stage.result = None
        del work
        stages.append(stage)
    total = sum(m.numel() for m in masks[0].values())
    rows = []
    for stage, mask in zip(stages, masks, strict=True):
        zeroed = sum(int((~m).sum()) for m in mask.values())
        differ = sum(int((m ^ masks[0][name]).sum()) for name, m in mask.items())
        rows.append(
            [
                stage.name,
                fmt_seconds(stage.seconds),
                f"{zeroed:,}",
                f"{zeroed / total:.6f}",
                f"{differ:,}",
                fmt_mib(stage.peak_rss - stage.base_rss),
            ]
        )
    weights = {name: m.weight.detach().abs() for name, m in prunable_layers(dense).items()}
    thresholds = [
        max(float(w[~mask[name]].max()) for name, w in weights.items() if (~mask[name]).any())
        for mask in masks[:2]
    ]
    note = (
        f"{total:,} weights; largest |w| zeroed: tailwise {thresholds[0]:.9g}, torch "
        f"{thresholds[1]:.9g} (ties at the threshold are broken differently; torch removes "
        "round(amount * n), tailwise floor(ratio * n))"
    )
    return rows, stages, note


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one stack block, 12.6M params")
    parser.add_argument("--model", choices=("stack", "wide"), default="stack")
    parser.add_argument("--ratio", type=float, default=0.5, help="global pruning ratio")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (more spin-wait when shared)"
    )
    parser.add_argument("--dof", type=int, default=3, help="Student-t dof of the weights (0: off)")
    parser.add_argument("--skip-lowrank", action="store_true", help="leave out prune_lowrank")
    parser.add_argument("--no-profile", action="store_true", help="no cProfile of the stages")
    parser.add_argument("--top", type=int, default=4, help="hot spots listed per stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit_threads(args.threads)
    profile = not args.no_profile

    print(machine_header())
    print(
        f"torch.set_num_threads({args.threads}); RAM {psutil.virtual_memory().total / 2**30:.0f} "
        f"GiB; os.cpu_count() = {os.cpu_count()}; torch-pruning {version('torch-pruning')}"
    )
    analyze(nn.Linear(64, 32), progress=False)  # warm-up: lazy imports, thread pools
    print(thread_report())

    torch.manual_seed(args.seed)
    build = (
        (lambda: stack_model(1))
        if args.quick
        else (lambda: stack_model(8) if args.model == "stack" else wide_model())
    )

    def built() -> nn.Module:
        model = build()
        if args.dof > 0:
            make_heavy_tailed(model, args.dof, args.seed)
        return model

    setup = run_stage("build model (float32, heavy-tailed)", built)
    model = setup.result
    layers = prunable_layers(model)
    shapes = sorted({tuple(m.weight.shape) for m in layers.values()})
    print(
        f"\nmodel {'stack x1' if args.quick else args.model}: {len(layers)} Linear layers, "
        f"shapes {shapes}, {n_params(model) / 1e6:.1f}M params "
        f"({n_params(model) * 4 / MIB:,.0f} MiB); ratio {args.ratio}; "
        f"profiling {'on' if profile else 'off'}\n"
    )

    stages: list[Stage] = []
    spectra = run_stage("analyze (spectra, alpha)", lambda: analyze(model, progress=False))
    df = spectra.result
    stages.append(spectra)
    alloc = run_stage(
        'allocate(model, ratio, "alpha", analysis=df)',
        lambda: allocate(model, args.ratio, "alpha", analysis=df),
    )
    ratios = alloc.result
    stages.append(alloc)
    copying = run_stage(
        "copy.deepcopy(model) (inplace=False adds it)", lambda: copy.deepcopy(model)
    )
    copying.result = None

    def pruned(fn: Callable[[nn.Module], PruneResult]) -> Callable[[], PruneResult]:
        work = copy.deepcopy(model)
        return lambda: fn(work)

    magnitude = run_stage(
        "prune_magnitude(ratios) (layer scope)",
        pruned(lambda m: prune_magnitude(m, ratios, inplace=True)),
        profile,
    )
    result = magnitude.result
    magnitude.notes.append(f"achieved {result.totals()['params_ratio']:.4f} of params kept")
    magnitude.result = result = None
    stages.append(magnitude)
    if not args.skip_lowrank:
        lowrank = run_stage(
            "prune_lowrank(ratios)",
            pruned(lambda m: prune_lowrank(m, ratios, inplace=True)),
            profile,
        )
        lowrank.result = None
        stages.append(lowrank)

    total = sum(s.seconds for s in stages)
    alpha = df.loc[df["status"] == "ok", "alpha"]
    rows = [
        [
            setup.name,
            fmt_seconds(setup.seconds),
            "-",
            fmt_mib(setup.peak_rss - setup.base_rss),
        ]
    ]
    for stage in [*stages[:2], copying, *stages[2:]]:
        share = f"{stage.seconds / total:.0%}" if stage in stages else "-"
        rows.append(
            [
                stage.name,
                fmt_seconds(stage.seconds),
                share,
                fmt_mib(stage.peak_rss - stage.base_rss),
            ]
        )
    rows.append(["total of the stages with a share", fmt_seconds(total), "100%", "-"])
    print("Pipeline stages (peak RSS: above the RSS at the stage's start)\n")
    print(markdown_table(["stage", "time", "share", "peak RSS"], rows))
    values = sorted(ratios.values())
    print(
        f"\nalpha: {len(alpha)} fits, min {alpha.min():.2f} median {alpha.median():.2f} max "
        f"{alpha.max():.2f}; allocated ratios: min {values[0]:.2f} median "
        f"{values[len(values) // 2]:.2f} max {values[-1]:.2f}; {magnitude.notes[0]}"
    )
    print(f"process peak RSS so far: {fmt_mib(max(s.peak_rss for s in [setup, *stages]))}")

    print(f"\nGlobal magnitude pruning, ratio {args.ratio}, same weights\n")
    global_rows, global_stages, note = compare_global(model, args.ratio, profile)
    header = ["method", "time", "zeroed", "fraction", "masks differ from tailwise", "peak RSS"]
    print(markdown_table(header, global_rows))
    tw, th = global_stages[0].seconds, global_stages[1].seconds
    print(f"\n{note}; torch / tailwise time: {th / tw:.2f}x")

    if profile:
        print(f"\nHot spots: top {args.top} functions by self time per pruning stage (cProfile)\n")
        spots = []
        for stage in [*stages[2:], *global_stages[:2]]:
            spots += hot_spots(stage, args.top)
        print(
            markdown_table(["stage", "function", "main caller", "calls", "self", "of stage"], spots)
        )
    print(f"\n{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
