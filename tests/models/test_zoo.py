"""tailwise.models.zoo: the CIFAR-shaped model zoo by name, against published parameter counts.

One table of cases (name -> published count and where it is published) drives the count,
shape, round-trip and width tests. Counts are taken on the meta device (shapes only), so even
WRN-28-10 (36.5M parameters) costs nothing; forward passes use tiny widths.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple, cast

import pytest
import torch
import torch_pruning as tp
from torch import nn

from tailwise import UsageError
from tailwise.models import (
    MLP,
    MODEL_NAMES,
    VGG,
    DenseNet,
    EnResNet,
    LeNet5,
    MobileNetV2,
    PreActResNet,
    ResNet,
    SmallCNN,
    WideResNet,
    build_model,
    create_model,
    densenet40,
    example_input_shape,
    fcn4,
    fcn6,
    lenet5,
    mobilenet_v2,
    preact_resnet20,
    preact_resnet38,
    preact_resnet56,
    resnet18,
    resnet20,
    resnet34,
    vgg19,
    wrn28,
)
from tailwise.models.registry import MODEL_CLASSES


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def described(model: nn.Module) -> dict[str, Any]:
    """``model.architecture()`` (every model of the zoo has one; nn.Module does not say so)."""
    architecture: dict[str, Any] = cast(Any, model).architecture()
    return architecture


def count_on_meta(name: str, **kwargs: Any) -> int:
    with torch.device("meta"):
        return parameter_count(create_model(name, **kwargs))


class Case(NamedTuple):
    cls: type[nn.Module]
    measured: int  # measured here, 10 classes, 3 input channels, width 1
    published: float  # the published figure (exact, or as rounded in its source)
    tolerance: float  # relative; 0 for an exact published count
    source: str
    tiny: dict[str, Any]  # create_model arguments for a fast forward pass


CASES: dict[str, Case] = {
    "resnet18": Case(
        ResNet, 11_173_962, 11_173_962, 0, "kuangliu/pytorch-cifar ResNet18", {"width": 1 / 16}
    ),
    "resnet34": Case(
        ResNet, 21_282_122, 21_282_122, 0, "kuangliu/pytorch-cifar ResNet34", {"width": 1 / 16}
    ),
    "resnet20": Case(
        ResNet, 272_474, 0.27e6, 0.02, "He et al. 2016 Table 6 (0.27M)", {"width": 0.5}
    ),
    # kuangliu/pytorch-cifar VGG('VGG19') has 20,040,522: it keeps the 5,504 conv biases
    # (64 + 64 + 128 + 128 + 4 * 256 + 8 * 512) that BatchNorm makes redundant; ours has none.
    "vgg19": Case(
        VGG, 20_035_018, 20_040_522 - 5_504, 0, "kuangliu/pytorch-cifar VGG19", {"width": 1 / 16}
    ),
    "densenet40": Case(
        DenseNet, 1_019_722, 1.0e6, 0.05, "Huang et al. 2017 Table 2 (L=40, k=12: 1.0M)", {}
    ),
    "wrn28-10": Case(
        WideResNet, 36_479_194, 36.5e6, 0.002, "Zagoruyko & Komodakis 2016 (36.5M)", {"width": 0.1}
    ),
    "en2resnet20": Case(
        EnResNet,
        544_564,
        0.54e6,
        0.01,
        "source 002 §4.2.3 (En2ResNet20 ~0.54M)",
        {"width": 0.5, "noise": False},
    ),
    "en5resnet20": Case(
        EnResNet,
        1_361_410,
        5 * 272_282,
        0,
        "5 x PreAct ResNet20 (source 002 En5ResNet20)",
        {"width": 0.25, "noise": False},
    ),
    "mobilenetv2": Case(
        MobileNetV2, 2_296_922, 2_296_922, 0, "kuangliu/pytorch-cifar MobileNetV2", {"width": 0.25}
    ),
    # LeNet-5 with one input channel is the published 61,706 (test below); 3 channels add
    # 2 * 6 * 5 * 5 conv1 weights.
    "lenet5": Case(LeNet5, 62_006, 61_706 + 2 * 150, 0, "LeCun et al. 1998 (modern form)", {}),
    "fcn4": Case(MLP, 18_894_848, 18_894_848, 0, "source 003 Table 1 (CIFAR10)", {"width": 1 / 64}),
    "fcn6": Case(MLP, 27_283_456, 27_283_456, 0, "source 003 Table 1 (CIFAR10)", {"width": 1 / 64}),
    "preact_resnet20": Case(
        PreActResNet, 272_282, 0.27e6, 0.02, "source 002 ch. 4 (EnResNet20 ~0.54M = 2 x 0.27M)", {}
    ),
    "preact_resnet38": Case(
        PreActResNet, 563_930, 0.56e6, 0.01, "source 002 ch. 4 (ResNet38 ~0.56M)", {"width": 0.5}
    ),
    "preact_resnet56": Case(
        PreActResNet, 855_578, 0.85e6, 0.01, "He et al. 2016 Table 6 (0.85M)", {"width": 0.5}
    ),
    "mlp": Case(MLP, 1_738_890, 1_738_890, 0, "3072-512-256-128-10 with biases", {}),
    "smallcnn": Case(SmallCNN, 60_458, 60_458, 0, "2 conv blocks 32/64 on 32x32", {}),
}


def test_the_table_covers_every_name() -> None:
    assert sorted(CASES) == sorted(MODEL_NAMES)
    assert len(set(MODEL_NAMES)) == len(MODEL_NAMES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_counts_match_the_published_ones(name: str) -> None:
    case = CASES[name]
    measured = count_on_meta(name)
    assert measured == case.measured, case.source
    assert math.isclose(measured, case.published, rel_tol=case.tolerance, abs_tol=0), case.source


def test_published_counts_of_other_configurations() -> None:
    with torch.device("meta"):
        # LeNet-5: 156 + 2,416 + 48,120 + 10,164 + 850 for 1-channel 32x32 input.
        assert parameter_count(lenet5(in_channels=1)) == 61_706
        # source 003 Table 1, MNIST (28x28, one channel).
        assert parameter_count(fcn4(in_channels=1, image_size=28)) == 14_209_024
        assert parameter_count(fcn6(in_channels=1, image_size=28)) == 22_597_632
        # source 002 ch. 4: an ensemble of two PreAct ResNet20s "~0.54M", ResNet38 "~0.56M".
        assert math.isclose(2 * parameter_count(preact_resnet20()), 0.54e6, rel_tol=0.01)
        # Wide ResNet paper: WRN-28-10 36.5M, also WRN-40-4 8.9M and WRN-16-8 11.0M.
        assert parameter_count(WideResNet((6, 6, 6), (64, 128, 256))) == pytest.approx(
            8.9e6, rel=0.01
        )
        assert parameter_count(WideResNet((2, 2, 2), (128, 256, 512))) == pytest.approx(
            11.0e6, rel=0.01
        )
        # ResNet18/34 CIFAR with 100 classes: the head grows by 90 * (512 + 1).
        assert parameter_count(resnet34(num_classes=100)) == 21_282_122 + 90 * 513


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shapes_on_cifar_images(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **CASES[name].tiny).eval()
    assert isinstance(model, CASES[name].cls)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_input_channel(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, in_channels=1, **CASES[name].tiny)
    assert example_input_shape(described(model))[1] in (1, 32 * 32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture_round_trips_through_json_and_build_model(name: str) -> None:
    model = create_model(name, num_classes=5, **CASES[name].tiny)
    architecture = described(model)
    assert architecture["class"] == type(model).__name__
    assert type(model) is MODEL_CLASSES[architecture["class"]]
    restored = json.loads(json.dumps(architecture))
    assert restored == architecture
    rebuilt = build_model(restored)
    assert type(rebuilt) is type(model)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()} == shapes
    assert described(rebuilt) == architecture
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    shape = example_input_shape(architecture)
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("architecture", "shape"),
    [
        ({"class": "PreActResNet"}, (1, 3, 32, 32)),
        ({"class": "WideResNet", "widths": [16, 32, 64], "in_channels": 1}, (1, 1, 32, 32)),
        ({"class": "MobileNetV2", "stem_width": 8}, (1, 3, 32, 32)),
        ({"class": "LeNet5", "in_channels": 1, "image_size": 28}, (1, 1, 28, 28)),
    ],
)
def test_example_input_shape_of_the_new_classes(
    architecture: dict[str, Any], shape: tuple[int, ...]
) -> None:
    assert example_input_shape(architecture) == shape


# --- width multipliers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("resnet18", (64, 128, 256, 512)),
        ("resnet34", (64, 128, 256, 512)),
        ("resnet20", (16, 32, 64)),
        ("preact_resnet56", (16, 32, 64)),
        ("wrn28-10", (160, 320, 640)),
    ],
)
@pytest.mark.parametrize("width", [0.25, 0.5, 1, 1.5, 2, 2.5])  # source 000 eq. 2.10
def test_width_fractions_of_source_000_scale_the_stage_widths(
    name: str, base: tuple[int, ...], width: float
) -> None:
    with torch.device("meta"):
        model = create_model(name, width=width)
    assert described(model)["widths"] == [round(b * width) for b in base]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "vgg19", "preact_resnet20", "wrn28-10"])
def test_parameters_grow_about_quadratically_with_width(name: str) -> None:
    full = count_on_meta(name)
    for width in (0.5, 2.0):
        ratio = count_on_meta(name, width=width) / full
        # Convolutions and hidden-to-hidden layers scale as width^2; stem/head only as width.
        assert width**2 * 0.85 <= ratio <= width**2 * 1.15, (width, ratio)


def test_widths_round_half_up_and_never_reach_zero() -> None:
    with torch.device("meta"):
        assert described(resnet20(width=0.01))["widths"] == [1, 1, 1]
        assert described(resnet18(width=0.3))["widths"] == [19, 38, 77, 154]
        assert described(resnet20(width=5 / 32))["widths"] == [3, 5, 10]  # 2.5 rounds up
        assert described(vgg19(width=0.5))["config"][:3] == [32, 32, "M"]
        assert fcn4(width=0.5).hidden == (1024,) * 4


def test_mobilenet_width_scales_all_but_the_last_conv_below_one() -> None:
    with torch.device("meta"):
        half = described(mobilenet_v2(width=0.5))
        double = described(mobilenet_v2(width=2))
    assert half["stem_width"] == 16 and half["head_width"] == 1280
    assert [stage[1] for stage in half["stages"]] == [8, 12, 16, 32, 48, 80, 160]
    assert double["stem_width"] == 64 and double["head_width"] == 2560


def test_wrn_width_is_a_fraction_of_k_and_keeps_the_stem() -> None:
    with torch.device("meta"):
        model = create_model("wrn28-10", width=0.4)
        direct = wrn28(4)
    assert described(model) == described(direct)  # WRN-28-4
    assert described(model)["stem_width"] == 16


# --- create_model errors ----------------------------------------------------------------


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown model 'resnet50'; known: \['resnet18'"):
        create_model("resnet50")
    with pytest.raises(UsageError, match="unknown model 3"):
        create_model(3)  # type: ignore[arg-type]


def test_names_are_case_insensitive() -> None:
    with torch.device("meta"):
        assert isinstance(create_model(" LeNet5 "), LeNet5)
        assert isinstance(create_model("WRN28-10", width=0.1), WideResNet)


@pytest.mark.parametrize("name", ["densenet40", "lenet5", "mlp", "smallcnn"])
def test_width_for_a_model_without_a_multiplier_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match=f"{name} has no width multiplier .* models with one:"):
        create_model(name, width=0.5)
    with torch.device("meta"):
        create_model(name, width=1.0)  # the default is accepted


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet18", {"width": 0}, "resnet18: width must be a positive finite number, got 0"),
        ("resnet18", {"width": float("nan")}, "width must be a positive finite number"),
        ("resnet18", {"width": True}, "width must be a positive finite number"),
        ("resnet18", {"width": "1"}, "width must be a positive finite number"),
        ("resnet18", {"depth": 50}, r"resnet18 takes no option\(s\) \['depth'\]; it takes \[\]"),
        ("wrn28-10", {"k": 4}, r"takes no option\(s\) \['k'\]; it takes \['dropout'\]"),
        ("wrn28-10", {"dropout": 1.0, "width": 0.1}, r"dropout must be a probability in \[0, 1\)"),
        ("densenet40", {"growth_rate": 0}, "densenet40: DenseNet: growth_rate must be a positive"),
        ("lenet5", {"num_classes": 0}, "LeNet5: num_classes must be a positive int"),
        ("fcn4", {"in_channels": 0}, "fcn4: in_channels must be a positive int"),
        ("mlp", {"hidden": 8}, "create_model: mlp: "),
        ("smallcnn", {"image_size": 2}, "SmallCNN: image_size=2 is too small"),
        ("vgg19", {"image_size": 16}, "VGG: image_size=16 is too small for 5 max pools"),
    ],
)
def test_create_model_turns_bad_arguments_into_usage_errors(
    name: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: resnet18(width=-1), "resnet18: width must be a positive finite number"),
        (lambda: resnet34(width=math.inf), "resnet34: width must be a positive finite number"),
        (lambda: vgg19(width=0), "vgg19: width must be"),
        (lambda: mobilenet_v2(width=0), "mobilenet_v2: width must be"),
        (lambda: preact_resnet38(width=0), "preact_resnet38: width must be"),
        (lambda: wrn28(0), "wrn28: k must be a positive int, got 0"),
        (lambda: wrn28(2.5), "wrn28: k must be a positive int"),  # type: ignore[arg-type]
        (lambda: fcn6(image_size=0), "fcn6: image_size must be a positive int"),
        (lambda: densenet40(compression=0), r"DenseNet: compression must be in \(0, 1\]"),
    ],
)
def test_factories_reject_bad_arguments(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# --- defaults stay backward compatible ------------------------------------------------


def test_existing_factories_keep_their_defaults() -> None:
    with torch.device("meta"):
        assert described(resnet18()) == described(ResNet())
        assert described(resnet20())["widths"] == [16, 32, 64]
        assert described(resnet18(in_channels=1, num_classes=100))["num_classes"] == 100
        assert parameter_count(preact_resnet56()) == 855_578


# --- channel pruning: the new models trace through Torch-Pruning ----------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: preact_resnet20(width=0.5),
        lambda: wrn28(1),
        lambda: mobilenet_v2(width=0.25),
        lambda: LeNet5(),
    ],
)
def test_pruning_the_first_conv_keeps_the_models_running(build: Any) -> None:
    torch.manual_seed(0)
    model = build().eval()
    example = torch.randn(*example_input_shape(described(model)))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    group = graph.get_pruning_group(first, tp.prune_conv_out_channels, idxs=[0])
    assert graph.check_pruning_group(group)
    group.prune()
    assert first.out_channels < 32
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
