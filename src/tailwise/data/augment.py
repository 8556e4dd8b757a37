"""Image augmentations on tensors (no torchvision, no PIL), seeded by a ``torch.Generator``.

Every function takes one image (C, H, W) or a batch (N, C, H, W) with values in [0, 1] and
returns a new tensor of the same dtype and device; a batch gets independent draws per image.
Random numbers are drawn on the CPU from ``generator`` (torch's global generator when None),
so the same generator state gives the same result on every device.

- :func:`random_crop`, :func:`random_hflip`: the standard CIFAR recipe (4-pixel zero padding,
  a random 32 x 32 window, a horizontal flip with probability 1/2).
- :func:`augmix`: AugMix (Hendrycks et al. 2020, "AugMix: A Simple Data Processing Method to
  Improve Robustness and Uncertainty", Algorithm 1), the augmentation of source 000 §3.2
  settings 3-4: ``width`` chains of 1-3 random operations mixed with Dirichlet(alpha) weights,
  then mixed with the original by a Beta(alpha, alpha) weight m:
  ``x_augmix = (1 - m) x + m sum_i w_i chain_i(x)``. The operations are the paper's
  (:data:`AUGMIX_OPS`: autocontrast, equalize, posterize, rotate, solarize, shear and
  translate along x and y; those that overlap with CIFAR-C's corruptions are left out as in
  the paper), with its level ranges; the geometric ones resample bilinearly through
  ``affine_grid`` / ``grid_sample`` with zero fill, the others work on 8-bit levels like PIL.
- :class:`AugmentedDataset`: applies a transform to each example of a data set with a
  generator seeded from (seed, epoch, index), so a resumed training run sees the same
  augmentations as an uninterrupted one (call :meth:`AugmentedDataset.set_epoch` at the start
  of every epoch), whatever the order or worker the example is loaded in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tailwise._errors import UsageError

__all__ = [
    "AUGMENTATIONS",
    "AUGMIX_OPS",
    "AugmentedDataset",
    "Transform",
    "augmix",
    "augmix_weights",
    "autocontrast",
    "equalize",
    "posterize",
    "random_crop",
    "random_hflip",
    "rotate",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

#: A per-example transform: ``transform(image (C, H, W), generator) -> image``.
Transform = Callable[[Tensor, torch.Generator], Tensor]


# ----------------------------------------------------------------------------- helpers


def _as_batch(x: Tensor, where: str) -> tuple[Tensor, bool]:
    """``x`` as (N, C, H, W) and whether it was a single image (C, H, W)."""
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UsageError(
            f"{where}: expected an image (C, H, W) or a batch (N, C, H, W), got {shape}"
        )
    return (x[None], True) if x.dim() == 3 else (x, False)


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _coin(generator: torch.Generator | None) -> bool:
    return float(torch.rand((), generator=generator)) < 0.5


def _levels(x: Tensor) -> Tensor:
    """Values in [0, 1] as 8-bit levels 0..255 (int64), as PIL holds an image."""
    return (x.clamp(0, 1) * 255).round().to(torch.int64)


def _from_levels(levels: Tensor, like: Tensor) -> Tensor:
    return levels.to(like.dtype) / 255


# ----------------------------------------------------------------------- standard recipe


def random_crop(
    x: Tensor,
    size: int | Sequence[int],
    padding: int = 4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random ``size`` window of ``x`` padded with ``padding`` zeros on every side.

    The CIFAR recipe is ``random_crop(x, 32, padding=4)``: the image moves by up to 4 pixels
    in each direction and the uncovered border is black. Per image, the window's top-left
    corner (row, column) in the padded image is uniform over the positions that fit: row
    offsets of the batch are drawn first, then column offsets.

    Args:
        x: (C, H, W) or (N, C, H, W).
        size: output (height, width), or one int for a square; at most the padded size.
        padding: zero pixels added on each side (>= 0).
        generator: the random source (torch's global one when None).

    Returns:
        (C, h, w) or (N, C, h, w), same dtype and device.

    >>> x = torch.arange(16.0).reshape(1, 4, 4)
    >>> out = random_crop(x, 4, padding=1, generator=torch.Generator().manual_seed(0))
    >>> tuple(out.shape)
    (1, 4, 4)
    """
    batch, single = _as_batch(x, "random_crop")
    if isinstance(size, int) and not isinstance(size, bool):
        height, width = size, size
    elif isinstance(size, Sequence) and len(size) == 2:
        height, width = (int(v) for v in size)
    else:
        raise UsageError(f"random_crop: size must be an int or (height, width), got {size!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise UsageError(f"random_crop: padding must be an int >= 0, got {padding!r}")
    n, _, rows, cols = batch.shape
    padded_rows, padded_cols = rows + 2 * padding, cols + 2 * padding
    if not (1 <= height <= padded_rows and 1 <= width <= padded_cols):
        raise UsageError(
            f"random_crop: size ({height}, {width}) does not fit the padded image "
            f"({padded_rows}, {padded_cols})"
        )
    padded = F.pad(batch, (padding, padding, padding, padding))
    top = torch.randint(0, padded_rows - height + 1, (n,), generator=generator)
    left = torch.randint(0, padded_cols - width + 1, (n,), generator=generator)
    row_index = (top[:, None] + torch.arange(height)).to(batch.device)
    col_index = (left[:, None] + torch.arange(width)).to(batch.device)
    images = torch.arange(n, device=batch.device)[:, None, None]
    # Advanced indices around a slice: the result is (N, h, w, C).
    out = padded[images, :, row_index[:, :, None], col_index[:, None, :]]
    out = out.permute(0, 3, 1, 2).contiguous()
    return out[0] if single else out


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Each image mirrored left-right (last axis reversed) with probability ``p``.

    One uniform draw per image (flip when it is < ``p``). ``x``: (C, H, W) or (N, C, H, W).

    >>> x = torch.tensor([[[0.0, 1.0]]])
    >>> random_hflip(x, p=1.0).tolist()
    [[[1.0, 0.0]]]
    """
    batch, single = _as_batch(x, "random_hflip")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise UsageError(f"random_hflip: p must be a number in [0, 1], got {p!r}")
    flip = (torch.rand(batch.shape[0], generator=generator) < p).to(batch.device)
    out = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    return out[0] if single else out


# --------------------------------------------------------------------------- AugMix ops


def autocontrast(x: Tensor) -> Tensor:
    """Each channel of each image stretched linearly so that its minimum is 0 and its
    maximum 1 (PIL ``ImageOps.autocontrast`` without cutoff); a flat channel is unchanged."""
    batch, single = _as_batch(x, "autocontrast")
    low = batch.amin(dim=(-2, -1), keepdim=True)
    high = batch.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    stretched = (batch - low) / torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, stretched, batch)
    return out[0] if single else out


def equalize(x: Tensor) -> Tensor:
    """Histogram equalization of each channel on 8-bit levels (PIL ``ImageOps.equalize``).

    With h the 256-bin histogram of a channel and ``step = (sum h - h[last nonzero]) // 255``,
    level v maps to ``(step // 2 + sum_{u < v} h[u]) // step`` (at most 255); a channel with
    one level, or ``step = 0``, is unchanged.
    """
    batch, single = _as_batch(x, "equalize")
    levels = _levels(batch)
    planes = levels.reshape(-1, levels.shape[-2] * levels.shape[-1])  # one row per channel
    count = planes.shape[0]
    offsets = 256 * torch.arange(count, device=planes.device)[:, None]
    counts = torch.bincount((planes + offsets).flatten(), minlength=256 * count).reshape(count, 256)
    present = counts > 0
    last = 255 - torch.argmax(present.flip(1).to(torch.int8), dim=1)  # highest level present
    step = (planes.shape[1] - counts.gather(1, last[:, None])) // 255  # (planes, 1)
    step = torch.where(present.sum(1, keepdim=True) > 1, step, torch.zeros_like(step))
    below = torch.cumsum(counts, 1) - counts  # pixels at lower levels
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    identity = torch.arange(256, device=planes.device).expand(count, 256)
    lut = torch.where(step > 0, lut, identity)
    result = _from_levels(lut.gather(1, planes).reshape(levels.shape), batch)
    return result[0] if single else result


def posterize(x: Tensor, bits: int) -> Tensor:
    """Keep the ``bits`` (1..8) highest bits of every 8-bit level (PIL ``ImageOps.posterize``)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise UsageError(f"posterize: bits must be an int in 1..8, got {bits!r}")
    mask = (0xFF << (8 - bits)) & 0xFF
    return _from_levels(_levels(x) & mask, x)


def solarize(x: Tensor, threshold: int) -> Tensor:
    """Invert every 8-bit level v >= ``threshold`` (0..256) to 255 - v (PIL
    ``ImageOps.solarize``); threshold 256 leaves the image unchanged."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= 256:
        raise UsageError(f"solarize: threshold must be an int in 0..256, got {threshold!r}")
    levels = _levels(x)
    return _from_levels(torch.where(levels >= threshold, 255 - levels, levels), x)


def _affine(x: Tensor, matrix: Sequence[float], where: str) -> Tensor:
    """Resample ``x``: output pixel (x, y) takes the input at (a x + b y + c, d x + e y + f).

    ``matrix = (a, b, c, d, e, f)`` in pixel units with pixel centres at i + 0.5 (PIL's
    ``Image.transform(..., AFFINE, ...)`` convention); bilinear, zero outside the image.
    """
    batch, single = _as_batch(x, where)
    a, b, c, d, e, f = matrix
    rows, cols = batch.shape[-2:]
    ratio = rows / cols
    # The same map in affine_grid's normalized coordinates (align_corners=False):
    # u = 2 x / W - 1, v = 2 y / H - 1 on both sides.
    theta = torch.tensor(
        [
            [a, b * ratio, a + b * ratio + 2 * c / cols - 1],
            [d / ratio, e, d / ratio + e + 2 * f / rows - 1],
        ],
        dtype=batch.dtype if batch.dtype.is_floating_point else torch.float32,
        device=batch.device,
    )
    theta = theta.expand(batch.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0] if single else out


def rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate counter-clockwise by ``degrees`` about the image centre (PIL ``Image.rotate``),
    bilinear, black corners."""
    rows, cols = x.shape[-2:]
    angle = -math.radians(degrees)
    a, b = math.cos(angle), math.sin(angle)
    d, e = -math.sin(angle), math.cos(angle)
    cx, cy = cols / 2, rows / 2
    return _affine(x, (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy), "rotate")


def shear_x(x: Tensor, factor: float) -> Tensor:
    """Horizontal shear: output (x, y) takes the input at (x + factor y, y)."""
    return _affine(x, (1.0, factor, 0.0, 0.0, 1.0, 0.0), "shear_x")


def shear_y(x: Tensor, factor: float) -> Tensor:
    """Vertical shear: output (x, y) takes the input at (x, y + factor x)."""
    return _affine(x, (1.0, 0.0, 0.0, factor, 1.0, 0.0), "shear_y")


def translate_x(x: Tensor, pixels: float) -> Tensor:
    """Output (x, y) takes the input at (x + pixels, y): the content moves left by ``pixels``."""
    return _affine(x, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), "translate_x")


def translate_y(x: Tensor, pixels: float) -> Tensor:
    """Output (x, y) takes the input at (x, y + pixels): the content moves up by ``pixels``."""
    return _affine(x, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), "translate_y")


