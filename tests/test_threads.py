"""The thread policy (tailwise._threads): limits inside, restored after, nesting, the env var."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.linalg
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from tailwise import UsageError
from tailwise._threads import ENV_VAR, blas_work, single_threaded, thread_setting, torch_work


def blas_threads() -> list[int]:
    """Thread counts of every BLAS library loaded (NumPy's and SciPy's OpenBLAS, or MKL)."""
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def counts() -> tuple[int, list[int]]:
    return torch.get_num_threads(), blas_threads()


@pytest.fixture(autouse=True)
def _known_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start every test from 3 torch threads and 3 BLAS threads (distinct from 1 and N)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # TAILWISE_THREADS allows up to 16
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    with threadpool_limits(limits=3, user_api="blas"):
        assert blas_threads() and all(n == 3 for n in blas_threads())
        yield
    torch.set_num_threads(previous)


def test_torch_work_limits_blas_and_restores() -> None:
    with torch_work():
        assert counts() == (3, [1] * len(blas_threads()))
    assert counts() == (3, [3] * len(blas_threads()))


def test_blas_work_limits_torch_and_restores() -> None:
    with blas_work():
        assert counts() == (1, [3] * len(blas_threads()))
    assert counts() == (3, [3] * len(blas_threads()))


def test_restored_after_an_exception() -> None:
    with pytest.raises(KeyError), torch_work():
        raise KeyError("x")
    assert counts() == (3, [3] * len(blas_threads()))


def test_nested_blocks_give_the_working_pool_back_its_configured_threads() -> None:
    nb = len(blas_threads())
    with torch_work():
        with blas_work():  # BLAS back to its configured 3, not the 1 of the outer block
            assert counts() == (1, [3] * nb)
            with torch_work():  # torch back to 3
                assert counts() == (3, [1] * nb)
            assert counts() == (1, [3] * nb)
        assert counts() == (3, [1] * nb)
        with torch_work():
            assert counts() == (3, [1] * nb)
        assert counts() == (3, [1] * nb)
    assert counts() == (3, [3] * nb)


def test_single_threaded_caps_nested_blocks() -> None:
    nb = len(blas_threads())
    with single_threaded():
        assert counts() == (1, [3] * nb)
        with torch_work():  # does not lift torch back to 3 (reproducible reference training)
            assert counts() == (1, [1] * nb)
        with blas_work():
            assert counts() == (1, [3] * nb)
    with single_threaded(blas=True), blas_work():
        assert counts() == (1, [1] * nb)
    assert counts() == (3, [3] * nb)


@pytest.mark.parametrize("raw", ["2", " 2 ", "2\n"])
def test_env_var_sets_the_working_pool(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(ENV_VAR, raw)
    nb = len(blas_threads())
    with torch_work():
        assert counts() == (2, [1] * nb)
    with blas_work():
        assert counts() == (1, [2] * nb)
    with single_threaded(), torch_work():  # an explicit cap wins over the variable
        assert counts() == (1, [1] * nb)
    assert counts() == (3, [3] * nb)


@pytest.mark.parametrize("raw", ["off", "OFF", "none", "0"])
def test_env_var_off_leaves_the_pools_alone(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(ENV_VAR, raw)
    assert thread_setting() is False
    nb = len(blas_threads())
    with torch_work():
        assert counts() == (3, [3] * nb)
    with blas_work(), torch_work():
        assert counts() == (3, [3] * nb)
    with single_threaded():  # not part of the policy
        assert counts() == (1, [3] * nb)


@pytest.mark.parametrize("raw", ["two", "-1", "1.5", "17", "99999999", "1e3"])
def test_bad_env_var_is_a_usage_error_before_any_change(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(ENV_VAR, raw)
    for block in (torch_work, blas_work):
        with pytest.raises(UsageError, match=rf"{ENV_VAR}=.*1 to 16.*'off'"), block():
            pytest.fail("the block must not run")  # pragma: no cover
        assert counts() == (3, [3] * len(blas_threads()))
    with single_threaded():  # does not read the variable
        assert torch.get_num_threads() == 1


def test_unset_and_empty_env_var_mean_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert thread_setting() is None
    monkeypatch.setenv(ENV_VAR, "  ")
    assert thread_setting() is None
    monkeypatch.setenv(ENV_VAR, "16")
    assert thread_setting() == 16


def test_a_block_in_a_worker_thread_keeps_the_outer_setting() -> None:
    """Only the thread of the outermost block changes settings; workers' blocks run in it."""
    nb = len(blas_threads())
    seen: list[list[int]] = []

    def worker() -> None:
        with blas_work():
            seen.append(blas_threads())

    with torch_work():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(10)
        assert seen == [[1] * nb]
        assert counts() == (3, [1] * nb)
    assert counts() == (3, [3] * nb)
    thread = threading.Thread(target=worker)  # no block open: a worker may open one
    thread.start()
    thread.join(10)
    assert seen[-1] == [3] * nb and counts() == (3, [3] * nb)


def test_blas_work_runs_numpy_and_scipy_in_the_block() -> None:
    with blas_work():
        value = scipy.linalg.eigh(np.eye(3), eigvals_only=True)
    assert np.allclose(value, 1.0)


# --- every entry that mixes torch and SciPy/NumPy BLAS runs under torch_work ---------------


class Recorder:
    """A cross-entropy loss (or a wrapper) that records the thread counts it ran with."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, tuple[int, ...]]] = set()

    def note(self) -> None:
        self.seen.add((torch.get_num_threads(), tuple(blas_threads())))

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.note()
        return torch.nn.functional.cross_entropy(output, target)


def tiny_problem() -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    return model.double().eval(), [(x[:6].double(), y[:6]), (x[6:].double(), y[6:])]


def test_hessian_entries_run_torch_work() -> None:
    """Before: no policy, SciPy's ARPACK / eigh_tridiagonal ran next to torch's pool."""
    from tailwise.hessian import (
        HessianOperator,
        hutchinson_trace,
        hutchpp_trace,
        spectral_density,
        summarize,
        top_eigenvalues,
    )

    nb = len(blas_threads())
    model, data = tiny_problem()
    inside = {(3, (1,) * nb)}
    calls: list[tuple[str, object]] = [
        ("operator", lambda loss: HessianOperator(model, loss, data)),
        (
            "matvec",
            lambda loss: HessianOperator(model, loss, data, check_deterministic=False).matvec(
                torch.ones(23, dtype=torch.float64)
            ),
        ),
        ("eigen", lambda loss: top_eigenvalues(model, loss, data, k=2, progress=False)),
        (
            "trace",
            lambda loss: hutchpp_trace(
                HessianOperator(model, loss, data, check_deterministic=False), 9, progress=False
            ),
        ),
        (
            "hutchinson",
            lambda loss: hutchinson_trace(
                HessianOperator(model, loss, data, check_deterministic=False), 4, progress=False
            ),
        ),
        (
            "density",
            lambda loss: spectral_density(
                HessianOperator(model, loss, data, check_deterministic=False),
                num_iters=5,
                progress=False,
            ),
        ),
        (
            "summarize",
            lambda loss: summarize(
                model, loss, data, top_k=2, trace=True, density=True, progress=False
            ),
        ),
    ]
    for name, call in calls:
        loss = Recorder()
        call(loss)  # type: ignore[operator]
        assert loss.seen == inside, name
        assert counts() == (3, [3] * nb), name


def test_spectral_density_runs_its_scipy_part_under_torch_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tailwise.hessian import trace

    recorder = Recorder()
    original = trace.eigh_tridiagonal

    def recording(*args: object, **kwargs: object) -> object:
        recorder.note()
        return original(*args, **kwargs)

    monkeypatch.setattr(trace, "eigh_tridiagonal", recording)

    class Dense:
        def __init__(self) -> None:
            self.a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
            self.num_params, self.dtype, self.device = 5, self.a.dtype, self.a.device

        def matmat(self, v: torch.Tensor) -> torch.Tensor:
            return self.a @ v

    trace.spectral_density(Dense(), num_iters=5, progress=False)
    assert recorder.seen == {(3, (1,) * len(blas_threads()))}


def test_training_entries_run_torch_work() -> None:
    from tailwise.train import loop, regularizers

    nb = len(blas_threads())
    model, data = tiny_problem()
    model.train()
    loss = Recorder()
    loop.fit(model, data, epochs=1, loss_fn=loss, progress=False)
    loop.evaluate(model, data, loss_fn=loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data[0]
    regularizers.regularized_step(model, optimizer, loss, x, y, regularizers.Metric(0.01), 0)
    regularizers.Metric(0.01).apply(model, loss, x, y, 0)
    assert loss.seen == {(3, (1,) * nb)}
    assert counts() == (3, [3] * nb)


def test_prune_runs_torch_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from tailwise.prune import pipeline

    recorder = Recorder()
    original = pipeline._parse_method

    def recording(*args: object, **kwargs: object) -> object:
        recorder.note()
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_parse_method", recording)
    model, _ = tiny_problem()
    pipeline.prune(model, 0.5, method="magnitude")
    assert recorder.seen == {(3, (1,) * len(blas_threads()))}
