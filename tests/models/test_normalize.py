"""tailwise.models.normalize: Normalize against the per-channel formula, with_normalization
against the wrapped model on hand-normalized inputs, and the nested architecture round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from tailwise import UsageError
from tailwise.data import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD
from tailwise.models import (
    EnResNet,
    Normalize,
    Normalized,
    PreActResNet,
    build_model,
    create_model,
    en2resnet20,
    example_input_shape,
    lenet5,
    preact_resnet20,
    set_noise,
    with_normalization,
)


def test_normalize_is_the_per_channel_affine_map() -> None:
    layer = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    x = torch.rand(4, 3, 5, 7)
    expected = torch.empty_like(x, dtype=torch.float64)
    for c in range(3):  # in float64 with the constants as given
        expected[:, c] = (x[:, c].double() - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
    assert layer(x).dtype == torch.float32
    torch.testing.assert_close(layer(x), expected.float(), rtol=1e-6, atol=1e-6)


def test_a_single_value_applies_to_every_channel() -> None:
    layer = Normalize(MNIST_MEAN, MNIST_STD)
    for channels in (1, 3):
        x = torch.rand(2, channels, 4, 4)
        torch.testing.assert_close(layer(x), (x - MNIST_MEAN) / MNIST_STD)
    mixed = Normalize(0.5, [0.5, 0.25])
    x = torch.ones(1, 2, 1, 1)
    assert mixed(x).flatten().tolist() == [1.0, 2.0]
    assert mixed.channels == 2


def test_other_input_ranks() -> None:
    layer = Normalize([1.0, 2.0], [2.0, 4.0])
    assert layer(torch.tensor([[3.0, 6.0]])).tolist() == [[1.0, 1.0]]  # (N, C)
    x = torch.full((1, 2, 3), 5.0)  # (N, C, L)
    assert layer(x)[0, :, 0].tolist() == [2.0, 0.75]


def test_constants_follow_the_module_but_stay_out_of_the_state_dict() -> None:
    layer = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    assert dict(layer.state_dict()) == {}
    assert [name for name, _ in layer.named_buffers()] == ["mean", "std"]
    assert layer.mean.shape == (3,) and layer.mean.dtype == torch.get_default_dtype()
    torch.testing.assert_close(layer.std, torch.tensor(CIFAR10_STD))
    x = torch.rand(2, 3, 4, 4)
    assert layer(x.double()).dtype == torch.float64  # computed in the input's dtype
    assert layer.double().std.dtype == torch.float64


@pytest.mark.parametrize(
    ("mean", "std", "message"),
    [
        ([0.5, 0.5], [0.5, 0.0], r"Normalize: every std must be > 0, got \[0.5, 0.0\]"),
        (0.5, -1.0, "every std must be > 0"),
        ([0.1, 0.2], [0.1, 0.2, 0.3], "one value per channel .* got 2 and 3 values"),
        ([], [1.0], "mean must be a number or a non-empty sequence"),
        ("0.5", 1.0, "mean must be a number or a non-empty sequence"),
        ([0.5, float("nan")], [1.0, 1.0], "every mean must be a finite number"),
        (0.5, [True], "every std must be a finite number"),
        (0.5, None, "std must be a number or a non-empty sequence"),
    ],
)
def test_bad_constants_are_refused(mean: Any, std: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Normalize(mean, std)


def test_wrong_channel_count_is_refused() -> None:
    layer = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(UsageError, match=r"Normalize: expected input of shape \(N, 3, ...\), got"):
        layer(torch.rand(2, 1, 8, 8))
    with pytest.raises(UsageError, match="expected input of shape"):
        layer(torch.rand(3))


def test_with_normalization_equals_the_model_on_normalized_inputs() -> None:
    torch.manual_seed(0)
    model = preact_resnet20(width=0.5).eval()
    wrapped = with_normalization(model, CIFAR10_MEAN, CIFAR10_STD)
    assert isinstance(wrapped, Normalized) and wrapped.model is model  # wrapped, not copied
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model((x - mean) / std))


def test_input_gradients_are_the_chain_rule_through_the_normalization() -> None:
    # What an attack sees: d loss / d x = (d loss / d z) / std per channel, z the normalized x.
    torch.manual_seed(0)
    model = lenet5(in_channels=3).double().eval()
    wrapped = with_normalization(model, CIFAR10_MEAN, CIFAR10_STD).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(wrapped(x).sum(), x)
    mean = wrapped.normalize.mean.view(1, 3, 1, 1)  # the constants as stored (float32-rounded)
    std = wrapped.normalize.std.view(1, 3, 1, 1)
    assert std.dtype == torch.float64
    z = ((x - mean) / std).detach().requires_grad_(True)
    (inner,) = torch.autograd.grad(model(z).sum(), z)
    torch.testing.assert_close(grad, inner / std, rtol=1e-10, atol=1e-12)


def test_state_dict_is_the_wrapped_models_under_model() -> None:
    torch.manual_seed(0)
    model = preact_resnet20(width=0.25)
    wrapped = with_normalization(model, CIFAR10_MEAN, CIFAR10_STD)
    assert list(wrapped.state_dict()) == [f"model.{key}" for key in model.state_dict()]
    plain = preact_resnet20(width=0.25)
    plain.load_state_dict(
        {key.removeprefix("model."): value for key, value in wrapped.state_dict().items()}
    )
    for key, value in plain.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


@pytest.mark.parametrize(
    ("build", "mean", "std"),
    [
        (lambda: preact_resnet20(width=0.5, num_classes=4), CIFAR10_MEAN, CIFAR10_STD),
        (lambda: en2resnet20(width=0.25), CIFAR10_MEAN, CIFAR10_STD),
        (lambda: lenet5(in_channels=1), MNIST_MEAN, MNIST_STD),
    ],
)
def test_architecture_round_trips_through_json_and_build_model(
    build: Any, mean: Any, std: Any
) -> None:
    torch.manual_seed(0)
    model = with_normalization(build(), mean, std)
    architecture = model.architecture()
    assert architecture["class"] == "Normalized"
    assert architecture["model"] == model.model.architecture()  # type: ignore[operator]
    restored = json.loads(json.dumps(architecture))
    assert restored == architecture
    rebuilt = build_model(restored)
    assert isinstance(rebuilt, Normalized) and type(rebuilt.model) is type(model.model)
    assert rebuilt.architecture() == architecture
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.normalize.mean, model.normalize.mean, rtol=0, atol=0)
    torch.testing.assert_close(rebuilt.normalize.std, model.normalize.std, rtol=0, atol=0)
    set_noise(model, False)
    set_noise(rebuilt, False)
    model.eval()
    rebuilt.eval()
    shape = example_input_shape(architecture)
    assert shape == example_input_shape(architecture["model"])
    x = torch.rand(2, *shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_architecture_of_a_normalized_zoo_model_by_name() -> None:
    model = with_normalization(create_model("en2resnet20", width=0.25), 0.5, [0.2, 0.3, 0.4])
    described = model.architecture()
    assert {key: described[key] for key in ("class", "mean", "std")} == {
        "class": "Normalized",
        "mean": [0.5],
        "std": [0.2, 0.3, 0.4],
    }
    assert described["model"]["class"] == "EnResNet"
    with torch.device("meta"):
        rebuilt = build_model(described)
    assert isinstance(rebuilt, Normalized) and isinstance(rebuilt.model, EnResNet)


def test_a_model_without_architecture_cannot_be_described() -> None:
    wrapped = with_normalization(nn.Linear(3, 2), 0.0, 1.0)
    assert wrapped(torch.zeros(4, 3)).shape == (4, 2)
    with pytest.raises(ValueError, match="Normalized: the wrapped Linear has no architecture"):
        wrapped.architecture()


def test_bad_arguments_to_with_normalization() -> None:
    with pytest.raises(
        UsageError, match=r"Normalized: model must be a torch\.nn\.Module, got dict"
    ):
        with_normalization({"class": "PreActResNet"}, 0.5, 0.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="Normalize: every std must be > 0"):
        with_normalization(PreActResNet(), CIFAR10_MEAN, (0.2, 0.2, 0.0))
    with pytest.raises(ValueError, match="build_model: unknown class 'Nope'"):
        build_model({"class": "Normalized", "model": {"class": "Nope"}, "mean": 0, "std": 1})