# The AugMix reference code's levels: an operation of severity s draws a level
# l ~ U(0.1, s), scales it to its range (int(l * max / 10) or l * max / 10) and, for the
# geometric ones, flips its sign with probability 1/2.
def _level(severity: float, maximum: float, generator: torch.Generator | None) -> float:
    return _uniform(generator, 0.1, severity) * maximum / 10


def _signed(value: float, generator: torch.Generator | None) -> float:
    return -value if _coin(generator) else value


_Op = Callable[[Tensor, float, "torch.Generator | None"], Tensor]


def _op_autocontrast(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return autocontrast(x)


def _op_equalize(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return equalize(x)


def _op_posterize(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return posterize(x, 4 - int(_level(severity, 4, g)))


def _op_rotate(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return rotate(x, _signed(int(_level(severity, 30, g)), g))


def _op_solarize(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return solarize(x, 256 - int(_level(severity, 256, g)))


def _op_shear_x(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return shear_x(x, _signed(_level(severity, 0.3, g), g))


def _op_shear_y(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return shear_y(x, _signed(_level(severity, 0.3, g), g))


def _op_translate_x(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return translate_x(x, _signed(int(_level(severity, x.shape[-1] / 3, g)), g))


def _op_translate_y(x: Tensor, severity: float, g: torch.Generator | None) -> Tensor:
    return translate_y(x, _signed(int(_level(severity, x.shape[-2] / 3, g)), g))


#: AugMix's operations by name, each ``op(image, severity, generator)`` drawing its own level.
AUGMIX_OPS: Mapping[str, _Op] = MappingProxyType(
    {
        "autocontrast": _op_autocontrast,
        "equalize": _op_equalize,
        "posterize": _op_posterize,
        "rotate": _op_rotate,
        "solarize": _op_solarize,
        "shear_x": _op_shear_x,
        "shear_y": _op_shear_y,
        "translate_x": _op_translate_x,
        "translate_y": _op_translate_y,
    }
)


# ------------------------------------------------------------------------------- AugMix


def _gamma(shape: float, generator: torch.Generator | None) -> float:
    """One Gamma(shape, 1) draw (Marsaglia & Tsang 2000; shape < 1 by the U^(1/shape) boost)."""
    if shape < 1:
        boost = float(torch.rand((), generator=generator)) ** (1 / shape)
        return _gamma(shape + 1, generator) * boost
    d = shape - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        z = float(torch.randn((), generator=generator))
        v = (1 + c * z) ** 3
        if v <= 0:
            continue
        u = float(torch.rand((), generator=generator))
        if u > 0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v


def augmix_weights(
    width: int = 3, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[Tensor, float]:
    """AugMix's mixing weights: ``w ~ Dirichlet(alpha, ..., alpha)`` (``width`` chains) and
    the skip weight ``m ~ Beta(alpha, alpha)`` (Hendrycks et al. 2020, Algorithm 1).

    Drawn from Gamma variables (w_i = G_i / sum G, m = G' / (G' + G'')), in this order, so
    :func:`augmix` with the same generator state uses these same values.

    Returns:
        ``(w (width,) float64, non-negative, summing to 1; m in [0, 1])``.

    >>> w, m = augmix_weights(3, generator=torch.Generator().manual_seed(0))
    >>> tuple(w.shape), abs(float(w.sum()) - 1) < 1e-12, 0 <= m <= 1
    ((3,), True, True)
    """
    _check_mix_args("augmix_weights", width, alpha)
    while True:
        draws = [_gamma(alpha, generator) for _ in range(width)]
        if sum(draws) > 0:  # all zero has probability 0; draw again rather than divide by 0
            break
    first, second = _gamma(alpha, generator), _gamma(alpha, generator)
    skip = first / (first + second) if first + second > 0 else 0.5
    weights = torch.tensor(draws, dtype=torch.float64)
    return weights / weights.sum(), skip


def _check_mix_args(where: str, width: int, alpha: float) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise UsageError(f"{where}: width must be an int >= 1, got {width!r}")
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    if not (ok and math.isfinite(alpha) and alpha > 0):
        raise UsageError(f"{where}: alpha must be a finite number > 0, got {alpha!r}")


def _augmix_one(
    image: Tensor,
    severity: float,
    width: int,
    depth: int,
    alpha: float,
    ops: Sequence[_Op],
    generator: torch.Generator | None,
) -> Tensor:
    weights, skip = augmix_weights(width, alpha, generator)
    mix = torch.zeros_like(image)
    for weight in weights.tolist():
        chain = image
        steps = depth if depth > 0 else int(torch.randint(1, 4, (), generator=generator))
        for _ in range(steps):
            op = ops[int(torch.randint(len(ops), (), generator=generator))]
            chain = op(chain, severity, generator)
        mix += weight * chain
    return ((1 - skip) * image + skip * mix).clamp_(0, 1)


def augmix(
    x: Tensor,
    severity: float = 3,
    width: int = 3,
    depth: int = -1,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    ops: Sequence[str] | None = None,
) -> Tensor:
    """AugMix (Hendrycks et al. 2020, Algorithm 1) of an image or of each image of a batch.

    ``x_augmix = (1 - m) x + m sum_{i=1}^{width} w_i chain_i(x)`` with
    ``(w, m) = augmix_weights(width, alpha)`` and ``chain_i`` a composition of ``depth``
    operations (1 to 3, uniformly, when ``depth <= 0``), each chosen uniformly from ``ops``
    and applied with a level drawn up to ``severity`` (the reference code's ranges: rotate up
    to 3 x severity degrees, shear up to 0.03 x severity, translate up to severity / 30 of the
    image size, posterize to 4 or fewer bits, solarize from level 256 - 25.6 x severity).
    Defaults are the paper's CIFAR settings (severity 3, width 3, random depth 1-3,
    alpha 1).

    Args:
        x: (C, H, W) or (N, C, H, W) in [0, 1] (normalize after augmenting).
        severity: the largest level, in (0, 10].
        width: number of chains (>= 1).
        depth: operations per chain (>= 1), or <= 0 for a random 1-3 per chain.
        alpha: Dirichlet and Beta concentration (> 0).
        generator: the random source (torch's global one when None).
        ops: names of :data:`AUGMIX_OPS` to choose from (default all).

    Returns:
        A tensor of the shape, dtype and device of ``x`` with values in [0, 1]: a convex
        combination of ``x`` and its augmented chains.

    >>> x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> out = augmix(x, generator=torch.Generator().manual_seed(1))
    >>> tuple(out.shape), bool(out.min() >= 0 and out.max() <= 1)
    ((3, 8, 8), True)
    """
    batch, single = _as_batch(x, "augmix")
    ok = isinstance(severity, (int, float)) and not isinstance(severity, bool)
    if not (ok and 0 < severity <= 10):
        raise UsageError(f"augmix: severity must be a number in (0, 10], got {severity!r}")
    _check_mix_args("augmix", width, alpha)
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise UsageError(f"augmix: depth must be an int, got {depth!r}")
    names = tuple(AUGMIX_OPS) if ops is None else tuple(ops)
    unknown = [name for name in names if name not in AUGMIX_OPS]
    if unknown or not names:
        raise UsageError(
            f"augmix: ops must be names of {', '.join(AUGMIX_OPS)}, got {list(names)!r}"
        )
    if not batch.dtype.is_floating_point:
        raise UsageError(f"augmix: images must be floating point in [0, 1], got {batch.dtype}")
    if batch.numel() and (float(batch.min()) < 0 or float(batch.max()) > 1):
        raise UsageError(
            "augmix: images must have values in [0, 1] (normalize after augmenting), got "
            f"[{float(batch.min()):.3g}, {float(batch.max()):.3g}]"
        )
    chosen = [AUGMIX_OPS[name] for name in names]
    out = torch.stack(
        [_augmix_one(image, severity, width, depth, alpha, chosen, generator) for image in batch]
    )
    return out[0] if single else out


# ------------------------------------------------------------------ recipes and datasets


def _standard(image: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop of the image's own size with 4-pixel zero padding, then a random flip."""
    cropped = random_crop(image, tuple(image.shape[-2:]), padding=4, generator=generator)
    return random_hflip(cropped, generator=generator)


def _standard_then_augmix(image: Tensor, generator: torch.Generator) -> Tensor:
    """The AugMix paper's CIFAR training transform: flip and crop, then AugMix."""
    return augmix(_standard(image, generator), generator=generator)


#: Named per-example recipes: ``"standard"`` (4-pixel padded random crop and a random
#: horizontal flip) and ``"augmix"`` (the same, then :func:`augmix` with the paper's defaults).
AUGMENTATIONS: Mapping[str, Transform] = MappingProxyType(
    {"standard": _standard, "augmix": _standard_then_augmix}
)


def _example_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one example in one epoch (numpy's SeedSequence hash of the three)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class AugmentedDataset(Dataset[tuple[Any, ...]]):
    """A data set whose examples' first element (the image) goes through ``transform``.

    ``dataset[index]`` must be a tuple ``(image, *rest)``; the item is
    ``(transform(image, generator), *rest)`` with a generator seeded from
    ``(seed, epoch, index)`` only: the same example gets the same augmentation in the same
    epoch, in any order, in any DataLoader worker, and after a resume; a new epoch
    (:meth:`set_epoch`) gives new draws. The training loop calls ``set_epoch(epoch)`` at the
    start of every epoch (with worker processes that persist across epochs, before they
    start: each worker holds its own copy).

    Args:
        dataset: any map-style data set of ``(image (C, H, W), ...)`` tuples.
        transform: a name of :data:`AUGMENTATIONS` (``"standard"``, ``"augmix"``) or a
            callable ``transform(image, generator) -> image``.
        seed: an int >= 0.
        epoch: the initial epoch (default 0).

    >>> from torch.utils.data import TensorDataset
    >>> base = TensorDataset(torch.rand(4, 3, 8, 8), torch.arange(4))
    >>> augmented = AugmentedDataset(base, "standard", seed=0)
    >>> torch.equal(augmented[1][0], augmented[1][0]), int(augmented[1][1])
    (True, 1)
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        transform: str | Transform,
        *,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        if isinstance(transform, str):
            if transform not in AUGMENTATIONS:
                raise UsageError(
                    f"augment must be one of {', '.join(AUGMENTATIONS)}, got {transform!r}"
                )
            self.name = transform
            transform = AUGMENTATIONS[transform]
        elif callable(transform):
            self.name = getattr(transform, "__name__", type(transform).__name__)
        else:
            raise UsageError(
                f"augment must be a name ({', '.join(AUGMENTATIONS)}) or a callable, got "
                f"{transform!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"AugmentedDataset: seed must be an int >= 0, got {seed!r}")
        self.dataset = dataset
        self.transform: Transform = transform
        self.seed = seed
        self.epoch = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch`` (an int >= 0) from now on."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"AugmentedDataset: epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image, *rest = self.dataset[index]
        generator = torch.Generator().manual_seed(_example_seed(self.seed, self.epoch, index))
        return (self.transform(image, generator), *rest)

    def __repr__(self) -> str:
        return (
            f"AugmentedDataset({type(self.dataset).__name__} of {len(self)}, {self.name!r}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )
