"""``analyze`` and ``analyze_tails`` run their work under ``tailwise._threads.blas_work``.

Issue 9, item 8: torch's OpenMP pool and SciPy's BLAS pool must not spin against each other.
A tensor subclass records ``torch.get_num_threads()`` whenever the analysis touches the
weights (``detach``), which happens inside the work, so the tests see the policy in force
there; the results are the same with the policy off (``TAILWISE_THREADS=off``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
import pytest
import torch

from tailwise import analyze, analyze_tails
from tailwise._threads import ENV_VAR


class Watched(torch.Tensor):
    """A tensor that notes torch's intra-op thread count when it is detached."""

    seen: ClassVar[list[int]] = []

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func is torch.Tensor.detach:
            cls.seen.append(torch.get_num_threads())
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        f"layers.{i}.weight": torch.randn(48, 32, generator=generator).as_subclass(Watched)
        for i in range(3)
    }


@pytest.fixture
def two_torch_threads() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


RUNS = {
    "analyze": lambda source: analyze(source, progress=False, workers=1),
    "analyze_tails": lambda source: analyze_tails(source, progress=False, permutations=1),
}


@pytest.mark.parametrize("run", list(RUNS))
def test_work_runs_with_one_torch_thread_and_the_same_results(
    run: str, two_torch_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    Watched.seen.clear()
    monkeypatch.delenv(ENV_VAR, raising=False)
    with_policy = RUNS[run](weights())
    assert Watched.seen and set(Watched.seen) == {1}, Watched.seen
    assert torch.get_num_threads() == 2  # restored afterwards

    Watched.seen.clear()
    monkeypatch.setenv(ENV_VAR, "off")
    without = RUNS[run](weights())
    assert set(Watched.seen) == {2}
    numbers = with_policy.select_dtypes("number").columns
    pd.testing.assert_frame_equal(with_policy[numbers], without[numbers], rtol=1e-9)
    assert (with_policy["status"] == "ok").all()
