"""tailwise.prune.prune (the one entry point), find_output_layers, and the runner hooks.

The entry point owns method dispatch, the protected output layers and, for channel pruning
with a metric allocation, a budget that counts what channel pruning really removes. The hooks
(:class:`MaskPruner`, :class:`ReplacePruner`) are what a user overrides to add a method.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tailwise import UsageError
from tailwise.models import MLP, VGG, DenseNet, SmallCNN, resnet20
from tailwise.prune import (
    LayerReport,
    MaskPruner,
    PruneMethod,
    PruneResult,
    Replacement,
    ReplacePruner,
    find_output_layers,
    load_pruned,
    prunable_layers,
    prune,
    prune_channels,
    prune_lowrank,
    prune_magnitude,
    prune_nodes,
    run_pruner,
    save_pruned,
)
from tailwise.prune.layers import REBUILD_ATTR
from tailwise.prune.report import REPORT_COLUMNS
from tailwise.reference import reference_accuracy, reference_model

KEPT = "output layer: kept"
MLP_INPUT = torch.zeros(1, 16)
IMAGE = torch.zeros(1, 3, 32, 32)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: faster for these small models on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seeded(make: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def mlp() -> nn.Module:
    """16 -> 32 -> 24 -> 10: every layer, the 10-way head too, can be factorized at 0.5."""
    return seeded(lambda: MLP(16, [32, 24], 10))


def row(result_report: pd.DataFrame, layer: str) -> pd.Series:
    (index,) = result_report.index[result_report["layer"] == layer]
    return result_report.loc[index]


def masks_of(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: module.weight_mask.clone()
        for name, module in model.named_modules()
        if hasattr(module, "weight_mask")
    }


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


# --- protected output layers -------------------------------------------------------------

HIDDEN_METHODS = ["magnitude", "global-magnitude", "node", "lowrank"]


@pytest.mark.parametrize("method", HIDDEN_METHODS)
def test_output_layer_is_kept_and_reported(method: str) -> None:
    model = mlp()
    head = model.layers[2].weight.detach().clone()
    result = prune(model, 0.5, method=method, progress=False)
    report = result.report
    assert list(report["layer"]) == ["layers.0", "layers.1", "layers.2"]
    out = row(report, "layers.2")
    assert out["ratio"] == 0.0 and out["achieved"] == 0.0
    assert out["note"].startswith(KEPT)
    assert out["params_after"] == out["params_before"]
    # the head is untouched in the pruned model: the same dense Linear, the same weights
    pruned_head = result.model.get_submodule("layers.2")
    assert type(pruned_head) is nn.Linear and not torch_prune.is_pruned(pruned_head)
    assert torch.equal(pruned_head.weight, head)
    for hidden in ("layers.0", "layers.1"):
        assert row(report, hidden)["achieved"] > 0.3
        assert KEPT not in row(report, hidden)["note"]


@pytest.mark.parametrize("method", HIDDEN_METHODS)
def test_protect_outputs_false_prunes_the_output_layer(method: str) -> None:
    result = prune(mlp(), 0.5, method=method, protect_outputs=False, progress=False)
    out = row(result.report, "layers.2")
    assert out["ratio"] == 0.5 and out["achieved"] > 0.3
    assert KEPT not in out["note"]


class HeadFirst(nn.Module):
    """Defines ``head`` before ``body`` but runs body, then head: the output layer is not
    the last Linear in definition order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(32, 5)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class TwoHeads(nn.Module):
    """Two outputs (a tuple): both heads produce a model output."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(16, 32)
        self.classes = nn.Linear(32, 5)
        self.boxes = nn.Linear(32, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.trunk(x))
        return self.classes(h), self.boxes(h)


class LogSoftmaxHead(nn.Module):
    """A classifier whose logits go through log_softmax: no layer's output *is* the output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.fc = nn.Linear(32, 5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.fc(self.body(x)), dim=-1)


def test_find_output_layers_by_identity_and_by_definition_order() -> None:
    model = seeded(HeadFirst).train()
    # without inputs: the last Linear/Conv defined (a guess, wrong for this model)
    assert find_output_layers(model) == ["body.2"]
    # with inputs: the layer whose output tensor is the model's output; flag restored
    assert find_output_layers(model, MLP_INPUT) == ["head"]
    assert model.training
    assert find_output_layers(seeded(TwoHeads), MLP_INPUT) == ["boxes", "classes"]
    assert find_output_layers(mlp(), MLP_INPUT) == ["layers.2"]
    assert find_output_layers(nn.Sequential(nn.ReLU(), nn.Tanh()), MLP_INPUT) == []


