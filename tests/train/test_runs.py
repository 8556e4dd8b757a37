"""Training runs: the run directory, resuming after a real SIGKILL, fine-tuning a pruned
model, and the errors a user can hit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tailwise import UsageError, load_model
from tailwise.models import MLP
from tailwise.train import (
    LR_MAPPINGS,
    TrainConfig,
    finetune,
    read_metrics,
    train_run,
)

SRC = Path(__file__).resolve().parents[2] / "src"

# ResNet20 at 1/4 width on 8x8 digits, with BatchNorm, augmentation and layer-wise rates: every
# piece of state a resume must restore (weights, BN statistics, momentum, the schedule's
# alphas and random generator, the loader's epoch) is in play.
RESUMABLE: dict[str, Any] = {
    "model": "resnet20",
    "width": 0.25,
    "data": "digits",
    "epochs": 5,
    "batch_size": 128,
    "layerwise": "normal",
    "augment": "standard",
    "seed": 3,
}


def _weights(run_dir: Path, name: str = "last.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / name))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        # The same operations in the same order on one machine: equal up to float noise
        # (no claim of bit-exactness across BLAS builds).
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_a_run_directory_holds_config_metrics_checkpoints_and_state(tmp_path: Path) -> None:
    config = {**RESUMABLE, "epochs": 3, "schedule": "step", "layerwise": "sqrt"}
    run = train_run(config, tmp_path / "run", progress=False)
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.safetensors",
        "config.json",
        "last.safetensors",
        "metrics.jsonl",
        "state.pt",
    ]
    stored = json.loads((run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(stored) == TrainConfig.from_dict(config)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # step schedule over 3 epochs: x0.1 at epochs 1 and 2 (50% and 75%, at least 1)
    assert [row["lr"] for row in rows] == pytest.approx([0.1, 0.01, 0.001])
    for row in rows:
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1
        assert set(row["lrs"]) == set(row["alphas"]) and len(row["lrs"]) >= 10
        # "sqrt" is normalized: the mean layer lr is the base lr (eq. 2.13 on sqrt(alpha))
        mean = sum(row["lrs"].values()) / len(row["lrs"])
        assert mean == pytest.approx(row["lr"], rel=1e-9)
        assert len(set(row["lrs"].values())) > 1
    table = read_metrics(run_dir)
    assert list(table["epoch"]) == [1, 2, 3]
    assert {f"alpha[{name}]" for name in rows[0]["alphas"]} <= set(table.columns)
    assert table.equals(run.metrics)
    best = max(range(3), key=lambda i: (rows[i]["test_acc"], -i))
    assert run.best_epoch == best + 1 and run.best_acc == rows[best]["test_acc"]
    # the checkpoints load as models (architecture in the file) and are the trained weights
    model = load_model(run_dir / "last.safetensors")
    state = run.model.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key].cpu(), rtol=0, atol=0)
    best_meta = load_model(run_dir / "best.safetensors")
    assert isinstance(best_meta, nn.Module)


def test_the_baseline_records_alphas_and_gives_every_layer_the_base_rate(tmp_path: Path) -> None:
    run = train_run({**RESUMABLE, "epochs": 2, "layerwise": None, "augment": None}, progress=False)
    lr_columns = [c for c in run.metrics.columns if c.startswith("lr[")]
    alpha_columns = [c for c in run.metrics.columns if c.startswith("alpha[")]
    assert lr_columns and len(alpha_columns) == len(lr_columns)
    for _, row in run.metrics.iterrows():
        assert all(row[c] == pytest.approx(row["lr"]) for c in lr_columns)
        assert all(1 < row[c] < 20 for c in alpha_columns)


def _spawn(config: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    code = (
        "import json, sys\n"
        "from tailwise.train import train_run\n"
        "train_run(json.loads(sys.argv[1]), sys.argv[2], progress=False)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(config), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _completed_epochs(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    return len(metrics.read_text().splitlines())


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole"
    uninterrupted = train_run(RESUMABLE, whole, progress=False)

    killed = tmp_path / "killed"
    process = _spawn(RESUMABLE, killed)
    deadline = time.monotonic() + 240
    while _completed_epochs(killed) < 2:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the run did not finish 2 epochs in 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done = _completed_epochs(killed)
    assert 2 <= done < RESUMABLE["epochs"], "the run finished before it could be killed"

    with pytest.raises(UsageError, match="already holds a run"):
        train_run(RESUMABLE, killed, progress=False)
    resumed = train_run({}, killed, resume=True, progress=False)  # settings from config.json
    assert resumed.resumed_from >= done
    _assert_same_weights(_weights(whole), _weights(killed))
    assert list(resumed.metrics["epoch"]) == list(range(1, RESUMABLE["epochs"] + 1))
    for column in ("train_loss", "test_acc", "lr"):
        assert resumed.metrics[column].tolist() == pytest.approx(
            uninterrupted.metrics[column].tolist(), rel=1e-5, abs=1e-7
        )
    alphas = [c for c in uninterrupted.metrics.columns if c.startswith("alpha[")]
    assert resumed.metrics[alphas].to_numpy() == pytest.approx(
        uninterrupted.metrics[alphas].to_numpy(), rel=1e-4
    )


def test_resume_continues_from_the_last_completed_epoch(tmp_path: Path) -> None:
    """In process: a run of 3 epochs, extended to 4 by resuming is not allowed (settings
    differ), while resuming a finished run returns at once with its metrics."""
    config = {**RESUMABLE, "model": "mlp", "width": 1.0, "augment": None, "epochs": 2}
    first = train_run(config, tmp_path / "run", progress=False)
    again = train_run(config, tmp_path / "run", resume=True, progress=False)
    assert again.resumed_from == 2
    assert again.metrics.equals(first.metrics)
    _assert_same_weights(first.model.state_dict(), again.model.state_dict())
    with pytest.raises(UsageError, match=r"different settings \(epochs: 2 -> 4\)"):
        train_run({**config, "epochs": 4}, tmp_path / "run", resume=True, progress=False)


def test_resume_in_an_empty_folder_starts_afresh(tmp_path: Path) -> None:
    config = {"model": "mlp", "data": "digits", "epochs": 1, "batch_size": 256}
    run = train_run(config, tmp_path / "new", resume=True, progress=False)
    assert run.resumed_from == 0 and list(run.metrics["epoch"]) == [1]


def test_a_regularized_run_resumes_with_the_regularizer_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash right after epoch 1's commit point (state.pt written), then a resume: the
    regularizer's step count and phase (L2 before tau, Selective L2 after) carry over."""
    config = {
        "model": "mlp",
        "data": "digits",
        "epochs": 2,
        "batch_size": 256,
        "regularizer": "l2-stopped-selective",
        "reg_tau": 1,
        "reg_lambda": 1e-3,
    }
    whole = train_run(config, tmp_path / "whole", progress=False)
    state = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)
    assert state["regularizer"]["steps"] == 2 * 6  # 1437 images in batches of 256

    _crash_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "crashed", progress=False)
    assert _completed_epochs(tmp_path / "crashed") == 1
    resumed = train_run({}, tmp_path / "crashed", resume=True, progress=False)
    assert resumed.resumed_from == 1
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "crashed"))
    assert resumed.metrics["train_loss"].tolist() == pytest.approx(
        whole.metrics["train_loss"].tolist(), rel=1e-6
    )


