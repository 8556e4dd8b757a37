"""tailwise.sims.run: the registry, option parsing and output writing behind
``tailwise simulate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tailwise import UsageError
from tailwise.sims import (
    SIMULATION_NAMES,
    SimulationResult,
    parse_options,
    simulate,
    simulation_options,
)

ISSUE_NAMES = (
    "serw",
    "serw-diffusion",
    "nonoverlap-rvsm",
    "nonoverlap-rvscgd",
    "heavy-sgd",
    "stable-prunability",
)


def test_every_name_of_the_issue_is_registered_with_its_options() -> None:
    assert set(SIMULATION_NAMES) == set(ISSUE_NAMES)
    for name in SIMULATION_NAMES:
        options = simulation_options(name)
        assert "seed" not in options and "progress" not in options
    assert "algorithm" not in simulation_options("nonoverlap-rvsm")  # fixed by the name


def test_options_take_the_type_of_their_default() -> None:
    parsed = parse_options("nonoverlap-rvsm", ["steps=20", "zero-share=0.25", "penalty=tl1"])
    assert parsed == {"steps": 20, "zero_share": 0.25, "penalty": "tl1"}
    assert isinstance(parsed["zero_share"], float)
    # a None default: the most specific of int, float, none, str
    assert parse_options("nonoverlap-rvsm", ["eta=0.5"]) == {"eta": 0.5}
    assert parse_options("nonoverlap-rvsm", ["eta=none"]) == {"eta": None}
    # a tuple default: comma-separated values of its element type
    etas = parse_options("heavy-sgd", ["etas=0.05,0.1"])["etas"]
    assert etas == (0.05, 0.1)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["steps"], "key=value"),
        (["=3"], "key=value"),
        (["stepz=3"], "unknown option 'stepz'"),
        (["steps=3.5"], "expected an integer"),
        (["zero_share=abc"], "expected a number"),
        (["zero_share=nan"], "finite"),
    ],
)
def test_bad_options_name_what_and_where(pairs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_options("nonoverlap-rvsm", pairs)


def test_unknown_names_options_and_outputs_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown simulation 'serw3'.*serw-diffusion"):
        simulate("serw3")
    with pytest.raises(UsageError, match="unknown option"):
        simulate("nonoverlap-rvsm", stepz=3, progress=False)
    with pytest.raises(UsageError, match="unsupported suffix"):
        simulate("nonoverlap-rvsm", plot=tmp_path / "fig.txt", progress=False)
    with pytest.raises(UsageError, match="seed"):
        simulate("nonoverlap-rvsm", seed=-1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_written_and_runs_are_reproducible(tmp_path: Path) -> None:
    result = simulate(
        "nonoverlap-rvscgd",
        steps=60,
        seed=3,
        progress=False,
        out=tmp_path / "run.json",
        plot=tmp_path / "run.png",
    )
    assert isinstance(result, SimulationResult)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["name"] == "nonoverlap-rvscgd"
    assert record["summary"]["verdict"] == result.summary["verdict"]
    table = pd.DataFrame(record["table"])
    assert list(table.columns) == list(result.table.columns)
    assert len(table) == len(result.table)
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    simulate("nonoverlap-rvscgd", steps=60, seed=3, progress=False, out=tmp_path / "t.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), result.table, rtol=1e-12)
    other = simulate("nonoverlap-rvscgd", steps=60, seed=4, progress=False)
    assert not math.isclose(other.table["loss"].iloc[0], result.table["loss"].iloc[0])
