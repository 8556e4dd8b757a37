"""Channel and low-rank pruning: measured CPU inference speed-up against the FLOPs limit.

Channel pruning (``prune_channels``, one uniform ratio) of CIFAR-shaped CNNs (VGG11, VGG16,
ResNet18, ResNet20; input 3x32x32), and low-rank pruning (``prune_lowrank``) of an MLP with
big square Linear layers. Random weights, built here; no downloads.

* **FLOPs limit**: FLOPs before / after from ``PruneResult.totals()`` (2 x MACs of the Linear
  and Conv layers): the speed-up pruning could give if run time followed those FLOPs.
* **speed-up**: dense time / pruned time of one eval-mode forward pass on a batch under
  ``torch.inference_mode``, after two warm-up calls per model. Dense and pruned models run in
  the same rounds, in a shuffled order per round; the speed-up is the median over rounds of
  the per-round ratio (a shared machine's slow spells hit both sides of a ratio), with its
  quartiles in brackets. Times are medians over the rounds.
* **efficiency** = speed-up / FLOPs limit. The issue's target: at least 0.8 at ratio 0.5.

Peer, in the same run: Torch-Pruning's ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``
and the same uniform ratio on a fresh copy of the model (its classifier ignored, as tailwise
protects layers that produce the model output). tailwise uses it under the hood, so the
pruned models should be the same, weight for weight ("same as TP": equal state_dict shapes and
values); its speed-up is timed in the same rounds. Prune times: best of ``--prune-repeat``,
both in place on a copy made beforehand (tailwise also traces the model for its report: the
FLOPs before and after, the output layers and the rebuild edits). Torch-Pruning has no
low-rank method, so the MLP rows have no peer.

**Prune time** (the last table): ``prune_channels(model, 0.5, example, inplace=True)`` against
Torch-Pruning's ``MetaPruner`` (as above) on CIFAR ResNet-20, ResNet-56 (He et al.'s 9 blocks
per stage), VGG16 and DenseNet-40 (``tailwise.models``), best of ``--time-repeat`` runs each
on a fresh copy (copies made untimed), both in the same run, with the forward passes each
makes (calls of the model's ``forward``: Torch-Pruning traces once; tailwise adds one traced
pass before pruning for its report -- output layers, FLOPs, output shapes -- and one after).

**Low-rank pruning with an alpha allocation** (``--lowrank-alpha``): the ~100M-parameter stack
of ``benchmarks/prune_large.py`` (8 blocks of q, k, v, o 1024 x 1024, 1024 -> 4096 -> 1024;
heavy-tailed weights; ``--stack-blocks``) pruned at ratio 0.5 by layer-wise ratios from alpha,
two ways in the same run: **separate** -- ``analyze`` (spectra), ``allocate(..., "alpha")``,
then ``prune_lowrank`` (which decomposes every layer again for its eigenvectors), the last
Linear layer left dense as ``prune`` leaves the output layer; **shared** -- ``prune(model,
0.5, method="lowrank", allocation="alpha")``, whose analysis keeps each layer's Gram
reduction for the factors. Both on copies made before the timers.

Run: ``python benchmarks/prune_speedup.py [--quick] [--threads 1] [--batch 32] [--rounds 15]``
``python benchmarks/prune_speedup.py --lowrank-alpha [--stack-blocks 8]`` (that table only)
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import torch
import torch_pruning as tp
from torch import Tensor, nn

from _common import (
    fmt_seconds,
    limit_threads,
    machine_header,
    markdown_table,
    thread_report,
)
from tailwise.models import MLP, VGG, ResNet, densenet40, resnet18, resnet20
from tailwise.prune import PruneResult, layer_flops, prunable_layers, prune_channels, prune_lowrank

TARGET_RATIO = 0.5
TARGET_EFFICIENCY = 0.8


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]  # one input, without the batch dimension
    ratios: tuple[float, ...]
    batch: int


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def seeded(build: Callable[[], nn.Module], seed: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return build().eval()

    return make


def cnn_cases(quick: bool, ratios: tuple[float, ...], batch: int, seed: int) -> list[Case]:
    builds: dict[str, Callable[[], nn.Module]] = {
        "vgg11": lambda: VGG("vgg11"),
        "vgg16": lambda: VGG("vgg16"),
        "resnet18": resnet18,
        "resnet20": resnet20,
    }
    names = ["vgg11", "resnet20"] if quick else list(builds)
    return [Case(n, seeded(builds[n], seed), (3, 32, 32), ratios, batch) for n in names]


def mlp_cases(
    quick: bool, ratios: tuple[float, ...], batch: int, width: int, wide: int, seed: int
) -> list[Case]:
    def case(width: int, layers: int, ratios: tuple[float, ...]) -> Case:
        build = seeded(lambda: MLP(width, [width] * layers, 10), seed)
        return Case(f"mlp {layers}x{width}", build, (width,), ratios, batch)

    if quick:
        return [case(1024, 3, ratios)]
    # prune_lowrank runs one SVD per layer and call (float64; ~35-50 s for 4096 x 4096 on one
    # core), so the wide MLP has one hidden layer and ratio 0.5 only.
    return [case(width, 3, ratios)] + ([case(wide, 1, (TARGET_RATIO,))] if wide else [])


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def total_flops(model: nn.Module, example: Tensor) -> int:
    return sum(layer_flops(model, example, prunable_layers(model)).values())


def prune_tp(model: nn.Module, example: Tensor, ratio: float) -> nn.Module:
    """Torch-Pruning, as its README prunes a CNN: uniform ratio, group L2 magnitude."""
    head = model.get_submodule("head")
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[head],
    )
    pruner.step()
    return model


def timed_prune(
    fn: Callable[[nn.Module], object], dense: nn.Module, repeat: int
) -> tuple[float, object]:
    """Best time of ``fn`` over ``repeat`` fresh copies of ``dense`` (copies made untimed)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        work = copy.deepcopy(dense)
        start = time.perf_counter()
        result = fn(work)
        best = min(best, time.perf_counter() - start)
    return best, result