@pytest.mark.parametrize("mapping", LR_MAPPINGS)
def test_every_mapping_trains(mapping: str) -> None:
    config = {"model": "mlp", "data": "digits", "epochs": 1, "batch_size": 256}
    run = train_run({**config, "layerwise": mapping}, progress=False)
    assert run.metrics["train_loss"].notna().all()


def test_finetune_a_pruned_model_with_layerwise_rates_keeps_pruned_weights_zero() -> None:
    from tailwise.data import digits_loaders
    from tailwise.prune import prune_magnitude
    from tailwise.train import fit

    torch.manual_seed(0)
    model = MLP(64, [256, 256, 128], 10)
    train, _ = digits_loaders(batch_size=64, seed=0, flatten=True)
    fit(model, train, epochs=3, lr=0.1, progress=False, seed=0)
    model = prune_magnitude(model, 0.9, progress=False).model
    masks = {
        name: module.weight_mask.clone()
        for name, module in model.named_modules()
        if hasattr(module, "weight_mask")
    }
    assert masks
    result = finetune(model, "digits", epochs=2, lr=0.02, layerwise="tb", progress=False)
    assert result.model is model
    assert result.accuracy_after > result.accuracy_before
    lr_columns = [c for c in result.metrics.columns if c.startswith("lr[")]
    assert lr_columns, "the pruned layers got layer-wise rates"
    for name, mask in masks.items():
        module = model.get_submodule(name)
        weight = module.weight_orig * module.weight_mask
        assert torch.all(weight[mask == 0] == 0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": "resnet99"}, "unknown model 'resnet99'"),
        ({"model": "resnet20", "data": "mnist1d"}, "only 'mlp' takes them"),
        ({"model": "lenet5", "data": "digits"}, "cannot take the digits inputs"),
        ({"model": "mlp", "layerwise": "fancy"}, "layerwise must be one of"),
        ({"model": "mlp", "epochs": 0}, "epochs must be an int >= 1"),
        ({"model": "mlp", "lr": -1.0}, "lr must be a number > 0"),
        ({"model": "mlp", "schedule": "linear"}, "schedule must be one of cosine, step"),
        ({"model": "mlp", "regularizer": "l1"}, "regularizer must be one of"),
        ({"model": "mlp", "shape": 3}, r"unknown field\(s\) \['shape'\]"),
        ({"model": "mlp", "data": "no/such/folder"}, "no/such/folder"),
    ],
)
def test_bad_settings_are_clear_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        train_run({"epochs": 1, **config}, progress=False)


