"""``tailwise train``, ``tailwise compare`` and ``tailwise prune --finetune`` as a user runs
them: real subprocesses, real files (a CIFAR-10 folder in the official binary format)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from _cli import run_cli
from tailwise.models import MLP
from tailwise.train import train_run

FAST = ("--model", "mlp", "--epochs", "2", "--batch-size", "256")


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_a_run_and_resume_of_a_finished_run_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_cli("train", *FAST, "--layerwise", "tb", "--out", str(run_dir), cache=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 epochs; test accuracy" in first.stdout and "best" in first.stdout
    rows = _lines(run_dir / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "mlp" and config["layerwise"] == "tb" and config["epochs"] == 2

    again = run_cli("train", "--out", str(run_dir), "--resume", cache=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "had already finished" in again.stdout

    differ = run_cli("train", "--out", str(run_dir), "--resume", "--epochs", "4", cache=tmp_path)
    assert differ.returncode == 2
    assert "cannot resume" in differ.stderr and "epochs: 2 -> 4" in differ.stderr

    taken = run_cli("train", *FAST, "--out", str(run_dir), cache=tmp_path)
    assert taken.returncode == 2 and "already holds a run" in taken.stderr
    assert _lines(run_dir / "metrics.jsonl") == rows  # nothing overwritten


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "nope"), "unknown model 'nope'"),
        (("--layerwise", "fancy"), "layerwise must be one of"),
        (("--data", "missing-folder"), "missing-folder"),
        (("--resume",), "resume needs the run directory"),
    ],
)
def test_train_bad_options_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_cli("train", "--epochs", "1", *args, cache=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _cifar_folder(root: Path) -> Path:
    """A CIFAR-10 folder in the binary format: 5 train batches of 20 and a test batch of 20
    images whose class is visible in the pixels (so a CNN can learn something)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, 20, dtype=np.uint8)
        pixels = rng.integers(0, 64, (20, 3072), dtype=np.uint8)
        pixels[np.arange(20), labels.astype(np.int64) * 300] = 255
        records = np.hstack([labels[:, None], pixels])
        (folder / name).write_bytes(records.tobytes())
    return root


