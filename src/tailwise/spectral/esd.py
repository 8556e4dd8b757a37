"""Empirical spectral densities (ESDs): the eigenvalues of W^T W for each weight matrix.

Scale (REFERENCES §1): by default the eigenvalues are those of W^T W (WeightWatcher's scale,
no division by N); ``normalize="N"`` gives source 000's X = W^T W / N (eq. 1.5). Matrices are
oriented so that N >= M; there are M eigenvalues per matrix.

Convolutions ``(out, in, *kernel)`` have ``rf = prod(kernel)`` slices ``W[:, :, i, j]`` of shape
(out, in):

* ``conv="pooled"`` (default, WeightWatcher and TempBalance): all slices' eigenvalues in one
  ESD of ``M * rf`` values, weights scaled by sqrt(1/2) (eigenvalues halved);
* ``conv="slices"``: one ESD per slice, weights scaled by sqrt(rf / 2) (WeightWatcher with
  ``pool=False``);
* ``conv="flatten"``: one matrix ``(out, in * rf)``, unscaled (the reshape of source 003).

Computation: the Gram matrix of the small side, accumulated in float64 in row blocks (no
float64 copy of a large tensor), then ``torch.linalg.eigvalsh``, batched over slices, on the
tensor's device (or ``device=``). ``method="svd"`` takes float64 singular values instead:
slower, but accurate for eigenvalues below ~1e-16 * lambda_max, which the Gram route cannot
resolve.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import torch
from numpy.typing import NDArray

from tailwise.weights import LayerKind, LayerWeights

__all__ = [
    "ESD",
    "ConvMode",
    "EigenMethod",
    "Normalization",
    "eigenvalues",
    "eigenvalues_batch",
    "layer_matrices",
]

# Rows of W converted to float64 at a time when accumulating the Gram matrix.
_GRAM_BLOCK_BYTES = 8 * 2**20


class ConvMode(str, enum.Enum):
    """How a convolution kernel becomes matrices (see module docstring)."""

    POOLED = "pooled"
    SLICES = "slices"
    FLATTEN = "flatten"


class Normalization(str, enum.Enum):
    """Scale of the eigenvalues: WeightWatcher's (W^T W) or source 000's (W^T W / N)."""

    NONE = "none"
    N = "N"


class EigenMethod(str, enum.Enum):
    """Gram matrix + eigvalsh (fast) or singular values (accurate for tiny eigenvalues)."""

    GRAM = "gram"
    SVD = "svd"


@dataclass(frozen=True)
class ESD:
    """The spectrum of one analysed matrix (or of a pooled stack of conv slices).

    evals: eigenvalues, float64, ascending, shape (M * slices,); negatives from rounding are
    clipped to 0. N >= M: the sides of each matrix; rf: number of slices pooled (1 for a
    plain matrix); rank_loss: sum over slices of M - matrix rank; scale: factor applied to
    the weights before squaring (sqrt(1/2) for pooled convs).
    """

    evals: NDArray[np.float64]
    N: int
    M: int
    rf: int
    rank_loss: int
    matrix_rank: int
    scale: float

    @property
    def Q(self) -> float:
        return self.N / self.M


def layer_matrices(
    tensor: torch.Tensor, kind: LayerKind, conv: ConvMode | str = ConvMode.POOLED
) -> list[tuple[str, torch.Tensor, float]]:
    """Split a canonical ``(out, in, *kernel)`` tensor into the stacks of matrices to analyse.

    Returns ``(suffix, stack, scale)`` triples: ``stack`` has shape (S, a, b) (a view where
    possible, stored dtype), ``suffix`` is appended to the layer name ("" for one ESD;
    "[i,j]" per slice with ``conv="slices"``), ``scale`` multiplies the weights.
    """
    mode = ConvMode(conv)
    if tensor.ndim == 2:
        return [("", tensor.unsqueeze(0), 1.0)]
    if tensor.ndim < 2:
        raise ValueError(
            f"expected a matrix or a convolution kernel, got shape {tuple(tensor.shape)}"
        )
    out_ch, in_ch = tensor.shape[0], tensor.shape[1]
    kernel = tuple(tensor.shape[2:])
    rf = math.prod(kernel)
    if mode is ConvMode.FLATTEN:
        return [("", tensor.reshape(out_ch, in_ch * rf).unsqueeze(0), 1.0)]
    # (out, in, *k) -> (rf, out, in): slice s is W[:, :, i, j] with s = i * kw + j
    stack = tensor.reshape(out_ch, in_ch, rf).permute(2, 0, 1)
    if mode is ConvMode.POOLED:
        return [("", stack, math.sqrt(0.5))]
    scale = math.sqrt(rf / 2.0)
    return [
        ("[" + ",".join(str(i) for i in idx) + "]", stack[s : s + 1], scale)
        for s, idx in enumerate(np.ndindex(*kernel))
    ]


def _gram(stack: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float64 Gram matrices of the small side of each (a, b) matrix: (S, m, m), m = min(a, b)."""
    s, a, b = stack.shape
    tall = a >= b
    long_side = a if tall else b
    m = b if tall else a
    gram = torch.zeros((s, m, m), dtype=torch.float64, device=device)
    row_bytes = s * m * 8
    block = max(1, _GRAM_BLOCK_BYTES // max(row_bytes, 1))
    for start in range(0, long_side, block):
        if tall:
            part = stack[:, start : start + block, :].to(device=device, dtype=torch.float64)
            gram += part.transpose(1, 2) @ part
        else:
            part = stack[:, :, start : start + block].to(device=device, dtype=torch.float64)
            gram += part @ part.transpose(1, 2)
    return gram


def _spectrum(stack: torch.Tensor, method: EigenMethod, device: torch.device) -> torch.Tensor:
    """Eigenvalues of W^T W for each matrix of the stack: (S, m), float64, ascending."""
    if method is EigenMethod.SVD:
        sv = torch.linalg.svdvals(stack.to(device=device, dtype=torch.float64))
        return torch.flip(sv**2, dims=(-1,))
    if device.type != "cpu":
        return torch.linalg.eigvalsh(_gram(stack, device))
    return torch.from_numpy(np.stack([_gram_eigenvalues_cpu(mat) for mat in stack]))


def _gram_eigenvalues_cpu(matrix: torch.Tensor) -> NDArray[np.float64]:
    """Eigenvalues of the small-side Gram matrix of one (a, b) matrix, all in SciPy's LAPACK.

    The Gram matrix is accumulated with BLAS ``dsyrk`` (half the flops of a general product)
    over float64 row blocks, then ``eigh`` takes its eigenvalues. Keeping every dense step in
    one BLAS thread pool matters: alternating torch's OpenMP pool with OpenBLAS's made the
    two pools' spinning threads starve each other (up to 30x slower on a loaded 2-core
    machine, benchmarks/analyze_vs_weightwatcher.py).
    """
    long_first = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T
    long_side, m = long_first.shape
    gram = np.zeros((m, m), dtype=np.float64, order="F")
    block = max(1, _GRAM_BLOCK_BYTES // (8 * m))
    for start in range(0, long_side, block):
        part = long_first[start : start + block].to(torch.float64).contiguous().numpy()
        # part.T is Fortran-ordered (m, rows): C += part.T @ part, lower triangle only.
        gram = scipy.linalg.blas.dsyrk(
            1.0, part.T, beta=1.0, c=gram, trans=0, lower=1, overwrite_c=1
        )
    return np.asarray(
        scipy.linalg.eigh(
            gram,
            lower=True,
            eigvals_only=True,
            overwrite_a=True,
            check_finite=False,
            driver="evr",
        )
    )


def _rank(evals: torch.Tensor, n: int, method: EigenMethod) -> torch.Tensor:
    """Numerical rank of each matrix from its eigenvalues (S, m) -> (S,).

    SVD: #{sigma > sigma_max * N * eps} (numpy/WeightWatcher). Gram: the eigenvalues of
    W^T W carry an absolute error ~ eps * lambda_max, so the same rule is applied to them as
    a symmetric matrix: #{lambda > lambda_max * N * eps}.
    """
    eps = torch.finfo(torch.float64).eps
    top = evals.max(dim=-1, keepdim=True).values
    if method is EigenMethod.SVD:
        sv = evals.clamp_min(0).sqrt()
        return (sv > sv.max(dim=-1, keepdim=True).values * n * eps).sum(dim=-1)
    return (evals > top * n * eps).sum(dim=-1)


def eigenvalues(
    layer: LayerWeights | torch.Tensor,
    *,
    kind: LayerKind | str | None = None,
    conv: ConvMode | str = ConvMode.POOLED,
    normalize: Normalization | str | None = None,
    method: EigenMethod | str = EigenMethod.GRAM,
    device: torch.device | str | None = None,
) -> list[tuple[str, ESD]]:
    """ESDs of one layer: ``[(suffix, ESD)]`` (one entry unless ``conv="slices"``).

    ``layer`` is a :class:`~tailwise.weights.LayerWeights` record (loaded here) or a tensor in
    canonical ``(out, in, *kernel)`` orientation (``kind`` defaults to LINEAR for 2-D and to
    the matching convolution otherwise). Raises ``ValueError`` for an empty matrix or one
    with NaN/Inf entries; analysis code turns that into a failed row.

    >>> import torch
    >>> [(suffix, esd)] = eigenvalues(torch.eye(3))
    >>> esd.evals.tolist(), esd.N, esd.M
    ([1.0, 1.0, 1.0], 3, 3)
    """
    norm = Normalization(normalize) if normalize is not None else Normalization.NONE
    how = EigenMethod(method)
    if isinstance(layer, LayerWeights):
        tensor = layer.tensor()
        layer_kind = layer.kind if kind is None else LayerKind(kind)
    else:
        tensor = layer
        layer_kind = LayerKind(kind) if kind is not None else _default_kind(tensor)
    target = torch.device(device) if device is not None else tensor.device
    tensor = _validated(tensor)
    return [
        (suffix, _make_esd(_spectrum(stack, how, target), stack.shape, scale, norm, how))
        for suffix, stack, scale in layer_matrices(tensor, layer_kind, conv)
    ]


def eigenvalues_batch(
    tensors: Sequence[torch.Tensor],
    *,
    normalize: Normalization | str | None = None,
    method: EigenMethod | str = EigenMethod.GRAM,
    device: torch.device | str | None = None,
) -> list[ESD]:
    """ESDs of several matrices of one shape (a, b), decomposed as one batch.

    Equal layers (the q, k, v, o projections of a transformer, stacks of equal blocks) go
    through one batched Gram product and one batched eigensolver call, which on a GPU
    replaces many small kernel launches. Same results as :func:`eigenvalues` per matrix.
    Raises ``ValueError`` if shapes differ or a matrix is empty or not finite.
    """
    if not tensors:
        return []
    shape = tuple(tensors[0].shape)
    if len(shape) != 2 or any(tuple(t.shape) != shape for t in tensors):
        shapes = sorted({tuple(t.shape) for t in tensors})
        raise ValueError(f"eigenvalues_batch needs 2-D matrices of one shape, got {shapes}")
    norm = Normalization(normalize) if normalize is not None else Normalization.NONE
    how = EigenMethod(method)
    target = torch.device(device) if device is not None else tensors[0].device
    stack = torch.stack([_validated(t).to(target) for t in tensors])
    spectra = _spectrum(stack, how, target)
    return [_make_esd(spectra[i : i + 1], (1, *shape), 1.0, norm, how) for i in range(len(tensors))]


def _validated(tensor: torch.Tensor) -> torch.Tensor:
    """Reject empty or non-finite weights; widen float8 (which supports almost no ops)."""
    if tensor.numel() == 0:
        raise ValueError(f"empty weight tensor of shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and tensor.element_size() == 1:
        tensor = tensor.to(torch.float32)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{bad} of {tensor.numel()} weights are NaN or infinite")
    return tensor


def _make_esd(
    spec: torch.Tensor,
    stack_shape: Sequence[int],
    scale: float,
    norm: Normalization,
    how: EigenMethod,
) -> ESD:
    """Pool the eigenvalues (S, m) of a stack of S matrices (a, b) into one ESD."""
    slices, a, b = stack_shape
    n, m = max(a, b), min(a, b)
    rank = _rank(spec, n, how)
    factor = scale**2 / (n if norm is Normalization.N else 1.0)
    evals = torch.sort((spec * factor).clamp_min(0).reshape(-1)).values.cpu().numpy()
    return ESD(
        evals=evals,
        N=n,
        M=m,
        rf=int(slices),
        rank_loss=int((m - rank).sum()),
        matrix_rank=_pooled_rank(evals, n, how),
        scale=scale,
    )


def _pooled_rank(evals: NDArray[np.float64], n: int, method: EigenMethod) -> int:
    """Rank of the pooled spectrum with the rule of :func:`_rank` (WeightWatcher's hard rank)."""
    if evals.size == 0 or evals[-1] <= 0:
        return 0
    eps = np.finfo(np.float64).eps
    if method is EigenMethod.SVD:
        sv = np.sqrt(evals)
        return int((sv > sv[-1] * n * eps).sum())
    return int((evals > evals[-1] * n * eps).sum())


def _default_kind(tensor: torch.Tensor) -> LayerKind:
    return {
        2: LayerKind.LINEAR,
        3: LayerKind.CONV1D,
        4: LayerKind.CONV2D,
        5: LayerKind.CONV3D,
    }.get(tensor.ndim, LayerKind.OTHER)
