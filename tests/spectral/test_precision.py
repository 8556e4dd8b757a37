"""Tests of the Gram matrix's precision: ``precision="float64" | "float32" | "auto"``.

Oracles: the float64 table of the same weights (every numeric column of a float32 or auto row
within 1e-4 of it, relative to the column's scale), float64 eigenvalues of matrices with
known singular values (what the float32 floor must drop), and the first-order bounds of
:mod:`tailwise.spectral.precision` checked against the changes they bound.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.typing import NDArray

import tailwise.spectral.esd as esd_module
from tailwise._errors import UsageError
from tailwise.spectral.analyze import COLUMNS, TEXT_COLUMNS, analyze
from tailwise.spectral.esd import ESD, FLOAT32_FLOOR, eigenvalues, eigenvalues_batch
from tailwise.spectral.powerlaw import fit_power_law
from tailwise.spectral.precision import (
    BOUNDED_COLUMNS,
    change_bounds,
    column_scale,
    histogram_is_certain,
    uncertain_column,
)

EPS32 = float(np.finfo(np.float32).eps)
NUMERIC = [c for c in COLUMNS if c not in TEXT_COLUMNS]
TOLERANCE = 1e-4


def run(source: object, **options: object) -> pd.DataFrame:
    return analyze(source, progress=False, workers=1, **options)  # type: ignore[arg-type]


def with_singular_values(rows: int, sv: NDArray[np.float64], seed: int) -> torch.Tensor:
    """A float32 (rows, len(sv)) matrix whose singular values are ``sv``."""
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.standard_normal((rows, sv.size)))
    right, _ = np.linalg.qr(rng.standard_normal((sv.size, sv.size)))
    return torch.from_numpy((left * sv) @ right.T).float()


def parity_layers() -> dict[str, torch.Tensor]:
    """Tall, wide and conv layers: Marchenko-Pastur-like, heavy-tailed, power-law spectra."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    layers: dict[str, torch.Tensor] = {}
    for out, inp in [(600, 200), (200, 600), (400, 100), (256, 256)]:
        layers[f"gauss_{out}x{inp}"] = torch.randn(out, inp, generator=gen) * 0.05
        for dof in (2.5, 4.0):
            t = rng.standard_normal((out, inp)) * rng.standard_t(dof, (out, inp)) * 0.05
            layers[f"t{dof:g}_{out}x{inp}"] = torch.from_numpy(t).float()
        m = min(out, inp)
        sv = np.arange(1, m + 1) ** (-1.0 / 1.5) + 0.02 * rng.random(m)
        layers[f"powerlaw_{out}x{inp}"] = with_singular_values(max(out, inp), sv, 1)
    layers["conv_64x16x3x3"] = torch.randn(64, 16, 3, 3, generator=gen) * 0.1
    return layers


@pytest.fixture(scope="module")
def parity() -> dict[str, pd.DataFrame]:
    layers = parity_layers()
    return {p: run(layers, precision=p) for p in ("float64", "auto", "float32")}


