"""Channel pruning runs one traced forward pass before pruning and one after (issue 13 §3):
what the report needs comes from those passes, checked against separate dense computations
(``layer_flops`` of the original and of the pruned model, the modules' own shapes)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tailwise.models import SmallCNN, densenet40, resnet20
from tailwise.prune import layer_flops, prunable_layers, prune_channels, remove_zero_channels
from tailwise.prune.report import flatten_tensors, trace_forward


def forward_calls(model: nn.Module) -> list[int]:
    """A counter of ``model.forward`` calls (a one-element list, updated in place)."""
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1

    model.register_forward_pre_hook(count)
    return calls


@pytest.mark.parametrize(
    ("build", "sample"),
    [(resnet20, (3, 32, 32)), (lambda: SmallCNN(channels=(16, 32)), (1, 8, 8))],
)
def test_prune_channels_traces_twice_and_torch_pruning_once(
    build: Callable[[], nn.Module], sample: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build().eval()
    original = copy.deepcopy(model)
    example = torch.randn(1, *sample)
    calls = forward_calls(model)
    result = prune_channels(model, 0.5, example, inplace=True)
    assert calls[0] == 3  # before, Torch-Pruning's trace, after
    report = result.report.set_index("layer")
    before = layer_flops(original, example, prunable_layers(original))
    after = layer_flops(result.model, example, prunable_layers(result.model))
    for name in before:
        assert report.loc[name, "flops_before"] == before[name]
        assert report.loc[name, "flops_after"] == after[name]
    assert result.model(example).shape == original(example).shape


def test_nothing_to_prune_is_one_pass() -> None:
    model = SmallCNN(channels=(8, 8)).eval()
    calls = forward_calls(model)
    result = prune_channels(model, 0.0, torch.zeros(1, 1, 8, 8), inplace=True)
    assert calls[0] == 1
    assert (result.report["flops_after"] == result.report["flops_before"]).all()


def test_zero_channel_removal_shares_the_passes_too() -> None:
    model = SmallCNN(channels=(8, 16)).eval()
    with torch.no_grad():
        model.features[0].conv.weight[[1, 5]] = 0.0
    original = copy.deepcopy(model)
    example = torch.randn(2, 1, 8, 8)
    calls = forward_calls(model)
    result = remove_zero_channels(model, example, inplace=True)
    assert calls[0] == 3  # before, the dependency graph's trace, after
    assert result.model.features[0].conv.out_channels == 6
    after = layer_flops(result.model, example, prunable_layers(result.model))
    before = layer_flops(original, example, prunable_layers(original))
    report = result.report.set_index("layer")
    assert report["flops_after"].to_dict() == {k: float(v) for k, v in after.items()}
    assert report["flops_before"].to_dict() == {k: float(v) for k, v in before.items()}


def test_trace_forward_collects_shapes_flops_and_output_layers() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 5)
            self.left = nn.Linear(5, 3)
            self.right = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> dict[str, object]:
            h = torch.relu(self.body(x))
            return {"a": torch.log_softmax(self.left(h), dim=1), "b": (self.right(h), 7)}

    model = TwoHeads().train()
    layers = dict(model.named_children())
    traced = trace_forward(model, torch.zeros(4, 6), layers, find_output_layers=True)
    assert traced.output_shapes == [torch.Size([4, 3]), torch.Size([4, 2])]
    assert traced.flops == {"body": 2 * 4 * 5 * 6, "left": 2 * 4 * 3 * 5, "right": 2 * 4 * 2 * 5}
    assert traced.output_layers == ["left", "right"]
    assert model.training  # restored
    plain = trace_forward(model, torch.zeros(4, 6), layers)
    assert plain.output_layers == [] and plain.flops == traced.flops


def test_flatten_tensors_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert [t.numel() for t in flatten_tensors({"x": [a, (b, "skip")], "y": c})] == [1, 2, 3]


def test_densenet_report_from_the_shared_passes() -> None:
    torch.manual_seed(1)
    model = densenet40().eval()
    example = torch.randn(1, 3, 32, 32)
    original = copy.deepcopy(model)
    result = prune_channels(model, 0.3, example, inplace=True)
    totals = result.totals()
    assert totals["flops_before"] == sum(
        layer_flops(original, example, prunable_layers(original)).values()
    )
    assert totals["flops_after"] == sum(
        layer_flops(result.model, example, prunable_layers(result.model)).values()
    )
