"""tailwise.models.fcn: source 003's FCN4 / FCN6 against its Table 1 parameter counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tailwise.models import MLP, fcn4, fcn6


def fcn_count(inputs: int, width: int, depth: int, classes: int = 10) -> int:
    """Bias-free fully connected network: inputs -> depth x width -> classes."""
    return inputs * width + (depth - 1) * width * width + width * classes


@pytest.mark.parametrize(
    ("factory", "depth", "in_channels", "image_size", "published"),
    [
        # source 003 appendix A.2, Table 1.
        (fcn4, 4, 3, 32, 18_894_848),
        (fcn4, 4, 1, 28, 14_209_024),
        (fcn6, 6, 3, 32, 27_283_456),
        (fcn6, 6, 1, 28, 22_597_632),
    ],
)
def test_source_003_table_1(
    factory: Callable[..., MLP], depth: int, in_channels: int, image_size: int, published: int
) -> None:
    assert fcn_count(in_channels * image_size**2, 2048, depth) == published
    with torch.device("meta"):
        model = factory(in_channels=in_channels, image_size=image_size)
    assert isinstance(model, MLP)
    assert sum(p.numel() for p in model.parameters()) == published
    assert model.hidden == (2048,) * depth


@pytest.mark.parametrize(("factory", "depth"), [(fcn4, 4), (fcn6, 6)])
@pytest.mark.parametrize("width", [1 / 64, 0.5, 1.5])
def test_width_scales_the_hidden_layers_exactly(
    factory: Callable[..., MLP], depth: int, width: float
) -> None:
    with torch.device("meta"):
        model = factory(width=width, num_classes=100)
    hidden = round(2048 * width)
    assert sum(p.numel() for p in model.parameters()) == fcn_count(3072, hidden, depth, 100)


def test_no_biases_and_relu() -> None:
    model = fcn4(width=1 / 256)
    assert all(name.endswith("weight") for name, _ in model.named_parameters())
    assert model.architecture()["activation"] == "relu"
    assert model.architecture()["bias"] is False
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model(torch.zeros(2, 3072)).shape == (2, 10)