def same_model(a: nn.Module, b: nn.Module, x: Tensor) -> str:
    sa, sb = a.state_dict(), b.state_dict()
    if {k: v.shape for k, v in sa.items()} != {k: v.shape for k, v in sb.items()}:
        return "no (shapes)"
    if not all(torch.equal(sa[k], sb[k]) for k in sa):
        return "no (values)"
    with torch.inference_mode():
        return "yes" if torch.equal(a(x), b(x)) else "no (outputs)"


def race(models: dict[str, nn.Module], x: Tensor, rounds: int, seed: int) -> dict[str, list[float]]:
    """Forward times per model over ``rounds`` rounds, every model once per round, shuffled."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    with torch.inference_mode():
        for model in models.values():
            for _ in range(2):
                model(x)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def speedup(dense: list[float], pruned: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratio dense / pruned."""
    per_round = [d / p for d, p in zip(dense, pruned, strict=True)]
    if len(per_round) < 2:
        return per_round[0], per_round[0], per_round[0]
    q1, med, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
    return med, q1, q3


def fmt_speedup(stats: tuple[float, float, float]) -> str:
    med, q1, q3 = stats
    return f"{med:.2f}x ({q1:.2f}-{q3:.2f})"


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


@dataclass
class Verdict:
    name: str
    efficiency: float


