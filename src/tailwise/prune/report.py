"""What a pruning method did: parameters, FLOPs and relative error per layer.

Every method in :mod:`tailwise.prune` returns a :class:`PruneResult`: the pruned model, a
per-layer report (a DataFrame with the columns of :data:`REPORT_COLUMNS`) and, for methods that
change the architecture, the module edits needed to rebuild it
(:func:`tailwise.prune.load_pruned`).

FLOPs are counted as 2 x multiply-accumulates of the Linear and Conv layers for one forward
pass over ``example_inputs`` (:func:`trace_forward`, which also gives the output shapes and the
output layers from the same pass) (bias additions, norms and activations are not counted; they are
a few percent of a CNN's work). A masked (unstructured / node / kernel) layer's FLOPs after pruning
count the MACs of its kept weights: what a sparse kernel would need, not what dense PyTorch
does (dense PyTorch runs a masked layer at full cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tailwise._modules import as_args
from tailwise.prune.layers import REBUILD_ATTR, RebuildInfo, layer_weight, merge_edits
from tailwise.weights import module_kind

__all__ = [
    "REPORT_COLUMNS",
    "ForwardTrace",
    "LayerReport",
    "PruneResult",
    "dense_flops",
    "finalize",
    "flatten_tensors",
    "layer_flops",
    "layer_kind",
    "make_report",
    "report_totals",
    "trace_forward",
    "weight_params",
]


@dataclass
class LayerReport:
    """One row of a pruning report: what happened to one layer (see :class:`PruneResult`)."""

    layer: str
    kind: str
    method: str
    ratio: float
    achieved: float = 0.0
    params_before: int = 0
    params_after: int = 0
    flops_before: float = float("nan")
    flops_after: float = float("nan")
    rel_error: float = 0.0
    note: str = ""


REPORT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LayerReport))


@dataclass
class PruneResult:
    """A pruned model, what was removed per layer, and how to rebuild its architecture.

    ``report``: one row per considered layer (columns :data:`REPORT_COLUMNS`): ``ratio`` the
    requested pruning ratio, ``achieved`` the fraction of the layer's weight parameters that
    is gone (removed or zero), ``params_*`` weight + bias counts, ``flops_*`` for one pass over
    the example inputs (NaN when no inputs were given and the layer is a convolution),
    ``rel_error`` = ||W - W_pruned||_F / ||W||_F with W_pruned the dense equivalent of the
    pruned layer (zeros where weights were removed), ``note`` anything the user should know.
    ``edits``: module name -> module spec for every module whose structure changed (empty for
    mask-based methods); stored with the saved model so the architecture can be rebuilt.
    ``architecture``: the original model's constructor arguments when it is a tailwise model
    (``model.architecture()``), else ``None``.
    """

    model: nn.Module
    report: pd.DataFrame
    edits: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: str = ""
    architecture: dict[str, Any] | None = None

    def totals(self) -> dict[str, float]:
        """Model-level sums: params and FLOPs before/after and their ratios (after / before).

        >>> from tailwise.models import MLP
        >>> from tailwise.prune import prune_magnitude
        >>> result = prune_magnitude(MLP(8, [16], 4), 0.5)
        >>> result.totals()["params_ratio"] < 0.6
        True
        """
        return report_totals(self.report)


def report_totals(df: pd.DataFrame) -> dict[str, float]:
    """Sums of a pruning report (:data:`REPORT_COLUMNS`): params and FLOPs before/after and
    their ratios (after / before); what :meth:`PruneResult.totals` returns."""
    out: dict[str, float] = {}
    for what in ("params", "flops"):
        # NaN when any layer's count is unknown (a conv without example inputs): a
        # partial sum would pass off the Linear layers' ratio as the model's.
        before = float(df[f"{what}_before"].sum(skipna=False, min_count=1))
        after = float(df[f"{what}_after"].sum(skipna=False, min_count=1))
        out[f"{what}_before"] = before
        out[f"{what}_after"] = after
        out[f"{what}_ratio"] = after / before if before > 0 else float("nan")
    return out


def weight_params(module: nn.Module) -> int:
    """Number of weight + bias elements of a Linear/Conv module (its own, not children's).

    >>> weight_params(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters(recurse=False))


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The Linear/Conv modules that do a layer's work: itself, or its children (low-rank)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if isinstance(module, kinds):
        return [module]
    return [m for m in module.modules() if isinstance(m, kinds)]


def flatten_tensors(value: Any) -> list[Tensor]:
    """The tensors of a forward's output (a tensor, or tuples / lists / dicts of them), in order.

    >>> [t.shape for t in flatten_tensors((torch.zeros(2), {"a": [torch.ones(1, 3)]}, 7))]
    [torch.Size([2]), torch.Size([1, 3])]
    """
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in flatten_tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in flatten_tensors(v)]
    return []


