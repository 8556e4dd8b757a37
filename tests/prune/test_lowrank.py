"""tailwise.prune.prune_lowrank: best rank-k factor pairs, rank rule, reports and FLOPs."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tailwise.models import MLP, VGG
from tailwise.prune import prunable_layers, prune_lowrank
from tailwise.prune.lowrank import factorize, lowrank_rank
from tailwise.prune.rebuild import module_spec


def truncated(matrix: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Best rank-k approximation (numpy SVD) and its relative Frobenius error."""
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    approx = (u[:, :k] * s[:k]) @ vh[:k]
    return approx, math.sqrt(float((s[k:] ** 2).sum() / (s**2).sum()))


def pair_matrix(pair: nn.Sequential) -> torch.Tensor:
    """second.weight @ first.weight for a factorized Linear/Conv (out, in * prod k)."""
    first, second = pair[0].weight, pair[1].weight
    return second.reshape(second.shape[0], -1) @ first.reshape(first.shape[0], -1)


def test_rank_formula_by_hand() -> None:
    # k = floor((1 - r) * out * in / (out + in)), at least 1
    assert lowrank_rank(512, 256, 0.5) == 85  # 0.5 * 131072 / 768 = 85.3
    assert lowrank_rank(8, 12, 0.5) == 2  # 0.5 * 96 / 20 = 2.4
    assert lowrank_rank(64, 64, 0.75) == 8  # 0.25 * 4096 / 128 = 8
    assert lowrank_rank(100, 100, 0.0) == 50
    assert lowrank_rank(3, 5, 0.2) == 1  # 0.8 * 15 / 8 = 1.5
    assert lowrank_rank(10, 10, 0.95) == 1  # 0.25 -> clamped to 1


def test_linear_factor_pair_is_the_best_rank_k_approximation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    original = model[0].weight.detach().numpy().astype(np.float64)
    result = prune_lowrank(model, {"0": 0.5})
    pair = result.model[0]
    assert isinstance(pair, nn.Sequential) and len(pair) == 2
    first, second = pair
    k = 2  # lowrank_rank(8, 12, 0.5)
    assert (first.in_features, first.out_features, first.bias) == (12, k, None)
    assert (second.in_features, second.out_features) == (k, 8)
    assert torch.equal(second.bias, model[0].bias)
    approx, err = truncated(original, k)
    np.testing.assert_allclose(pair_matrix(pair).detach().numpy(), approx, atol=1e-5)

    row = result.report.set_index("layer").loc["0"]
    assert row["method"] == "lowrank" and row["kind"] == "linear" and row["ratio"] == 0.5
    assert row["rel_error"] == pytest.approx(err, rel=1e-9)
    assert row["params_before"] == 8 * 12 + 8
    assert row["params_after"] == k * (8 + 12) + 8
    assert row["achieved"] == pytest.approx(1 - k * 20 / 96)
    assert row["note"] == f"rank {k} of 8"
    assert row["flops_before"] == 2 * 12 * 8
    assert row["flops_after"] == pytest.approx(2 * k * (12 + 8))
    # The layer the dict leaves out is untouched.
    assert isinstance(result.model[2], nn.Linear)
    other = result.report.set_index("layer").loc["2"]
    assert other["achieved"] == 0 and other["params_after"] == other["params_before"]
    assert result.edits == {"0": module_spec(pair)}
    assert result.edits["0"]["children"][0][0] == "0"


def test_float64_factors_match_numpy_tightly_and_error_is_tail_energy() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 16)).double()
    w = model[0].weight.detach().numpy()
    for ratio in (0.1, 0.5, 0.9):
        result = prune_lowrank(model, ratio)
        k = lowrank_rank(16, 20, ratio)
        approx, err = truncated(w, k)
        np.testing.assert_allclose(
            pair_matrix(result.model[0]).detach().numpy(), approx, atol=1e-12
        )
        s = np.linalg.svd(w, compute_uv=False)
        tail = math.sqrt((s[k:] ** 2).sum() / (s**2).sum())
        assert result.report.iloc[0]["rel_error"] == pytest.approx(tail, rel=1e-9)
        assert err == pytest.approx(tail)


