"""LeNet-5 (LeCun et al. 1998) for 32x32 images, in its common modern form."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture
from tailwise.models.mlp import make_activation

POOLS = ("max", "avg")
"""The pooling layers :class:`LeNet5` takes: 2x2 max pooling or 2x2 average pooling."""


class LeNet5(nn.Module):
    """LeNet-5: ``Conv5x5(6) -> act -> pool2 -> Conv5x5(16) -> act -> pool2 -> Linear(120) ->
    act -> Linear(84) -> act -> Linear(num_classes)``.

    The common modern form: ReLU and 2x2 max pooling by default (``activation="tanh"``,
    ``pool="avg"`` come closer to the 1998 paper), every C3 map connected to all six S2 maps
    and no trainable subsampling coefficients. So 61,706 parameters for one input channel and
    10 classes (32x32 inputs; the paper pads 28x28 MNIST digits to 32x32). The convolutions
    have no padding: a side s becomes ((s - 4) // 2 - 4) // 2 before the first Linear, 5 for
    s = 32, and ``image_size`` must be at least 16.

    State_dict keys: ``conv1.weight`` (6, in_channels, 5, 5), ``conv2.weight`` (16, 6, 5, 5),
    ``fc1.weight`` (120, 16 * f * f) with f the final side, ``fc2.weight`` (84, 120),
    ``head.weight`` (num_classes, 84), each with its ``.bias``.

    Input (N, in_channels, image_size, image_size); output logits (N, num_classes).

    >>> model = LeNet5(in_channels=1)
    >>> tuple(model(torch.zeros(2, 1, 32, 32)).shape), sum(p.numel() for p in model.parameters())
    ((2, 10), 61706)
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        image_size: int = 32,
        activation: str = "relu",
        pool: str = "max",
    ) -> None:
        super().__init__()
        check_positive("LeNet5", "in_channels", in_channels)
        check_positive("LeNet5", "num_classes", num_classes)
        check_positive("LeNet5", "image_size", image_size)
        final_size = ((image_size - 4) // 2 - 4) // 2
        if final_size < 1:
            raise ValueError(
                f"LeNet5: image_size={image_size} is too small for two 5x5 convolutions and two "
                "2x2 pools; need image_size >= 16"
            )
        if pool not in POOLS:
            raise ValueError(f"LeNet5: pool must be one of {list(POOLS)}, got {pool!r}")
        try:
            self.act = make_activation(activation)
        except ValueError as error:
            raise ValueError(f"LeNet5: {error}") from None
        self.in_channels = in_channels
        self.image_size = image_size
        self.activation_name = activation
        self.pool_name = pool
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * final_size * final_size, 120)
        self.fc2 = nn.Linear(120, 84)
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, image_size, image_size)."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"LeNet5: expected input of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(torch.flatten(x, 1)))
        x = self.act(self.fc2(x))
        out: Tensor = self.head(x)
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "LeNet5"``.

        The widths 6-16-120-84 are fixed, so a LeNet5 with pruned channels or units is no
        longer described and this raises ``ValueError``.

        >>> LeNet5(in_channels=1).architecture()["in_channels"]
        1
        """
        return checked_architecture(
            self,
            {
                "in_channels": self.conv1.in_channels,
                "num_classes": self.head.out_features,
                "image_size": self.image_size,
                "activation": self.activation_name,
                "pool": self.pool_name,
            },
        )


def lenet5(*, in_channels: int = 3, num_classes: int = 10) -> LeNet5:
    """LeNet-5 with ReLU and max pooling for 32x32 images (see :class:`LeNet5`).

    61,706 parameters for ``in_channels=1`` (MNIST padded to 32x32) and 10 classes; 62,006
    for 3-channel CIFAR images. No width multiplier (the widths 6-16-120-84 are the model).
    """
    return LeNet5(in_channels, num_classes)
