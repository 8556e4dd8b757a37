"""Pre-activation ResNets (He et al. 2016, identity mappings) and Wide ResNets (Zagoruyko &
Komodakis 2016) for 32x32 images.

Both stack the same block, ``BN -> ReLU -> Conv3x3 -> BN -> ReLU [-> Dropout] -> Conv3x3`` plus
a shortcut, in three stages (widths w1, w2, w3; strides 1, 2, 2), then ``BN -> ReLU -> global
average pool -> Linear``. A CIFAR pre-activation ResNet of depth d has (d - 2) / 6 blocks per
stage and widths 16/32/64 (ResNet20 / 38 / 56: source 002 builds EnResNet from ResNet20 members
and compares with ResNet38, "~0.56M parameters"); WRN-d-k has (d - 4) / 6 blocks per stage,
widths 16k/32k/64k after a 16-channel stem and dropout between the two convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture, scale_width


class PreActBlock(nn.Module):
    """``conv2(dropout(relu(bn2(conv1(relu(bn1(x))))))) + shortcut``, 3x3 convolutions.

    ``conv1`` has the block's ``stride``. The shortcut is ``x`` itself when the shape is kept,
    otherwise a bias-free ``Conv1x1 (stride)`` of the pre-activated input ``relu(bn1(x))``
    (as in the reference code of both papers). State_dict keys: ``bn1.*`` (C_in,),
    ``conv1.weight`` (C_out, C_in, 3, 3), ``bn2.*`` (C_out,), ``conv2.weight``
    (C_out, C_out, 3, 3) and, with a projection, ``shortcut.weight`` (C_out, C_in, 1, 1).

    Input (N, C_in, H, W); output (N, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False
            )

    def forward(self, x: Tensor) -> Tensor:
        """Block output (N, C_out, H', W') of an input (N, C_in, H, W)."""
        pre = self.act(self.bn1(x))
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act(self.bn2(out))))
        result: Tensor = out + shortcut
        return result


