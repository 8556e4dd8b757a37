"""tailwise.models: MLP and SmallCNN shapes, parameter names and argument checks."""

from __future__ import annotations

import pytest
import torch

from tailwise.models import MLP, SmallCNN


def test_mlp_shapes_and_state_dict_keys() -> None:
    model = MLP(64, [32, 16], 10)
    assert model(torch.zeros(7, 64)).shape == (7, 10)
    assert model(torch.zeros(7, 1, 8, 8)).shape == (7, 10)
    state = model.state_dict()
    assert list(state) == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert [tuple(state[f"layers.{i}.weight"].shape) for i in range(3)] == [
        (32, 64),
        (16, 32),
        (10, 16),
    ]


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid", "identity"])
def test_mlp_activations(activation: str) -> None:
    model = MLP(4, [3], 2, activation=activation, bias=False)
    assert model(torch.ones(2, 4)).shape == (2, 2)
    assert list(model.state_dict()) == ["layers.0.weight", "layers.1.weight"]


def test_mlp_without_hidden_layers_is_linear() -> None:
    model = MLP(5, [], 3)
    x = torch.randn(4, 5)
    layer = model.layers[0]
    assert isinstance(layer, torch.nn.Linear)
    assert torch.allclose(model(x), layer(x))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((64, [32], 10), {"activation": "swish"}, "activation must be one of"),
        ((0, [32], 10), {}, "in_features must be a positive int"),
        ((64, [32, 0], 10), {}, "each hidden width"),
    ],
)
def test_mlp_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MLP(*args, **kwargs)  # type: ignore[arg-type]


def test_mlp_rejects_wrong_input_width() -> None:
    with pytest.raises(ValueError, match="expected 64 features per sample, got 63"):
        MLP(64, [8], 10)(torch.zeros(2, 63))


def test_small_cnn_on_digits() -> None:
    model = SmallCNN()
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert model.head.weight.shape == (10, 64 * 2 * 2)
    keys = list(model.state_dict())
    assert keys[0] == "features.0.conv.weight"
    assert "features.1.bn.running_var" in keys
    assert keys[-2:] == ["head.weight", "head.bias"]


@pytest.mark.parametrize(("in_channels", "image_size", "final"), [(1, 28, 7), (3, 32, 8)])
def test_small_cnn_generic_sizes(in_channels: int, image_size: int, final: int) -> None:
    model = SmallCNN(in_channels, 100, channels=(8, 16), image_size=image_size)
    assert model(torch.zeros(2, in_channels, image_size, image_size)).shape == (2, 100)
    assert model.head.in_features == 16 * final * final


def test_small_cnn_rejects_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="too small for 3 blocks"):
        SmallCNN(channels=(4, 4, 4), image_size=4)
    with pytest.raises(ValueError, match="at least one block"):
        SmallCNN(channels=())
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 8, 8\)"):
        SmallCNN()(torch.zeros(2, 64))
