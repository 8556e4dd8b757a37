"""The catalogue: every experiment's analysis on synthetic trial tables (each verdict from
its interval), every trial function on a tiny config, every experiment end to end on a tiny
grid, and (slow) every quick grid as shipped."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tiny_experiments import Register

from tailwise.experiments import EXPERIMENTS, Analysis, report, run
from tailwise.experiments.s000 import analyze_esd, esd_trial, mp_ks_distance
from tailwise.experiments.s002 import (
    analyze_nonoverlap,
    analyze_penalties,
    analyze_serw,
    nonoverlap_trial,
    penalties_trial,
    serw_trial,
)
from tailwise.experiments.s003 import (
    analyze_prunability,
    analyze_sgd_tails,
    prunability_trial,
    sgd_tail_trial,
)
from tailwise.experiments.s004 import (
    analyze_metric_xor,
    analyze_power,
    metric_xor_trial,
    power_trial,
)


def _checked(analysis: Analysis) -> Analysis:
    """The analysis draws a figure and has a non-empty table and statement."""
    figure = analysis.figure()
    assert figure.axes, "the figure is empty"
    assert len(analysis.table) and analysis.statement and analysis.source_numbers
    return analysis


def _seeds(values: list[float]) -> list[tuple[int, float]]:
    return list(enumerate(values))


# --- verdicts on synthetic trial tables ------------------------------------------------------


def _serw_trials(ratios: list[float]) -> pd.DataFrame:
    rows = []
    for model in ("I", "II"):
        for seed, ratio in _seeds(ratios):
            rows.append({"d": 1, "model": model, "delta": 0.1, "seed": seed,
                         "v_theory": 0.6, "v_sim": 0.6 * ratio, "ratio": ratio})  # fmt: skip
    return pd.DataFrame(rows)


def test_serw_verdicts() -> None:
    assert _checked(analyze_serw(_serw_trials([0.99, 1.0, 1.01, 1.0]))).verdict == "reproduced"
    assert analyze_serw(_serw_trials([1.2, 1.21, 1.19, 1.2])).verdict == "not reproduced"
    assert analyze_serw(_serw_trials([0.9, 1.1, 1.0, 0.95])).verdict == "inconclusive"


def _nonoverlap_trials(algorithm: str, failing: int = 0, met: int = 1) -> pd.DataFrame:
    rows = []
    for penalty in ("l1", "l0"):
        for seed in range(5):
            held = int(not (penalty == "l1" and seed < failing))
            rows.append({"algorithm": algorithm, "penalty": penalty, "seed": seed,
                         "conditions_met": met, "converged": 1, "lagrangian_monotone": held,
                         "lagrangian_max_rise": 0.0 if held else 1e-3, "angle_bounded": 1,
                         "limit_angle_below_delta": 1, "distance_bound_held": 1,
                         "coarse_lagrangian_monotone": 1, "support_kept": 1,
                         "sparsity_u": 0.5})  # fmt: skip
    return pd.DataFrame(rows)


def test_nonoverlap_verdicts() -> None:
    assert _checked(analyze_nonoverlap(_nonoverlap_trials("rvsm"))).verdict == "reproduced"
    failed = _checked(analyze_nonoverlap(_nonoverlap_trials("rvscgd", failing=2)))
    assert failed.verdict == "not reproduced"
    assert "8 of 10" in failed.statement and "failed in 2" in failed.statement
    untested = analyze_nonoverlap(_nonoverlap_trials("rvsm", met=0))
    assert untested.verdict == "inconclusive" and "nothing was tested" in untested.statement


def _penalty_trials(sparsity: dict[str, list[float]], accuracy: dict[str, list[float]]):
    rows = []
    for penalty in ("none", "l0", "tl1", "l1"):
        for seed in range(3):
            rows.append({"penalty": penalty, "seed": seed,
                         "sparsity": sparsity.get(penalty, [0.0] * 3)[seed],
                         "accuracy": accuracy.get(penalty, [0.99] * 3)[seed]})  # fmt: skip
    return pd.DataFrame(rows)


def test_penalties_verdicts() -> None:
    sparse = {"l0": [0.9, 0.92, 0.91], "tl1": [0.6, 0.55, 0.62], "l1": [0.3, 0.28, 0.33]}
    accurate = {"l0": [0.94, 0.95, 0.93], "tl1": [0.98, 0.99, 0.98], "l1": [0.99, 0.99, 0.985]}
    assert _checked(analyze_penalties(_penalty_trials(sparse, accurate))).verdict == "reproduced"
    reversed_ = {"l0": sparse["l1"], "tl1": sparse["tl1"], "l1": sparse["l0"]}
    assert analyze_penalties(_penalty_trials(reversed_, accurate)).verdict == "not reproduced"
    noisy = {"l0": [0.99, 0.90, 0.97], "l1": [0.93, 0.99, 0.95], "tl1": [0.98] * 3}
    assert analyze_penalties(_penalty_trials(sparse, noisy)).verdict == "inconclusive"


def _esd_trials(alpha_after: list[float], ks: float = 0.02) -> pd.DataFrame:
    return pd.DataFrame(
        [{"seed": s, "alpha_init": 8.0 + s, "alpha_trained": a, "ks_init_max": ks + 0.001 * s,
          "spikes_init": 0, "spikes_trained": 20, "test_accuracy": 0.97}
         for s, a in _seeds(alpha_after)]
    )  # fmt: skip


def test_esd_verdicts() -> None:
    assert _checked(analyze_esd(_esd_trials([1.7, 1.8, 1.75]))).verdict == "reproduced"
    assert analyze_esd(_esd_trials([12.0, 13.0, 14.0])).verdict == "not reproduced"
    assert analyze_esd(_esd_trials([1.7, 1.8, 1.75], ks=0.3)).verdict == "not reproduced"
    assert analyze_esd(_esd_trials([2.0, 30.0, 1.0])).verdict == "inconclusive"


def _sgd_trials(stationary_heavy: bool, falling: bool = True) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        for b in (5, 20):
            for eta in (0.02, 0.1, 0.2):
                ratio = eta / b
                alpha = 2.2 - 10 * ratio if falling else 1.8 + 10 * ratio
                heavy = alpha < 2
                rows.append({"seed": seed, "b": b, "eta": eta, "ratio": ratio, "alpha": alpha,
                             "alpha_se": 0.01, "alpha_theory": math.inf, "lyapunov": -0.1,
                             "growth_rate": 0.0,
                             "diverged": int(heavy and not stationary_heavy)})  # fmt: skip
    return pd.DataFrame(rows)


def test_sgd_tail_verdicts() -> None:
    assert _checked(analyze_sgd_tails(_sgd_trials(True))).verdict == "reproduced"
    diverging = analyze_sgd_tails(_sgd_trials(False))
    assert diverging.verdict == "not reproduced" and "diverged" in diverging.statement
    assert analyze_sgd_tails(_sgd_trials(True, falling=False)).verdict == "not reproduced"


def _prunability_trials(matrix_gap: float, noise: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for kind, slope in (("iid", 0.3), ("elliptic_columns", 0.1), ("elliptic_matrix", 0.0)):
            for alpha in (1.2, 1.5, 1.8):
                keep = 0.73 - slope * (2 - alpha) - (matrix_gap if kind == "elliptic_matrix" else 0)
                keep += noise * rng.standard_normal()
                rows.append({"seed": seed, "kind": kind, "alpha": alpha, "keep_ratio": keep,
                             "gaussian_keep_ratio": 0.73, "advantage": 0.73 - keep})  # fmt: skip
    return pd.DataFrame(rows)


def test_prunability_verdicts() -> None:
    assert _checked(analyze_prunability(_prunability_trials(0.0))).verdict == "reproduced"
    assert analyze_prunability(_prunability_trials(0.2)).verdict == "not reproduced"
    assert analyze_prunability(_prunability_trials(0.0, noise=0.05)).verdict == "inconclusive"


def _power_trials(distances: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"seed": s, "parameters": 705, "top_eigenvalue": 1.0, "distance": d,
          "relative_distance": d, "max_relative_error": d, "iterations": 30, "converged": 1}
         for s, d in _seeds(distances)]
    )  # fmt: skip


def test_power_verdicts() -> None:
    assert _checked(analyze_power(_power_trials([1e-7, 2e-7, 5e-7]))).verdict == "reproduced"
    assert analyze_power(_power_trials([1e-2, 2e-2, 3e-2])).verdict == "not reproduced"
    assert analyze_power(_power_trials([1e-7, 3e-4, 1e-7])).verdict == "inconclusive"


def _xor_trials(metric: list[float], l2: list[float]) -> pd.DataFrame:
    rows = []
    for rule, accuracies in (("sgd", [1.0] * len(metric)), ("metric", metric), ("l2", l2)):
        for seed, accuracy in _seeds(accuracies):
            rows.append({"rule": rule, "seed": seed, "train_accuracy": accuracy,
                         "train_loss": 1 - accuracy, "parameter_norm": 20.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_metric_xor_verdicts() -> None:
    short = [0.75, 0.75, 1.0, 0.75, 0.75, 0.75]
    assert _checked(analyze_metric_xor(_xor_trials(short, [1.0] * 6))).verdict == "reproduced"
    assert analyze_metric_xor(_xor_trials([1.0] * 6, [1.0] * 6)).verdict == "not reproduced"
    once = [1.0, 1.0, 0.75, 1.0, 1.0, 1.0]
    assert analyze_metric_xor(_xor_trials(once, [1.0] * 6)).verdict == "inconclusive"


# --- the trial functions on tiny configs -----------------------------------------------------

TINY: dict[str, list[dict[str, Any]]] = {
    "000-esd-mp-to-heavy-tail": [{"hidden": [64, 64], "epochs": 1, "batch_size": 64, "lr": 0.1}],
    "002-serw-diffusion": [
        {"d": 1, "model": "I", "delta": 0.3, "walkers": 300, "n_steps": 200},
        {"d": 2, "model": "II", "delta": 0.3, "walkers": 300, "n_steps": 200},
    ],
    "002-rvsm-nonoverlap": [
        {"algorithm": "rvsm", "penalty": "l1", "m": 8, "k": 3, "steps": 150, "samples": 500}
    ],
    "002-rvscgd-nonoverlap": [
        {"algorithm": "rvscgd", "penalty": "tl1", "m": 8, "k": 3, "steps": 150, "samples": 500}
    ],
    "002-penalties-table-3.1": [
        {
            "model": "smallcnn",
            "data": "digits",
            "epochs": 1,
            "batch_size": 128,
            "lr": 0.05,
            "lam": 3e-4,
            "beta": 0.1,
            "penalty": p,
        }
        for p in ("none", "l0", "tl1", "l1")
    ],
    "003-sgd-tail-index": [
        {"eta": eta, "b": 5, "n": 200, "d": 5, "steps": 100, "runs": 32} for eta in (0.1, 0.3)
    ],
    "003-stable-prunability": [
        {"kind": kind, "alpha": alpha, "rows": 40, "cols": 40, "max_error": 0.1}
        for kind in ("iid", "elliptic_columns", "elliptic_matrix")
        for alpha in (1.3, 1.9)
    ],
    "004-power-vs-full-hessian": [
        {"hidden": 4, "classes": 3, "k": 3, "epochs": 5, "lr": 0.5, "tol": 1e-3}
    ],
    "004-metric-xor": [
        {"rule": rule, "activation": "relu", "regime": "large", "hidden": 4, "epochs": 5}
        for rule in ("sgd", "metric", "l2")
    ],
}


def test_every_experiment_has_a_tiny_grid_here() -> None:
    assert set(TINY) == set(EXPERIMENTS)


def test_trials_measure_what_they_say(tmp_path: Path) -> None:
    from tailwise.sims import diffusion_constant

    serw = serw_trial(TINY["002-serw-diffusion"][0], 0, tmp_path)
    assert serw["v_theory"] == pytest.approx(diffusion_constant("I", 0.3))
    assert serw["ratio"] == pytest.approx(serw["v_sim"] / serw["v_theory"])
    rvsm = nonoverlap_trial(TINY["002-rvsm-nonoverlap"][0], 0, tmp_path)
    assert rvsm["conditions_met"] == 1 and 0 <= rvsm["sparsity_u"] <= 1
    assert (tmp_path / "trajectory.csv").is_file()
    power = power_trial(TINY["004-power-vs-full-hessian"][0], 0, tmp_path)
    assert power["relative_distance"] < 1e-4 and power["parameters"] == 64 * 4 + 4 + 4 * 3 + 3
    saved = np.load(tmp_path / "eigenvalues.npz")
    assert np.linalg.norm(saved["power"] - saved["dense"]) == pytest.approx(power["distance"])
    pruning = prunability_trial(TINY["003-stable-prunability"][0], 0, tmp_path)
    assert pruning["advantage"] == pytest.approx(
        pruning["gaussian_keep_ratio"] - pruning["keep_ratio"]
    )
    sgd = sgd_tail_trial(TINY["003-sgd-tail-index"][0], 0, tmp_path)
    assert sgd["ratio"] == pytest.approx(0.1 / 5) and sgd["diverged"] in (0, 1)
    base = penalties_trial(TINY["002-penalties-table-3.1"][0], 0, tmp_path)
    assert base["sparsity"] == 0.0 and 0 <= base["accuracy"] <= 1
    l0 = penalties_trial(TINY["002-penalties-table-3.1"][1], 0, tmp_path)
    assert 0 < l0["sparsity"] <= 1
    esd = esd_trial(TINY["000-esd-mp-to-heavy-tail"][0], 0, tmp_path)
    assert esd["layers"] == 2 and esd["spikes_init"] == 0 and esd["ks_init_max"] < 0.2
    xor = metric_xor_trial(TINY["004-metric-xor"][1], 0, tmp_path)
    assert 0 <= xor["train_accuracy"] <= 1 and xor["parameter_norm"] > 0


def test_mp_ks_distance_separates_mp_from_a_heavy_tail() -> None:
    rng = np.random.default_rng(1)
    gaussian = rng.standard_normal((600, 150))
    heavy = rng.standard_t(1.5, size=(600, 150))
    assert mp_ks_distance(np.linalg.eigvalsh(gaussian.T @ gaussian), 4.0) < 0.05
    assert mp_ks_distance(np.linalg.eigvalsh(heavy.T @ heavy), 4.0) > 0.3


# --- end to end on tiny grids ----------------------------------------------------------------


def test_every_experiment_runs_end_to_end_on_a_tiny_grid(
    tmp_path: Path, registered: Register
) -> None:
    names = []
    for name, experiment in list(EXPERIMENTS.items()):
        tiny = dataclasses.replace(experiment, name=f"{name}-tiny", grids={"quick": TINY[name]},
                                   seeds=2)  # fmt: skip
        registered(tiny)
        names.append(tiny.name)
    store = tmp_path / "store"
    outcome = run(names, store=store, workers=2, progress=False)
    for summary in outcome.experiments:
        assert summary.failed == 0 and summary.ran == summary.total, summary
        assert summary.verdict in ("reproduced", "not reproduced", "inconclusive"), summary
    page = report(names, tmp_path / "page.html", store=store).read_text()
    assert page.count('class="experiment"') == len(names)
    assert "The analysis failed" not in page


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_quick_grid_runs(name: str, tmp_path: Path) -> None:
    summary = run(name, store=tmp_path, progress=False).experiments[0]
    assert summary.failed == 0 and summary.ran == summary.total
    assert summary.verdict in ("reproduced", "not reproduced", "inconclusive")
