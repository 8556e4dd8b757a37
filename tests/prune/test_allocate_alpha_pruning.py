"""Tests of the AlphaPruning allocation (Lu et al. 2024; REFERENCES §9) in
tailwise.prune.allocate: hand-computed cases in exact rationals, the budget against an
independent root-finding oracle, clamping with redistribution, the direction (larger alpha,
more pruning), the errors of the public boundary, and the path through tailwise.prune.prune."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tailwise
from tailwise.prune import alpha_pruning_ratios, prunable_layers, prune
from tailwise.prune.allocate import (
    ALPHA_PRUNING_EPSILON,
    METRIC_COLUMNS,
    Allocation,
    AllocationKind,
    allocate,
    allocation_curve,
)

# ---------------------------------------------------------------------------------------------
# Helpers and oracles


def linear_stack(shapes: list[tuple[int, int]], seed: int = 0) -> nn.Sequential:
    """Bias-free Linear layers named "0", "1", ... with weights of the given (out, in) shapes."""
    torch.manual_seed(seed)
    return nn.Sequential(*(nn.Linear(n_in, n_out, bias=False) for n_out, n_in in shapes))


def weight(model: nn.Module, layer: str) -> torch.Tensor:
    tensor = model.get_submodule(layer).weight
    assert isinstance(tensor, torch.Tensor)
    return tensor


def alpha_table(model: nn.Module, values: list[float]) -> pd.DataFrame:
    names = [f"{layer}.weight" for layer in prunable_layers(model)]
    return pd.DataFrame({"name": names, "alpha": values, "status": "ok"})


def published_ratios(
    alphas: list[Fraction], sizes: list[int], ratio: Fraction, epsilon: Fraction
) -> list[Fraction]:
    """The published map, unclamped, in exact rationals (haiquanlu/AlphaPruning ww_sparsity):
    q_i linear from [alpha_min, alpha_max] onto [1 - eps, 1 + eps], r_i = q_i S N / sum N q."""
    low, high = min(alphas), max(alphas)
    q = [(1 - epsilon) + 2 * epsilon * (a - low) / (high - low) for a in alphas]
    scale = ratio * sum(sizes) / sum(n * qi for n, qi in zip(sizes, q, strict=True))
    return [scale * qi for qi in q]


def clamped_oracle(
    alphas: list[float], sizes: list[int], ratio: float, epsilon: float, max_ratio: float
) -> list[float]:
    """r_i = min(max_ratio, c q_i) with c found by Brent's method on the budget equation."""
    low, high = min(alphas), max(alphas)
    if epsilon == 0 or high == low:
        return [ratio] * len(alphas)
    q = [(1 - epsilon) + 2 * epsilon * (a - low) / (high - low) for a in alphas]
    total = sum(sizes)

    def excess(c: float) -> float:
        spent = sum(min(max_ratio, c * qi) * n for qi, n in zip(q, sizes, strict=True))
        return spent - ratio * total

    if ratio == 0:
        return [0.0] * len(alphas)
    c = scipy.optimize.brentq(excess, 0.0, max_ratio / min(q), xtol=1e-15, rtol=1e-15)
    return [min(max_ratio, c * qi) for qi in q]


def weighted_mean(ratios: list[float], sizes: list[int]) -> float:
    return sum(r * n for r, n in zip(ratios, sizes, strict=True)) / sum(sizes)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_three_layer_hand_case() -> None:
    # q = (0.7, 0.9, 1.3); sum N q = 70 + 180 + 130 = 380; c = 0.5 * 400 / 380 = 10 / 19.
    ratios = alpha_pruning_ratios([2.0, 3.0, 5.0], [100, 200, 100], 0.5, epsilon=0.3)
    assert ratios == pytest.approx([7 / 19, 9 / 19, 13 / 19], rel=1e-14)
    assert ratios == pytest.approx(
        [
            float(r)
            for r in published_ratios(
                [Fraction(2), Fraction(3), Fraction(5)],
                [100, 200, 100],
                Fraction(1, 2),
                Fraction(3, 10),
            )
        ],
        rel=1e-14,
    )
    assert weighted_mean(ratios, [100, 200, 100]) == pytest.approx(0.5, abs=1e-12)


