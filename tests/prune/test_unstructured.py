"""tailwise.prune.prune_magnitude: masks, reports, global scope, median centring."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

from tailwise.models import MLP, VGG, SmallCNN
from tailwise.prune import prunable_layers, prune_magnitude

HAND_W = [[0.1, -0.5, 0.3, 0.2], [-0.4, 0.6, -0.05, 0.7]]


def hand_linear() -> nn.Sequential:
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(HAND_W))
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    return nn.Sequential(layer)


def set_weight(layer: nn.Module, values: list) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values, dtype=layer.weight.dtype))


# --- hand-checkable cases ---------------------------------------------------------------------


def test_half_of_a_hand_set_linear_removes_the_four_smallest_magnitudes() -> None:
    model = hand_linear()
    result = prune_magnitude(model, 0.5)
    layer = result.model[0]
    expected_mask = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    assert torch.equal(layer.weight_mask, expected_mask)
    assert torch.equal(layer.weight, torch.tensor(HAND_W) * expected_mask)
    assert torch.equal(layer.bias, torch.tensor([1.0, -1.0]))  # biases are never pruned

    row = result.report.iloc[0]
    assert row["layer"] == "0" and row["kind"] == "linear" and row["method"] == "magnitude"
    assert row["ratio"] == 0.5 and row["achieved"] == 0.5
    assert row["params_before"] == 10 and row["params_after"] == 6
    removed = [0.1, 0.3, 0.2, 0.05]
    everything = [v for r in HAND_W for v in r]
    expected_err = math.sqrt(sum(v * v for v in removed) / sum(v * v for v in everything))
    assert row["rel_error"] == pytest.approx(expected_err, rel=1e-6)
    # No example inputs: a Linear costs 2 * in * out per sample, the kept half after.
    assert row["flops_before"] == 2 * 4 * 2 and row["flops_after"] == 8.0
    assert row["note"] == ""


def test_flops_with_example_inputs_count_one_pass_over_the_batch() -> None:
    model = hand_linear()
    one = prune_magnitude(model, 0.25, example_inputs=torch.randn(1, 4)).report.iloc[0]
    assert one["flops_before"] == 16.0 and one["flops_after"] == 16.0 * 6 / 8
    three = prune_magnitude(model, 0.25, example_inputs=torch.randn(3, 4)).report.iloc[0]
    assert three["flops_before"] == 3 * 16.0 and three["flops_after"] == 3 * 12.0


def test_conv_flops_nan_without_inputs_and_by_formula_with_them() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(75, 4))
    no_inputs = prune_magnitude(model, 0.5).report
    assert math.isnan(no_inputs.iloc[0]["flops_before"])
    assert math.isnan(no_inputs.iloc[0]["flops_after"])
    assert no_inputs.iloc[1]["flops_before"] == 2 * 75 * 4
    report = prune_magnitude(model, 0.5, example_inputs=torch.randn(2, 2, 5, 5)).report
    conv_before = 2 * (2 * 3 * 25) * (2 * 9)  # 2 * out_numel * in/groups * k * k
    n_weight = 3 * 2 * 9
    kept = n_weight - math.floor(0.5 * n_weight)
    assert report.iloc[0]["flops_before"] == conv_before
    assert report.iloc[0]["flops_after"] == pytest.approx(conv_before * kept / n_weight)
    assert report.iloc[1]["flops_before"] == 2 * 2 * 75 * 4


def test_ties_are_broken_by_position() -> None:
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    set_weight(model[0], [[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]])
    mask = prune_magnitude(model, 0.5).model[0].weight_mask
    assert torch.equal(mask, torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    set_weight(model[0], [[0.2, 0.1, -0.1, 0.3], [0.1, 0.5, 0.6, 0.7]])
    mask = prune_magnitude(model, 0.25).model[0].weight_mask  # floor(0.25 * 8) = 2
    assert torch.equal(mask, torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    mask = prune_magnitude(model, 0.3).model[0].weight_mask  # floor(2.4) = 2 as well
    assert torch.equal(mask, torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    mask = prune_magnitude(model, 0.375).model[0].weight_mask  # 3: the third 0.1 goes too
    assert torch.equal(mask, torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]]))


def test_ratio_zero_leaves_layers_unmasked() -> None:
    model = hand_linear()
    result = prune_magnitude(model, 0.0)
    assert not torch_prune.is_pruned(result.model)
    row = result.report.iloc[0]
    assert row["achieved"] == 0.0 and row["params_after"] == 10 and row["rel_error"] == 0.0


# --- global scope -----------------------------------------------------------------------------


def test_global_scope_uses_one_threshold_across_layers() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[4].weight.mul_(4.0)  # the last layer should keep more than the others
    ratio = 0.6
    weights = {n: m.weight.detach().numpy().copy() for n, m in prunable_layers(model).items()}
    everything = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    remove = math.floor(ratio * everything.size)
    threshold = np.sort(everything)[remove - 1]
    result = prune_magnitude(model, ratio, scope="global")
    assert result.report["method"].eq("global-magnitude").all()
    achieved = []
    for name, module in prunable_layers(result.model).items():
        expected = (np.abs(weights[name]) > threshold).astype(np.float32)
        np.testing.assert_array_equal(module.weight_mask.numpy(), expected)
        achieved.append(float(result.report.set_index("layer").loc[name, "achieved"]))
    # One threshold, not one ratio per layer: the layers lose different fractions.
    assert len(set(achieved)) > 1
    assert achieved[2] < ratio
    total_removed = sum(
        int((m.weight_mask == 0).sum()) for m in result.model if hasattr(m, "weight_mask")
    )
    assert total_removed == remove
    assert (result.report["note"] == "").all()


def test_global_scope_never_empties_a_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    with torch.no_grad():
        model[0].weight.mul_(1e-3)
        model[2].weight.add_(torch.sign(model[2].weight))  # all |w| >= 1
    biggest = int(model[0].weight.abs().flatten().argmax())
    result = prune_magnitude(model, 0.5, scope="global")
    mask0 = result.model[0].weight_mask.flatten()
    assert int(mask0.sum()) == 1 and mask0[biggest] == 1
    assert not hasattr(result.model[2], "weight_mask") or bool(result.model[2].weight_mask.all())
    report = result.report.set_index("layer")
    assert "kept its largest weight" in report.loc["0", "note"]
    assert report.loc["2", "note"] == ""
    assert report.loc["0", "achieved"] == 15 / 16 and report.loc["2", "achieved"] == 0.0


def test_global_scope_rejects_a_dict_and_unknown_scope() -> None:
    model = hand_linear()
    with pytest.raises(TypeError, match="one float"):
        prune_magnitude(model, {"0": 0.5}, scope="global")
    with pytest.raises(ValueError, match="scope"):
        prune_magnitude(model, 0.5, scope="network")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_magnitude(model, 1.0, scope="global")


# --- median centring --------------------------------------------------------------------------


def test_median_centring_by_hand() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    w = [[1.0, 2.0, 3.0], [4.0, 10.0, -6.0]]
    set_weight(model[0], w)
    # Lower median of (-6, 1, 2, 3, 4, 10) is 2; |w - 2| = (1, 0, 1, 2, 8, 8); remove the 3
    # smallest (ties by position): entries 1, 0 and 2, which become the median.
    result = prune_magnitude(model, 0.5, center=True)
    layer = result.model[0]
    assert torch.equal(layer.weight, torch.tensor([[2.0, 2.0, 2.0], [4.0, 10.0, -6.0]]))
    assert torch.equal(layer.weight_mask, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    row = result.report.iloc[0]
    assert row["achieved"] == 0.5 and row["params_after"] == 8 - 3
    assert row["rel_error"] == pytest.approx(math.sqrt(2.0 / 166.0), rel=1e-6)
    # Without centring the three smallest |w| (1, 2, 3) go to zero instead.
    plain = prune_magnitude(model, 0.5).model[0].weight
    assert torch.equal(plain, torch.tensor([[0.0, 0.0, 0.0], [4.0, 10.0, -6.0]]))


def test_median_centring_ranks_by_distance_to_the_median() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 8))
    with torch.no_grad():
        model[0].weight.add_(0.7)  # median far from zero: centring changes the ranking
    w = model[0].weight.detach().clone()
    median = float(w.flatten().median())
    result = prune_magnitude(model, 0.4, center=True)
    layer = result.model[0]
    pruned = layer.weight_mask == 0
    assert int(pruned.sum()) == math.floor(0.4 * 80)
    assert bool((layer.weight[pruned] == median).all())
    assert torch.equal(layer.weight[~pruned], w[~pruned])
    distance = (w - median).abs()
    assert float(distance[pruned].max()) <= float(distance[~pruned].min())
    # torch.nn.utils.prune.remove keeps the median-filled values.
    before = layer.weight.detach().clone()
    torch_prune.remove(layer, "weight")
    assert torch.equal(layer.weight, before)


# --- masks are torch.nn.utils.prune masks; copies ---------------------------------------------


def test_masks_are_torch_prune_masks_and_remove_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(4, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    result = prune_magnitude(model, 0.7)
    pruned = result.model.eval()
    assert torch_prune.is_pruned(pruned)
    for name, module in prunable_layers(pruned).items():
        assert isinstance(module.weight_orig, nn.Parameter), name
        assert module.weight_mask.shape == module.weight.shape
        assert int((module.weight_mask == 0).sum()) == math.floor(0.7 * module.weight.numel())
    with torch.no_grad():
        y = pruned(x)
        for module in prunable_layers(pruned).values():
            torch_prune.remove(module, "weight")
        assert not torch_prune.is_pruned(pruned)
        assert torch.equal(pruned(x), y)
    assert not torch.equal(y, model(x))


def test_input_model_untouched_unless_inplace() -> None:
    torch.manual_seed(0)
    model = MLP(8, [6], 3)
    architecture = model.architecture()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_magnitude(model, 0.5)
    assert result.model is not model
    assert not torch_prune.is_pruned(model)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    same = prune_magnitude(model, 0.5, inplace=True)
    assert same.model is model and torch_prune.is_pruned(model)
    assert result.architecture == architecture == same.architecture


def test_pruning_a_masked_tailwise_model_again_in_place() -> None:
    # BUG (library): model_architecture() calls MLP.architecture(), whose consistency check
    # compares state_dict keys and trips over torch.nn.utils.prune's weight_orig/weight_mask,
    # so any second pruning of a masked tailwise model raises a misleading ValueError.
    torch.manual_seed(0)
    model = MLP(8, [6], 3)
    architecture = model.architecture()
    prune_magnitude(model, 0.5, inplace=True)
    again = prune_magnitude(model, 0.75, inplace=True)
    assert again.architecture == architecture
    for module in model.layers:
        assert int((module.weight == 0).sum()) == math.floor(0.75 * module.weight.numel())


def test_dict_ratios_prune_only_the_named_layers() -> None:
    torch.manual_seed(0)
    model = MLP(8, [6, 5], 3)
    result = prune_magnitude(model, {"layers.1": 0.5})
    layers = prunable_layers(result.model)
    assert not hasattr(layers["layers.0"], "weight_mask")
    assert not hasattr(layers["layers.2"], "weight_mask")
    assert int((layers["layers.1"].weight_mask == 0).sum()) == 15
    report = result.report.set_index("layer")
    assert report["ratio"].to_dict() == {"layers.0": 0.0, "layers.1": 0.5, "layers.2": 0.0}
    assert report["achieved"].to_dict() == {"layers.0": 0.0, "layers.1": 0.5, "layers.2": 0.0}


def test_include_exclude_select_layers() -> None:
    torch.manual_seed(0)
    model = VGG((4, "M", 8, "M"), image_size=8)
    result = prune_magnitude(model, 0.5, exclude="head")
    assert list(result.report["layer"]) == ["features.0.conv", "features.1.conv"]
    assert not hasattr(result.model.head, "weight_mask")
    result = prune_magnitude(model, 0.5, include=r"features\.1")
    assert list(result.report["layer"]) == ["features.1.conv"]
    with pytest.raises(ValueError, match="no Linear/Conv layer"):
        prune_magnitude(model, 0.5, include="nothing-matches")


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan")])
def test_bad_ratios_raise_and_name_the_layer(bad: float) -> None:
    model = MLP(8, [6], 3)
    with pytest.raises(ValueError, match=r"ratio of layers\.1"):
        prune_magnitude(model, {"layers.0": 0.2, "layers.1": bad})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_magnitude(model, bad)


def test_unknown_layer_names_raise_and_name_the_layer() -> None:
    with pytest.raises(ValueError, match=r"layers\.5") as info:
        prune_magnitude(MLP(8, [6], 3), {"layers.5": 0.2})
    assert "layers.0" in str(info.value)  # known names listed


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**16),
)
def test_property_each_layer_loses_floor_ratio_times_n_smallest(
    sizes: list[int], ratio: float, seed: int
) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(*(nn.Linear(a, b) for a, b in itertools.pairwise(sizes)))
    result = prune_magnitude(model, ratio)
    for (name, module), original in zip(
        prunable_layers(result.model).items(), prunable_layers(model).values(), strict=True
    ):
        n = original.weight.numel()
        expected = math.floor(ratio * n)
        if expected == 0:
            assert bool(getattr(module, "weight_mask", torch.ones(1)).all()), name
            continue
        pruned = module.weight_mask == 0
        assert int(pruned.sum()) == expected, name
        w = original.weight.detach().abs()
        if expected < n:
            assert float(w[pruned].max()) <= float(w[~pruned].min())
        row = result.report.set_index("layer").loc[name]
        assert row["achieved"] == expected / n
        assert row["params_after"] == n + original.bias.numel() - expected


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 10), min_size=2, max_size=4),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**16),
)
def test_property_global_scope_removes_floor_ratio_times_total(
    sizes: list[int], ratio: float, seed: int
) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(*(nn.Linear(a, b) for a, b in itertools.pairwise(sizes)))
    total = sum(m.weight.numel() for m in model)
    result = prune_magnitude(model, ratio, scope="global")
    removed = [int((m.weight_mask == 0).sum()) for m in result.model]
    rescued = int((result.report["note"] != "").sum())
    # Each rescued layer (would have been emptied) keeps exactly one weight back.
    assert sum(removed) == math.floor(ratio * total) - rescued
    assert all(int(m.weight_mask.sum()) >= 1 for m in result.model)
