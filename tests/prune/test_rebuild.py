"""tailwise.prune.save_pruned / load_pruned and the module specs they store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tailwise.models import MLP, VGG, DenseNet, SmallCNN, resnet20
from tailwise.prune import (
    PruneResult,
    load_pruned,
    prune_channels,
    prune_lowrank,
    prune_magnitude,
    prune_nodes,
    save_pruned,
)
from tailwise.prune.rebuild import apply_edits, build_module, module_spec, read_metadata
from tailwise.weights import WeightsError

MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (lambda: MLP(8, [16, 12], 3), (2, 8)),
    "smallcnn": (lambda: SmallCNN(channels=(8, 16)), (2, 1, 8, 8)),
    "vgg-small": (lambda: VGG("vgg-small"), (2, 3, 32, 32)),
    "resnet20": (resnet20, (2, 3, 16, 16)),
    "densenet": (
        lambda: DenseNet(growth_rate=4, block_layers=(2, 2), init_channels=8),
        (2, 3, 16, 16),
    ),
}

METHODS: dict[str, Callable[[nn.Module, Tensor], PruneResult]] = {
    "magnitude": lambda m, x: prune_magnitude(m, 0.6),
    "magnitude-centred": lambda m, x: prune_magnitude(m, 0.6, center=True, scope="global"),
    "nodes": lambda m, x: prune_nodes(m, 0.5),
    "lowrank": lambda m, x: prune_lowrank(m, 0.5),
    "channel": lambda m, x: prune_channels(m, 0.5, x),
}


def nontrivial_batchnorm(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine parameters, so that the saved buffers matter."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    return model.eval()


def outputs(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", list(MODELS))
def test_save_and_load_give_identical_outputs(tmp_path: Path, name: str, method: str) -> None:
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = nontrivial_batchnorm(factory())
    x = torch.randn(shape)
    result = METHODS[method](model, x)
    expected = outputs(result.model, x)
    assert not torch.equal(expected, outputs(model, x))
    path = save_pruned(result, tmp_path / "pruned.safetensors")
    assert path == tmp_path / "pruned.safetensors"

    loaded = load_pruned(path)  # architecture from the file
    assert not loaded.training
    assert not torch_prune.is_pruned(loaded)  # masks are baked into plain weights
    assert torch.equal(outputs(loaded, x), expected)
    torch.manual_seed(1)  # a fresh instance with other weights: all are overwritten
    given = load_pruned(path, model=factory())
    assert torch.equal(outputs(given, x), expected)
    assert torch.equal(outputs(load_pruned(path, model=factory), x), expected)
    # Saving did not bake the masks into the live model.
    assert torch_prune.is_pruned(result.model) == method.startswith(("magnitude", "nodes"))


def test_file_is_safetensors_with_edits_and_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    x = torch.randn(2, 1, 8, 8)
    result = prune_channels(model, 0.5, x)
    path = save_pruned(result, tmp_path / "cnn.safetensors", metadata={"run": "abc"})
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        keys = set(handle.keys())
    assert json.loads(meta["tailwise_edits"]) == json.loads(json.dumps(result.edits))
    assert set(json.loads(meta["tailwise_edits"])) == {
        "features.0.conv",
        "features.0.bn",
        "features.1.conv",
        "features.1.bn",
        "head",
    }
    assert json.loads(meta["architecture"]) == model.architecture()
    assert meta["run"] == "abc"
    summary = json.loads(meta["tailwise_prune"])
    assert summary["method"] == "channel"
    assert summary["params_after"] == result.totals()["params_after"]
    assert read_metadata(path) == meta
    assert keys == set(result.model.state_dict())
    state = load_file(str(path))
    assert state["features.0.conv.weight"].shape == (4, 1, 3, 3)


def test_magnitude_file_holds_baked_weights_not_masks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP(8, [6], 3)
    result = prune_magnitude(model, 0.5)
    path = save_pruned(result, tmp_path / "mlp.safetensors")
    state = load_file(str(path))
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["layers.0.weight"], result.model.layers[0].weight.detach())
    assert int((state["layers.0.weight"] == 0).sum()) == 24
    assert json.loads(read_metadata(path)["tailwise_edits"]) == {}


def test_wrong_suffix_raises_and_writes_nothing(tmp_path: Path) -> None:
    result = prune_magnitude(MLP(4, [3], 2), 0.5)
    with pytest.raises(ValueError, match="safetensors"):
        save_pruned(result, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_missing_architecture_needs_a_model(tmp_path: Path) -> None:
    torch.manual_seed(0)

    def plain() -> nn.Sequential:
        return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))

    model = plain()
    result = prune_lowrank(model, 0.5)
    assert result.architecture is None
    path = save_pruned(result, tmp_path / "plain.safetensors")
    assert "architecture" not in read_metadata(path)
    with pytest.raises(ValueError, match="architecture") as info:
        load_pruned(path)
    assert "model=" in str(info.value)
    x = torch.randn(2, 10)
    assert torch.equal(outputs(load_pruned(path, model=plain()), x), outputs(result.model, x))


def test_save_a_plain_module_with_explicit_edits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP(8, [6], 3)
    result = prune_lowrank(model, {"layers.0": 0.5})
    path = save_pruned(
        result.model,
        tmp_path / "m.safetensors",
        edits=result.edits,
        architecture=result.architecture,
    )
    x = torch.randn(2, 8)
    assert torch.equal(outputs(load_pruned(path), x), outputs(result.model, x))
    # The pruned model carries its rebuild information, so saving it alone is enough ...
    carried = save_pruned(result.model, tmp_path / "carried.safetensors")
    assert json.loads(read_metadata(carried)["tailwise_edits"]) == result.edits
    assert torch.equal(outputs(load_pruned(carried), x), outputs(result.model, x))
    # ... and without it the file has no edits and cannot be rebuilt.
    del result.model.tailwise_rebuild
    bare = save_pruned(result.model, tmp_path / "bare.safetensors")
    assert json.loads(read_metadata(bare)["tailwise_edits"]) == {}
    with pytest.raises(ValueError, match="do not fit"):
        load_pruned(bare, model=MLP(8, [6], 3))


def test_loading_into_the_wrong_architecture_is_a_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = prune_lowrank(MLP(8, [16], 3), {"layers.0": 0.5})
    path = save_pruned(result, tmp_path / "mlp.safetensors")
    with pytest.raises(ValueError, match=r"layers\.0"):
        load_pruned(path, model=SmallCNN())
    with pytest.raises(ValueError, match="do not fit"):
        load_pruned(path, model=MLP(8, [16], 5))  # layers.1 has the wrong shape
    with pytest.raises(WeightsError, match="no such file"):
        load_pruned(tmp_path / "missing.safetensors")


def test_saving_a_model_with_a_shared_pruned_layer(tmp_path: Path) -> None:
    # BUG (library): _baked_state() walks model.named_modules(), which lists a shared module
    # once, so only its first name gets the baked "weight"; the second name keeps
    # "weight_orig"/"weight_mask" in the file and load_pruned fails with "do not fit".
    torch.manual_seed(0)

    def tied() -> nn.Sequential:
        layer = nn.Linear(4, 4)
        return nn.Sequential(layer, nn.ReLU(), layer)

    result = prune_magnitude(tied(), 0.5)
    path = save_pruned(result, tmp_path / "tied.safetensors")
    assert not any(key.endswith(("_orig", "_mask")) for key in load_file(str(path)))
    x = torch.randn(2, 4)
    assert torch.equal(outputs(load_pruned(path, model=tied()), x), outputs(result.model, x))


# --- module specs -----------------------------------------------------------------------------

SPEC_MODULES: list[nn.Module] = [
    nn.Linear(3, 2),
    nn.Linear(5, 4, bias=False),
    nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, bias=False, padding_mode="circular"),
    nn.Conv2d(4, 6, (3, 1), stride=(2, 1), padding=(1, 0), groups=2),
    nn.Conv2d(2, 2, 3, padding="same"),
    nn.Conv3d(1, 2, 2, padding=1, padding_mode="replicate"),
    nn.BatchNorm1d(5, eps=1e-3, momentum=None),
    nn.BatchNorm2d(4, affine=False),
    nn.BatchNorm3d(3, track_running_stats=False),
    nn.LayerNorm((4, 5), eps=1e-6),
    nn.LayerNorm(6, elementwise_affine=False),
    nn.LayerNorm(7, bias=False),
    nn.GroupNorm(2, 6, affine=False),
    nn.PReLU(3),
    nn.Embedding(10, 4, padding_idx=2),
    nn.Sequential(nn.Linear(3, 1, bias=False), nn.Sequential(nn.Conv2d(1, 2, 1))),
]


@pytest.mark.parametrize("module", SPEC_MODULES, ids=lambda m: type(m).__name__)
def test_module_spec_round_trip(module: nn.Module) -> None:
    spec = module_spec(module)
    stored = json.loads(json.dumps(spec))  # what the file holds
    rebuilt = build_module(stored)
    assert type(rebuilt) is type(module)
    assert repr(rebuilt) == repr(module)
    assert module_spec(rebuilt) == spec
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes


def test_module_spec_by_hand_and_errors() -> None:
    assert module_spec(nn.Linear(3, 2, bias=False)) == {
        "type": "Linear",
        "in_features": 3,
        "out_features": 2,
        "bias": False,
    }
    spec = module_spec(nn.Conv2d(2, 3, 3))
    assert spec["kernel_size"] == [3, 3] and spec["bias"] is True and spec["groups"] == 1
    with pytest.raises(TypeError, match="ReLU"):
        module_spec(nn.ReLU())
    with pytest.raises(TypeError, match="ModuleList"):
        module_spec(nn.ModuleList([nn.Linear(2, 2)]))
    with pytest.raises(ValueError, match="Dropout"):
        build_module({"type": "Dropout", "p": 0.5})
    with pytest.raises(ValueError, match="Linear"):
        build_module({"type": "Linear", "in_features": 3})


def test_apply_edits_keeps_dtype_and_names_missing_modules() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).double()
    spec = module_spec(nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 4)))
    apply_edits(model, {"0": spec})
    assert isinstance(model[0], nn.Sequential)
    assert model[0][0].weight.dtype == torch.float64
    with pytest.raises(ValueError, match=r"nothing\.here"):
        apply_edits(model, {"nothing.here": spec})


def test_pruning_history_survives_chained_pruning_and_reloading(tmp_path: Path) -> None:
    # channel -> save -> load -> lowrank -> save -> load: the second file holds both edits.
    torch.manual_seed(0)
    model = SmallCNN(channels=(16, 32)).eval()
    x = torch.randn(2, 1, 8, 8)
    first = prune_channels(model, 0.5, x[:1])
    path = save_pruned(first, tmp_path / "a.safetensors")
    loaded = load_pruned(path)
    second = prune_lowrank(loaded, {"features.1.conv": 0.5, "head": 0.5})
    assert set(first.edits) <= set(second.edits) | {
        name for name in first.edits if name.startswith(("features.1.conv", "head"))
    }
    assert second.architecture == model.architecture()
    final = load_pruned(save_pruned(second.model, tmp_path / "b.safetensors"))
    assert torch.equal(final(x), second.model.eval()(x))
    assert isinstance(final.head, nn.Sequential)
    assert final.features[0].conv.out_channels == 8
