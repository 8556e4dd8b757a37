"""tailwise.loading: load_model, import_factory, example_inputs, parse_shape.

``load_model`` is what ``tailwise prune`` and ``tailwise hessian`` act on: a file written by
tailwise rebuilds itself (architecture + pruning edits in its header); any other weights file
needs a factory building the original architecture.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tailwise import UsageError, WeightsError
from tailwise.loading import example_inputs, import_factory, load_model, parse_shape
from tailwise.models import MLP, VGG, SmallCNN
from tailwise.prune import prune, rebuild_info, save_pruned
from tailwise.reference import reference_checkpoint, reference_model

X = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
IMAGES = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def seeded_mlp() -> MLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MLP(16, [32, 24], 10)


def seeded_cnn() -> SmallCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SmallCNN(channels=(8, 16)).eval()


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``tailwise_test_nets`` in tmp_path, which becomes the current directory."""
    name = "tailwise_test_nets"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc1 = nn.Linear(16, 32)
                    self.fc2 = nn.Linear(32, 10)

                def forward(self, x):
                    return self.fc2(torch.relu(self.fc1(x)))

            def build():
                return Net()

            def not_a_model():
                return "a string"

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["magnitude", "lowrank", "node"])
def test_pruned_tailwise_model_round_trips(method: str, tmp_path: Path) -> None:
    original = seeded_mlp()
    result = prune(original, 0.5, method=method, progress=False)
    path = save_pruned(result, tmp_path / f"{method}.safetensors")
    loaded = load_model(path)
    assert not loaded.training
    assert torch.equal(loaded(X), result.model.eval()(X))
    assert rebuild_info(loaded).architecture == original.architecture()
    assert rebuild_info(loaded).edits == result.edits
    if method == "lowrank":
        assert type(loaded.layers[0]) is nn.Sequential  # the factorized pair is rebuilt


def test_channel_pruned_cnn_round_trips_and_keeps_its_input_shape(tmp_path: Path) -> None:
    model = seeded_cnn()
    result = prune(model, 0.5, method="channel", example_inputs=IMAGES[:1], progress=False)
    path = save_pruned(result, tmp_path / "channels.safetensors")
    loaded = load_model(path)
    assert loaded.features[0].conv.out_channels == 4
    assert torch.equal(loaded(IMAGES), result.model.eval()(IMAGES))
    # the architecture travels with the file: the loaded model can be traced again
    shape = example_inputs(loaded)
    assert shape is not None and tuple(shape.shape) == (1, 1, 8, 8)


def test_the_reference_checkpoint_loads_as_the_reference_model() -> None:
    loaded = load_model(reference_checkpoint(progress=False))
    x = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), reference_model(progress=False)(x))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_with_a_callable_factory(suffix: str, tmp_path: Path) -> None:
    model = seeded_cnn()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), str(path))
    loaded = load_model(path, factory=lambda: SmallCNN(channels=(8, 16)))
    assert loaded is not model and not loaded.training
    assert torch.equal(loaded(IMAGES), model(IMAGES))
    # only the factory knew the architecture
    assert rebuild_info(loaded).architecture is None


def test_nested_checkpoint_and_class_as_factory(tmp_path: Path) -> None:
    model = SmallCNN().eval()
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    loaded = load_model(path, factory=SmallCNN)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded(x), model(x))


def test_state_dict_with_a_factory_string_from_the_current_directory(
    factories: str, tmp_path: Path
) -> None:
    module = import_factory(f"{factories}:build")()
    path = tmp_path / "net.pt"
    torch.save(module.state_dict(), path)
    path_before = list(sys.path)
    for spec in (f"{factories}:build", f"{factories}:Net"):
        loaded = load_model(path, factory=spec)
        assert type(loaded).__name__ == "Net"
        assert torch.equal(loaded(X), module(X))
    assert sys.path == path_before  # the current directory was searched, not added for good


def test_import_factory_of_an_installed_module() -> None:
    assert import_factory("tailwise.models:SmallCNN") is SmallCNN
    assert import_factory("tailwise.models.mlp:MLP") is MLP


# --- errors -------------------------------------------------------------------------------


def test_missing_file_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="no such file"):
        load_model(tmp_path / "missing.pt", factory=SmallCNN)


def test_folder_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="folder"):
        load_model(tmp_path)


