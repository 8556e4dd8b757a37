"""A small DenseNet (Huang et al. 2017) for 32x32 images: layers concatenate their features."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture


def _norm_act_conv(
    in_channels: int, out_channels: int, kernel_size: int
) -> OrderedDict[str, nn.Module]:
    # Pre-activation order (BN -> ReLU -> Conv) of the DenseNet paper; the conv needs no bias.
    return OrderedDict(
        bn=nn.BatchNorm2d(in_channels),
        act=nn.ReLU(),
        conv=nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        ),
    )


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each ``BN -> ReLU -> Conv3x3`` adding ``growth_rate`` maps.

    Layer ``j`` sees the concatenation of the block input and all earlier layers' outputs,
    ``in_channels + j * growth_rate`` channels. State_dict keys: ``layers.{j}.bn.*``
    (C_j,) and ``layers.{j}.conv.weight`` (growth_rate, C_j, 3, 3).

    Input (N, C, H, W); output (N, C + num_layers * growth_rate, H, W): the input channels
    first, then each layer's new maps in order.
    """

    def __init__(self, in_channels: int, num_layers: int, growth_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(_norm_act_conv(in_channels + index * growth_rate, growth_rate, 3))
            for index in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Concatenated features (N, C + num_layers * growth_rate, H, W) of (N, C, H, W)."""
        features = x
        for layer in self.layers:
            features = torch.cat([features, layer(features)], dim=1)
        return features


class DenseNet(nn.Module):
    """DenseNet: ``Conv3x3`` stem, dense blocks joined by transitions, then ``BN -> ReLU ->
    global average pool -> Linear``.

    A transition (between consecutive blocks) is ``BN -> ReLU -> Conv1x1 -> AvgPool2``; its
    conv keeps ``floor(compression * C)`` of the C incoming channels (DenseNet-C of Huang et al.
    2017; no bottleneck layers). Channel counts: C_0 = init_channels, after block ``b``
    C_b' = C_b + block_layers[b] * growth_rate, and the next block starts from
    floor(compression * C_b'). The default (growth 12, 4 layers in each of 3 blocks, 24 stem
    channels) has 76,810 parameters: small enough for fast CPU tests of pruning through
    concatenations.

    State_dict keys: ``stem.weight`` (init_channels, in_channels, 3, 3),
    ``blocks.{b}.<DenseBlock keys>``, ``transitions.{b}.bn.*`` and ``transitions.{b}.conv.weight``
    (floor(compression * C_b'), C_b', 1, 1), ``final_bn.*`` (C_last,) and ``head.weight``
    (num_classes, C_last) / ``head.bias``.

    Input (N, in_channels, H, W) with H, W >= 2**(len(block_layers) - 1) (32x32 for CIFAR);
    output logits (N, num_classes).

    >>> model = DenseNet()
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), tuple(model.head.weight.shape)
    ((2, 10), (10, 90))
    """

    def __init__(
        self,
        growth_rate: int = 12,
        block_layers: Sequence[int] = (4, 4, 4),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        init_channels: int = 24,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        check_positive("DenseNet", "growth_rate", growth_rate)
        check_positive("DenseNet", "in_channels", in_channels)
        check_positive("DenseNet", "num_classes", num_classes)
        check_positive("DenseNet", "init_channels", init_channels)
        if len(block_layers) == 0:
            raise ValueError("DenseNet: block_layers must name at least one block, got ()")
        for count in block_layers:
            check_positive("DenseNet", "each entry of block_layers", count)
        if (
            isinstance(compression, bool)
            or not isinstance(compression, int | float)
            or not 0 < compression <= 1
        ):
            raise ValueError(f"DenseNet: compression must be in (0, 1], got {compression!r}")
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.compression = float(compression)
        self.stem = nn.Conv2d(in_channels, init_channels, kernel_size=3, padding=1, bias=False)
        blocks = []
        transitions = []
        channels = init_channels
        for index, count in enumerate(block_layers):
            blocks.append(DenseBlock(channels, count, growth_rate))
            channels += count * growth_rate
            if index < len(block_layers) - 1:
                kept = math.floor(self.compression * channels)
                if kept < 1:
                    raise ValueError(
                        f"DenseNet: compression={compression} keeps no channel of the "
                        f"{channels} after block {index}"
                    )
                transition = _norm_act_conv(channels, kept, 1)
                transition["pool"] = nn.AvgPool2d(2)
                transitions.append(nn.Sequential(transition))
                channels = kept
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.final_bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, H, W)."""
        min_size = 2 ** len(self.transitions)
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < min_size:
            raise ValueError(
                f"DenseNet: expected input of shape (N, {self.in_channels}, H, W) with "
                f"H, W >= {min_size}, got {tuple(x.shape)}"
            )
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.transitions):
                x = self.transitions[index](x)
        x = self.pool(self.act(self.final_bn(x)))
        out: Tensor = self.head(torch.flatten(x, 1))
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "DenseNet"``.

        Stem and head widths are read from the live layers. Channel pruning generally leaves
        widths that no constructor arguments produce (unequal growth, transitions off
        ``floor(compression * C)``), and then this raises ``ValueError`` rather than describe
        a different network.

        >>> DenseNet().architecture()["block_layers"]
        [4, 4, 4]
        """
        blocks = [block for block in self.blocks if isinstance(block, DenseBlock)]
        return checked_architecture(
            self,
            {
                "growth_rate": self.growth_rate,
                "block_layers": [len(block.layers) for block in blocks],
                "in_channels": self.stem.in_channels,
                "num_classes": self.head.out_features,
                "init_channels": self.stem.out_channels,
                "compression": self.compression,
            },
        )


def densenet40(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    growth_rate: int = 12,
    compression: float = 1.0,
) -> DenseNet:
    """DenseNet-40 of Huang et al. (2017, Table 2): L = 40, 3 dense blocks of 12 layers.

    A 16-channel 3x3 stem, no bottleneck layers and, by default, no compression in the
    transitions (``compression=1.0``: the plain "DenseNet (L=40, k=12)" of the paper's
    Table 2, "1.0M" parameters; here 1,019,722 for 10 classes). 40 = 3 x 12 dense layers +
    the stem + 2 transitions + the classifier. ``growth_rate`` is k (the paper also trains
    k = 24); ``compression < 1`` gives DenseNet-C. No width multiplier: k is the width.
    Input (N, in_channels, 32, 32).

    >>> model = densenet40()
    >>> tuple(model.head.weight.shape)  # 16 + 3 * 12 * 12 channels reach the head
    (10, 448)
    """
    return DenseNet(
        growth_rate,
        (12, 12, 12),
        in_channels=in_channels,
        num_classes=num_classes,
        init_channels=16,
        compression=compression,
    )
