"""tailwise.train.splitting.measures: sparsity and channel sparsity counted by hand."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tailwise import UsageError
from tailwise.models import SmallCNN
from tailwise.prune import prune_magnitude
from tailwise.train.splitting import (
    CHANNEL_COLUMNS,
    SPARSITY_COLUMNS,
    channel_sparsity,
    sparsity,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3),  # 4 x 2 x 3 x 3 = 72 weights
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4, 3),  # 3 x 4 = 12 weights
    )
    with torch.no_grad():
        net[0].weight[1] = 0.0  # one whole channel: 18 zeros
        net[0].weight[2, 0, 0, 0] = 0.0  # one more zero, channel 2 stays alive
        net[0].bias.zero_()  # biases are not counted
        net[4].weight[:, 0] = 0.0  # 3 zeros, no zero row
    return net


def test_sparsity_counts_exact_zeros_per_layer_and_pooled() -> None:
    table = sparsity(_net())
    assert tuple(table.columns) == SPARSITY_COLUMNS
    assert list(table["layer"]) == ["0", "4", "total"]
    assert list(table["name"]) == ["0.weight", "4.weight", ""]
    assert list(table["kind"])[:2] == ["conv2d", "linear"]
    assert list(table["numel"]) == [72, 12, 84]
    assert list(table["zeros"]) == [19, 3, 22]
    assert table["sparsity"].tolist() == pytest.approx([19 / 72, 3 / 12, 22 / 84])


def test_channel_sparsity_counts_channels_below_tol() -> None:
    net = _net()
    with torch.no_grad():
        net[4].weight[1] = 1e-17  # row norm 2e-17 < 1e-15: a zero channel by 002's rule
        net[4].weight[2] = 1e-15  # norm 2e-15: alive
    table = channel_sparsity(net)
    assert tuple(table.columns) == CHANNEL_COLUMNS
    assert list(table["channels"]) == [4, 3, 7]
    assert list(table["zero_channels"]) == [1, 1, 2]
    assert table["channel_sparsity"].tolist() == pytest.approx([1 / 4, 1 / 3, 2 / 7])
    # A larger tol counts the 2e-15 row too; selection by weight name.
    assert channel_sparsity(net, tol=1e-14)["zero_channels"].tolist() == [1, 2, 3]
    only_conv = channel_sparsity(net, include=r"^0\.")
    assert list(only_conv["layer"]) == ["0", "total"]
    assert list(sparsity(net, exclude=r"^0\.")["layer"]) == ["4", "total"]


def test_masked_layers_are_measured_on_their_effective_weights() -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    pruned = prune_magnitude(model, 0.5).model
    # Train the trained tensor on: the cached `weight` is stale until the next forward pass,
    # but the measure recomputes weight_orig * weight_mask.
    with torch.no_grad():
        for module in pruned.modules():
            if hasattr(module, "weight_orig"):
                module.weight_orig.add_(1.0)
    table = sparsity(pruned).set_index("layer")
    for layer in ("features.0.conv", "features.1.conv", "head"):
        module = pruned.get_submodule(layer)
        assert table.loc[layer, "zeros"] == int((module.weight_mask == 0).sum())
    assert float(table.loc["total", "sparsity"]) == pytest.approx(0.5, abs=0.01)


def test_a_model_without_layers_has_an_empty_total() -> None:
    table = sparsity(nn.Sequential(nn.ReLU()))
    assert list(table["layer"]) == ["total"] and table["numel"].tolist() == [0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sparsity("model"), "sparsity: expected an nn.Module, got str"),
        (lambda: channel_sparsity(_net(), tol=0), "channel_sparsity: tol must be a number > 0"),
        (lambda: channel_sparsity(_net(), tol="1e-15"), "channel_sparsity: tol must be a number"),
    ],
)
def test_bad_arguments_are_usage_errors(call: object, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        call()  # type: ignore[operator]
