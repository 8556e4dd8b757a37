"""How sparse a model is: the share of exact zeros and of zero channels (source 002 §4.2.3).

Both functions look at the weights of the model's Linear and Conv layers (the tensors the
splitting methods sparsify; biases and normalization layers are not counted) and return a
DataFrame with one row per layer and a last row ``layer == "total"`` that pools every
layer's counts (so the total is weighted by size, not a mean of the layers' shares):

- :func:`sparsity`: columns ``layer, name, kind, numel, zeros, sparsity`` with sparsity =
  zeros / numel, the share of exact zeros (source 002 Tables 3.1-3.2: "the percentage of zero
  components over all network weights").
- :func:`channel_sparsity`: columns ``layer, name, kind, channels, zero_channels,
  channel_sparsity``: the share of output channels (slices ``W[c]``) whose l2 norm is below
  ``tol`` = 1e-15 (source 002 §4.2.3; DESIGN.md glossary).

A layer pruned with ``torch.nn.utils.prune`` is measured on its effective (masked) weight.
``name`` is the layer's weight name (``"features.0.conv.weight"``); ``kind`` as in
:func:`tailwise.analyze` (``"conv2d"``, ``"linear"``).
"""

from __future__ import annotations

import math
import numbers
import re

import pandas as pd
import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.prune.layers import layer_weight, prunable_layers
from tailwise.prune.report import layer_kind
from tailwise.prune.structured import ZERO_CHANNEL_TOL

__all__ = ["CHANNEL_COLUMNS", "SPARSITY_COLUMNS", "channel_sparsity", "sparsity"]

SPARSITY_COLUMNS: tuple[str, ...] = ("layer", "name", "kind", "numel", "zeros", "sparsity")
CHANNEL_COLUMNS: tuple[str, ...] = (
    "layer",
    "name",
    "kind",
    "channels",
    "zero_channels",
    "channel_sparsity",
)


def _weights(
    model: nn.Module,
    include: str | re.Pattern[str] | None,
    exclude: str | re.Pattern[str] | None,
    where: str,
) -> list[tuple[str, nn.Module, Tensor]]:
    if not isinstance(model, nn.Module):
        raise UsageError(f"{where}: expected an nn.Module, got {type(model).__name__}")
    out = []
    for layer, module in prunable_layers(model, include=include, exclude=exclude).items():
        weight = _effective_weight(module)
        out.append((layer, module, weight))
    return out


def _effective_weight(module: nn.Module) -> Tensor:
    """The weight the forward pass uses, recomputed from ``weight_orig`` and ``weight_mask``
    for a masked layer (its cached ``weight`` is only refreshed by a forward pass)."""
    orig = getattr(module, "weight_orig", None)
    mask = getattr(module, "weight_mask", None)
    if isinstance(orig, Tensor) and isinstance(mask, Tensor):
        return (orig * mask).detach()
    return layer_weight(module).detach()


def _frame(rows: list[list[object]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def sparsity(
    model: nn.Module,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
) -> pd.DataFrame:
    """Share of exact zeros of each Linear/Conv weight of ``model``, and in total.

    One row per layer (columns :data:`SPARSITY_COLUMNS`), then the row ``layer == "total"``
    (zeros / numel over all listed layers). ``include`` / ``exclude``: regular expressions
    searched in the weight names. Source 002 Tables 3.1-3.2 and 4.4.

    >>> model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     model[0].weight[0] = 0.0
    >>> sparsity(model)[["layer", "zeros", "sparsity"]]
       layer  zeros  sparsity
    0      0      4  0.500000
    1      1      0  0.000000
    2  total      4  0.333333
    """
    rows: list[list[object]] = []
    total_numel = total_zeros = 0
    for layer, module, weight in _weights(model, include, exclude, "sparsity"):
        numel = weight.numel()
        zeros = int((weight == 0).sum())
        total_numel += numel
        total_zeros += zeros
        share = zeros / numel if numel else math.nan
        rows.append([layer, f"{layer}.weight", layer_kind(module), numel, zeros, share])
    share = total_zeros / total_numel if total_numel else math.nan
    rows.append(["total", "", "", total_numel, total_zeros, share])
    return _frame(rows, SPARSITY_COLUMNS)


def channel_sparsity(
    model: nn.Module,
    tol: float = ZERO_CHANNEL_TOL,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
) -> pd.DataFrame:
    """Share of output channels with ``||W[c]||_2 < tol`` of each Linear/Conv layer, and in total.

    A channel is the slice ``W[c]`` of a weight (out, in, *kernel): a Conv filter or a Linear
    row; its norm is taken in float64. One row per layer (columns :data:`CHANNEL_COLUMNS`),
    then ``layer == "total"`` (zero channels / channels over the listed layers). Source 002
    §4.2.3 (tol = 1e-15) and Tables 4.1-4.5. Exclude the classifier (its channels are the
    classes) with ``exclude``.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 3))
    >>> with torch.no_grad():
    ...     model[0].weight[1:3] = 0.0
    >>> channel_sparsity(model)[["layer", "zero_channels", "channel_sparsity"]]
       layer  zero_channels  channel_sparsity
    0      0              2          0.500000
    1      1              0          0.000000
    2  total              2          0.333333
    """
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not float(tol) > 0:
        raise UsageError(f"channel_sparsity: tol must be a number > 0, got {tol!r}")
    rows: list[list[object]] = []
    total_channels = total_zero = 0
    for layer, module, weight in _weights(model, include, exclude, "channel_sparsity"):
        channels = int(weight.shape[0])
        norms = torch.linalg.vector_norm(weight.reshape(channels, -1).to(torch.float64), dim=1)
        zero = int((norms < float(tol)).sum())
        total_channels += channels
        total_zero += zero
        share = zero / channels if channels else math.nan
        rows.append([layer, f"{layer}.weight", layer_kind(module), channels, zero, share])
    share = total_zero / total_channels if total_channels else math.nan
    rows.append(["total", "", "", total_channels, total_zero, share])
    return _frame(rows, CHANNEL_COLUMNS)
