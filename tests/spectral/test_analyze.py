"""Tests of ``tailwise.spectral.analyze``: the table, its rows, options, sources and summary."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.typing import NDArray
from safetensors.torch import save_file
from torch import nn

from tailwise import UsageError
from tailwise.prune import allocate
from tailwise.spectral.analyze import (
    COLUMNS,
    MIN_EVALS,
    MIN_PL_SPIKES,
    MIN_SLICE_M,
    TEXT_COLUMNS,
    analyze,
    summary,
)
from tailwise.weights import WeightsError

INT_COLUMNS = {
    "N",
    "M",
    "rf",
    "num_evals",
    "num_pl_spikes",
    "num_fingers",
    "matrix_rank",
    "rank_loss",
    "num_spikes",
}
FLOAT_COLUMNS = [c for c in COLUMNS if c not in INT_COLUMNS | set(TEXT_COLUMNS)]
# Columns that every analysed (status ok) row fills with a finite number.
OK_FINITE = [
    "Q",
    "alpha",
    "xmin",
    "xmax",
    "D",
    "sigma",
    "alpha_weighted",
    "log_alpha_norm",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "stable_rank",
    "entropy",
    "log_frobenius_norm",
]


def run(source: object, **options: object) -> pd.DataFrame:
    return analyze(source, progress=False, **options)  # type: ignore[arg-type]


def eigenvalues_of(weight: torch.Tensor) -> NDArray[np.float64]:
    """Ascending eigenvalues of W^T W for the small side, in float64 (reference)."""
    w = weight.detach().double().numpy()
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return np.linalg.eigvalsh(gram)


def with_eigenvalues(evals: NDArray[np.float64], n: int, seed: int) -> torch.Tensor:
    """An n x m float64 matrix whose W^T W has exactly the eigenvalues ``evals`` (m of them)."""
    m = evals.size
    gen = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    return left @ torch.diag(torch.from_numpy(np.sqrt(evals))) @ right.T


def pareto_quantiles(alpha: float, m: int) -> NDArray[np.float64]:
    """m evenly spread quantiles of the power law p(x) ∝ x^-alpha on [1, inf)."""
    q = (np.arange(m) + 0.5) / m
    return np.asarray((1.0 - q) ** (-1.0 / (alpha - 1.0)))


class Net(nn.Module):
    """Every parameter kind analyze meets in small vision / language models."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 24)
        self.conv = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        self.point = nn.Conv2d(16, 32, 1)
        self.attn = nn.MultiheadAttention(24, 4)
        self.norm = nn.LayerNorm(24)
        self.fc = nn.Linear(24, 60)
        self.head = nn.Linear(60, 10, bias=False)


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net()


@pytest.fixture(scope="module")
def net_table(net: Net) -> pd.DataFrame:
    # float64: these tests compare with float64 oracles to 1e-9 and below; the default
    # precision="auto" is compared with this table in tests/spectral/test_precision.py.
    return run(net, keep_evals=True, precision="float64")


# --- the table --------------------------------------------------------------------------------


def test_columns_and_dtypes(net_table: pd.DataFrame) -> None:
    assert tuple(net_table.columns) == COLUMNS
    for column in INT_COLUMNS:
        assert net_table[column].dtype == "Int64", column
    for column in FLOAT_COLUMNS:
        assert net_table[column].dtype == np.float64, column
    for column in TEXT_COLUMNS:
        assert pd.api.types.is_string_dtype(net_table[column]), column
        assert net_table[column].notna().all(), column  # "" rather than missing
    assert set(net_table["status"]) <= {"ok", "failed", "skipped"}
    assert net_table.attrs["options"]["conv"] == "pooled"
    assert "Net" in net_table.attrs["source"]


def test_one_row_per_parameter_with_mha_split_into_q_k_v(net: Net, net_table: pd.DataFrame) -> None:
    expected = []
    for name, _ in net.named_parameters():
        if name == "attn.in_proj_weight":
            expected += [f"{name}[{part}]" for part in "qkv"]
        else:
            expected.append(name)
    assert net_table["name"].tolist() == expected

    table = net_table.set_index("name")
    for part in "qkv":
        row = table.loc[f"attn.in_proj_weight[{part}]"]
        assert (row["kind"], row["N"], row["M"], row["status"]) == ("attention", 24, 24, "ok")
    # Each block is its own matrix: rows 24 * i .. 24 * (i + 1) of in_proj_weight.
    blocks = net.attn.in_proj_weight.detach().split(24)
    for part, block in zip("qkv", blocks, strict=True):
        np.testing.assert_allclose(
            net_table.attrs["esd"][f"attn.in_proj_weight[{part}]"],
            eigenvalues_of(block),
            rtol=1e-9,
            atol=1e-12,
        )
    assert table.loc["attn.out_proj.weight", "kind"] == "linear"


