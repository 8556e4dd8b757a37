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

Computation: the Gram matrix of the small side, then its eigenvalues in float64 (SciPy's
LAPACK on the CPU, ``torch.linalg.eigvalsh`` batched over slices on other devices, or
``device=``). ``method="svd"`` takes float64 singular values instead: slower, but accurate for
eigenvalues below ~1e-16 * lambda_max, which the Gram route cannot resolve.

Precision of the Gram matrix (``precision=``, REFERENCES §1):

* ``"float64"``: accumulated in float64 in row blocks (no float64 copy of a large tensor);
  eigenvalue error ~ eps64 * lambda_max.
* ``"float32"``: accumulated in float32 (BLAS ``ssyrk``, twice the speed and no conversion of
  float32 weights), eigenvalues still in float64. The float32 eigensolver is not used: its
  error, ~ sqrt(M) * eps32 * lambda_max (measured up to 300 eps32 * lambda_max at M = 2048),
  dominates, while the float32 Gram matrix is accurate to about one float32 unit of
  lambda_max (measured: at most 10 eps32 * lambda_max, at the top of heavy-tailed spectra;
  0.6 in the null space of low-rank matrices). Eigenvalues at or below
  ``FLOAT32_FLOOR * eps32 * lambda_max`` are rounding, not data: they are set to 0, so the
  rank, rank loss and entropy never count them.
* ``"auto"``: float32 for matrices with N >= ``AUTO_MIN_Q`` M whose eigenvalues all lie
  above that floor (the rank and rank loss are then those of float64), float64 otherwise.
  :func:`tailwise.analyze` adds a check of every column on top
  (:mod:`tailwise.spectral.precision`).

``ESD.precision`` says which was used; ``ESD.trace_error`` is the relative difference between
the sum of the eigenvalues and the squared Frobenius norm of the weights (scaled), computed in
float64 from the weights: a direct measure of the Gram route's error on ``norm``.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import torch
from numpy.typing import NDArray

from tailwise.weights import LayerKind, LayerWeights

