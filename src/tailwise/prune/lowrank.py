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

The top singular triplets come from the small-side Gram matrix G = W^T W (or W W^T), whose
eigenvalues are s_i^2 -- the ESD that ``tailwise.analyze`` fits alpha to (REFERENCES §1). One
:class:`GramSpectrum` per layer holds what both need: G's eigenvalues and its Householder
tridiagonal reduction G = Q T Q^T (LAPACK ``dsytrd``), from which the top k eigenvectors follow
(``dstemr`` on T, then Q, ``dormqr``) at O(m^2 k) instead of a full eigendecomposition.
:func:`lowrank_analysis` computes it once for both the analysis an ``"alpha"`` allocation
reads and the factorization (``prune(..., method="lowrank", allocation="alpha")``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg.blas
import scipy.linalg.lapack
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from tailwise._threads import blas_work, single_threaded
from tailwise.prune.layers import layer_weight
from tailwise.prune.report import PruneResult
from tailwise.prune.runner import Replacement, ReplacePruner, run_pruner
from tailwise.spectral.analyze import COLUMNS, AnalyzeOptions, analyze_layer
from tailwise.spectral.esd import ESD
from tailwise.weights import LayerKind, LayerWeights, iter_layers

__all__ = [
    "GramSpectrum",
    "LowRankPruner",
    "factorize",
    "gram_spectrum",
    "lowrank_analysis",
    "lowrank_rank",
    "prune_lowrank",
]

FloatArray = NDArray[np.float64]

# Rows of W converted to float64 at a time when accumulating the Gram matrix.
_GRAM_BLOCK_BYTES = 8 * 2**20


def lowrank_rank(out_dim: int, in_dim: int, ratio: float) -> int:
    """Rank k whose two factors hold at most ``(1 - ratio) * out * in`` parameters (k >= 1).

    >>> lowrank_rank(512, 256, 0.5)
    85
    """
    return max(1, math.floor((1.0 - ratio) * out_dim * in_dim / (out_dim + in_dim)))


@dataclass(frozen=True)
class GramSpectrum:
    """The eigenvalues of a matrix's small-side Gram matrix and the reduction that gives its
    top eigenvectors (:func:`gram_spectrum`).

    For W (a, b) in float64, G = W^T W (b x b) when ``tall`` (a >= b), else W W^T (a x a);
    m = min(a, b). ``eigenvalues``: G's m eigenvalues, ascending, as LAPACK computed them
    (tiny negatives from rounding kept): s_i^2, the squared singular values of W.
    ``reduction`` / ``tau`` / ``diagonal`` / ``off_diagonal``: LAPACK ``dsytrd``'s G = Q T Q^T
    (Householder vectors of Q below T's subdiagonal in ``reduction``, (m, m) Fortran order),
    kept for :meth:`top_eigenvectors`.
    """

    eigenvalues: FloatArray
    tall: bool
    reduction: FloatArray
    tau: FloatArray
    diagonal: FloatArray
    off_diagonal: FloatArray

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes (dominated by the m x m reduction)."""
        arrays = (self.eigenvalues, self.reduction, self.tau, self.diagonal, self.off_diagonal)
        return sum(a.nbytes for a in arrays)

    def top_eigenvectors(self, k: int) -> tuple[FloatArray, FloatArray]:
        """The ``k`` largest eigenvalues of G, descending (k,), and orthonormal eigenvectors
        (m, k): those of the tridiagonal T (LAPACK ``dstemr``, MRRR, for the k alone when k <
        m / 4; ``dstevd``, divide and conquer, for all of them otherwise, which is then
        faster), then Q applied to the k vectors by ``dormqr`` (2 m^2 k flops).

        >>> spectrum = gram_spectrum(torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        >>> values, vectors = spectrum.top_eigenvectors(1)
        >>> values.tolist(), np.abs(vectors[:, 0]).tolist()
        ([9.0], [1.0, 0.0])
        """
        m = self.diagonal.size
        if not 1 <= k <= m:
            raise ValueError(f"k must be in [1, {m}], got {k}")
        if m == 1:
            return self.eigenvalues.copy(), np.ones((1, 1))
        with blas_work():  # SciPy's LAPACK does the work: torch gets one thread meanwhile
            return self._top_eigenvectors(k)

    def _top_eigenvectors(self, k: int) -> tuple[FloatArray, FloatArray]:
        m = self.diagonal.size
        if 4 * k < m:
            found, values, vectors, info = scipy.linalg.lapack.dstemr(
                self.diagonal.copy(), np.append(self.off_diagonal, 0.0), 2, 0.0, 0.0, m - k + 1, m
            )
            if info != 0 or found != k:
                raise np.linalg.LinAlgError(f"dstemr failed (info {info}, {found} of {k})")
            values, vectors = values[:k], vectors[:, :k]
        else:
            values, vectors, info = scipy.linalg.lapack.dstevd(
                self.diagonal.copy(), self.off_diagonal.copy()
            )
            if info != 0:
                raise np.linalg.LinAlgError(f"dstevd failed (info {info})")
            values, vectors = values[m - k :], vectors[:, m - k :]
        # Q = H(1) ... H(m-1) acts on rows 2..m: a QR-style product of m - 1 reflectors.
        below = np.asfortranarray(vectors[1:])
        reflectors = self.reduction[1:, : m - 1]
        lwork = int(scipy.linalg.lapack.dormqr("L", "N", reflectors, self.tau, below, -1)[1][0])
        rotated, _, info = scipy.linalg.lapack.dormqr(
            "L", "N", reflectors, self.tau, below, max(1, lwork), overwrite_c=1
        )
        if info != 0:
            raise np.linalg.LinAlgError(f"dormqr failed (info {info})")
        out = np.empty((m, k), dtype=np.float64)
        out[0] = vectors[0]
        out[1:] = rotated
        return values[::-1].copy(), out[:, ::-1].copy()

    def esd(self, n: int) -> ESD:
        """The ESD ``tailwise.analyze`` takes from this matrix (2-D, no scaling; n = max(a, b)):
        eigenvalues clipped at 0, and the ranks by the rule of :mod:`tailwise.spectral.esd`
        (#{lambda > lambda_max n eps})."""
        eps = float(np.finfo(np.float64).eps)
        evals = np.sort(np.clip(self.eigenvalues, 0.0, None))
        m = evals.size
        rank = int((self.eigenvalues > self.eigenvalues.max() * n * eps).sum())
        matrix_rank = 0 if evals[-1] <= 0 else int((evals > evals[-1] * n * eps).sum())
        return ESD(
            evals=evals, N=n, M=m, rf=1, rank_loss=m - rank, matrix_rank=matrix_rank, scale=1.0
        )


def _gram(matrix: Tensor) -> tuple[FloatArray, bool]:
    """float64 small-side Gram matrix of a 2-D ``matrix`` (lower triangle, Fortran order) and
    whether the matrix is tall. On the CPU by BLAS ``dsyrk`` over float64 row blocks (no
    float64 copy of the matrix); elsewhere on the matrix's device."""
    tall = matrix.shape[0] >= matrix.shape[1]
    long_first = matrix if tall else matrix.T
    long_side, m = long_first.shape
    if matrix.device.type != "cpu":
        on_device = long_first.to(torch.float64)
        return np.asfortranarray((on_device.T @ on_device).cpu().numpy()), tall
    gram = np.zeros((m, m), dtype=np.float64, order="F")
    block = max(1, _GRAM_BLOCK_BYTES // (8 * m))
    for start in range(0, long_side, block):
        part = long_first[start : start + block].to(torch.float64).contiguous().numpy()
        # part.T is Fortran-ordered (m, rows): C += part.T @ part, lower triangle only.
        gram = scipy.linalg.blas.dsyrk(
            1.0, part.T, beta=1.0, c=gram, trans=0, lower=1, overwrite_c=1
        )
    return gram, tall


def gram_spectrum(matrix: Tensor) -> GramSpectrum:
    """Eigenvalues and tridiagonal reduction of the small-side Gram matrix of a 2-D matrix.

    G = W^T W or W W^T (the smaller) in float64 (BLAS ``dsyrk`` on the CPU), reduced once by
    LAPACK ``dsytrd`` to G = Q T Q^T; the eigenvalues of T (``dsterf``) are the squared
    singular values of W. Cost ~ a max(a, b) m^2 + 4/3 m^3 flops, as for the eigenvalues
    alone; :meth:`GramSpectrum.top_eigenvectors` then costs O(m^2 k). Raises ``ValueError``
    for a matrix with NaN or Inf entries.

    >>> spectrum = gram_spectrum(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    >>> spectrum.eigenvalues.round(12).tolist(), spectrum.tall
    ([1.0, 4.0], True)
    """
    if matrix.ndim != 2 or matrix.numel() == 0:
        raise ValueError(f"expected a non-empty matrix, got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("the matrix holds NaN or Inf entries")
    # SciPy's BLAS/LAPACK does the work: torch gets one thread meanwhile (tailwise._threads).
    with blas_work():
        gram, tall = _gram(matrix.detach())
        m = gram.shape[0]
        lwork = int(scipy.linalg.lapack.dsytrd_lwork(m, lower=1)[0])
        reduction, diagonal, off_diagonal, tau, info = scipy.linalg.lapack.dsytrd(
            gram, lower=1, lwork=max(1, lwork), overwrite_a=1
        )
        if info != 0:
            raise np.linalg.LinAlgError(f"dsytrd failed (info {info})")
        values, info = scipy.linalg.lapack.dsterf(diagonal.copy(), off_diagonal.copy())
    if info != 0:
        raise np.linalg.LinAlgError(f"dsterf failed (info {info})")
    return GramSpectrum(
        eigenvalues=np.sort(values),
        tall=tall,
        reduction=reduction,
        tau=tau,
        diagonal=diagonal,
        off_diagonal=off_diagonal,
    )


def _top_singular(
    matrix: Tensor, rank: int, spectrum: GramSpectrum
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Top-``rank`` singular triplets (U_k (m, k), s_k (k,), V_k^T (k, n)) of a float64 matrix,
    and the energy left out, sum_{i > k} s_i^2 (exactly 0 at full rank).

    From ``spectrum`` (:func:`gram_spectrum` of ``matrix``): the top eigenpairs of the smaller
    Gram matrix, as accurate as an SVD for the kept triplets, whose singular values are far
    above sqrt(eps) * s_1. When the smallest kept one is not (a nearly rank-deficient layer),
    it falls back to the SVD.
    """
    evals = spectrum.eigenvalues  # ascending
    top_value, kth_value = float(evals[-1]), float(evals[-rank])
    if kth_value <= 1e-10 * top_value:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank], float(s[rank:].square().sum())
    values, vectors = spectrum.top_eigenvectors(rank)
    top = torch.from_numpy(values).to(matrix.device)
    vecs = torch.from_numpy(vectors).to(matrix.device)
    s_k = top.sqrt()
    tail = float(np.clip(evals[:-rank], 0.0, None).sum())
    if spectrum.tall:  # vecs = V_k: U_k = W V_k / s_k
        return (matrix @ vecs) / s_k[None, :], s_k, vecs.T, tail
    # vecs = U_k: V_k^T = U_k^T W / s_k
    return vecs, s_k, (vecs.T @ matrix) / s_k[:, None], tail


def factorize(
    module: nn.Module, rank: int, *, spectrum: GramSpectrum | None = None
) -> tuple[nn.Sequential, float]:
    """Rank-``rank`` two-layer replacement of a Linear or Conv layer, and its relative error.

    The decomposition runs in float64 (the Gram matrix on the weight's device, its
    eigenvectors by CPU LAPACK); the factors are cast back to the weight's dtype. Conv layers
    must have ``groups == 1``. ``spectrum``: :func:`gram_spectrum` of the layer's weight
    reshaped to (out, -1), when already computed (:func:`lowrank_analysis`).

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
    if spectrum is None:
        spectrum = gram_spectrum(matrix)
    u_k, s_k, vh_k, tail = _top_singular(matrix, rank, spectrum)
    root = s_k.sqrt()
    first_w = (root[:, None] * vh_k).to(weight.dtype)
    second_w = (u_k * root[None, :]).to(weight.dtype)
    # Eckart-Young: ||W - W_k||_F^2 = sum_{i > k} s_i^2.
    flat = matrix.reshape(-1)
    total = float(torch.dot(flat, flat))
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
    """Each layer becomes its best rank-k factor pair, k = :func:`lowrank_rank`.

    ``spectra``: layer name -> :class:`GramSpectrum` of its weight, computed beforehand (by
    :func:`lowrank_analysis`); other layers are decomposed when pruned.
    """

    method = "lowrank"

    def __init__(self, spectra: Mapping[str, GramSpectrum] | None = None) -> None:
        self.spectra = dict(spectra or {})

    def replace(self, name: str, module: nn.Module, ratio: float) -> Replacement | str:
        weight = layer_weight(module)
        out_dim, in_dim, n_weight = weight.shape[0], weight[0].numel(), weight.numel()
        rank = lowrank_rank(out_dim, in_dim, ratio)
        if rank * (out_dim + in_dim) >= n_weight or rank >= min(out_dim, in_dim):
            return f"left dense: rank {rank} factors would not save parameters"
        if getattr(module, "groups", 1) != 1:
            return "left dense: grouped convolution"
        # Used once: the reduction (m x m float64) is freed as the pruning goes.
        pair, error = factorize(module, rank, spectrum=self.spectra.pop(name, None))
        note = f"rank {rank} of {min(out_dim, in_dim)}"
        return Replacement(pair, rank * (out_dim + in_dim), error, note)


def _shared_spectrum(layer: LayerWeights) -> GramSpectrum | None:
    """The Gram spectrum of a finite 2-D Linear weight (None otherwise: analysed the usual
    way, and a convolution's ESD pools its kernel slices, not the flattened matrix)."""
    if layer.status != "ok" or layer.kind is not LayerKind.LINEAR or len(layer.shape) != 2:
        return None
    tensor = layer.tensor()
    if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
        return None
    return gram_spectrum(tensor)


def lowrank_analysis(
    model: nn.Module,
    names: Sequence[str],
    *,
    workers: int | None = None,
) -> tuple[pd.DataFrame, dict[str, GramSpectrum]]:
    """``tailwise.analyze`` of the weights of layers ``names`` and, for their 2-D Linear
    weights, the :class:`GramSpectrum` that the low-rank factorization reuses.

    One Gram matrix and one tridiagonal reduction per Linear layer serve both the ESD (the
    analysis rows: :func:`tailwise.spectral.analyze.analyze_layer` on these eigenvalues, at
    analyze's default options, float64) and the rank-k factors of :class:`LowRankPruner`
    (``prune(..., method="lowrank", allocation="alpha")``). Other layers (convolutions) get
    analyze's own rows. Memory: each reduction is m x m float64 (m = the smaller side), at
    most twice its float32 weight (the 100M-parameter stack of ``benchmarks/prune_large.py``:
    384 MiB), held until :class:`LowRankPruner` uses it. ``workers``: layers decomposed in
    parallel threads of single-threaded BLAS (default: one per CPU core), as ``analyze`` does.

    >>> from tailwise.models import MLP
    >>> table, spectra = lowrank_analysis(MLP(64, [32], 10), ["layers.0"])
    >>> table["name"].tolist(), sorted(spectra), spectra["layers.0"].eigenvalues.shape
    (['layers.0.weight'], ['layers.0'], (32,))
    """
    pattern = "^(?:" + "|".join(re.escape(f"{name}.weight") for name in names) + ")$"
    records = list(iter_layers(model, include=pattern)) if names else []
    options = AnalyzeOptions.parse()

    def analysed(layer: LayerWeights) -> tuple[list[dict[str, Any]], GramSpectrum | None]:
        try:
            spectrum = _shared_spectrum(layer)
        except (ValueError, np.linalg.LinAlgError):
            spectrum = None  # analyze_layer reports the failure its own way
        if spectrum is None:
            return analyze_layer(layer, options)[0], None
        esd = spectrum.esd(max(layer.shape))
        return analyze_layer(layer, options, esds=[("", esd)])[0], spectrum

    count = workers if workers is not None else (os.cpu_count() or 1)
    with blas_work():
        if count <= 1:
            results = [analysed(layer) for layer in records]
        else:
            with single_threaded(blas=True), ThreadPoolExecutor(max_workers=count) as pool:
                results = list(pool.map(analysed, records))
    spectra: dict[str, GramSpectrum] = {}
    rows: list[dict[str, Any]] = []
    for layer, (layer_rows, spectrum) in zip(records, results, strict=True):
        rows.extend(layer_rows)
        if spectrum is not None:
            spectra[layer.layer] = spectrum
    return pd.DataFrame(rows, columns=list(COLUMNS)).infer_objects(), spectra
