"""Tests of ``tailwise.tails.analyze``: the per-layer tail table on models, state dicts and
safetensors files; conv reshape, failing layers, options."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from tailwise import UsageError
from tailwise.models import MLP, SmallCNN
from tailwise.tails import analyze as analyze_module
from tailwise.tails import analyze_tails, hill_tail_index, layer_rows, mmo_alpha, sample_sas
from tailwise.tails.analyze import TAILS_COLUMNS
from tailwise.weights import iter_layers

ESTIMATES = ["alpha_mmo", "alpha_mmo_rows", "alpha_rownorm", "alpha_hill"]


def sas_tensor(alpha: float, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.as_tensor(sample_sas(alpha, shape, seed=seed, backend="torch")).float()


def test_small_cnn_rows_columns_and_kinds() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    df = analyze_tails(model)
    assert tuple(df.columns) == TAILS_COLUMNS
    assert list(df["name"]) == [record.name for record in iter_layers(model)]
    by_name = df.set_index("name")
    conv = by_name.loc["features.1.conv.weight"]
    assert conv["kind"] == "conv2d" and conv["shape"] == (64, 32, 3, 3)
    assert conv["num_params"] == 64 * 32 * 9
    ok = df[df["status"] == "ok"]
    assert list(ok["name"]) == ["features.0.conv.weight", "features.1.conv.weight", "head.weight"]
    assert np.isfinite(ok[ESTIMATES].to_numpy()).all()
    assert (ok["reason"] == "").all()
    skipped = df[df["status"] == "skipped"]
    assert set(skipped["kind"]) == {"norm", "bias"}
    assert skipped[ESTIMATES].isna().all().all() and (skipped["reason"] != "").all()
    assert df["num_params"].dtype == np.int64
    assert all(df[column].dtype == np.float64 for column in ESTIMATES)
    # Kaiming-uniform initial weights have bounded, lighter-than-Gaussian tails.
    assert (ok["alpha_mmo"] > 1.9).all()


def test_conv_rows_are_kernels_and_linear_rows_are_out_rows() -> None:
    conv = torch.nn.Conv2d(24, 32, 3)
    linear = torch.nn.Linear(100, 60)
    with torch.no_grad():
        conv.weight.copy_(sas_tensor(1.4, (32, 24, 3, 3), seed=0))
        linear.weight.copy_(sas_tensor(1.4, (60, 100), seed=1))
    model = torch.nn.Sequential(conv, linear)
    df = analyze_tails(model, permutations=0).set_index("name")
    kernels = conv.weight.detach().reshape(32 * 24, 9)
    assert layer_rows(conv.weight).shape == (32 * 24, 9)
    assert df.loc["0.weight", "alpha_mmo_rows"] == mmo_alpha(kernels, multivariate=True)
    assert df.loc["0.weight", "alpha_mmo_rows"] != mmo_alpha(
        conv.weight.detach().reshape(32, -1), multivariate=True
    )
    assert df.loc["1.weight", "alpha_mmo_rows"] == mmo_alpha(linear.weight, multivariate=True)
    assert df.loc["0.weight", "alpha_mmo"] == mmo_alpha(conv.weight)
    assert df.loc["1.weight", "alpha_hill"] == hill_tail_index(linear.weight)
    rows = linear.weight.detach().double().numpy()
    norms = np.linalg.norm(rows - np.median(rows, axis=0), axis=1)
    assert df.loc["1.weight", "alpha_rownorm"] == hill_tail_index(norms, center=False)


def test_heavy_tailed_mlp_estimates() -> None:
    model = MLP(400, [300], 10)
    with torch.no_grad():
        model.layers[0].weight.copy_(sas_tensor(1.3, (300, 400), seed=2))
        model.layers[1].weight.copy_(sas_tensor(1.7, (10, 300), seed=3))
    df = analyze_tails(model).set_index("name")
    assert df.loc["layers.0.weight", "alpha_mmo"] == pytest.approx(1.3, abs=0.05)
    assert df.loc["layers.0.weight", "alpha_mmo_rows"] == pytest.approx(1.3, abs=0.15)
    assert df.loc["layers.1.weight", "alpha_mmo"] == pytest.approx(1.7, abs=0.1)
    assert df.loc["layers.0.weight", "alpha_hill"] == pytest.approx(1.3, abs=0.3)
    capped = analyze_tails(model, cap=2.0)
    assert (capped[["alpha_mmo", "alpha_mmo_rows"]].dropna() <= 2.0).all().all()


def test_safetensors_file_with_failing_layers(tmp_path: Path) -> None:
    tensors = {
        "conv.weight": sas_tensor(1.5, (64, 32, 3, 3), seed=4),
        "conv.bias": torch.zeros(64),
        "fc.weight": sas_tensor(1.2, (128, 256), seed=5),
        "const.weight": torch.full((32, 32), 0.25),
        "nan.weight": torch.randn(16, 16).index_put_((torch.tensor([3]),), torch.tensor(math.nan)),
        "narrow.weight": torch.randn(2, 50),
        "head.weight": torch.randn(10, 128),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    df = analyze_tails(path)
    assert sorted(df["name"]) == sorted(tensors)  # in the file's data order
    status = dict(zip(df["name"], df["status"], strict=True))
    assert status == {
        "conv.weight": "ok",
        "conv.bias": "skipped",
        "fc.weight": "ok",
        "const.weight": "failed",
        "nan.weight": "failed",
        "narrow.weight": "ok",
        "head.weight": "ok",
    }
    rows = df.set_index("name")
    assert rows.loc["conv.weight", "alpha_mmo"] == pytest.approx(1.5, abs=0.05)
    assert rows.loc["conv.weight", "shape"] == (64, 32, 3, 3)
    assert rows.loc["fc.weight", "alpha_mmo"] == pytest.approx(1.2, abs=0.05)
    assert rows.loc["fc.weight", "alpha_mmo_rows"] == pytest.approx(1.2, abs=0.15)
    assert "at least half of the 1024 values equal the centre" in rows.loc["const.weight", "reason"]
    assert rows.loc["nan.weight", "reason"] == "16 of 256 weights are NaN or inf"
    assert rows.loc[["const.weight", "nan.weight"], ESTIMATES].isna().all().all()
    # Two rows: the row estimates are NaN with a reason, the entry estimates still there.
    narrow = rows.loc["narrow.weight"]
    assert math.isnan(narrow["alpha_mmo_rows"]) and math.isnan(narrow["alpha_rownorm"])
    assert "alpha_mmo_rows: need at least 4 rows, got 2" in narrow["reason"]
    assert math.isfinite(narrow["alpha_mmo"]) and math.isfinite(narrow["alpha_hill"])
    # The streamed file and the same tensors in memory give the same table.
    in_memory = analyze_tails(tensors)
    pd.testing.assert_frame_equal(
        df.sort_values("name", ignore_index=True), in_memory.sort_values("name", ignore_index=True)
    )
    assert df.attrs["source"] == str(path)
    assert df.attrs["options"]["permutations"] == 5


def test_include_exclude_and_reproducibility() -> None:
    torch.manual_seed(1)
    model = SmallCNN()
    only_conv = analyze_tails(model, include=r"conv", exclude=r"features\.0")
    assert list(only_conv["name"]) == ["features.1.conv.weight"]
    first = analyze_tails(model)
    pd.testing.assert_frame_equal(first, analyze_tails(model))
    other_seed = analyze_tails(model, seed=1)
    ok = first["status"] == "ok"
    assert not np.array_equal(first.loc[ok, "alpha_mmo"], other_seed.loc[ok, "alpha_mmo"])
    no_centring = analyze_tails(model, center=False)
    assert no_centring.attrs["options"]["center"] is False


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    df = analyze_tails(torch.nn.Linear(32, 16), progress=True)
    assert list(df["status"]) == ["ok", "skipped"]


def test_option_errors() -> None:
    model = torch.nn.Linear(8, 8)
    with pytest.raises(ValueError, match="cap must be a positive number"):
        analyze_tails(model, cap=-1.0)
    with pytest.raises(ValueError, match="permutations must be an integer >= 0"):
        analyze_tails(model, permutations=-2)
    with pytest.raises(ValueError, match="seed must be an integer"):
        analyze_tails(model, seed=0.5)  # type: ignore[arg-type]


def test_include_that_selects_nothing_is_a_usage_error() -> None:
    """Issue 9: an include matching nothing gave an empty table."""
    with pytest.raises(UsageError, match=r"include 'conv' selects no tensor.*'layers\.0\.weight'"):
        analyze_tails(MLP(8, [4], 2), include="conv", progress=False)


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_invalid_patterns_and_options_are_usage_errors(option: str) -> None:
    model = torch.nn.Linear(8, 8)
    with pytest.raises(UsageError, match=f"^{option}: invalid regular expression"):
        analyze_tails(model, **{option: "("})
    with pytest.raises(UsageError, match="cap must be a positive number"):
        analyze_tails(model, cap=0)


def test_layer_column_names_the_owning_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    model.attn = torch.nn.MultiheadAttention(8, 2)
    model.rnn = torch.nn.LSTM(8, 4)
    model.weight = torch.nn.Parameter(torch.randn(4, 8))
    df = analyze_tails(model, permutations=0, progress=False)
    assert list(df.columns[:3]) == ["name", "layer", "kind"]
    layers = dict(zip(df["name"], df["layer"], strict=True))
    assert layers["encoder.0.weight"] == "encoder.0"
    assert layers["encoder.1.bias"] == "encoder.1"
    assert layers["attn.in_proj_weight[q]"] == "attn"
    assert layers["attn.out_proj.weight"] == "attn.out_proj"
    assert layers["rnn.weight_ih_l0"] == "rnn"
    assert layers["weight"] == ""
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    from_file = analyze_tails(path, permutations=0, progress=False)
    assert dict(zip(from_file["name"], from_file["layer"], strict=True)) == layers


def test_layer_rows_match_analyze() -> None:
    from tailwise import analyze

    model = SmallCNN()
    tails = analyze_tails(model, permutations=0, progress=False)
    spectral = analyze(model, progress=False)
    assert list(tails["layer"]) == list(spectral["layer"])


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(analyze_module, raise_on_error=False)
    assert tried > 0
    assert failures == 0
