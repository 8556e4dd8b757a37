"""The one pruning skeleton, and the hooks a method overrides.

Every pruning function of :mod:`tailwise.prune` is the same pipeline: take the rebuild history
of the model, copy it (unless ``inplace``), select its prunable layers (``include`` /
``exclude`` on parameter names), resolve the per-layer ratios, let the method act, and attach
the history to the result. :func:`run_pruner` is that pipeline, once; a method is a
:class:`Pruner` that overrides one hook, as ``torch.nn.utils.prune`` methods override
``compute_mask``:

- :class:`MaskPruner`: ``layer_mask(name, module, ratio)`` returns a keep-mask shaped like the
  weight (magnitude, node/kernel pruning); the runner applies it as a
  ``torch.nn.utils.prune`` mask and writes the report row.
- :class:`ReplacePruner`: ``replace(name, module, ratio)`` returns a smaller module that takes
  the layer's place (low-rank factorization), or a note saying why the layer stays.
- :class:`Pruner` itself, for methods that act on the whole graph at once (channel pruning).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tailwise._errors import UsageError
from tailwise._progress import progress_bar
from tailwise.prune.layers import (
    layer_weight,
    prepare,
    prunable_layers,
    rebuild_info,
    refresh_pruned,
    resolve_ratios,
    set_module,
)
from tailwise.prune.rebuild import module_spec
from tailwise.prune.report import (
    LayerReport,
    PruneResult,
    dense_flops,
    finalize,
    layer_flops,
    layer_kind,
    make_report,
    weight_params,
)

__all__ = [
    "Edits",
    "ExampleInputs",
    "MaskPruner",
    "Pruner",
    "ReplacePruner",
    "Replacement",
    "apply_masks",
    "nonfinite_reason",
    "run_pruner",
]

ExampleInputs = Tensor | tuple[Any, ...]
Edits = dict[str, dict[str, Any]]
Pattern = str | re.Pattern[str] | None


class Pruner(abc.ABC):
    """A pruning method: the runner selects layers and ratios, :meth:`apply` prunes them.

    ``method``: the label in the report's ``method`` column and ``PruneResult.method``.
    """

    method: str = ""

    def resolve(
        self, layers: Mapping[str, nn.Module], ratio: float | Mapping[str, float]
    ) -> dict[str, float]:
        """Per-layer ratios from one float or a dict layer -> ratio (layers omitted: 0)."""
        return resolve_ratios(layers, ratio)

    @abc.abstractmethod
    def apply(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        example_inputs: ExampleInputs | None,
        progress: bool,
    ) -> tuple[list[LayerReport], Edits]:
        """Prune ``layers`` of ``model`` (the runner's copy) in place; one row per layer of
        ``ratios`` and the module edits that changed the architecture."""


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
    method: str,
    ratios: Mapping[str, float],
    centers: Mapping[str, float] | None = None,
    example_inputs: ExampleInputs | None = None,
    notes: Mapping[str, str] | None = None,
) -> list[LayerReport]:
    """Attach ``masks`` (layer -> keep-mask shaped like its weight) as ``torch.nn.utils.prune``
    masks; one report row per layer of ``ratios`` (layers without a mask are unchanged).

    ``centers`` (layer -> value) makes pruned entries equal that value instead of 0. A masked
    layer's FLOPs after pruning count the MACs of its kept weights (what a sparse kernel needs).
    """
    centers = centers or {}
    notes = notes or {}
    # ||W - W'||_F / ||W||_F from the removed entries, before the masks go on (no copies).
    errors = {
        name: _masked_error(layer_weight(layers[name]), masks[name], centers.get(name, 0.0))
        for name in ratios
        if name in masks
    }
    flops_before = (
        layer_flops(model, example_inputs, layers) if example_inputs is not None else None
    )
    for name, mask in masks.items():
        weight = layer_weight(layers[name])
        mask_t = mask.to(device=weight.device, dtype=weight.dtype)
        center = centers.get(name, 0.0)
        if center != 0.0:
            _CenteredFromMask.apply(layers[name], "weight", mask=mask_t, center=center)
        else:
            torch_prune.custom_from_mask(layers[name], "weight", mask_t)
    refresh_pruned(model)
    rows = []
    for name in ratios:
        module = layers[name]
        n_weight = layer_weight(module).numel()
        removed = int((~masks[name]).sum()) if name in masks else 0
        params = weight_params(module)
        f_before = float(flops_before[name]) if flops_before is not None else dense_flops(module)
        rows.append(
            LayerReport(
                layer=name,
                kind=layer_kind(module),
                method=method,
                ratio=ratios[name],
                achieved=removed / n_weight,
                params_before=params,
                params_after=params - removed,
                flops_before=f_before,
                flops_after=f_before * (n_weight - removed) / n_weight,
                rel_error=errors.get(name, 0.0),
                note=notes.get(name, ""),
            )
        )
    return rows


class MaskPruner(Pruner):
    """A method that zeroes entries of each layer's weight: override :meth:`layer_mask`.

    :meth:`masks` asks :meth:`layer_mask` for each layer with a positive ratio (override it
    instead for a method that ranks all layers together, e.g. one global threshold);
    :meth:`center` gives the value pruned entries take (0 unless overridden).
    """

    def layer_mask(self, name: str, module: nn.Module, ratio: float) -> Tensor:
        """Boolean keep-mask shaped like ``module.weight`` for pruning ratio ``ratio`` > 0."""
        raise NotImplementedError(f"{type(self).__name__} must override layer_mask or masks")

    def center(self, module: nn.Module) -> float:
        """The value a pruned entry of this layer takes."""
        return 0.0

    def masks(
        self,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        notes: dict[str, str],
        progress: bool,
    ) -> dict[str, Tensor]:
        """Keep-masks of the layers to prune (one layer's scores at a time: at 100M
        parameters all of them at once would be gigabytes)."""
        todo = [name for name, r in ratios.items() if r > 0]
        return {
            name: self.layer_mask(name, layers[name], ratios[name])
            for name in progress_bar(todo, len(todo), progress, f"prune ({self.method})", str)
        }

    def apply(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        example_inputs: ExampleInputs | None,
        progress: bool,
    ) -> tuple[list[LayerReport], Edits]:
        notes: dict[str, str] = {}
        masks = self.masks(layers, ratios, notes, progress)
        centers = {name: self.center(layers[name]) for name in masks}
        rows = apply_masks(
            model,
            layers,
            masks,
            method=self.method,
            ratios=ratios,
            centers={name: c for name, c in centers.items() if c != 0.0},
            example_inputs=example_inputs,
            notes=notes,
        )
        return rows, {}


@dataclass(frozen=True)
class Replacement:
    """What a :class:`ReplacePruner` puts in a layer's place.

    ``module``: the new module (its Linear/Conv children do the layer's work);
    ``weights_kept``: weight entries of the new module; ``rel_error``: ||W - W'||_F / ||W||_F
    of the dense equivalent; ``note``: shown in the report.
    """

    module: nn.Module
    weights_kept: int
    rel_error: float
    note: str = ""


class ReplacePruner(Pruner):
    """A method that swaps each layer for a smaller module: override :meth:`replace`."""

    @abc.abstractmethod
    def replace(self, name: str, module: nn.Module, ratio: float) -> Replacement | str:
        """The replacement for ``module`` at pruning ratio ``ratio`` > 0, or a note saying
        why the layer stays as it is."""

    def apply(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        example_inputs: ExampleInputs | None,
        progress: bool,
    ) -> tuple[list[LayerReport], Edits]:
        flops_before = (
            layer_flops(model, example_inputs, layers) if example_inputs is not None else None
        )
        final: dict[str, nn.Module] = dict(layers)
        rows: dict[str, LayerReport] = {}
        edits: Edits = {}
        for name in progress_bar(
            list(ratios), len(ratios), progress, f"prune ({self.method})", str
        ):
            module = layers[name]
            params = weight_params(module)
            row = LayerReport(
                layer=name,
                kind=layer_kind(module),
                method=self.method,
                ratio=ratios[name],
                params_before=params,
                params_after=params,
            )
            rows[name] = row
            if ratios[name] <= 0.0:
                continue
            found = self.replace(name, module, ratios[name])
            if isinstance(found, str):
                row.note = found
                continue
            set_module(model, name, found.module)
            final[name] = found.module
            edits[name] = module_spec(found.module)
            n_weight = layer_weight(module).numel()
            row.achieved = 1.0 - found.weights_kept / n_weight
            row.params_after = params - n_weight + found.weights_kept
            row.rel_error = found.rel_error
            row.note = found.note
        flops_after = (
            layer_flops(model, example_inputs, {n: final[n] for n in rows})
            if example_inputs is not None
            else None
        )
        for name, row in rows.items():
            if flops_before is not None and flops_after is not None:
                row.flops_before = float(flops_before[name])
                row.flops_after = float(flops_after[name])
            else:
                row.flops_before = dense_flops(layers[name])
                row.flops_after = row.flops_before * (1.0 - row.achieved)
        return list(rows.values()), edits


def run_pruner(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    pruner: Pruner,
    *,
    include: Pattern = None,
    exclude: Pattern = None,
    example_inputs: ExampleInputs | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> PruneResult:
    """Prune ``model`` with ``pruner``: the skeleton every ``prune_*`` function shares.

    Copies the model unless ``inplace``, selects the Linear/Conv layers whose weight's
    parameter name matches ``include`` and not ``exclude`` (no layer: a ``UsageError``),
    resolves the ratios, calls :meth:`Pruner.apply` and attaches the rebuild history (the
    original architecture and every module edit so far) to the result and the pruned model.
    A layer whose weight holds NaN or Inf is not pruned (its ranking and error would be
    meaningless): its row keeps the requested ratio, achieves 0 and says why in ``note``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    history = rebuild_info(model)
    work = prepare(model, inplace)
    layers = prunable_layers(work, include=include, exclude=exclude)
    if not layers:
        raise UsageError(
            "no Linear/Conv layer to prune"
            + (f" matches include={_show(include)}" if include is not None else "")
            + (f" outside exclude={_show(exclude)}" if exclude is not None else "")
        )
    ratios = pruner.resolve(layers, ratio)
    # A layer holding NaN/Inf cannot be ranked (every comparison with NaN is false) and its
    # error is NaN: it stays as it is, with the reason in its note (also when an allocation
    # already gave it ratio 0, so that the report says why).
    skipped = {
        name: why for name in ratios if (why := nonfinite_reason(layer_weight(layers[name])))
    }
    effective = {name: 0.0 if name in skipped else r for name, r in ratios.items()}
    rows, edits = pruner.apply(work, layers, effective, example_inputs, progress)
    for row in rows:
        if row.layer in skipped:
            row.ratio = ratios[row.layer]
            row.note = f"{skipped[row.layer]}; {row.note}" if row.note else skipped[row.layer]
    result = PruneResult(model=work, report=make_report(rows), edits=edits, method=pruner.method)
    return finalize(result, history)


def nonfinite_reason(weight: Tensor) -> str:
    """``""`` when every entry of ``weight`` is finite, else the note of a skipped layer
    (``"skipped: weight holds 3 NaN/Inf entries"``)."""
    bad = int((~torch.isfinite(weight.detach())).sum())
    return f"skipped: weight holds {bad} NaN/Inf entries" if bad else ""


def _show(pattern: Pattern) -> str:
    return repr(pattern.pattern if isinstance(pattern, re.Pattern) else pattern)