def test_torch_checkpoint_without_factory_asks_for_one(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(seeded_cnn().state_dict(), path)
    with pytest.raises(UsageError, match="--model") as caught:
        load_model(path)
    assert "factory=" in str(caught.value)


def test_safetensors_without_architecture_asks_for_a_factory(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file(seeded_cnn().state_dict(), str(path))
    with pytest.raises(UsageError, match="architecture") as caught:
        load_model(path)
    assert "--model" in str(caught.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_corrupt_file_is_a_weights_error(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsError, match="corrupt") as caught:
        load_model(path, factory=SmallCNN)
    assert str(path) in str(caught.value)


def test_corrupt_safetensors_without_factory_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="corrupt") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_weights_that_do_not_fit_the_factory_are_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt"
    torch.save(seeded_cnn().state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(path, factory=SmallCNN)  # default channels (32, 64), not (8, 16)


def test_pickled_module_needs_trust_pickle(tmp_path: Path) -> None:
    model = seeded_cnn()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(WeightsError, match="trust_pickle"):
        load_model(path, factory=lambda: SmallCNN(channels=(8, 16)))
    loaded = load_model(path, factory=lambda: SmallCNN(channels=(8, 16)), trust_pickle=True)
    assert torch.equal(loaded(IMAGES), model(IMAGES))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("no_colon", "package.module:callable"),
        (":build", "package.module:callable"),
        ("tailwise.models:", "package.module:callable"),
        ("tailwise_no_such_module_xyz:build", "cannot import"),
        ("tailwise.models:NoSuchNet", "no callable"),
        ("tailwise.models:__doc__", "no callable"),
    ],
)
def test_bad_factory_spec_is_a_usage_error(spec: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(seeded_cnn().state_dict(), path)
    with pytest.raises(UsageError, match=re.escape(needle)):
        import_factory(spec)
    with pytest.raises(UsageError, match=re.escape(needle)):
        load_model(path, factory=spec)


def test_factory_of_the_current_directory_errors(factories: str, tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.save(import_factory(f"{factories}:build")().state_dict(), path)
    with pytest.raises(UsageError, match="no callable"):
        load_model(path, factory=f"{factories}:NOT_CALLABLE")
    with pytest.raises(UsageError, match=r"not an nn\.Module"):
        load_model(path, factory=f"{factories}:not_a_model")


# --- example inputs and shapes ------------------------------------------------------------


def test_example_inputs_from_the_recorded_architecture() -> None:
    reference = example_inputs(reference_model(progress=False))
    assert reference is not None and tuple(reference.shape) == (1, 64)
    vgg = example_inputs(VGG("vgg11"))
    assert vgg is not None and tuple(vgg.shape) == (1, 3, 32, 32)
    assert not vgg.any()  # zeros


def test_example_inputs_of_a_plain_model_needs_a_shape() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    assert example_inputs(plain) is None
    given = example_inputs(plain, "1x3x8x8")
    assert given is not None and tuple(given.shape) == (1, 3, 8, 8)
    assert tuple(example_inputs(plain, (2, 3, 5, 5)).shape) == (2, 3, 5, 5)  # type: ignore[union-attr]
    # an explicit shape wins over the recorded one
    assert tuple(example_inputs(SmallCNN(), "2,1,8,8").shape) == (2, 1, 8, 8)  # type: ignore[union-attr]


def test_parse_shape() -> None:
    assert parse_shape("1x3x8x8") == (1, 3, 8, 8)
    assert parse_shape("1,64") == (1, 64)
    assert parse_shape("7") == (7,)


@pytest.mark.parametrize("text", ["", "a,b", "1x3xx8", "0,3", "1,-2", "1.5,2"])
def test_bad_shapes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="input shape"):
        parse_shape(text)
    with pytest.raises(UsageError, match="input shape"):
        example_inputs(nn.Linear(2, 2), text)


def test_a_factory_that_needs_arguments_is_a_usage_error(tmp_path: Path) -> None:
    model = MLP(64, [32], 10)
    path = tmp_path / "mlp.safetensors"
    save_file(model.state_dict(), str(path))
    with pytest.raises(UsageError, match="MLP cannot be called without arguments"):
        load_model(path, factory=MLP)
    with pytest.raises(UsageError, match="cannot be called without arguments"):
        load_model(path, factory="tailwise.models:MLP")
