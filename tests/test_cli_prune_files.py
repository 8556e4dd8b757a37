"""``tailwise prune`` on weights that record no architecture: magnitude and node pruning act on
the file itself (tailwise.prune.prune_file); methods that change the architecture ask for
``--model``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _cli import run_cli
from tailwise.prune import prune_file


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "encoder.weight": torch.randn(64, 32),
            "encoder.bias": torch.randn(64),
            "classifier.weight": torch.randn(5, 64),
        },
        path,
        metadata={"origin": "someone else"},
    )
    return path


@pytest.mark.parametrize("method", ["magnitude", "node"])
def test_prune_a_file_without_an_architecture(weights: Path, tmp_path: Path, method: str) -> None:
    out, report = tmp_path / "pruned.safetensors", tmp_path / "report.csv"
    args = ["prune", str(weights), "--method", method, "--ratio", "0.5"]
    run = run_cli(*args, "--out", str(out), "--report", str(report), cache=tmp_path / "cache")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "output layer: kept" in run.stdout and "wrote 1 file(s)" in run.stdout
    expected = prune_file(weights, None, 0.5, method=method, progress=False)
    written, original = load_file(out), load_file(weights)
    assert set(written) == set(original)
    assert torch.equal(written["encoder.bias"], original["encoder.bias"])
    assert torch.equal(written["classifier.weight"], original["classifier.weight"])  # protected
    zeros = int((written["encoder.weight"] == 0).sum())
    assert zeros == round(expected.report.set_index("layer").loc["encoder", "achieved"] * 2048)
    assert report.read_text().count("\n") == 3  # header + two layers


def test_methods_that_change_the_architecture_ask_for_a_model(
    weights: Path, tmp_path: Path
) -> None:
    run = run_cli("prune", str(weights), "--method", "lowrank", cache=tmp_path / "cache")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().startswith("error:") and "--model" in run.stderr
