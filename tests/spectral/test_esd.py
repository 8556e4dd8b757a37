"""Tests of the empirical spectral densities (tailwise.spectral.esd).

Oracle: float64 singular values from ``numpy.linalg.svd`` of the matrices that REFERENCES §1
says are analysed, squared, with WeightWatcher's scales for convolutions; every case of the
shared table below is checked against it for both eigenvalue methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

import tailwise.spectral.esd as esd_module
from tailwise.spectral.esd import ESD, eigenvalues, layer_matrices
from tailwise.weights import LayerKind, iter_layers

FloatArray = NDArray[np.float64]
METHODS = ["gram", "svd"]


def squared_singular_values(matrix: FloatArray) -> FloatArray:
    """Eigenvalues of W^T W (small side), ascending, from a float64 SVD."""
    sv = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return np.sort(sv**2)


def kernel_slices(weight: FloatArray) -> list[tuple[tuple[int, ...], FloatArray]]:
    """The (out, in) slices W[:, :, i, j, ...] of a convolution kernel, row-major order."""
    return [
        (idx, weight[(slice(None), slice(None), *idx)]) for idx in np.ndindex(*weight.shape[2:])
    ]


def assert_spectrum_close(got: FloatArray, expected: FloatArray, rtol: float = 1e-9) -> None:
    """Equal within rtol relative to lambda_max (small eigenvalues carry absolute error)."""
    assert got.dtype == np.float64
    assert got.shape == expected.shape
    assert np.all(np.diff(got) >= 0), "eigenvalues must be ascending"
    assert np.all(got >= 0)
    scale = max(float(expected.max()), 1e-300)
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * scale)


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]


CASES = [
    Case("linear_tall", (40, 25)),
    Case("linear_wide", (25, 40)),
    Case("linear_square", (30, 30)),
    Case("linear_row", (1, 7)),
    Case("conv1d", (12, 5, 4)),
    Case("conv2d", (16, 8, 3, 3)),
    Case("conv2d_wide_slices", (8, 16, 3, 2)),
    Case("conv3d", (6, 4, 2, 3, 2)),
]
CONV_CASES = [c for c in CASES if len(c.shape) > 2]


def weight(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pooled_default_matches_dense_oracle(case: Case, method: str) -> None:
    w = weight(case.shape)
    w64 = w.double().numpy()
    [(suffix, esd)] = eigenvalues(w, method=method)
    assert suffix == ""
    if w.ndim == 2:
        expected = squared_singular_values(w64)
        scale, rf = 1.0, 1
    else:
        # WeightWatcher pooling: slices scaled by sqrt(1/2), all eigenvalues in one ESD
        slices = kernel_slices(w64)
        expected = np.sort(
            np.concatenate([squared_singular_values(s * math.sqrt(0.5)) for _, s in slices])
        )
        scale, rf = math.sqrt(0.5), len(slices)
    a, b = case.shape[:2]
    assert (esd.N, esd.M, esd.rf) == (max(a, b), min(a, b), rf)
    assert esd.scale == pytest.approx(scale)
    np.testing.assert_allclose(esd.Q, max(a, b) / min(a, b))
    assert esd.evals.size == min(a, b) * rf
    assert_spectrum_close(esd.evals, expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_conv_slices_one_esd_per_slice(case: Case, method: str) -> None:
    w = weight(case.shape, seed=1)
    w64 = w.double().numpy()
    rf = math.prod(case.shape[2:])
    result = eigenvalues(w, conv="slices", method=method)
    slices = kernel_slices(w64)
    assert len(result) == rf == len(slices)
    for (suffix, esd), (idx, matrix) in zip(result, slices, strict=True):
        assert suffix == "[" + ",".join(map(str, idx)) + "]"
        assert esd.rf == 1
        assert esd.scale == pytest.approx(math.sqrt(rf / 2))
        # weights scaled by sqrt(rf / 2): eigenvalues times rf / 2
        assert_spectrum_close(esd.evals, squared_singular_values(matrix) * rf / 2)


def test_conv_slice_suffixes_2d() -> None:
    result = eigenvalues(weight((4, 3, 2, 3)), conv="slices")
    assert [s for s, _ in result] == ["[0,0]", "[0,1]", "[0,2]", "[1,0]", "[1,1]", "[1,2]"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_conv_flatten_is_unscaled_reshape(case: Case, method: str) -> None:
    w = weight(case.shape, seed=2)
    out_ch = case.shape[0]
    [(suffix, esd)] = eigenvalues(w, conv="flatten", method=method)
    matrix = w.double().numpy().reshape(out_ch, -1)
    assert suffix == ""
    assert esd.scale == 1.0
    assert (esd.N, esd.M, esd.rf) == (max(matrix.shape), min(matrix.shape), 1)
    assert_spectrum_close(esd.evals, squared_singular_values(matrix))


def test_layer_matrices_slices_are_kernel_slices() -> None:
    w = weight((5, 4, 3, 2), seed=3)
    [(suffix, stack, scale)] = layer_matrices(w, LayerKind.CONV2D)
    assert suffix == "" and scale == pytest.approx(math.sqrt(0.5))
    assert stack.shape == (6, 5, 4)
    for s, (i, j) in enumerate(np.ndindex(3, 2)):
        assert torch.equal(stack[s], w[:, :, i, j])
    per_slice = layer_matrices(w, LayerKind.CONV2D, conv="slices")
    assert [p[0] for p in per_slice] == ["[0,0]", "[0,1]", "[1,0]", "[1,1]", "[2,0]", "[2,1]"]
    assert all(p[1].shape == (1, 5, 4) for p in per_slice)
    [(_, flat, one)] = layer_matrices(w, LayerKind.CONV2D, conv="flatten")
    assert flat.shape == (1, 5, 24) and one == 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("conv", ["pooled", "slices", "flatten"])
def test_normalize_n_divides_by_n(conv: str, method: str) -> None:
    w = weight((10, 14, 3, 3), seed=4)
    plain = eigenvalues(w, conv=conv, method=method)
    scaled = eigenvalues(w, conv=conv, method=method, normalize="N")
    assert len(plain) == len(scaled)
    for (s1, e1), (s2, e2) in zip(plain, scaled, strict=True):
        assert s1 == s2 and e1.N == e2.N
        np.testing.assert_allclose(e2.evals, e1.evals / e1.N, rtol=1e-12, atol=0)
    [(_, linear)] = eigenvalues(weight((50, 20)), normalize="N", method=method)
    expected = squared_singular_values(weight((50, 20)).double().numpy()) / 50
    assert_spectrum_close(linear.evals, expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_svd_and_gram_agree(case: Case) -> None:
    w = weight(case.shape, seed=5)
    for conv in ("pooled", "slices", "flatten"):
        gram = eigenvalues(w, conv=conv, method="gram")
        svd = eigenvalues(w, conv=conv, method="svd")
        for (s1, e1), (s2, e2) in zip(gram, svd, strict=True):
            assert s1 == s2
            assert (e1.N, e1.M, e1.rf, e1.scale) == (e2.N, e2.M, e2.rf, e2.scale)
            assert_spectrum_close(e1.evals, e2.evals)


def test_svd_resolves_tiny_eigenvalues() -> None:
    # singular values 1 .. 1e-10: eigenvalues down to 1e-20 (below eps * lambda_max, which is
    # all the Gram route can resolve); the SVD route keeps their relative accuracy.
    rng = np.random.default_rng(6)
    u, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    v, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    sv = np.logspace(0, -10, 6)
    w = torch.from_numpy(u @ np.diag(sv) @ v.T)
    [(_, esd)] = eigenvalues(w, method="svd")
    np.testing.assert_allclose(esd.evals, np.sort(sv**2), rtol=1e-6)
    assert esd.matrix_rank == np.linalg.matrix_rank(w.numpy()) == 6
    [(_, gram)] = eigenvalues(w, method="gram")
    assert_spectrum_close(gram.evals, np.sort(sv**2))  # absolute accuracy only
    # The Gram route applies the rank rule to the eigenvalues (lambda > lambda_max N eps), as
    # it cannot tell them from rounding below that: sigma = 1e-8 and 1e-10 do not count.
    assert gram.matrix_rank == 4 and gram.rank_loss == 2


def test_gram_accumulates_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny block budget forces many row blocks in the Gram accumulation, both orientations.
    monkeypatch.setattr(esd_module, "_GRAM_BLOCK_BYTES", 256)
    for shape in [(300, 12), (12, 300), (40, 7, 3, 3)]:
        w = weight(shape, seed=7)
        [(_, blocked)] = eigenvalues(w, method="gram")
        [(_, reference)] = eigenvalues(w, method="svd")
        assert_spectrum_close(blocked.evals, reference.evals)


def test_non_contiguous_input() -> None:
    w = weight((20, 30), seed=8)
    [(_, esd)] = eigenvalues(w.t())
    assert_spectrum_close(esd.evals, squared_singular_values(w.double().numpy()))
    conv = weight((6, 5, 3, 3), seed=9).permute(1, 0, 2, 3)  # non-contiguous kernel
    [(_, pooled)] = eigenvalues(conv)
    [(_, reference)] = eigenvalues(conv.contiguous())
    np.testing.assert_allclose(pooled.evals, reference.evals, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int8])
def test_low_precision_and_integer_inputs(dtype: torch.dtype, method: str) -> None:
    if dtype is torch.int8:
        w = torch.randint(-128, 128, (30, 20), generator=torch.Generator().manual_seed(10))
        w = w.to(torch.int8)
    else:
        w = weight((30, 20), seed=10).to(dtype)
    [(_, esd)] = eigenvalues(w, method=method)
    # the oracle sees the same stored values, converted exactly to float64
    assert_spectrum_close(esd.evals, squared_singular_values(w.double().numpy()))
    conv = (
        weight((8, 4, 3, 3), seed=11).to(dtype)
        if dtype is not torch.int8
        else w.reshape(10, 6, 5, 2)
    )
    [(_, pooled)] = eigenvalues(conv, method=method)
    assert pooled.evals.size == min(conv.shape[:2]) * math.prod(conv.shape[2:])
    assert np.isfinite(pooled.evals).all()


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        (torch.empty(0, 5), "empty"),
        (torch.empty(4, 0, 3, 3), "empty"),
        (torch.tensor([[1.0, math.nan], [0.0, 1.0]]), "NaN or infinite"),
        (torch.tensor([[1.0, math.inf], [0.0, 1.0]]), "NaN or infinite"),
        (torch.tensor([[1.0, -math.inf], [0.0, 1.0]], dtype=torch.float16), "NaN or infinite"),
        (torch.full((3, 2, 3, 3), math.nan, dtype=torch.bfloat16), "NaN or infinite"),
        (torch.ones(5), "matrix"),
    ],
)
def test_invalid_tensors_raise_value_error(tensor: torch.Tensor, needle: str) -> None:
    for method in METHODS:
        with pytest.raises(ValueError, match=needle):
            eigenvalues(tensor, method=method)


def test_nan_message_counts_bad_entries() -> None:
    w = torch.ones(4, 3)
    w[0, 0] = math.nan
    w[2, 1] = math.inf
    with pytest.raises(ValueError, match="2 of 12 weights"):
        eigenvalues(w)


@pytest.mark.parametrize(
    "kwargs", [{"conv": "stack"}, {"normalize": "M"}, {"method": "qr"}, {"kind": "dense"}]
)
def test_invalid_options_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        eigenvalues(weight((6, 4, 3, 3)), **kwargs)


def low_rank(shape: tuple[int, int], rank: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((shape[0], rank))
    b = rng.standard_normal((rank, shape[1]))
    return torch.from_numpy(a @ b)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(50, 30), (30, 50), (40, 40)])
@pytest.mark.parametrize("rank", [0, 1, 5, 30])
def test_rank_of_low_rank_matrices(shape: tuple[int, int], rank: int, method: str) -> None:
    w = low_rank(shape, rank, seed=rank) if rank else torch.zeros(shape, dtype=torch.float64)
    m = min(shape)
    [(_, esd)] = eigenvalues(w, method=method)
    assert np.linalg.matrix_rank(w.numpy()) == rank  # numpy's rule on the SVD
    assert esd.matrix_rank == rank
    assert esd.rank_loss == m - rank
    assert np.all(esd.evals >= 0)
    assert esd.evals.size == m


@pytest.mark.parametrize("method", METHODS)
def test_rank_one_outer_product(method: str) -> None:
    u = torch.linspace(1.0, 2.0, 60, dtype=torch.float64)
    v = torch.cos(torch.arange(25, dtype=torch.float64))
    w = torch.outer(u, v)
    [(_, esd)] = eigenvalues(w, method=method)
    assert (esd.matrix_rank, esd.rank_loss) == (1, 24)
    assert esd.evals[-1] == pytest.approx(float((u @ u) * (v @ v)), rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_rank_of_pooled_conv_with_rank_deficient_slices(method: str) -> None:
    # 6 slices of shape (12, 9), each of rank 2, all of the same magnitude
    slices = [low_rank((12, 9), 2, seed=s).numpy() for s in range(6)]
    w = torch.from_numpy(np.stack(slices, axis=-1).reshape(12, 9, 3, 2))
    [(_, pooled)] = eigenvalues(w, method=method)
    assert pooled.rank_loss == 6 * (9 - 2)
    assert pooled.matrix_rank == 6 * 2
    per_slice = eigenvalues(w, conv="slices", method=method)
    assert [e.rank_loss for _, e in per_slice] == [7] * 6
    assert [e.matrix_rank for _, e in per_slice] == [2] * 6


def test_layer_weights_records_are_accepted() -> None:
    torch.manual_seed(12)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ConvTranspose2d(8, 4, 2), torch.nn.Linear(10, 6)
    )
    records = [r for r in iter_layers(model) if r.status == "ok"]
    assert [r.kind for r in records] == [
        LayerKind.CONV2D,
        LayerKind.CONV_TRANSPOSE2D,
        LayerKind.LINEAR,
    ]
    for record in records:
        [(_, from_record)] = eigenvalues(record)
        [(_, from_tensor)] = eigenvalues(record.tensor())
        assert isinstance(from_record, ESD)
        np.testing.assert_array_equal(from_record.evals, from_tensor.evals)
    # ConvTranspose2d(8, 4, 2) stores (in=8, out=4, 2, 2); canonical (4, 8, 2, 2): N=8, M=4
    [(_, transposed)] = eigenvalues(records[1])
    assert (transposed.N, transposed.M, transposed.rf) == (8, 4, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_matches_cpu() -> None:
    w = weight((64, 32, 3, 3), seed=13)
    for method in METHODS:
        [(_, cpu)] = eigenvalues(w, method=method)
        [(_, gpu)] = eigenvalues(w, method=method, device="cuda")
        [(_, on_gpu)] = eigenvalues(w.cuda(), method=method)
        assert_spectrum_close(gpu.evals, cpu.evals)
        assert_spectrum_close(on_gpu.evals, cpu.evals)
        assert (gpu.matrix_rank, gpu.rank_loss) == (cpu.matrix_rank, cpu.rank_loss)
