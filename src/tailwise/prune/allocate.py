"""Layer-wise pruning ratios: uniform, metric-proportional or -inverse, LAMP, ERK, AlphaPruning.

One entry point, :func:`allocate`, turns a global pruning ratio into a dict
``layer name -> pruning ratio`` over the layers of :func:`~tailwise.prune.layers.prunable_layers`,
so that any pruning method can be combined with any allocation. A *ratio* is always the
fraction of a layer's weight parameters removed, in ``[0, 1)``; layer sizes ``N_i`` count the
elements of ``module.weight`` (biases excluded). A global ratio ``r`` is the parameter budget
``sum_i r_i N_i = r sum_i N_i`` (REFERENCES §3).

The building blocks are pure functions on arrays/tensors: :func:`metric_ratios` (source 000
§3.2), :func:`alpha_pruning_ratios` (Lu et al. 2024), :func:`lamp_scores` (Lee et al. 2021)
and :func:`erk_densities` (Evci et al. 2020).
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.prune.layers import (
    check_ratio,
    layer_weight,
    prunable_layers,
    weight_name_to_layer,
)
from tailwise.spectral.analyze import COLUMNS, TEXT_COLUMNS

__all__ = [
    "ALPHA_PRUNING_COLUMN",
    "ALPHA_PRUNING_EPSILON",
    "INVERSE_SUFFIX",
    "METRIC_COLUMNS",
    "Allocation",
    "AllocationKind",
    "allocate",
    "allocation_curve",
    "alpha_pruning_ratios",
    "erk_densities",
    "lamp_scores",
    "metric_columns_of",
    "metric_ratios",
]

#: Numeric columns of :func:`tailwise.analyze` usable as metrics by :func:`allocate`.
METRIC_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)
#: Suffix of a metric name that makes ratios inversely proportional to it (settings 2 and 4).
INVERSE_SUFFIX = ":inverse"
#: The analysis column ``"alpha_pruning"`` reads: the power-law exponent of each layer's ESD.
ALPHA_PRUNING_COLUMN = "alpha"
#: AlphaPruning's ``epsilon`` by default: the published default for LLMs (Lu et al. 2024).
ALPHA_PRUNING_EPSILON = 0.3

# Relative slack for budgets computed in floating point: 0.7 * 10 is 6.999999999999999.
_BUDGET_RTOL = 1e-9
# "features.0.conv.weight[1,2]" (conv="slices") -> "features.0.conv.weight"
_SLICE_SUFFIX = re.compile(r"\[[^\]]*\]$")


class AllocationKind(Enum):
    """How :func:`allocate` spreads the budget over layers."""

    UNIFORM = "uniform"
    LAMP = "lamp"
    ERK = "erk"
    ALPHA_PRUNING = "alpha_pruning"
    METRIC = "metric"


@dataclass(frozen=True)
class Allocation:
    """An allocation method parsed from its string form (see :func:`allocate`).

    >>> Allocation.parse("alpha:inverse", METRIC_COLUMNS)
    Allocation(kind=<AllocationKind.METRIC: 'metric'>, metric='alpha', inverse=True)
    """

    kind: AllocationKind
    metric: str | None = None
    inverse: bool = False

    @classmethod
    def parse(cls, method: str, metric_columns: Sequence[str]) -> Allocation:
        """Parse ``"uniform"``, ``"lamp"``, ``"erk"``, ``"alpha_pruning"``, ``"<column>"`` or
        ``"<column>:inverse"``.

        ``metric_columns``: the numeric columns a metric may name (``"alpha_pruning"`` reads
        ``"alpha"``, so it needs that column). Anything else raises a ``ValueError`` that lists
        the valid methods and columns.

        >>> Allocation.parse("alpha_pruning", METRIC_COLUMNS).kind
        <AllocationKind.ALPHA_PRUNING: 'alpha_pruning'>
        """
        if not isinstance(method, str):
            raise TypeError(f"allocate: method must be a string, got {method!r}")
        if method == AllocationKind.ALPHA_PRUNING.value and ALPHA_PRUNING_COLUMN not in (
            metric_columns
        ):
            raise UsageError(
                f"allocate: {method!r} reads the {ALPHA_PRUNING_COLUMN!r} column of "
                "tailwise.analyze, which the analysis does not have (numeric columns: "
                f"{', '.join(metric_columns) or 'none'})"
            )
        if method in {kind.value for kind in AllocationKind if kind is not AllocationKind.METRIC}:
            return cls(AllocationKind(method))
        inverse = method.endswith(INVERSE_SUFFIX)
        metric = method[: -len(INVERSE_SUFFIX)] if inverse else method
        if metric not in metric_columns:
            raise UsageError(
                f"allocate: unknown method {method!r}; expected 'uniform', 'lamp', 'erk', "
                "'alpha_pruning' or a numeric column of tailwise.analyze, optionally suffixed "
                f"{INVERSE_SUFFIX!r}: {', '.join(metric_columns)}"
            )
        return cls(AllocationKind.METRIC, metric, inverse)

    @property
    def column(self) -> str | None:
        """The ``tailwise.analyze`` column the ratios follow (None: no analysis needed).

        >>> Allocation.parse("alpha_pruning", METRIC_COLUMNS).column
        'alpha'
        """
        if self.kind is AllocationKind.ALPHA_PRUNING:
            return ALPHA_PRUNING_COLUMN
        return self.metric

    def ratios(
        self,
        values: Sequence[float] | NDArray[np.float64],
        sizes: Sequence[int] | NDArray[np.int64],
        ratio: float,
        *,
        step: float = 0.01,
        max_ratio: float = 0.95,
        epsilon: float = ALPHA_PRUNING_EPSILON,
    ) -> list[float]:
        """Ratios of an allocation that follows a column (see :attr:`column`), from the
        per-layer ``values`` of that column: :func:`metric_ratios` for a metric,
        :func:`alpha_pruning_ratios` for ``"alpha_pruning"``. Shapes and options as there;
        other kinds raise a ``ValueError``.

        >>> Allocation.parse("alpha", METRIC_COLUMNS).ratios([1.0, 3.0], [100, 100], 0.4)
        [0.2, 0.6]
        """
        if self.kind is AllocationKind.ALPHA_PRUNING:
            return alpha_pruning_ratios(values, sizes, ratio, epsilon=epsilon, max_ratio=max_ratio)
        if self.kind is AllocationKind.METRIC:
            return metric_ratios(
                values, sizes, ratio, inverse=self.inverse, step=step, max_ratio=max_ratio
            )
        raise ValueError(f"allocation {self.kind.value!r} does not follow an analysis column")


# ---------------------------------------------------------------------------------------------
# Metric-driven ratios (source 000 §3.2)


def metric_ratios(
    values: Sequence[float] | NDArray[np.float64],
    sizes: Sequence[int] | NDArray[np.int64],
    ratio: float,
    *,
    inverse: bool = False,
    step: float = 0.01,
    max_ratio: float = 0.95,
) -> list[float]:
    """Pruning ratios proportional (or inversely proportional) to a per-layer metric.

    Source 000 §3.2 and table 3.1: the ratio of layer i follows its metric m_i, directly
    (settings 1 and 3: larger metric, more pruning) or inversely (settings 2 and 4: smaller
    metric, more pruning). Each layer i has a cap ``k_i = c * w_i`` with ``w_i = m_i`` or
    ``1 / m_i``; ratios are raised from 0 in increments of ``step`` (0.01 in the source), a
    layer stopping at the last multiple of ``step`` not above its cap (and not above
    ``max_ratio``), the model stopping at the parameter budget ``B = ratio * sum_i N_i``.
    The scale ``c`` is the largest one whose stepped ratios fit in the budget (layers whose
    next step comes at the same ``c`` step together or not at all); then each layer still
    below ``max_ratio`` may take one more step, in the order in which a larger ``c`` would
    give it one (ties: layer order), if that step fits. So, with ``R = sum_i r_i N_i``:

    - never over-prune: ``R <= B`` (up to a relative 1e-9 for floating point);
    - ``B - R < step * N_k`` for some layer k below ``max_ratio``: the budget is met to within
      one step of one layer's parameters;
    - every ratio is a multiple of ``step`` in ``[0, max_ratio]``, and ``w_i >= w_j`` implies
      ``r_i >= r_j - step``.

    Source 000 determines the caps "by normalizing all matrix entropy measurements" and steps
    because it "would rather under-prune than over-prune"; here the caps are normalised to
    the budget itself, so that it is met rather than under-shot. Layers with ``w_i = 0`` are
    not pruned. If the budget is out of reach (``B`` above ``max_ratio``, rounded down to a
    multiple of ``step``, times the parameters of the layers with ``w_i > 0``) a
    ``ValueError`` gives both numbers.

    ``values``: shape (L,), finite; ``>= 0`` (proportional) or ``> 0`` (inverse).
    ``sizes``: shape (L,), positive parameter counts N_i. Returns L ratios. Cost
    O(L * max_ratio / step).

    >>> metric_ratios([1.0, 2.0, 3.0], [100, 100, 100], 0.4)
    [0.2, 0.4, 0.6]
    >>> metric_ratios([1.0, 2.0, 3.0], [100, 100, 100], 0.4, inverse=True)
    [0.66, 0.33, 0.21]
    """
    ratio = check_ratio(ratio)
    max_ratio = check_ratio(max_ratio, "max_ratio")
    if max_ratio <= 0.0:
        raise ValueError(f"max_ratio must be in (0, 1), got {max_ratio!r}")
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0.0 < step <= max_ratio:
        raise ValueError(f"step must be in (0, max_ratio={max_ratio}], got {step!r}")
    metric = np.asarray(values, dtype=np.float64)
    counts = np.asarray(sizes)
    if metric.ndim != 1 or counts.shape != metric.shape:
        raise ValueError(
            f"values and sizes must be 1-D of equal length, got shapes {metric.shape} and "
            f"{counts.shape}"
        )
    if counts.size and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 1):
        raise ValueError(f"sizes must be positive integers, got {counts.tolist()}")
    _check_metric_sign(metric, inverse)
    budget_steps = ratio * float(counts.sum()) / step
    levels = _stepped_levels(
        metric, inverse, counts.astype(np.int64), budget_steps, step, max_ratio
    )
    return [min(round(float(level) * step, 12), max_ratio) for level in levels]


def _check_metric_sign(metric: NDArray[np.float64], inverse: bool) -> None:
    if not np.isfinite(metric).all():
        raise ValueError(f"metric values must be finite, got {metric.tolist()}")
    if inverse and (metric <= 0).any():
        raise ValueError(
            f"ratios inversely proportional to a metric need positive values, got {metric.tolist()}"
        )
    if (metric < 0).any():
        raise ValueError(
            f"ratios proportional to a metric need non-negative values, got {metric.tolist()}"
        )


def _stepped_levels(
    metric: NDArray[np.float64],
    inverse: bool,
    sizes: NDArray[np.int64],
    budget_steps: float,
    step: float,
    max_ratio: float,
) -> NDArray[np.int64]:
    """Number of ``step`` increments per layer (see :func:`metric_ratios`).

    ``budget_steps``: the budget B in units of ``step`` parameters, B / step; one increment of
    layer i costs ``N_i`` units. Increments are taken in the order of the scale c at which the
    cap ``c * w_i`` reaches them: level j of layer i at ``c = j * step / w_i``, i.e. in the
    order of ``j / m_i`` (proportional) or ``j * m_i`` (inverse), ties in layer order. Those
    keys are exact for integer-valued metrics, so that ties are ties.
    """
    num_layers = metric.size
    top = math.floor(max_ratio / step * (1 + 1e-12))  # levels allowed by max_ratio
    limit = budget_steps * (1 + _BUDGET_RTOL)
    levels = np.zeros(num_layers, dtype=np.int64)
    active = np.flatnonzero(metric > 0) if not inverse else np.arange(num_layers)
    reachable = top * int(sizes[active].sum())
    if budget_steps > reachable * (1 + _BUDGET_RTOL):
        total = int(sizes.sum())
        never = " (layers with metric 0 are never pruned)" if active.size < num_layers else ""
        raise UsageError(
            f"the budget of {budget_steps * step:.6g} of {total} weights removed is out of "
            f"reach: at most {reachable * step:.6g} can be removed with every layer at "
            f"max_ratio={max_ratio} rounded down to a multiple of step={step}{never}; lower "
            "the ratio or raise max_ratio"
        )
    if budget_steps <= 0 or active.size == 0:
        return levels

    def key(level: NDArray[np.float64], layer: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = level * metric[layer] if inverse else level / metric[layer]
        return out

    layer_of_event = np.repeat(active, top)
    level_of_event = np.tile(np.arange(1, top + 1, dtype=np.float64), active.size)
    keys = key(level_of_event, layer_of_event)
    order = np.lexsort((layer_of_event, keys))
    spent = np.cumsum(sizes[layer_of_event[order]])
    taken = int(np.searchsorted(spent, limit, side="right"))
    if 0 < taken < spent.size:
        # A group of equal keys is taken whole or not at all, so that equal metrics give equal
        # levels here (the one-step fill below may then split the group).
        sorted_keys = keys[order]
        taken = int(np.searchsorted(sorted_keys, sorted_keys[taken], side="left"))
    levels += np.bincount(layer_of_event[order[:taken]], minlength=num_layers)
    # One more step for each layer that still fits, in the order a larger scale would give it.
    removed = int(spent[taken - 1]) if taken else 0
    below_top = active[levels[active] < top]
    next_keys = key((levels[below_top] + 1).astype(np.float64), below_top)
    for i in below_top[np.lexsort((below_top, next_keys))]:
        if removed + sizes[i] <= limit:
            levels[i] += 1
            removed += int(sizes[i])
    return levels


# ---------------------------------------------------------------------------------------------
# AlphaPruning (Lu et al. 2024)


def alpha_pruning_ratios(
    alphas: Sequence[float] | NDArray[np.float64],
    sizes: Sequence[int] | NDArray[np.int64],
    ratio: float,
    *,
    epsilon: float = ALPHA_PRUNING_EPSILON,
    max_ratio: float = 0.95,
) -> list[float]:
    """AlphaPruning's layer-wise pruning ratios: linear in each layer's alpha, budget exact.

    Lu et al. 2024 ("AlphaPruning: Using Heavy-Tailed Self Regularization Theory for Improved
    Layer-wise Pruning of Large Language Models", NeurIPS, §3.2; REFERENCES §9; public code
    haiquanlu/AlphaPruning, ``lib/prune.py::ww_sparsity``). A layer's ESD exponent ``alpha_i``
    measures how well trained it is: a heavier tail (smaller alpha) means a better-trained
    layer, which is pruned less; a larger alpha (less trained) is pruned more. The map is
    linear from ``[alpha_min, alpha_max]`` onto ``[1 - epsilon, 1 + epsilon]``::

        q_i = (1 - eps) + 2 eps (alpha_i - alpha_min) / (alpha_max - alpha_min)
        r_i = q_i * S * sum_j N_j / sum_j N_j q_j

    so that the parameter-weighted mean ratio ``sum_i r_i N_i / sum_i N_i`` is the global
    ratio ``S`` exactly. ``epsilon`` sets the spread: the most-pruned layer gets
    ``(1 + eps) / (1 - eps)`` times the ratio of the least-pruned one (1.86 at 0.3); at 0 the
    allocation is uniform, as it is when every alpha is equal (the published code divides by
    ``alpha_max - alpha_min`` and gives NaN there). Only the order and spacing of the alphas
    matter (the map is invariant under ``alpha -> a alpha + b``, ``a > 0``).

    The published code does not clamp: a large ``S`` or ``epsilon`` can give a layer a ratio
    of 1 or more. Here each ratio is clamped to ``[0, max_ratio]`` and the excess is spread
    over the unclamped layers in proportion to their ``q_i``: ``r_i = min(max_ratio, c q_i)``
    with ``c`` solving the budget, found by clamping the layers over ``max_ratio`` and solving
    ``c`` again over the others until none exceeds it (``c`` only grows, at most L rounds).
    The budget stays exact (to floating point) and the ratios stay monotone in alpha; when no
    layer reaches ``max_ratio`` the ratios are the published ones.

    ``alphas``: shape (L,), finite (a failed fit must be dealt with first: :func:`allocate`
    gives it the median alpha, with a warning); non-finite values raise a ``ValueError``
    naming their positions. ``sizes``: shape (L,), positive parameter counts N_i.
    ``ratio``: the global ratio S in ``[0, max_ratio]`` (above ``max_ratio`` the budget is
    out of reach: a ``ValueError``). ``epsilon``: in ``[0, 1)`` (``1 - eps`` must stay
    positive); ``max_ratio``: in ``(0, 1)``. Returns L ratios in ``[0, max_ratio]``. Cost
    O(L^2) at worst.

    >>> [round(r, 6) for r in alpha_pruning_ratios([2.0, 3.0, 5.0], [100, 200, 100], 0.5)]
    [0.368421, 0.473684, 0.684211]
    >>> alpha_pruning_ratios([1.0, 2.0], [100, 100], 0.6, epsilon=0.5, max_ratio=0.8)
    [0.4, 0.8]
    """
    ratio = check_ratio(ratio)
    epsilon = _check_epsilon(epsilon)
    max_ratio = check_ratio(max_ratio, "max_ratio")
    if max_ratio <= 0.0:
        raise UsageError(f"max_ratio must be in (0, 1), got {max_ratio!r}")
    values = np.asarray(alphas, dtype=np.float64)
    counts = np.asarray(sizes)
    if values.ndim != 1 or counts.shape != values.shape:
        raise ValueError(
            f"alphas and sizes must be 1-D of equal length, got shapes {values.shape} and "
            f"{counts.shape}"
        )
    if counts.size and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 1):
        raise ValueError(f"sizes must be positive integers, got {counts.tolist()}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"alpha_pruning_ratios: alphas must be finite; positions {bad.tolist()} hold "
            f"{values[bad].tolist()} (failed fits: drop those layers or give them a value)"
        )
    if ratio > max_ratio * (1 + _BUDGET_RTOL):
        raise UsageError(
            f"the budget ratio={ratio} is out of reach: no layer may lose more than "
            f"max_ratio={max_ratio}; lower the ratio or raise max_ratio"
        )
    if values.size == 0:
        return []
    spread = float(values.max() - values.min())
    if epsilon == 0.0 or spread == 0.0:
        return [min(ratio, max_ratio)] * int(values.size)
    if not math.isfinite(spread):
        raise ValueError(f"alpha_pruning_ratios: the alphas span more than a float: {spread}")
    weights = (1.0 - epsilon) + 2.0 * epsilon * (values - values.min()) / spread
    return _water_fill(weights, counts.astype(np.float64), ratio, max_ratio).tolist()


def _check_epsilon(epsilon: float) -> float:
    """``epsilon`` as a float if it lies in ``[0, 1)``, else an error naming it."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a number in [0, 1), got {epsilon!r}")
    value = float(epsilon)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise UsageError(
            f"epsilon must be in [0, 1) (AlphaPruning's ratios span 1 - epsilon to 1 + "
            f"epsilon times the budget), got {epsilon!r}"
        )
    return value