def test_skipped_rows_have_a_reason_and_no_numbers(net_table: pd.DataFrame) -> None:
    skipped = net_table[net_table["status"] == "skipped"]
    assert set(skipped["kind"]) == {"bias", "norm"}
    expected = {
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "point.bias",
        "attn.in_proj_bias",
        "attn.out_proj.bias",
        "norm.weight",
        "norm.bias",
        "fc.bias",
    }
    assert set(skipped["name"]) == expected
    assert (skipped["reason"].str.len() > 0).all()
    assert skipped[FLOAT_COLUMNS].isna().all().all()
    assert (skipped["warning"] == "").all()


def test_analysed_rows_are_ok_and_complete(net_table: pd.DataFrame) -> None:
    ok = net_table[net_table["status"] == "ok"]
    assert set(ok["kind"]) == {"embedding", "conv2d", "attention", "linear"}
    assert len(ok) == 9
    assert np.isfinite(ok[OK_FINITE].to_numpy(dtype=float)).all()
    assert (ok["reason"] == "").all()
    assert ok["rand_distance"].isna().all()  # not asked for
    table = ok.set_index("name")
    # conv (16, 3, 3, 3) pooled: 9 slices of 16 x 3, M * rf = 27 eigenvalues
    assert tuple(table.loc["conv.weight", ["N", "M", "rf", "num_evals"]]) == (16, 3, 9, 27)
    assert tuple(table.loc["embed.weight", ["N", "M", "rf", "num_evals"]]) == (100, 24, 1, 24)
    assert table.loc["fc.weight", "Q"] == pytest.approx(60 / 24)


def test_metrics_match_their_definitions(net: Net, net_table: pd.DataFrame) -> None:
    """REFERENCES §1 formulas recomputed from the eigenvalues of W^T W."""
    row = net_table.set_index("name").loc["fc.weight"]
    lam = eigenvalues_of(net.fc.weight)
    np.testing.assert_allclose(net_table.attrs["esd"]["fc.weight"], lam, rtol=1e-9)
    assert row["norm"] == pytest.approx(lam.sum(), rel=1e-12)
    assert row["log_norm"] == pytest.approx(math.log10(lam.sum()), rel=1e-12)
    assert row["spectral_norm"] == pytest.approx(lam.max(), rel=1e-12)
    assert row["log_spectral_norm"] == pytest.approx(math.log10(lam.max()), rel=1e-12)
    assert row["stable_rank"] == pytest.approx(lam.sum() / lam.max(), rel=1e-12)
    assert row["alpha_weighted"] == pytest.approx(row["alpha"] * math.log10(lam.max()))
    assert row["log_alpha_norm"] == pytest.approx(math.log10(np.sum(lam ** row["alpha"])))
    p = lam / lam.sum()
    assert row["entropy"] == pytest.approx(-np.sum(p * np.log(p)) / math.log(24), rel=1e-12)
    assert row["matrix_rank"] == 24 and row["rank_loss"] == 0
    # The KS fit: alpha is the MLE on the tail above xmin, and that tail has num_pl_spikes.
    tail = lam[lam >= row["xmin"]]
    assert tail.size == row["num_pl_spikes"]
    alpha = 1 + tail.size / np.sum(np.log(tail / row["xmin"]))
    assert row["alpha"] == pytest.approx(alpha, rel=1e-12)
    assert row["sigma"] == pytest.approx((alpha - 1) / math.sqrt(tail.size), rel=1e-12)
    assert row["xmax"] == pytest.approx(lam.max(), rel=1e-12)


def test_log_frobenius_norm_is_the_log_of_the_stored_frobenius_norm(
    net: Net, net_table: pd.DataFrame
) -> None:
    """README: log_frobenius_norm = log10 ||W||_F of the stored weights (no conv scaling).

    Regression (fixed in 5da013c): the value was log10 ||W||_F^2, twice the documented one
    (the sum of squares without the square root).
    """
    table = net_table.set_index("name")
    for name, weight in (("fc.weight", net.fc.weight), ("conv.weight", net.conv.weight)):
        frobenius = float(torch.linalg.vector_norm(weight.detach().double()))
        assert table.loc[name, "log_frobenius_norm"] == pytest.approx(
            math.log10(frobenius), rel=1e-12
        ), name
    # Pooled conv eigenvalues are of the weights times sqrt(1/2): log_norm = log10(||W||^2 / 2).
    assert table.loc["conv.weight", "log_norm"] == pytest.approx(
        2 * table.loc["conv.weight", "log_frobenius_norm"] - math.log10(2), rel=1e-12
    )