def test_defaults_are_the_published_ones() -> None:
    assert ALPHA_PRUNING_EPSILON == 0.3
    # The default epsilon gives the hand case above.
    assert alpha_pruning_ratios([2.0, 3.0, 5.0], [100, 200, 100], 0.5) == pytest.approx(
        [7 / 19, 9 / 19, 13 / 19], rel=1e-14
    )


def test_clamping_redistributes_the_excess_and_keeps_the_budget() -> None:
    # Unclamped: q = (0.5, 1.5), c = 0.6 -> (0.3, 0.9). With max_ratio 0.8 layer 1 takes 0.8
    # and the 10 weights over go to layer 0: 0.3 + 0.1 = 0.4 (c = 40 / 50 = 0.8).
    assert alpha_pruning_ratios([1.0, 2.0], [100, 100], 0.6, epsilon=0.5) == pytest.approx(
        [0.3, 0.9], rel=1e-14
    )
    assert alpha_pruning_ratios(
        [1.0, 2.0], [100, 100], 0.6, epsilon=0.5, max_ratio=0.8
    ) == pytest.approx([0.4, 0.8], rel=1e-14)


def test_clamping_in_two_rounds() -> None:
    # q = (0.5, 1, 1.5), S = 0.7: c = 0.7 gives (0.35, 0.7, 1.05). Clamp layer 2 at 0.75:
    # c = (210 - 75) / 150 = 0.9 gives layer 1 0.9 > 0.75: clamp it too; then
    # c = (210 - 150) / 50 = 1.2 and layer 0 gets 0.6.
    ratios = alpha_pruning_ratios(
        [0.0, 1.0, 2.0], [100, 100, 100], 0.7, epsilon=0.5, max_ratio=0.75
    )
    assert ratios == pytest.approx([0.6, 0.75, 0.75], rel=1e-14)
    assert weighted_mean(ratios, [100, 100, 100]) == pytest.approx(0.7, abs=1e-12)
    assert max(ratios) <= 0.75


def test_equal_alphas_and_zero_epsilon_give_the_uniform_ratio_exactly() -> None:
    sizes = [7, 300, 11, 4096]
    assert alpha_pruning_ratios([3.2] * 4, sizes, 0.37) == [0.37] * 4
    assert alpha_pruning_ratios([2.0, 3.0, 9.0, 4.0], sizes, 0.37, epsilon=0.0) == [0.37] * 4
    assert alpha_pruning_ratios([], [], 0.5) == []


def test_zero_ratio_prunes_nothing() -> None:
    assert alpha_pruning_ratios([2.0, 3.0, 5.0], [10, 20, 30], 0.0) == [0.0, 0.0, 0.0]


def test_budget_at_max_ratio_puts_every_layer_there() -> None:
    ratios = alpha_pruning_ratios([2.0, 3.0, 5.0], [10, 20, 30], 0.9, max_ratio=0.9)
    assert ratios == pytest.approx([0.9, 0.9, 0.9], rel=1e-12)
    assert max(ratios) <= 0.9


def test_only_order_and_spacing_of_alphas_matter() -> None:
    alphas = [2.0, 3.5, 5.0, 2.7]
    sizes = [50, 80, 20, 10]
    base = alpha_pruning_ratios(alphas, sizes, 0.6)
    moved = alpha_pruning_ratios([10 * a - 7 for a in alphas], sizes, 0.6)
    assert moved == pytest.approx(base, rel=1e-12)


def test_spread_is_one_plus_eps_over_one_minus_eps() -> None:
    ratios = alpha_pruning_ratios([1.0, 4.0, 2.0], [10, 10, 10], 0.4, epsilon=0.3)
    assert max(ratios) / min(ratios) == pytest.approx(1.3 / 0.7, rel=1e-12)
    assert ratios[1] == max(ratios)  # the largest alpha is pruned most