def test_a_file_where_the_run_folder_should_be_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("not a folder")
    with pytest.raises(UsageError, match="is a file"):
        train_run({"model": "mlp", "epochs": 1}, target, progress=False)
    assert target.read_text() == "not a folder"


def test_a_damaged_state_file_is_named(tmp_path: Path) -> None:
    config = {"model": "mlp", "data": "digits", "epochs": 1, "batch_size": 256}
    train_run(config, tmp_path / "run", progress=False)
    (tmp_path / "run" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(UsageError, match=r"state\.pt: not a readable tailwise run state"):
        train_run(config, tmp_path / "run", resume=True, progress=False)


def _crash_after(monkeypatch: pytest.MonkeyPatch, epochs: int) -> None:
    """Make the next run raise right after its ``epochs``-th commit point."""
    from tailwise.train import runs

    commit = runs._EpochLog._commit
    count = {"n": 0}

    def crashing(self: Any, *args: Any) -> None:
        commit(self, *args)
        count["n"] += 1
        if count["n"] == epochs:
            monkeypatch.setattr(runs._EpochLog, "_commit", commit)
            raise KeyboardInterrupt

    monkeypatch.setattr(runs._EpochLog, "_commit", crashing)


SPARSE_RUNS = {
    "rvsm-l0": {"sparse": "rvsm-l0", "sparse_lam": 1e-4, "sparse_beta": 0.1},
    "rgsm": {"sparse": "rgsm-group_l1", "sparse_lam": 1e-2, "sparse_beta": 1.0},
    "admm": {"sparse": "admm", "sparse_ratio": 0.7, "epochs": 4},
    "pgd+rvsm": {
        "adversarial": "pgd2",
        "adv_eps": 0.1,
        "sparse": "rvsm-l1",
        "sparse_lam": 1e-4,
        "sparse_beta": 0.1,
    },
}


@pytest.mark.parametrize("name", sorted(SPARSE_RUNS))
def test_sparse_and_adversarial_runs_resume_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """RVSM's u, RGSM, ADMM's Z / U and its hard-pruning masks (pruned after epoch 2 of 4),
    and PGD training's random starts all survive a crash: the resumed run ends with the
    uninterrupted run's weights and metrics."""
    config = {
        "model": "smallcnn",
        "data": "digits",
        "epochs": 3,
        "batch_size": 128,
        **SPARSE_RUNS[name],
    }
    whole = train_run(config, tmp_path / "whole", progress=False)
    _crash_after(monkeypatch, 3 if name == "admm" else 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "crashed", progress=False)
    resumed = train_run({}, tmp_path / "crashed", resume=True, progress=False)
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "crashed"))
    for column in ("train_loss", "test_acc", "sparsity"):
        assert resumed.metrics[column].tolist() == pytest.approx(
            whole.metrics[column].tolist(), rel=1e-5, abs=1e-7
        ), column