# --- options ----------------------------------------------------------------------------------


def test_conv_slices_gives_one_row_per_kernel_position() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, (3, 2), bias=False)
    df = run(conv, conv="slices", keep_evals=True, precision="float64")
    names = [f"weight[{i},{j}]" for i in range(3) for j in range(2)]
    assert df["name"].tolist() == names
    assert (df["status"] == "ok").all()
    assert df[["N", "M", "rf", "num_evals"]].drop_duplicates().to_numpy().tolist() == [
        [16, 8, 1, 8]
    ]
    # WeightWatcher's unpooled scale: each slice multiplied by sqrt(rf / 2), rf = 6.
    for name, (i, j) in zip(names, np.ndindex(3, 2), strict=True):
        expected = 3.0 * eigenvalues_of(conv.weight[:, :, i, j])
        np.testing.assert_allclose(df.attrs["esd"][name], expected, rtol=1e-9)

    pooled = run(conv, keep_evals=True, precision="float64")
    assert pooled["name"].tolist() == ["weight"] and pooled.loc[0, "num_evals"] == 48
    every_slice = np.concatenate([df.attrs["esd"][name] for name in names])
    # Pooled: all slices' eigenvalues together, halved (weights times sqrt(1/2)).
    np.testing.assert_allclose(
        pooled.attrs["esd"]["weight"], np.sort(every_slice / 6.0), rtol=1e-9, atol=1e-15
    )

    flat = run(conv, conv="flatten", keep_evals=True, precision="float64")
    assert tuple(flat.loc[0, ["N", "M", "rf"]]) == (48, 16, 1)
    np.testing.assert_allclose(
        flat.attrs["esd"]["weight"], eigenvalues_of(conv.weight.reshape(16, 48)), rtol=1e-9
    )


def test_include_and_exclude(net: Net) -> None:
    names = run(net, include=r"^(fc|head)\.")["name"].tolist()
    assert names == ["fc.weight", "fc.bias", "head.weight"]
    names = run(net, include="attn", exclude=re.compile(r"bias$"))["name"].tolist()
    assert names == [
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
        "attn.out_proj.weight",
    ]
    # The split MHA blocks are selected by their own names.
    assert run(net, include=r"\[k\]")["name"].tolist() == ["attn.in_proj_weight[k]"]
    everything_but = run(net, exclude=r"weight")
    assert not everything_but["name"].str.contains("weight").any()
    with pytest.raises(UsageError, match="include 'no such layer' selects no tensor"):
        run(net, include="no such layer")


def test_include_that_selects_nothing_names_the_pattern_and_some_names(net: Net) -> None:
    """Issue 9: an include matching nothing gave an empty table (exit 0 in the CLI)."""
    with pytest.raises(UsageError) as info:
        run(net, include="^encoder")
    message = str(info.value)
    assert "include '^encoder'" in message and "\n" not in message
    names = [name for name, _ in net.named_parameters()]
    assert all(repr(name) in message for name in names[:5])
    assert "..." in message
    with pytest.raises(UsageError, match=r"include 'fc' and exclude 'weight|bias' select no"):
        run(net, include="fc", exclude="weight|bias")


@pytest.mark.parametrize("xmax", [math.inf, -math.inf, math.nan, 0.0, -1.0])
def test_xmax_that_is_not_finite_and_positive_is_a_usage_error(xmax: float) -> None:
    """Issue 9: xmax=inf gave a table in which every layer failed."""
    with pytest.raises(UsageError, match="xmax must be a finite positive number"):
        run(nn.Linear(4, 4), xmax=xmax)


def test_unusable_device_is_a_usage_error() -> None:
    """Issue 9: device="cuda" without CUDA gave a table in which every layer failed."""
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or none at all
    for device in (missing, "meta"):
        with pytest.raises(UsageError, match=f"device '{device}' is not usable here"):
            run(nn.Linear(4, 4), device=device)
    with pytest.raises(UsageError, match="device 'bogus' is not a torch device"):
        run(nn.Linear(4, 4), device="bogus")
    assert (run(nn.Linear(40, 30), device="cpu")["status"] == ["ok", "skipped"]).all()


def test_keep_evals(net: Net, net_table: pd.DataFrame) -> None:
    spectra = net_table.attrs["esd"]
    ok = net_table.loc[net_table["status"] == "ok", "name"].tolist()
    assert list(spectra) == ok
    for name in ok:
        evals = spectra[name]
        assert evals.dtype == np.float64
        assert evals.size == net_table.set_index("name").loc[name, "num_evals"]
        assert np.all(np.diff(evals) >= 0)  # ascending
    np.testing.assert_allclose(spectra["head.weight"], eigenvalues_of(net.head.weight), rtol=1e-9)
    assert "esd" not in run(net).attrs