def dense_equivalent(model: nn.Module, ratio: float) -> nn.Module:
    """``model`` with every conv/linear weight replaced by its rank-k approximation."""
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for module in prunable_layers(dense).values():
            w = module.weight
            matrix = w.detach().reshape(w.shape[0], -1).numpy()
            k = lowrank_rank(matrix.shape[0], matrix.shape[1], ratio)
            if k * sum(matrix.shape) >= matrix.size or k >= min(matrix.shape):
                continue
            approx, _ = truncated(matrix, k)
            w.copy_(torch.from_numpy(approx).reshape(w.shape))
    return dense


def test_conv_factorization_equals_the_dense_rank_k_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, (3, 2), padding=(2, 1), dilation=(2, 1), padding_mode="reflect"),
        nn.ReLU(),
        nn.Conv2d(5, 8, 1, bias=False),
        nn.Flatten(),
    ).double()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    result = prune_lowrank(model, 0.6)
    for name in ("0", "2", "4"):
        assert isinstance(result.model.get_submodule(name), nn.Sequential), name
    first = result.model[2][0]
    assert first.kernel_size == (3, 2) and first.dilation == (2, 1)
    assert first.padding_mode == "reflect" and first.padding == (2, 1)
    assert result.model[2][1].kernel_size == (1, 1)
    assert result.model[4][1].bias is None
    with torch.no_grad():
        y = result.model(x)
        expected = dense_equivalent(model, 0.6)(x)
        assert (y - expected).abs().max() < 1e-9
        assert (y - model(x)).abs().max() > 1e-3  # the approximation is not trivial


@pytest.mark.parametrize("conv", [nn.Conv1d(4, 6, 3, padding=1), nn.Conv3d(3, 5, 2)])
def test_conv1d_and_conv3d_factorization(conv: nn.Module) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(conv).double()
    x = torch.randn(2, conv.in_channels, *([5] * (conv.weight.ndim - 2)), dtype=torch.float64)
    result = prune_lowrank(model, 0.5)
    assert isinstance(result.model[0][0], type(conv))
    with torch.no_grad():
        assert (result.model(x) - dense_equivalent(model, 0.5)(x)).abs().max() < 1e-9


def test_conv_flops_after_are_k_times_out_plus_in() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 10, 3, padding=1)
    model = nn.Sequential(conv)
    x = torch.randn(2, 4, 6, 6)
    result = prune_lowrank(model, 0.5, example_inputs=x)
    in_dim = 4 * 9
    k = lowrank_rank(10, in_dim, 0.5)  # floor(0.5 * 360 / 46) = 3
    assert k == 3
    positions = 2 * 6 * 6  # output positions of the batch
    row = result.report.iloc[0]
    assert row["flops_before"] == 2 * positions * 10 * in_dim
    assert row["flops_after"] == 2 * positions * k * (in_dim + 10)
    assert row["params_after"] == k * (in_dim + 10) + 10
    assert row["achieved"] == pytest.approx(1 - k * (in_dim + 10) / (10 * in_dim))
    # Without inputs a convolution's FLOPs are unknown.
    assert math.isnan(prune_lowrank(model, 0.5).report.iloc[0]["flops_after"])


def test_full_rank_is_exact_and_ratio_zero_changes_nothing() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).double()
    pair, err = factorize(linear, 4)
    x = torch.randn(3, 6, dtype=torch.float64)
    assert err < 1e-12
    assert torch.allclose(pair(x), linear(x), atol=1e-12)
    conv = nn.Conv2d(2, 3, 2).double()
    pair, err = factorize(conv, 3)
    xc = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    assert err < 1e-12 and torch.allclose(pair(xc), conv(xc), atol=1e-12)

    model = MLP(6, [5], 3)
    result = prune_lowrank(model, 0.0)
    assert result.edits == {}
    assert all(isinstance(m, nn.Linear) for m in result.model.layers)
    xm = torch.randn(2, 6)
    assert torch.equal(result.model(xm), model(xm))
    assert (result.report["achieved"] == 0).all() and (result.report["note"] == "").all()


