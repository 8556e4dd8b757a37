"""tailwise.experiments.run / status / list_experiments with tiny registered experiments:
skipping what is done, failures recorded and retried, a killed run resumed."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_experiments import Register, calls_of, tiny

from tailwise import UsageError
from tailwise.experiments import list_experiments, load, run, status, trial_id
from tailwise.experiments.store import read_statuses

HERE = Path(__file__).resolve().parent


def test_rerun_skips_done_trials_and_adds_new_seeds(tmp_path: Path, registered: Register) -> None:
    calls = tmp_path / "calls"
    experiment = registered(tiny("tiny-skip", calls, xs=(1, 2, 3), seeds=2))
    store = tmp_path / "store"
    first = run("tiny-skip", store=store, workers=2, progress=False)
    [summary] = first.experiments
    assert (summary.total, summary.done_before, summary.ran, summary.failed) == (6, 0, 6, 0)
    assert summary.verdict == "reproduced"
    assert all(calls_of(calls, x, s) == 1 for x in (1, 2, 3) for s in (0, 1))
    again = run("tiny-skip", store=store, workers=0, progress=False).experiments[0]
    assert (again.done_before, again.ran) == (6, 0)
    assert all(calls_of(calls, x, s) == 1 for x in (1, 2, 3) for s in (0, 1))
    more = run("tiny-skip", store=store, seeds=3, workers=0, progress=False).experiments[0]
    assert (more.total, more.done_before, more.ran) == (9, 6, 3)
    assert [calls_of(calls, x, 2) for x in (1, 2, 3)] == [1, 1, 1]
    frame = load("tiny-skip", store)
    assert len(frame) == 9 and set(frame["status"]) == {"ok"}
    assert (frame["y"] == frame["x"] ** 2 + frame["seed"]).all()
    expected_ids = {
        trial_id("tiny-skip", "quick", c, s) for c in experiment.configs("quick") for s in range(3)
    }
    assert set(frame["trial_id"]) == expected_ids
    # the artifacts and logs of each trial are in place
    for tid in frame["trial_id"]:
        assert (store / "tiny-skip" / "artifacts" / tid / "note.txt").is_file()
        assert "ok after" in (store / "tiny-skip" / "logs" / f"{tid}.log").read_text()


def test_failed_trial_is_recorded_and_retried(tmp_path: Path, registered: Register) -> None:
    calls, flag = tmp_path / "calls", tmp_path / "fail"
    flag.touch()
    registered(tiny("tiny-fail", calls, xs=(1, 2), seeds=2, fail_if=str(flag)))
    store = tmp_path / "store"
    report = run("tiny-fail", store=store, workers=1, progress=False)
    [summary] = report.experiments
    assert (summary.ran, summary.failed, summary.verdict) == (4, 4, None)
    assert "0 of 4 trials done" in summary.statement
    assert not report.complete
    frame = load("tiny-fail", store)
    assert list(frame["status"]) == ["failed"] * 4
    assert frame["error"].str.startswith("ValueError: flag").all()
    log = (store / "tiny-fail" / "logs" / f"{frame['trial_id'][0]}.log").read_text()
    assert "about to fail" in log and "Traceback" in log and "ValueError" in log
    assert status("tiny-fail", store).set_index("scale").loc["quick", "failed"] == 4
    flag.unlink()
    retry = run("tiny-fail", store=store, workers=0, progress=False).experiments[0]
    assert (retry.done_before, retry.ran, retry.failed, retry.verdict) == (0, 4, 0, "reproduced")
    frame = load("tiny-fail", store)
    assert list(frame["status"]) == ["ok"] * 4 and (frame["error"] == "").all()
    assert all(calls_of(calls, x, s) == 1 for x in (1, 2) for s in (0, 1))


def test_trials_of_a_dead_worker_stay_pending(tmp_path: Path, registered: Register) -> None:
    calls, flag, store = tmp_path / "calls", tmp_path / "die", tmp_path / "store"
    flag.touch()
    registered(tiny("tiny-dead", calls, xs=(1, 2), seeds=2, exit_if=str(flag)))
    [summary] = run("tiny-dead", store=store, workers=1, progress=False).experiments
    assert (summary.ran, summary.lost, summary.verdict) == (0, 4, None)
    assert summary.statement == (
        "0 of 4 trials done (4 lost: a worker process died before finishing them); "
        "run again to finish"
    )
    assert read_statuses(store, "tiny-dead") == {}
    flag.unlink()
    again = run("tiny-dead", store=store, workers=0, progress=False).experiments[0]
    assert (again.ran, again.lost, again.failed, again.verdict) == (4, 0, 0, "reproduced")


def test_killed_run_resumes_and_finishes_each_trial_once(
    tmp_path: Path, registered: Register
) -> None:
    calls, store = tmp_path / "calls", tmp_path / "store"
    xs = tuple(range(8))
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from pathlib import Path\n"
        "import tiny_experiments\n"
        "from tailwise.experiments import register, run\n"
        f"register(tiny_experiments.tiny('tiny-killed', Path({str(calls)!r}), xs={xs!r}, "
        "seeds=1, sleep=0.5))\n"
        f"run('tiny-killed', store={str(store)!r}, workers=2, progress=False)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    records = store / "tiny-killed" / "records"
    deadline = time.monotonic() + 180
    try:
        while len(list(records.glob("*.parquet"))) < 2:
            assert runner.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no records after 180 s"
            time.sleep(0.02)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # the runner and its workers
        runner.wait(timeout=60)
    done = {p.name: p.stat().st_mtime_ns for p in records.glob("*.parquet")}
    assert 2 <= len(done) < len(xs)
    assert set(read_statuses(store, "tiny-killed").values()) == {"ok"}
    registered(tiny("tiny-killed", calls, xs=xs, seeds=1, sleep=0.5))
    resumed = run("tiny-killed", store=store, workers=0, progress=False).experiments[0]
    assert (resumed.done_before, resumed.ran, resumed.failed) == (len(done), len(xs) - len(done), 0)
    assert resumed.verdict == "inconclusive"  # one seed: an unbounded interval
    after = {p.name: p.stat().st_mtime_ns for p in records.glob("*.parquet")}
    assert len(after) == len(xs)
    assert all(after[name] == mtime for name, mtime in done.items())  # not rewritten
    frame = load("tiny-killed", store)
    assert len(frame) == len(xs) and set(frame["status"]) == {"ok"}
    finished_before = {name[: -len(".parquet")] for name in done}
    for x in xs:
        tid = trial_id("tiny-killed", "quick", {"x": x, "calls": str(calls), "sleep": 0.5}, 0)
        if tid in finished_before:
            assert calls_of(calls, x, 0) == 1  # done before the kill: not run again


def test_bad_arguments_fail_before_any_trial(tmp_path: Path, registered: Register) -> None:
    calls = tmp_path / "calls"
    registered(tiny("tiny-args", calls))
    store = tmp_path / "store"
    cases = [
        ({"scale": "huge"}, "no scale 'huge'"),
        ({"seeds": 0}, "seeds must be an int >= 1"),
        ({"backend": "slurm"}, "unknown backend 'slurm'"),
        ({"workers": -1}, "workers must be an int >= 0"),
    ]
    for options, message in cases:
        with pytest.raises(UsageError, match=message):
            run("tiny-args", store=store, progress=False, **options)
    with pytest.raises(UsageError, match="unknown experiment 'nope'"):
        run(["tiny-args", "nope"], store=store, progress=False)
    with pytest.raises(UsageError, match="at least one"):
        run([], store=store, progress=False)
    assert not calls.exists()
    assert read_statuses(store, "tiny-args") == {}


def test_unavailable_experiment_is_listed_and_refused(tmp_path: Path, registered: Register) -> None:
    needy = dataclasses.replace(
        tiny("tiny-needy", tmp_path / "calls"), needs=("no_such_module_for_tailwise",)
    )
    registered(needy)
    table = list_experiments(store=tmp_path).set_index("name")
    needs = "unavailable: needs no_such_module_for_tailwise"
    assert table.loc["tiny-needy", "availability"] == needs
    assert table.loc["002-serw-diffusion", "availability"] == "available"
    with pytest.raises(UsageError, match="unavailable: needs no_such_module_for_tailwise"):
        run("tiny-needy", store=tmp_path, progress=False)


def test_status_and_list_follow_the_store(tmp_path: Path, registered: Register) -> None:
    calls, store = tmp_path / "calls", tmp_path / "store"
    registered(tiny("tiny-status", calls, xs=(1, 2), seeds=2))
    before = status("tiny-status", store).set_index("scale")
    assert before.loc["quick", ["expected", "done", "pending", "stored"]].tolist() == [4, 0, 4, 0]
    run("tiny-status", scale="test", store=store, workers=0, progress=False)
    after = status("tiny-status", store).set_index("scale")
    assert after.loc["test", ["expected", "done", "pending"]].tolist() == [2, 2, 0]
    assert after.loc["test", "verdict"] == "not reproduced"  # one x: y cannot grow
    # the test grid's point is also the quick grid's first, but scales keep their own trials
    assert after.loc["quick", ["done", "pending", "stored"]].tolist() == [0, 4, 0]
    assert after.loc["quick", "verdict"] == ""
    run("tiny-status", store=store, workers=0, progress=False)
    row = list_experiments(store=store).set_index("name").loc["tiny-status"]
    assert row[["quick_done", "verdict", "scales"]].tolist() == ["4/4", "reproduced", "quick, test"]


def test_an_analysis_that_raises_does_not_sink_the_run(
    tmp_path: Path, registered: Register
) -> None:
    def broken(trials: pd.DataFrame) -> None:
        raise RuntimeError("no analysis today")

    experiment = dataclasses.replace(tiny("tiny-broken", tmp_path / "calls"), analyze=broken)
    registered(experiment)
    [summary] = run("tiny-broken", store=tmp_path, workers=0, progress=False).experiments
    assert summary.ran == 6 and summary.verdict is None
    assert summary.statement == "analysis failed: RuntimeError: no analysis today"


def test_a_trial_returning_bad_metrics_is_a_failed_record(
    tmp_path: Path, registered: Register
) -> None:
    def clashing(config: dict, seed: int, artifacts: Path) -> dict:
        return {"x": 1.0}  # the name of a config key

    experiment = dataclasses.replace(tiny("tiny-clash", tmp_path / "calls"), trial=clashing)
    registered(experiment)
    [summary] = run("tiny-clash", store=tmp_path, workers=0, progress=False).experiments
    assert summary.failed == 6
    errors = set(load("tiny-clash", tmp_path)["error"])
    assert errors == {
        "UsageError: trial tiny-clash "
        + tid
        + ": metric 'x' has the name of a record column or key"
        for tid in load("tiny-clash", tmp_path)["trial_id"]
    }