def changes(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """|other - reference| per row and numeric column, relative to the column's scale."""
    ref = reference.set_index("name")
    got = other.set_index("name").loc[ref.index]
    out = pd.DataFrame(0.0, index=ref.index, columns=NUMERIC)
    for name in ref.index:
        alpha = float(ref.loc[name, "alpha"])
        for column in NUMERIC:
            a, b = float(ref.loc[name, column]), float(got.loc[name, column])
            if (math.isnan(a) and math.isnan(b)) or a == b:
                continue
            out.loc[name, column] = abs(a - b) / max(column_scale(column, a, alpha), 1e-300)
    return out


def test_auto_rows_match_float64_within_1e4(parity: dict[str, pd.DataFrame]) -> None:
    auto, reference = parity["auto"], parity["float64"]
    assert (auto["status"] == reference["status"]).all()
    ok = auto["status"] == "ok"
    assert set(auto.loc[ok, "precision"]) == {"float32", "float64"}
    assert (reference.loc[ok, "precision"] == "float64").all()
    # not vacuous: several layers really ran in float32
    assert (auto.loc[ok, "precision"] == "float32").sum() >= 5
    worst = changes(reference, auto)
    assert worst.to_numpy().max() <= TOLERANCE, worst.max().sort_values().tail(3)
    # D is held to 1e-4 of its scale [0, 1] by the bounds; it is also within 1e-4 relative
    d_ref = reference.loc[ok, "D"].to_numpy()
    d_auto = auto.loc[ok, "D"].to_numpy()
    np.testing.assert_allclose(d_auto, d_ref, rtol=TOLERANCE)
    # the float64 rows of auto are the float64 rows, bit for bit
    same = (auto["precision"] == "float64").to_numpy()
    pd.testing.assert_frame_equal(
        auto.loc[same, NUMERIC].reset_index(drop=True),
        reference.loc[same, NUMERIC].reset_index(drop=True),
    )


def test_float32_rows_match_float64_where_the_spectrum_is_resolved(
    parity: dict[str, pd.DataFrame],
) -> None:
    """Rectangular layers (N >= 2 M) have no eigenvalue near the float32 floor: every column
    of the float32 table, rank and entropy included, is within 1e-4 of float64's."""
    f32, reference = parity["float32"], parity["float64"]
    assert (f32.loc[f32["status"] == "ok", "precision"] == "float32").all()
    rectangular = (reference["N"] >= 2 * reference["M"]) & (reference["status"] == "ok")
    names = reference.loc[rectangular, "name"]
    assert len(names) >= 8
    worst = changes(reference[reference["name"].isin(names)], f32[f32["name"].isin(names)])
    assert worst.to_numpy().max() <= TOLERANCE, worst.max().sort_values().tail(3)


def test_first_order_bounds_hold_on_the_parity_set() -> None:
    """The error model: where a float32 row is accepted, each bounded column moved by no
    more than its bound (the benchmark's --calibrate prints the ratios; <= 0.3 measured)."""
    checked = 0
    for name, weight in parity_layers().items():
        if weight.ndim != 2:
            continue
        [(_, esd32)] = eigenvalues(weight, precision="float32")
        fit = fit_power_law(esd32.evals)
        bounds = change_bounds(esd32, fit)
        if uncertain_column(esd32, fit):
            continue
        row64 = run({"w": weight}, precision="float64").iloc[0]
        row32 = run({"w": weight}, precision="float32").iloc[0]
        for column in BOUNDED_COLUMNS:
            if column in ("norm", "warning"):  # norm's bound is its measured change
                assert row32["warning"] == row64["warning"]
                continue
            a, b = float(row64[column]), float(row32[column])
            change = abs(a - b) / max(column_scale(column, a, float(row64["alpha"])), 1e-300)
            assert change <= bounds[column], (name, column, change, bounds[column])
        checked += 1
    assert checked >= 5


def test_auto_falls_back_to_float64_on_an_ill_conditioned_layer() -> None:
    """Singular values down to 1e-6 (eigenvalues 1e-12 of lambda_max, under the float32
    floor): auto redoes the layer in float64, so rank and entropy count them."""
    sv = np.logspace(0, -6, 80)
    layers = {
        "ill": with_singular_values(400, sv, 2),
        "fine": torch.randn(400, 80, generator=torch.Generator().manual_seed(3)),
    }
    auto = run(layers, precision="auto").set_index("name")
    reference = run(layers, precision="float64").set_index("name")
    assert auto.loc["ill", "precision"] == "float64"
    assert auto.loc["fine", "precision"] == "float32"
    pd.testing.assert_series_equal(auto.loc["ill", NUMERIC], reference.loc["ill", NUMERIC])
    assert reference.loc["ill", "matrix_rank"] == 80


def test_float32_never_counts_eigenvalues_below_its_resolution() -> None:
    """60 singular values: 50 in [0.1, 1] and 10 at 1e-5 (eigenvalues 1e-10 of lambda_max,
    below the float32 floor of 16 eps32 lambda_max = 1.9e-6): float32 sets those 10 to 0 and
    counts neither them in the rank nor in the entropy; float64 resolves them."""
    rng = np.random.default_rng(4)
    sv = np.concatenate([np.sort(rng.uniform(0.1, 1.0, 50)), np.full(10, 1e-5)])
    weight = with_singular_values(300, sv, 5)
    [(_, esd)] = eigenvalues(weight, precision="float32")
    assert esd.precision == "float32"
    assert int((esd.evals == 0).sum()) == 10
    assert esd.matrix_rank == 50 and esd.rank_loss == 10
    assert np.all(esd.evals[10:] > FLOAT32_FLOOR * EPS32 * esd.evals[-1])
    row = run({"w": weight}, precision="float32").iloc[0]
    assert row["matrix_rank"] == 50 and row["rank_loss"] == 10
    # entropy of the 50 resolved eigenvalues (float64 oracle), normalised by ln 50
    lam = np.sort(np.linalg.svd(weight.double().numpy(), compute_uv=False) ** 2)[10:]
    p = lam / lam.sum()
    assert row["entropy"] == pytest.approx(-np.sum(p * np.log(p)) / math.log(50), rel=1e-5)
    exact = run({"w": weight}, precision="float64").iloc[0]
    assert exact["matrix_rank"] == 60 and exact["rank_loss"] == 0


def test_float32_null_directions_are_rank_loss_in_both_precisions() -> None:
    """Exact null directions (repeated columns) are rounding in both precisions."""
    weight = torch.randn(500, 40, generator=torch.Generator().manual_seed(6))
    weight[:, 30:] = weight[:, :10]
    for precision in ("float32", "float64", "auto"):
        [(_, esd)] = eigenvalues(weight, precision=precision)
        assert (esd.matrix_rank, esd.rank_loss) == (30, 10), precision
    [(_, auto)] = eigenvalues(weight, precision="auto")
    assert auto.precision == "float64"  # the null space is under the float32 floor


def test_float32_floor_is_per_slice_for_pooled_convolutions() -> None:
    # slice 0 is 1000x larger than the others: one pooled floor would wipe them out
    weight = torch.randn(48, 12, 1, 2, generator=torch.Generator().manual_seed(7))
    weight[:, :, 0, 0] *= 1000.0
    [(_, f32)] = eigenvalues(weight, precision="float32")
    [(_, f64)] = eigenvalues(weight, precision="float64")
    assert f32.matrix_rank == f64.matrix_rank == 24 and f32.rank_loss == 0
    np.testing.assert_allclose(f32.evals, f64.evals, rtol=1e-5)


@pytest.mark.parametrize("shape", [(300, 70), (70, 300)])
def test_float32_spectra_and_trace_error(shape: tuple[int, int]) -> None:
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(8))
    [(_, f32)] = eigenvalues(weight, precision="float32")
    [(_, f64)] = eigenvalues(weight, precision="float64")
    reference = np.linalg.svd(weight.double().numpy(), compute_uv=False) ** 2
    top = float(reference.max())
    np.testing.assert_allclose(f32.evals, np.sort(reference), rtol=0, atol=8 * EPS32 * top)
    np.testing.assert_allclose(f64.evals, np.sort(reference), rtol=0, atol=1e-12 * top)
    assert 0 < f32.trace_error < 1e-6 and f64.trace_error < 1e-12