def test_normalize_n_and_svd_method(net: Net, net_table: pd.DataFrame) -> None:
    base = net_table.set_index("name").loc["fc.weight"]
    scaled = run(net, include="fc.weight", normalize="N", precision="float64").iloc[0]
    # X = W^T W / N (source 000): log norms shift by log10 N = log10 60, alpha unchanged.
    assert scaled["log_norm"] == pytest.approx(base["log_norm"] - math.log10(60), rel=1e-12)
    assert scaled["alpha"] == pytest.approx(base["alpha"], rel=1e-9)
    assert scaled["xmin"] == pytest.approx(base["xmin"] / 60, rel=1e-9)
    svd = run(net, include="fc.weight", method="svd").iloc[0]
    for column in ("alpha", "xmin", "D", "log_norm", "entropy"):
        assert svd[column] == pytest.approx(base[column], rel=1e-8)


def test_fit_median_is_the_hill_estimator(net: Net, net_table: pd.DataFrame) -> None:
    row = run(net, include="fc.weight", fit="median", precision="float64").iloc[0]
    lam = net_table.attrs["esd"]["fc.weight"]
    i = lam.size // 2
    k = lam.size - i
    hill = 1 + k / (np.log(lam[i:]).sum() - k * np.log(lam[i]))
    assert row["alpha"] == pytest.approx(hill, rel=1e-12)
    assert row["xmin"] == lam[i] and row["num_pl_spikes"] == k


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"fit": "foo"}, "fit"),
        ({"fit": -1.0}, "fit"),
        ({"conv": "bad"}, "conv"),
        ({"method": "qr"}, "method"),
        ({"normalize": "M"}, "normalize"),
        ({"fix_fingers": "nails"}, "fix_fingers"),
        ({"xmax": -2.0}, "xmax"),
    ],
)
def test_invalid_options_raise_value_error_naming_the_option(
    options: dict[str, object], option: str
) -> None:
    (value,) = options.values()
    with pytest.raises(ValueError, match=rf"\b{option}\b") as info:
        run(nn.Linear(4, 4), **options)
    assert repr(value) in str(info.value)
    assert isinstance(info.value, UsageError)  # the CLI prints it as one "error:" line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"include": "("}, "include: invalid regular expression"),
        ({"exclude": "[a"}, "exclude: invalid regular expression"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"device": "no-such-device"}, "device 'no-such-device'"),
    ],
)
def test_more_usage_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        run(nn.Linear(4, 4), **options)


class Owned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.query = nn.Linear(12, 10)
        self.conv = nn.Conv2d(3, 6, 2)
        self.attn = nn.MultiheadAttention(8, 2)
        self.rnn = nn.GRU(5, 7)
        self.weight = nn.Parameter(torch.randn(9, 4))


def test_layer_column_names_the_owning_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Owned()
    df = run(model, conv="slices")
    assert list(df.columns[:3]) == ["name", "layer", "kind"]
    layers = dict(zip(df["name"], df["layer"], strict=True))
    assert layers["encoder.query.weight"] == "encoder.query"
    assert layers["encoder.query.bias"] == "encoder.query"
    assert layers["conv.weight[0,1]"] == "conv"  # conv slice rows keep their module
    assert layers["attn.in_proj_weight[k]"] == "attn"
    assert layers["attn.out_proj.weight"] == "attn.out_proj"
    assert layers["rnn.weight_hh_l0"] == "rnn"
    assert layers["weight"] == ""
    modules = dict(model.named_modules())
    assert set(df["layer"]) <= set(modules)
    path = tmp_path / "owned.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    from_file = run(path, conv="slices")
    assert dict(zip(from_file["name"], from_file["layer"], strict=True)) == layers


def test_text_columns_are_public() -> None:
    assert "layer" in TEXT_COLUMNS and set(TEXT_COLUMNS) <= set(COLUMNS)


def test_missing_file_raises_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        run(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError):
        run(str(tmp_path / "absent-folder"))


# --- warnings -------------------------------------------------------------------------------


def test_warning_column_from_alpha() -> None:
    # Spectra with a known power-law exponent: exact quantiles of p(x) ∝ x^-a, a = 1.5, 4, 10.
    weights = {
        f"a{a}.weight": with_eigenvalues(pareto_quantiles(a, 200), 300, seed)
        for seed, a in enumerate((1.5, 4.0, 10.0))
    }
    df = run(weights).set_index("name")
    assert (df["status"] == "ok").all()
    for a, warning in ((1.5, "over-trained"), (4.0, ""), (10.0, "under-trained")):
        row = df.loc[f"a{a}.weight"]
        assert row["alpha"] == pytest.approx(a, rel=0.15)
        assert row["warning"] == warning, (a, row["alpha"])


