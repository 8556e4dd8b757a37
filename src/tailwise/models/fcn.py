"""FCN4 and FCN6: the fully connected networks of source 003 (appendix A.2, Table 1).

Source 003 trains, on MNIST and CIFAR-10, fully connected ReLU networks with 4 (FCN4) or 6
(FCN6) hidden layers of equal width, without biases, batch norm, dropout or residual
connections. Its Table 1 fixes the width: FCN4 has 18,894,848 parameters on CIFAR-10 and
14,209,024 on MNIST, a difference of (3072 - 784) * w, so w = 2048, and
3072 * 2048 + 3 * 2048^2 + 2048 * 10 = 18,894,848 exactly when no layer has a bias
(FCN6: 27,283,456 and 22,597,632). Both are :class:`~tailwise.models.MLP` instances.
"""

from __future__ import annotations

from tailwise.models._checks import check_positive, scale_width
from tailwise.models.mlp import MLP

FCN_WIDTH = 2048
"""Hidden width of source 003's FCN4 / FCN6 (from its Table 1 parameter counts)."""


def _fcn(
    where: str, depth: int, in_channels: int, num_classes: int, width: float, image_size: int
) -> MLP:
    check_positive(where, "in_channels", in_channels)
    check_positive(where, "image_size", image_size)
    hidden = [scale_width(where, FCN_WIDTH, width)] * depth
    return MLP(in_channels * image_size * image_size, hidden, num_classes, bias=False)


def fcn4(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, image_size: int = 32
) -> MLP:
    """FCN4 of source 003: 4 bias-free ReLU hidden layers of 2048 units, flattened images in.

    18,894,848 parameters for CIFAR-10 (3 x 32 x 32 in, 10 classes), 14,209,024 for MNIST
    (``in_channels=1, image_size=28``), as in source 003 Table 1. ``width`` multiplies the
    hidden width (rounded half up, >= 1). Input (N, in_channels, image_size, image_size) or
    (N, in_channels * image_size**2); output logits (N, num_classes).

    >>> fcn4(width=1 / 256).hidden
    (8, 8, 8, 8)
    """
    return _fcn("fcn4", 4, in_channels, num_classes, width, image_size)


def fcn6(
    *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, image_size: int = 32
) -> MLP:
    """FCN6 of source 003: 6 bias-free ReLU hidden layers of 2048 units, flattened images in.

    27,283,456 parameters for CIFAR-10 and 22,597,632 for MNIST (source 003 Table 1);
    ``width`` and shapes as for :func:`fcn4`.
    """
    return _fcn("fcn6", 6, in_channels, num_classes, width, image_size)
