"""Which modules of a model can be pruned, and how to address them by name.

Every pruning method and every allocation in :mod:`tailwise.prune` works on the same set of
layers: the ``nn.Linear`` and ``nn.Conv1d/2d/3d`` modules of a model, addressed by their
module names (``model.named_modules()``, e.g. ``"features.0.conv"``). Ratios are always
*pruning* ratios: the fraction of a layer's weight parameters to remove, in ``[0, 1)``.
"""

from __future__ import annotations

import copy
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.weights import compile_pattern

__all__ = [
    "PRUNABLE_TYPES",
    "REBUILD_ATTR",
    "RebuildInfo",
    "check_ratio",
    "layer_weight",
    "merge_edits",
    "model_architecture",
    "prepare",
    "prunable_layers",
    "rebuild_info",
    "refresh_pruned",
    "resolve_ratios",
    "set_module",
    "weight_name_to_layer",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(
    model: nn.Module,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
) -> dict[str, nn.Module]:
    r"""The Linear and Conv1d/2d/3d modules of ``model`` by module name, in definition order.

    ``include``/``exclude`` are regular expressions searched (``re.search``) in the parameter
    name of each layer's weight (``"layers.0.weight"``), the rule of :func:`tailwise.analyze`
    and :func:`tailwise.iter_layers`: a layer is kept if its weight matches ``include`` (when
    given) and does not match ``exclude``. Modules reached under two names are listed once.

    >>> from tailwise.models import MLP
    >>> list(prunable_layers(MLP(64, [32], 10)))
    ['layers.0', 'layers.1']
    >>> list(prunable_layers(MLP(64, [32], 10), exclude=r"layers\.1\.weight$"))
    ['layers.0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    include_pattern = compile_pattern(include, "include")
    exclude_pattern = compile_pattern(exclude, "exclude")
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES) or not name:
            continue
        weight_name = f"{name}.weight"
        if include_pattern is not None and not include_pattern.search(weight_name):
            continue
        if exclude_pattern is not None and exclude_pattern.search(weight_name):
            continue
        layers[name] = module
    return layers


def weight_name_to_layer(name: str) -> str:
    """Module name of a weight name as :func:`tailwise.analyze` reports it.

    ``"features.0.conv.weight"`` -> ``"features.0.conv"``; a name without the ``.weight``
    suffix is returned unchanged.

    >>> weight_name_to_layer("layers.0.weight")
    'layers.0'
    """
    return name[: -len(".weight")] if name.endswith(".weight") else name


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """``ratio`` as a float if it lies in ``[0, 1)``, else a ``ValueError`` naming ``what``.

    >>> check_ratio(0.5)
    0.5
    """
    if isinstance(ratio, Tensor) and ratio.numel() == 1 and ratio.is_floating_point():
        ratio = float(ratio)
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise TypeError(f"{what} must be a number in [0, 1), got {ratio!r}")
    value = float(ratio)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise UsageError(f"{what} must be in [0, 1), got {ratio!r}")
    return value


def resolve_ratios(
    layers: Mapping[str, nn.Module], ratios: float | Mapping[str, float]
) -> dict[str, float]:
    """Per-layer pruning ratios for ``layers`` from one float or a dict name -> ratio.

    A float applies to every layer. A dict must name only layers of ``layers`` (unknown names
    raise ``ValueError``, listing the known ones); layers it omits get ratio 0 (left as they are).

    >>> from tailwise.models import MLP
    >>> resolve_ratios(prunable_layers(MLP(64, [32], 10)), {"layers.0": 0.5})
    {'layers.0': 0.5, 'layers.1': 0.0}
    """
    if isinstance(ratios, Mapping):
        unknown = sorted(set(ratios) - set(layers))
        if unknown:
            known = ", ".join(layers) or "none"
            raise UsageError(
                f"ratios name layers that are not prunable here: {unknown}; "
                f"prunable layers: {known}"
            )
        return {name: check_ratio(ratios.get(name, 0.0), f"ratio of {name}") for name in layers}
    value = check_ratio(ratios)
    return dict.fromkeys(layers, value)


def prepare(model: nn.Module, inplace: bool) -> nn.Module:
    """The model a pruning method works on: ``model`` itself if ``inplace``, else a deep copy."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if inplace:
        return model
    refresh_pruned(model)
    try:
        return copy.deepcopy(model)
    except RuntimeError as exc:
        raise ValueError(
            f"cannot copy the {type(model).__name__}: it holds computed tensors (e.g. "
            "torch.nn.utils.prune masks after a forward pass, or weight_norm); make them "
            f"permanent first or pass inplace=True ({exc})"
        ) from None


def refresh_pruned(model: nn.Module) -> None:
    """Recompute every ``torch.nn.utils.prune`` tensor without autograd history.

    A pruned ``module.weight`` is ``weight_orig * weight_mask`` computed *with* autograd, which
    ``copy.deepcopy`` refuses. The value is the same; the forward pre-hook recomputes it with
    history on the next forward pass, so training is unaffected.
    """
    from torch.nn.utils import prune as torch_prune

    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, torch_prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path, as in ``named_modules``) by ``new``.

    >>> seq = nn.Sequential(nn.Linear(2, 2))
    >>> set_module(seq, "0", nn.Identity())
    >>> seq
    Sequential(
      (0): Identity()
    )
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child not in parent._modules:
        raise KeyError(f"no submodule {name!r} in {type(model).__name__}")
    parent._modules[child] = new