def test_output_layer_defined_first_is_found_with_example_inputs() -> None:
    model = seeded(HeadFirst)
    result = prune(model, 0.5, example_inputs=MLP_INPUT, progress=False)
    report = result.report
    assert row(report, "head")["ratio"] == 0.0 and row(report, "head")["note"] == KEPT
    for hidden in ("body.0", "body.2"):
        assert row(report, hidden)["ratio"] == 0.5
        assert row(report, hidden)["achieved"] == pytest.approx(0.5)
    assert not torch_prune.is_pruned(result.model.head)
    assert torch.equal(result.model.head.weight, model.head.weight)


def test_every_output_of_a_two_headed_model_is_kept() -> None:
    result = prune(seeded(TwoHeads), 0.5, example_inputs=MLP_INPUT, progress=False)
    report = result.report.set_index("layer")
    assert report.loc[["classes", "boxes"], "achieved"].tolist() == [0.0, 0.0]
    assert report.loc[["classes", "boxes"], "note"].tolist() == [KEPT, KEPT]
    assert report.loc["trunk", "achieved"] == pytest.approx(0.5)


def test_classifier_before_log_softmax_is_kept_with_example_inputs() -> None:
    model = seeded(LogSoftmaxHead)
    assert row(prune(model, 0.5, progress=False).report, "fc")["achieved"] == 0.0
    with_inputs = prune(model, 0.5, example_inputs=MLP_INPUT, progress=False)
    assert row(with_inputs.report, "fc")["achieved"] == 0.0


def test_channel_pruning_keeps_the_classes_of_a_log_softmax_classifier() -> None:
    model = seeded(LogSoftmaxHead)
    result = prune(model, 0.5, method="channel", example_inputs=MLP_INPUT, progress=False)
    assert result.model(MLP_INPUT).shape == (1, 5)


def test_only_the_output_layer_selected_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="besides the output layer"):
        prune(mlp(), 0.5, include=r"layers\.2\.weight$", progress=False)
    # unprotected, the same selection prunes it
    result = prune(mlp(), 0.5, include=r"layers\.2\.weight$", protect_outputs=False)
    assert list(result.report["layer"]) == ["layers.2"]


# --- the Done-when targets --------------------------------------------------------------


def test_lowrank_alpha_keeps_the_reference_network_accurate() -> None:
    """Done when: a low-rank prune at 0.5 with an alpha allocation keeps >= 90% test accuracy
    (21.67% when the 10-way head was factorized like a hidden layer)."""
    reference = reference_model(progress=False)
    result = prune(
        reference,
        0.5,
        method="lowrank",
        allocation="alpha",
        example_inputs=torch.zeros(1, 64),
        progress=False,
    )
    head = row(result.report, "layers.3")
    assert head["ratio"] == 0.0 and head["note"].startswith(KEPT)
    assert type(result.model.layers[3]) is nn.Linear
    # the budget went to the hidden layers: some are factorized
    hidden = result.report[result.report["layer"] != "layers.3"]
    assert (hidden["achieved"] > 0).any()
    assert reference_accuracy(result.model) >= 0.90


