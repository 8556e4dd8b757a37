"""Parallel layers give exactly the serial table, in layer order."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tailwise.spectral.analyze import analyze


def test_parallel_and_serial_tables_are_identical() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3), torch.nn.Flatten(),
        torch.nn.Linear(300, 120), torch.nn.Linear(120, 120), torch.nn.Linear(120, 10),
    )  # fmt: skip
    threads_before = torch.get_num_threads()
    serial = analyze(model, workers=1, rand_distance=True, progress=False)
    parallel = analyze(model, workers=3, rand_distance=True, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    assert torch.get_num_threads() == threads_before  # restored after the parallel run


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_bad_workers_are_rejected(workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        analyze(torch.nn.Linear(20, 10), workers=workers, progress=False)  # type: ignore[arg-type]
