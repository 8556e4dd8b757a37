"""Tests of layer-wise pruning ratios (tailwise.prune.allocate) against REFERENCES §3:
budgets, the metric stepping of source 000 §3.2 (exact rational oracle), LAMP and ERK formulas
recomputed independently, and the errors of the public boundary."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tailwise
from tailwise.models import MLP, SmallCNN
from tailwise.prune.allocate import (
    METRIC_COLUMNS,
    allocate,
    erk_densities,
    lamp_scores,
    metric_ratios,
)
from tailwise.prune.layers import prunable_layers

# ---------------------------------------------------------------------------------------------
# Helpers


def linear_stack(shapes: list[tuple[int, int]], seed: int = 0) -> nn.Sequential:
    """Bias-free Linear layers named "0", "1", ... with weights of the given (out, in) shapes
    (never called, so the shapes need not chain)."""
    torch.manual_seed(seed)
    return nn.Sequential(*(nn.Linear(n_in, n_out, bias=False) for n_out, n_in in shapes))


def weight(model: nn.Module, layer: str) -> torch.Tensor:
    tensor = model.get_submodule(layer).weight
    assert isinstance(tensor, torch.Tensor)
    return tensor


def sizes_of(model: nn.Module) -> dict[str, int]:
    return {name: weight(model, name).numel() for name in prunable_layers(model)}


def removed(ratios: dict[str, float], model: nn.Module) -> float:
    return sum(r * n for r, n in zip(ratios.values(), sizes_of(model).values(), strict=True))


def alpha_table(model: nn.Module, values: list[float]) -> pd.DataFrame:
    """A hand-made analysis table: one row per layer weight, plus a bias row to be ignored."""
    names = [f"{layer}.weight" for layer in prunable_layers(model)]
    return pd.DataFrame({"name": [*names, "0.bias"], "alpha": [*values, 99.0], "status": "ok"})


def assert_valid(ratios: dict[str, float], model: nn.Module) -> None:
    assert list(ratios) == list(prunable_layers(model))
    assert all(isinstance(r, float) and 0.0 <= r < 1.0 for r in ratios.values())


layer_shapes = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=6)
budgets = st.floats(0.0, 0.99, exclude_max=False)

# ---------------------------------------------------------------------------------------------
# Uniform


def test_uniform_gives_every_layer_the_ratio() -> None:
    model = SmallCNN()
    ratios = allocate(model, 0.3)
    assert_valid(ratios, model)
    assert set(ratios.values()) == {0.3}
    assert list(ratios) == ["features.0.conv", "features.1.conv", "head"]


def test_include_exclude_select_layers_by_parameter_name() -> None:
    model = SmallCNN()
    assert list(allocate(model, 0.3, exclude=r"^head\.weight$")) == [
        "features.0.conv",
        "features.1.conv",
    ]
    assert list(allocate(model, 0.3, "erk", include=r"conv")) == [
        "features.0.conv",
        "features.1.conv",
    ]


def test_model_without_prunable_layers_gives_an_empty_dict() -> None:
    assert allocate(nn.Sequential(nn.ReLU()), 0.5, "lamp") == {}


# ---------------------------------------------------------------------------------------------
# Metric ratios (source 000 §3.2): an exact rational oracle


def reference_levels(
    metric: list[int], sizes: list[int], limit: float, top: int, inverse: bool
) -> list[int]:
    """Levels (ratios / step) by the definition, in exact rationals: the largest scale c whose
    capped, stepped levels floor(c w_i) fit in ``limit`` (step units), then one more step per
    layer in the order of the scale that would give it, if it fits. w_i = m_i or 1 / m_i."""
    w = [Fraction(1, m) if inverse else Fraction(m) for m in metric]

    def levels_at(c: Fraction) -> list[int]:
        return [min(top, math.floor(c * wi)) if wi > 0 else 0 for wi in w]

    def cost(levels: list[int]) -> int:
        return sum(level * n for level, n in zip(levels, sizes, strict=True))

    candidates = sorted({Fraction(j) / wi for wi in w if wi > 0 for j in range(1, top + 1)})
    best = [0] * len(w)
    for c in candidates:
        levels = levels_at(c)
        if cost(levels) > limit:
            break
        best = levels
    spent = cost(best)
    order = sorted(
        (i for i in range(len(w)) if w[i] > 0 and best[i] < top),
        key=lambda i: (Fraction(best[i] + 1) / w[i], i),
    )
    for i in order:
        if spent + sizes[i] <= limit:
            best[i] += 1
            spent += sizes[i]
    return best


def test_metric_ratios_small_hand_cases() -> None:
    # c = 0.2: 0.2 * (1 + 2 + 3) * 100 = 120 = 0.4 * 300 exactly.
    assert metric_ratios([1.0, 2.0, 3.0], [100, 100, 100], 0.4) == [0.2, 0.4, 0.6]
    # Inverse: c * (1 + 1/2 + 1/3) = 1.2 gives c = 0.6545..., stepped (0.65, 0.32, 0.21) spend
    # 118 of 120; the next steps all come at c = 0.66 (66 = 33 * 2 = 22 * 3): layers 0 and 1
    # take theirs, layer 2 no longer fits.
    assert metric_ratios([1.0, 2.0, 3.0], [100, 100, 100], 0.4, inverse=True) == [
        0.66,
        0.33,
        0.21,
    ]
    # A zero metric is never pruned in the proportional direction.
    assert metric_ratios([0.0, 1.0], [10, 10], 0.25) == [0.0, 0.5]
    # The cap max_ratio binds: the rest goes to the other layer.
    assert metric_ratios([1.0, 100.0], [100, 100], 0.6, max_ratio=0.9) == [0.3, 0.9]


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 12), st.integers(1, 500)), min_size=1, max_size=6),
    ratio=budgets,
    step=st.sampled_from([0.01, 0.05, 0.1, 0.003]),
    max_ratio=st.sampled_from([0.95, 0.5, 0.999]),
    inverse=st.booleans(),
)
def test_metric_ratios_match_the_definition_and_meet_the_budget(
    data: list[tuple[int, int]], ratio: float, step: float, max_ratio: float, inverse: bool
) -> None:
    metric = [m + 1 if inverse else m for m, _ in data]  # inverse needs m > 0
    sizes = [n for _, n in data]
    total = sum(sizes)
    budget = ratio * total
    top = math.floor(max_ratio / step * (1 + 1e-12))
    reachable = top * step * sum(n for m, n in zip(metric, sizes, strict=True) if m > 0)
    if budget > reachable * (1 + 1e-9):
        with pytest.raises(ValueError, match="out of reach"):
            metric_ratios(metric, sizes, ratio, inverse=inverse, step=step, max_ratio=max_ratio)
        return
    ratios = metric_ratios(metric, sizes, ratio, inverse=inverse, step=step, max_ratio=max_ratio)

    limit = ratio * total / step * (1 + 1e-9)
    expected = reference_levels(metric, sizes, limit, top, inverse)
    assert ratios == pytest.approx([level * step for level in expected], abs=1e-9)

    spent = sum(r * n for r, n in zip(ratios, sizes, strict=True))
    assert all(0.0 <= r <= max_ratio < 1.0 for r in ratios)
    assert all(abs(r / step - round(r / step)) < 1e-6 for r in ratios)  # on the step grid
    assert spent <= budget * (1 + 1e-9) + 1e-9  # never over-prune
    # Within one step of one layer's parameters, a layer that could still take a step.
    open_layers = [
        n for r, n, m in zip(ratios, sizes, metric, strict=True) if r < top * step - 1e-9 and m > 0
    ]
    if spent < budget - 1e-6:
        assert open_layers
        assert budget - spent < step * max(open_layers)
    # Larger weight w (metric, or 1 / metric when inverse) -> ratio at most one step lower.
    w = [1 / m if inverse else m for m in metric]
    for i in range(len(w)):
        for j in range(len(w)):
            if w[i] >= w[j]:
                assert ratios[i] >= ratios[j] - step - 1e-9


@settings(max_examples=60, deadline=None)
@given(shapes=layer_shapes, data=st.data(), ratio=st.floats(0.0, 0.9), inverse=st.booleans())
def test_metric_allocation_on_models_meets_the_budget(
    shapes: list[tuple[int, int]], data: st.DataObject, ratio: float, inverse: bool
) -> None:
    model = linear_stack(shapes)
    values = data.draw(st.lists(st.floats(0.5, 20.0), min_size=len(shapes), max_size=len(shapes)))
    method = "alpha:inverse" if inverse else "alpha"
    ratios = allocate(model, ratio, method, analysis=alpha_table(model, values))
    assert_valid(ratios, model)
    sizes = list(sizes_of(model).values())
    budget = ratio * sum(sizes)
    spent = removed(ratios, model)
    assert spent <= budget * (1 + 1e-9) + 1e-9
    assert budget - spent < 0.01 * max(sizes) + 1e-9


def test_metric_proportional_and_inverse_order_layers_by_the_metric() -> None:
    model = linear_stack([(30, 30), (30, 30), (30, 30), (30, 30)])
    table = alpha_table(model, [2.0, 6.0, 3.0, 5.0])
    proportional = list(allocate(model, 0.4, "alpha", analysis=table).values())
    inverse = list(allocate(model, 0.4, "alpha:inverse", analysis=table).values())
    assert proportional[0] < proportional[2] < proportional[3] < proportional[1]
    assert inverse[0] > inverse[2] > inverse[3] > inverse[1]
    # c = 0.4 * 4 / (2 + 6 + 3 + 5) = 0.1: exactly proportional.
    assert proportional == [0.2, 0.6, 0.3, 0.5]


def heavy_and_gaussian_model() -> nn.Sequential:
    """Layer "0": Gaussian entries (alpha about 5.7); layer "1": Cauchy entries (about 1.4)."""
    model = linear_stack([(128, 128), (128, 128)])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight(model, "0").copy_(torch.randn(128, 128, generator=generator))
        uniform = torch.rand(128, 128, generator=generator)
        weight(model, "1").copy_(torch.tan(math.pi * (uniform - 0.5)))  # standard Cauchy
    return model


def test_metric_from_analyze_orders_gaussian_above_heavy_tailed_layers() -> None:
    model = heavy_and_gaussian_model()
    table = tailwise.analyze(model, progress=False)
    alphas = table.set_index("name")["alpha"]
    assert alphas["0.weight"] > alphas["1.weight"] + 2  # the premise: Gaussian has larger alpha
    computed = allocate(model, 0.5, "alpha")  # analysis computed inside
    assert computed == allocate(model, 0.5, "alpha", analysis=table)
    assert computed["0"] > computed["1"]
    inverse = allocate(model, 0.5, "alpha:inverse", analysis=table)
    assert inverse["0"] < inverse["1"]
    for ratios in (computed, inverse):
        assert 0.5 * 2 * 128**2 - removed(ratios, model) < 0.01 * 128**2


def test_any_positive_numeric_column_is_a_metric() -> None:
    model = MLP(64, [32], 10)
    table = tailwise.analyze(model, progress=False)
    for method in ("stable_rank", "entropy:inverse", "norm", "matrix_rank"):
        ratios = allocate(model, 0.5, method, analysis=table)
        assert_valid(ratios, model)
        assert 0.5 * 2368 - removed(ratios, model) < 0.01 * 2048


def test_slice_rows_are_averaged_per_layer() -> None:
    model = linear_stack([(10, 10), (10, 10)])
    table = pd.DataFrame(
        {"name": ["0.weight[0,0]", "0.weight[0,1]", "1.weight"], "alpha": [1.0, 3.0, 6.0]}
    )
    assert allocate(model, 0.4, "alpha", analysis=table) == {"0": 0.2, "1": 0.6}


def test_nan_or_missing_metric_gets_the_median_with_a_warning() -> None:
    model = linear_stack([(10, 10), (10, 10), (10, 10)])
    table = alpha_table(model, [1.0, math.nan, 3.0])
    with pytest.warns(UserWarning, match=r"'alpha' is missing or NaN for 1; .* median .* 2"):
        ratios = allocate(model, 0.4, "alpha", analysis=table)
    assert list(ratios.values()) == [0.2, 0.4, 0.6]
    without_row = table[table["name"] != "1.weight"]
    with pytest.warns(UserWarning, match="missing or NaN for 1"):
        assert allocate(model, 0.4, "alpha", analysis=without_row) == ratios


def test_all_nan_metric_is_an_error() -> None:
    model = linear_stack([(10, 10), (10, 10)])
    with pytest.raises(ValueError, match="no selected layer has a finite 'alpha'"):
        allocate(model, 0.4, "alpha", analysis=alpha_table(model, [math.nan, math.nan]))


def test_integer_columns_with_missing_values_are_read_as_nan() -> None:
    model = linear_stack([(10, 10), (10, 10), (10, 10)])
    table = pd.DataFrame(
        {
            "name": ["0.weight", "1.weight", "2.weight"],
            "matrix_rank": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    with pytest.warns(UserWarning, match="for 1;"):
        assert list(allocate(model, 0.4, "matrix_rank", analysis=table).values()) == [
            0.2,
            0.4,
            0.6,
        ]


# ---------------------------------------------------------------------------------------------
# LAMP (Lee et al. 2021)


def reference_lamp_scores(values: list[float]) -> list[float]:
    """score(u) = w_u^2 / sum_{v >= u} w_v^2, u sorted ascending by |w| (stable), loops."""
    order = sorted(range(len(values)), key=lambda i: abs(values[i]))
    scores = [0.0] * len(values)
    for rank, index in enumerate(order):
        tail = sum(values[j] ** 2 for j in order[rank:])
        scores[index] = values[index] ** 2 / tail if tail > 0 else 0.0
    return scores


def test_lamp_scores_hand_case() -> None:
    # Sorted |w|: 1, 2, 3 -> squares 1, 4, 9, tails 14, 13, 9.
    scores = lamp_scores(torch.tensor([[3.0, -1.0, 2.0]]))
    assert scores.shape == (1, 3)
    assert scores.dtype == torch.float64
    assert scores.tolist() == [[1.0, pytest.approx(1 / 14), pytest.approx(4 / 13)]]


def test_lamp_scores_ties_and_zeros_are_deterministic() -> None:
    # Equal magnitudes keep index order: the earlier one has the larger tail, smaller score.
    assert lamp_scores(torch.tensor([2.0, -2.0])).tolist() == [0.5, 1.0]
    assert lamp_scores(torch.zeros(2, 2)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="non-finite"):
        lamp_scores(torch.tensor([1.0, math.nan]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=12))
def test_lamp_scores_match_the_formula(values: list[float]) -> None:
    expected = reference_lamp_scores(values)
    assert lamp_scores(torch.tensor(values)).tolist() == pytest.approx(expected, rel=1e-12)


def two_layer_lamp_model() -> nn.Sequential:
    """Layer "0": weights (3, -1, 2) -> scores 1, 1/14, 4/13; layer "1": (0.5, 4) -> 1/65, 1."""
    model = linear_stack([(1, 3), (2, 1)])
    with torch.no_grad():
        weight(model, "0").copy_(torch.tensor([[3.0, -1.0, 2.0]]))
        weight(model, "1").copy_(torch.tensor([[0.5], [4.0]]))
    return model


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.0, [0.0, 0.0]),
        (0.2, [0.0, 0.5]),  # 1 of 5: 1/65 goes
        (0.4, [1 / 3, 0.5]),  # then 1/14
        (0.6, [2 / 3, 0.5]),  # then 4/13
        (0.8, [2 / 3, 0.5]),  # 4 of 5 would empty a layer: each keeps its top weight
        (0.99, [2 / 3, 0.5]),
    ],
)
def test_lamp_hand_case(ratio: float, expected: list[float]) -> None:
    ratios = allocate(two_layer_lamp_model(), ratio, "lamp")
    assert list(ratios.values()) == pytest.approx(expected)


def test_lamp_keeps_one_weight_of_an_all_zero_layer() -> None:
    # All scores of layer "0" are 0, below every score of layer "1"; still one weight stays.
    model = linear_stack([(1, 3), (1, 2)])
    with torch.no_grad():
        weight(model, "0").zero_()
        weight(model, "1").copy_(torch.tensor([[1.0, 2.0]]))
    assert list(allocate(model, 0.8, "lamp").values()) == pytest.approx([2 / 3, 0.5])
    assert list(allocate(model, 0.4, "lamp").values()) == pytest.approx([2 / 3, 0.0])


def reference_lamp_pruned(weights: list[np.ndarray], ratio: float) -> list[int]:
    """Pruned entries per layer: global sort by (score, layer, position), each layer's top
    score protected, floor(ratio * N) pruned (at most N - L)."""
    entries = []
    for layer, weight in enumerate(weights):
        scores = reference_lamp_scores(weight.ravel().tolist())
        protect = int(np.argmax(scores))
        for position, score in enumerate(scores):
            entries.append((math.inf if position == protect else score, layer, position))
    total = len(entries)
    count = min(math.floor(ratio * total * (1 + 1e-12)), total - len(weights))
    pruned = [0] * len(weights)
    for _, layer, _ in sorted(entries)[: max(count, 0)]:
        pruned[layer] += 1
    return pruned


@settings(max_examples=40, deadline=None)
@given(shapes=layer_shapes, ratio=budgets, seed=st.integers(0, 2**16), ties=st.booleans())
def test_lamp_matches_an_independent_global_sort(
    shapes: list[tuple[int, int]], ratio: float, seed: int, ties: bool
) -> None:
    model = linear_stack(shapes, seed)
    if ties:  # few distinct values: many equal scores across layers
        with torch.no_grad():
            for layer in prunable_layers(model):
                tensor = weight(model, layer)
                tensor.copy_(torch.randint(-2, 3, tensor.shape).float())
    ratios = allocate(model, ratio, "lamp")
    assert_valid(ratios, model)
    weights = [weight(model, layer).detach().numpy().astype(np.float64) for layer in ratios]
    expected = reference_lamp_pruned(weights, ratio)
    sizes = list(sizes_of(model).values())
    got = [round(r * n) for r, n in zip(ratios.values(), sizes, strict=True)]
    assert got == expected
    assert all(n - k >= 1 for n, k in zip(sizes, got, strict=True))  # each layer keeps one
    total = sum(sizes)
    assert sum(got) == min(math.floor(ratio * total * (1 + 1e-12)), total - len(sizes))


# ---------------------------------------------------------------------------------------------
# ERK (Evci et al. 2020)


def test_erk_hand_case_re_solves_eps_after_a_dense_layer() -> None:
    # raw = (20/100, 12/20); eps = 60 / 32 = 1.875 gives layer 1 density 1.125 > 1: dense;
    # then eps = (60 - 20) / 20 = 2 and layer 0 keeps 0.4.
    assert erk_densities([(10, 10), (2, 10)], 0.5) == pytest.approx([0.4, 1.0])
    model = linear_stack([(10, 10), (2, 10)])
    ratios = allocate(model, 0.5, "erk")
    assert ratios == pytest.approx({"0": 0.6, "1": 0.0})
    assert removed(ratios, model) == pytest.approx(60)


def reference_erk_densities(shapes: list[tuple[int, ...]], density: float) -> list[float]:
    """The fixed point of the dense re-solve: eps with sum_l min(1, eps raw_l) N_l = D N."""
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]

    def excess(eps: float) -> float:
        kept = sum(min(1.0, eps * r) * n for r, n in zip(raw, sizes, strict=True))
        return kept - density * sum(sizes)

    if density == 1.0:
        return [1.0] * len(shapes)
    eps = scipy.optimize.brentq(excess, 0.0, 1.0 / min(raw), xtol=1e-14, rtol=1e-14)
    return [min(1.0, eps * r) for r in raw]


def test_erk_on_a_cnn_matches_the_formula() -> None:
    model = SmallCNN()
    shapes = [(32, 1, 3, 3), (64, 32, 3, 3), (10, 256)]
    ratios = allocate(model, 0.8, "erk")
    expected = reference_erk_densities(shapes, 0.2)
    assert list(ratios.values()) == pytest.approx([1 - d for d in expected], abs=1e-12)
    assert ratios["features.0.conv"] == 0.0  # 288 weights with sum 45: dense
    assert removed(ratios, model) == pytest.approx(0.8 * (288 + 18432 + 2560))


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(
        st.lists(st.integers(1, 12), min_size=2, max_size=4).map(tuple), min_size=1, max_size=6
    ),
    ratio=budgets,
)
def test_erk_densities_meet_the_budget_and_the_formula(
    shapes: list[tuple[int, ...]], ratio: float
) -> None:
    densities = erk_densities(shapes, 1.0 - ratio)
    sizes = [math.prod(s) for s in shapes]
    assert all(0.0 < d <= 1.0 for d in densities)
    kept = sum(d * n for d, n in zip(densities, sizes, strict=True))
    assert kept == pytest.approx((1.0 - ratio) * sum(sizes), rel=1e-9)
    assert densities == pytest.approx(reference_erk_densities(shapes, 1.0 - ratio), abs=1e-9)
    # Sparse layers share one eps: d_l / raw_l is constant over them.
    sparse = [d * math.prod(s) / sum(s) for d, s in zip(densities, shapes, strict=True) if d < 1]
    assert sparse == pytest.approx([sparse[0]] * len(sparse)) if sparse else True


@settings(max_examples=40, deadline=None)
@given(shapes=layer_shapes, ratio=budgets)
def test_erk_allocation_meets_the_budget(shapes: list[tuple[int, int]], ratio: float) -> None:
    model = linear_stack(shapes)
    ratios = allocate(model, ratio, "erk")
    assert_valid(ratios, model)
    total = sum(sizes_of(model).values())
    assert removed(ratios, model) == pytest.approx(ratio * total, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(shapes=layer_shapes, ratio=budgets)
def test_uniform_allocation_meets_the_budget(shapes: list[tuple[int, int]], ratio: float) -> None:
    model = linear_stack(shapes)
    ratios = allocate(model, ratio)
    assert_valid(ratios, model)
    assert removed(ratios, model) == pytest.approx(ratio * sum(sizes_of(model).values()))


# ---------------------------------------------------------------------------------------------
# Errors at the public boundary


def test_unknown_metric_lists_the_numeric_columns() -> None:
    model = linear_stack([(4, 4)])
    with pytest.raises(ValueError, match=r"unknown method 'alhpa'.*alpha, .*stable_rank"):
        allocate(model, 0.5, "alhpa")
    table = alpha_table(model, [2.0])
    for method in ("name", "status", "stable_rank", "lamp:inverse", "alpha:inv", "LAMP"):
        with pytest.raises(ValueError, match="unknown method"):
            allocate(model, 0.5, method, analysis=table)
    assert "alpha" in METRIC_COLUMNS
    assert "name" not in METRIC_COLUMNS
    assert "status" not in METRIC_COLUMNS


@pytest.mark.parametrize("ratio", [1.0, -0.1, math.nan, math.inf, 1.5])
def test_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        allocate(linear_stack([(4, 4)]), ratio, "erk")


def test_bad_ratio_type() -> None:
    with pytest.raises(TypeError):
        allocate(linear_stack([(4, 4)]), True)


def test_bad_step_and_max_ratio() -> None:
    with pytest.raises(ValueError, match="step must be in"):
        metric_ratios([1.0], [10], 0.5, step=0.0)
    with pytest.raises(ValueError, match="step must be in"):
        metric_ratios([1.0], [10], 0.5, step=0.99, max_ratio=0.9)
    with pytest.raises(ValueError, match="max_ratio must be in"):
        metric_ratios([1.0], [10], 0.5, max_ratio=1.0)
    with pytest.raises(ValueError, match="max_ratio must be in"):
        metric_ratios([1.0], [10], 0.5, max_ratio=0.0)
    with pytest.raises(ValueError, match="1-D of equal length"):
        metric_ratios([1.0, 2.0], [10], 0.5)
    with pytest.raises(ValueError, match="positive integers"):
        metric_ratios([1.0], [0], 0.5)


def test_metric_sign_errors() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        metric_ratios([-1.0, 2.0], [10, 10], 0.5)
    with pytest.raises(ValueError, match="positive values"):
        metric_ratios([0.0, 2.0], [10, 10], 0.5, inverse=True)
    model = linear_stack([(4, 4), (4, 4)])
    table = pd.DataFrame({"name": ["0.weight", "1.weight"], "log_spectral_norm": [-0.2, 0.3]})
    with pytest.raises(ValueError, match="non-negative"):
        allocate(model, 0.5, "log_spectral_norm", analysis=table)


def test_unreachable_budget_names_budget_and_reachable_total() -> None:
    with pytest.raises(ValueError, match=r"budget of 96 of 100 .* at most 95 "):
        metric_ratios([1.0, 2.0], [50, 50], 0.96)
    # Zero metric: that layer is never pruned, so 50% of the rest is the most at max_ratio 0.5.
    with pytest.raises(ValueError, match=r"at most 25 .*never pruned"):
        metric_ratios([0.0, 2.0], [50, 50], 0.3, max_ratio=0.5)
    assert metric_ratios([1.0, 2.0], [50, 50], 0.95) == [0.95, 0.95]


def test_no_warnings_on_a_clean_metric_allocation() -> None:
    model = linear_stack([(8, 8), (8, 8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        allocate(model, 0.5, "alpha", analysis=alpha_table(model, [2.0, 3.0]))