def test_failed_fits_are_never_over_trained() -> None:
    torch.manual_seed(2)
    weights = {
        "row.weight": torch.randn(1, 50),  # one eigenvalue: nothing to fit
        "orthogonal.weight": torch.eye(16),  # all eigenvalues equal: no tail
        "zeros.weight": torch.zeros(32, 16),  # no spectrum at all
        "fine.weight": torch.randn(64, 32),
    }
    df = run(weights).set_index("name")
    row = df.loc["row.weight"]  # too small for a fit: ok, no alpha, no label
    assert (row["status"], row["warning"]) == ("ok", "")
    assert row["reason"].startswith("too few eigenvalues (1 < 10)") and math.isnan(row["alpha"])
    for name in ("orthogonal.weight",):
        row = df.loc[name]
        assert row["status"] == "failed"
        assert row["reason"].startswith("power-law fit:"), row["reason"]
        assert math.isnan(row["alpha"])
        assert row["warning"] == ""
        # What can be computed without the fit still is.
        assert math.isfinite(row["log_norm"]) and math.isfinite(row["log_spectral_norm"])
    assert df.loc["zeros.weight", "status"] == "failed"
    assert df.loc["zeros.weight", "warning"] == "empty"
    assert df.loc["fine.weight", "status"] == "ok"
    # The rule over the whole table: over-trained means an ok fit with alpha < 2.
    over = df[df["warning"] == "over-trained"]
    assert ((over["status"] == "ok") & (over["alpha"] < 2)).all()