BUDGET_CASES = [
    pytest.param(resnet20, "entropy", id="resnet20-entropy"),
    pytest.param(resnet20, "alpha", id="resnet20-alpha", marks=pytest.mark.slow),
    pytest.param(lambda: VGG("vgg11"), "entropy", id="vgg11-entropy", marks=pytest.mark.slow),
    pytest.param(DenseNet, "entropy", id="densenet-entropy", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("make", "allocation"), BUDGET_CASES)
def test_channel_prune_with_a_metric_allocation_meets_the_parameter_budget(
    make: Callable[[], nn.Module], allocation: str
) -> None:
    """Done when: within 2 points of the requested share of parameters (coupled layers lose
    input channels too: allocate(resnet20, 0.3, "entropy") once removed 53%)."""
    model = seeded(make)
    outputs = model.eval()(IMAGE).shape
    result = prune(
        model, 0.3, method="channel", allocation=allocation, example_inputs=IMAGE, progress=False
    )
    removed = 1.0 - result.totals()["params_ratio"]
    assert abs(removed - 0.3) <= 0.02, removed
    assert result.model(IMAGE).shape == outputs
    # the classifier keeps its classes
    (head,) = find_output_layers(model, IMAGE)
    assert row(result.report, head)["ratio"] == 0.0


def test_uniform_channel_ratio_is_a_share_of_channels_not_of_parameters() -> None:
    model = seeded(lambda: SmallCNN(channels=(32, 64)))
    x = torch.zeros(1, 1, 8, 8)
    result = prune(model, 0.3, method="channel", example_inputs=x, progress=False)
    pruned = result.model
    # every hidden conv keeps floor(0.7 C) of its C output channels, the head its 10 classes
    assert pruned.features[0].conv.out_channels == math.floor(0.7 * 32)
    assert pruned.features[1].conv.out_channels == math.floor(0.7 * 64)
    assert pruned.head.out_features == 10
    assert pruned(x).shape == (1, 10)
    # ... so more than 30% of the parameters go (the next layers lose input channels too)
    assert 1.0 - result.totals()["params_ratio"] > 0.4
    # and it is what prune_channels does with the same ratio
    direct = prune_channels(model, 0.3, x)
    assert [(n, m.weight.shape) for n, m in prunable_layers(pruned).items()] == [
        (n, m.weight.shape) for n, m in prunable_layers(direct.model).items()
    ]


# --- errors -----------------------------------------------------------------------------


def test_unknown_method_lists_the_methods() -> None:
    with pytest.raises(UsageError) as caught:
        prune(mlp(), 0.5, method="random")
    message = str(caught.value)
    assert "'random'" in message
    for method in PruneMethod:
        assert method.value in message


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_ratio_outside_zero_one_is_a_usage_error(ratio: float) -> None:
    with pytest.raises(UsageError, match="ratio"):
        prune(mlp(), ratio)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "global-magnitude", "allocation": "lamp"}, "global-magnitude"),
        ({"method": "global-magnitude", "allocation": "alpha"}, "global-magnitude"),
        ({"method": "lowrank", "center": True}, "center"),
        ({"method": "node", "center": True}, "center"),
        ({"method": "channel", "center": True}, "center"),
        ({"method": "channel"}, "example_inputs"),
        ({"include": "no-such-layer"}, "no-such-layer"),
        ({"exclude": "weight"}, "no Linear/Conv layer"),
        ({"allocation": "no-such-allocation"}, "no-such-allocation"),
    ],
)
def test_bad_options_are_usage_errors(kwargs: dict[str, object], needle: str) -> None:
    model = mlp()
    before = snapshot(model)
    with pytest.raises(UsageError, match=needle):
        prune(model, 0.5, progress=False, **kwargs)  # type: ignore[arg-type]
    assert_same_state(model, before)


def test_center_is_accepted_by_both_magnitude_methods() -> None:
    for method in ("magnitude", "global-magnitude"):
        result = prune(mlp(), 0.5, method=method, center=True, progress=False)
        assert row(result.report, "layers.2")["note"] == KEPT


# --- same model in and out --------------------------------------------------------------

ALL_METHODS = [*HIDDEN_METHODS, "channel"]


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("training", [True, False])
def test_the_callers_model_is_not_modified(method: str, training: bool) -> None:
    model = seeded(lambda: SmallCNN(channels=(8, 16))).train(training)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    structure = repr(model)
    result = prune(model, 0.5, method=method, example_inputs=x, progress=False)
    assert result.model is not model
    assert_same_state(model, before)  # weights and BatchNorm statistics
    assert repr(model) == structure
    assert not torch_prune.is_pruned(model)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    assert not hasattr(model, REBUILD_ATTR)
    assert model.training is training


def test_inplace_prunes_the_callers_model() -> None:
    model = mlp()
    result = prune(model, 0.5, inplace=True, progress=False)
    assert result.model is model
    assert torch_prune.is_pruned(model)
    assert set(masks_of(model)) == {"layers.0", "layers.1"}


# --- prune() is the method functions plus protection -------------------------------------


