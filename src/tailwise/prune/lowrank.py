"""Singular-value pruning: replace a Linear / Conv layer by two smaller layers.

A weight W (out, in) — a convolution's (out, in, *k) flattened to (out, in * prod k) — with
SVD W = U S V^T is replaced by its best rank-k approximation (Eckart-Young) as two layers:

- Linear: ``Linear(in, k, bias=False)`` with weight ``sqrt(S_k) V_k^T`` (k, in), then
  ``Linear(k, out)`` with weight ``U_k sqrt(S_k)`` (out, k) and the original bias;
- Conv: a conv with the original kernel, stride, padding and dilation producing k channels,
  then a 1x1 conv to ``out`` channels with the original bias.

The parameter count falls from ``out * in`` to ``k * (out + in)``, and so do the FLOPs: a real
speed-up, not a masked full matrix. The pruning ratio r counts factor parameters (source 003,
REFERENCES §4): k = floor((1 - r) * out * in / (out + in)), at least 1. The relative error is
||W - W_k||_F / ||W||_F = sqrt(sum_{i > k} s_i^2 / sum_i s_i^2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tailwise.prune.layers import layer_weight
from tailwise.prune.report import PruneResult
from tailwise.prune.runner import Replacement, ReplacePruner, run_pruner

__all__ = ["LowRankPruner", "factorize", "lowrank_rank", "prune_lowrank"]


def lowrank_rank(out_dim: int, in_dim: int, ratio: float) -> int:
    """Rank k whose two factors hold at most ``(1 - ratio) * out * in`` parameters (k >= 1).

    >>> lowrank_rank(512, 256, 0.5)
    85
    """
    return max(1, math.floor((1.0 - ratio) * out_dim * in_dim / (out_dim + in_dim)))


def _top_singular(matrix: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """Top-``rank`` singular triplets (U_k (m, k), s_k (k,), V_k^T (k, n)) of a float64 matrix,
    and the energy left out, sum_{i > k} s_i^2 (exactly 0 at full rank).

    From the eigendecomposition of the smaller Gram matrix (``W^T W`` or ``W W^T``): 2-5x
    faster than a full SVD on CPU (measured on 1024-4096 wide layers) and as accurate for
    the kept triplets, whose singular values are far above sqrt(eps) * s_1. When the
    smallest kept one is not (a nearly rank-deficient layer), it falls back to the SVD.
    """
    tall = matrix.shape[0] >= matrix.shape[1]
    gram = matrix.T @ matrix if tall else matrix @ matrix.T
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    top = evals[-rank:].flip(0)
    vecs = evecs[:, -rank:].flip(1)
    if float(top[-1]) <= 1e-10 * float(top[0]):
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank], float(s[rank:].square().sum())
    s_k = top.sqrt()
    tail = float(evals[:-rank].clamp(min=0).sum())
    if tall:  # vecs = V_k: U_k = W V_k / s_k
        return (matrix @ vecs) / s_k[None, :], s_k, vecs.T, tail
    # vecs = U_k: V_k^T = U_k^T W / s_k
    return vecs, s_k, (vecs.T @ matrix) / s_k[:, None], tail


def factorize(module: nn.Module, rank: int) -> tuple[nn.Sequential, float]:
    """Rank-``rank`` two-layer replacement of a Linear or Conv layer, and its relative error.

    The SVD runs in float64 on the weight's device; the factors are cast back to the weight's
    dtype. Conv layers must have ``groups == 1``.

    >>> layer = nn.Linear(6, 4)
    >>> pair, err = factorize(layer, 4)  # full rank: exact
    >>> x = torch.randn(3, 6)
    >>> bool(torch.allclose(pair(x), layer(x), atol=1e-5)), err < 1e-6
    (True, True)
    """
    weight = layer_weight(module)
    out_dim = weight.shape[0]
    matrix = weight.detach().reshape(out_dim, -1).to(torch.float64)
    in_dim = matrix.shape[1]
    if not 1 <= rank <= min(out_dim, in_dim):
        raise ValueError(f"rank must be in [1, {min(out_dim, in_dim)}], got {rank}")
    u_k, s_k, vh_k, tail = _top_singular(matrix, rank)
    root = s_k.sqrt()
    first_w = (root[:, None] * vh_k).to(weight.dtype)
    second_w = (u_k * root[None, :]).to(weight.dtype)
    # Eckart-Young: ||W - W_k||_F^2 = sum_{i > k} s_i^2.
    total = float(matrix.square().sum())
    error = math.sqrt(tail / total) if total > 0 else 0.0
    found_bias = getattr(module, "bias", None)
    bias = found_bias if isinstance(found_bias, Tensor) else None
    factory: dict[str, Any] = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        first: nn.Module = nn.Linear(in_dim, rank, bias=False, **factory)
        second: nn.Module = nn.Linear(rank, out_dim, bias=bias is not None, **factory)
        first_shape: tuple[int, ...] = (rank, in_dim)
        second_shape: tuple[int, ...] = (out_dim, rank)
    elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        if module.groups != 1:
            raise ValueError(f"grouped convolution (groups={module.groups}) is not factorized")
        conv = type(module)
        first = conv(
            module.in_channels,
            rank,
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=False,
            padding_mode=module.padding_mode,
            **factory,
        )
        second = conv(rank, out_dim, 1, bias=bias is not None, **factory)
        first_shape = (rank, *weight.shape[1:])
        second_shape = (out_dim, rank) + (1,) * (weight.ndim - 2)
    else:
        raise TypeError(f"cannot factorize a {type(module).__name__}")
    with torch.no_grad():
        layer_weight(first).copy_(first_w.reshape(first_shape))
        layer_weight(second).copy_(second_w.reshape(second_shape))
        second_bias = getattr(second, "bias", None)
        if bias is not None and isinstance(second_bias, Tensor):
            second_bias.copy_(bias.detach())
    return nn.Sequential(first, second), error


def prune_lowrank(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    example_inputs: Tensor | tuple[Any, ...] | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> PruneResult:
    """Replace each Linear/Conv layer by a rank-k factor pair holding ``(1 - r)`` of its weights.

    ``ratio``: one float for every layer, or a dict layer name -> r (layers it omits stay
    dense). A layer is left dense, with a note, when no rank below full would save parameters
    (k (out + in) >= out in) or when it is a grouped convolution. The pruned layer becomes an
    ``nn.Sequential`` of two layers named ``<layer>.0`` and ``<layer>.1``; ``result.edits``
    records them so that :func:`tailwise.prune.load_pruned` can rebuild the model. The model
    is deep-copied unless ``inplace``; ``example_inputs`` enables FLOPs of convolutions.

    >>> from tailwise.models import MLP
    >>> result = prune_lowrank(MLP(64, [512], 10), {"layers.0": 0.5})
    >>> result.model.layers[0]
    Sequential(
      (0): Linear(in_features=64, out_features=28, bias=False)
      (1): Linear(in_features=28, out_features=512, bias=True)
    )
    """
    return run_pruner(
        model,
        ratio,
        LowRankPruner(),
        include=include,
        exclude=exclude,
        example_inputs=example_inputs,
        inplace=inplace,
        progress=progress,
    )


class LowRankPruner(ReplacePruner):
    """Each layer becomes its best rank-k factor pair, k = :func:`lowrank_rank`."""

    method = "lowrank"

    def replace(self, name: str, module: nn.Module, ratio: float) -> Replacement | str:
        weight = layer_weight(module)
        out_dim, in_dim, n_weight = weight.shape[0], weight[0].numel(), weight.numel()
        rank = lowrank_rank(out_dim, in_dim, ratio)
        if rank * (out_dim + in_dim) >= n_weight or rank >= min(out_dim, in_dim):
            return f"left dense: rank {rank} factors would not save parameters"
        if getattr(module, "groups", 1) != 1:
            return "left dense: grouped convolution"
        pair, error = factorize(module, rank)
        note = f"rank {rank} of {min(out_dim, in_dim)}"
        return Replacement(pair, rank * (out_dim + in_dim), error, note)