def model_architecture(model: nn.Module) -> dict[str, Any] | None:
    """Constructor arguments of a tailwise model (``model.architecture()``), else ``None``.

    Taken *before* pruning: it describes the original architecture that
    :func:`tailwise.prune.load_pruned` rebuilds and then edits. A model whose structure its
    class can no longer express (an already factorized or unevenly pruned one) has none.
    """
    method = getattr(model, "architecture", None)
    if not callable(method):
        return None
    try:
        found = method()
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None
    return dict(found) if isinstance(found, Mapping) else None


REBUILD_ATTR = "tailwise_rebuild"
"""Attribute under which a pruned or loaded model carries its :class:`RebuildInfo`."""


@dataclass(frozen=True)
class RebuildInfo:
    """How to rebuild a model: the original architecture (``build_model`` arguments, or None
    when unknown) and the module edits applied to it since, in order (name -> module spec)."""

    architecture: dict[str, Any] | None
    edits: dict[str, dict[str, Any]]


def rebuild_info(model: nn.Module) -> RebuildInfo:
    """The :class:`RebuildInfo` a model carries (set by pruning or ``load_pruned``), or one
    made from ``model.architecture()`` with no edits.

    >>> from tailwise.models import MLP
    >>> rebuild_info(MLP(4, [3], 2)).architecture["class"], rebuild_info(MLP(4, [3], 2)).edits
    ('MLP', {})
    """
    stored = getattr(model, REBUILD_ATTR, None)
    if isinstance(stored, RebuildInfo):
        return stored
    return RebuildInfo(model_architecture(model), {})


def merge_edits(
    before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Edits ``before`` followed by ``after``: a later edit of a module replaces earlier edits
    of it and of everything inside it (they describe modules that no longer exist).

    >>> merge_edits({"a": {"x": 1}, "a.0": {"x": 2}, "b": {"x": 3}}, {"a": {"x": 4}})
    {'b': {'x': 3}, 'a': {'x': 4}}
    """
    merged = {
        name: spec
        for name, spec in before.items()
        if not any(name == new or name.startswith(new + ".") for new in after)
    }
    merged.update(after)
    return merged


def layer_weight(module: nn.Module) -> Tensor:
    """The ``weight`` tensor of a Linear/Conv module (a clear error if it has none)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight
