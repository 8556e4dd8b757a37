"""One entry point for pruning: method, allocation, protected outputs and the budget.

:func:`prune` is what ``tailwise prune`` calls; everything the command line does, a Python
user gets from it: method dispatch, layer-wise ratios from an allocation, the output layers
kept intact, and, for channel pruning, a budget that counts what really goes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._threads import torch_work
from tailwise.prune.allocate import (
    ALPHA_PRUNING_EPSILON,
    METRIC_COLUMNS,
    Allocation,
    AllocationKind,
    allocation_curve,
    metric_columns_of,
)
from tailwise.prune.layers import check_ratio, prunable_layers
from tailwise.prune.lowrank import GramSpectrum, LowRankPruner, lowrank_analysis
from tailwise.prune.report import PruneResult
from tailwise.prune.runner import ExampleInputs, Pruner, run_pruner
from tailwise.prune.structured import (
    ChannelPruner,
    NodePruner,
    ZeroChannelPruner,
    output_layers,
)
from tailwise.prune.unstructured import GlobalMagnitudePruner, MagnitudePruner

__all__ = ["CHANNEL_BUDGET_TOLERANCE", "PruneMethod", "find_output_layers", "prune"]

#: Channel pruning with a non-uniform allocation stops searching once the parameters removed
#: are this close to the requested share (absolute, as a fraction of the layers' parameters).
CHANNEL_BUDGET_TOLERANCE = 0.005


class PruneMethod(str, enum.Enum):
    """The pruning methods of :func:`prune`."""

    MAGNITUDE = "magnitude"
    GLOBAL_MAGNITUDE = "global-magnitude"
    LOWRANK = "lowrank"
    NODE = "node"
    CHANNEL = "channel"
    ZERO_CHANNELS = "zero-channels"


_MAGNITUDE = (PruneMethod.MAGNITUDE, PruneMethod.GLOBAL_MAGNITUDE)
_TRACED = (PruneMethod.CHANNEL, PruneMethod.ZERO_CHANNELS)


def _parse_method(method: PruneMethod | str) -> PruneMethod:
    try:
        return PruneMethod(method)
    except ValueError:
        choices = ", ".join(m.value for m in PruneMethod)
        raise UsageError(f"method {method!r}: choose one of {choices}") from None


def _pruner(
    method: PruneMethod,
    center: bool,
    example_inputs: ExampleInputs | None,
    original: nn.Module,
    keep: list[str],
    spectra: dict[str, GramSpectrum],
) -> Pruner:
    makers: dict[PruneMethod, Callable[[], Pruner]] = {
        PruneMethod.MAGNITUDE: lambda: MagnitudePruner(center=center),
        PruneMethod.GLOBAL_MAGNITUDE: lambda: GlobalMagnitudePruner(center=center, keep=keep),
        PruneMethod.LOWRANK: lambda: LowRankPruner(spectra),
        PruneMethod.NODE: NodePruner,
        PruneMethod.CHANNEL: lambda: ChannelPruner(
            example_inputs,  # type: ignore[arg-type]  # checked by prune()
            original=original,
        ),
        PruneMethod.ZERO_CHANNELS: lambda: ZeroChannelPruner(
            example_inputs,  # type: ignore[arg-type]  # checked by prune()
        ),
    }
    return makers[method]()


def find_output_layers(model: nn.Module, example_inputs: ExampleInputs | None = None) -> list[str]:
    """The Linear/Conv layers whose output is the model's output (e.g. the classifier).

    Found by tensor identity in one forward pass over ``example_inputs`` (eval mode, no
    gradients; the model's train/eval flag is restored). Without inputs, the last Linear/Conv
    layer in definition order, which is the output layer of every ``nn.Sequential``-like model.

    >>> from tailwise.models import MLP
    >>> find_output_layers(MLP(8, [4], 2))
    ['layers.1']
    """
    layers = prunable_layers(model)
    if not layers:
        return []
    if example_inputs is None:
        return [list(layers)[-1]]
    was_training = model.training
    model.eval()
    try:
        return output_layers(model, example_inputs, layers)
    finally:
        model.train(was_training)


def _joined(exclude: str | re.Pattern[str] | None, layers: list[str]) -> str | None:
    """``exclude`` extended by the weights of ``layers`` (a pattern on parameter names)."""
    parts = [rf"^{re.escape(name)}\.weight$" for name in layers]
    if exclude is not None:
        parts.append(f"(?:{exclude.pattern if isinstance(exclude, re.Pattern) else exclude})")
    return "|".join(parts) if parts else None


@torch_work()
def prune(
    model: nn.Module,
    ratio: float,
    *,
    method: PruneMethod | str = PruneMethod.MAGNITUDE,
    allocation: str = "uniform",
    example_inputs: Tensor | tuple[Any, ...] | None = None,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    protect_outputs: bool = True,
    center: bool = False,
    analysis: pd.DataFrame | None = None,
    inplace: bool = False,
    progress: bool = True,
    epsilon: float = ALPHA_PRUNING_EPSILON,
) -> PruneResult:
    """Prune ``model`` by ``method`` with layer-wise ratios from ``allocation``.

    ``method`` (:class:`PruneMethod`): ``"magnitude"`` (:func:`prune_magnitude`),
    ``"global-magnitude"`` (one threshold over all layers), ``"lowrank"``
    (:func:`prune_lowrank`), ``"node"`` (:func:`prune_nodes`) or ``"channel"``
    (:func:`prune_channels`, needs ``example_inputs`` to trace the model) or
    ``"zero-channels"`` (:func:`remove_zero_channels`: the channels structured training left
    at zero are removed; ``ratio`` and ``allocation`` do not apply, the zeros decide).
    ``allocation``: ``"uniform"`` (every layer ``ratio``), ``"lamp"``, ``"erk"`` or a numeric
    ``tailwise.analyze`` column, optionally ``":inverse"`` (see :func:`allocate`);
    ``"global-magnitude"`` takes ``"uniform"`` only (its threshold is the allocation).
    ``analysis``: a ``tailwise.analyze`` table of the model, reused instead of computed.
    ``epsilon``: the spread of ``"alpha_pruning"`` (:func:`alpha_pruning_ratios`).

    ``ratio`` is the share of the selected layers' weights to remove (for uniform channel
    pruning: of every layer's output channels). ``protect_outputs`` (default) leaves the
    layers that produce the model output (found with ``example_inputs``, else the last
    Linear/Conv layer) unpruned, and a budget is spread over the other layers: a 10-way
    classifier pruned like a hidden layer costs most of a network's accuracy. Channel pruning
    with a non-uniform allocation counts what it really removes (a layer losing output
    channels takes input channels from the layers it feeds): the allocation's ratios are
    scaled until the parameters removed from all Linear/Conv layers are within
    :data:`CHANNEL_BUDGET_TOLERANCE` of ``ratio`` (a search over real prunes of copies).

    ``include`` / ``exclude`` are regular expressions on parameter names (as everywhere in
    tailwise). Bad values raise :class:`tailwise.UsageError`. The model is copied unless
    ``inplace``; the result's model carries its rebuild history for :func:`save_pruned`.

    >>> from tailwise.models import MLP
    >>> result = prune(MLP(64, [32, 32], 10), 0.5, method="lowrank")
    >>> result.report[["layer", "ratio", "note"]].values.tolist()[-1]
    ['layers.2', 0.0, 'output layer: kept']
    """
    chosen = _parse_method(method)
    ratio = check_ratio(ratio)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    parsed = Allocation.parse(
        allocation, METRIC_COLUMNS if analysis is None else metric_columns_of(analysis)
    )
    if chosen is PruneMethod.GLOBAL_MAGNITUDE and parsed.kind is not AllocationKind.UNIFORM:
        raise UsageError(
            "method 'global-magnitude' sets layer ratios by one global threshold; "
            "use method 'magnitude' with an allocation"
        )
    if center and chosen not in _MAGNITUDE:
        raise UsageError("center applies to magnitude pruning only")
    if chosen in _TRACED and example_inputs is None:
        raise UsageError(
            "channel pruning traces the model: pass example_inputs (command line: "
            "--input-shape, e.g. 1,3,32,32)"
        )
    if chosen is PruneMethod.ZERO_CHANNELS and parsed.kind is not AllocationKind.UNIFORM:
        raise UsageError(
            "method 'zero-channels' removes the channels that are zero; it takes no allocation"
        )
    outputs = find_output_layers(model, example_inputs) if protect_outputs else []
    # The protected layers stay in the selection with ratio 0, so that they are reported.
    selected = prunable_layers(model, include=include, exclude=exclude)
    budgeted = [name for name in selected if name not in outputs]
    if not budgeted:
        raise UsageError(
            "no Linear/Conv layer to prune"
            + (" besides the output layer(s)" if selected else "")
            + (f" matches include={include!r}" if include is not None else "")
            + (f" outside exclude={exclude!r}" if exclude is not None else "")
        )
    budget_exclude = _joined(exclude, outputs)
    spectra: dict[str, GramSpectrum] = {}
    if chosen is PruneMethod.LOWRANK and analysis is None and parsed.column is not None:
        # One Gram decomposition per layer serves the spectra and the factors (issue 13).
        analysis, spectra = lowrank_analysis(
            model, list(prunable_layers(model, include=include, exclude=budget_exclude))
        )
    pruner = _pruner(chosen, center, example_inputs, model, outputs, spectra)

    curve = (
        allocation_curve(
            model,
            allocation,
            analysis=analysis,
            include=include,
            exclude=budget_exclude,
            epsilon=epsilon,
        )
        if parsed.kind is not AllocationKind.UNIFORM
        else None
    )

    def ratios_for(share: float) -> dict[str, float]:
        found = curve(share) if curve is not None else dict.fromkeys(budgeted, share)
        return {name: found.get(name, 0.0) for name in selected}

    def run(ratios: Mapping[str, float] | float, pruner: Pruner = pruner) -> PruneResult:
        return run_pruner(
            model,
            ratios,
            pruner,
            include=include,
            exclude=exclude,
            example_inputs=example_inputs,
            inplace=inplace,
            progress=progress,
        )

    if chosen in (PruneMethod.GLOBAL_MAGNITUDE, PruneMethod.ZERO_CHANNELS):
        result = run(ratio)
    elif chosen is PruneMethod.CHANNEL and parsed.kind is not AllocationKind.UNIFORM:
        result = _channel_budget(ratio, ratios_for, run, inplace)
    else:
        result = run(ratios_for(ratio))
    _mark_outputs(result, outputs)
    return result


def _removed(result: PruneResult) -> float:
    return 1.0 - result.totals()["params_ratio"]


def _channel_budget(
    ratio: float,
    ratios_for: Callable[[float], dict[str, float]],
    run: Callable[[Mapping[str, float]], PruneResult],
    inplace: bool,
) -> PruneResult:
    """Channel pruning whose parameters removed match ``ratio``: the share given to the
    allocation is searched (regula falsi, Illinois variant: removal grows with the share),
    each step a real prune of a fresh copy; the closest prune found is returned.

    An allocation's ratios count a layer's own weights; removing a fraction r of its output
    channels also removes input channels of the layers it feeds, so the allocation asked for
    ``ratio`` removes more (0.53 for 0.3 on a ResNet20).
    """
    if inplace:
        raise UsageError("channel pruning with a non-uniform allocation cannot run inplace")
    tried: list[tuple[float, PruneResult]] = []

    def miss(share: float) -> float | None:
        """Removed minus requested at ``share`` (None: the allocation cannot reach it)."""
        try:
            result = run(ratios_for(share))
        except UsageError:
            if not tried and share == ratio:
                raise
            return None
        tried.append((_removed(result) - ratio, result))
        return tried[-1][0]

    low, f_low = 0.0, -ratio
    high, f_high = ratio, miss(ratio)
    if f_high is not None and f_high > CHANNEL_BUDGET_TOLERANCE:
        side = 0
        for _ in range(12):
            if f_high is None:  # out of reach above: bisect
                share = 0.5 * (low + high)
            else:
                share = (low * f_high - high * f_low) / (f_high - f_low)
            found = miss(share)
            if found is None or found > 0:
                if found is not None and abs(found) <= CHANNEL_BUDGET_TOLERANCE:
                    break
                high, f_high = share, found
                if side == -1:
                    f_low /= 2
                side = -1
            else:
                if abs(found) <= CHANNEL_BUDGET_TOLERANCE:
                    break
                low, f_low = share, found
                if side == 1 and f_high is not None:
                    f_high /= 2
                side = 1
            if high - low < 1e-4:
                break
    return min(tried, key=lambda pair: abs(pair[0]))[1]


def _mark_outputs(result: PruneResult, outputs: list[str]) -> None:
    """Say in the report which layers were kept as output layers."""
    if not outputs:
        return
    report = result.report
    rows = report["layer"].isin(outputs) & (report["achieved"] == 0)
    report.loc[rows, "note"] = [
        "output layer: kept" if not note else f"output layer: kept; {note}"
        for note in report.loc[rows, "note"]
    ]