def run_channels(case: Case, args: argparse.Namespace) -> tuple[list[list[object]], list[Verdict]]:
    dense = case.build()
    example = torch.randn(1, *case.sample)
    x = torch.randn(case.batch, *case.sample)
    models: dict[str, nn.Module] = {"dense": dense}
    info: dict[float, dict[str, object]] = {}
    for ratio in case.ratios:
        t_tw, res = timed_prune(
            lambda m, r=ratio: prune_channels(m, r, example, inplace=True), dense, args.prune_repeat
        )
        t_tp, tp_model = timed_prune(
            lambda m, r=ratio: prune_tp(m, example, r), dense, args.prune_repeat
        )
        assert isinstance(res, PruneResult) and isinstance(tp_model, nn.Module)
        totals = res.totals()
        tp_flops = total_flops(tp_model, example)
        same_counts = tp_flops == totals["flops_after"] and params(tp_model) == params(res.model)
        models[f"tw {ratio}"] = res.model.eval()
        models[f"tp {ratio}"] = tp_model.eval()
        info[ratio] = {
            "totals": totals,
            "t_tw": t_tw,
            "t_tp": t_tp,
            "same": same_model(res.model, tp_model, x[:2])
            + ("" if same_counts else "; FLOPs/params differ"),
        }
    times = race(models, x, args.rounds, args.seed)
    t_dense = statistics.median(times["dense"])
    rows, verdicts = [], []
    for ratio in case.ratios:
        totals = info[ratio]["totals"]
        assert isinstance(totals, dict)
        limit = totals["flops_before"] / totals["flops_after"]
        s_tw = speedup(times["dense"], times[f"tw {ratio}"])
        s_tp = speedup(times["dense"], times[f"tp {ratio}"])
        t_tw_run = statistics.median(times[f"tw {ratio}"])
        t_tp_run = statistics.median(times[f"tp {ratio}"])
        rows.append(
            [
                case.name,
                f"{ratio:.0%}",
                f"{fmt_count(params(dense))} -> {fmt_count(params(models[f'tw {ratio}']))}",
                f"{fmt_count(totals['flops_before'])} -> {fmt_count(totals['flops_after'])}",
                f"{limit:.2f}x",
                fmt_seconds(t_dense),
                fmt_seconds(t_tw_run),
                fmt_speedup(s_tw),
                f"{s_tw[0] / limit:.2f}",
                fmt_speedup(s_tp),
                f"{t_tw_run / t_tp_run:.2f}",
                fmt_seconds(float(info[ratio]["t_tw"])),  # type: ignore[arg-type]
                fmt_seconds(float(info[ratio]["t_tp"])),  # type: ignore[arg-type]
                info[ratio]["same"],
            ]
        )
        if ratio == TARGET_RATIO:
            verdicts.append(Verdict(f"{case.name} channels", s_tw[0] / limit))
    return rows, verdicts


def prune_time_cases(quick: bool, seed: int) -> list[tuple[str, Callable[[], nn.Module]]]:
    builds: dict[str, Callable[[], nn.Module]] = {
        "resnet20": resnet20,
        "resnet56": lambda: ResNet((9, 9, 9), (16, 32, 64)),
        "vgg16": lambda: VGG("vgg16"),
        "densenet40": densenet40,
    }
    names = ["resnet20", "densenet40"] if quick else list(builds)
    return [(name, seeded(builds[name], seed)) for name in names]


def forward_calls(fn: Callable[[nn.Module], object], dense: nn.Module) -> int:
    """Calls of the model's ``forward`` that ``fn`` makes on a fresh copy of ``dense``."""
    work = copy.deepcopy(dense)
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1

    handle = work.register_forward_pre_hook(count)
    try:
        fn(work)
    finally:
        handle.remove()
    return calls[0]