def assert_same_report(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)


@pytest.mark.parametrize(
    ("method", "direct"),
    [
        ("magnitude", lambda m: prune_magnitude(m, 0.5, progress=False)),
        ("global-magnitude", lambda m: prune_magnitude(m, 0.5, scope="global", progress=False)),
        ("node", lambda m: prune_nodes(m, 0.5, progress=False)),
    ],
)
def test_unprotected_uniform_masks_equal_the_method_function(
    method: str, direct: Callable[[nn.Module], PruneResult]
) -> None:
    model = mlp()
    ours = prune(model, 0.5, method=method, protect_outputs=False, progress=False)
    theirs = direct(model)
    ours_masks, their_masks = masks_of(ours.model), masks_of(theirs.model)
    assert list(ours_masks) == ["layers.0", "layers.1", "layers.2"]
    assert list(ours_masks) == list(their_masks)
    for name, mask in ours_masks.items():
        assert torch.equal(mask, their_masks[name]), name
    assert_same_report(ours.report, theirs.report)
    assert ours.method == method


def test_unprotected_lowrank_equals_prune_lowrank() -> None:
    model = mlp()
    ours = prune(model, 0.5, method="lowrank", protect_outputs=False, progress=False)
    theirs = prune_lowrank(model, 0.5, progress=False)
    assert ours.edits == theirs.edits and ours.edits  # same factorized layers and ranks
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours.model(x), theirs.model(x))
    assert_same_report(ours.report, theirs.report)


def test_unprotected_channel_equals_prune_channels() -> None:
    model = seeded(lambda: SmallCNN(channels=(8, 16)))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = prune(model, 0.5, method="channel", example_inputs=x, protect_outputs=False)
    theirs = prune_channels(model, 0.5, x)
    assert ours.edits == theirs.edits and ours.edits
    torch.testing.assert_close(ours.model(x), theirs.model(x))


def test_protected_magnitude_equals_a_ratio_dict_without_the_head() -> None:
    model = mlp()
    ours = prune(model, 0.5, progress=False)
    theirs = prune_magnitude(model, {"layers.0": 0.5, "layers.1": 0.5}, progress=False)
    ours_masks, their_masks = masks_of(ours.model), masks_of(theirs.model)
    assert list(ours_masks) == list(their_masks) == ["layers.0", "layers.1"]
    for name, mask in ours_masks.items():
        assert torch.equal(mask, their_masks[name]), name
    expected = theirs.report.copy()
    expected.loc[expected["layer"] == "layers.2", "note"] = KEPT
    assert_same_report(ours.report, expected)


# --- the runner hooks: a user's own method ------------------------------------------------


class EveryOther(MaskPruner):
    """Removes every other weight entry (flattened order), whatever the ratio; records calls."""

    method = "every-other"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def layer_mask(self, name: str, module: nn.Module, ratio: float) -> Tensor:
        self.calls.append((name, ratio))
        keep = torch.ones(module.weight.numel(), dtype=torch.bool)
        keep[::2] = False
        return keep.view_as(module.weight)


def test_a_mask_pruner_overriding_layer_mask_gives_torch_prune_masks() -> None:
    model = seeded(lambda: MLP(7, [5], 3))  # odd sizes: every other entry is not half
    pruner = EveryOther()
    result = run_pruner(model, 0.5, pruner, progress=False)
    assert pruner.calls == [("layers.0", 0.5), ("layers.1", 0.5)]
    assert result.method == "every-other"
    report = result.report
    assert tuple(report.columns) == REPORT_COLUMNS
    assert list(report["method"]) == ["every-other", "every-other"]
    for name, n in (("layers.0", 35), ("layers.1", 15)):
        layer = result.model.get_submodule(name)
        assert torch_prune.is_pruned(layer)
        mask = layer.weight_mask.bool().flatten()
        assert mask.tolist() == [i % 2 == 1 for i in range(n)]
        original = model.get_submodule(name).weight.detach()
        assert torch.equal(layer.weight, original * layer.weight_mask)
        got = row(report, name)
        removed = math.ceil(n / 2)
        assert got["achieved"] == pytest.approx(removed / n)
        assert got["params_after"] == got["params_before"] - removed
        expected_error = original.flatten()[::2].norm() / original.norm()
        assert got["rel_error"] == pytest.approx(float(expected_error), rel=1e-5)
    # a permanent prune keeps what the masks computed
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    masked = result.model(x)
    for name in ("layers.0", "layers.1"):
        torch_prune.remove(result.model.get_submodule(name), "weight")
    torch.testing.assert_close(result.model(x), masked)


