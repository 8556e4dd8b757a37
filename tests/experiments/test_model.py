"""The experiment model: trial ids, Experiment validation, Analysis."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from tiny_experiments import analyze_growth, counting_trial

from tailwise import UsageError
from tailwise.experiments import Analysis, Experiment, trial_id
from tailwise.experiments.model import canonical_json


def test_trial_id_is_the_hash_of_the_canonical_json() -> None:
    config = {"model": "I", "delta": 0.1, "walkers": 10, "sizes": (1, 2)}
    text = json.dumps(
        {"config": config, "experiment": "e", "scale": "quick", "seed": 3},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert trial_id("e", "quick", config, 3) == hashlib.sha256(text.encode()).hexdigest()[:16]
    # a value computed once, by hand: ids must not change between versions
    assert trial_id("002-serw-diffusion", "quick", {"model": "I", "delta": 0.1}, 0) == (
        "f6ac11af10f8c246"
    )


def test_trial_id_is_stable_and_distinct() -> None:
    base = ("e", "quick", {"a": 1, "b": [1.5, "x"]}, 0)
    same = trial_id(*base)
    assert trial_id("e", "quick", {"b": (1.5, "x"), "a": 1}, 0) == same  # key order, tuples
    variants = [
        ("f", "quick", {"a": 1, "b": [1.5, "x"]}, 0),
        ("e", "full", {"a": 1, "b": [1.5, "x"]}, 0),
        ("e", "quick", {"a": 2, "b": [1.5, "x"]}, 0),
        ("e", "quick", {"a": 1.0, "b": [1.5, "x"]}, 0),  # an int is not a float
        ("e", "quick", {"a": 1, "b": [1.5, "x"], "c": None}, 0),
        ("e", "quick", {"a": 1, "b": [1.5, "x"]}, 1),
    ]
    ids = {trial_id(*v) for v in variants}
    assert len(ids) == len(variants) and same not in ids
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_trial_id_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(UsageError, match="finite"):
        trial_id("e", "quick", {"a": float("nan")}, 0)
    with pytest.raises(UsageError, match="JSON data"):
        trial_id("e", "quick", {"a": object()}, 0)
    with pytest.raises(UsageError, match="seed must be an int >= 0"):
        trial_id("e", "quick", {}, -1)
    assert canonical_json({"b": 1, "a": [True, None]}) == '{"a":[true,null],"b":1}'


def _experiment(**changes: object) -> Experiment:
    fields: dict[str, object] = {
        "name": "000-tiny",
        "source": "000",
        "claim": "y grows",
        "location": "table 0",
        "grids": {"quick": [{"x": 1, "calls": "c"}], "full": [{"x": 2, "calls": "c"}]},
        "trial": counting_trial,
        "analyze": analyze_growth,
    }
    fields.update(changes)
    return Experiment(**fields)  # type: ignore[arg-type]


def test_experiment_validates_its_declaration() -> None:
    experiment = _experiment(substitution="squares")
    assert experiment.scales == ("quick", "full")
    assert experiment.configs("full") == [{"x": 2, "calls": "c"}]
    assert experiment.claim_line() == "y grows (source 000, table 0); quick scale: squares"
    command = "tailwise experiment run 000-tiny --scale full --seeds 5"
    assert experiment.command("full", 5) == command
    with pytest.raises(UsageError, match="no scale 'huge'; it has quick, full"):
        experiment.configs("huge")
    bad = [
        ({"name": "Has Spaces"}, "lowercase"),
        ({"grids": {"full": [{"x": 1}]}}, "'quick' scale"),
        ({"grids": {"quick": []}}, "non-empty"),
        ({"grids": {"quick": [{"x": 1}, {"x": 1}]}}, "repeats the config"),
        ({"grids": {"quick": [{"not an id": 1}]}}, "identifiers"),
        ({"grids": {"quick": [{"error": 0.1}]}}, r"\['error'\] are names of record columns"),
        ({"seeds": 0}, "seeds must be an int >= 1"),
    ]
    for changes, message in bad:
        with pytest.raises(UsageError, match=message):
            _experiment(**changes)


def test_needs_name_modules_that_must_import() -> None:
    assert _experiment(needs=("json", "pandas")).missing() == ()
    assert _experiment(needs=("json", "no_such_module_xyz")).missing() == ("no_such_module_xyz",)


def test_analysis_checks_its_verdict_and_draws(tmp_path: Path) -> None:
    drawn = []
    analysis = Analysis(pd.DataFrame(), "inconclusive", "s", lambda fig: drawn.append(fig), "")
    figure = analysis.figure((3.0, 2.0))
    assert drawn == [figure] and figure.get_size_inches().tolist() == [3.0, 2.0]
    with pytest.raises(UsageError, match="verdict must be one of"):
        Analysis(pd.DataFrame(), "maybe", "s", lambda fig: None, "")  # type: ignore[arg-type]