def test_train_on_a_local_cifar_folder_with_augmentation(tmp_path: Path) -> None:
    data = _cifar_folder(tmp_path / "cifar")
    run_dir = tmp_path / "run"
    result = run_cli(
        "train", "--model", "resnet20", "--width", "0.25", "--data", str(data),
        "--epochs", "1", "--batch-size", "50", "--augment", "standard",
        "--out", str(run_dir), "--quiet", cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    weights = load_file(str(run_dir / "last.safetensors"))
    assert weights["stem.conv.weight"].shape[1] == 3  # three input channels, from the data
    assert weights["head.weight"].shape[0] == 10


@pytest.mark.slow
def test_train_killed_and_resumed_from_the_command_line_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    options = {
        "model": "resnet20",
        "width": 0.25,
        "data": "digits",
        "epochs": 4,
        "batch_size": 128,
        "layerwise": "sqrt",
        "seed": 1,
    }
    whole = train_run(options, tmp_path / "whole", progress=False)
    run_dir = tmp_path / "killed"
    args = [
        "--model", "resnet20", "--width", "0.25", "--epochs", "4", "--batch-size", "128",
        "--layerwise", "sqrt", "--seed", "1", "--out", str(run_dir), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "TAILWISE_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tailwise", "train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 1):
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 4, "the run finished before it could be killed"
    resumed = run_cli("train", "--out", str(run_dir), "--resume", "--quiet", cache=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "whole" / "last.safetensors"))
    b = load_file(str(run_dir / "last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert [row["epoch"] for row in _lines(metrics)] == [1, 2, 3, 4]
    assert list(whole.metrics["epoch"]) == [1, 2, 3, 4]


def test_compare_two_runs_with_cka_on_digits(tmp_path: Path) -> None:
    a = train_run({"model": "mlp", "epochs": 1, "batch_size": 256}, tmp_path / "a", progress=False)
    b = train_run(
        {"model": "mlp", "epochs": 1, "batch_size": 256, "seed": 1}, tmp_path / "b", progress=False
    )
    assert a.run_dir is not None and b.run_dir is not None
    out = tmp_path / "compare.csv"
    result = run_cli(
        "compare", str(a.run_dir / "last.safetensors"), str(b.run_dir / "last.safetensors"),
        "--data", "digits", "--out", str(out), cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    weights = table[table.status == "ok"]
    assert list(weights["name"]) == [f"layers.{i}.weight" for i in range(4)]
    assert weights["cka"].between(0, 1).all()
    assert (weights["rel_frobenius"] > 0).all()
    # a file against itself: zero distances, CKA 1, without data no CKA
    same = run_cli(
        "compare", str(a.run_dir / "last.safetensors"), str(a.run_dir / "best.safetensors"),
        "--out", str(tmp_path / "same.json"), "--quiet", cache=tmp_path,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr
    rows = [r for r in json.loads((tmp_path / "same.json").read_text()) if r["status"] == "ok"]
    assert all(r["rel_frobenius"] == 0 and r["sv_distance"] == 0 for r in rows)
    assert all(r["cka"] is None for r in rows)


def test_compare_with_data_needs_models_not_bare_weights(tmp_path: Path) -> None:
    model = MLP(64, [32], 10)
    save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    result = run_cli(
        "compare", str(tmp_path / "bare.safetensors"), str(tmp_path / "bare.safetensors"),
        "--data", "digits", cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "bare.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_prune_finetune_reports_accuracy_before_pruned_and_after(tmp_path: Path) -> None:
    out = tmp_path / "pruned.safetensors"
    result = run_cli(
        "prune", "--ratio", "0.9", "--allocate", "alpha_pruning", "--finetune", "2",
        "--layerwise", "tb", "--lr", "0.02", "--out", str(out), cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "after fine-tuning" in x)
    before, pruned, after = (float(part.split("%")[0].split()[-1]) for part in line.split(","))
    assert before > 90 and after > pruned - 1  # 2 epochs recover what pruning cost (or more)
    from tailwise.loading import load_model

    tuned = load_model(out)
    weight = tuned.layers[1].weight
    assert float((weight == 0).float().mean()) > 0.5  # the saved model is still pruned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--layerwise", "tb"), "add --finetune"),
        (("--finetune", "-1"), "--finetune must be"),
        (("--finetune", "1", "--layerwise", "fancy"), "layerwise must be one of"),
    ],
)
def test_prune_finetune_bad_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli("prune", *args, cache=tmp_path)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


def test_prune_finetune_of_bare_weights_needs_a_model(tmp_path: Path) -> None:
    model = MLP(64, [32], 10)
    save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    result = run_cli(
        "prune", str(tmp_path / "bare.safetensors"), "--finetune", "1", "--data", "digits",
        cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "records no architecture" in result.stderr


def test_train_sparse_adversarial_then_attack_from_the_command_line(tmp_path: Path) -> None:
    """002 §4.2 on digits: PGD training with RVSM, then the robustness table of the result."""
    run_dir = tmp_path / "run"
    trained = run_cli(
        "train", "--model", "smallcnn", "--epochs", "2", "--batch-size", "128",
        "--adversarial", "pgd2", "--adv-eps", "0.1", "--sparse", "rvsm-l0",
        "--sparse-lam", "1e-4", "--sparse-beta", "0.1", "--out", str(run_dir), cache=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "sparsity" in trained.stdout
    rows = _lines(run_dir / "metrics.jsonl")
    assert all(0 < float(str(row["sparsity"])) < 1 for row in rows)
    out = tmp_path / "robust.csv"
    attacked = run_cli(
        "attack", str(run_dir / "last.safetensors"), "--eps", "0.1", "--samples", "100",
        "--attacks", "natural,fgsm,ifgsm5,cw10", "--out", str(out), cache=tmp_path,
    )  # fmt: skip
    assert attacked.returncode == 0, attacked.stderr
    table = pd.read_csv(out)
    assert list(table["attack"]) == ["natural", "fgsm", "ifgsm5", "cw10"]
    assert (table["examples"] == 100).all() and (table["status"] == "ok").all()
    natural, fgsm, ifgsm = table["accuracy"].iloc[:3]
    assert natural >= fgsm >= ifgsm - 0.05  # iterated attacks are at least about as strong
    assert (table.loc[1:2, "linf"] <= 0.1 + 1e-6).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eps", "8/0"), "--eps must be a number"),
        (("--attacks", "natural,boom"), "unknown attack 'boom'"),
        (("--attacks", ","), "names no attack"),
        (("--data", "mnist1d"), "does not fit mnist1d examples"),
    ],
)
def test_attack_bad_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli("attack", *args, cache=tmp_path)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


def test_attack_a_conv_net_on_the_data_it_was_trained_on(tmp_path: Path) -> None:
    """A ResNet's architecture is described at 32x32 but it was trained on 8x8 digits: the
    data keep their own shape (only an MLP's inputs are reshaped to its vector)."""
    run = train_run(
        {"model": "resnet20", "width": 0.25, "epochs": 1, "batch_size": 256},
        tmp_path / "run",
        progress=False,
    )
    assert run.run_dir is not None
    result = run_cli(
        "attack", str(run.run_dir / "last.safetensors"), "--attacks", "natural,fgsm",
        "--eps", "0.1", "--samples", "32", "--quiet", cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
