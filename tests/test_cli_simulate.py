"""``tailwise simulate``: a real subprocess per run, outputs checked on disk."""

from __future__ import annotations

import json
from pathlib import Path

from _cli import run_cli


def test_simulate_writes_table_and_figure(tmp_path: Path) -> None:
    out, plot = tmp_path / "rvsm.json", tmp_path / "rvsm.svg"
    run = run_cli(
        "simulate",
        "nonoverlap-rvsm",
        "-O",
        "steps=80",
        "--option",
        "penalty=l0",
        "--seed",
        "2",
        "--out",
        str(out),
        "--plot",
        str(plot),
        cache=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "verdict" in run.stdout and f"wrote {out}" in run.stdout
    record = json.loads(out.read_text())
    assert record["options"]["penalty"] == "l0" and record["options"]["steps"] == 80
    assert len(record["table"]) == 81
    assert plot.read_text().lstrip().startswith("<?xml")


def test_simulate_show_options(tmp_path: Path) -> None:
    run = run_cli("simulate", "stable-prunability", "--show-options", cache=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "alphas" in run.stdout and "shape" in run.stdout


def test_simulate_bad_input_is_one_error_line(tmp_path: Path) -> None:
    for args, message in (
        (("simulate", "walk"), "unknown simulation 'walk'"),
        (("simulate", "serw", "-O", "n_stepz=10"), "unknown option 'n_stepz'"),
        (("simulate", "heavy-sgd", "-O", "runs=many"), "runs must be an integer"),
        (("simulate", "nonoverlap-rvsm", "--out", str(tmp_path / "x.xlsx")), "unsupported"),
    ):
        run = run_cli(*args, cache=tmp_path)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
