"""Magnitude pruning (layer-wise or global) as ``torch.nn.utils.prune`` masks.

The pruned model carries the standard ``weight_orig`` / ``weight_mask`` pair and forward
pre-hook of ``torch.nn.utils.prune``, so ``prune.is_pruned(model)`` is true and
``torch.nn.utils.prune.remove(module, "weight")`` makes a pruning permanent.

Median centring (source 003, REFERENCES §4): rank entries by ``|w - median(w)|`` and set the
pruned ones to the layer's median instead of 0, i.e. the best-k-term approximation of the
centred weights with the median added back. The mask then acts as
``w_pruned = median + mask * (w - median)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.prune.layers import check_ratio, layer_weight
from tailwise.prune.report import PruneResult
from tailwise.prune.runner import MaskPruner, apply_masks, run_pruner

__all__ = ["GlobalMagnitudePruner", "MagnitudePruner", "apply_masks", "prune_magnitude"]


def _median(weight: Tensor) -> float:
    # The lower median, as torch.median returns: an actual entry of the layer.
    return float(weight.detach().flatten().median())


def _importance(weight: Tensor, center: bool) -> Tensor:
    """|w| (exact in float32 or wider), or |w - median| in float64 when centred."""
    if center:
        w = weight.detach().to(torch.float64)
        return (w - _median(weight)).abs()
    w = weight.detach()
    return (w if w.dtype in (torch.float32, torch.float64) else w.to(torch.float32)).abs()


def _smallest_mask(scores: Tensor, remove: int) -> Tensor:
    """Boolean keep-mask (same shape) that drops the ``remove`` smallest scores.

    Ties at the threshold are dropped in position order, so the result is deterministic and
    equals a stable sort's first ``remove`` entries, at the cost of one selection
    (``kthvalue``) instead of a full sort.
    """
    flat = scores.flatten()
    keep = torch.ones_like(flat, dtype=torch.bool)
    if remove <= 0:
        return keep.view_as(scores)
    if remove >= flat.numel():
        return torch.zeros_like(keep).view_as(scores)
    threshold = torch.kthvalue(flat, remove).values
    below = flat < threshold
    keep.masked_fill_(below, False)
    left = remove - int(below.sum())
    if left > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:left]
        keep[ties] = False
    return keep.view_as(scores)


class MagnitudePruner(MaskPruner):
    """Each layer loses its ``floor(r N)`` smallest entries by ``|w|`` (``|w - median|`` when
    ``center``; pruned entries then take the median)."""

    method = "magnitude"

    def __init__(self, *, center: bool = False) -> None:
        self.centered = center

    def layer_mask(self, name: str, module: nn.Module, ratio: float) -> Tensor:
        weight = layer_weight(module)
        return _smallest_mask(
            _importance(weight, self.centered), math.floor(ratio * weight.numel())
        )

    def center(self, module: nn.Module) -> float:
        return _median(layer_weight(module)) if self.centered else 0.0


class GlobalMagnitudePruner(MagnitudePruner):
    """One threshold over all selected layers removes ``floor(ratio * sum N_l)`` entries; a
    layer that would lose every weight keeps its largest one. Layers in ``keep`` are left out
    of the threshold (reported with ratio 0)."""

    method = "global-magnitude"

    def __init__(self, *, center: bool = False, keep: Collection[str] = ()) -> None:
        super().__init__(center=center)
        self.keep = frozenset(keep)

    def resolve(
        self, layers: Mapping[str, nn.Module], ratio: float | Mapping[str, float]
    ) -> dict[str, float]:
        if isinstance(ratio, Mapping):
            raise TypeError("scope='global' takes one float ratio, not a dict of layer ratios")
        value = check_ratio(ratio)
        return {name: 0.0 if name in self.keep else value for name in layers}

    def masks(
        self,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        notes: dict[str, str],
        progress: bool,
    ) -> dict[str, Tensor]:
        ratio = max(ratios.values(), default=0.0)
        # Layers resolved to 0 below a positive ratio (kept, or skipped by the runner for
        # NaN/Inf) stay out of the threshold.
        scores = {
            name: _importance(layer_weight(layers[name]), self.centered)
            for name, r in ratios.items()
            if name not in self.keep and (r > 0 or ratio == 0)
        }
        if not scores:
            return {}
        return _global_masks(scores, ratio, notes)


def prune_magnitude(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    *,
    scope: Literal["layer", "global"] = "layer",
    center: bool = False,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    example_inputs: Tensor | tuple[Any, ...] | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> PruneResult:
    """Zero the smallest-magnitude weights of every Linear/Conv layer (as prune masks).

    ``scope="layer"``: each layer loses ``floor(r_l * N_l)`` of its N_l weights, ``ratio``
    one float for all layers or a dict layer name -> r_l (e.g. from
    :func:`tailwise.prune.allocate`); layers the dict omits are left alone. ``scope="global"``:
    one threshold over all selected layers removes ``floor(ratio * sum N_l)`` weights (a
    float ratio only); a layer that would lose every weight keeps its largest one.
    ``center=True`` ranks ``|w - median|`` per layer and sets pruned weights to the median
    (source 003). Biases are never pruned. The model is deep-copied unless ``inplace``.
    ``example_inputs`` enables FLOPs in the report (sparse FLOPs after pruning).
    ``include`` / ``exclude``: regular expressions searched in each layer's weight parameter
    name (``"layers.0.weight"``), as in :func:`tailwise.analyze`.

    >>> from tailwise.models import MLP
    >>> result = prune_magnitude(MLP(64, [32], 10), 0.9)
    >>> result.report[["layer", "achieved"]].round(2).to_dict("list")
    {'layer': ['layers.0', 'layers.1'], 'achieved': [0.9, 0.9]}
    """
    if scope not in ("layer", "global"):
        raise UsageError(f"scope must be 'layer' or 'global', got {scope!r}")
    pruner = (
        MagnitudePruner(center=center) if scope == "layer" else GlobalMagnitudePruner(center=center)
    )
    return run_pruner(
        model,
        ratio,
        pruner,
        include=include,
        exclude=exclude,
        example_inputs=example_inputs,
        inplace=inplace,
        progress=progress,
    )


def _global_masks(
    scores: Mapping[str, Tensor], ratio: float, notes: dict[str, str]
) -> dict[str, Tensor]:
    """Keep-masks for one global threshold: drop the ``floor(ratio * total)`` smallest scores
    over all layers; a layer that would be emptied keeps its largest score."""
    names = list(scores)
    flat = torch.cat([scores[name].flatten() for name in names])
    remove = math.floor(ratio * flat.numel())
    keep = _smallest_mask(flat, remove)
    masks: dict[str, Tensor] = {}
    offset = 0
    for name in names:
        n = scores[name].numel()
        layer_keep = keep[offset : offset + n].clone()
        offset += n
        if not bool(layer_keep.any()):
            layer_keep[int(scores[name].flatten().argmax())] = True
            notes[name] = "kept its largest weight (global threshold would empty the layer)"
        masks[name] = layer_keep.view_as(scores[name])
    return masks
