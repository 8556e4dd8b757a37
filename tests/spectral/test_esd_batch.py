"""eigenvalues_batch: one batched decomposition gives the per-matrix results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailwise.spectral.analyze import analyze
from tailwise.spectral.esd import eigenvalues, eigenvalues_batch


@pytest.mark.parametrize("shape", [(120, 40), (40, 120), (64, 64)])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_batch_equals_one_by_one(shape: tuple[int, int], method: str) -> None:
    gen = torch.Generator().manual_seed(1)
    mats = [torch.randn(*shape, generator=gen) * (i + 1) for i in range(4)]
    batch = eigenvalues_batch(mats, method=method, normalize="N")
    for mat, esd in zip(mats, batch, strict=True):
        [(_, alone)] = eigenvalues(mat, method=method, normalize="N")
        np.testing.assert_allclose(esd.evals, alone.evals, rtol=1e-12, atol=1e-12 * alone.evals[-1])
        assert (esd.N, esd.M, esd.rf, esd.matrix_rank) == (alone.N, alone.M, 1, alone.matrix_rank)


def test_batch_rejects_mixed_shapes_and_bad_values() -> None:
    with pytest.raises(ValueError, match="one shape"):
        eigenvalues_batch([torch.randn(3, 4), torch.randn(4, 3)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        eigenvalues_batch([torch.randn(3, 4), torch.full((3, 4), float("nan"))])
    assert eigenvalues_batch([]) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batched_analysis_matches_cpu() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(96, 96) for _ in range(6)])
    cpu = analyze(model, progress=False)
    gpu = analyze(model.cuda(), progress=False)
    ok = cpu.status == "ok"
    np.testing.assert_allclose(gpu.alpha[ok], cpu.alpha[ok], rtol=1e-9)
