"""Small convolutional classifier for small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class SmallCNN(nn.Module):
    """``[Conv3x3 -> BatchNorm -> ReLU -> MaxPool2]`` per entry of ``channels``, then a Linear head.

    Each block keeps the spatial size through the 3x3 convolution (padding 1) and halves it
    (floor) by 2x2 max pooling, so ``image_size`` must be at least ``2 ** len(channels)``.
    State_dict keys: ``features.{i}.conv.weight`` (C_i, C_{i-1}, 3, 3), ``features.{i}.bn.*``
    and ``head.weight`` (num_classes, C_last * s * s) with s = image_size // 2**len(channels).

    Input (N, in_channels, image_size, image_size); output logits (N, num_classes).

    >>> model = SmallCNN()  # 8x8 digits: 8 -> 4 -> 2, head 64 * 2 * 2 -> 10
    >>> tuple(model(torch.zeros(3, 1, 8, 8)).shape), tuple(model.head.weight.shape)
    ((3, 10), (10, 256))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (32, 64),
        image_size: int = 8,
    ) -> None:
        super().__init__()
        check_positive("SmallCNN", "in_channels", in_channels)
        check_positive("SmallCNN", "num_classes", num_classes)
        check_positive("SmallCNN", "image_size", image_size)
        if len(channels) == 0:
            raise ValueError("SmallCNN: channels must name at least one block, got ()")
        for width in channels:
            check_positive("SmallCNN", "each entry of channels", width)
        final_size = image_size // 2 ** len(channels)
        if final_size < 1:
            raise ValueError(
                f"SmallCNN: image_size={image_size} is too small for {len(channels)} blocks "
                f"(each halves it); need image_size >= {2 ** len(channels)}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(channels)
        self.image_size = image_size
        widths = [in_channels, *self.channels]
        self.features = nn.Sequential(
            *(_conv_block(c_in, c_out) for c_in, c_out in itertools.pairwise(widths))
        )
        self.head = nn.Linear(self.channels[-1] * final_size * final_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, image_size, image_size)."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"SmallCNN: expected input of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        out: Tensor = self.head(torch.flatten(self.features(x), 1))
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "SmallCNN"``.

        Widths are read from the live layers, so a channel-pruned model is still described;
        :func:`tailwise.models.build_model` rebuilds the same architecture from it.

        >>> SmallCNN().architecture()["channels"]
        [32, 64]
        """
        convs = [module for module in self.features.modules() if isinstance(module, nn.Conv2d)]
        return checked_architecture(
            self,
            {
                "in_channels": convs[0].in_channels,
                "num_classes": self.head.out_features,
                "channels": [conv.out_channels for conv in convs],
                "image_size": self.image_size,
            },
        )
