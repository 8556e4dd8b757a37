"""tailwise.models.lenet: LeNet-5, counted by hand, options and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailwise.models import LeNet5, build_model, lenet5


def test_published_parameter_count_by_layer() -> None:
    model = LeNet5(in_channels=1)
    by_layer = {
        name: sum(p.numel() for p in layer.parameters())
        for name, layer in model.named_children()
        if any(True for _ in layer.parameters())
    }
    # conv1 6 * (25 + 1), conv2 16 * (6 * 25 + 1), fc1 120 * (400 + 1), fc2 84 * 121, head 10 * 85
    assert by_layer == {"conv1": 156, "conv2": 2416, "fc1": 48120, "fc2": 10164, "head": 850}
    assert sum(by_layer.values()) == 61_706
    assert sum(p.numel() for p in lenet5().parameters()) == 62_006  # 3 input channels


def test_shapes_for_mnist_sized_inputs() -> None:
    model = LeNet5(1, 10, image_size=28)  # no padding: 28 -> 24 -> 12 -> 8 -> 4
    assert model.fc1.in_features == 16 * 4 * 4
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize(("activation", "pool"), [("relu", "max"), ("tanh", "avg")])
def test_activation_and_pooling_options(activation: str, pool: str) -> None:
    model = LeNet5(activation=activation, pool=pool)
    expected = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    assert isinstance(model.pool, expected)
    architecture = model.architecture()
    assert (architecture["activation"], architecture["pool"]) == (activation, pool)
    assert isinstance(build_model(architecture).pool, expected)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 15}, "LeNet5: image_size=15 is too small .* need image_size >= 16"),
        ({"pool": "lp"}, r"LeNet5: pool must be one of \['max', 'avg'\], got 'lp'"),
        ({"activation": "swish"}, "LeNet5: activation must be one of"),
        ({"in_channels": 0}, "LeNet5: in_channels must be a positive int"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeNet5(**kwargs)  # type: ignore[arg-type]


def test_forward_rejects_wrong_input_shapes() -> None:
    with pytest.raises(ValueError, match=r"LeNet5: expected input of shape \(N, 3, 32, 32\)"):
        LeNet5()(torch.zeros(1, 3, 28, 28))
    assert LeNet5(image_size=16)(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