def _check_dropout(where: str, dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"{where}: dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)


class PreActResNet(nn.Module):
    """Pre-activation ResNet of :class:`PreActBlock` stages (He et al. 2016, identity mappings).

    A bias-free ``Conv3x3`` stem maps ``in_channels`` to ``stem_width`` (default
    ``widths[0]``); stage ``s`` has ``blocks_per_stage[s]`` blocks of width ``widths[s]``, every
    stage after the first starting with a stride-2 block; then ``BN -> ReLU -> global average
    pool -> Linear``. ``preact_resnet20()`` is ``PreActResNet((3, 3, 3), (16, 32, 64))``.
    ``dropout`` is the probability of the dropout between each block's two convolutions
    (Wide ResNets use it; 0 disables it).

    State_dict keys: ``stem.weight`` (stem_width, in_channels, 3, 3),
    ``stages.{s}.{b}.<PreActBlock keys>``, ``final_bn.*`` (widths[-1],) and ``head.weight``
    (num_classes, widths[-1]) / ``head.bias``.

    Input (N, in_channels, H, W), any H, W (32x32 for CIFAR); output logits (N, num_classes).

    >>> model = preact_resnet20()
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), sum(p.numel() for p in model.parameters())
    ((2, 10), 272282)
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        stem_width: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        check_positive(where, "in_channels", in_channels)
        check_positive(where, "num_classes", num_classes)
        if len(blocks_per_stage) == 0 or len(blocks_per_stage) != len(widths):
            raise ValueError(
                f"{where}: blocks_per_stage and widths must be non-empty and of equal length "
                f"(one entry per stage), got {list(blocks_per_stage)} and {list(widths)}"
            )
        for count in blocks_per_stage:
            check_positive(where, "each entry of blocks_per_stage", count)
        for width in widths:
            check_positive(where, "each entry of widths", width)
        stem_width = widths[0] if stem_width is None else stem_width
        check_positive(where, "stem_width", stem_width)
        self.dropout = _check_dropout(where, dropout)
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, stem_width, kernel_size=3, padding=1, bias=False)
        stages = []
        channels = stem_width
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = [PreActBlock(channels, width, stride, self.dropout)]
            blocks += [PreActBlock(width, width, 1, self.dropout) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        features = self.act(self.final_bn(self.stages(self.stem(x))))
        out: Tensor = self.head(torch.flatten(self.pool(features), 1))
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class"`` (this class's name).

        Stage and stem widths are read from the live layers; a channel-pruned model whose
        blocks no longer share their stage's width raises ``ValueError`` (as for ``ResNet``).

        >>> preact_resnet20().architecture()["widths"]
        [16, 32, 64]
        """
        stages = [stage for stage in self.stages if isinstance(stage, nn.Sequential)]
        last_blocks = [stage[-1] for stage in stages]
        widths = [
            block.conv2.out_channels for block in last_blocks if isinstance(block, PreActBlock)
        ]
        return checked_architecture(
            self,
            {
                "blocks_per_stage": [len(stage) for stage in stages],
                "widths": widths,
                "in_channels": self.stem.in_channels,
                "num_classes": self.head.out_features,
                "stem_width": self.stem.out_channels,
                "dropout": self.dropout,
            },
        )


class WideResNet(PreActResNet):
    """Wide ResNet (Zagoruyko & Komodakis 2016): a :class:`PreActResNet` with a 16-channel stem.

    The defaults are WRN-28-10: (28 - 4) / 6 = 4 blocks per stage, widths 16k/32k/64k with
    k = 10, 36,479,194 parameters for 10 classes (the paper's "36.5M"). ``dropout`` sits
    between each block's two convolutions (the paper's dropout runs use 0.3; default 0 here).
    State_dict keys as for :class:`PreActResNet`; the first block of stage 0 has a projection
    shortcut (16 -> 16k channels).

    Input (N, in_channels, H, W), any H, W (32x32 for CIFAR); output logits (N, num_classes).

    >>> model = wrn28(k=1)  # WRN-28-1: widths 16/32/64
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), model.architecture()["widths"]
    ((2, 10), [16, 32, 64])
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (4, 4, 4),
        widths: Sequence[int] = (160, 320, 640),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        stem_width: int | None = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            blocks_per_stage,
            widths,
            in_channels=in_channels,
            num_classes=num_classes,
            stem_width=stem_width,
            dropout=dropout,
        )


def _preact_resnet(
    where: str, depth: int, in_channels: int, num_classes: int, width: float
) -> PreActResNet:
    blocks = (depth - 2) // 6
    widths = [scale_width(where, base, width) for base in (16, 32, 64)]
    return PreActResNet(
        (blocks, blocks, blocks), widths, in_channels=in_channels, num_classes=num_classes
    )


def preact_resnet20(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0
) -> PreActResNet:
    """CIFAR pre-activation ResNet-20: 3 stages of 3 blocks, widths 16/32/64.

    272,282 parameters for 10 classes ("0.27M", He et al. 2016; source 002's EnResNet20
    ensembles two of them, "~0.54M"). ``width`` multiplies the widths (rounded half up, >= 1).
    Input (N, in_channels, 32, 32).
    """
    return _preact_resnet("preact_resnet20", 20, in_channels, num_classes, width)


def preact_resnet38(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0
) -> PreActResNet:
    """CIFAR pre-activation ResNet-38: 3 stages of 6 blocks, widths 16/32/64.

    563,930 parameters for 10 classes (source 002 ch. 4: "~0.56M"). ``width`` as for
    :func:`preact_resnet20`. Input (N, in_channels, 32, 32).
    """
    return _preact_resnet("preact_resnet38", 38, in_channels, num_classes, width)


def preact_resnet56(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0
) -> PreActResNet:
    """CIFAR pre-activation ResNet-56: 3 stages of 9 blocks, widths 16/32/64.

    855,578 parameters for 10 classes (He et al. 2016, Table 6: "0.85M"). ``width`` as for
    :func:`preact_resnet20`. Input (N, in_channels, 32, 32).
    """
    return _preact_resnet("preact_resnet56", 56, in_channels, num_classes, width)


def wrn28(
    k: int = 10,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width: float = 1.0,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-28-k (Zagoruyko & Komodakis 2016): 4 blocks per stage, widths 16k/32k/64k.

    ``k`` is the paper's widening factor (WRN-28-10: 36,479,194 parameters for 10 classes);
    ``width`` multiplies the stage widths further (rounded half up, >= 1), so ``k=10,
    width=0.4`` is WRN-28-4. The 16-channel stem is not widened (as in the paper).
    ``dropout`` between the convolutions of each block (the paper's 0.3; default 0).
    Input (N, in_channels, 32, 32).
    """
    check_positive("wrn28", "k", k)
    widths = [scale_width("wrn28", base * k, width) for base in (16, 32, 64)]
    return WideResNet(
        (4, 4, 4), widths, in_channels=in_channels, num_classes=num_classes, dropout=dropout
    )
