"""End-to-end tests of ``tailwise tails``, run as real subprocesses.

Every subprocess pays about 3 s of imports, so the ``jobs`` fixture starts all the commands of
this module at once (two at a time, in the background) and each test waits for the ones it
looks at. One cache directory (the reference MLP, trained once) serves the whole module.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from _cli import run_cli
from tailwise.reference import reference_checkpoint
from tailwise.tails import TAILS_COLUMNS, analyze_tails

Run = subprocess.CompletedProcess[str]
WORKERS = 2
# One intra-op / BLAS thread in the subprocesses: on a busy 2-core machine two threads per
# process spin-wait.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Jobs:
    """``tailwise`` commands running in the background; ``jobs[name]`` waits for one."""

    def __init__(self, cache: Path, folder: Path) -> None:
        self.cache = cache
        self.folder = folder
        self.pool = ThreadPoolExecutor(WORKERS)
        self.futures: dict[str, Future[Run]] = {}

    def start(self, name: str, args: Sequence[str]) -> None:
        assert name not in self.futures, name
        self.futures[name] = self.pool.submit(run_cli, *args, cache=self.cache, env=ONE_THREAD)

    def __getitem__(self, name: str) -> Run:
        return self.futures[name].result()


def tails_commands(folder: Path) -> dict[str, list[str]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 120), nn.ReLU(), nn.Linear(120, 80), nn.Linear(80, 10))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "bad.safetensors").write_bytes(b"\x00" * 5)
    model_file = str(folder / "model.safetensors")
    return {
        "tails-reference": ["tails", "--out", str(folder / "reference.csv")],
        "tails-file": ["tails", model_file, "--out", str(folder / "file.json")],
        "tails-quiet": [
            "tails", model_file, "--quiet", "--no-center", "--out", str(folder / "nc.csv"),
        ],
        "tails-bad": ["tails", str(folder / "bad.safetensors"), "--out", str(folder / "bad.csv")],
    }  # fmt: skip


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    """Every subprocess of this module, started at once."""
    cache = tmp_path_factory.mktemp("cache")
    jobs = Jobs(cache, tmp_path_factory.mktemp("tails"))
    commands = tails_commands(jobs.folder)
    try:
        # Commands with a SOURCE first, while the reference network trains here.
        for name, args in commands.items():
            if name != "tails-reference":
                jobs.start(name, args)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TAILWISE_CACHE_DIR", str(cache))
            reference_checkpoint(progress=False)
        jobs.start("tails-reference", commands["tails-reference"])
        yield jobs
    finally:
        jobs.pool.shutdown(wait=True, cancel_futures=True)


def assert_ok(result: Run) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def assert_one_line_error(result: Run, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_tails_of_the_reference_network(jobs: Jobs) -> None:
    run = jobs["tails-reference"]
    assert_ok(run)
    assert "tailwise tails: reference MLP (digits)" in run.stdout
    for i in range(4):
        assert re.search(rf"^│ layers\.{i}\.weight +│ linear ", run.stdout, re.MULTILINE)
    assert "layers.0.bias" not in run.stdout  # skipped rows are not shown
    table = pd.read_csv(jobs.folder / "reference.csv")
    assert list(table.columns) == list(TAILS_COLUMNS)
    ok = table[table["status"] == "ok"]
    assert list(ok["name"]) == [f"layers.{i}.weight" for i in range(4)]
    assert list(ok["layer"]) == [f"layers.{i}" for i in range(4)]
    assert ok["alpha_mmo"].between(0.5, 4).all()
    (checkpoint,) = jobs.cache.glob("reference-*.safetensors")
    expected = analyze_tails(checkpoint, progress=False)
    np.testing.assert_allclose(table["alpha_mmo"], expected["alpha_mmo"], rtol=1e-12)


def test_tails_of_a_file(jobs: Jobs) -> None:
    folder, run = jobs.folder, jobs["tails-file"]
    assert_ok(run)
    for name in ("0.weight", "2.weight", "3.weight"):
        assert re.search(rf"^│ {re.escape(name)} +│ linear ", run.stdout, re.MULTILINE)
    rows = json.loads((folder / "file.json").read_text())
    assert [list(row) for row in rows] == [list(TAILS_COLUMNS)] * len(rows)
    expected = analyze_tails(folder / "model.safetensors", progress=False)
    assert [row["name"] for row in rows] == list(expected["name"])
    # JSON keeps 10 significant digits (pandas' default); skipped rows have null
    alphas = [math.nan if row["alpha_mmo"] is None else row["alpha_mmo"] for row in rows]
    assert alphas == pytest.approx(list(expected["alpha_mmo"]), rel=1e-9, nan_ok=True)


def test_tails_quiet_and_no_center(jobs: Jobs) -> None:
    folder, run = jobs.folder, jobs["tails-quiet"]
    assert_ok(run)
    assert run.stdout == "" and run.stderr == ""
    table = pd.read_csv(folder / "nc.csv")
    assert list(table.columns) == list(TAILS_COLUMNS)
    uncentred = analyze_tails(folder / "model.safetensors", center=False, progress=False)
    np.testing.assert_allclose(table["alpha_mmo"], uncentred["alpha_mmo"], rtol=1e-12)
    assert_ok(jobs["tails-file"])
    centred = pd.DataFrame(json.loads((folder / "file.json").read_text()))
    weights = table["status"] == "ok"
    assert not np.allclose(table.loc[weights, "alpha_hill"], centred.loc[weights, "alpha_hill"])


def test_tails_bad_file_is_one_line(jobs: Jobs) -> None:
    folder = jobs.folder
    assert_one_line_error(jobs["tails-bad"], str(folder / "bad.safetensors"))
    assert not (folder / "bad.csv").exists()
