"""tailwise.prune report helpers and layer selection: FLOPs, relative error, the report table,
totals, prunable layers, ratio checks and the model copy the methods work on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from tailwise.models import MLP, SmallCNN
from tailwise.prune import PruneResult, layer_flops, prunable_layers, prune_magnitude
from tailwise.prune.layers import (
    check_ratio,
    model_architecture,
    prepare,
    resolve_ratios,
    set_module,
    weight_name_to_layer,
)
from tailwise.prune.report import (
    REPORT_COLUMNS,
    LayerReport,
    dense_flops,
    layer_kind,
    make_report,
    weight_params,
)


def conv_flops(out_numel: int, in_channels: int, groups: int, kernel: tuple[int, ...]) -> int:
    """2 x MACs of a convolution: every output element costs in/groups * prod(kernel) MACs."""
    return 2 * out_numel * in_channels // groups * math.prod(kernel)


# --- layer_flops ------------------------------------------------------------------------------


def test_layer_flops_by_formula_for_conv1d_2d_3d_grouped_and_linear() -> None:
    torch.manual_seed(0)
    conv2 = nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2)
    x2 = torch.randn(2, 4, 7, 5)
    # H' = (7 + 2 - 3) // 2 + 1 = 4, W' = (5 + 2 - 2) // 2 + 1 = 3
    assert layer_flops(conv2, x2, {"c": conv2}) == {"c": conv_flops(2 * 6 * 4 * 3, 4, 2, (3, 2))}
    assert conv_flops(2 * 6 * 4 * 3, 4, 2, (3, 2)) == 3456

    conv1 = nn.Conv1d(3, 5, 4)
    assert layer_flops(conv1, torch.randn(2, 3, 10), {"c": conv1}) == {
        "c": conv_flops(2 * 5 * 7, 3, 1, (4,))
    }
    conv3 = nn.Conv3d(2, 3, 2)
    assert layer_flops(conv3, torch.randn(1, 2, 4, 4, 4), {"c": conv3}) == {
        "c": conv_flops(3 * 27, 2, 1, (2, 2, 2))
    }
    # Linear: 2 * in * out per sample; extra leading dimensions count as samples.
    linear = nn.Linear(6, 4)
    assert layer_flops(linear, torch.randn(1, 6), {"l": linear}) == {"l": 2 * 6 * 4}
    assert layer_flops(linear, torch.randn(2, 3, 6), {"l": linear}) == {"l": 2 * 6 * 4 * 6}


def test_layer_flops_of_a_small_network_and_unused_and_repeated_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    flops = layer_flops(model, torch.zeros(1, 3, 4, 4), {"0": model[0], "2": model[2]})
    assert flops == {"0": conv_flops(8 * 16, 3, 1, (3, 3)), "2": 2 * 8 * 16 * 10}

    shared = nn.Linear(5, 5)
    unused = nn.Linear(5, 5)  # registered, never called

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = shared
            self.unused = unused

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(torch.relu(self.shared(x)))

    model2 = Twice()
    flops2 = layer_flops(model2, torch.randn(3, 5), {"shared": shared, "unused": unused})
    assert flops2 == {"shared": 2 * (2 * 5 * 5 * 3), "unused": 0}


def test_layer_flops_restores_training_flag_and_counts_factorized_pairs() -> None:
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Linear(10, 3, bias=False), nn.Linear(3, 7))
    model = nn.Sequential(pair, nn.ReLU(), nn.Linear(7, 2))
    model.train()
    flops = layer_flops(model, torch.randn(2, 10), {"0": pair, "2": model[2]})
    assert flops == {"0": 2 * 2 * (10 * 3 + 3 * 7), "2": 2 * 2 * 7 * 2}
    assert model.training and pair.training
    model.eval()
    layer_flops(model, torch.randn(2, 10), {"0": pair})
    assert not model.training


def test_dense_flops_linear_and_nan_for_conv() -> None:
    assert dense_flops(nn.Linear(3, 2)) == 12.0
    assert dense_flops(nn.Linear(17, 5, bias=False)) == 2.0 * 17 * 5
    assert math.isnan(dense_flops(nn.Conv2d(3, 4, 3)))


# --- weight_params, layer_kind, make_report ----------------------------------------


def test_weight_params_and_layer_kind() -> None:
    assert weight_params(nn.Linear(3, 2)) == 8
    assert weight_params(nn.Linear(3, 2, bias=False)) == 6
    assert weight_params(nn.Conv2d(4, 6, 3, groups=2)) == 6 * 2 * 9 + 6
    assert weight_params(nn.Sequential(nn.Linear(3, 2))) == 0  # own parameters only
    assert layer_kind(nn.Conv1d(1, 1, 1)) == "conv1d"
    assert layer_kind(nn.Linear(1, 1)) == "linear"


def test_make_report_columns_and_dtypes() -> None:
    rows = [
        {
            "layer": "a",
            "kind": "linear",
            "method": "m",
            "ratio": 0.5,
            "achieved": 0.5,
            "params_before": 10,
            "params_after": 6,
            "flops_before": 16,
            "flops_after": 8,
            "rel_error": 0.1,
            "note": None,
        }
    ]
    df = make_report([LayerReport(**row) for row in rows])  # type: ignore[arg-type]
    assert tuple(df.columns) == REPORT_COLUMNS
    assert df["params_before"].dtype == np.int64 and df["params_after"].dtype == np.int64
    for col in ("ratio", "achieved", "flops_before", "flops_after", "rel_error"):
        assert df[col].dtype == np.float64
    assert df["note"].tolist() == [""]
    empty = make_report([])
    assert tuple(empty.columns) == REPORT_COLUMNS and len(empty) == 0


def _row(name: str, pb: int, pa: int, fb: float, fa: float) -> LayerReport:
    return LayerReport(
        **{  # type: ignore[arg-type]
            "layer": name,
            "kind": "linear",
            "method": "m",
            "ratio": 0.5,
            "achieved": 1 - pa / pb,
            "params_before": pb,
            "params_after": pa,
            "flops_before": fb,
            "flops_after": fa,
            "rel_error": 0.0,
            "note": "",
        }
    )


def test_totals_sums_and_ratios() -> None:
    report = make_report([_row("a", 100, 40, 200.0, 80.0), _row("b", 50, 50, 100.0, 70.0)])
    totals = PruneResult(model=nn.Identity(), report=report).totals()
    assert totals == {
        "params_before": 150.0,
        "params_after": 90.0,
        "params_ratio": pytest.approx(0.6),
        "flops_before": 300.0,
        "flops_after": 150.0,
        "flops_ratio": pytest.approx(0.5),
    }
    all_nan = make_report([_row("c", 10, 5, float("nan"), float("nan"))])
    totals = PruneResult(model=nn.Identity(), report=all_nan).totals()
    assert math.isnan(totals["flops_before"]) and math.isnan(totals["flops_ratio"])
    empty = PruneResult(model=nn.Identity(), report=make_report([])).totals()
    assert math.isnan(empty["params_ratio"])


def test_totals_match_real_parameter_counts() -> None:
    torch.manual_seed(0)
    model = MLP(12, [9, 7], 3)
    result = prune_magnitude(model, 0.5)
    totals = result.totals()
    layers = prunable_layers(model)
    assert totals["params_before"] == sum(
        p.numel() for m in layers.values() for p in m.parameters()
    )
    nonzero = sum(
        int((m.weight != 0).sum()) + m.bias.numel() for m in prunable_layers(result.model).values()
    )
    assert totals["params_after"] == nonzero
    assert isinstance(result.report, pd.DataFrame)


# --- prunable_layers and ratio handling -------------------------------------------------------


def test_prunable_layers_types_order_include_exclude_and_sharing() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(
        nn.Conv1d(1, 2, 3),
        nn.Conv3d(1, 2, 1),
        nn.ConvTranspose2d(2, 2, 3),  # not a Conv2d: not prunable
        nn.BatchNorm1d(2),
        nn.Sequential(shared, nn.ReLU(), shared),
        nn.Linear(4, 2),
    )
    assert list(prunable_layers(model)) == ["0", "1", "4.0", "5"]
    assert list(prunable_layers(model, include=r"^4\.")) == ["4.0"]
    assert list(prunable_layers(model, exclude=r"^[01]\.weight$")) == ["4.0", "5"]
    # Patterns match parameter names, as in analyze: a module name anchored at $ matches none.
    assert list(prunable_layers(model, exclude=r"^[01]$")) == ["0", "1", "4.0", "5"]
    assert list(prunable_layers(model, include="4|5", exclude="5")) == ["4.0"]
    # The root module is never listed (it has no name).
    assert prunable_layers(nn.Linear(3, 3)) == {}
    with pytest.raises(TypeError, match=r"nn\.Module"):
        prunable_layers("not a model")  # type: ignore[arg-type]


def test_check_ratio_accepts_unit_interval_and_rejects_the_rest() -> None:
    assert check_ratio(0) == 0.0 and isinstance(check_ratio(0), float)
    assert check_ratio(0.999) == 0.999
    assert check_ratio(np.float64(0.25)) == 0.25
    for bad in (1.0, 1, -0.01, float("nan"), float("inf"), -float("inf"), 2.5):
        with pytest.raises(ValueError, match=r"my ratio must be in \[0, 1\)"):
            check_ratio(bad, "my ratio")
    for wrong in (True, "0.5", None):
        with pytest.raises(TypeError, match="my ratio"):
            check_ratio(wrong, "my ratio")  # type: ignore[arg-type]


def test_resolve_ratios_float_dict_unknown_and_bad_values_name_the_layer() -> None:
    layers = prunable_layers(MLP(8, [6], 3))
    assert resolve_ratios(layers, 0.3) == {"layers.0": 0.3, "layers.1": 0.3}
    assert resolve_ratios(layers, {"layers.1": 0.2}) == {"layers.0": 0.0, "layers.1": 0.2}
    with pytest.raises(ValueError, match=r"layers\.7") as info:
        resolve_ratios(layers, {"layers.7": 0.2})
    assert "layers.0, layers.1" in str(info.value)  # the known names are listed
    for bad in (1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"ratio of layers\.1"):
            resolve_ratios(layers, {"layers.1": bad})


def test_weight_name_to_layer_and_set_module() -> None:
    assert weight_name_to_layer("features.0.conv.weight") == "features.0.conv"
    assert weight_name_to_layer("layers.0") == "layers.0"
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU())
    set_module(model, "0.0", nn.Identity())
    assert isinstance(model[0][0], nn.Identity)
    set_module(model, "1", nn.Tanh())
    assert isinstance(model[1], nn.Tanh)
    with pytest.raises(KeyError, match=r"0\.5"):
        set_module(model, "0.5", nn.Identity())


def test_model_architecture_of_tailwise_and_plain_models() -> None:
    arch = model_architecture(SmallCNN(channels=(4, 8)))
    assert arch is not None and arch["class"] == "SmallCNN" and arch["channels"] == [4, 8]
    assert model_architecture(nn.Sequential(nn.Linear(2, 2))) is None


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_copies_unless_inplace() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    copied = prepare(model, inplace=False)
    assert copied is not model and copied[0].weight is not model[0].weight
    assert torch.equal(copied[0].weight, model[0].weight)
    assert prepare(model, inplace=True) is model
    with pytest.raises(TypeError, match=r"nn\.Module"):
        prepare(object(), inplace=False)  # type: ignore[arg-type]


def test_prepare_copies_a_model_holding_computed_prune_tensors() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    # weight = weight_orig * weight_mask is computed with autograd history, which deepcopy
    # refuses; prepare recomputes it without history first, so the copy works.
    x = torch.randn(3, 4)
    expected = model(x)
    copied = prepare(model, inplace=False)
    assert copied is not model and torch_prune.is_pruned(copied)
    assert torch.equal(copied[0].weight_mask, model[0].weight_mask)
    assert torch.equal(copied(x), expected)
    assert prepare(model, inplace=True) is model
    # Pruning again on top of masks works and leaves the original untouched.
    again = prune_magnitude(model, 0.75)
    assert float((again.model[0].weight == 0).float().mean()) == 0.75
    assert float((model[0].weight == 0).float().mean()) == 0.5
    # Training still flows through weight_orig after the refresh.
    copied(x).sum().backward()
    assert copied[0].weight_orig.grad is not None


def test_prepare_copies_a_pruned_model_after_a_no_grad_forward() -> None:
    # Documented behaviour: after a forward pass under no_grad the recomputed weight is a
    # plain (leaf) tensor, so the copy succeeds and keeps the masks.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with torch.no_grad():
        model(torch.randn(1, 4))
    copied = prepare(model, inplace=False)
    assert torch_prune.is_pruned(copied)
    assert torch.equal(copied[0].weight_mask, model[0].weight_mask)
    x = torch.randn(3, 4)
    assert torch.equal(copied(x), model(x))
