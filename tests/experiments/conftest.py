"""Fixtures of the experiment tests: registering tiny experiments for one test, and the
headless Chromium of the report tests (tests/report/conftest.py's fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tiny_experiments import Register

from report.conftest import run_chromium  # noqa: F401  (the fixture, shared)
from tailwise.experiments import Experiment, register, unregister


@pytest.fixture
def registered() -> Iterator[Register]:
    """``registered(experiment)`` adds it to the catalogue until the test ends."""
    names: list[str] = []

    def add(experiment: Experiment) -> Experiment:
        register(experiment)
        names.append(experiment.name)
        return experiment

    yield add
    for name in names:
        unregister(name)