def test_float32_block_path_matches_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contiguous float32 weights go to ssyrk whole; float64, non-contiguous and bf16 weights
    through converted row blocks (here many tiny ones): the same spectrum to float32
    resolution."""
    weight = torch.randn(200, 50, generator=torch.Generator().manual_seed(9))
    [(_, direct)] = eigenvalues(weight, precision="float32")
    atol = 8 * EPS32 * float(direct.evals[-1])
    monkeypatch.setattr(esd_module, "_GRAM_BLOCK_BYTES", 512)
    for same_values in (weight.double(), weight.t().contiguous().t(), weight.t()):
        [(_, blocked)] = eigenvalues(same_values, precision="float32")
        np.testing.assert_allclose(blocked.evals, direct.evals, rtol=0, atol=atol)
    [(_, bf16)] = eigenvalues(weight.bfloat16(), precision="float32")
    [(_, bf16_64)] = eigenvalues(weight.bfloat16(), precision="float64")
    np.testing.assert_allclose(
        bf16.evals, bf16_64.evals, rtol=0, atol=8 * EPS32 * float(bf16_64.evals[-1])
    )


def test_batch_matches_one_by_one_in_float32() -> None:
    gen = torch.Generator().manual_seed(10)
    tensors = [torch.randn(90, 30, generator=gen) for _ in range(3)]
    batch = eigenvalues_batch(tensors, precision="float32")
    for tensor, esd in zip(tensors, batch, strict=True):
        [(_, single)] = eigenvalues(tensor, precision="float32")
        assert esd.precision == "float32"
        np.testing.assert_allclose(esd.evals, single.evals, rtol=1e-6)


def test_device_gram_is_full_float32_and_restores_the_matmul_setting() -> None:
    """The off-CPU Gram route (run here on CPU tensors): float32 accumulation, never TF32."""
    stack = torch.randn(2, 120, 40, generator=torch.Generator().manual_seed(11))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        gram32 = esd_module._gram(stack, torch.device("cpu"), esd_module.Precision.FLOAT32)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    gram64 = stack.double().transpose(1, 2) @ stack.double()
    assert gram32.dtype == torch.float64
    top = float(torch.linalg.eigvalsh(gram64).max())
    assert float((gram32 - gram64).abs().max()) < 16 * EPS32 * top


def test_rand_distance_is_float64s_under_auto() -> None:
    layers = {name: weight for name, weight in parity_layers().items() if weight.shape[0] == 600}
    auto = run(layers, precision="auto", rand_distance=True, seed=3)
    reference = run(layers, precision="float64", rand_distance=True, seed=3)
    assert (auto["precision"] == "float32").any()
    np.testing.assert_array_equal(auto["rand_distance"], reference["rand_distance"])
    # turning rand_distance on changes no other column
    rest = [c for c in COLUMNS if c != "rand_distance"]
    pd.testing.assert_frame_equal(auto[rest], run(layers, precision="auto")[rest])


def test_histogram_is_certain() -> None:
    lam = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    assert histogram_is_certain(lam, lam * 3.0, 1e-9, 1e-9)
    # 10 log10 bins over [1, 48]: put a value 1e-9 (relative) above the third edge
    edge = 10.0 ** (3 * math.log10(48.0) / 10)
    near = np.array([1.0, 2.0, edge * (1 + 1e-9), 8.0, 16.0])
    assert histogram_is_certain(near, lam * 3.0, 1e-12, 0.0)
    assert not histogram_is_certain(near, lam * 3.0, 1e-6, 0.0)
    assert not histogram_is_certain(lam * 3.0, near, 0.0, 1e-6)
    # a zero eigenvalue in a perturbed spectrum may leave the zero bin
    assert not histogram_is_certain(np.array([0.0, 1.0, 2.0]), lam, 1e-9, 0.0)


def test_options_that_auto_does_not_bound_take_float64() -> None:
    weight = {"w": torch.randn(400, 100, generator=torch.Generator().manual_seed(12))}
    assert run(weight, precision="auto").loc[0, "precision"] == "float32"
    for options in ({"xmax": 100.0}, {"fix_fingers": "clip_xmax"}, {"method": "svd"}):
        assert run(weight, precision="auto", **options).loc[0, "precision"] == "float64"


def test_square_matrices_stay_float64_under_auto() -> None:
    weight = torch.randn(200, 200, generator=torch.Generator().manual_seed(13))
    [(_, esd)] = eigenvalues(weight, precision="auto")
    assert esd.precision == "float64"
    [(_, forced)] = eigenvalues(weight, precision="float32")
    assert forced.precision == "float32"


def pareto(alpha: float, n: int) -> NDArray[np.float64]:
    q = (np.arange(n) + 0.5) / n
    return np.asarray((1.0 - q) ** (-1.0 / (alpha - 1.0)))


def esd_of(evals: NDArray[np.float64], n: int | None = None) -> ESD:
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    m = evals.size
    return ESD(
        evals=evals,
        N=n or 4 * m,
        M=m,
        rf=1,
        rank_loss=0,
        matrix_rank=m,
        scale=1.0,
        precision="float32",
        trace_error=1e-9,
    )


def test_uncertain_column_flags_what_rounding_could_change() -> None:
    rng = np.random.default_rng(14)
    bulk = np.sort(rng.uniform(1.0, 4.0, 300))
    spectrum = np.concatenate([bulk, 4.0 * pareto(3.0, 40)])
    certain = esd_of(spectrum)
    assert uncertain_column(certain, fit_power_law(certain.evals)) == ""
    # two eigenvalues closer than 2 delta: their order is rounding
    tied = spectrum.copy()
    tied[100] = tied[99] + 0.5 * EPS32 * tied.max()
    esd = esd_of(tied)
    assert uncertain_column(esd, fit_power_law(esd.evals)) == "xmin"
    # a value at the fit's zero threshold 1e-5 may be in or out of the fit
    esd = esd_of(np.concatenate([[1e-5 + 1e-14], spectrum * 1e-7]))
    assert uncertain_column(esd, fit_power_law(esd.evals)) in ("matrix_rank", "num_pl_spikes")
    # a pure power law: many xmin candidates with nearly equal KS distances
    esd = esd_of(pareto(2.5, 400))
    assert uncertain_column(esd, fit_power_law(esd.evals)) == "xmin"
    # an eigenvalue under the float32 floor
    esd = esd_of(np.concatenate([[1e-9], spectrum]))
    assert uncertain_column(esd, fit_power_law(esd.evals)) == "matrix_rank"
    # a trace error beyond the tolerance
    bad = esd_of(spectrum)
    bad = ESD(**{**bad.__dict__, "trace_error": 1e-3})
    assert uncertain_column(bad, fit_power_law(bad.evals)) == "norm"


def test_alpha_on_a_warning_threshold_is_uncertain() -> None:
    """alpha exactly 2 (the over-trained threshold): its label is rounding."""
    tail = pareto(3.0, 60)
    logs = np.log(tail / tail[0])
    tail = tail[0] * np.exp(logs * (tail.size / logs.sum()))  # MLE alpha = 1 + n / sum = 2
    esd = esd_of(np.concatenate([np.linspace(0.2, 0.9, 200), tail]))
    fit = fit_power_law(esd.evals, xmin=float(tail[0]))
    assert fit.alpha == pytest.approx(2.0, abs=1e-12)
    assert change_bounds(esd, fit, float(tail[0]))["warning"] == math.inf


def test_precision_option_errors() -> None:
    weight = {"w": torch.randn(40, 10)}
    with pytest.raises(UsageError, match="precision must be one of 'float64', 'float32', 'auto'"):
        run(weight, precision="half")
    with pytest.raises(UsageError, match="method='svd' is float64 only"):
        run(weight, precision="float32", method="svd")
    with pytest.raises(ValueError):
        eigenvalues(torch.randn(5, 3), precision="half")
    with pytest.raises(ValueError, match="use method='gram'"):
        eigenvalues(torch.randn(5, 3), precision="float32", method="svd")
    assert run(weight, precision="auto").attrs["options"]["precision"] == "auto"
    assert run(weight).attrs["options"]["precision"] == "float64"