# ---------------------------------------------------------------------------------------------
# Properties against an independent oracle


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.5, 12.0, allow_nan=False), st.integers(1, 5000)),
        min_size=1,
        max_size=8,
    ),
    ratio=st.floats(0.0, 0.95),
    epsilon=st.floats(0.0, 0.99),
    max_ratio=st.sampled_from([0.95, 0.99, 0.8, 0.5]),
)
def test_budget_is_exact_and_matches_the_oracle(
    data: list[tuple[float, int]], ratio: float, epsilon: float, max_ratio: float
) -> None:
    alphas = [a for a, _ in data]
    sizes = [n for _, n in data]
    if ratio > max_ratio:
        with pytest.raises(ValueError, match="out of reach"):
            alpha_pruning_ratios(alphas, sizes, ratio, epsilon=epsilon, max_ratio=max_ratio)
        return
    ratios = alpha_pruning_ratios(alphas, sizes, ratio, epsilon=epsilon, max_ratio=max_ratio)
    assert len(ratios) == len(alphas)
    assert all(isinstance(r, float) and 0.0 <= r <= max_ratio for r in ratios)
    assert weighted_mean(ratios, sizes) == pytest.approx(ratio, abs=1e-12)
    expected = clamped_oracle(alphas, sizes, ratio, epsilon, max_ratio)
    assert ratios == pytest.approx(expected, abs=1e-10)
    # Monotone in alpha, exactly: larger alpha, at least as much pruning.
    for i in range(len(alphas)):
        for j in range(len(alphas)):
            if alphas[i] >= alphas[j]:
                assert ratios[i] >= ratios[j]


