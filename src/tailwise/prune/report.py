"""What a pruning method did: parameters, FLOPs and relative error per layer.

Every method in :mod:`tailwise.prune` returns a :class:`PruneResult`: the pruned model, a
per-layer report (a DataFrame with the columns of :data:`REPORT_COLUMNS`) and, for methods that
change the architecture, the module edits needed to rebuild it
(:func:`tailwise.prune.load_pruned`).

FLOPs are counted as 2 x multiply-accumulates of the Linear and Conv layers for one forward
pass over ``example_inputs`` (bias additions, norms and activations are not counted; they are
a few percent of a CNN's work). A masked (unstructured / node / kernel) layer's FLOPs after pruning
count the MACs of its kept weights: what a sparse kernel would need, not what dense PyTorch
does (dense PyTorch runs a masked layer at full cost).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tailwise.prune.layers import REBUILD_ATTR, RebuildInfo, layer_weight, merge_edits
from tailwise.weights import module_kind

__all__ = [
    "REPORT_COLUMNS",
    "LayerReport",
    "PruneResult",
    "dense_flops",
    "finalize",
    "layer_flops",
    "layer_kind",
    "make_report",
    "report_totals",
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


@contextmanager
def _recording(layers: Mapping[str, nn.Module]) -> Iterator[dict[str, list[int]]]:
    """Record the output numel of every call of ``layers`` (a module may be called twice)."""
    seen: dict[str, list[int]] = {name: [] for name in layers}
    handles = []
    for name, module in layers.items():

        def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
            if isinstance(out, Tensor):
                seen[name].append(out.numel())

        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


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
    train/eval flag is restored). A layer that is never called gets 0.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    >>> layer_flops(model, torch.zeros(1, 3, 4, 4), {"0": model[0], "2": model[2]})
    {'0': 6912, '2': 2560}
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    owners = {name: _leaves(module) for name, module in layers.items()}
    leaves = {f"{name}/{i}": leaf for name, found in owners.items() for i, leaf in enumerate(found)}
    was_training = model.training
    model.eval()
    try:
        with _recording(leaves) as seen, torch.no_grad():
            model(*args)
    finally:
        model.train(was_training)
    flops: dict[str, int] = {}
    for name, found in owners.items():
        total = 0
        for i, leaf in enumerate(found):
            weight = layer_weight(leaf)
            per_output = weight[0].numel() if weight.ndim > 2 else weight.shape[1]
            total += sum(seen[f"{name}/{i}"]) * per_output
        flops[name] = round(2 * total)
    return flops


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
