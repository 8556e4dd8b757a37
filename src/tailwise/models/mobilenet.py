"""MobileNetV2 (Sandler et al. 2018) for 32x32 images, as in the common CIFAR implementation.

The CIFAR variant (kuangliu/pytorch-cifar) keeps the ImageNet stage table but uses stride 1 in
the stem and in the second stage (ImageNet: 2 and 2), so a 32x32 input reaches the last stages
at 4x4 instead of 1x1. It also keeps the expansion 1x1 conv in the first (t = 1) block, adds a
``Conv1x1 -> BN`` projection shortcut to stride-1 blocks whose width changes, and uses ReLU
(the paper: ReLU6). With these, 2,296,922 parameters for 10 classes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture, scale_width

CIFAR_STAGES: tuple[tuple[int, int, int, int], ...] = (
    # (expansion t, output channels c, blocks n, stride of the first block s): Sandler et al.
    # (2018) Table 2, with s = 1 (not 2) in the second row for 32x32 inputs.
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""The stage table of the CIFAR MobileNetV2: ``(expansion, out_channels, blocks, stride)``."""


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1
) -> OrderedDict[str, nn.Module]:
    return OrderedDict(
        conv=nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        bn=nn.BatchNorm2d(out_channels),
    )


def _conv(module: nn.Module) -> nn.Conv2d:
    """The (first) convolution of a ``_conv_bn`` sequence."""
    return next(layer for layer in module.modules() if isinstance(layer, nn.Conv2d))


class InvertedResidual(nn.Module):
    """``Conv1x1 (expand) -> BN -> ReLU -> depthwise Conv3x3 (stride) -> BN -> ReLU -> Conv1x1
    (project) -> BN``, plus a shortcut when ``stride == 1``.

    The hidden width is ``expansion * in_channels``. With stride 1 the shortcut is ``x`` when
    the width is kept and ``Conv1x1 -> BN`` otherwise; stride-2 blocks have none. State_dict
    keys: ``expand.conv.weight`` (C_h, C_in, 1, 1), ``expand.bn.*``, ``depthwise.conv.weight``
    (C_h, 1, 3, 3), ``depthwise.bn.*``, ``project.conv.weight`` (C_out, C_h, 1, 1),
    ``project.bn.*`` and, with a projection shortcut, ``shortcut.conv.weight`` / ``shortcut.bn.*``.

    Input (N, C_in, H, W); output (N, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.stride = stride
        self.expand = nn.Sequential(_conv_bn(in_channels, hidden, 1))
        self.depthwise = nn.Sequential(_conv_bn(hidden, hidden, 3, stride=stride, groups=hidden))
        self.project = nn.Sequential(_conv_bn(hidden, out_channels, 1))
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(_conv_bn(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Block output (N, C_out, H', W') of an input (N, C_in, H, W)."""
        out = self.act(self.expand(x))
        out = self.act(self.depthwise(out))
        out = self.project(out)
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


def _check_stages(stages: Sequence[Sequence[int]]) -> list[tuple[int, int, int, int]]:
    if len(stages) == 0:
        raise ValueError("MobileNetV2: stages must name at least one stage, got ()")
    checked = []
    for index, stage in enumerate(stages):
        if isinstance(stage, str) or len(stage) != 4:
            raise ValueError(
                "MobileNetV2: each stage must be (expansion, out_channels, blocks, stride), "
                f"got {stage!r} at position {index}"
            )
        names = ("expansion", "out_channels", "blocks", "stride")
        for name, value in zip(names, stage, strict=True):
            check_positive("MobileNetV2", f"{name} of stage {index}", value)
        expansion, out_channels, blocks, stride = stage
        if stride not in (1, 2):
            raise ValueError(f"MobileNetV2: stride of stage {index} must be 1 or 2, got {stride}")
        checked.append((expansion, out_channels, blocks, stride))
    return checked


