"""ResNet with basic blocks (He et al. 2016), with the CIFAR stem by default."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture, scale_width


class ResNetStem(str, enum.Enum):
    """First layers of a :class:`ResNet`.

    ``CIFAR``: ``Conv3x3 (stride 1) -> BatchNorm -> ReLU``, no pooling (32x32 inputs keep their
    size into the first stage). ``IMAGENET``: ``Conv7x7 (stride 2) -> BatchNorm -> ReLU ->
    MaxPool3x3 (stride 2)`` as in He et al. (2016), dividing the input size by 4.
    """

    CIFAR = "cifar"
    IMAGENET = "imagenet"


def _parse_stem(stem: ResNetStem | str) -> ResNetStem:
    try:
        return ResNetStem(stem)
    except ValueError:
        known = [member.value for member in ResNetStem]
        raise ValueError(f"ResNet: stem must be one of {known}, got {stem!r}") from None


def _stem(stem: ResNetStem, in_channels: int, width: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if stem is ResNetStem.CIFAR:
        layers["conv"] = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False)
    else:
        layers["conv"] = nn.Conv2d(
            in_channels, width, kernel_size=7, stride=2, padding=3, bias=False
        )
    layers["bn"] = nn.BatchNorm2d(width)
    layers["act"] = nn.ReLU()
    if stem is ResNetStem.IMAGENET:
        layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return nn.Sequential(layers)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions.

    ``conv1`` has the block's ``stride``; the shortcut is the identity when the shape is kept
    and ``Conv1x1 (stride) -> BatchNorm`` otherwise (He et al. 2016, option B). State_dict
    keys: ``conv1.weight`` (C_out, C_in, 3, 3), ``bn1.*`` (C_out,), ``conv2.weight``
    (C_out, C_out, 3, 3), ``bn2.*`` and, with a projection, ``shortcut.conv.weight``
    (C_out, C_in, 1, 1) and ``shortcut.bn.*``.

    Input (N, C_in, H, W); output (N, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(
                        in_channels, out_channels, kernel_size=1, stride=stride, bias=False
                    ),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        """Block output (N, C_out, H', W') of an input (N, C_in, H, W)."""
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: Tensor = self.act(out + self.shortcut(x))
        return result


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages, global average pooling and a Linear head.

    Stage ``s`` has ``blocks_per_stage[s]`` blocks of width ``widths[s]``; every stage after
    the first starts with a stride-2 block (halving the feature map) and a projection
    shortcut. The stem (see :class:`ResNetStem`) maps ``in_channels`` to ``widths[0]``.
    ``resnet18()`` is ``ResNet((2, 2, 2, 2), (64, 128, 256, 512))`` and ``resnet20()`` is
    ``ResNet((3, 3, 3), (16, 32, 64))``.

    State_dict keys: ``stem.conv.weight`` (widths[0], in_channels, k, k) with k = 3 (CIFAR) or
    7 (ImageNet), ``stem.bn.*``, ``stages.{s}.{b}.<BasicBlock keys>`` and ``head.weight``
    (num_classes, widths[-1]) / ``head.bias``.

    Input (N, in_channels, H, W), any H, W (32x32 for CIFAR); output logits (N, num_classes).

    >>> model = resnet20()
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), sum(p.numel() for p in model.parameters())
    ((2, 10), 272474)
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        stem: ResNetStem | str = ResNetStem.CIFAR,
    ) -> None:
        super().__init__()
        check_positive("ResNet", "in_channels", in_channels)
        check_positive("ResNet", "num_classes", num_classes)
        if len(blocks_per_stage) == 0 or len(blocks_per_stage) != len(widths):
            raise ValueError(
                "ResNet: blocks_per_stage and widths must be non-empty and of equal length "
                f"(one entry per stage), got {list(blocks_per_stage)} and {list(widths)}"
            )
        for count in blocks_per_stage:
            check_positive("ResNet", "each entry of blocks_per_stage", count)
        for width in widths:
            check_positive("ResNet", "each entry of widths", width)
        self.in_channels = in_channels
        self.stem_kind = _parse_stem(stem)
        self.stem = _stem(self.stem_kind, in_channels, widths[0])
        stages = []
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            first_stride = 1 if index == 0 else 2
            blocks = [BasicBlock(channels, width, stride=first_stride)]
            blocks += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        features = self.stages(self.stem(x))
        out: Tensor = self.head(torch.flatten(self.pool(features), 1))
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "ResNet"``.

        Stage widths are read from the live layers. Channel pruning that keeps every layer of
        a stage at one width is still described; pruning that makes a block's inner width
        differ from its stage width cannot be, and raises ``ValueError``.

        >>> resnet20().architecture()["widths"]
        [16, 32, 64]
        """
        stages = [stage for stage in self.stages if isinstance(stage, nn.Sequential)]
        last_blocks = [stage[-1] for stage in stages]
        widths = [block.bn2.num_features for block in last_blocks if isinstance(block, BasicBlock)]
        return checked_architecture(
            self,
            {
                "blocks_per_stage": [len(stage) for stage in stages],
                "widths": widths,
                "in_channels": self.in_channels,
                "num_classes": self.head.out_features,
                "stem": self.stem_kind.value,
            },
        )


def _scaled(where: str, widths: Sequence[int], width: float) -> list[int]:
    return [scale_width(where, base, width) for base in widths]


def resnet18(*, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-18: 3x3 stem without max pool, 4 stages of 2 blocks, widths 64-512.

    11,173,962 parameters for 10 classes. ``width`` multiplies the stage widths (64, 128, 256,
    512), each rounded half up to an int >= 1; source 000 eq. 2.10 trains the fractions
    {0.25, 0.5, 1, 1.5, 2, 2.5}. Input (N, in_channels, 32, 32).

    >>> resnet18(width=0.25).architecture()["widths"]
    [16, 32, 64, 128]
    """
    widths = _scaled("resnet18", (64, 128, 256, 512), width)
    return ResNet((2, 2, 2, 2), widths, in_channels=in_channels, num_classes=num_classes)


def resnet34(*, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-34: as :func:`resnet18` with 3, 4, 6 and 3 blocks per stage.

    21,282,122 parameters for 10 classes; ``width`` as for :func:`resnet18` (source 000
    eq. 2.10). Input (N, in_channels, 32, 32).

    >>> [len(stage) for stage in resnet34(width=0.125).stages]
    [3, 4, 6, 3]
    """
    widths = _scaled("resnet34", (64, 128, 256, 512), width)
    return ResNet((3, 4, 6, 3), widths, in_channels=in_channels, num_classes=num_classes)


def resnet20(*, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-20 of He et al. (2016, Sec. 4.2): 3 stages of 3 blocks, widths 16/32/64.

    Projection (1x1 conv) shortcuts at the two stage transitions (the paper uses parameter-free
    zero-padding there), so 272,474 parameters for 10 classes. ``width`` multiplies the stage
    widths (rounded half up, >= 1). Input (N, in_channels, 32, 32).
    """
    widths = _scaled("resnet20", (16, 32, 64), width)
    return ResNet((3, 3, 3), widths, in_channels=in_channels, num_classes=num_classes)
