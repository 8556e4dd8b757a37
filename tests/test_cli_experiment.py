"""``tailwise experiment``: real subprocesses against a results folder the test owns."""

from __future__ import annotations

from pathlib import Path

from _cli import run_cli
from tailwise.experiments import load


def test_list_shows_the_catalogue(tmp_path: Path) -> None:
    run = run_cli("experiment", "list", "--store", str(tmp_path / "store"), cache=tmp_path)
    assert run.returncode == 0, run.stderr
    for name in ("002-serw-diffusion", "003-stable-prunability", "004-power-vs-full-hessian"):
        assert name in run.stdout
    assert not (tmp_path / "store").exists()  # listing writes nothing


def test_run_status_resume_and_report(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    name = "004-power-vs-full-hessian"
    first = run_cli("experiment", "run", name, "--seeds", "1", "--workers", "0",
                    "--store", store, cache=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "inconclusive" in first.stdout  # one seed: no confidence interval
    assert "claim < 0.0001" in first.stdout
    assert len(load(name, store=store)) == 1
    again = run_cli("experiment", "resume", name, "--seeds", "1", "--workers", "0",
                    "--store", store, cache=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(load(name, store=store)) == 1  # nothing ran twice
    status = run_cli("experiment", "status", name, "--store", store, cache=tmp_path)
    assert status.returncode == 0 and "inconclusive" in status.stdout, status.stderr
    page = tmp_path / "report.html"
    report = run_cli("experiment", "report", name, "--out", str(page), "--store", store,
                     cache=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stderr
    html = page.read_text()
    assert name in html and "inconclusive" in html and "<img" in html


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    for args, message in (
        (("experiment", "run", "no-such-experiment", "--store", store), "no-such-experiment"),
        (("experiment", "run", "004-power-vs-full-hessian", "--scale", "huge", "--store", store),
         "huge"),
        (("experiment", "status", "nope", "--store", store), "nope"),
        (("experiment", "report", "all", "--out", str(tmp_path / "r.txt"), "--store", store),
         ".html"),
    ):  # fmt: skip
        run = run_cli(*args, cache=tmp_path)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