@dataclass(frozen=True)
class ForwardTrace:
    """What one forward pass of a model over example inputs showed (:func:`trace_forward`).

    ``output_shapes``: shapes of the model's output tensors (:func:`flatten_tensors` order);
    ``flops``: layer name -> FLOPs (2 x MACs) of its Linear/Conv work in the pass (module
    docstring); ``output_layers``: the layers whose output reaches a model output without
    passing through another of the layers, sorted (empty unless asked for).
    """

    output_shapes: list[torch.Size]
    flops: dict[str, int]
    output_layers: list[str]


@contextmanager
def _hooks(modules: Mapping[str, nn.Module], record: Callable[[str, Any], None]) -> Iterator[None]:
    """``record(name, output)`` after every call of each of ``modules`` (removed on exit)."""
    handles = []
    for name, module in modules.items():

        def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
            record(name, out)

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _reaching_outputs(outputs: list[Tensor], produced: list[tuple[str, Tensor]]) -> list[str]:
    """Names among ``produced`` (layer, output tensor) whose tensor reaches one of ``outputs``
    without passing through another produced tensor: by identity, then back through the
    autograd graph from the outputs (stopping at the first producing layer on each path)."""
    found = {name for name, tensor in produced if any(tensor is out for out in outputs)}
    owner = {t.grad_fn: name for name, t in produced if t.grad_fn is not None}
    stack = [out.grad_fn for out in outputs if out.grad_fn is not None]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in owner:
            found.add(owner[node])
            continue
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return sorted(found)


def trace_forward(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    layers: Mapping[str, nn.Module],
    *,
    find_output_layers: bool = False,
) -> ForwardTrace:
    """One forward pass of ``model`` over ``example_inputs`` with hooks on ``layers``: the
    output shapes, each layer's FLOPs and, with ``find_output_layers``, the output layers.

    Everything a pruning report needs from the model before (or after) pruning, from one pass.
    FLOPs: every output element of a Linear costs ``in_features`` MACs and of a convolution
    ``in_channels / groups * prod(kernel_size)``; a layer replaced by a factorized pair
    (:func:`tailwise.prune.prune_lowrank`) counts both factors; a layer never called gets 0,
    one called twice counts twice. Output layers: the layers whose output reaches a model
    output without passing through another of ``layers`` (the classifier, also when a
    ``log_softmax`` or a reshape follows it), found by walking the autograd graph back from
    the outputs, so that pass runs with gradients enabled (otherwise under
    ``torch.no_grad``). The model runs in eval mode; its train/eval flag is restored.

    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> trace = trace_forward(model, torch.zeros(5, 4), {"0": model[0], "2": model[2]},
    ...                       find_output_layers=True)
    >>> trace.output_shapes, trace.flops, trace.output_layers
    ([torch.Size([5, 2])], {'0': 120, '2': 60}, ['2'])
    """
    owners = {name: _leaves(module) for name, module in layers.items()}
    leaves = {f"{name}/{i}": leaf for name, found in owners.items() for i, leaf in enumerate(found)}
    numels: dict[str, list[int]] = {name: [] for name in leaves}
    # Keep the produced tensors alive: ids of freed intermediates are reused by later ones.
    produced: list[tuple[str, Tensor]] = []

    def count(name: str, out: Any) -> None:
        if isinstance(out, Tensor):
            numels[name].append(out.numel())

    def keep(name: str, out: Any) -> None:
        produced.extend((name, tensor) for tensor in flatten_tensors(out))

    was_training = model.training
    model.eval()
    try:
        with (
            _hooks(leaves, count),
            _hooks(layers if find_output_layers else {}, keep),
            torch.enable_grad() if find_output_layers else torch.no_grad(),
        ):
            outputs = flatten_tensors(model(*as_args(example_inputs)))
    finally:
        model.train(was_training)
    flops: dict[str, int] = {}
    for name, found in owners.items():
        total = 0
        for i, leaf in enumerate(found):
            weight = layer_weight(leaf)
            per_output = weight[0].numel() if weight.ndim > 2 else weight.shape[1]
            total += sum(numels[f"{name}/{i}"]) * per_output
        flops[name] = round(2 * total)
    return ForwardTrace(
        output_shapes=[t.shape for t in outputs],
        flops=flops,
        output_layers=_reaching_outputs(outputs, produced) if find_output_layers else [],
    )