def run_prune_times(args: argparse.Namespace) -> list[list[object]]:
    rows = []
    example = torch.randn(1, 3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    for name, build in prune_time_cases(args.quick, args.seed):
        dense = build()

        def tailwise(m: nn.Module) -> PruneResult:
            return prune_channels(m, TARGET_RATIO, example, inplace=True)

        def peer(m: nn.Module) -> nn.Module:
            return prune_tp(m, example, TARGET_RATIO)

        t_tw, res = timed_prune(tailwise, dense, args.time_repeat)
        t_tp, tp_model = timed_prune(peer, dense, args.time_repeat)
        assert isinstance(res, PruneResult) and isinstance(tp_model, nn.Module)
        rows.append(
            [
                name,
                f"{fmt_count(params(dense))} -> {fmt_count(params(res.model))}",
                fmt_seconds(t_tw),
                fmt_seconds(t_tp),
                f"{t_tw / t_tp:.2f}",
                forward_calls(tailwise, dense),
                forward_calls(peer, dense),
                same_model(res.model, tp_model, x),
            ]
        )
    return rows


def run_lowrank_alpha(args: argparse.Namespace) -> list[list[object]]:
    """The separate and the shared way to prune the stack by alpha (module docstring)."""
    from prune_large import make_heavy_tailed, stack_model
    from tailwise.prune import allocate, prune
    from tailwise.spectral.analyze import analyze

    torch.manual_seed(args.seed)
    model = stack_model(args.stack_blocks)
    make_heavy_tailed(model, 3, args.seed)
    names = list(prunable_layers(model))
    head = names[-1]
    exclude = rf"^{head.replace('.', '[.]')}[.]weight$"
    analyze(nn.Linear(64, 32), progress=False)  # warm-up: lazy imports, thread pools

    separate_copy, shared_copy = copy.deepcopy(model), copy.deepcopy(model)
    start = time.perf_counter()
    table = analyze(model, exclude=exclude, progress=False)
    t_analyze = time.perf_counter() - start
    start = time.perf_counter()
    ratios = allocate(model, TARGET_RATIO, "alpha", analysis=table, exclude=exclude)
    t_allocate = time.perf_counter() - start
    start = time.perf_counter()
    separate = prune_lowrank(separate_copy, ratios, exclude=exclude, inplace=True, progress=False)
    t_factors = time.perf_counter() - start
    start = time.perf_counter()
    shared = prune(
        shared_copy, TARGET_RATIO, method="lowrank", allocation="alpha", inplace=True,
        progress=False,
    )  # fmt: skip
    t_shared = time.perf_counter() - start

    ours = shared.report.set_index("layer")
    theirs = separate.report.set_index("layer")
    same_ranks = sum(ours.loc[n, "note"] == theirs.loc[n, "note"] for n in ratios)
    ratio_gap = max(abs(ours.loc[n, "ratio"] - theirs.loc[n, "ratio"]) for n in ratios)
    t_separate = t_analyze + t_allocate + t_factors
    return [
        [
            f"stack x{args.stack_blocks} ({fmt_count(params(model))} params, {len(names)} Linear)",
            fmt_seconds(t_analyze),
            fmt_seconds(t_factors),
            fmt_seconds(t_separate),
            fmt_seconds(t_shared),
            f"{t_separate / t_shared:.2f}x",
            f"{same_ranks} / {len(ratios)}; max |ratio gap| {ratio_gap:.1e}",
        ]
    ]


def print_lowrank_alpha(args: argparse.Namespace) -> None:
    print(
        f"\nLow-rank pruning by alpha, ratio {TARGET_RATIO}: separate (analyze + allocate + "
        "prune_lowrank) vs shared (prune(..., method='lowrank', allocation='alpha'))\n"
    )
    header = [
        "model",
        "analyze",
        "prune_lowrank",
        "separate total",
        "shared prune()",
        "separate / shared",
        "same ranks",
    ]
    print(markdown_table(header, run_lowrank_alpha(args)))


def run_lowrank(case: Case, args: argparse.Namespace) -> tuple[list[list[object]], list[Verdict]]:
    dense = case.build()
    x = torch.randn(case.batch, *case.sample)
    head = list(prunable_layers(dense))[-1]
    exclude = rf"^{head.replace('.', '[.]')}[.]weight$"  # the 10-class head stays dense
    models: dict[str, nn.Module] = {"dense": dense}
    results: dict[float, tuple[float, PruneResult]] = {}
    for ratio in case.ratios:
        t_prune, res = timed_prune(
            lambda m, r=ratio: prune_lowrank(m, r, exclude=exclude, inplace=True), dense, 1
        )
        assert isinstance(res, PruneResult)
        models[f"tw {ratio}"] = res.model.eval()
        results[ratio] = (t_prune, res)
    times = race(models, x, args.rounds, args.seed)
    t_dense = statistics.median(times["dense"])
    rows, verdicts = [], []
    for ratio in case.ratios:
        t_prune, res = results[ratio]
        totals = res.totals()
        limit = totals["flops_before"] / totals["flops_after"]
        s_tw = speedup(times["dense"], times[f"tw {ratio}"])
        pruned = res.report[res.report["achieved"] > 0]
        rows.append(
            [
                case.name,
                f"{ratio:.0%}",
                ", ".join(sorted(set(pruned["note"]))),
                f"{fmt_count(params(dense))} -> {fmt_count(params(res.model))}",
                f"{limit:.2f}x",
                fmt_seconds(t_dense),
                fmt_seconds(statistics.median(times[f"tw {ratio}"])),
                fmt_speedup(s_tw),
                f"{s_tw[0] / limit:.2f}",
                fmt_seconds(t_prune),
            ]
        )
        if ratio == TARGET_RATIO:
            verdicts.append(Verdict(f"{case.name} low-rank", s_tw[0] / limit))
    return rows, verdicts


def print_prune_times(args: argparse.Namespace) -> None:
    print(
        f"\nPrune time at ratio {TARGET_RATIO} (prune_channels with its report vs Torch-Pruning "
        f"MetaPruner; best of {args.time_repeat}, same run)\n"
    )
    header = [
        "model",
        "params",
        "prune tw",
        "prune TP",
        "tw / TP",
        "forwards tw",
        "forwards TP",
        "same as TP",
    ]
    print(markdown_table(header, run_prune_times(args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="VGG11, ResNet20 and a small MLP (< 1 min)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--batch", type=int, default=32, help="CNN batch size")
    parser.add_argument("--mlp-batch", type=int, default=256, help="MLP batch size")
    parser.add_argument("--mlp-width", type=int, default=2048, help="width of the 3-layer MLP")
    parser.add_argument(
        "--wide", type=int, default=4096, help="also a 1-layer MLP this wide at 50%% (0: skip)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per model")
    parser.add_argument("--prune-repeat", type=int, default=2, help="best of r prune times")
    parser.add_argument(
        "--time-repeat", type=int, default=5, help="best of r for the prune-time table"
    )
    parser.add_argument(
        "--prune-time-only", action="store_true", help="only the prune-time table (about 1 min)"
    )
    parser.add_argument(
        "--lowrank-alpha", action="store_true", help="only the low-rank-by-alpha table"
    )
    parser.add_argument("--stack-blocks", type=int, default=8, help="blocks of the stack model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ratios = (0.3, 0.5, 0.7)
    if args.quick:
        args.rounds = min(args.rounds, 7)
        args.prune_repeat = 1
    limit_threads(args.threads)

    start = time.perf_counter()
    print(machine_header())
    print(f"CPU: {cpu_name()}; os.cpu_count() = {os.cpu_count()}")
    print(f"torch-pruning {version('torch-pruning')}; torch.set_num_threads({args.threads})")
    print(thread_report())
    print(
        f"CNN batch {args.batch}, MLP batch {args.mlp_batch}; {args.rounds} shuffled rounds after "
        f"2 warm-up calls per model; prune times best of {args.prune_repeat}\n"
    )

    if args.lowrank_alpha:
        print_lowrank_alpha(args)
        print(f"\n{machine_header()} (after the run; {time.perf_counter() - start:.0f} s)")
        return
    if args.prune_time_only:
        print_prune_times(args)
        print(f"\n{machine_header()} (after the run; {time.perf_counter() - start:.0f} s)")
        return

    rows, verdicts = [], []
    for case in cnn_cases(args.quick, ratios, args.batch, args.seed):
        case_rows, case_verdicts = run_channels(case, args)
        rows += case_rows
        verdicts += case_verdicts
    print("Channel pruning (prune_channels, uniform ratio; TP = Torch-Pruning MetaPruner)\n")
    header = [
        "model",
        "ratio",
        "params",
        "FLOPs/img",
        "FLOPs limit",
        "dense",
        "pruned",
        "speed-up (IQR)",
        "efficiency",
        "TP speed-up (IQR)",
        "tw/TP time",
        "prune tw",
        "prune TP",
        "same as TP",
    ]
    print(markdown_table(header, rows))
    print(
        "\nFLOPs limit = FLOPs before / after; efficiency = speed-up / limit; tw/TP time = "
        "forward time of tailwise's pruned model / Torch-Pruning's (1.00: same speed); prune "
        "tw includes tailwise's report (FLOPs before/after, output layers, rebuild edits)"
    )

    rows = []
    wide = 0 if args.quick else args.wide
    for case in mlp_cases(args.quick, ratios, args.mlp_batch, args.mlp_width, wide, args.seed):
        case_rows, case_verdicts = run_lowrank(case, args)
        rows += case_rows
        verdicts += case_verdicts
    print(
        "\nLow-rank pruning (prune_lowrank of the hidden layers; the 10-class head stays dense)\n"
    )
    header = [
        "model",
        "ratio",
        "factor pairs",
        "params",
        "FLOPs limit",
        "dense",
        "pruned",
        "speed-up (IQR)",
        "efficiency",
        "prune tw",
    ]
    print(markdown_table(header, rows))

    print_prune_times(args)

    print(f"\nTarget: speed-up >= {TARGET_EFFICIENCY:.0%} of the FLOPs limit at {TARGET_RATIO:.0%}")
    for v in verdicts:
        mark = "met" if v.efficiency >= TARGET_EFFICIENCY else "NOT met"
        print(f"- {v.name}: efficiency {v.efficiency:.3f}: {mark}")
    print(f"\n{machine_header()} (after the run; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
