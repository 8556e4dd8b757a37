"""Structured pruning: node / kernel masks, and channel pruning with physical removal.

- :func:`prune_nodes` (source 003, REFERENCES §4): a fully connected layer loses whole
  columns of W (input nodes) and a convolution whole kernels W[o, i] (kh x kw slices), those
  with the smallest l2 norm, as ``torch.nn.utils.prune`` masks.
- :func:`remove_zero_channels`: the output channels that structured training (RGSM, structured
  ADMM) set to exactly zero are removed the same way, so a channel-sparse model becomes a
  physically smaller one.
- :func:`prune_channels`: output channels are removed from the network, using Torch-Pruning's
  dependency graph so that every coupled tensor shrinks with them: the following layers' input
  channels, BatchNorm statistics, residual additions (all members of a sum lose the same
  channels) and concatenations (DenseNet). The result is a smaller dense model whose forward
  pass equals the dense model with those channels zeroed.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn

from tailwise._errors import UsageError, first_line
from tailwise._modules import as_args
from tailwise.prune.layers import layer_weight, prunable_layers
from tailwise.prune.rebuild import changed_modules, structure_specs
from tailwise.prune.report import (
    ForwardTrace,
    LayerReport,
    PruneResult,
    layer_kind,
    trace_forward,
    weight_params,
)
from tailwise.prune.runner import Edits, ExampleInputs, MaskPruner, Pruner, run_pruner

__all__ = [
    "ZERO_CHANNEL_TOL",
    "ChannelPruner",
    "NodePruner",
    "ZeroChannelPruner",
    "output_layers",
    "prune_channels",
    "prune_nodes",
    "remove_zero_channels",
]

#: A channel whose weights have l2 norm below this is "zero" (source 002's channel sparsity).
ZERO_CHANNEL_TOL = 1e-15


def _unit_keep_mask(weight: Tensor, remove: int) -> Tensor:
    """Keep-mask (weight's shape) dropping the ``remove`` weakest units: columns W[:, j] of a
    Linear weight (out, in), kernels W[o, i] of a conv weight (out, in, *k), by l2 norm."""
    w = weight.detach().to(torch.float64)
    if w.ndim == 2:
        norms = torch.linalg.vector_norm(w, dim=0)  # (in,)
    else:
        norms = torch.linalg.vector_norm(w.flatten(2), dim=2)  # (out, in)
    keep = torch.ones_like(norms, dtype=torch.bool)
    if remove > 0:
        order = torch.sort(norms.flatten(), stable=True).indices
        keep.view(-1)[order[:remove]] = False
    if w.ndim == 2:
        return keep[None, :].expand_as(w).clone()
    return keep.reshape(*keep.shape, *([1] * (w.ndim - 2))).expand_as(w).clone()


class NodePruner(MaskPruner):
    """Zero the ``floor(r * units)`` weakest input nodes (Linear columns) or kernels."""

    method = "node"

    def layer_mask(self, name: str, module: nn.Module, ratio: float) -> Tensor:
        weight = layer_weight(module)
        units = weight.shape[1] if weight.ndim == 2 else weight.shape[0] * weight.shape[1]
        return _unit_keep_mask(weight, math.floor(ratio * units))


def prune_nodes(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    example_inputs: Tensor | tuple[Any, ...] | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> PruneResult:
    """Zero whole input nodes (Linear columns) or kernels (conv W[o, i]) with the smallest l2 norm.

    A layer with ratio r loses ``floor(r * units)`` units: ``in_features`` columns for a
    Linear, ``out * in / groups`` kernels for a convolution. Masks are ``torch.nn.utils.prune``
    masks; the model is deep-copied unless ``inplace``.

    >>> from tailwise.models import MLP
    >>> result = prune_nodes(MLP(8, [4], 2), {"layers.0": 0.5})
    >>> int((result.model.layers[0].weight.abs().sum(dim=0) == 0).sum())  # 4 of 8 columns
    4
    """
    return run_pruner(
        model,
        ratio,
        NodePruner(),
        include=include,
        exclude=exclude,
        example_inputs=example_inputs,
        inplace=inplace,
        progress=progress,
    )


def output_layers(
    model: nn.Module, example_inputs: Tensor | tuple[Any, ...], layers: Mapping[str, nn.Module]
) -> list[str]:
    """Names of ``layers`` that produce the model's output: their output reaches a model
    output without passing through another of ``layers`` (the classifier, also when a
    ``log_softmax`` or a reshape follows it).

    Their output channels are the model's outputs (e.g. class logits), so channel pruning
    must leave them alone. Found in one forward pass over ``example_inputs`` by walking the
    autograd graph back from the outputs (by tensor identity when no parameter requires
    gradients): the ``output_layers`` of :func:`~tailwise.prune.report.trace_forward`.

    >>> from tailwise.models import MLP
    >>> net = MLP(8, [4], 2)
    >>> output_layers(net, torch.zeros(1, 8), dict(net.layers.named_children()))
    ['1']
    """
    return trace_forward(model, example_inputs, layers, find_output_layers=True).output_layers


def _importance(kind: str) -> tp.importance.Importance:
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    raise UsageError(f"importance must be 'l2' or 'l1', got {kind!r}")


def prune_channels(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    example_inputs: Tensor | tuple[Any, ...],
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    importance: Literal["l2", "l1"] = "l2",
    round_to: int | None = None,
    ignored: Sequence[str] = (),
    inplace: bool = False,
) -> PruneResult:
    """Remove output channels of Linear/Conv layers physically, keeping the network consistent.

    ``ratio``: one float for every selected layer, or a dict layer name -> fraction of its
    output channels to remove. Channels are ranked by the l2 (or l1) norm of their weights,
    aggregated over every tensor coupled to them (Torch-Pruning's group magnitude importance);
    a layer with C channels loses ``C - floor(C (1 - r))`` of them and always keeps at least
    one. Coupled layers (the convolutions feeding one residual sum) are pruned together, with
    the ratio of the group's first layer. Layers whose output is a model output (found by
    running ``example_inputs``; e.g. the classifier) and the names in ``ignored`` keep their
    output channels; naming them in a ratio dict is an error. ``round_to`` keeps channel
    counts multiples of it (hardware-friendly widths).

    The model is traced in eval mode (BatchNorm statistics untouched) and deep-copied unless
    ``inplace``. ``result.edits`` lists every module whose shape changed, for
    :func:`tailwise.prune.save_pruned` / :func:`tailwise.prune.load_pruned`.

    >>> from tailwise.models import SmallCNN
    >>> result = prune_channels(SmallCNN(channels=(32, 64)), 0.5, torch.zeros(1, 1, 8, 8))
    >>> result.model.features[0].conv.out_channels, result.model.head.in_features
    (16, 128)
    """
    if isinstance(ignored, str):
        raise TypeError(f"ignored must be a sequence of layer names, got the string {ignored!r}")
    pruner = ChannelPruner(
        example_inputs,
        importance=importance,
        round_to=round_to,
        ignored=ignored,
        dict_ratios=isinstance(ratio, Mapping),
        original=None if inplace else model,
    )
    return run_pruner(
        model, ratio, pruner, include=include, exclude=exclude, inplace=inplace, progress=False
    )


class ChannelPruner(Pruner):
    """Physical removal of output channels over the whole dependency graph (Torch-Pruning).

    Not a per-layer hook: coupled layers (residual sums, concatenations, the next layer's
    input channels) shrink together, so :meth:`apply` prunes the graph at once and reports
    every Linear/Conv layer of the model, selected or not. ``original``: the untouched model,
    searched for the failing layer when the graph cannot be pruned (None: no search).
    """

    method = "channel"

    def __init__(
        self,
        example_inputs: ExampleInputs,
        *,
        importance: str = "l2",
        round_to: int | None = None,
        ignored: Sequence[str] = (),
        dict_ratios: bool = False,
        original: nn.Module | None = None,
    ) -> None:
        _importance(importance)  # validated before any work
        self.example_inputs = example_inputs
        self.importance = importance
        self.round_to = round_to
        self.ignored = tuple(ignored)
        self.dict_ratios = dict_ratios
        self.original = original

    def apply(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        example_inputs: ExampleInputs | None,
        progress: bool,
    ) -> tuple[list[LayerReport], Edits]:
        inputs = self.example_inputs
        everything = prunable_layers(model)
        unknown = sorted(set(self.ignored) - set(everything))
        if unknown:
            raise UsageError(f"ignored names layers that are not Linear/Conv layers: {unknown}")
        was_training = model.training
        model.eval()
        try:
            # One traced pass before pruning (output layers, FLOPs, output shapes) and one
            # after (FLOPs, output shapes; it also checks that the pruned model runs).
            traced = trace_forward(model, inputs, everything, find_output_layers=True)
            outputs = traced.output_layers
            protected = set(outputs) | set(self.ignored)
            if self.dict_ratios:
                named = sorted(n for n in protected if ratios.get(n, 0.0) > 0)
                if named:
                    why = (
                        "they produce the model output"
                        if set(named) <= set(outputs)
                        else "they produce the model output or are in ignored"
                    )
                    raise UsageError(f"cannot remove output channels of {named}: {why}")
            before = _layer_state(everything)
            specs_before = structure_specs(model)
            after = self._prune_graph(model, everything, ratios, protected) or traced
            if after.output_shapes != traced.output_shapes:
                raise UsageError(
                    f"channel pruning changed the model's output shape {traced.output_shapes} "
                    f"-> {after.output_shapes}; exclude or ignore the layer that produces the "
                    "output"
                )
            edits = changed_modules(specs_before, model)
        finally:
            model.train(was_training)
        rows = []
        for name, module in everything.items():
            n0, c0, norm0, params0 = before[name]
            weight = layer_weight(module).detach()
            norm1 = float(torch.linalg.vector_norm(weight, dtype=torch.float64)) ** 2
            note = ""
            c1 = _channels(module)
            if c1 != c0 or weight.shape[1] * weight[0, 0].numel() != n0 // c0:
                note = f"out {c0} -> {c1}, in -> {weight.shape[1]}"
            requested = ratios.get(name, 0.0)
            if name in protected:
                requested = 0.0
                kept = "output layer" if name in outputs else "ignored"
                note = (f"{kept}: output channels kept; " + note).strip("; ")
            rows.append(
                LayerReport(
                    layer=name,
                    kind=layer_kind(module),
                    method=self.method,
                    ratio=requested,
                    achieved=1.0 - weight.numel() / n0,
                    params_before=params0,
                    params_after=weight_params(module),
                    flops_before=float(traced.flops[name]),
                    flops_after=float(after.flops[name]),
                    # The kept weights are a sub-array of W: ||W - W'||^2 = ||W||^2 - ||W'||^2.
                    rel_error=math.sqrt(max(0.0, 1.0 - norm1 / norm0)) if norm0 > 0 else 0.0,
                    note=note,
                )
            )
        return rows, edits

    def _prune_graph(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        protected: set[str],
    ) -> ForwardTrace | None:
        """Prune the graph in place; the traced forward pass of the pruned model (None when
        nothing was pruned: the model is unchanged)."""
        round_to = self.round_to
        pruning = {
            layers[name]: _clamped(r, _channels(layers[name]), round_to)
            for name, r in ratios.items()
            if r > 0 and name not in protected and _channels(layers[name]) > (round_to or 1)
        }
        if not pruning:
            return None
        protected_modules = [layers[name] for name in sorted(protected)]
        try:
            _meta_prune(
                model, self.example_inputs, self.importance, pruning, protected_modules, round_to
            )
            # A forward pass that breaks after pruning (e.g. a hard-coded reshape) is a
            # failure of the same kind: a dependency the graph did not see.
            return trace_forward(model, self.example_inputs, layers)
        except Exception as exc:  # Torch-Pruning raises many types while tracing
            culprit = (
                _failing_layer(self.original, self.example_inputs, ratios, protected)
                if self.original is not None
                else ""
            )
            raise UsageError(
                f"the dependency graph of {type(model).__name__} could not be pruned"
                + (f" at layer {culprit!r}" if culprit else "")
                + f" ({type(exc).__name__}: {first_line(exc)}); exclude that layer "
                "(exclude= or ignored=; --exclude on the command line)"
            ) from exc


def remove_zero_channels(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    *,
    tol: float = ZERO_CHANNEL_TOL,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    ignored: Sequence[str] = (),
    inplace: bool = False,
) -> PruneResult:
    """Physically remove the output channels whose weights are zero (l2 norm < ``tol``).

    What a channel-sparse model from :class:`tailwise.train.splitting.RGSM` or structured
    :class:`~tailwise.train.splitting.ADMM` needs to become smaller and faster: the zero
    channels (002's channel sparsity, ``||W[c]||_2 < 1e-15``) of every selected Linear/Conv
    layer are removed over Torch-Pruning's dependency graph, like :func:`prune_channels`, but
    by index instead of by rank. A channel coupled to others (the convolutions feeding one
    residual sum lose the same channels) is removed only when it is zero in every coupled
    layer; a layer keeps at least one channel; output layers (found with ``example_inputs``)
    and ``ignored`` keep theirs. ``torch.nn.utils.prune`` masks are made permanent first.
    The report's ``ratio`` column is the share of zero channels found, ``achieved`` the share
    of weights removed.

    The pruned network computes exactly what the sparse one does when nothing between a zero
    channel and the next layer adds a constant; a BatchNorm after it does (its output there is
    the constant ``beta - gamma mu / sqrt(var + eps)``), so removal then changes the outputs by
    that constant's contribution: measure accuracy after removal (``tailwise prune --method
    zero-channels --data ...`` prints it before and after).

    >>> from tailwise.models import MLP
    >>> net = MLP(8, [6], 3)
    >>> with torch.no_grad():
    ...     net.layers[0].weight[[1, 4]] = 0.0
    >>> result = remove_zero_channels(net, torch.zeros(1, 8))
    >>> result.model.layers[0].out_features, result.model.layers[1].in_features
    (4, 4)
    """
    if isinstance(ignored, str):
        raise TypeError(f"ignored must be a sequence of layer names, got the string {ignored!r}")
    tol = float(tol)
    if not math.isfinite(tol) or tol <= 0:
        raise UsageError(f"remove_zero_channels: tol must be a finite number > 0, got {tol}")
    pruner = ZeroChannelPruner(example_inputs, tol=tol, ignored=ignored)
    return run_pruner(
        model, 1.0, pruner, include=include, exclude=exclude, inplace=inplace, progress=False
    )


def _make_permanent(model: nn.Module) -> None:
    """Remove every ``torch.nn.utils.prune`` reparametrization of ``model`` (in place)."""
    from torch.nn.utils import prune as torch_prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def _zero_channels(module: nn.Module, tol: float) -> list[int]:
    """Output channels of ``module`` whose weights (bias excluded) have l2 norm < ``tol``."""
    weight = layer_weight(module).detach()
    norms = torch.linalg.vector_norm(weight.flatten(1), dim=1, dtype=torch.float64)  # (out,)
    return [int(i) for i in torch.nonzero(norms < tol).flatten()]


class ZeroChannelPruner(ChannelPruner):
    """Removal of the zero output channels over the dependency graph (by index, not by rank).

    :meth:`resolve` sets each layer's ratio to its share of zero channels, for the report.
    """

    method = "zero-channels"

    def __init__(
        self,
        example_inputs: ExampleInputs,
        *,
        tol: float = ZERO_CHANNEL_TOL,
        ignored: Sequence[str] = (),
    ) -> None:
        super().__init__(example_inputs, ignored=ignored)
        self.tol = tol

    def resolve(
        self, layers: Mapping[str, nn.Module], ratio: float | Mapping[str, float]
    ) -> dict[str, float]:
        return {
            name: len(_zero_channels(module, self.tol)) / _channels(module)
            for name, module in layers.items()
        }

    def apply(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        example_inputs: ExampleInputs | None,
        progress: bool,
    ) -> tuple[list[LayerReport], Edits]:
        _make_permanent(model)  # Torch-Pruning edits plain weights, not weight_orig * mask
        return super().apply(model, layers, ratios, example_inputs, progress)

    def _prune_graph(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        ratios: Mapping[str, float],
        protected: set[str],
    ) -> ForwardTrace | None:
        if not any(r > 0 for name, r in ratios.items() if name not in protected):
            return None
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=as_args(self.example_inputs)
        )
        kept = {layers[name] for name in protected}
        for name, r in ratios.items():
            if r <= 0 or name in protected:
                continue
            module = layers[name]
            zero = _zero_channels(module, self.tol)[: _channels(module) - 1]
            prune_fn = (
                tp.prune_linear_out_channels
                if isinstance(module, nn.Linear)
                else tp.prune_conv_out_channels
            )
            removable = _removable(
                graph, graph.get_pruning_group(module, prune_fn, zero), kept, self.tol
            )
            if removable:
                group = graph.get_pruning_group(module, prune_fn, removable)
                if graph.check_pruning_group(group):
                    group.prune()
        return trace_forward(model, self.example_inputs, layers)


def _removable(graph: Any, group: Any, kept: set[nn.Module], tol: float) -> list[int]:
    """The root indices of ``group`` whose channels are zero in every coupled Linear/Conv
    layer that would lose them as output channels (and none of which is in ``kept``)."""
    good = set(group[0].root_idxs)
    for item in group.items:
        target = item.dep.target.module
        if not graph.is_out_channel_pruning_fn(item.dep.handler):
            continue
        if not isinstance(target, nn.Linear | nn.modules.conv._ConvNd):
            continue
        if target in kept:
            return []
        weight = layer_weight(target).detach().to(torch.float64).flatten(1)
        for idx, root in zip(item.idxs, item.root_idxs, strict=True):
            if float(torch.linalg.vector_norm(weight[idx])) >= tol:
                good.discard(root)
    return sorted(good)


def _meta_prune(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    importance: str,
    pruning: dict[nn.Module, float],
    protected: list[nn.Module],
    round_to: int | None,
) -> None:
    pruner = tp.pruner.MetaPruner(
        model,
        # A tuple of positional arguments: given a tensor, Torch-Pruning first calls
        # model(*tensor), a wasted (or, for a model that accepts unbatched input, wrong) pass.
        as_args(example_inputs),
        importance=_importance(importance),
        pruning_ratio=0.0,
        pruning_ratio_dict=pruning,
        ignored_layers=protected,
        round_to=round_to,
    )
    pruner.step()


def _failing_layer(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    ratios: Mapping[str, float],
    protected: set[str],
) -> str:
    """The first layer that cannot be pruned on its own (searched on fresh copies of the
    untouched model, only after a failure); "" when each prunes fine alone."""
    for name, r in ratios.items():
        if r <= 0 or name in protected:
            continue
        trial = copy.deepcopy(model).eval()
        layers = prunable_layers(trial)
        module = layers[name]
        share = min(r, (_channels(module) - 1) / _channels(module) - 1e-9)
        try:
            _meta_prune(
                trial,
                example_inputs,
                "l2",
                {module: share},
                [layers[p] for p in sorted(protected)],
                None,
            )
            trial(*as_args(example_inputs))
        except Exception:
            return name
    return ""


def _clamped(ratio: float, channels: int, round_to: int | None) -> float:
    """``ratio`` lowered so that at least one channel (``round_to`` with rounding) survives
    Torch-Pruning's ``int(C * (1 - r))`` kept count, rounded down to a multiple of round_to."""
    floor = round_to or 1
    return min(ratio, (channels - floor) / channels - 1e-9)


def _channels(module: nn.Module) -> int:
    return int(layer_weight(module).shape[0])


def _layer_state(layers: Mapping[str, nn.Module]) -> dict[str, tuple[int, int, float, int]]:
    """Per layer: weight numel, output channels, squared Frobenius norm, params."""
    state = {}
    for name, module in layers.items():
        weight = layer_weight(module).detach()
        norm = float(torch.linalg.vector_norm(weight, dtype=torch.float64)) ** 2
        state[name] = (weight.numel(), _channels(module), norm, weight_params(module))
    return state
