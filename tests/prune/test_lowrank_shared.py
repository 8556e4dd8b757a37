"""One Gram decomposition per layer for the spectra and the low-rank factors (issue 13 §3):
``gram_spectrum`` against dense NumPy eigendecompositions, ``lowrank_analysis`` against
``tailwise.analyze``, and ``prune(..., method="lowrank", allocation="alpha")`` against the
same pruning computed the long way (the analysis, allocate, prune_lowrank decomposing again).

The shared spectra are float64; ``tailwise.analyze`` may compute a layer's in float32 where
that moves no column by more than 1e-4 (its ``precision="auto"``), hence that tolerance
against it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tailwise.models import MLP, SmallCNN
from tailwise.prune import allocate, prune, prune_lowrank
from tailwise.prune import lowrank as lowrank_module
from tailwise.prune.lowrank import factorize, gram_spectrum, lowrank_analysis
from tailwise.spectral.analyze import analyze
from tailwise.spectral.esd import eigenvalues


def heavy_tailed(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_t(3, size=shape)).float()


@pytest.mark.parametrize("k", [3, 7, 25])  # MRRR for the 3 alone; divide and conquer else
@pytest.mark.parametrize("shape", [(60, 25), (25, 60), (40, 40)])
def test_gram_spectrum_matches_numpy(shape: tuple[int, int], k: int) -> None:
    w = heavy_tailed(shape, 0).double()
    spectrum = gram_spectrum(w)
    a = w.numpy()
    gram = a.T @ a if shape[0] >= shape[1] else a @ a.T
    expected_values, expected_vectors = np.linalg.eigh(gram)
    assert spectrum.tall == (shape[0] >= shape[1])
    np.testing.assert_allclose(
        spectrum.eigenvalues, expected_values, rtol=0, atol=1e-12 * expected_values[-1]
    )
    values, vectors = spectrum.top_eigenvectors(k)
    np.testing.assert_allclose(values, expected_values[::-1][:k], rtol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(k), atol=1e-12)
    # Same invariant subspace as NumPy's top-k eigenvectors (the eigenvalues are distinct).
    top = expected_vectors[:, ::-1][:, :k]
    np.testing.assert_allclose(vectors @ vectors.T, top @ top.T, atol=1e-10)
    np.testing.assert_allclose(gram @ vectors, vectors * values, atol=1e-10 * values[0])


def test_esd_is_what_analyze_computes() -> None:
    w = heavy_tailed((80, 30), 1)
    w[:, 5] = 0.0  # one zero column: rank 29
    [(_, reference)] = eigenvalues(w)
    esd = gram_spectrum(w).esd(80)
    np.testing.assert_allclose(esd.evals, reference.evals, rtol=0, atol=1e-12 * esd.evals[-1])
    assert (esd.N, esd.M, esd.rf, esd.scale) == (reference.N, reference.M, 1, 1.0)
    assert (
        (esd.rank_loss, esd.matrix_rank)
        == (reference.rank_loss, reference.matrix_rank)
        == (
            1,
            29,
        )
    )


def test_gram_spectrum_rejects_bad_matrices() -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        gram_spectrum(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="non-empty matrix"):
        gram_spectrum(torch.zeros(3))
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        gram_spectrum(torch.eye(2)).top_eigenvectors(3)


def test_factorize_with_a_given_spectrum_is_the_same_factorization() -> None:
    layer = nn.Linear(30, 50)
    with torch.no_grad():
        layer.weight.copy_(heavy_tailed((50, 30), 2))
    spectrum = gram_spectrum(layer.weight.detach().double())
    pair, error = factorize(layer, 6, spectrum=spectrum)
    again, error_again = factorize(layer, 6)
    x = torch.randn(4, 30)
    torch.testing.assert_close(pair(x), again(x), rtol=1e-5, atol=1e-5)
    assert error == pytest.approx(error_again, rel=1e-12)
    w = layer.weight.detach().double().numpy()
    s = np.linalg.svd(w, compute_uv=False)
    assert error == pytest.approx(math.sqrt((s[6:] ** 2).sum() / (s**2).sum()), rel=1e-10)


def model_with_conv() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(heavy_tailed(tuple(p.shape), p.numel()) * 0.1)
    return model


def test_lowrank_analysis_rows_match_analyze() -> None:
    model = MLP(48, [64, 40], 10)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            layer.weight.copy_(heavy_tailed(tuple(layer.weight.shape), 10 + i))
    names = ["layers.0", "layers.1", "layers.2"]
    table, spectra = lowrank_analysis(model, names)
    reference = analyze(model, include=r"^layers\.\d\.weight$", progress=False)
    assert sorted(spectra) == names
    assert table["name"].tolist() == reference["name"].tolist()
    assert table["status"].tolist() == reference["status"].tolist() == ["ok"] * 3
    for column in ("alpha", "xmin", "D", "stable_rank", "entropy", "log_norm", "spectral_norm"):
        np.testing.assert_allclose(
            table[column].to_numpy(float), reference[column].to_numpy(float), rtol=1e-4
        )
    for column in ("matrix_rank", "rank_loss", "num_pl_spikes", "N", "M"):
        assert table[column].astype(int).tolist() == reference[column].astype(int).tolist()


def test_convolutions_are_analysed_the_usual_way_and_not_shared() -> None:
    model = model_with_conv()
    table, spectra = lowrank_analysis(model, ["features.0.conv", "features.1.conv", "head"])
    reference = analyze(model, include=r"conv\.weight$|^head\.weight$", progress=False)
    assert sorted(spectra) == ["head"]
    np.testing.assert_allclose(
        table["alpha"].to_numpy(float), reference["alpha"].to_numpy(float), rtol=1e-4
    )


def test_a_layer_with_nan_fails_as_in_analyze_and_is_not_shared() -> None:
    model = MLP(16, [12], 4)
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    table, spectra = lowrank_analysis(model, ["layers.0", "layers.1"])
    reference = analyze(model, include=r"^layers\.\d\.weight$", progress=False)
    assert sorted(spectra) == ["layers.1"]
    assert table["status"].tolist() == reference["status"].tolist() == ["failed", "ok"]
    assert table["reason"].tolist() == reference["reason"].tolist()


def stack() -> nn.Module:
    model = MLP(96, [128, 128, 96], 10)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            layer.weight.copy_(heavy_tailed(tuple(layer.weight.shape), 20 + i) * 0.05)
    return model


@pytest.mark.parametrize("allocation", ["alpha", "alpha_pruning"])
def test_prune_lowrank_by_alpha_equals_the_long_way(allocation: str) -> None:
    model = stack()
    result = prune(model, 0.5, method="lowrank", allocation=allocation, progress=False)
    hidden = r"^layers\.[0-2]\.weight$"
    table, _ = lowrank_analysis(model, ["layers.0", "layers.1", "layers.2"])
    ratios = allocate(model, 0.5, allocation, include=hidden, analysis=table)
    long_way = prune_lowrank(model, ratios, include=hidden, progress=False)
    ours = result.report.set_index("layer")
    theirs = long_way.report.set_index("layer")
    for name in ratios:
        assert ours.loc[name, "ratio"] == theirs.loc[name, "ratio"]
        assert ours.loc[name, "note"] == theirs.loc[name, "note"]  # the same ranks
        assert ours.loc[name, "rel_error"] == pytest.approx(theirs.loc[name, "rel_error"], rel=1e-9)
    x = torch.randn(8, 96)
    torch.testing.assert_close(result.model(x), long_way.model(x), rtol=1e-5, atol=1e-5)
    # The analysis itself is analyze's (to its float32 tolerance): the ratios follow.
    by_analyze = allocate(model, 0.5, allocation, include=hidden)
    for name, value in by_analyze.items():
        assert ours.loc[name, "ratio"] == pytest.approx(value, abs=1e-4)


def test_prune_decomposes_each_linear_layer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = lowrank_module.gram_spectrum

    def counted(matrix: torch.Tensor) -> lowrank_module.GramSpectrum:
        calls.append(tuple(matrix.shape))
        return real(matrix)

    monkeypatch.setattr(lowrank_module, "gram_spectrum", counted)
    result = prune(stack(), 0.5, method="lowrank", allocation="alpha", progress=False)
    factored = result.report[result.report["achieved"] > 0]["layer"].tolist()
    assert factored == ["layers.0", "layers.1", "layers.2"]
    assert sorted(calls) == sorted([(128, 96), (128, 128), (96, 128)])  # one per layer
    calls.clear()
    prune(stack(), 0.5, method="lowrank", progress=False)  # uniform: no analysis to share
    assert len(calls) == 3