def test_sparse_runs_deploy_the_sparse_weights(tmp_path: Path) -> None:
    """The checkpoints hold what is deployed (RVSM's u), whose share of zeros is the logged
    sparsity and whose accuracy is the logged test accuracy; the training weights' accuracy
    is logged beside it."""
    config = {"model": "smallcnn", "data": "digits", "epochs": 2, "batch_size": 128}
    run = train_run({**config, **SPARSE_RUNS["rvsm-l0"]}, tmp_path / "run", progress=False)
    row = run.metrics.iloc[-1]
    assert 0.2 < row["sparsity"] < 1 and 0 <= row["dense_test_acc"] <= 1
    weights = _weights(tmp_path / "run")
    split = [v for k, v in weights.items() if k.endswith("weight") and v.ndim >= 2]
    zeros = sum(int((v == 0).sum()) for v in split) / sum(v.numel() for v in split)
    assert zeros == pytest.approx(row["sparsity"])
    from tailwise.train import accuracy_on

    assert accuracy_on(load_model(tmp_path / "run" / "last.safetensors"), "digits") == (
        pytest.approx(row["test_acc"])
    )
    admm = train_run({**config, **SPARSE_RUNS["admm"], "epochs": 2}, progress=False)
    assert admm.metrics["sparsity"].iloc[-1] == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sparse": "rvsm-l3"}, "sparse must be one of"),
        ({"sparse": "admm", "regularizer": "metric"}, "pick one"),
        ({"adversarial": "pgd"}, "unknown attack 'pgd'"),
        ({"sparse": "admm", "sparse_ratio": 1.0}, r"sparse_ratio must be in \[0, 1\)"),
        ({"sparse_beta": 0.0}, "sparse_beta must be a number > 0"),
    ],
)
def test_bad_sparse_and_adversarial_settings(config: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TrainConfig.from_dict({"model": "mlp", **config})


def test_bad_devices_and_run_folders_are_clear_errors_before_any_work(tmp_path: Path) -> None:
    config = {"model": "mlp", "epochs": 1, "batch_size": 256}
    with pytest.raises(UsageError, match="'bogus' is not a torch device"):
        train_run(config, device="bogus", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            train_run(config, device="cuda", progress=False)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="afile is a file"):
        train_run(config, blocker / "run", progress=False)
    assert blocker.read_text() == "x"


def test_a_hostile_config_json_is_refused_not_parsed_into_a_crash(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match=r"config\.json: not a readable run config"):
        train_run({}, run_dir, resume=True, progress=False)


def test_sparse_bn_recalibrates_the_deployed_model(tmp_path: Path) -> None:
    """With sparse_bn the checkpoint's BatchNorm statistics are those of the deployed u (one
    pass over the training data), and the logged accuracy is that model's."""
    config = {"model": "smallcnn", "data": "digits", "epochs": 1, "batch_size": 128}
    sparse = {**SPARSE_RUNS["rgsm"], "sparse_lam": 0.2}
    plain = train_run({**config, **sparse}, tmp_path / "plain", progress=False)
    tuned = train_run({**config, **sparse, "sparse_bn": True}, tmp_path / "bn", progress=False)
    assert tuned.metrics["channel_sparsity"].iloc[-1] == pytest.approx(
        plain.metrics["channel_sparsity"].iloc[-1]
    )
    before, after = _weights(tmp_path / "plain"), _weights(tmp_path / "bn")
    key = next(k for k in after if k.endswith("bn.running_mean"))
    assert not torch.equal(before[key], after[key])
    from tailwise.train import accuracy_on

    assert accuracy_on(load_model(tmp_path / "bn" / "last.safetensors"), "digits") == (
        pytest.approx(tuned.metrics["test_acc"].iloc[-1])
    )
    with pytest.raises(UsageError, match="sparse_bn"):
        TrainConfig.from_dict({"model": "mlp", "sparse_bn": True})
