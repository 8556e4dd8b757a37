r"""``include`` / ``exclude`` mean one thing everywhere: regular expressions searched in
parameter names (the Glossary of DESIGN.md).

One parametrized test over every consumer: the layers ``analyze`` reports (status ok, its
``layer`` column), those ``analyze_tails`` reports, and those the pruning functions prune (the
report's ``layer`` column) are the same set for the same patterns. Before issue 8,
``include=r"layers\.0\.weight$"`` gave one row in ``analyze`` and "no Linear/Conv layer to
prune" in ``prune_magnitude``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd
import pytest
import torch
from torch import nn

from tailwise import UsageError, analyze, analyze_tails
from tailwise.models import MLP, SmallCNN
from tailwise.prune import (
    allocate,
    prunable_layers,
    prune,
    prune_lowrank,
    prune_magnitude,
    prune_nodes,
)

Pattern = str | re.Pattern[str] | None


def seeded(make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


MODELS: dict[str, Callable[[], nn.Module]] = {
    # layers.0 / layers.1 / layers.2, each with a bias
    "mlp": lambda: seeded(lambda: MLP(16, [32, 24], 10)),
    # features.{0,1}.conv (no bias), features.{0,1}.bn (1-D weight and bias), head
    "cnn": lambda: seeded(lambda: SmallCNN(channels=(8, 16))),
}

# (model, include, exclude, the layers every consumer selects)
CASES: list[tuple[str, Pattern, Pattern, set[str]]] = [
    ("mlp", None, None, {"layers.0", "layers.1", "layers.2"}),
    ("mlp", r"layers\.0\.weight$", None, {"layers.0"}),  # the Done-when example
    ("mlp", r"layers\.0", None, {"layers.0"}),
    ("mlp", re.compile(r"layers\.[12]"), None, {"layers.1", "layers.2"}),
    ("mlp", r"\.bias$", None, set()),  # a bias is no weight matrix
    ("mlp", None, r"layers\.1\.weight$", {"layers.0", "layers.2"}),
    ("mlp", None, r"\.bias$", {"layers.0", "layers.1", "layers.2"}),  # weights stay
    ("mlp", "layers", r"layers\.2", {"layers.0", "layers.1"}),
    ("mlp", r"^layers\.0\.weight$", "layers", set()),  # exclude wins
    ("mlp", "weight", None, {"layers.0", "layers.1", "layers.2"}),
    ("cnn", None, None, {"features.0.conv", "features.1.conv", "head"}),
    ("cnn", "conv", None, {"features.0.conv", "features.1.conv"}),
    ("cnn", r"features\.1", None, {"features.1.conv"}),  # not the BatchNorm weight
    ("cnn", "bn", None, set()),  # 1-D BatchNorm weights are not layers
    ("cnn", None, "conv", {"head"}),
    ("cnn", "features", r"\.0\.", {"features.1.conv"}),
    ("cnn", r"^head\.weight$", None, {"head"}),
    ("cnn", r"\.bias$", None, set()),
]


def analyzed(model: nn.Module, include: Pattern, exclude: Pattern) -> set[str]:
    try:
        df = analyze(model, include=include, exclude=exclude, progress=False, workers=1)
    except UsageError as exc:  # the patterns select no tensor at all
        assert "no tensor" in str(exc)
        return set()
    return ok_layers(df)


def tails(model: nn.Module, include: Pattern, exclude: Pattern) -> set[str]:
    try:
        df = analyze_tails(model, include=include, exclude=exclude, progress=False, permutations=0)
    except UsageError as exc:
        assert "no tensor" in str(exc)
        return set()
    return ok_layers(df)


def ok_layers(df: pd.DataFrame) -> set[str]:
    ok = df[df["status"] == "ok"]
    assert ok["name"].str.endswith(".weight").all()
    assert list(ok["layer"]) == [name.removesuffix(".weight") for name in ok["name"]]
    return set(ok["layer"])


def pruned_by(prune_fn: Callable[..., object]) -> Callable[[nn.Module, Pattern, Pattern], set[str]]:
    """The layers a pruning function reports, and checks each was pruned; an empty set when
    it refuses (``UsageError``: no layer matches)."""

    def run(model: nn.Module, include: Pattern, exclude: Pattern) -> set[str]:
        try:
            result = prune_fn(model, 0.5, include=include, exclude=exclude, progress=False)
        except UsageError as exc:
            assert "no Linear/Conv layer to prune" in str(exc)
            return set()
        report = result.report  # type: ignore[attr-defined]
        assert (report["achieved"] > 0).all(), report
        return set(report["layer"])

    return run


CONSUMERS: dict[str, Callable[[nn.Module, Pattern, Pattern], set[str]]] = {
    "analyze": analyzed,
    "analyze_tails": tails,
    "prune_magnitude": pruned_by(prune_magnitude),
    "prune_nodes": pruned_by(prune_nodes),
    "prune_lowrank": pruned_by(prune_lowrank),
    "prune(magnitude, protect_outputs=False)": pruned_by(
        lambda m, r, **kw: prune(m, r, protect_outputs=False, **kw)
    ),
    "prune(global-magnitude, protect_outputs=False)": pruned_by(
        lambda m, r, **kw: prune(m, r, method="global-magnitude", protect_outputs=False, **kw)
    ),
    "prunable_layers": lambda m, include, exclude: set(
        prunable_layers(m, include=include, exclude=exclude)
    ),
    "allocate": lambda m, include, exclude: set(
        allocate(m, 0.5, "erk", include=include, exclude=exclude)
    ),
}


def case_id(case: tuple[str, Pattern, Pattern, set[str]]) -> str:
    model, include, exclude, _ = case

    def show(p: Pattern) -> str:
        return "-" if p is None else (p.pattern if isinstance(p, re.Pattern) else p)

    return f"{model}:include={show(include)}:exclude={show(exclude)}"


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_every_consumer_selects_the_same_layers(
    consumer: str, case: tuple[str, Pattern, Pattern, set[str]]
) -> None:
    model_name, include, exclude, expected = case
    model = MODELS[model_name]()
    assert CONSUMERS[consumer](model, include, exclude) == expected


def test_done_when_prune_magnitude_prunes_the_layer_analyze_reports() -> None:
    model = MODELS["mlp"]()
    include = r"layers\.0\.weight$"
    report = analyze(model, include=include, progress=False)
    assert list(report["name"]) == ["layers.0.weight"]
    result = prune_magnitude(model, 0.5, include=include, progress=False)
    assert list(result.report["layer"]) == list(report["layer"]) == ["layers.0"]
    assert result.report.loc[0, "achieved"] == pytest.approx(0.5)


@pytest.mark.parametrize("which", ["include", "exclude"])
@pytest.mark.parametrize(
    "call",
    [
        lambda m, **kw: analyze(m, progress=False, **kw),
        lambda m, **kw: analyze_tails(m, progress=False, **kw),
        lambda m, **kw: prune_magnitude(m, 0.5, progress=False, **kw),
        lambda m, **kw: prune(m, 0.5, progress=False, **kw),
        lambda m, **kw: prunable_layers(m, **kw),
        lambda m, **kw: allocate(m, 0.5, **kw),
    ],
    ids=["analyze", "analyze_tails", "prune_magnitude", "prune", "prunable_layers", "allocate"],
)
def test_an_invalid_regex_is_a_usage_error_everywhere(
    call: Callable[..., object], which: str
) -> None:
    with pytest.raises(UsageError, match=which) as caught:
        call(MODELS["mlp"](), **{which: "layers.(0"})
    assert "layers.(0" in str(caught.value)


@pytest.mark.parametrize(
    "prune_fn",
    [
        lambda m, **kw: prune_magnitude(m, 0.5, progress=False, **kw),
        lambda m, **kw: prune_nodes(m, 0.5, progress=False, **kw),
        lambda m, **kw: prune_lowrank(m, 0.5, progress=False, **kw),
        lambda m, **kw: prune(m, 0.5, progress=False, **kw),
        lambda m, **kw: prune(m, 0.5, method="lowrank", allocation="alpha", progress=False, **kw),
    ],
    ids=["prune_magnitude", "prune_nodes", "prune_lowrank", "prune", "prune-lowrank-alpha"],
)
def test_include_matching_nothing_is_a_usage_error_when_pruning(
    prune_fn: Callable[..., object],
) -> None:
    with pytest.raises(UsageError, match="no Linear/Conv layer to prune") as caught:
        prune_fn(MODELS["mlp"](), include="no_such_layer")
    assert "no_such_layer" in str(caught.value)
