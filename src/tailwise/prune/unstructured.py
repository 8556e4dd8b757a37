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
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tailwise.prune.layers import (
    check_ratio,
    layer_weight,
    prepare,
    prunable_layers,
    rebuild_info,
    refresh_pruned,
    resolve_ratios,
)
from tailwise.prune.report import (
    PruneResult,
    dense_flops,
    finalize,
    layer_flops,
    layer_kind,
    make_report,
    weight_params,
)

__all__ = ["apply_masks", "prune_magnitude"]


class _CenteredFromMask(torch_prune.CustomFromMask):
    """``torch.nn.utils.prune`` method whose pruned entries take a constant (the median)."""

    def __init__(self, mask: Tensor, center: float) -> None:
        super().__init__(mask)
        self.center = center

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: nn.Module, name: str, mask: Tensor, center: float
    ) -> _CenteredFromMask:
        # CustomFromMask.apply only forwards `mask`; go to the base to pass `center` too.
        method = torch_prune.BasePruningMethod.apply.__func__(  # type: ignore[attr-defined]
            cls, module, name, mask=mask, center=center
        )
        return method

    def apply_mask(self, module: nn.Module) -> Tensor:
        orig = getattr(module, self._tensor_name + "_orig")
        mask = getattr(module, self._tensor_name + "_mask").to(dtype=orig.dtype)
        return orig * mask + self.center * (1 - mask)


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


def _masked_error(weight: Tensor, keep: Tensor, center: float) -> float:
    """||W - W'||_F / ||W||_F where W' sets the entries outside ``keep`` to ``center``."""
    w = weight.detach()
    norm = float(torch.linalg.vector_norm(w, dtype=torch.float64))
    if norm == 0.0:
        return 0.0
    removed = w[~keep.to(w.device)].to(torch.float64) - center
    return float(torch.linalg.vector_norm(removed)) / norm


def apply_masks(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    masks: Mapping[str, Tensor],
    *,
    centers: Mapping[str, float] | None = None,
    method: str,
    ratios: Mapping[str, float],
    example_inputs: Tensor | tuple[Any, ...] | None = None,
    notes: Mapping[str, str] | None = None,
) -> PruneResult:
    """Attach ``masks`` (layer name -> keep-mask shaped like its weight) as
    ``torch.nn.utils.prune`` masks and build the :class:`PruneResult` report.

    The report has one row per layer of ``ratios`` (the requested ratios); layers without a
    mask are reported unchanged.
    ``centers`` (layer -> value) makes pruned entries equal that value instead of 0. Shared
    by magnitude, node and kernel pruning: the one place masks are applied.
    """
    centers = centers or {}
    notes = notes or {}
    # ||W - W'||_F / ||W||_F from the removed entries, before the masks go on (no copies).
    errors = {
        name: _masked_error(layer_weight(layers[name]), masks[name], centers.get(name, 0.0))
        if name in masks
        else 0.0
        for name in ratios
    }
    flops_before = (
        layer_flops(model, example_inputs, layers) if example_inputs is not None else None
    )
    for name, mask in masks.items():
        module = layers[name]
        mask_t = mask.to(device=layer_weight(module).device, dtype=layer_weight(module).dtype)
        center = centers.get(name, 0.0)
        if center != 0.0:
            _CenteredFromMask.apply(module, "weight", mask=mask_t, center=center)
        else:
            torch_prune.custom_from_mask(module, "weight", mask_t)
    refresh_pruned(model)
    rows = []
    for name in ratios:
        module = layers[name]
        n_weight = layer_weight(module).numel()
        removed = int((~masks[name]).sum()) if name in masks else 0
        params = weight_params(module)
        # A sparse kernel does the MACs of the kept weights only (plus, when centred, one
        # median * sum(x) per output, which is not counted).
        f_before = float(flops_before[name]) if flops_before is not None else dense_flops(module)
        f_after = f_before * (n_weight - removed) / n_weight
        rows.append(
            {
                "layer": name,
                "kind": layer_kind(module),
                "method": method,
                "ratio": ratios[name],
                "achieved": removed / n_weight,
                "params_before": params,
                "params_after": params - removed,
                "flops_before": f_before,
                "flops_after": f_after,
                "rel_error": errors[name],
                "note": notes.get(name, ""),
            }
        )
    return PruneResult(model=model, report=make_report(rows), method=method)


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

    >>> from tailwise.models import MLP
    >>> result = prune_magnitude(MLP(64, [32], 10), 0.9)
    >>> result.report[["layer", "achieved"]].round(2).to_dict("list")
    {'layer': ['layers.0', 'layers.1'], 'achieved': [0.9, 0.9]}
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    history = rebuild_info(model)
    work = prepare(model, inplace)
    layers = prunable_layers(work, include=include, exclude=exclude)
    if not layers:
        raise ValueError("no Linear/Conv layer to prune (check include/exclude)")
    centers = (
        {name: _median(layer_weight(module)) for name, module in layers.items()} if center else {}
    )
    notes: dict[str, str] = {}
    if scope == "layer":
        ratios = resolve_ratios(layers, ratio)
        # One layer's scores at a time: at 100M parameters all of them would be gigabytes.
        masks = {
            name: _smallest_mask(
                _importance(layer_weight(layers[name]), center),
                math.floor(r * layer_weight(layers[name]).numel()),
            )
            for name, r in ratios.items()
            if r > 0
        }
        method = "magnitude"
    else:
        if isinstance(ratio, Mapping):
            raise TypeError("scope='global' takes one float ratio, not a dict of layer ratios")
        value = check_ratio(ratio)
        ratios = dict.fromkeys(layers, value)
        scores = {
            name: _importance(layer_weight(module), center) for name, module in layers.items()
        }
        masks = _global_masks(scores, value, notes)
        method = "global-magnitude"
    result = apply_masks(
        work,
        layers,
        masks,
        centers=centers,
        method=method,
        ratios=ratios,
        example_inputs=example_inputs,
        notes=notes,
    )
    return finalize(result, history)


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
