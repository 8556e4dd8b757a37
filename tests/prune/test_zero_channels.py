"""tailwise.prune.remove_zero_channels: what structured training zeroed is physically removed.

Oracles: the zeroed channels are known by construction; the compact model's outputs equal the
sparse model's where nothing adds a constant after a zero channel, and differ by exactly the
BatchNorm shift where one does (the documented limitation).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from typer.testing import CliRunner

from tailwise import UsageError
from tailwise.cli import app
from tailwise.models import MLP, SmallCNN, resnet20
from tailwise.prune import load_pruned, prune, remove_zero_channels, save_pruned
from tailwise.train.splitting import RGSM, channel_sparsity


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP(8, [16, 12], 3).double().eval()


def zero_rows(layer: nn.Module, rows: list[int], bias: bool = True) -> None:
    with torch.no_grad():
        layer.weight[rows] = 0.0
        if bias and layer.bias is not None:
            layer.bias[rows] = 0.0


def test_removes_exactly_the_zero_channels_and_keeps_the_function() -> None:
    net = mlp()
    zero_rows(net.layers[0], [2, 5, 7])
    zero_rows(net.layers[1], [0, 11])
    x = torch.randn(5, 8, dtype=torch.float64)
    result = remove_zero_channels(net, x)
    small = result.model
    assert (small.layers[0].out_features, small.layers[1].in_features) == (13, 13)
    assert (small.layers[1].out_features, small.layers[2].in_features) == (10, 10)
    assert small.layers[2].out_features == 3
    assert (small(x) - net(x)).abs().max() < 1e-12
    # the kept rows are the non-zero ones, in order
    keep = [i for i in range(16) if i not in (2, 5, 7)]
    assert torch.equal(small.layers[0].weight, net.layers[0].weight[keep])
    ratios = dict(zip(result.report["layer"], result.report["ratio"], strict=True))
    assert ratios == pytest.approx({"layers.0": 3 / 16, "layers.1": 2 / 12, "layers.2": 0.0})
    assert net.layers[0].out_features == 16  # copied, not changed in place


def test_a_model_without_zero_channels_comes_back_unchanged() -> None:
    net = mlp()
    x = torch.randn(2, 8, dtype=torch.float64)
    result = remove_zero_channels(net, x)
    assert [m.out_features for m in result.model.layers] == [16, 12, 3]
    assert not result.edits


def test_a_layer_keeps_one_channel_and_outputs_keep_all() -> None:
    net = mlp()
    zero_rows(net.layers[0], list(range(16)))
    zero_rows(net.layers[2], [1])  # the classifier: its rows are classes
    result = remove_zero_channels(net, torch.zeros(1, 8, dtype=torch.float64))
    assert result.model.layers[0].out_features == 1
    assert result.model.layers[2].out_features == 3


def test_tolerance_decides_what_is_zero() -> None:
    net = mlp()
    with torch.no_grad():
        net.layers[0].weight[3] = 1e-20
        net.layers[0].weight[4] = 1e-3
    x = torch.zeros(1, 8, dtype=torch.float64)
    assert remove_zero_channels(net, x).model.layers[0].out_features == 15
    assert remove_zero_channels(net, x, tol=1e-2).model.layers[0].out_features == 14
    with pytest.raises(UsageError, match="tol must be"):
        remove_zero_channels(net, x, tol=0.0)


def test_coupled_channels_go_only_when_zero_in_every_coupled_layer() -> None:
    torch.manual_seed(0)
    net = resnet20().eval()
    # Stage 0's residual sums couple stem.conv and every stages.0.b.conv2.
    coupled = ["stem.conv"] + [f"stages.0.{b}.conv2" for b in range(3)]
    modules = dict(net.named_modules())
    for name in coupled:
        zero_rows(modules[name], [3])  # zero in every coupled layer: removable
    zero_rows(modules["stages.0.0.conv2"], [9])  # zero in one coupled layer only: kept
    zero_rows(modules["stages.0.1.conv1"], [4, 6])  # an inner convolution: removable
    result = remove_zero_channels(net, torch.randn(2, 3, 16, 16))
    small = dict(result.model.named_modules())
    for name in coupled:
        assert small[name].out_channels == 15, name
    assert small["stages.0.1.conv1"].out_channels == 14
    assert small["stages.0.1.conv2"].in_channels == 14
    assert small["stages.0.2.conv1"].out_channels == 16


def test_batchnorm_after_a_zero_channel_shifts_outputs_as_documented() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16)).double().eval()
    with torch.no_grad():
        for bn in (net.features[0].bn,):
            bn.running_mean.uniform_(-1, 1)
            bn.bias.uniform_(-1, 1)
    zero_rows(net.features[0].conv, [1, 3])
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    shifted = remove_zero_channels(net, x).model
    assert shifted.features[0].conv.out_channels == 6
    assert (shifted(x) - net(x)).abs().max() > 1e-6  # the BN constant of channels 1, 3 is gone
    with torch.no_grad():  # make that constant zero: then removal is exact
        net.features[0].bn.bias[[1, 3]] = 0.0
        net.features[0].bn.running_mean[[1, 3]] = 0.0
    exact = remove_zero_channels(net, x).model
    assert (exact(x) - net(x)).abs().max() < 1e-10


def test_prune_masks_are_made_permanent_first() -> None:
    net = mlp()
    mask = torch.ones_like(net.layers[0].weight)
    mask[[0, 1]] = 0
    torch_prune.custom_from_mask(net.layers[0], "weight", mask)
    zero_rows(net.layers[0], [0, 1], bias=True)
    result = remove_zero_channels(net, torch.zeros(1, 8, dtype=torch.float64))
    layer = result.model.layers[0]
    assert layer.out_features == 14
    assert not hasattr(layer, "weight_orig")
    assert hasattr(net.layers[0], "weight_orig")  # the caller's model keeps its masks


def test_rgsm_trained_model_becomes_physically_smaller() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16))
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    params = [net.features[0].conv.weight, net.features[1].conv.weight]
    opt = RGSM(torch.optim.SGD(net.parameters(), lr=0.05), params, lam1=0.5, beta=1.0)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    sparse = opt.deploy(net).eval()
    table = channel_sparsity(sparse)
    rows = table.set_index("layer")
    zero = {
        name: int(rows.loc[name, "zero_channels"])
        for name in ("features.0.conv", "features.1.conv")
    }
    assert sum(zero.values()) > 0
    small = remove_zero_channels(sparse, x[:2]).model
    assert small.features[0].conv.out_channels == 8 - zero["features.0.conv"]
    assert small.features[1].conv.out_channels == 16 - zero["features.1.conv"]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


def test_prune_method_zero_channels() -> None:
    net = mlp()
    zero_rows(net.layers[0], [2, 5])
    x = torch.zeros(1, 8, dtype=torch.float64)
    result = prune(net, 0.5, method="zero-channels", example_inputs=x)
    assert result.model.layers[0].out_features == 14
    assert result.method == "zero-channels"
    with pytest.raises(UsageError, match="example_inputs"):
        prune(net, 0.5, method="zero-channels")
    with pytest.raises(UsageError, match="no allocation"):
        prune(net, 0.5, method="zero-channels", allocation="lamp", example_inputs=x)


def test_cli_prune_zero_channels_writes_the_compact_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = MLP(8, [16, 12], 3).eval()
    zero_rows(net.layers[0], [1, 2, 3])
    source = save_pruned(
        net, tmp_path / "sparse.safetensors", edits={}, architecture=net.architecture()
    )
    out = tmp_path / "compact.safetensors"
    run = CliRunner().invoke(
        app,
        [
            "prune",
            str(source),
            "--method",
            "zero-channels",
            "--input-shape",
            "1,8",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert run.exit_code == 0, run.output
    compact = load_pruned(out)
    assert compact.layers[0].out_features == 13
    x = torch.randn(3, 8)
    assert (compact(x) - net(x)).abs().max() < 1e-5
