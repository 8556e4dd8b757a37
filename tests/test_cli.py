"""End-to-end tests of the ``tailwise`` command, run as a real subprocess."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from _cli import run_cli
from tailwise.spectral.analyze import COLUMNS


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 120), torch.nn.ReLU(), torch.nn.Linear(120, 80), torch.nn.Linear(80, 10)
    )
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def test_default_analyses_the_reference_network_and_reuses_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "table.csv"
    first = run_cli("analyze", "--out", str(out), cache=cache)
    assert first.returncode == 0, first.stderr
    assert "layers.0.weight" in first.stdout
    assert "mean alpha" in first.stdout
    table = pd.read_csv(out)
    assert list(table.columns) == list(COLUMNS)
    assert (table.loc[table.status != "skipped", "status"] == "ok").all()
    cached = list(cache.glob("reference-*.safetensors"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = run_cli("analyze", "--quiet", cache=cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    assert cached[0].stat().st_mtime_ns == mtime  # not retrained


def test_file_source_with_filters_writes_json(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "table.json"
    result = run_cli(
        "analyze", str(checkpoint), "--include", r"^[02]\.", "--exclude", "bias",
        "--out", str(out), "--fit", "median", cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["0.weight", "2.weight"]
    assert all(r["status"] == "ok" for r in rows)
    # median fit: xmin is the median eigenvalue, so about half the spectrum is in the tail
    assert rows[0]["num_pl_spikes"] == 64 - 64 // 2


def test_report_is_written(checkpoint: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = run_cli("analyze", str(checkpoint), "--report", str(report), "-q", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    html = report.read_text()
    assert "0.weight" in html and "<img" in html


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_file_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "missing.safetensors"
    assert_one_line_error(run_cli("analyze", str(path), cache=tmp_path), "no such file", str(path))


def test_corrupt_safetensors_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    result = run_cli("analyze", str(path), cache=tmp_path)
    assert_one_line_error(result, "corrupt safetensors", str(path))


def test_pickle_needs_explicit_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    # A datetime is a pickled Python object outside torch's weights_only allow-list.
    torch.save({"fc.weight": torch.randn(50, 20), "saved": datetime.datetime(2026, 1, 1)}, path)
    assert_one_line_error(run_cli("analyze", str(path), cache=tmp_path), "--trust-pickle")
    trusted = run_cli("analyze", str(path), "--trust-pickle", cache=tmp_path)
    assert trusted.returncode == 0, trusted.stderr
    assert "fc.weight" in trusted.stdout


def test_bad_options_are_rejected_before_work(checkpoint: Path, tmp_path: Path) -> None:
    bad_out = run_cli("analyze", str(checkpoint), "--out", str(tmp_path / "t.xlsx"), cache=tmp_path)
    assert bad_out.returncode == 2 and "unsupported suffix" in bad_out.stderr
    bad_fit = run_cli("analyze", str(checkpoint), "--fit", "foo", cache=tmp_path)
    assert bad_fit.returncode == 2 and "fit must be one of" in bad_fit.stderr
