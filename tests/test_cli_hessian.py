"""End-to-end tests of ``tailwise hessian``, run as real subprocesses.

One cache directory (the reference digits MLP, trained once here) serves the whole module;
every command uses a small ``--samples`` so that each run takes a few seconds.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _cli import run_cli
from tailwise.reference import reference_checkpoint

Run = subprocess.CompletedProcess[str]
# One BLAS thread per subprocess: on a busy 2-core machine more only spin-wait.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SAMPLES = ("--samples", "64")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILWISE_CACHE_DIR", str(folder))
        reference_checkpoint(progress=False)
    yield folder


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def runs(cache: Path, outputs: Path) -> dict[str, Run]:
    """Every command of this module, two at a time."""
    commands = {
        "default": ["hessian", *SAMPLES],
        "everything": [
            "hessian", *SAMPLES, "--top-k", "3", "--trace", "--density",
            str(outputs / "density.png"), "--out", str(outputs / "hessian.json"),
        ],
        "params": [
            "hessian", *SAMPLES, "--params", r"layers\.1\.", "--top-k", "2",
            "--out", str(outputs / "params.json"),
        ],
        "power": ["hessian", *SAMPLES, "--method", "power", "--top-k", "2", "--quiet"],
        "mnist1d": ["hessian", *SAMPLES, "--data", "mnist1d"],
        "bad-top-k": ["hessian", *SAMPLES, "--top-k", "0"],
        "bad-out": ["hessian", *SAMPLES, "--out", str(outputs / "hessian.csv")],
        "bad-params": ["hessian", *SAMPLES, "--params", "no-such-parameter"],
    }  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(run_cli, *args, cache=cache, env=ONE_THREAD)
            for name, args in commands.items()
        }
        return {name: future.result() for name, future in futures.items()}


def printed_eigenvalues(stdout: str) -> list[float]:
    """The eigenvalue column of the printed table (rows ``│ i │ value │``)."""
    rows = re.findall(r"^\W*(\d+)\s*[│|]\s*(-?[\d.]+(?:e[+-]?\d+)?)\s*[│|]", stdout, re.M)
    return [float(value) for _, value in rows]


def assert_usage_error(run: Run, *patterns: str) -> None:
    """Exit 2, no traceback, one ``error:`` line (the last) that matches every pattern."""
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and run.stderr.strip().endswith(errors[0]), run.stderr
    for pattern in patterns:
        assert re.search(pattern, errors[0]), errors[0]


def test_defaults_on_the_reference_network(runs: dict[str, Run]) -> None:
    run = runs["default"]
    assert run.returncode == 0, run.stderr
    assert "tailwise hessian:" in run.stdout and "64 examples" in run.stdout
    values = printed_eigenvalues(run.stdout)
    assert len(values) == 5 and values == sorted(values, reverse=True) and values[0] > 0
    assert "block" in run.stdout and "HVPs" in run.stdout
    assert "trace" not in run.stdout


def test_trace_density_and_json_agree_with_the_printed_table(
    runs: dict[str, Run], outputs: Path
) -> None:
    run = runs["everything"]
    assert run.returncode == 0, run.stderr
    data = json.loads((outputs / "hessian.json").read_text())
    for key in (
        "num_params", "loss", "method", "eigenvalues", "converged", "eigen_matvecs",
        "trace", "trace_std_error", "density_nodes", "density_weights", "seconds",
    ):  # fmt: skip
        assert key in data, key
    assert data["method"] == "block" and data["converged"] is True
    assert len(data["eigenvalues"]) == 3
    printed = printed_eigenvalues(run.stdout)
    assert len(printed) == 3
    for shown, value in zip(printed, data["eigenvalues"], strict=True):
        assert shown == pytest.approx(value, rel=1e-5)
    assert "Hutch++" in run.stdout
    assert math.isfinite(data["trace"]) and data["trace_std_error"] >= 0
    assert f"{data['trace']:.6g}" in run.stdout
    nodes = data["density_nodes"]
    assert len(nodes) == 2 and len(nodes[0]) == min(80, data["num_params"])
    assert max(max(v for v in row if v == v) for row in nodes) == pytest.approx(
        data["eigenvalues"][0], rel=1e-3
    )  # the SLQ's largest node is the top eigenvalue
    png = (outputs / "density.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_params_restricts_the_hessian_to_matching_parameters(
    runs: dict[str, Run], outputs: Path
) -> None:
    run = runs["params"]
    assert run.returncode == 0, run.stderr
    restricted = json.loads((outputs / "params.json").read_text())
    full = json.loads((outputs / "hessian.json").read_text())
    assert 0 < restricted["num_params"] < full["num_params"]
    assert len(restricted["eigenvalues"]) == 2


def test_power_method_quietly(runs: dict[str, Run]) -> None:
    run = runs["power"]
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""


def test_mnist1d_on_the_digits_mlp_is_one_error_line(runs: dict[str, Run]) -> None:
    assert_usage_error(runs["mnist1d"], "mnist1d", r"\(40,\)")


def test_bad_options_are_one_error_line(runs: dict[str, Run]) -> None:
    assert_usage_error(runs["bad-top-k"], "top.k", r"\b0\b")
    assert_usage_error(runs["bad-out"], r"\.csv", r"\.json")
    assert_usage_error(runs["bad-params"], "no-such-parameter")
