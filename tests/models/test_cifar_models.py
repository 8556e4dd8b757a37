"""tailwise.models: VGG, ResNet and DenseNet, architecture descriptions and build_model."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch_pruning as tp
from torch import nn

from tailwise.models import (
    MLP,
    VGG,
    VGG_CONFIGS,
    DenseNet,
    ResNet,
    SmallCNN,
    build_model,
    densenet40,
    example_input_shape,
    resnet18,
    resnet20,
    resnet34,
    vgg19,
)

# --- parameter counts by formula (independent of the model code) ---------------------------


def conv_bn_count(c_in: int, c_out: int, kernel: int) -> int:
    """Bias-free conv (c_out, c_in, k, k) followed by BatchNorm (weight and bias, c_out each)."""
    return kernel * kernel * c_in * c_out + 2 * c_out


def linear_count(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def resnet_count(
    blocks_per_stage: Sequence[int], widths: Sequence[int], in_channels: int, classes: int
) -> int:
    total = conv_bn_count(in_channels, widths[0], 3)
    channels = widths[0]
    for stage, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
        for block in range(count):
            total += conv_bn_count(channels, width, 3) + conv_bn_count(width, width, 3)
            if block == 0 and (stage > 0 or channels != width):
                total += conv_bn_count(channels, width, 1)  # projection shortcut
            channels = width
    return total + linear_count(channels, classes)


def vgg_count(
    config: Sequence[int | str],
    *,
    batch_norm: bool,
    hidden: Sequence[int] = (),
    image_size: int = 32,
    classes: int = 10,
) -> int:
    total, channels, pools = 0, 3, 0
    for entry in config:
        if entry == "M":
            pools += 1
            continue
        assert isinstance(entry, int)
        # With BN: BN weight + bias and no conv bias; without: the conv bias only.
        total += 9 * channels * entry + (2 * entry if batch_norm else entry)
        channels = entry
    side = image_size // 2**pools
    widths = [channels * side * side, *hidden, classes]
    return total + sum(linear_count(a, b) for a, b in itertools.pairwise(widths))


def densenet_count(
    growth: int, block_layers: Sequence[int], init: int, compression: float, classes: int
) -> int:
    total, channels = 9 * 3 * init, init
    for index, count in enumerate(block_layers):
        for _ in range(count):
            total += 2 * channels + 9 * channels * growth  # BN, bias-free 3x3 conv
            channels += growth
        if index < len(block_layers) - 1:
            kept = int(compression * channels)
            total += 2 * channels + channels * kept  # BN, bias-free 1x1 conv
            channels = kept
    return total + 2 * channels + linear_count(channels, classes)


Model = MLP | SmallCNN | VGG | ResNet | DenseNet


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet_parameter_counts() -> None:
    # Published count of the common CIFAR ResNet-18 (3x3 stem, projection shortcuts).
    assert resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 3, 10) == 11_173_962
    with torch.device("meta"):  # counts need shapes only
        assert parameter_count(resnet18()) == 11_173_962
        assert parameter_count(resnet20()) == resnet_count((3, 3, 3), (16, 32, 64), 3, 10)
        assert parameter_count(resnet20(num_classes=100)) == resnet_count(
            (3, 3, 3), (16, 32, 64), 3, 100
        )
        assert parameter_count(ResNet((1, 2), (8, 8))) == resnet_count((1, 2), (8, 8), 3, 10)
    assert resnet_count((3, 3, 3), (16, 32, 64), 3, 10) == 272_474


@pytest.mark.parametrize("name", sorted(VGG_CONFIGS))
@pytest.mark.parametrize("batch_norm", [True, False])
def test_vgg_parameter_counts(name: str, batch_norm: bool) -> None:
    with torch.device("meta"):
        model = VGG(name, batch_norm=batch_norm)
        with_hidden = VGG(name, batch_norm=batch_norm, hidden=[64, 32])
    config = VGG_CONFIGS[name]
    assert parameter_count(model) == vgg_count(config, batch_norm=batch_norm)
    assert parameter_count(with_hidden) == vgg_count(config, batch_norm=batch_norm, hidden=[64, 32])


def test_vgg_parameter_count_for_custom_config_and_image_size() -> None:
    config: list[int | str] = [8, 8, "M", 16, "M", 24]
    model = VGG(config, image_size=12, batch_norm=False)
    assert parameter_count(model) == vgg_count(config, batch_norm=False, image_size=12)
    assert model.head.in_features == 24 * 3 * 3


def test_densenet_parameter_counts() -> None:
    assert parameter_count(DenseNet()) == densenet_count(12, (4, 4, 4), 24, 0.5, 10) == 76_810
    model = DenseNet(6, (3, 5), init_channels=10, compression=0.7, num_classes=7)
    assert parameter_count(model) == densenet_count(6, (3, 5), 10, 0.7, 7)


def test_zoo_factories_match_the_formulas() -> None:
    with torch.device("meta"):
        # Huang et al. 2017 Table 2: DenseNet (L=40, k=12), "1.0M" parameters.
        assert parameter_count(densenet40()) == densenet_count(12, (12, 12, 12), 16, 1.0, 10)
        assert parameter_count(vgg19()) == vgg_count(VGG_CONFIGS["vgg19"], batch_norm=True)
        assert parameter_count(resnet34()) == resnet_count((3, 4, 6, 3), (64, 128, 256, 512), 3, 10)
        half = resnet34(width=0.5, num_classes=100)
        assert parameter_count(half) == resnet_count((3, 4, 6, 3), (32, 64, 128, 256), 3, 100)
    assert densenet_count(12, (12, 12, 12), 16, 1.0, 10) == 1_019_722
    assert vgg_count(VGG_CONFIGS["vgg19"], batch_norm=True) == 20_035_018


# --- shapes and state_dict names -------------------------------------------------------------

MODELS: dict[str, Callable[[], Model]] = {
    "vgg11": lambda: VGG("vgg11"),
    "vgg-small-plain": lambda: VGG("vgg-small", batch_norm=False, hidden=[32]),
    "resnet18": resnet18,
    "resnet20": resnet20,
    "densenet": DenseNet,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shapes_on_cifar_images(name: str) -> None:
    model = MODELS[name]().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_state_dict_names() -> None:
    vgg = VGG("vgg-small").state_dict()
    assert vgg["features.0.conv.weight"].shape == (16, 3, 3, 3)
    assert "features.2.bn.running_mean" in vgg
    assert vgg["head.weight"].shape == (10, 64 * 4 * 4)
    assert "features.0.conv.bias" in VGG("vgg-small", batch_norm=False).state_dict()

    resnet = resnet20().state_dict()
    assert resnet["stem.conv.weight"].shape == (16, 3, 3, 3)
    assert resnet["stages.1.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert resnet["stages.1.0.shortcut.conv.weight"].shape == (32, 16, 1, 1)
    assert not any(key.startswith("stages.0.0.shortcut") for key in resnet)  # identity
    assert resnet["head.weight"].shape == (10, 64)

    densenet = DenseNet().state_dict()
    assert densenet["stem.weight"].shape == (24, 3, 3, 3)
    assert densenet["blocks.0.layers.3.conv.weight"].shape == (12, 24 + 3 * 12, 3, 3)
    assert densenet["transitions.0.conv.weight"].shape == (36, 72, 1, 1)
    assert densenet["final_bn.weight"].shape == (90,)


def test_resnet_imagenet_stem_quarters_the_input() -> None:
    model = ResNet((1,), (8,), stem="imagenet", in_channels=1, num_classes=4)
    assert shapes(model)["stem.conv.weight"] == (8, 1, 7, 7)
    assert model.stem(torch.zeros(1, 1, 64, 64)).shape == (1, 8, 16, 16)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


@pytest.mark.parametrize(
    ("model", "bad_input", "message"),
    [
        (VGG("vgg-small"), torch.zeros(1, 3, 28, 28), r"VGG: expected input of shape \(N, 3, 32"),
        (ResNet((1,), (4,)), torch.zeros(1, 1, 32, 32), r"ResNet: expected input of shape \(N, 3,"),
        (DenseNet(), torch.zeros(1, 3, 2, 2), "DenseNet: .* H, W >= 4"),
    ],
)
def test_forward_rejects_wrong_input_shapes(
    model: nn.Module, bad_input: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        model(bad_input)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: VGG("vgg99"), "VGG: unknown config 'vgg99'; known: .*vgg11"),
        (lambda: VGG([]), "VGG: config must name at least one convolution"),
        (lambda: VGG(["M", 8]), "VGG: config entry 0 is 'M' but does not follow a convolution"),
        (lambda: VGG([8, "M", "M"]), "VGG: config entry 2 is 'M'"),
        (lambda: VGG([8, 0]), r"VGG: config entries must be positive ints .* got 0 at position 1"),
        (lambda: VGG([8, "pool"]), "VGG: config entries must be positive ints"),
        (lambda: VGG("vgg11", image_size=16), "VGG: image_size=16 is too small for 5 max pools"),
        (lambda: VGG(hidden=[0]), "VGG: each hidden width must be a positive int"),
        (lambda: VGG(num_classes=0), "VGG: num_classes must be a positive int"),
        (lambda: ResNet((2, 2), (8,)), "ResNet: blocks_per_stage and widths must be non-empty"),
        (lambda: ResNet((), ()), "ResNet: blocks_per_stage and widths must be non-empty"),
        (lambda: ResNet((2, 0), (8, 8)), "ResNet: each entry of blocks_per_stage"),
        (
            lambda: ResNet((2,), (8.0,)),  # type: ignore[arg-type]
            "ResNet: each entry of widths must be a positive int",
        ),
        (lambda: ResNet(stem="tiny"), r"ResNet: stem must be one of \['cifar', 'imagenet'\]"),
        (lambda: ResNet(in_channels=0), "ResNet: in_channels must be a positive int"),
        (lambda: DenseNet(growth_rate=0), "DenseNet: growth_rate must be a positive int"),
        (lambda: DenseNet(block_layers=()), "DenseNet: block_layers must name at least one"),
        (lambda: DenseNet(block_layers=(4, -1)), "DenseNet: each entry of block_layers"),
        (lambda: DenseNet(compression=0.0), r"DenseNet: compression must be in \(0, 1\]"),
        (lambda: DenseNet(compression=1.5), r"DenseNet: compression must be in \(0, 1\]"),
        (
            lambda: DenseNet(1, (1, 1), init_channels=1, compression=0.4),
            "DenseNet: compression=0.4 keeps no channel of the 2 after block 0",
        ),
    ],
)
def test_constructors_reject_bad_arguments(build: Callable[[], nn.Module], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# --- initialisation and training -------------------------------------------------------------

TINY: dict[str, Callable[[], Model]] = {
    "vgg": lambda: VGG([8, "M", 16, "M"], image_size=16, hidden=[16]),
    "resnet": lambda: ResNet((1, 1), (8, 16)),
    "densenet": lambda: DenseNet(4, (2, 2), init_channels=8),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_initialisation_is_deterministic_under_a_seed(name: str) -> None:
    torch.manual_seed(0)
    first = TINY[name]().state_dict()
    torch.manual_seed(0)
    second = TINY[name]().state_dict()
    torch.manual_seed(1)
    other = TINY[name]().state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_training_steps_stay_finite(name: str) -> None:
    torch.manual_seed(0)
    model = TINY[name]().train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


# --- channel pruning with Torch-Pruning ------------------------------------------------------


def prune_first_out_channel(model: Model) -> None:
    """Remove output channel 0 of the first conv and everything coupled to it."""
    example = torch.randn(*example_input_shape(model.architecture()))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    group = graph.get_pruning_group(first, tp.prune_conv_out_channels, idxs=[0])
    assert graph.check_pruning_group(group)
    group.prune()


@pytest.mark.parametrize("name", ["vgg-small", "vgg-small-plain"])
def test_pruned_vgg_runs_and_is_still_described(name: str) -> None:
    model = VGG("vgg-small") if name == "vgg-small" else MODELS[name]()
    prune_first_out_channel(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    architecture = model.architecture()
    assert architecture["config"] == [15, "M", 32, "M", 64, "M"]
    rebuilt = build_model(architecture)
    rebuilt.load_state_dict(model.state_dict())  # same keys and shapes
    model.eval()
    rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), model(x))


def test_pruned_resnet_runs_but_no_longer_matches_its_constructor() -> None:
    model = resnet20()
    prune_first_out_channel(model)
    pruned = shapes(model)
    # The stem feeds the whole first-stage residual stream, so all of it loses the channel.
    assert pruned["stem.conv.weight"] == (15, 3, 3, 3)
    for block in range(3):
        assert pruned[f"stages.0.{block}.conv1.weight"] == (16, 15, 3, 3)
        assert pruned[f"stages.0.{block}.conv2.weight"] == (15, 16, 3, 3)
    assert pruned["stages.1.0.shortcut.conv.weight"] == (32, 15, 1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # The blocks' inner width (conv1 outputs) stays 16, which (blocks, widths) cannot express.
    with pytest.raises(ValueError, match="ResNet: its constructor arguments no longer describe"):
        model.architecture()


def test_pruned_densenet_keeps_its_concatenations_consistent() -> None:
    model = DenseNet()
    prune_first_out_channel(model)
    pruned = shapes(model)
    # The stem's maps reach every layer of the first block and its transition by concatenation.
    assert pruned["stem.weight"] == (23, 3, 3, 3)
    for index in range(4):
        assert pruned[f"blocks.0.layers.{index}.bn.weight"] == (23 + 12 * index,)
        assert pruned[f"blocks.0.layers.{index}.conv.weight"] == (12, 23 + 12 * index, 3, 3)
    # The transition reads all 71 maps; its 36 outputs are not coupled to the stem.
    assert pruned["transitions.0.conv.weight"] == (36, 23 + 4 * 12, 1, 1)
    assert pruned["blocks.1.layers.0.conv.weight"] == (12, 36, 3, 3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="DenseNet: its constructor arguments no longer"):
        model.architecture()


# --- architecture(), build_model and example_input_shape ----------------------------------

DESCRIBED: dict[str, Callable[[], Model]] = {
    "mlp": lambda: MLP(64, [32, 16], 10, activation="tanh", bias=False),
    "mlp-linear": lambda: MLP(5, [], 3),
    "small-cnn": lambda: SmallCNN(3, 7, channels=(4, 8), image_size=16),
    "vgg11": lambda: VGG("vgg11"),
    "vgg-custom": lambda: VGG([4, "M", 6], in_channels=1, image_size=10, hidden=[5]),
    "resnet18": resnet18,
    "resnet-imagenet": lambda: ResNet((1, 1), (4, 8), stem="imagenet", num_classes=3),
    "densenet": lambda: DenseNet(5, (2, 3), init_channels=7, compression=0.6),
}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(DESCRIBED))
def test_architecture_round_trips_through_json_and_build_model(name: str) -> None:
    model = DESCRIBED[name]()
    architecture = model.architecture()
    assert architecture["class"] == type(model).__name__
    restored = json.loads(json.dumps(architecture))
    assert restored == architecture
    rebuilt = build_model(restored)
    assert type(rebuilt) is type(model)
    assert list(shapes(rebuilt).items()) == list(shapes(model).items())
    assert rebuilt.architecture() == architecture


def test_architecture_draws_no_random_numbers() -> None:
    model = DenseNet()
    torch.manual_seed(0)
    model.architecture()
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn)


def test_build_model_accepts_the_reference_metadata() -> None:
    # As stored by tailwise.reference in the checkpoint's "architecture" metadata.
    stored = '{"class": "MLP", "in_features": 64, "num_classes": 10, '
    stored += '"hidden": [512, 256, 128], "activation": "relu"}'
    model = build_model(json.loads(stored))
    assert isinstance(model, MLP)
    assert shapes(model) == shapes(MLP(64, [512, 256, 128], 10))
    assert example_input_shape(json.loads(stored)) == (1, 64)


def test_build_model_uses_constructor_defaults() -> None:
    model = build_model({"class": "ResNet"})
    assert isinstance(model, ResNet)
    assert parameter_count(model) == 11_173_962  # the defaults are CIFAR ResNet-18


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        (
            {"class": "AlexNet"},
            r"unknown class 'AlexNet'; known: \['DenseNet', 'EnResNet', 'LeNet5', 'MLP'",
        ),
        ({"in_features": 3}, "unknown class None; known:"),
        ({"class": "VGG", "depth": 11}, r"VGG takes no argument\(s\) \['depth'\]; it takes"),
        ({"class": "MLP", "in_features": 64, "num_classes": 10}, r"MLP needs .*\['hidden'\]"),
        ({"class": "DenseNet", "growth_rate": -1}, "DenseNet: growth_rate must be a positive"),
        ({"class": "MLP", "in_features": 4, "hidden": 8, "num_classes": 2}, "arguments for MLP"),
    ],
)
def test_build_model_rejects_bad_architectures(architecture: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(architecture)
    with pytest.raises(ValueError, match=message):
        example_input_shape(architecture)


def test_build_model_rejects_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="architecture must be a mapping with a 'class' key"):
        build_model(["MLP"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("architecture", "shape"),
    [
        ({"class": "MLP", "in_features": 64, "hidden": [], "num_classes": 10}, (1, 64)),
        ({"class": "SmallCNN"}, (1, 1, 8, 8)),
        ({"class": "SmallCNN", "in_channels": 3, "image_size": 32}, (1, 3, 32, 32)),
        ({"class": "VGG", "config": "vgg16"}, (1, 3, 32, 32)),
        ({"class": "VGG", "config": [4, "M"], "in_channels": 1, "image_size": 28}, (1, 1, 28, 28)),
        ({"class": "ResNet", "in_channels": 1}, (1, 1, 32, 32)),
        ({"class": "DenseNet"}, (1, 3, 32, 32)),
        ({"class": "DenseNet", "block_layers": [1] * 7}, (1, 3, 64, 64)),
    ],
)
def test_example_input_shape(architecture: dict[str, Any], shape: tuple[int, ...]) -> None:
    assert example_input_shape(architecture) == shape
    model = build_model(architecture).eval()
    with torch.no_grad():
        assert model(torch.zeros(shape)).shape[0] == 1