def layer_flops(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    layers: Mapping[str, nn.Module],
) -> dict[str, int]:
    """FLOPs (2 x MACs) of each of ``layers`` in one forward pass of ``model`` on the inputs.

    Every output element of a Linear costs ``in_features`` MACs and of a convolution
    ``in_channels / groups * prod(kernel_size)`` MACs. A layer replaced by a factorized pair
    (:func:`tailwise.prune.prune_lowrank`) counts both factors. ``example_inputs``: a tensor or
    a tuple of positional arguments. The model runs in eval mode under ``torch.no_grad`` (its
    train/eval flag is restored). A layer that is never called gets 0. (The ``flops`` of
    :func:`trace_forward`.)

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    >>> layer_flops(model, torch.zeros(1, 3, 4, 4), {"0": model[0], "2": model[2]})
    {'0': 6912, '2': 2560}
    """
    return trace_forward(model, example_inputs, layers).flops


def dense_flops(module: nn.Module) -> float:
    """FLOPs of a Linear layer for one input vector (2 in out); NaN for a convolution, whose
    cost depends on the input size.

    >>> dense_flops(nn.Linear(3, 2))
    12.0
    """
    if isinstance(module, nn.Linear):
        return float(2 * module.in_features * module.out_features)
    return float("nan")


def layer_kind(module: nn.Module) -> str:
    """Kind label of a prunable module, as :func:`tailwise.analyze` names it (``"conv2d"``):
    :func:`tailwise.weights.module_kind`, the package's one layer-kind rule."""
    return module_kind(module)


def make_report(rows: Sequence[LayerReport]) -> pd.DataFrame:
    """A report DataFrame with exactly :data:`REPORT_COLUMNS`, in that order."""
    df = pd.DataFrame([asdict(row) for row in rows], columns=list(REPORT_COLUMNS))
    for col in ("params_before", "params_after"):
        df[col] = df[col].astype("int64")
    for col in ("ratio", "achieved", "flops_before", "flops_after", "rel_error"):
        df[col] = df[col].astype("float64")
    df["note"] = df["note"].fillna("").astype(str)
    return df


def finalize(result: PruneResult, before: RebuildInfo) -> PruneResult:
    """Attach the rebuild information: the original architecture and the edits made before
    this pruning followed by its own; the pruned model carries them too, so pruning it again
    (or saving it) keeps the whole history."""
    edits = merge_edits(before.edits, result.edits)
    result.edits = edits
    result.architecture = before.architecture
    setattr(result.model, REBUILD_ATTR, RebuildInfo(before.architecture, edits))
    return result
