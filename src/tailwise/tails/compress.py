"""Best-k-term approximation and relative lp compression errors (source 003 §3.2, App. A.5).

For a vector x of N entries (any tensor or array, flattened), centred by its median c when
``center=True`` as 003 does before pruning (the median is added back after), the best
k-term approximation x_k keeps the k entries of largest |x - c| and sets the others to c.
Its relative lp compression error (003 §3.2, REFERENCES §4) is

    e_p(k) = ||(x - c) - (x - c)_k||_p / ||x - c||_p,

computed from the ascending sorted magnitudes a_(1) <= ... <= a_(N) of x - c and their
cumulative sums S_j = a_(1)^p + ... + a_(j)^p: e_p(k) = (S_{N-k} / S_N)^(1/p), and for
p = inf, e_inf(k) = a_(N-k) / a_(N). One sort serves every keep ratio.

A keep ratio r in [0, 1] keeps k = ceil(r N) entries (with a 1e-9 tolerance, so that r = k / N
keeps exactly k despite rounding). When ||x - c||_p = 0 (constant x) every error is 0.

Tensors or arrays in; numpy arrays and Python floats out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from tailwise.tails.estimators import as_float64

__all__ = [
    "GlobalKeepRatios",
    "best_k_term",
    "compression_curve",
    "compression_error",
    "global_keep_ratios",
    "keep_ratio_for_error",
]

FloatArray = NDArray[np.float64]
TensorLike = ArrayLike | torch.Tensor

# Slack (in entries) when turning a keep ratio into a count: 0.07 * 100 is 7.000000000000001.
_COUNT_TOLERANCE = 1e-9


def _check_p(p: float, where: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0 or math.isnan(p):
        raise ValueError(f"{where}: p must be a positive number or math.inf, got {p!r}")
    return float(p)


def _kept_count(keep_ratio: float, n: int, where: str) -> int:
    if (
        isinstance(keep_ratio, bool)
        or not isinstance(keep_ratio, (int, float, np.integer, np.floating))
        or not 0.0 <= keep_ratio <= 1.0
    ):
        raise ValueError(f"{where}: keep_ratio must be in [0, 1], got {keep_ratio!r}")
    return min(n, math.ceil(float(keep_ratio) * n - _COUNT_TOLERANCE))


def _centred_flat(x: TensorLike, center: bool, where: str) -> tuple[FloatArray, float]:
    """Flattened float64 copy of x minus its median (0 when not centring), and the median."""
    flat = as_float64(x, where).reshape(-1)
    if flat.size == 0:
        raise ValueError(f"{where}: x is empty")
    median = float(np.median(flat)) if center else 0.0
    return flat - median, median


def _error_table(magnitudes: FloatArray, p: float) -> FloatArray:
    """e(j) for j = 0..N pruned (smallest) entries: (S_j / S_N)^(1/p); ``magnitudes`` sorted."""
    n = magnitudes.size
    if math.isinf(p):
        top = float(magnitudes[-1])
        if top == 0.0:
            return np.zeros(n + 1)
        # j pruned entries: the largest removed one is magnitudes[j - 1].
        return np.concatenate(([0.0], magnitudes / top))
    # Normalise first so that |x|^p cannot overflow for heavy tails or large p.
    top = float(magnitudes[-1])
    if top == 0.0:
        return np.zeros(n + 1)
    sums = np.concatenate(([0.0], np.cumsum((magnitudes / top) ** p)))
    total = float(sums[-1])
    return np.asarray((sums / total) ** (1.0 / p))


def _sorted_magnitudes(x: TensorLike, center: bool, where: str) -> FloatArray:
    centred, _ = _centred_flat(x, center, where)
    return np.sort(np.abs(centred))


def best_k_term(x: TensorLike, k: int, *, center: bool = True) -> FloatArray:
    """Best k-term approximation of ``x``: keep the k entries of largest |x - median|.

    Returns a float64 array of ``x``'s shape: the k entries with the largest |x - c| keep
    their values, the other N - k become c (c = median of all entries when ``center``, else
    0), 003 App. A.5. Ties at the threshold are broken by position (exactly k are kept).
    ``k`` in [0, N].

    >>> best_k_term([0.1, -3.0, 0.2, 5.0, 0.0], 2)
    array([ 0.1, -3. ,  0.1,  5. ,  0.1])
    """
    where = "best_k_term"
    array = as_float64(x, where)
    centred, median = _centred_flat(array, center, where)
    n = centred.size
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"{where}: k must be an integer in [0, {n}], got {k!r}")
    out = np.full(n, median)
    if k > 0:
        keep = np.argsort(-np.abs(centred), kind="stable")[:k]
        out[keep] = array.reshape(-1)[keep]  # the stored values, not (x - c) + c rounded
    return out.reshape(array.shape)


def compression_error(
    x: TensorLike, keep_ratio: float, *, p: float = 2, center: bool = True
) -> float:
    """Relative lp error ||(x - c) - (x - c)_k||_p / ||x - c||_p of the best k-term approximation.

    k = ceil(keep_ratio N) of the N entries are kept (module docstring); c is the median when
    ``center``. ``p`` > 0 or ``math.inf``. 003 §3.2's relative compression error.

    >>> round(compression_error([0.0, 1.0, -1.0, 10.0], 0.5, center=False), 4)  # keeps 10, 1
    0.099
    """
    where = "compression_error"
    p = _check_p(p, where)
    magnitudes = _sorted_magnitudes(x, center, where)
    k = _kept_count(keep_ratio, magnitudes.size, where)
    return float(_error_table(magnitudes, p)[magnitudes.size - k])


def compression_curve(
    x: TensorLike, keep_ratios: Sequence[float] | ArrayLike, *, p: float = 2, center: bool = True
) -> FloatArray:
    """Relative lp errors of the best k-term approximations for many keep ratios, one sort.

    ``keep_ratios``: any sequence of values in [0, 1]; returns a float64 array of the same
    length, entry i being :func:`compression_error` (x, keep_ratios[i]). Non-increasing in
    the keep ratio, 1 at ratio 0 (unless x is constant) and 0 at ratio 1.

    >>> compression_curve([0.0, 1.0, -1.0, 10.0], [0.0, 0.25, 1.0], center=False).round(4)
    array([1.  , 0.14, 0.  ])
    """
    where = "compression_curve"
    p = _check_p(p, where)
    magnitudes = _sorted_magnitudes(x, center, where)
    n = magnitudes.size
    table = _error_table(magnitudes, p)
    ratios = np.asarray(keep_ratios, dtype=np.float64).reshape(-1)
    kept = np.array([_kept_count(float(r), n, where) for r in ratios], dtype=np.int64)
    return np.asarray(table[n - kept])


def _min_kept(table: FloatArray, target: float) -> int:
    """Smallest k with table[N - k] <= target (table non-decreasing in pruned count j)."""
    n = table.size - 1
    # The largest pruned count j with e(j) <= target; e(0) = 0 so j >= 0.
    pruned = int(np.searchsorted(table, target, side="right")) - 1
    return n - pruned


def _check_target(target: float, where: str) -> float:
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, float, np.integer, np.floating))
        or not target >= 0
    ):
        raise ValueError(f"{where}: target must be a number >= 0, got {target!r}")
    return float(target)


def keep_ratio_for_error(
    x: TensorLike, target: float, *, p: float = 2, center: bool = True
) -> float:
    """Smallest keep ratio k / N whose relative lp error is <= ``target`` (exact).

    Found on the sorted cumulative tail sums (module docstring), so
    ``compression_error(x, r) <= target`` for the returned r and
    ``compression_error(x, r - 1 / N) > target``. ``target`` >= 0 (0: keep every entry that
    differs from the centre; >= 1: 0.0). 003 (its Figure 3) uses target 0.1 with p = 2.

    >>> keep_ratio_for_error([0.0, 1.0, -1.0, 10.0], 0.1, center=False)
    0.5
    """
    where = "keep_ratio_for_error"
    p = _check_p(p, where)
    target = _check_target(target, where)
    magnitudes = _sorted_magnitudes(x, center, where)
    return _min_kept(_error_table(magnitudes, p), target) / magnitudes.size


@dataclass(frozen=True)
class GlobalKeepRatios:
    """Result of :func:`global_keep_ratios`.

    keep_ratio: kept entries / all entries; threshold: smallest kept |x - c| (inf when none
    is kept); error: relative lp error of all layers together; layer_keep_ratios /
    layer_errors: per layer (same keys as the input); num_kept: kept entries in all.
    """

    keep_ratio: float
    threshold: float
    error: float
    num_kept: int
    layer_keep_ratios: dict[str, float]
    layer_errors: dict[str, float]


def global_keep_ratios(
    layers: Mapping[str, TensorLike],
    *,
    keep_ratio: float | None = None,
    target_error: float | None = None,
    p: float = 2,
    center: bool = True,
) -> GlobalKeepRatios:
    """Global magnitude pruning: one threshold on |x - c| across all ``layers``.

    Each layer is centred by its own median (003's global pruning), then all N entries are
    ranked together and the k largest kept, with either k = ceil(``keep_ratio`` N) or the
    smallest k whose relative lp error of the concatenated centred vector is <=
    ``target_error`` (exactly one of the two). Returns the global keep ratio and, per layer,
    the kept fraction and the layer's own relative lp error under that threshold. Ties at
    the threshold are broken by layer order, then position. Holds every entry once in
    float64 (plus an index) in memory.

    >>> result = global_keep_ratios({"a": [0.0, 10.0, -10.0], "b": [0.1, 0.0, -0.1]},
    ...                             keep_ratio=0.5, center=False)
    >>> result.keep_ratio, result.layer_keep_ratios
    (0.5, {'a': 0.6666666666666666, 'b': 0.3333333333333333})
    """
    where = "global_keep_ratios"
    p = _check_p(p, where)
    if (keep_ratio is None) == (target_error is None):
        raise ValueError(f"{where}: give exactly one of keep_ratio and target_error")
    if not layers:
        raise ValueError(f"{where}: no layers given")
    names = list(layers)
    parts = [
        np.abs(_centred_flat(layers[name], center, f"{where} (layer {name!r})")[0])
        for name in names
    ]
    sizes = np.array([part.size for part in parts], dtype=np.int64)
    magnitudes = np.concatenate(parts)
    owner = np.repeat(np.arange(len(names)), sizes)
    # Stable ascending sort: among equal magnitudes the later (layer, position) ranks higher.
    order = np.argsort(magnitudes, kind="stable")
    ranked = magnitudes[order]
    total = ranked.size
    table = _error_table(ranked, p)
    if keep_ratio is not None:
        kept = _kept_count(keep_ratio, total, where)
    else:
        kept = _min_kept(table, _check_target(target_error, where))  # type: ignore[arg-type]
    kept_mask = np.zeros(total, dtype=bool)
    kept_mask[order[total - kept :]] = True
    kept_per_layer = np.bincount(owner[kept_mask], minlength=len(names))
    layer_errors: dict[str, float] = {}
    start = 0
    for name, part, size in zip(names, parts, sizes, strict=True):
        pruned = part[~kept_mask[start : start + size]]
        layer_errors[name] = _relative_error(pruned, part, p)
        start += size
    return GlobalKeepRatios(
        keep_ratio=kept / total,
        threshold=float(ranked[total - kept]) if kept else math.inf,
        error=float(table[total - kept]),
        num_kept=int(kept),
        layer_keep_ratios={
            name: int(count) / int(size)
            for name, count, size in zip(names, kept_per_layer, sizes, strict=True)
        },
        layer_errors=layer_errors,
    )


def _relative_error(pruned: FloatArray, whole: FloatArray, p: float) -> float:
    """||pruned||_p / ||whole||_p for magnitudes (0 when whole is 0)."""
    top = float(whole.max())
    if top == 0.0:
        return 0.0
    if math.isinf(p):
        return float(pruned.max()) / top if pruned.size else 0.0
    removed = float(((pruned / top) ** p).sum())
    return (removed / float(((whole / top) ** p).sum())) ** (1.0 / p)
