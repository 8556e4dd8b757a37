"""Layers holding NaN/Inf are skipped with a reason, never pruned into garbage (issue 9 §4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from tailwise.models import MLP, SmallCNN
from tailwise.prune import (
    PruneResult,
    prune,
    prune_channels,
    prune_lowrank,
    prune_magnitude,
    prune_nodes,
)


def poisoned_mlp(value: float) -> MLP:
    torch.manual_seed(0)
    model = MLP(16, [32, 32], 4)
    with torch.no_grad():
        linear(model, "layers.1").weight[3, 5] = value
    return model


def linear(model: nn.Module, name: str) -> nn.Linear:
    found = model.get_submodule(name)
    assert isinstance(found, nn.Linear)
    return found


def conv_weight(model: nn.Module, name: str) -> torch.Tensor:
    found = model.get_submodule(name)
    assert isinstance(found, nn.Conv2d)
    return found.weight


METHODS: dict[str, Callable[[nn.Module], PruneResult]] = {
    "magnitude": lambda m: prune_magnitude(m, 0.5, progress=False),
    "global": lambda m: prune_magnitude(m, 0.5, scope="global", progress=False),
    "node": lambda m: prune_nodes(m, 0.5, progress=False),
    "lowrank": lambda m: prune_lowrank(m, 0.5, progress=False),
    "lamp": lambda m: prune(m, 0.5, allocation="lamp", progress=False, protect_outputs=False),
}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_nonfinite_layer_is_skipped_with_a_note(method: str, value: float) -> None:
    model = poisoned_mlp(value)
    original = linear(model, "layers.1").weight.detach().clone()
    result = METHODS[method](model)
    report = result.report.set_index("layer")
    row = report.loc["layers.1"]
    assert row["note"].startswith("skipped: weight holds 1 NaN/Inf entries"), row["note"]
    assert row["achieved"] == 0.0
    assert row["params_after"] == row["params_before"]
    # The layer is untouched (a module, not a factor pair), NaN where it was.
    kept = linear(result.model, "layers.1")
    assert torch.equal(kept.weight.detach().isnan(), original.isnan())
    finite = original.isfinite()
    assert torch.equal(kept.weight.detach()[finite], original[finite])
    # The other layers are pruned and their errors are finite numbers.
    assert report.loc["layers.0", "achieved"] > 0.3
    assert report["rel_error"].map(lambda e: e == e).all()
    assert float(report.loc["layers.0", "rel_error"]) > 0


def test_nonfinite_conv_is_skipped_by_channel_pruning() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        conv_weight(model, convs[0])[0, 0, 0, 0] = float("nan")
    result = prune_channels(model, 0.5, torch.zeros(1, 1, 8, 8))
    row = result.report.set_index("layer").loc[convs[0]]
    assert row["note"].startswith("skipped: weight holds 1 NaN/Inf entries")
    assert conv_weight(result.model, convs[0]).shape[0] == conv_weight(model, convs[0]).shape[0]
