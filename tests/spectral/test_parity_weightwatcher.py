"""Acceptance test: ``analyze`` defaults agree with WeightWatcher 0.7.7 defaults.

Random and briefly trained (SGD on sklearn digits) Linear and Conv2d networks are analysed by
``weightwatcher.WeightWatcher(model=m).analyze()`` and by ``analyze(m, progress=False)``.
Rows are matched by layer order (WeightWatcher's ``longname`` is the module name,
tailwise's ``name`` the parameter name ``<module>.weight``).

Differences that are expected, and how this file treats them:

* WeightWatcher fits layers with fewer than ``WW_powerlaw.SMALL_N_CUTOFF`` (20) nonzero
  eigenvalues with a different, bias-corrected "small N" fitter (alpha = 1 + (n - 1) / sum ln,
  xmin chosen by D - 0.868 / sqrt(n), tails of at least 8 values). tailwise always uses the
  Clauset-Shalizi-Newman fit. For those layers the fit columns (alpha, xmin, D,
  alpha_weighted) are left out of the parity set, and
  ``test_small_n_rows_differ_only_by_weightwatchers_small_n_fitter`` shows that the
  difference is exactly that fitter.
* WeightWatcher skips layers with fewer than 8 eigenvalues (``min_evals``), N > 50000
  (``max_N``) or M * rf > 15000 (``max_evals``); tailwise analyses them
  (``test_tailwise_analyses_what_weightwatcher_skips``). The parity networks have none.
* tailwise fits no power law to an ESD of fewer than ``MIN_EVALS`` (10) eigenvalues (alpha
  and the fit columns NaN, no label), and analyses a conv whose slices have fewer than
  ``MIN_SLICE_M`` (3) columns flattened (``test_degenerate_conv_slices_are_flattened``:
  the first ``Conv2d(1, out, 3)`` of the cnn and mixed nets); those rows are left out of the
  columns they change.
* WeightWatcher's entropy adds 1e-10 to every p_i and to the rank; with at most a few hundred
  eigenvalues that changes the entropy by ~1e-8 relative, far inside the 1e-3 tolerance.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tailwise._threads import single_threaded
from tailwise.data import digits_loaders
from tailwise.spectral.analyze import MIN_EVALS, analyze
from tailwise.train import fit

PARITY_COLUMNS = (
    "alpha",
    "xmin",
    "D",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "alpha_weighted",
    "entropy",
)
# Columns that depend on WeightWatcher's choice of power-law fitter.
FIT_COLUMNS = frozenset({"alpha", "xmin", "D", "alpha_weighted"})
RTOL = 1e-3
# Acceptance criterion of the issue: per column, this share of the compared layers agrees.
MIN_AGREEING_SHARE = 0.95
# WeightWatcher constants (weightwatcher/constants.py, WW_powerlaw.py, version 0.7.7).
WW_SMALL_N_CUTOFF = 20
WW_EVALS_THRESH = 1e-5
WW_MIN_EVALS = 8
WW_MAX_EVALS = 15000
WW_MAX_N = 50000


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """WeightWatcher prints (even "SMALL N PL FIT") and logs at INFO; silence all of it."""
    logger = logging.getLogger("weightwatcher")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


with quiet():
    ww = pytest.importorskip("weightwatcher")
    from weightwatcher import WW_powerlaw


def ww_analyze(model: nn.Module) -> pd.DataFrame:
    with quiet():
        return ww.WeightWatcher(model=model).analyze()


# ---------------------------------------------------------------------------------------------
# Networks: tall / wide / square Linear; Conv2d with in < out and in > out, kernels 3 and 1;
# a mixed net (non-square kernels (3, 1) / (1, 3), a square conv, pooling, Linear head).


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 300),  # tall weight (300 x 64): N = out
        nn.ReLU(),
        nn.Linear(300, 300),  # square
        nn.ReLU(),
        nn.Linear(300, 48),  # wide weight (48 x 300): N = in
        nn.ReLU(),
        nn.Linear(48, 10),  # 10 eigenvalues: WeightWatcher's small-N fitter
    )


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),  # in < out, k 3: M = 1, 9 pooled eigenvalues (small N)
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),  # in < out, k 3: 16 * 9 = 144 eigenvalues
        nn.ReLU(),
        nn.Conv2d(32, 64, 1),  # in < out, k 1: 32 eigenvalues
        nn.ReLU(),
        nn.Conv2d(64, 40, 1),  # in > out, k 1: 40 eigenvalues
        nn.ReLU(),
        nn.Conv2d(40, 24, 3, padding=1),  # in > out, k 3: 24 * 9 = 216 eigenvalues
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(24 * 64, 10),  # wide, 10 eigenvalues (small N)
    )


def mixed() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 48, (3, 1), padding=(1, 0)),  # rf = 3
        nn.ReLU(),
        nn.Conv2d(48, 48, (1, 3), padding=(0, 1)),  # square slices, rf = 3
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(48 * 16, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


NETWORKS = {"mlp": (mlp, True), "cnn": (cnn, False), "mixed": (mixed, False)}


@dataclass
class Case:
    label: str
    ww: pd.DataFrame  # WeightWatcher's table
    tw: pd.DataFrame  # tailwise's analysed rows, in WeightWatcher's row order
    esd: dict[str, np.ndarray]  # tailwise's eigenvalues by row name


def build_case(label: str, model: nn.Module) -> Case:
    ww_df = ww_analyze(model).reset_index(drop=True)
    tw_all = analyze(model, progress=False, keep_evals=True)
    analysed = tw_all[tw_all["kind"].isin(["linear", "conv2d"])].reset_index(drop=True)
    # Every Linear/Conv2d weight is analysed by tailwise, in module order ...
    assert (analysed["status"] == "ok").all(), analysed[["name", "status", "reason"]]
    # ... and by WeightWatcher (no layer in these nets meets a WeightWatcher skip rule), in
    # the same order: row i of one table is row i of the other.
    expected = [name.removesuffix(".weight") for name in analysed["name"]]
    assert ww_df["longname"].tolist() == expected, label
    assert ww_df["num_evals"].tolist() == analysed["num_evals"].tolist(), label
    esd = tw_all.attrs["esd"]
    # Arrays in attrs make pd.concat fail (pandas compares attrs with ==): keep them apart.
    analysed.attrs = {}
    return Case(label, ww_df, analysed, esd)


def train_briefly(model: nn.Module, flatten: bool) -> None:
    train_loader, _ = digits_loaders(32, seed=0, flatten=flatten)
    with single_threaded():  # ~10x faster for small batches on a shared 2-core machine
        history = fit(model, train_loader, epochs=3, lr=0.05, progress=False, seed=0)
    assert history.train_loss[-1] < history.train_loss[0]  # it did learn something


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    out = []
    for name, (make, flatten) in NETWORKS.items():
        torch.manual_seed(1234)
        model = make()
        out.append(build_case(f"{name}/random", model))
        train_briefly(model, flatten)
        out.append(build_case(f"{name}/trained", model))
    return out


def nonzero_evals(case: Case, row: int) -> np.ndarray:
    evals = case.esd[case.tw.loc[row, "name"]]
    return evals[evals > WW_EVALS_THRESH]


def is_degenerate(case: Case, row: int) -> bool:
    """A conv with slices too thin for a spectrum: tailwise flattens it, WeightWatcher pools."""
    return "flattened" in case.tw.loc[row, "reason"]


def is_small_n(case: Case, row: int) -> bool:
    """WeightWatcher uses its small-N fitter on this layer."""
    return nonzero_evals(case, row).size < WW_SMALL_N_CUTOFF


# ---------------------------------------------------------------------------------------------


def test_networks_cover_the_layer_shapes(cases: list[Case]) -> None:
    modules = [m for make, _ in NETWORKS.values() for m in make().modules()]
    linear = {(m.out_features, m.in_features) for m in modules if isinstance(m, nn.Linear)}
    assert any(o > i for o, i in linear)  # tall weight
    assert any(o < i for o, i in linear)  # wide weight
    assert any(o == i for o, i in linear)  # square weight
    conv = [m for m in modules if isinstance(m, nn.Conv2d)]
    for in_less_than_out in (True, False):
        for kernel in ((3, 3), (1, 1)):
            assert any(
                (c.in_channels < c.out_channels) == in_less_than_out and c.kernel_size == kernel
                for c in conv
            ), (in_less_than_out, kernel)
    assert any(c.kernel_size in ((3, 1), (1, 3)) for c in conv)
    assert len(cases) == 2 * len(NETWORKS)
    # Enough layers take WeightWatcher's standard fitter for the fit columns to mean much.
    standard = sum(not is_small_n(c, i) for c in cases for i in range(len(c.tw)))
    assert standard >= 20


@pytest.mark.parametrize("column", PARITY_COLUMNS)
def test_columns_agree_with_weightwatcher(cases: list[Case], column: str) -> None:
    compared, disagreeing = 0, []
    for case in cases:
        for i in range(len(case.tw)):
            if column in FIT_COLUMNS and is_small_n(case, i):
                continue  # different fitter in WeightWatcher: see the next test
            if is_degenerate(case, i):
                continue  # analysed flattened: test_degenerate_conv_slices_are_flattened
            ours, theirs = float(case.tw.loc[i, column]), float(case.ww.loc[i, column])
            compared += 1
            # atol only guards log10 values that happen to lie within 1e-9 of zero.
            if not np.isclose(ours, theirs, rtol=RTOL, atol=1e-9):
                disagreeing.append((case.label, case.tw.loc[i, "name"], ours, theirs))
    share = 1 - len(disagreeing) / compared
    assert share >= MIN_AGREEING_SHARE, f"{column}: {share:.1%} agree; {disagreeing}"
    # What is actually observed on these nets: every compared layer agrees.
    assert disagreeing == [], disagreeing


def test_small_n_rows_differ_only_by_weightwatchers_small_n_fitter(
    cases: list[Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = [
        (c, i)
        for c in cases
        for i in range(len(c.tw))
        if is_small_n(c, i) and not is_degenerate(c, i) and c.tw.loc[i, "num_evals"] >= MIN_EVALS
    ]
    assert len(small) >= 4  # 10- and 12-eigenvalue layers in every case but mixed
    differs = 0
    for case, i in small:
        evals = nonzero_evals(case, i)
        ww_row, tw_row = case.ww.loc[i], case.tw.loc[i]
        # 1. WeightWatcher's numbers are its small-N fitter applied to the same eigenvalues.
        with quiet():
            small_fit = WW_powerlaw.WWFit(evals)
        assert small_fit.alpha == pytest.approx(ww_row["alpha"], rel=RTOL)
        assert small_fit.xmin == pytest.approx(ww_row["xmin"], rel=RTOL)
        assert pytest.approx(ww_row["D"], rel=RTOL) == small_fit.D
        # 2. With that fitter switched off, WeightWatcher's standard fit is tailwise's.
        with monkeypatch.context() as patch:
            patch.setattr(WW_powerlaw, "SMALL_N_CUTOFF", 0)
            with quiet():
                standard_fit = WW_powerlaw.WWFit(evals)
        assert standard_fit.alpha == pytest.approx(tw_row["alpha"], rel=RTOL)
        assert standard_fit.xmin == pytest.approx(tw_row["xmin"], rel=RTOL)
        assert pytest.approx(tw_row["D"], rel=RTOL) == standard_fit.D
        assert tw_row["alpha_weighted"] == pytest.approx(
            standard_fit.alpha * tw_row["log_spectral_norm"], rel=RTOL
        )
        differs += not np.isclose(tw_row["alpha"], ww_row["alpha"], rtol=RTOL)
    assert differs > 0  # the exclusion is needed, not just cautious


def test_degenerate_conv_slices_are_flattened(cases: list[Case]) -> None:
    """Issue 9: Conv2d(1, out, 3) has out x 1 slices, one eigenvalue each; WeightWatcher pools
    their squared norms into an "ESD". tailwise analyses the out x 9 flattened kernel instead,
    which is exactly ``conv="flatten"``; with 9 < MIN_EVALS eigenvalues it gets no alpha."""
    degenerate = [(c, i) for c in cases for i in range(len(c.tw)) if is_degenerate(c, i)]
    assert {c.tw.loc[i, "name"] for c, i in degenerate} == {"0.weight"}
    assert len(degenerate) == 4  # cnn and mixed, random and trained
    for case, i in degenerate:
        row = case.tw.loc[i]
        assert row["N"] in (16, 32) and (row["M"], row["rf"]) == (9, 1)  # (out, in * 3 * 3)
        assert math.isnan(row["alpha"]) and row["warning"] == ""
        assert case.ww.loc[i, "M"] == 1  # WeightWatcher: 1-column slices, pooled


def test_tailwise_analyses_what_weightwatcher_skips() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "reference": nn.Linear(64, 64),  # analysed by both
            "vocab": nn.Linear(32, 60000),  # weight 60000 x 32: N > max_N = 50000
            "embed": nn.Embedding(60000, 32),  # likewise, as an nn.Embedding
            # M * rf = 16 * 31 * 31 = 15376 > max_evals = 15000 (a small one: fast to analyse)
            "wide_conv": nn.Conv2d(16, 16, 31),
            "tiny": nn.Linear(5, 7),  # 5 eigenvalues < min_evals = 8
        }
    )
    ww_df = ww_analyze(model)
    assert ww_df["longname"].tolist() == ["reference"]

    df = analyze(model, progress=False).set_index("name")
    for name, n, m, rf in [
        ("vocab.weight", 60000, 32, 1),
        ("embed.weight", 60000, 32, 1),
        ("wide_conv.weight", 16, 16, 961),
        ("tiny.weight", 7, 5, 1),
    ]:
        row = df.loc[name]
        assert row["status"] == "ok", (name, row["reason"])
        assert (row["N"], row["M"], row["rf"], row["num_evals"]) == (n, m, rf, m * rf)
        # Fewer than MIN_EVALS eigenvalues: everything but the power-law fit.
        fitted = [c for c in PARITY_COLUMNS if m * rf >= MIN_EVALS or c not in FIT_COLUMNS]
        assert np.isfinite(row[fitted].astype(float)).all(), name
    assert math.isnan(df.loc["tiny.weight", "alpha"])
    # Each meets a WeightWatcher skip rule (and the reference layer meets none).
    assert df.loc["vocab.weight", "N"] > WW_MAX_N
    assert df.loc["embed.weight", "N"] > WW_MAX_N
    assert df.loc["wide_conv.weight", "num_evals"] > WW_MAX_EVALS
    assert df.loc["tiny.weight", "num_evals"] < WW_MIN_EVALS
    reference = df.loc["reference.weight"]
    for column in PARITY_COLUMNS:
        assert reference[column] == pytest.approx(ww_df.loc[0, column], rel=RTOL)
