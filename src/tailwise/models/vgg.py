"""VGG for small images (CIFAR style): 3x3 convolutions, 2x2 max pools, a small Linear head."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture, scale_width

POOL = "M"
"""Config entry for a 2x2 max pool (stride 2) after the preceding convolution."""

VGG_CONFIGS: Mapping[str, tuple[int | str, ...]] = MappingProxyType(
    {
        # Simonyan & Zisserman (2015), Table 1, configurations A (vgg11), B (vgg13), D (vgg16) and
        # E (vgg19): output widths of the 3x3 convolutions, "M" = 2x2 max pool.
        "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
        "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
        "vgg16": (
            *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
            *(512, 512, 512, "M", 512, 512, 512, "M"),
        ),
        "vgg19": (
            *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
            *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
        ),
        # Not from the paper: three narrow blocks for fast tests (32 -> 4 pixels, 64 * 4 * 4 head).
        "vgg-small": (16, "M", 32, "M", 64, "M"),
    }
)


def _parse_config(config: Sequence[int | str] | str) -> list[tuple[int, bool]]:
    """``(width, pool_after)`` per convolution of a VGG config (a name or a sequence)."""
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(f"VGG: unknown config {config!r}; known: {sorted(VGG_CONFIGS)}")
        config = VGG_CONFIGS[config]
    convolutions: list[tuple[int, bool]] = []
    for position, entry in enumerate(config):
        if entry == POOL:
            if not convolutions or convolutions[-1][1]:
                raise ValueError(
                    f"VGG: config entry {position} is {POOL!r} but does not follow a convolution "
                    f"(each pool comes after a conv width), got config {list(config)}"
                )
            convolutions[-1] = (convolutions[-1][0], True)
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry >= 1:
            convolutions.append((entry, False))
        else:
            raise ValueError(
                f"VGG: config entries must be positive ints (conv widths) or {POOL!r} (2x2 max "
                f"pool), got {entry!r} at position {position}"
            )
    if not convolutions:
        raise ValueError(f"VGG: config must name at least one convolution, got {list(config)}")
    return convolutions


def _vgg_block(in_channels: int, out_channels: int, *, batch_norm: bool, pool: bool) -> nn.Module:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    # With BatchNorm the conv bias is redundant (the BN shift absorbs it).
    layers["conv"] = nn.Conv2d(
        in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm
    )
    if batch_norm:
        layers["bn"] = nn.BatchNorm2d(out_channels)
    layers["act"] = nn.ReLU()
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


class VGG(nn.Module):
    """VGG: ``Conv3x3 [-> BatchNorm] -> ReLU [-> MaxPool2]`` per conv width, then Linear layers.

    ``config`` is a name from :data:`VGG_CONFIGS` or a sequence of conv output widths and
    ``"M"`` entries (a 2x2 max pool after the preceding conv), as in Simonyan & Zisserman (2015)
    Table 1. The head is CIFAR style: flatten the last feature map (C_last, s, s) with
    s = image_size // 2**(number of pools), then ``Linear -> ReLU`` per ``hidden`` width and a
    ``Linear`` to ``num_classes`` (no dropout). ``image_size`` must be at least 2**(pools).

    State_dict keys, conv ``i`` counted over convolutions only: ``features.{i}.conv.weight``
    (C_i, C_{i-1}, 3, 3) (plus ``features.{i}.conv.bias`` (C_i,) without batch norm),
    ``features.{i}.bn.*`` (C_i,), ``hidden_layers.{j}.weight`` / ``.bias`` and ``head.weight``
    (num_classes, H_last) / ``head.bias`` with H_last = hidden[-1] or C_last * s * s.

    Input (N, in_channels, image_size, image_size); output logits (N, num_classes).

    >>> model = VGG("vgg11")  # 32 -> 1 pixel after 5 pools, head 512 -> 10
    >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape), tuple(model.head.weight.shape)
    ((2, 10), (10, 512))
    """

    def __init__(
        self,
        config: Sequence[int | str] | str = "vgg11",
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        batch_norm: bool = True,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__()
        check_positive("VGG", "in_channels", in_channels)
        check_positive("VGG", "num_classes", num_classes)
        check_positive("VGG", "image_size", image_size)
        if not isinstance(batch_norm, bool):
            raise ValueError(f"VGG: batch_norm must be a bool, got {batch_norm!r}")
        for width in hidden:
            check_positive("VGG", "each hidden width", width)
        convolutions = _parse_config(config)
        pools = sum(pool for _, pool in convolutions)
        final_size = image_size // 2**pools
        if final_size < 1:
            raise ValueError(
                f"VGG: image_size={image_size} is too small for {pools} max pools (each halves "
                f"it); need image_size >= {2**pools}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.batch_norm = batch_norm
        blocks = []
        channels = in_channels
        for width, pool in convolutions:
            blocks.append(_vgg_block(channels, width, batch_norm=batch_norm, pool=pool))
            channels = width
        self.features = nn.Sequential(*blocks)
        widths = [channels * final_size * final_size, *hidden]
        self.hidden_layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in itertools.pairwise(widths)
        )
        self.act = nn.ReLU()
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images (N, in_channels, image_size, image_size)."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"VGG: expected input of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        x = torch.flatten(self.features(x), 1)
        for layer in self.hidden_layers:
            x = self.act(layer(x))
        out: Tensor = self.head(x)
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "VGG"``.

        ``config`` is spelled out as a list (never a name) with the widths of the live layers,
        so a channel-pruned VGG is still described and :func:`tailwise.models.build_model`
        rebuilds it.

        >>> VGG("vgg-small").architecture()["config"]
        [16, 'M', 32, 'M', 64, 'M']
        """
        config: list[int | str] = []
        for module in self.features.modules():  # registration order: conv before its pool
            if isinstance(module, nn.Conv2d):
                config.append(module.out_channels)
            elif isinstance(module, nn.MaxPool2d):
                config.append(POOL)
        linears = [layer for layer in self.hidden_layers if isinstance(layer, nn.Linear)]
        return checked_architecture(
            self,
            {
                "config": config,
                "in_channels": self.in_channels,
                "num_classes": self.head.out_features,
                "image_size": self.image_size,
                "batch_norm": self.batch_norm,
                "hidden": [layer.out_features for layer in linears],
            },
        )


def vgg19(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width: float = 1.0,
    batch_norm: bool = True,
    image_size: int = 32,
) -> VGG:
    """CIFAR VGG-19 (configuration E of Simonyan & Zisserman 2015) with one Linear head.

    16 convolutions 64..512 and 5 max pools, so a 32x32 input ends as 512 x 1 x 1 and the
    head is ``Linear(512, num_classes)``. With batch norm (the default, bias-free convs):
    20,035,018 parameters for 10 classes; the common CIFAR implementation
    (kuangliu/pytorch-cifar) quotes 20,040,522 because it keeps the 5,504 conv biases that
    batch norm makes redundant. ``width`` multiplies every conv width (rounded half up,
    >= 1). Input (N, in_channels, image_size, image_size), image_size >= 32.

    >>> vgg19(width=0.125).architecture()["config"][:3]
    [8, 8, 'M']
    """
    config = [
        entry if entry == POOL else scale_width("vgg19", int(entry), width)
        for entry in VGG_CONFIGS["vgg19"]
    ]
    return VGG(
        config,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        batch_norm=batch_norm,
    )