def test_factorize_rejects_bad_ranks_and_modules() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[1, 4\]"):
        factorize(nn.Linear(6, 4), 5)
    with pytest.raises(ValueError, match="rank"):
        factorize(nn.Linear(6, 4), 0)
    with pytest.raises(ValueError, match="grouped"):
        factorize(nn.Conv2d(4, 4, 3, groups=2), 1)
    with pytest.raises(TypeError, match="Embedding"):
        factorize(nn.Embedding(5, 4), 2)


def test_layers_that_would_not_save_parameters_stay_dense_with_a_note() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1), nn.Linear(1, 6))
    result = prune_lowrank(model, 0.1)
    assert all(isinstance(m, nn.Linear) for m in result.model)
    assert result.edits == {}
    for _, row in result.report.iterrows():
        assert row["note"].startswith("left dense"), row["layer"]
        assert row["achieved"] == 0.0 and row["params_after"] == row["params_before"]
        assert row["rel_error"] == 0.0
    x = torch.randn(2, 2)
    assert torch.equal(result.model(x), model(x))


def test_grouped_convolution_stays_dense() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 8, 3))
    result = prune_lowrank(model, 0.5)
    report = result.report.set_index("layer")
    assert report.loc["0", "note"] == "left dense: grouped convolution"
    assert isinstance(result.model[0], nn.Conv2d)
    assert isinstance(result.model[1], nn.Sequential)
    assert list(result.edits) == ["1"]


def test_model_untouched_unless_inplace_and_architecture_recorded() -> None:
    torch.manual_seed(0)
    model = VGG((4, "M", 8, "M"), image_size=8, hidden=(12,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_lowrank(model, 0.5)
    assert result.architecture == model.architecture()
    assert all(isinstance(m, nn.Conv2d | nn.Linear) for m in prunable_layers(model).values())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert set(result.edits) == set(prunable_layers(model))
    same = prune_lowrank(model, 0.5, inplace=True)
    assert same.model is model and isinstance(model.head, nn.Sequential)


def test_bad_ratios_and_names_raise() -> None:
    model = MLP(6, [5], 3)
    with pytest.raises(ValueError, match=r"layers\.9"):
        prune_lowrank(model, {"layers.9": 0.5})
    with pytest.raises(ValueError, match=r"ratio of layers\.0"):
        prune_lowrank(model, {"layers.0": float("nan")})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_lowrank(model, 1.0)
    with pytest.raises(ValueError, match="no Linear/Conv layer"):
        prune_lowrank(model, 0.5, exclude="layers")


@settings(max_examples=40, deadline=None)
@given(
    out_dim=st.integers(1, 24),
    in_dim=st.integers(1, 24),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
)
def test_property_achieved_ratio_versus_requested(out_dim: int, in_dim: int, ratio: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_dim, out_dim))
    result = prune_lowrank(model, ratio)
    row = result.report.iloc[0]
    n = out_dim * in_dim
    if ratio == 0.0:
        assert row["achieved"] == 0.0 and row["note"] == ""
        return
    k = lowrank_rank(out_dim, in_dim, ratio)
    if k * (out_dim + in_dim) >= n or k >= min(out_dim, in_dim):
        assert row["note"].startswith("left dense")
        assert row["achieved"] == 0.0 and isinstance(result.model[0], nn.Linear)
        return
    assert re.fullmatch(rf"rank {k} of {min(out_dim, in_dim)}", row["note"])
    assert result.model[0][0].out_features == k
    assert row["achieved"] == pytest.approx(1 - k * (out_dim + in_dim) / n)
    assert row["achieved"] > 0  # a factorized layer always saves parameters
    # The guarantee: achieved >= requested, except where the rank was clamped up to 1.
    unclamped = (1 - ratio) * n / (out_dim + in_dim) >= 1
    if unclamped:
        assert row["achieved"] >= ratio - 1e-9
    else:
        assert k == 1


def test_rank_clamped_to_one_achieves_less_than_requested() -> None:
    # The documented exception to achieved >= ratio: k = max(1, ...).
    result = prune_lowrank(nn.Sequential(nn.Linear(10, 10)), 0.95)
    row = result.report.iloc[0]
    assert row["note"] == "rank 1 of 10"
    assert row["achieved"] == pytest.approx(0.8)