@settings(max_examples=60, deadline=None)
@given(
    alphas=st.lists(st.integers(1, 9).map(Fraction), min_size=2, max_size=6),
    ratio=st.integers(0, 40).map(lambda k: Fraction(k, 100)),
    epsilon=st.integers(0, 9).map(lambda k: Fraction(k, 10)),
    data=st.data(),
)
def test_unclamped_ratios_are_the_published_ones(
    alphas: list[Fraction], ratio: Fraction, epsilon: Fraction, data: st.DataObject
) -> None:
    sizes = data.draw(st.lists(st.integers(1, 500), min_size=len(alphas), max_size=len(alphas)))
    # A large epsilon can still push a layer over max_ratio: those cases are skipped below
    # (clamping has its own oracle test); the others must be the published ratios.
    got = alpha_pruning_ratios(
        [float(a) for a in alphas], sizes, float(ratio), epsilon=float(epsilon), max_ratio=0.999
    )
    if max(alphas) == min(alphas) or epsilon == 0:
        assert got == [float(ratio)] * len(alphas)
        return
    exact = published_ratios(alphas, sizes, ratio, epsilon)
    if max(exact) > Fraction(999, 1000):
        return  # clamped: covered by the oracle test above
    assert got == pytest.approx([float(r) for r in exact], rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# Through allocate: the analysis, layers, median for failed fits


def test_allocate_reads_alpha_from_the_analysis() -> None:
    model = linear_stack([(10, 10), (20, 10), (10, 10)])
    table = alpha_table(model, [2.0, 3.0, 5.0])
    ratios = allocate(model, 0.5, "alpha_pruning", analysis=table)
    assert list(ratios) == ["0", "1", "2"]
    assert list(ratios.values()) == pytest.approx([7 / 19, 9 / 19, 13 / 19], rel=1e-14)
    assert allocate(model, 0.5, "alpha_pruning", analysis=table, epsilon=0.0) == dict.fromkeys(
        ratios, 0.5
    )
    curve = allocation_curve(model, "alpha_pruning", analysis=table, epsilon=0.2)
    for share in (0.1, 0.5, 0.8):
        assert curve(share) == allocate(model, share, "alpha_pruning", analysis=table, epsilon=0.2)


def test_allocate_max_ratio_caps_layers() -> None:
    model = linear_stack([(10, 10), (10, 10)])
    table = alpha_table(model, [1.0, 2.0])
    ratios = allocate(model, 0.6, "alpha_pruning", analysis=table, epsilon=0.5, max_ratio=0.8)
    assert list(ratios.values()) == pytest.approx([0.4, 0.8], rel=1e-14)


def test_failed_fit_gets_the_median_alpha_with_a_warning() -> None:
    model = linear_stack([(10, 10), (10, 10), (10, 10), (10, 10)])
    table = alpha_table(model, [2.0, math.nan, 5.0, math.inf])
    with pytest.warns(UserWarning, match=r"'alpha' is missing or NaN for 1, 3; .* median .* 3\.5"):
        ratios = allocate(model, 0.5, "alpha_pruning", analysis=table)
    expected = alpha_pruning_ratios([2.0, 3.5, 5.0, 3.5], [100] * 4, 0.5)
    assert list(ratios.values()) == pytest.approx(expected, rel=1e-14)


def test_all_fits_failed_is_an_error() -> None:
    model = linear_stack([(10, 10), (10, 10)])
    with pytest.raises(ValueError, match="no selected layer has a finite 'alpha'"):
        allocate(model, 0.5, "alpha_pruning", analysis=alpha_table(model, [math.nan, math.nan]))


def heavy_and_gaussian_model() -> nn.Sequential:
    """Layer "0": Gaussian entries (large alpha); layer "1": Cauchy entries (small alpha)."""
    model = linear_stack([(128, 128), (128, 128)])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight(model, "0").copy_(torch.randn(128, 128, generator=generator))
        uniform = torch.rand(128, 128, generator=generator)
        weight(model, "1").copy_(torch.tan(math.pi * (uniform - 0.5)))  # standard Cauchy
    return model


def test_analyzed_model_prunes_the_less_trained_layer_more() -> None:
    model = heavy_and_gaussian_model()
    table = tailwise.analyze(model, progress=False)
    alphas = table.set_index("name")["alpha"]
    assert alphas["0.weight"] > alphas["1.weight"] + 2  # the premise
    computed = allocate(model, 0.5, "alpha_pruning")  # analysis computed inside
    assert computed == allocate(model, 0.5, "alpha_pruning", analysis=table)
    # Two layers: q = (1.3, 0.7) whatever the alphas; equal sizes, so r = 0.5 q.
    assert computed == pytest.approx({"0": 0.65, "1": 0.35}, rel=1e-14)


def test_no_warnings_on_a_clean_allocation() -> None:
    model = linear_stack([(8, 8), (8, 8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        allocate(model, 0.5, "alpha_pruning", analysis=alpha_table(model, [2.0, 3.0]))


# ---------------------------------------------------------------------------------------------
# Parsing and errors at the public boundary


def test_parse() -> None:
    assert Allocation.parse("alpha_pruning", METRIC_COLUMNS) == Allocation(
        AllocationKind.ALPHA_PRUNING
    )
    with pytest.raises(ValueError, match=r"unknown method 'alpha_pruning:inverse'.*alpha_pruning"):
        Allocation.parse("alpha_pruning:inverse", METRIC_COLUMNS)
    with pytest.raises(ValueError, match="reads the 'alpha' column"):
        Allocation.parse("alpha_pruning", ("stable_rank", "entropy"))


def test_parsed_allocation_gives_its_column_and_ratios() -> None:
    """The one dispatch a caller with its own per-layer values (prune_file) can use."""
    parsed = Allocation.parse("alpha_pruning", METRIC_COLUMNS)
    assert parsed.column == "alpha"
    got = parsed.ratios([2.0, 3.0, 5.0], [100, 200, 100], 0.5, epsilon=0.3)
    assert got == alpha_pruning_ratios([2.0, 3.0, 5.0], [100, 200, 100], 0.5, epsilon=0.3)
    assert parsed.ratios([1.0, 2.0], [100, 100], 0.6, epsilon=0.5, max_ratio=0.8) == (
        pytest.approx([0.4, 0.8], rel=1e-14)
    )
    inverse = Allocation.parse("entropy:inverse", METRIC_COLUMNS)
    assert inverse.column == "entropy"
    assert inverse.ratios([1.0, 2.0, 3.0], [100, 100, 100], 0.4) == [0.66, 0.33, 0.21]
    assert Allocation.parse("erk", METRIC_COLUMNS).column is None
    with pytest.raises(ValueError, match="'lamp' does not follow an analysis column"):
        Allocation.parse("lamp", METRIC_COLUMNS).ratios([1.0], [10], 0.5)


def test_analysis_without_alpha_is_an_error() -> None:
    model = linear_stack([(4, 4)])
    table = pd.DataFrame({"name": ["0.weight"], "stable_rank": [2.0]})
    with pytest.raises(ValueError, match=r"reads the 'alpha' column.*stable_rank"):
        allocate(model, 0.5, "alpha_pruning", analysis=table)


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_bad_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.5, epsilon=epsilon)
    model = linear_stack([(4, 4), (4, 4)])
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        # checked before the analysis is computed (no table given)
        allocate(model, 0.5, "alpha_pruning", epsilon=epsilon)


def test_bad_epsilon_type() -> None:
    with pytest.raises(ValueError, match="epsilon must be in"):  # even with no layer to prune
        allocate(nn.Sequential(nn.ReLU()), 0.5, "alpha_pruning", epsilon=2.0)
    with pytest.raises(TypeError, match="epsilon must be a number"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.5, epsilon=True)
    with pytest.raises(TypeError, match="epsilon must be a number"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.5, epsilon="0.3")  # type: ignore[arg-type]


def test_non_finite_alphas_are_named_by_position() -> None:
    with pytest.raises(ValueError, match=r"positions \[1, 3\] hold \[nan, inf\]"):
        alpha_pruning_ratios([2.0, math.nan, 3.0, math.inf], [10] * 4, 0.5)


def test_bad_arrays_ratio_and_max_ratio() -> None:
    with pytest.raises(ValueError, match="1-D of equal length"):
        alpha_pruning_ratios([1.0, 2.0], [10], 0.5)
    with pytest.raises(ValueError, match="positive integers"):
        alpha_pruning_ratios([1.0, 2.0], [10, 0], 0.5)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 1.0)
    with pytest.raises(ValueError, match="max_ratio must be in"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.5, max_ratio=0.0)
    with pytest.raises(ValueError, match="max_ratio must be in"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.5, max_ratio=1.0)
    with pytest.raises(ValueError, match=r"ratio=0.9 is out of reach.*max_ratio=0.8"):
        alpha_pruning_ratios([1.0, 2.0], [10, 10], 0.9, max_ratio=0.8)


# ---------------------------------------------------------------------------------------------
# End to end: tailwise.prune.prune


def test_prune_with_alpha_pruning_meets_the_budget() -> None:
    model = heavy_and_gaussian_model()
    model.append(nn.Linear(128, 10, bias=False))  # the output layer, protected
    result = prune(model, 0.5, method="magnitude", allocation="alpha_pruning", progress=False)
    report = result.report.set_index("layer")
    assert report.loc["2", "achieved"] == 0.0  # output layer kept
    sizes = {"0": 128 * 128, "1": 128 * 128}
    removed = sum(report.loc[name, "achieved"] * n for name, n in sizes.items())
    # floor(r_l N_l) weights per layer: the budget to within one weight per layer.
    assert 0.5 * sum(sizes.values()) - removed == pytest.approx(0.0, abs=len(sizes))
    # The requested ratios are the allocation over the budgeted layers.
    expected = allocate(model, 0.5, "alpha_pruning", exclude=r"^2\.weight$")
    assert report.loc["0", "ratio"] == pytest.approx(expected["0"], rel=1e-12)
    assert report.loc["1", "ratio"] == pytest.approx(expected["1"], rel=1e-12)
    assert report.loc["0", "achieved"] > report.loc["1", "achieved"]  # Gaussian pruned more
    zeros = [float((weight(result.model, name) == 0).double().mean()) for name in ("0", "1")]
    assert zeros == pytest.approx([report.loc["0", "achieved"], report.loc["1", "achieved"]])


def test_epsilon_reaches_prune_and_prune_file(tmp_path: Path) -> None:
    """``epsilon`` passes through prune() and prune_file(): the spread of the ratios follows
    it, and both paths give the ratios of allocate() with that epsilon."""
    from safetensors.torch import save_file

    from tailwise.prune import prune_file

    model = heavy_and_gaussian_model()
    model.append(nn.Linear(128, 10, bias=False))
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    spreads = []
    for epsilon in (0.05, 0.45):
        expected = allocate(model, 0.5, "alpha_pruning", exclude=r"^2\.weight$", epsilon=epsilon)
        in_memory = prune(
            model, 0.5, allocation="alpha_pruning", epsilon=epsilon, progress=False
        ).report.set_index("layer")
        on_disk = prune_file(
            path, None, 0.5, allocation="alpha_pruning", epsilon=epsilon, progress=False
        ).report.set_index("layer")
        for name in ("0", "1"):
            assert in_memory.loc[name, "ratio"] == pytest.approx(expected[name], rel=1e-9)
            assert on_disk.loc[name, "ratio"] == pytest.approx(expected[name], rel=1e-9)
        spreads.append(expected["0"] - expected["1"])
    assert 0 < spreads[0] < spreads[1]
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        prune(model, 0.5, allocation="alpha_pruning", epsilon=1.5, progress=False)