__all__ = [
    "AUTO_MIN_Q",
    "ESD",
    "FLOAT32_FLOOR",
    "ConvMode",
    "EigenMethod",
    "Normalization",
    "Precision",
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


class Precision(str, enum.Enum):
    """Arithmetic of the Gram matrix (see the module docstring)."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"
    AUTO = "auto"


#: Eigenvalues of a float32 Gram matrix at or below ``FLOAT32_FLOOR * eps32 * lambda_max`` are
#: not data (1.6x the largest error measured anywhere in a spectrum, 9.8 at the top of a
#: heavy-tailed one; 25x that of the null space of low-rank matrices, 0.6;
#: ``benchmarks/analyze_vs_weightwatcher.py --calibrate`` prints the errors).
FLOAT32_FLOOR = 16.0
_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class ESD:
    """The spectrum of one analysed matrix (or of a pooled stack of conv slices).

    evals: eigenvalues, float64, ascending, shape (M * slices,); negatives from rounding are
    clipped to 0. N >= M: the sides of each matrix; rf: number of slices pooled (1 for a
    plain matrix); rank_loss: sum over slices of M - matrix rank; scale: factor applied to
    the weights before squaring (sqrt(1/2) for pooled convs); precision: arithmetic of the
    Gram matrix, ``"float64"`` or ``"float32"``; trace_error: |sum(evals) - scale^2 ||W||_F^2|
    / (scale^2 ||W||_F^2) (divided by N with ``normalize="N"``), the norm from the weights in
    float64.
    """

    evals: NDArray[np.float64]
    N: int
    M: int
    rf: int
    rank_loss: int
    matrix_rank: int
    scale: float
    precision: str = "float64"
    trace_error: float = 0.0

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


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """float32 products in float32, never TF32 or bf16 (a caller may have lowered
    ``torch.set_float32_matmul_precision``, which would cost the float32 Gram 3 digits)."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if previous != "highest":
            torch.set_float32_matmul_precision(previous)


def _gram(stack: torch.Tensor, device: torch.device, precision: Precision) -> torch.Tensor:
    """Gram matrices of the small side of each (a, b) matrix: (S, m, m), m = min(a, b).

    Accumulated in float64 (``precision="float64"``) or float32 in row blocks, returned as
    float64 for the eigensolver.
    """
    s, a, b = stack.shape
    tall = a >= b
    long_side = a if tall else b
    m = b if tall else a
    dtype = torch.float64 if precision is Precision.FLOAT64 else torch.float32
    gram = torch.zeros((s, m, m), dtype=dtype, device=device)
    row_bytes = s * m * 8
    block = max(1, _GRAM_BLOCK_BYTES // max(row_bytes, 1))
    with _full_float32_matmul() if dtype == torch.float32 else contextlib.nullcontext():
        for start in range(0, long_side, block):
            if tall:
                part = stack[:, start : start + block, :].to(device=device, dtype=dtype)
                gram += part.transpose(1, 2) @ part
            else:
                part = stack[:, :, start : start + block].to(device=device, dtype=dtype)
                gram += part @ part.transpose(1, 2)
    return gram.to(torch.float64)


def _spectrum(
    stack: torch.Tensor, method: EigenMethod, device: torch.device, precision: Precision
) -> torch.Tensor:
    """Eigenvalues of W^T W for each matrix of the stack: (S, m), float64, ascending."""
    if method is EigenMethod.SVD:
        sv = torch.linalg.svdvals(stack.to(device=device, dtype=torch.float64))
        return torch.flip(sv**2, dims=(-1,))
    if device.type != "cpu":
        return torch.linalg.eigvalsh(_gram(stack, device, precision))
    return torch.from_numpy(np.stack([_gram_eigenvalues_cpu(mat, precision) for mat in stack]))


def _gram_eigenvalues_cpu(matrix: torch.Tensor, precision: Precision) -> NDArray[np.float64]:
    """Eigenvalues of the small-side Gram matrix of one (a, b) matrix, all in SciPy's LAPACK.

    The Gram matrix is accumulated with BLAS ``?syrk`` (half the flops of a general product),
    then ``eigh`` takes its eigenvalues in float64. Keeping every dense step in one BLAS
    thread pool matters: alternating torch's OpenMP pool with OpenBLAS's made the two pools'
    spinning threads starve each other (up to 30x slower on a loaded 2-core machine,
    benchmarks/analyze_vs_weightwatcher.py).
    """
    if precision is Precision.FLOAT64:
        gram = _gram_float64_cpu(matrix)
    else:
        gram = np.asfortranarray(_gram_float32_cpu(matrix), dtype=np.float64)
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


def _gram_float64_cpu(matrix: torch.Tensor) -> NDArray[np.float64]:
    """Lower triangle of the float64 Gram matrix (m, m), Fortran order, over float64 row blocks."""
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
    return gram


def _gram_float32_cpu(matrix: torch.Tensor) -> NDArray[np.float32]:
    """Lower triangle of the float32 Gram matrix (m, m), Fortran order.

    Contiguous float32 weights go to ``ssyrk`` as they are (no copy, either orientation);
    other dtypes and layouts are converted in row blocks.
    """
    a, b = matrix.shape
    if matrix.dtype == torch.float32 and matrix.is_contiguous():
        data = matrix.numpy()  # (a, b) C order: data.T is the same memory in Fortran order
        # tall: C = data^T data = (data.T)(data.T)^T; wide: C = data data^T = (data.T)^T (data.T)
        return np.asarray(scipy.linalg.blas.ssyrk(1.0, data.T, trans=0 if a >= b else 1, lower=1))
    long_first = matrix if a >= b else matrix.T
    long_side, m = long_first.shape
    gram = np.zeros((m, m), dtype=np.float32, order="F")
    block = max(1, _GRAM_BLOCK_BYTES // (4 * m))
    for start in range(0, long_side, block):
        part = long_first[start : start + block].to(torch.float32).contiguous().numpy()
        gram = scipy.linalg.blas.ssyrk(
            1.0, part.T, beta=1.0, c=gram, trans=0, lower=1, overwrite_c=1
        )
    return np.asarray(gram)


def _floors(spec: torch.Tensor) -> torch.Tensor:
    """Per matrix (S, 1): the float32 floor FLOAT32_FLOOR * eps32 * lambda_max."""
    return FLOAT32_FLOOR * _EPS32 * spec.max(dim=-1, keepdim=True).values


def _resolved(spec: torch.Tensor) -> bool:
    """Whether every eigenvalue of every matrix (S, m) lies above its float32 floor."""
    return bool((spec > _floors(spec)).all())


def _rank(evals: torch.Tensor, n: int, method: EigenMethod) -> torch.Tensor:
    """Numerical rank of each matrix from its eigenvalues (S, m) -> (S,).

    SVD: #{sigma > sigma_max * N * eps} (numpy/WeightWatcher). Gram: the eigenvalues of
    W^T W carry an absolute error ~ eps * lambda_max, so the same rule is applied to them as
    a symmetric matrix: #{lambda > lambda_max * N * eps}. (Float32 spectra have their
    sub-floor eigenvalues set to 0 before, so they never count.)
    """
    eps = torch.finfo(torch.float64).eps
    top = evals.max(dim=-1, keepdim=True).values
    if method is EigenMethod.SVD:
        sv = evals.clamp_min(0).sqrt()
        return (sv > sv.max(dim=-1, keepdim=True).values * n * eps).sum(dim=-1)
    return (evals > top * n * eps).sum(dim=-1)


def _parse(
    normalize: Normalization | str | None,
    method: EigenMethod | str,
    precision: Precision | str,
) -> tuple[Normalization, EigenMethod, Precision]:
    norm = Normalization(normalize) if normalize is not None else Normalization.NONE
    how = EigenMethod(method)
    prec = Precision(precision)
    if how is EigenMethod.SVD and prec is Precision.FLOAT32:
        raise ValueError("precision='float32' is a Gram-matrix precision: use method='gram'")
    return norm, how, prec


def _decompose(
    stack: torch.Tensor, how: EigenMethod, device: torch.device, precision: Precision
) -> tuple[torch.Tensor, Precision]:
    """Spectra (S, m) of a stack and the precision used (``"auto"`` resolved)."""
    if how is not EigenMethod.SVD and (
        precision is Precision.FLOAT32 or (precision is Precision.AUTO and _pays(stack))
    ):
        spec = _spectrum(stack, how, device, Precision.FLOAT32)
        if precision is Precision.FLOAT32 or _resolved(spec):
            return spec, Precision.FLOAT32
    return _spectrum(stack, how, device, Precision.FLOAT64), Precision.FLOAT64


#: ``precision="auto"`` tries float32 only for matrices with N >= AUTO_MIN_Q * M: there the
#: Gram product is the larger share of the work (float32 saves 30% of the matrix's time at
#: 3072 x 768, 15% at 768 x 768), and the Marchenko-Pastur bulk of their random part ends
#: well above the float32 floor; a square matrix's reaches down to 0, so its smallest
#: eigenvalues usually fall under the floor and the float32 attempt would be wasted.
AUTO_MIN_Q = 2.0


def _pays(stack: torch.Tensor) -> bool:
    long_side, short_side = max(stack.shape[-2:]), min(stack.shape[-2:])
    return long_side >= AUTO_MIN_Q * short_side


def eigenvalues(
    layer: LayerWeights | torch.Tensor,
    *,
    kind: LayerKind | str | None = None,
    conv: ConvMode | str = ConvMode.POOLED,
    normalize: Normalization | str | None = None,
    method: EigenMethod | str = EigenMethod.GRAM,
    device: torch.device | str | None = None,
    precision: Precision | str = Precision.FLOAT64,
) -> list[tuple[str, ESD]]:
    """ESDs of one layer: ``[(suffix, ESD)]`` (one entry unless ``conv="slices"``).

    ``layer`` is a :class:`~tailwise.weights.LayerWeights` record (loaded here) or a tensor in
    canonical ``(out, in, *kernel)`` orientation (``kind`` defaults to LINEAR for 2-D and to
    the matching convolution otherwise). ``precision``: ``"float64"`` | ``"float32"`` |
    ``"auto"``, the Gram matrix's arithmetic (module docstring); with ``"auto"`` a matrix
    stack is float32 when N >= 2 M and all its eigenvalues clear the float32 floor. Raises
    ``ValueError`` for an empty matrix, one with NaN/Inf entries, or an invalid option;
    analysis code turns a bad matrix into a failed row.

    >>> import torch
    >>> [(suffix, esd)] = eigenvalues(torch.eye(3))
    >>> esd.evals.tolist(), esd.N, esd.M, esd.precision
    ([1.0, 1.0, 1.0], 3, 3, 'float64')
    >>> tall = torch.cat([torch.eye(3), torch.eye(3)])  # 6 x 3: N = 2 M
    >>> [(_, fast)] = eigenvalues(tall, precision="auto")
    >>> fast.evals.tolist(), fast.precision
    ([2.0, 2.0, 2.0], 'float32')
    """
    norm, how, prec = _parse(normalize, method, precision)
    if isinstance(layer, LayerWeights):
        tensor = layer.tensor()
        layer_kind = layer.kind if kind is None else LayerKind(kind)
    else:
        tensor = layer
        layer_kind = LayerKind(kind) if kind is not None else _default_kind(tensor)
    target = torch.device(device) if device is not None else tensor.device
    tensor = _validated(tensor)
    out = []
    for suffix, stack, scale in layer_matrices(tensor, layer_kind, conv):
        squares = _squared_norms(stack, tensor)
        spec, used = _decompose(stack, how, target, prec)
        out.append((suffix, _make_esd(spec, stack.shape, scale, norm, how, used, squares)))
    return out


def eigenvalues_batch(
    tensors: Sequence[torch.Tensor],
    *,
    normalize: Normalization | str | None = None,
    method: EigenMethod | str = EigenMethod.GRAM,
    device: torch.device | str | None = None,
    precision: Precision | str = Precision.FLOAT64,
) -> list[ESD]:
    """ESDs of several matrices of one shape (a, b), decomposed as one batch.

    Equal layers (the q, k, v, o projections of a transformer, stacks of equal blocks) go
    through one batched Gram product and one batched eigensolver call, which on a GPU
    replaces many small kernel launches. Same results as :func:`eigenvalues` per matrix
    (with ``precision="auto"`` the whole batch is float64 if one matrix needs it).
    Raises ``ValueError`` if shapes differ or a matrix is empty or not finite.
    """
    if not tensors:
        return []
    shape = tuple(tensors[0].shape)
    if len(shape) != 2 or any(tuple(t.shape) != shape for t in tensors):
        shapes = sorted({tuple(t.shape) for t in tensors})
        raise ValueError(f"eigenvalues_batch needs 2-D matrices of one shape, got {shapes}")
    norm, how, prec = _parse(normalize, method, precision)
    target = torch.device(device) if device is not None else tensors[0].device
    stack = torch.stack([_validated(t).to(target) for t in tensors])
    squares = _squared_norms(stack, stack)
    spectra, used = _decompose(stack, how, target, prec)
    return [
        _make_esd(spectra[i : i + 1], (1, *shape), 1.0, norm, how, used, squares[i : i + 1])
        for i in range(len(tensors))
    ]


def _validated(tensor: torch.Tensor) -> torch.Tensor:
    """Reject empty or non-finite weights; widen float8 (which supports almost no ops)."""
    if tensor.numel() == 0:
        raise ValueError(f"empty weight tensor of shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and tensor.element_size() == 1:
        tensor = tensor.to(torch.float32)
    return tensor


def _squared_norms(stack: torch.Tensor, tensor: torch.Tensor) -> NDArray[np.float64]:
    """||W_s||_F^2 of each matrix of the stack (S,), in float64 from the stored values.

    One pass over the weights, which also checks them: a non-finite norm means NaN/Inf
    entries (``ValueError`` counting them in ``tensor``) or, for float64 weights beyond
    1e154, an overflow of the squares (then NaN: no trace check is possible).
    """
    source = stack if stack.is_floating_point() else stack.to(torch.float64)
    squares = torch.linalg.vector_norm(source, dim=(-2, -1), dtype=torch.float64) ** 2
    out = squares.cpu().numpy()
    if not np.isfinite(out).all():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ValueError(f"{bad} of {tensor.numel()} weights are NaN or infinite")
        out = np.where(np.isfinite(out), out, np.nan)
    return np.asarray(out, dtype=np.float64)


def _make_esd(
    spec: torch.Tensor,
    stack_shape: Sequence[int],
    scale: float,
    norm: Normalization,
    how: EigenMethod,
    precision: Precision,
    squares: NDArray[np.float64],
) -> ESD:
    """Pool the eigenvalues (S, m) of a stack of S matrices (a, b) into one ESD.

    Float32 spectra lose their eigenvalues at or below the float32 floor (set to 0, not
    data); ``squares`` are the matrices' squared Frobenius norms (S,) for ``trace_error``.
    """
    slices, a, b = stack_shape
    n, m = max(a, b), min(a, b)
    if precision is Precision.FLOAT32:
        spec = torch.where(spec > _floors(spec), spec, torch.zeros((), dtype=spec.dtype))
    rank = _rank(spec, n, how)
    factor = scale**2 / (n if norm is Normalization.N else 1.0)
    evals = torch.sort((spec * factor).clamp_min(0).reshape(-1)).values.cpu().numpy()
    exact = float(squares.sum()) * factor
    trace_error = abs(float(evals.sum()) - exact) / exact if exact > 0 else 0.0
    return ESD(
        evals=evals,
        N=n,
        M=m,
        rf=int(slices),
        rank_loss=int((m - rank).sum()),
        matrix_rank=_pooled_rank(evals, n, how),
        scale=scale,
        precision=precision.value,
        trace_error=trace_error if math.isfinite(trace_error) else math.nan,
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