def test_a_mask_pruner_skips_layers_with_ratio_zero() -> None:
    model = seeded(lambda: MLP(7, [5], 3))
    pruner = EveryOther()
    result = run_pruner(model, {"layers.1": 0.5}, pruner, progress=False)
    assert pruner.calls == [("layers.1", 0.5)]
    assert not torch_prune.is_pruned(result.model.layers[0])
    first = row(result.report, "layers.0")
    assert first["ratio"] == 0.0 and first["achieved"] == 0.0


def test_pruner_apply_returns_layer_report_rows() -> None:
    model = seeded(lambda: MLP(7, [5], 3))
    work = copy.deepcopy(model)
    layers = prunable_layers(work)
    rows, edits = EveryOther().apply(work, layers, dict.fromkeys(layers, 0.5), None, False)
    assert all(type(r) is LayerReport for r in rows)
    assert [r.layer for r in rows] == ["layers.0", "layers.1"]
    assert edits == {}


def low_rank(model: nn.Module, rank: int) -> nn.Module:
    """``model`` with every Linear weight replaced by its best rank-``rank`` approximation."""
    with torch.no_grad():
        for module in prunable_layers(model).values():
            u, s, vh = torch.linalg.svd(module.weight, full_matrices=False)
            module.weight.copy_(u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank])
    return model


class ExactFactors(ReplacePruner):
    """Replaces a Linear of rank <= ``rank`` by an exact factor pair; other layers stay (note)."""

    method = "exact-factors"

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def replace(self, name: str, module: nn.Module, ratio: float) -> Replacement | str:
        assert isinstance(module, nn.Linear)
        out_dim, in_dim = module.weight.shape
        k = self.rank
        if k * (out_dim + in_dim) >= out_dim * in_dim:
            return f"left dense: rank {k} saves nothing"
        u, s, vh = torch.linalg.svd(module.weight.detach(), full_matrices=False)
        first = nn.Linear(in_dim, k, bias=False)
        second = nn.Linear(k, out_dim, bias=module.bias is not None)
        with torch.no_grad():
            first.weight.copy_(torch.diag(s[:k]) @ vh[:k])
            second.weight.copy_(u[:, :k])
            if module.bias is not None:
                second.bias.copy_(module.bias)
        return Replacement(nn.Sequential(first, second), k * (out_dim + in_dim), 0.0, "exact")


def test_a_replace_pruner_swaps_layers_for_equal_output_modules(tmp_path: Path) -> None:
    model = low_rank(seeded(lambda: MLP(32, [32], 4)), 4)
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    result = run_pruner(model, 0.5, ExactFactors(4), example_inputs=x[:1], progress=False)
    report = result.report
    assert tuple(report.columns) == REPORT_COLUMNS
    # layers.0 (32 x 32) is factorized, layers.1 (4 x 32) would not shrink: the note says so
    assert type(result.model.layers[0]) is nn.Sequential
    assert type(result.model.layers[1]) is nn.Linear
    factored, kept = row(report, "layers.0"), row(report, "layers.1")
    assert factored["achieved"] == pytest.approx(1 - 4 * 64 / 1024)
    assert factored["params_after"] == 4 * 64 + 32
    assert factored["note"] == "exact"
    assert factored["flops_after"] == pytest.approx(factored["flops_before"] * 256 / 1024)
    assert kept["achieved"] == 0.0 and kept["note"] == "left dense: rank 4 saves nothing"
    assert kept["params_after"] == kept["params_before"]
    torch.testing.assert_close(result.model(x), model(x), atol=1e-5, rtol=1e-4)
    # the edit is recorded: the saved model rebuilds with the pair in place
    assert set(result.edits) == {"layers.0"}
    path = save_pruned(result, tmp_path / "factored.safetensors")
    loaded = load_pruned(path)
    assert type(loaded.layers[0]) is nn.Sequential
    torch.testing.assert_close(loaded(x), result.model(x))
