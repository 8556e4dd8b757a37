"""The results store: records written atomically, concurrent writers, load()."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tailwise import UsageError
from tailwise.experiments import load
from tailwise.experiments.model import canonical_json
from tailwise.experiments.store import (
    ENV_VAR,
    RECORD_COLUMNS,
    read_statuses,
    record_path,
    store_path,
    write_record,
)

EXPERIMENT = "000-store-test"


def record(trial: str, config: dict[str, Any], seed: int, **metrics: Any) -> dict[str, Any]:
    """A complete record of one trial (the columns execute_trial writes)."""
    base = {
        "trial_id": trial,
        "experiment": EXPERIMENT,
        "scale": "quick",
        "config": canonical_json(config),
        "seed": seed,
        "status": "ok",
        "error": "",
        "seconds": 0.5,
        "host": "here",
        "pid": os.getpid(),
        "started": "2025-01-02T03:04:05.000000Z",
        "finished": "2025-01-02T03:04:06.000000Z",
        "tailwise_version": "0",
        "torch_version": "0",
        "numpy_version": "0",
        "python_version": "0",
    }
    return {**base, **metrics}


def test_record_round_trip_with_different_metrics(tmp_path: Path) -> None:
    write_record(tmp_path, record("a" * 16, {"x": 1, "mode": "fast"}, 0, y=1, score=0.5))
    write_record(tmp_path, record("b" * 16, {"x": 2, "mode": "slow"}, 1, y=2.5, label="two"))
    failed = record("c" * 16, {"x": 3, "mode": "fast"}, 0)
    write_record(tmp_path, {**failed, "status": "failed", "error": "ValueError: no"})
    frame = load(EXPERIMENT, tmp_path)  # sorted by the config's text
    frame = frame.sort_values("x").reset_index(drop=True)
    assert list(frame.columns[: len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert list(frame.columns[len(RECORD_COLUMNS) :]) == ["mode", "x", "y", "score", "label"]
    assert frame["x"].tolist() == [1, 2, 3] and frame["mode"].tolist() == ["fast", "slow", "fast"]
    assert frame["y"].tolist()[:2] == [1.0, 2.5] and np.isnan(frame["y"].iloc[2])
    assert frame["label"].tolist()[1] == "two"
    assert frame["status"].tolist() == ["ok", "ok", "failed"]
    assert str(frame["finished"].dtype) == "datetime64[us, UTC]"
    statuses = {"a" * 16: "ok", "b" * 16: "ok", "c" * 16: "failed"}
    assert read_statuses(tmp_path, EXPERIMENT) == statuses


def test_a_retry_replaces_the_failed_record(tmp_path: Path) -> None:
    failed = record("d" * 16, {"x": 1}, 0)
    write_record(tmp_path, {**failed, "status": "failed", "error": "boom"})
    write_record(tmp_path, record("d" * 16, {"x": 1}, 0, y=4))
    frame = load(EXPERIMENT, tmp_path)
    assert len(frame) == 1 and frame["status"].iloc[0] == "ok" and frame["y"].iloc[0] == 4


def test_number_and_text_in_one_metric_still_load(tmp_path: Path) -> None:
    write_record(tmp_path, record("e" * 16, {"x": 1}, 0, value=1.5))
    write_record(tmp_path, record("f" * 16, {"x": 2}, 0, value="n/a"))
    frame = load(EXPERIMENT, tmp_path)
    assert frame["value"].tolist() == [1.5, "n/a"]
    assert str(frame["seed"].dtype) == "int64"  # the other columns keep their types


def test_bad_records_and_names_are_refused(tmp_path: Path) -> None:
    incomplete = record("g" * 16, {"x": 1}, 0)
    del incomplete["host"]
    with pytest.raises(UsageError, match="lacks"):
        write_record(tmp_path, incomplete)
    with pytest.raises(UsageError, match="status must be one of"):
        write_record(tmp_path, {**record("g" * 16, {"x": 1}, 0), "status": "meh"})
    with pytest.raises(UsageError, match="not an experiment name"):
        record_path(tmp_path, "../escape", "g" * 16)
    clash = record("h" * 16, {"y": 1}, 0, y=2)
    write_record(tmp_path, clash)
    with pytest.raises(UsageError, match="clash"):
        load(EXPERIMENT, tmp_path)


def test_store_path_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert store_path() == Path("tailwise-experiments")
    monkeypatch.setenv(ENV_VAR, "/data/shared/results")
    assert store_path() == Path("/data/shared/results")
    assert store_path("mine") == Path("mine")


def _writer(args: tuple[str, int, int]) -> int:
    """Write ``count`` records of its own and rewrite one shared record ``count`` times."""
    store, worker, count = args
    root = Path(store)
    for i in range(count):
        trial = f"{worker:04d}{i:012d}"
        write_record(root, record(trial, {"worker": worker, "i": i}, 0, value=float(i),
                                  payload="x" * (1000 * (i % 7))))  # fmt: skip
        write_record(root, record("shared0000000000", {"worker": -1, "i": -1}, 0,
                                  value=float(worker), payload="y" * (500 * worker)))  # fmt: skip
    return count


def test_concurrent_writers_never_leave_a_partial_record(tmp_path: Path) -> None:
    workers, count = 4, 25
    context = multiprocessing.get_context("spawn")
    seen: list[int] = []
    with context.Pool(workers) as pool:
        pending = pool.map_async(_writer, [(str(tmp_path), w, count) for w in range(workers)])
        while not pending.ready():
            frame = load(EXPERIMENT, tmp_path)  # while the others write
            if len(frame):
                complete = frame[list(RECORD_COLUMNS)].notna().all(axis=1)
                assert complete.all()
                assert (frame["status"] == "ok").all()
                shared = frame[frame["trial_id"] == "shared0000000000"]
                assert len(shared) <= 1
                if len(shared):
                    worker = int(shared["value"].iloc[0])
                    assert shared["payload"].iloc[0] == "y" * (500 * worker)
            seen.append(len(frame))
            time.sleep(0.01)
        assert pending.get(timeout=120) == [count] * workers
    frame = load(EXPERIMENT, tmp_path)
    assert len(frame) == workers * count + 1
    own = frame[frame["trial_id"] != "shared0000000000"]
    assert sorted(zip(own["worker"], own["i"], strict=True)) == [
        (w, i) for w in range(workers) for i in range(count)
    ]
    assert (own["payload"].str.len() == 1000 * (own["i"] % 7)).all()
    assert seen == sorted(seen)  # records only ever appear
    leftovers = [p.name for p in (tmp_path / EXPERIMENT / "records").iterdir()
                 if not p.name.endswith(".parquet")]  # fmt: skip
    assert leftovers == []


def test_load_of_nothing_is_an_empty_frame(tmp_path: Path) -> None:
    frame = load("000-nothing", tmp_path)
    assert frame.empty and list(frame.columns) == list(RECORD_COLUMNS)
    assert isinstance(frame, pd.DataFrame)