def _water_fill(
    weights: NDArray[np.float64], sizes: NDArray[np.float64], ratio: float, max_ratio: float
) -> NDArray[np.float64]:
    """``r_i = min(max_ratio, c w_i)`` with ``c`` such that ``sum_i r_i N_i = ratio sum_i N_i``.

    ``weights``: shape (L,), positive. ``ratio <= max_ratio`` (up to rounding). Layers with
    ``c w_i > max_ratio`` are clamped and ``c`` is solved again over the others: clamping frees
    budget, so ``c`` never falls and a clamped layer stays clamped (as in ERK's dense re-solve).
    """
    budget = ratio * float(sizes.sum())
    clamped = np.zeros(weights.size, dtype=bool)
    out = np.full(weights.size, max_ratio)
    while not clamped.all():
        free = ~clamped
        left = budget - max_ratio * float(sizes[clamped].sum())
        scale = max(left, 0.0) / float((sizes[free] * weights[free]).sum())
        over = free & (scale * weights > max_ratio)
        if not over.any():
            out[free] = scale * weights[free]
            break
        clamped |= over
    return out


# ---------------------------------------------------------------------------------------------
# LAMP (Lee et al. 2021)


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP scores of the entries of one layer's weight, same shape, float64, same device.

    For the entries sorted ascending by ``|w|`` (a stable sort: equal magnitudes keep their
    flattened index order), ``score(u) = w_u^2 / sum_{v >= u} w_v^2`` (Lee et al. 2021,
    "Layer-adaptive sparsity for the magnitude-based pruning", eq. 2; REFERENCES §3). The
    largest entry scores 1; an entry whose sum is 0 (all larger entries are 0) scores 0.

    >>> lamp_scores(torch.tensor([[3.0, -1.0], [2.0, 0.0]])).tolist()
    [[1.0, 0.07142857142857142], [0.3076923076923077, 0.0]]
    """
    if not torch.isfinite(weight).all():
        raise ValueError("lamp_scores: the weight has non-finite entries")
    flat = weight.detach().reshape(-1).to(torch.float64)
    order = torch.sort(flat.abs(), stable=True).indices
    squares = flat[order] ** 2
    tail = torch.flip(torch.cumsum(torch.flip(squares, [0]), 0), [0])  # sum over v >= u
    sorted_scores = torch.where(tail > 0, squares / tail.clamp_min(torch.finfo(tail.dtype).tiny), 0)
    scores = torch.empty_like(flat)
    scores[order] = sorted_scores
    return scores.reshape(weight.shape)


def _lamp_layer_scores(weights: Sequence[Tensor]) -> list[Tensor]:
    """Flattened LAMP scores per layer (CPU), each layer's top entry set to +inf (kept);
    every entry of a layer holding NaN/Inf is +inf."""
    scores = []
    for weight in weights:
        if not torch.isfinite(weight).all():
            # A layer holding NaN/Inf cannot be ranked: all its entries are kept (the runner
            # skips it with a note).
            scores.append(torch.full((weight.numel(),), math.inf, dtype=torch.float64))
            continue
        layer_scores = lamp_scores(weight).reshape(-1).cpu()
        layer_scores[int(torch.argmax(layer_scores))] = math.inf  # each layer keeps one entry
        scores.append(layer_scores)
    return scores


def _lamp_ratios(scores: Sequence[Tensor], ratio: float) -> list[float]:
    """Per-layer ratios of global LAMP pruning: the ``floor(ratio * N)`` lowest scores go.

    ``scores``: from :func:`_lamp_layer_scores`. Each layer keeps its top-scored entry, so at
    most ``N - L`` entries are pruned (fewer when a layer holding NaN/Inf keeps all of its
    entries). Equal scores at the threshold are pruned in layer order.
    """
    total = sum(s.numel() for s in scores)
    # The +inf scores (each layer's top entry, every entry of a non-finite layer) stay.
    finite = sum(int(torch.isfinite(s).sum()) for s in scores)
    to_prune = min(_count(ratio, total), finite)
    if to_prune <= 0:
        return [0.0] * len(scores)
    threshold = torch.kthvalue(torch.cat(list(scores)), to_prune).values
    pruned = [int((s < threshold).sum()) for s in scores]
    left = to_prune - sum(pruned)
    for i, s in enumerate(scores):
        take = min(int((s == threshold).sum()), left)
        pruned[i] += take
        left -= take
    return [count / s.numel() for count, s in zip(pruned, scores, strict=True)]


def _count(ratio: float, total: int) -> int:
    """floor(ratio * total), forgiving floating-point error (0.7 * 10 -> 7, not 6)."""
    return min(total, math.floor(ratio * total * (1 + 1e-12)))


# ---------------------------------------------------------------------------------------------
# ERK (Evci et al. 2020)


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Erdos-Renyi-Kernel densities (fractions of weights kept) of layers with these shapes.

    Evci et al. 2020 ("Rigging the lottery", §3; REFERENCES §3): layer l with weight shape
    ``(s_1, ..., s_k)`` -- ``(out, in)`` for Linear, ``(out, in / groups, *kernel)`` for conv
    -- gets ``d_l = eps * (sum_j s_j) / (prod_j s_j)``, with eps solving
    ``sum_l d_l N_l = density * sum_l N_l`` (``N_l = prod_j s_j``). Layers with ``d_l > 1``
    become dense (``d_l = 1``) and eps is solved again over the others, until none exceeds 1.

    ``density``: the global fraction kept, ``1 - ratio``, in ``(0, 1]``. Returns one density
    in ``(0, 1]`` per shape.

    >>> erk_densities([(10, 10), (2, 10)], 0.5)  # layer 2 would get 1.125: dense, eps = 2
    [0.4, 1.0]
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"erk_densities: density must be in (0, 1], got {density!r}")
    sizes = [math.prod(shape) for shape in shapes]
    if any(len(shape) < 1 or size < 1 for shape, size in zip(shapes, sizes, strict=True)):
        raise ValueError(f"erk_densities: shapes must be non-empty and positive, got {shapes}")
    raw = [sum(shape) / size for shape, size in zip(shapes, sizes, strict=True)]
    dense: set[int] = set()
    eps = 0.0
    while True:
        sparse = [i for i in range(len(shapes)) if i not in dense]
        if not sparse:
            break
        kept = density * sum(sizes) - sum(sizes[i] for i in dense)
        eps = kept / sum(raw[i] * sizes[i] for i in sparse)
        # eps only grows as layers turn dense, so a layer over 1 stays over 1: add them all.
        over = {i for i in sparse if eps * raw[i] > 1.0}
        if not over:
            break
        dense |= over
    return [1.0 if i in dense else min(1.0, eps * raw[i]) for i in range(len(shapes))]


# ---------------------------------------------------------------------------------------------
# The entry point


def allocate(
    model: nn.Module,
    ratio: float,
    method: str = "uniform",
    *,
    analysis: pd.DataFrame | None = None,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    step: float = 0.01,
    max_ratio: float = 0.95,
    epsilon: float = ALPHA_PRUNING_EPSILON,
) -> dict[str, float]:
    """Per-layer pruning ratios for a global pruning ratio: ``{layer name: ratio}``.

    Layers are those of :func:`~tailwise.prune.layers.prunable_layers` (``include`` /
    ``exclude`` are regular expressions on parameter names, as everywhere), in that order;
    every ratio is in ``[0, 1)``. The budget is ``sum_i r_i N_i ~= ratio * sum_i N_i`` with
    ``N_i`` the number of elements of layer i's ``weight``. ``method``:

    - ``"uniform"``: every layer gets ``ratio`` (the budget exactly).
    - ``"lamp"``: global pruning by LAMP score (:func:`lamp_scores`); ``floor(ratio * N)``
      entries are removed, except that each layer keeps at least one entry.
    - ``"erk"``: ``1 - d_l`` with the ERK densities of :func:`erk_densities` (budget exact).
    - a numeric column of ``tailwise.analyze`` (``"alpha"``, ``"stable_rank"``,
      ``"entropy"``, ...; see :data:`METRIC_COLUMNS`): ratios proportional to the metric,
      source 000 table 3.1 settings 1 and 3 ("prune more for layers with larger HT-SR
      metrics"); with the suffix ``":inverse"`` (``"alpha:inverse"``) inversely proportional,
      settings 2 and 4 ("prune more for layers with smaller HT-SR metrics"). The settings
      differ only in the training-time augmentation (1, 2: traditional; 3, 4: AugMix), which
      is not part of the allocation. The budget follows source 000 §3.2 (steps of ``step``,
      caps, never over-prune, ``max_ratio`` per layer): see :func:`metric_ratios`.
    - ``"alpha_pruning"``: AlphaPruning (Lu et al. 2024), ratios linear in each layer's
      ``alpha`` between ``1 - epsilon`` and ``1 + epsilon`` times a common scale (larger
      alpha, less trained, more pruning), the budget exact, each ratio at most ``max_ratio``
      with the excess spread over the other layers: see :func:`alpha_pruning_ratios`. The
      published code's default alpha fits xmin at the peak of the ESD
      (``analysis=tailwise.analyze(model, fix_fingers="xmin_peak")``) and, for LLMs, averages
      alpha over each transformer block; here each layer has its own alpha, from the analysis.

    ``analysis``: a ``tailwise.analyze`` table to read the metric from; computed for the
    selected layers when None. Its weight names map to layers by
    :func:`~tailwise.prune.layers.weight_name_to_layer` (rows of ``conv="slices"`` are
    averaged per layer). A layer whose metric is missing, NaN or infinite (a failed fit) gets
    the median of the other layers' values, with a warning naming it; if no layer has a
    value, a ``ValueError``. ``step`` applies to metric methods only, ``max_ratio`` to metric
    methods and ``"alpha_pruning"``, ``epsilon`` (in ``[0, 1)``) to ``"alpha_pruning"`` only.

    >>> from tailwise.models import MLP
    >>> allocate(MLP(64, [32], 10), 0.5, "erk")
    {'layers.0': 0.578125, 'layers.1': 0.0}
    >>> import pandas as pd
    >>> table = pd.DataFrame({"name": ["layers.0.weight", "layers.1.weight"], "alpha": [3.0, 5.0]})
    >>> ratios = allocate(MLP(64, [32], 10), 0.5, "alpha_pruning", analysis=table)
    >>> {name: round(r, 4) for name, r in ratios.items()}
    {'layers.0': 0.4481, 'layers.1': 0.8322}
    """
    ratio = check_ratio(ratio)
    curve = allocation_curve(
        model,
        method,
        analysis=analysis,
        include=include,
        exclude=exclude,
        step=step,
        max_ratio=max_ratio,
        epsilon=epsilon,
    )
    return curve(ratio)


def allocation_curve(
    model: nn.Module,
    method: str = "uniform",
    *,
    analysis: pd.DataFrame | None = None,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    step: float = 0.01,
    max_ratio: float = 0.95,
    epsilon: float = ALPHA_PRUNING_EPSILON,
) -> Callable[[float], dict[str, float]]:
    """:func:`allocate` as a function of the global ratio, with the per-model work (the
    analysis, LAMP scores, shapes) done once: ``curve(ratio) == allocate(model, ratio, ...)``.
    For callers that try several budgets (channel pruning's budget search).

    >>> from tailwise.models import MLP
    >>> curve = allocation_curve(MLP(64, [32], 10), "erk")
    >>> curve(0.5) == allocate(MLP(64, [32], 10), 0.5, "erk")
    True
    """
    layers = prunable_layers(model, include=include, exclude=exclude)
    columns = METRIC_COLUMNS if analysis is None else metric_columns_of(analysis)
    parsed = Allocation.parse(method, columns)
    if parsed.kind is AllocationKind.ALPHA_PRUNING:
        _check_epsilon(epsilon)  # at the boundary, before the analysis (which takes time)
    weights = {name: layer_weight(module) for name, module in layers.items()}
    names = list(layers)
    if parsed.kind is AllocationKind.UNIFORM or not layers:
        return lambda ratio: dict.fromkeys(names, check_ratio(ratio))
    if parsed.kind is AllocationKind.LAMP:
        scores = _lamp_layer_scores(list(weights.values()))
        return lambda ratio: dict(zip(names, _lamp_ratios(scores, check_ratio(ratio)), strict=True))
    if parsed.kind is AllocationKind.ERK:
        shapes = [tuple(w.shape) for w in weights.values()]

        def erk(ratio: float) -> dict[str, float]:
            densities = erk_densities(shapes, 1.0 - check_ratio(ratio))
            return dict(zip(names, [max(0.0, 1.0 - d) for d in densities], strict=True))

        return erk
    column = parsed.column
    assert column is not None
    if analysis is None:
        analysis = _analyze_layers(model, names)
    values = _layer_metric(analysis, column, names)
    sizes = [w.numel() for w in weights.values()]

    def metric(ratio: float) -> dict[str, float]:
        found = parsed.ratios(values, sizes, ratio, step=step, max_ratio=max_ratio, epsilon=epsilon)
        return dict(zip(names, found, strict=True))

    return metric


def metric_columns_of(analysis: pd.DataFrame) -> tuple[str, ...]:
    """The numeric (non-boolean) columns of an analysis table: what a metric may name."""
    if "name" not in analysis.columns:
        raise ValueError("allocate: analysis must be a tailwise.analyze table with a 'name' column")
    return tuple(
        str(c)
        for c in analysis.columns
        if c != "name"
        and pd.api.types.is_numeric_dtype(analysis[c])
        and not pd.api.types.is_bool_dtype(analysis[c])
    )


def _analyze_layers(model: nn.Module, names: list[str]) -> pd.DataFrame:
    """``tailwise.analyze`` restricted to the weights of the selected layers."""
    from tailwise.spectral.analyze import analyze

    pattern = "^(?:" + "|".join(re.escape(f"{name}.weight") for name in names) + ")$"
    return analyze(model, include=pattern, progress=False)


def _layer_metric(analysis: pd.DataFrame, metric: str, names: list[str]) -> NDArray[np.float64]:
    """The metric per layer (rows averaged per layer), missing/NaN values set to the median."""
    if "layer" in analysis.columns:
        layer_of_row = [str(layer) for layer in analysis["layer"]]
    else:  # a table written before analyze had a layer column
        layer_of_row = [
            weight_name_to_layer(_SLICE_SUFFIX.sub("", str(n))) for n in analysis["name"]
        ]
    column = analysis[metric].to_numpy(dtype=np.float64, na_value=np.nan)
    per_layer = pd.Series(column).groupby(layer_of_row).mean()
    values = np.array([per_layer.get(name, np.nan) for name in names], dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.all():
        raise ValueError(
            f"allocate: no selected layer has a finite {metric!r} in the analysis "
            f"(layers: {', '.join(names)})"
        )
    if missing.any():
        median = float(np.median(values[~missing]))
        unknown = [name for name, gone in zip(names, missing, strict=True) if gone]
        warnings.warn(
            f"allocate: {metric!r} is missing or NaN for {', '.join(unknown)}; using the median "
            f"of the other layers, {median:.6g}",
            UserWarning,
            stacklevel=3,
        )
        values[missing] = median
    return values
