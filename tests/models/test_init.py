"""tailwise.models.init: the initialisation regimes of source 004."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tailwise.models import MLP
from tailwise.models.init import (
    REGIMES,
    BiasInit,
    glorot_std,
    init_glorot_normal,
    init_uniform,
)


def _network() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def test_uniform_weights_fill_zero_to_c_with_uniform_statistics() -> None:
    c = 2.3
    model = init_uniform(nn.Linear(400, 500), c, seed=0)
    weight = model.weight.detach().double()
    assert float(weight.min()) >= 0.0 and float(weight.max()) <= c
    assert float(weight.min()) < 0.01 * c and float(weight.max()) > 0.99 * c
    n = weight.numel()
    # mean c / 2 and variance c^2 / 12, within 5 standard errors
    assert abs(float(weight.mean()) - c / 2) < 5 * c / math.sqrt(12 * n)
    assert float(weight.var()) == pytest.approx(c**2 / 12, rel=0.02)
    # uniform: each tenth of [0, c] holds a tenth of the entries
    counts = torch.histc(weight, bins=10, min=0.0, max=c) / n
    assert torch.allclose(counts, torch.full((10,), 0.1, dtype=counts.dtype), atol=0.01)
    assert torch.equal(model.bias.detach(), torch.zeros(500))


def test_uniform_touches_linear_and_conv_layers_only() -> None:
    model = init_uniform(_network(), 0.03, seed=1)
    conv, norm, first, last = model[0], model[1], model[3], model[5]
    assert isinstance(norm, nn.BatchNorm2d)
    for layer in (conv, first, last):
        assert isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is not None
        weight = layer.weight.detach()
        assert float(weight.min()) >= 0 and float(weight.max()) <= 0.03
        assert not layer.bias.detach().any()
    assert torch.equal(norm.weight.detach(), torch.ones(16))  # BatchNorm left as it was
    assert torch.equal(norm.bias.detach(), torch.zeros(16))


@pytest.mark.parametrize("initialise", [init_uniform, init_glorot_normal])
def test_bias_modes(initialise: object) -> None:
    assert callable(initialise)
    model = nn.Linear(50, 300)
    original = model.bias.detach().clone()
    initialise(model, 1.0, bias="keep", seed=0)
    assert torch.equal(model.bias.detach(), original)
    initialise(model, 1.0, bias=BiasInit.SAME, seed=0)
    bias = model.bias.detach()
    if initialise is init_uniform:
        assert float(bias.min()) >= 0 and float(bias.max()) <= 1.0 and bias.std() > 0.2
    else:
        assert float(bias.std()) == pytest.approx(glorot_std(model.weight), rel=0.2)
    initialise(model, 1.0, seed=0)
    assert not model.bias.detach().any()
    with pytest.raises(ValueError, match="not a valid BiasInit"):
        initialise(model, 1.0, bias="ones")


@pytest.mark.parametrize("initialise", [init_uniform, init_glorot_normal])
def test_seeded_initialisation_is_reproducible(initialise: object) -> None:
    assert callable(initialise)
    first = initialise(MLP(8, [16], 2), 1.0, seed=3)
    second = initialise(MLP(8, [16], 2), 1.0, seed=3)
    other = initialise(MLP(8, [16], 2), 1.0, seed=4)
    first_state, second_state, other_state = (m.state_dict() for m in (first, second, other))
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert not torch.equal(first_state["layers.0.weight"], other_state["layers.0.weight"])


def test_initialisation_keeps_dtype_and_draws_the_same_numbers_in_float64() -> None:
    single = init_uniform(nn.Linear(4, 3), 1.0, seed=0)
    double = init_uniform(nn.Linear(4, 3).double(), 1.0, seed=0)
    assert double.weight.dtype == torch.float64
    assert torch.equal(single.weight.detach(), double.weight.detach().float())


@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_glorot_normal_variance_is_scale_times_two_over_fan_sum(scale: float) -> None:
    model = init_glorot_normal(nn.Linear(300, 500), scale, seed=0)
    weight = model.weight.detach().double()
    expected = math.sqrt(scale * 2 / (300 + 500))
    assert glorot_std(model.weight, scale) == pytest.approx(expected)
    assert float(weight.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(weight.mean())) < 5 * expected / math.sqrt(weight.numel())
    assert float((weight.abs() > 3 * expected).double().mean()) > 0.001  # not truncated


def test_glorot_normal_fans_include_the_receptive_field() -> None:
    conv = init_glorot_normal(nn.Conv2d(32, 64, 5), 2.0, seed=0)
    expected = math.sqrt(2.0 * 2 / (32 * 25 + 64 * 25))
    assert glorot_std(conv.weight, 2.0) == pytest.approx(expected)
    assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.02)
    with pytest.raises(ValueError, match="must have >= 2 dimensions"):
        glorot_std(torch.zeros(3))


def test_table_4_2_regime_values() -> None:
    small, large = REGIMES["small"], REGIMES["large"]
    assert (small.value("xor", "tanh"), large.value("xor", "tanh")) == (0.03, 2.3)
    assert (small.value("xord", "relu"), large.value("xord", "relu")) == (0.2, 2.0)
    assert (small.value("synthetic", "relu"), large.value("synthetic", "relu")) == (0.02, 0.2)
    assert (small.value("cifar10", "tanh"), large.value("cifar10", "tanh")) == (0.2, 5.0)
    for key, value in small.values.items():
        assert value < large.value(*key)
    with pytest.raises(ValueError, match="no value for"):
        large.value("imagenet", "relu")


def test_regime_apply_is_uniform_except_for_cifar10() -> None:
    xor = REGIMES["large"].apply(MLP(2, [64], 2, activation="tanh"), "xor", "tanh", seed=0)
    layer = xor.layers[0]
    assert isinstance(layer, nn.Linear)
    weight = layer.weight.detach()
    assert float(weight.min()) >= 0 and float(weight.max()) <= 2.3
    cifar = REGIMES["large"].apply(nn.Linear(300, 100), "cifar10", "relu", seed=0)
    assert float(cifar.weight.detach().min()) < 0
    assert float(cifar.weight.detach().std()) == pytest.approx(math.sqrt(5.0 * 2 / 400), rel=0.02)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: init_uniform(nn.Linear(2, 2), 0.0), "c must be a finite number > 0"),
        (lambda: init_uniform(nn.Linear(2, 2), float("inf")), "c must be"),
        (lambda: init_glorot_normal(nn.Linear(2, 2), -1.0), "scale must be"),
        (lambda: init_uniform(nn.Linear(2, 2), 1.0, seed=-1), "seed must be"),
        (lambda: init_uniform(nn.ReLU(), 1.0), "no Linear or convolution layer"),
    ],
)
def test_bad_arguments_are_rejected(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()