def test_too_few_eigenvalues_get_norms_but_no_alpha_and_no_label() -> None:
    """Issue 9: a 2-output head (2 eigenvalues) was "alpha 1.15, over-trained"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2))
    df = run(model).set_index("name")
    head = df.loc["1.weight"]
    assert (head["status"], head["warning"], head["num_evals"]) == ("ok", "", 2)
    assert head["reason"] == (
        f"too few eigenvalues (2 < {MIN_EVALS}) for a power-law fit; no alpha"
    )
    for column in ("alpha", "xmin", "D", "alpha_weighted", "log_alpha_norm"):
        assert math.isnan(head[column]), column
    for column in ("log_norm", "log_spectral_norm", "stable_rank", "entropy", "matrix_rank"):
        assert math.isfinite(head[column]), column
    assert df["alpha"].dtype == np.float64  # still a numeric column for allocate & co.
    assert summary(df.reset_index())["alpha"] == pytest.approx(df.loc["0.weight", "alpha"])
    # Consumers of the alpha column take the NaN (allocate substitutes the median, warning).
    with pytest.warns(UserWarning, match="missing or NaN"):
        ratios = allocate(model, 0.5, "alpha")
    assert set(ratios) == {"0", "1"}


def test_fit_on_a_tiny_tail_is_reported_but_not_labelled() -> None:
    """Issue 9: conv4_2 was "under-trained" at alpha 19.5 from 2 tail eigenvalues."""
    # Singular values 1..15 and a tight group of 5 at 20: a steep tail, alpha far above 6.
    singular = torch.cat([torch.arange(1.0, 16.0), torch.tensor([20.0, 20.1, 20.2, 20.3, 20.4])])
    weight = torch.diag(singular.double())
    df = run({"w.weight": weight, "v.weight": weight.clone()}, fit=20.25**2)
    row = df.set_index("name").loc["w.weight"]
    assert row["num_pl_spikes"] == 2 < MIN_PL_SPIKES
    assert (row["status"], row["warning"]) == ("ok", "")
    assert math.isfinite(row["alpha"]) and row["alpha"] > 6  # would have been "under-trained"
    assert row["reason"] == f"alpha from 2 tail eigenvalues (< {MIN_PL_SPIKES}): too few to label"
    assert math.isnan(summary(df)["alpha"])  # shown, not averaged
    wider = run({"w.weight": weight}, fit=19.5**2).iloc[0]  # 5 tail eigenvalues: labelled
    assert wider["num_pl_spikes"] == MIN_PL_SPIKES and wider["alpha"] > 6
    assert (wider["warning"], wider["reason"]) == ("under-trained", "")


@pytest.mark.parametrize("conv", ["pooled", "slices"])
def test_degenerate_conv_slices_are_flattened_with_a_note(conv: str) -> None:
    """Issue 9: a (1024, 1, 512, 1) conv was pooled from 1-column slices: alpha 26.3 and
    "under-trained"; flattened (what --conv flatten gives) it is a 1024 x 512 matrix."""
    torch.manual_seed(0)
    weights = {"thin.weight": torch.randn(96, 1, 40, 1), "rgb.weight": torch.randn(16, 3, 3, 3)}
    df = run(weights, conv=conv, keep_evals=True).set_index("name")
    flat = run(weights, conv="flatten", keep_evals=True).set_index("name")
    thin = df.loc["thin.weight"]
    assert (thin["status"], thin["N"], thin["M"], thin["rf"]) == ("ok", 96, 40, 1)
    assert thin["reason"] == (
        f"conv slices of 96x1 have < {MIN_SLICE_M} eigenvalues each: analysed flattened to "
        f"96x40 instead of conv='{conv}'"
    )
    assert thin["alpha"] == pytest.approx(flat.loc["thin.weight", "alpha"], rel=1e-9)
    np.testing.assert_allclose(
        df.attrs["esd"]["thin.weight"], flat.attrs["esd"]["thin.weight"], rtol=1e-9
    )
    # M = 3 per slice (an RGB input layer) is a spectrum: analysed as asked.
    rgb = df[df.index.str.startswith("rgb.weight")]
    assert not rgb["reason"].str.contains("flattened").any()
    assert (rgb["rf"] == (9 if conv == "pooled" else 1)).all()


# --- weights that cannot be analysed, next to ones that can ------------------------------------


@pytest.fixture(scope="module")
def awkward_weights() -> dict[str, object]:
    torch.manual_seed(3)
    nan = torch.randn(48, 24)
    nan[3, 4] = math.nan
    inf = torch.randn(48, 24)
    inf[0, 0] = -math.inf
    return {
        "first.weight": torch.randn(64, 32),
        "first.bias": torch.zeros(64),
        "nan.weight": nan,
        "inf.weight": inf,
        "zeros.weight": torch.zeros(32, 16),
        "row.weight": torch.randn(1, 50),
        "empty.weight": torch.zeros(0, 5),
        "fp16.weight": torch.randn(40, 20).half(),
        "bf16.weight": torch.randn(40, 20).bfloat16(),
        "int8.weight": torch.randint(-127, 128, (40, 20), dtype=torch.int8),
        "fp16_conv.weight": torch.randn(8, 4, 3, 3).half(),
        "index.weight": torch.randint(0, 5, (10, 10)),
        "mask.weight": torch.ones(10, 10, dtype=torch.bool),
        "step": 3,
        "last.weight": torch.randn(50, 30),
    }


def test_bad_layers_get_status_and_reason_and_the_rest_is_analysed(
    awkward_weights: dict[str, object],
) -> None:
    df = run(awkward_weights)  # never raises
    assert df["name"].tolist() == list(awkward_weights)
    table = df.set_index("name")
    expected = {
        "first.weight": ("ok", ""),
        "first.bias": ("skipped", "1-D tensor"),
        "nan.weight": ("failed", "NaN or infinite"),
        "inf.weight": ("failed", "NaN or infinite"),
        "zeros.weight": ("failed", "all eigenvalues are zero"),
        "row.weight": ("ok", "too few eigenvalues (1 < 10) for a power-law fit"),
        "empty.weight": ("failed", "empty"),
        "fp16.weight": ("ok", ""),
        "bf16.weight": ("ok", ""),
        "int8.weight": ("ok", ""),
        "fp16_conv.weight": ("ok", ""),
        "index.weight": ("skipped", "integer dtype int64"),
        "mask.weight": ("skipped", "bool"),
        "step": ("skipped", "not a tensor"),
        "last.weight": ("ok", ""),
    }
    for name, (status, reason) in expected.items():
        row = table.loc[name]
        assert row["status"] == status, (name, row["reason"])
        assert reason in row["reason"], (name, row["reason"])
        if status != "ok":
            assert row["reason"], name
    fitted = df[(df["status"] == "ok") & (df["num_evals"] >= MIN_EVALS)]
    assert np.isfinite(fitted[OK_FINITE].to_numpy(dtype=float)).all()
    assert not (df.loc[df["status"] != "ok", "warning"] == "over-trained").any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8])
def test_low_precision_weights_are_analysed_as_stored(dtype: torch.dtype) -> None:
    torch.manual_seed(4)
    if dtype is torch.int8:
        stored = torch.randint(-127, 128, (64, 32), dtype=torch.int8)
    else:
        stored = torch.randn(64, 32).to(dtype)
    low = run({"w.weight": stored})
    exact = run({"w.weight": stored.double()})  # the same values, widened exactly
    pd.testing.assert_frame_equal(low, exact, check_exact=False, rtol=1e-12)


def test_fp8_weights_are_analysed() -> None:
    """FP8 checkpoints (safetensors F8_E4M3 / F8_E5M2) hold floating-point weights.

    Regression (fixed in 5da013c): e4m3fn weights failed with ``NotImplementedError:
    "isfinite" not implemented for 'Float8_e4m3fn'`` (finiteness checked in the stored dtype).
    """
    torch.manual_seed(5)
    weight = torch.randn(64, 32)
    for dtype in (torch.float8_e5m2, torch.float8_e4m3fn):
        stored = weight.to(dtype)
        low = run({"w.weight": stored})
        assert low.loc[0, "status"] == "ok", (dtype, low.loc[0, "reason"])
        exact = run({"w.weight": stored.double()})
        pd.testing.assert_frame_equal(low, exact, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_layers_keep_their_metrics(rank: int) -> None:
    """A rank-deficient matrix (a merged LoRA update, a pruned layer) is still analysed.

    Regression (fixed in 5da013c): the Marchenko-Pastur fit raised ``ValueError:
    marchenko_pastur_edges: sigma must be > 0, got 0.0`` when every nonzero eigenvalue is a
    spike (rank <= 3 of 32 here), and the whole row became ``failed`` with every metric NaN.
    """
    gen = torch.Generator().manual_seed(rank)
    weight = torch.randn(64, rank, generator=gen) @ torch.randn(rank, 32, generator=gen)
    row = run({"lora.weight": weight}).iloc[0]
    assert row["status"] != "failed" or row["reason"].startswith("power-law fit:"), row["reason"]
    assert row["num_evals"] == 32
    assert row["matrix_rank"] == rank and row["rank_loss"] == 32 - rank
    lam = eigenvalues_of(weight)
    assert row["log_norm"] == pytest.approx(math.log10(lam.sum()), rel=1e-9)
    assert row["log_spectral_norm"] == pytest.approx(math.log10(lam.max()), rel=1e-9)
    if rank == 1:  # one nonzero eigenvalue: only the power-law fit fails
        assert row["status"] == "failed"
        assert row["reason"].startswith("power-law fit:"), row["reason"]
    else:
        assert row["status"] == "ok", row["reason"]
        assert math.isfinite(row["alpha"])


# --- rand_distance ----------------------------------------------------------------------------


def test_rand_distance_in_unit_interval_and_reproducible(net: Net) -> None:
    first = run(net, rand_distance=True, seed=7)
    again = run(net, rand_distance=True, seed=7)
    other = run(net, rand_distance=True, seed=8)
    ok = first["status"] == "ok"
    values = first.loc[ok, "rand_distance"]
    assert values.between(0.0, 1.0).all() and values.notna().all()
    assert first.loc[~ok, "rand_distance"].isna().all()
    pd.testing.assert_series_equal(first["rand_distance"], again["rand_distance"])
    assert not np.array_equal(
        first.loc[ok, "rand_distance"].to_numpy(), other.loc[ok, "rand_distance"].to_numpy()
    )
    # The other columns do not depend on rand_distance or the seed.
    rest = [c for c in COLUMNS if c != "rand_distance"]
    pd.testing.assert_frame_equal(first[rest], run(net)[rest])


def test_rand_distance_separates_structure_from_noise() -> None:
    """Source 000's random distance: ~0 for an iid matrix (permuting its entries changes
    nothing in distribution), large for a matrix with a strong low-rank signal.

    Regression (fixed in 5da013c): with 100 linear bins on [0, lambda_max] an iid matrix
    scored about 0.24 and a spiked one 0.21 (one spike squeezes both bulks into bin 0).
    """
    gen = torch.Generator().manual_seed(9)
    n, m = 512, 256
    iid = torch.randn(n, m, generator=gen)
    signal = torch.randn(n, 1, generator=gen) @ torch.randn(1, m, generator=gen)
    spiked = 0.5 * signal + 0.2 * torch.randn(n, m, generator=gen)
    df = run({"iid.weight": iid, "spiked.weight": spiked}, rand_distance=True).set_index("name")
    assert df.loc["iid.weight", "rand_distance"] < 0.15
    assert df.loc["spiked.weight", "rand_distance"] > 2 * df.loc["iid.weight", "rand_distance"]


# --- summary ----------------------------------------------------------------------------------


def table_from_rows(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = dict.fromkeys(COLUMNS, math.nan) | {"warning": "", "reason": ""}
    return pd.DataFrame([base | row for row in rows], columns=list(COLUMNS))


def test_summary_by_hand() -> None:
    nan = math.nan
    df = table_from_rows(
        [
            # alpha, alpha_weighted, log_norm, log_spectral_norm, stable_rank, log_alpha_norm,
            # mp_softrank
            dict(name="a", status="ok", alpha=3.0, alpha_weighted=1.5, log_norm=1.0,
                 log_spectral_norm=0.5, stable_rank=10.0, log_alpha_norm=2.0,
                 mp_softrank=0.5),
            dict(name="b", status="ok", alpha=7.0, alpha_weighted=3.5, log_norm=2.0,
                 log_spectral_norm=0.5, stable_rank=20.0, log_alpha_norm=nan,
                 mp_softrank=0.25, warning="under-trained"),
            dict(name="c", status="ok", alpha=1.5, alpha_weighted=-0.75, log_norm=3.0,
                 log_spectral_norm=-0.5, stable_rank=30.0, log_alpha_norm=4.0,
                 mp_softrank=0.75, warning="over-trained"),
            dict(name="d", status="failed", warning="empty", log_norm=-math.inf),
            # Numbers on a failed row must not count.
            dict(name="e", status="failed", alpha=100.0, log_norm=50.0, stable_rank=1e6),
            dict(name="f", status="skipped", reason="bias vector"),
            # Issue 9: a fit on 2 tail eigenvalues is shown but not averaged into alpha.
            dict(name="g", status="ok", alpha=19.5, alpha_weighted=9.0, num_pl_spikes=2,
                 log_norm=2.0, log_spectral_norm=0.5, stable_rank=20.0, log_alpha_norm=9.0,
                 mp_softrank=0.5),
        ]
    )  # fmt: skip
    out = summary(df)
    expected = {
        "alpha": 11.5 / 3,
        "alpha_weighted": 4.25 / 3,
        "log_norm": 2.0,
        "log_spectral_norm": 1.0 / 4,
        "stable_rank": 20.0,
        "log_alpha_norm": 3.0,  # NaN of row b left out
        "mp_softrank": 0.5,
        "num_layers": 7,
        "num_ok": 4,
        "num_failed": 2,
        "num_skipped": 1,
        "num_under_trained": 1,
        "num_over_trained": 1,
        "num_empty": 1,
    }
    assert out.keys() == expected.keys()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key
        if key.startswith("num_"):
            assert isinstance(out[key], int), key


def test_summary_of_a_real_table(net_table: pd.DataFrame) -> None:
    out = summary(net_table)
    ok = net_table[net_table["status"] == "ok"]
    assert out["alpha"] == pytest.approx(ok["alpha"].mean(), rel=1e-12)
    assert out["stable_rank"] == pytest.approx(ok["stable_rank"].mean(), rel=1e-12)
    assert out["num_layers"] == len(net_table)
    assert out["num_ok"] + out["num_failed"] + out["num_skipped"] == len(net_table)
    assert out["num_skipped"] == 9


def test_summary_edge_cases() -> None:
    only_skipped = table_from_rows([dict(name="b", status="skipped")])
    out = summary(only_skipped)
    assert math.isnan(out["alpha"]) and out["num_ok"] == 0 and out["num_skipped"] == 1
    with pytest.raises(ValueError, match="alpha"):
        summary(pd.DataFrame({"status": ["ok"], "warning": [""]}))


# --- sources: module, state dict, safetensors file, sharded Hugging Face folder ----------------


def save_sharded(state: dict[str, torch.Tensor], folder: Path, shards: int) -> None:
    folder.mkdir()
    names = list(state)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: state[name] for name in names[k::shards]}
        save_file(part, str(folder / shard))
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))


def test_every_source_gives_the_module_numbers(net: Net, tmp_path: Path) -> None:
    state = {name: t.detach().clone().contiguous() for name, t in net.state_dict().items()}
    single = tmp_path / "model.safetensors"
    save_file(state, str(single))
    folder = tmp_path / "hf"
    save_sharded(state, folder, shards=3)

    def analysed(df: pd.DataFrame) -> pd.DataFrame:
        ok = df[df["status"] == "ok"].set_index("name").sort_index()
        return ok.drop(columns=["reason"])

    reference = analysed(run(net, rand_distance=True))
    assert len(reference) == 9
    for source in (state, single, folder, str(folder / "model.safetensors.index.json")):
        table = run(source, rand_distance=True)
        assert not (table["status"] == "failed").any(), source
        # Same matrices, same kinds, bit-identical numbers (the seed of the permutation
        # depends on the row's position, so rand_distance is compared loosely).
        got = analysed(table)
        pd.testing.assert_frame_equal(
            got.drop(columns="rand_distance"),
            reference.drop(columns="rand_distance"),
            check_exact=True,
        )
        assert got["rand_distance"].between(0, 1).all()