class MobileNetV2(nn.Module):
    """MobileNetV2: ``Conv3x3 -> BN -> ReLU`` stem, :class:`InvertedResidual` stages,
    ``Conv1x1 -> BN -> ReLU`` to ``head_width`` channels, global average pool, ``Linear``.

    ``stages`` lists ``(expansion, out_channels, blocks, stride)`` per stage (default
    :data:`CIFAR_STAGES`); only a stage's first block has its stride. The stem has stride 1
    (CIFAR variant). State_dict keys: ``stem.conv.weight`` (stem_width, in_channels, 3, 3),
    ``stem.bn.*``, ``stages.{s}.{b}.<InvertedResidual keys>``, ``final.conv.weight``
    (head_width, C_last, 1, 1), ``final.bn.*`` and ``head.weight`` (num_classes, head_width) /
    ``head.bias``.

    Input (N, in_channels, H, W), any H, W (32x32 for CIFAR); output logits (N, num_classes).

    >>> model = mobilenet_v2(width=0.25)
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), tuple(model.head.weight.shape)
    ((2, 10), (10, 1280))
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]] = CIFAR_STAGES,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        stem_width: int = 32,
        head_width: int = 1280,
    ) -> None:
        super().__init__()
        check_positive("MobileNetV2", "in_channels", in_channels)
        check_positive("MobileNetV2", "num_classes", num_classes)
        check_positive("MobileNetV2", "stem_width", stem_width)
        check_positive("MobileNetV2", "head_width", head_width)
        self.stage_table = _check_stages(stages)
        self.in_channels = in_channels
        stem = _conv_bn(in_channels, stem_width, 3)
        stem["act"] = nn.ReLU()
        self.stem = nn.Sequential(stem)
        built = []
        channels = stem_width
        for expansion, out_channels, blocks, stride in self.stage_table:
            layers = [InvertedResidual(channels, out_channels, expansion, stride)]
            layers += [
                InvertedResidual(out_channels, out_channels, expansion, 1)
                for _ in range(blocks - 1)
            ]
            built.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.Sequential(*built)
        final = _conv_bn(channels, head_width, 1)
        final["act"] = nn.ReLU()
        self.final = nn.Sequential(final)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(head_width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MobileNetV2: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        features = self.final(self.stages(self.stem(x)))
        out: Tensor = self.head(torch.flatten(self.pool(features), 1))
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "MobileNetV2"``.

        Stem, stage output and head widths are read from the live layers (expansions, block
        counts and strides from the constructor); pruning that leaves widths these arguments
        cannot express raises ``ValueError``.

        >>> mobilenet_v2().architecture()["stages"][1]
        [6, 24, 2, 1]
        """
        stages = [stage for stage in self.stages if isinstance(stage, nn.Sequential)]
        table = []
        for (expansion, _, blocks, stride), stage in zip(self.stage_table, stages, strict=True):
            last = stage[-1]
            assert isinstance(last, InvertedResidual)
            table.append([expansion, _conv(last.project).out_channels, blocks, stride])
        return checked_architecture(
            self,
            {
                "stages": table,
                "in_channels": _conv(self.stem).in_channels,
                "num_classes": self.head.out_features,
                "stem_width": _conv(self.stem).out_channels,
                "head_width": _conv(self.final).out_channels,
            },
        )


def mobilenet_v2(*, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> MobileNetV2:
    """CIFAR MobileNetV2 (kuangliu/pytorch-cifar): 2,296,922 parameters for 10 classes.

    ``width`` is the paper's width multiplier: it scales the stem and every stage width
    (rounded half up to an int >= 1; the paper rounds to multiples of 8) and, as in the paper,
    the last 1x1 conv only when ``width > 1`` (1280 channels otherwise).
    Input (N, in_channels, 32, 32).
    """
    stages = [
        (expansion, scale_width("mobilenet_v2", out_channels, width), blocks, stride)
        for expansion, out_channels, blocks, stride in CIFAR_STAGES
    ]
    return MobileNetV2(
        stages,
        in_channels=in_channels,
        num_classes=num_classes,
        stem_width=scale_width("mobilenet_v2", 32, width),
        head_width=max(1280, scale_width("mobilenet_v2", 1280, width)),
    )
