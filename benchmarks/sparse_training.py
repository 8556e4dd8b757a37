"""Sparse training at laptop scale: source 002 Tables 3.1, 3.2 and 4.7 in their shape.

Data: the 8x8 digits (``tailwise.data.digits_loaders``: 1437 training / 360 test images).
Model: ``SmallCNN(channels=(32, 64))`` (two 3x3 convs with BatchNorm, a linear head; 21 280
weights). Every run trains ``--epochs`` epochs of SGD (lr 0.05 divided by 10 after 2/3 of
the epochs, momentum 0.9, weight decay 5e-4, batches of 64) through ``tailwise.train.fit``,
the splitting methods wrapped around that SGD; accuracy is measured on the test split
with the *deployed* weights (u for RVSM / RGSM, the masked W for ADMM), and

* sparsity: the share of exact zeros over all Linear/Conv weights (source 002 Table 3.2);
* channel sparsity: the share of conv output channels with l2 norm < 1e-15 (002 §4.2.3);
* "acc., BN re-estimated": the accuracy again after one pass over the training data that
  recomputes the BatchNorm running statistics for the deployed weights (they were kept on
  w's activations; a zeroed or shrunk channel changes what its BatchNorm sees). Not part of
  002's protocol; shown because it separates the sparsity pattern from that mismatch.
* "compact": the BN-re-estimated model with its zero channels physically removed
  (``tailwise.prune.remove_zero_channels``): its accuracy and its Linear/Conv weight count
  as a share of the dense model's (100%: nothing removable).

Runs (each over ``--seeds`` seeds: model initialization and data order):

* ``SGD``: the wrapped optimizer alone (the base model).
* ``RVSM l0 / Tl1 / l1`` (Table 3.1): the same lambda and beta for the three penalties, as in
  002 (they differ only in the threshold: sqrt(2t) > 2t > t for t = lambda / beta < 1/2).
* ``ADMM`` (Table 3.2): ``sparsity=0.6`` (002's "pruning threshold 60%") with rho = 1e-2,
  one round per epoch, hard pruning after 2/3 of the epochs (at the lr drop), masked
  retraining after; and ADMM at 0.8, the sparsity RVSM l0 reaches here.
* ``RGSM`` and structured ``ADMM`` (Table 4.7): channel pruning of the two convolutions.

Run: ``python benchmarks/sparse_training.py [--epochs 30] [--seeds 3] [--workers 2]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from _common import limit_threads, machine_header, markdown_table
from tailwise.data import digits_loaders
from tailwise.models import SmallCNN
from tailwise.prune import remove_zero_channels
from tailwise.train import Callback, evaluate, fit, recalibrate_batch_norm
from tailwise.train.splitting import (
    ADMM,
    RGSM,
    RVSM,
    SplittingOptimizer,
    channel_sparsity,
    sparsity,
    splittable_weights,
)

CONVS = r"^features\."  # the convolution weights (RGSM's channels); the head is excluded


@dataclass(frozen=True)
class Setting:
    """One row of the table: a method and its hyper-parameters (picklable for the workers)."""

    name: str
    table: str
    kind: str  # "sgd", "rvsm", "admm", "rgsm"
    penalty: str = ""
    lam: float = 0.0
    beta: float = 0.0
    share: float = 0.0
    structured: bool = False

    @property
    def params(self) -> str:
        if self.kind == "rvsm":
            return f"lam={self.lam:g}, beta={self.beta:g}"
        if self.kind == "rgsm":
            return f"{self.penalty}, lam1={self.lam:g}, beta={self.beta:g}, lam2=1e-5"
        if self.kind == "admm":
            return f"sparsity={self.share:g}, rho=1e-2"
        return ""

    def build(
        self, model: nn.Module, sgd: torch.optim.Optimizer, every: int
    ) -> SplittingOptimizer | None:
        convs = splittable_weights(model, include=CONVS)
        if self.kind == "rvsm":
            return RVSM(sgd, model, penalty=self.penalty, lam=self.lam, beta=self.beta, a=1.0)
        if self.kind == "rgsm":
            return RGSM(sgd, convs, penalty=self.penalty, lam1=self.lam, beta=self.beta, lam2=1e-5)
        if self.kind == "admm":
            params = convs if self.structured else model
            return ADMM(
                sgd,
                params,
                sparsity=self.share,
                rho=1e-2,
                update_every=every,
                structured=self.structured,
            )
        return None


def settings() -> list[Setting]:
    """The rows: 002's shapes, with hyper-parameters scaled to this small problem."""
    return [
        Setting("SGD", "base", "sgd"),
        # Table 3.1: one lambda and beta, three penalties.
        Setting("RVSM l0", "3.1", "rvsm", "l0", 3e-4, 0.1),
        Setting("RVSM Tl1 (a=1)", "3.1", "rvsm", "tl1", 3e-4, 0.1),
        Setting("RVSM l1", "3.1", "rvsm", "l1", 3e-4, 0.1),
        # Table 3.2: RVSM l0 against ADMM at 002's 60%, and ADMM at RVSM's sparsity.
        Setting("RVSM l0", "3.2", "rvsm", "l0", 1e-4, 0.1),
        Setting("ADMM", "3.2", "admm", share=0.6),
        Setting("ADMM", "3.2", "admm", share=0.8),
        # Table 4.7 (channels): RGSM against structured ADMM.
        Setting("RGSM group lasso", "4.7", "rgsm", "group_l1", 0.05, 1.0),
        Setting("RGSM group l0", "4.7", "rgsm", "group_l0", 0.2, 1.0),
        Setting("ADMM channels", "4.7", "admm", share=0.25, structured=True),
        Setting("ADMM channels", "4.7", "admm", share=0.75, structured=True),
    ]


class _EpochSchedule(Callback):
    """Steps a torch lr scheduler after every epoch of ``fit``."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        self.scheduler.step()


def run(setting: Setting, seed: int, epochs: int) -> tuple[float, ...]:
    """(accuracy, accuracy with re-estimated BatchNorm statistics, sparsity, channel
    sparsity, accuracy and weight share of the compact model, seconds) of one training run."""
    limit_threads(1)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = SmallCNN(channels=(32, 64))
    train, test = digits_loaders(batch_size=64, seed=seed)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    wrapper = setting.build(model, sgd, every=len(train))  # ADMM: one round per epoch
    optimizer = wrapper if wrapper is not None else sgd
    drop = (2 * epochs) // 3  # lr / 10 there (002's recipe, scaled); ADMM hard-prunes there
    schedule = _EpochSchedule(torch.optim.lr_scheduler.MultiStepLR(sgd, [drop], 0.1))
    if isinstance(wrapper, ADMM):
        fit(model, train, epochs=drop, optimizer=optimizer, callbacks=[schedule], progress=False)
        wrapper.hard_prune(model)  # then masked retraining through the same optimizer
        fit(
            model,
            train,
            epochs=epochs,
            initial_epoch=drop,
            optimizer=optimizer,
            callbacks=[schedule],
            progress=False,
        )
        deployed = model
    else:
        fit(model, train, epochs=epochs, optimizer=optimizer, callbacks=[schedule], progress=False)
        deployed = wrapper.deploy(model) if wrapper is not None else model
    _, accuracy = evaluate(deployed, test)
    zeros = float(sparsity(deployed).iloc[-1]["sparsity"])
    channels = float(channel_sparsity(deployed, include=CONVS).iloc[-1]["channel_sparsity"])
    recalibrate_batch_norm(deployed, train)
    _, recalibrated = evaluate(deployed, test)
    compact = remove_zero_channels(deployed, torch.zeros(1, 1, 8, 8)).model
    _, compact_accuracy = evaluate(compact, test)
    kept = _weights(compact) / _weights(model)
    return (
        accuracy,
        recalibrated,
        zeros,
        channels,
        compact_accuracy,
        kept,
        time.perf_counter() - start,
    )


def _weights(model: nn.Module) -> int:
    """Entries of the Linear/Conv weights of ``model``."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))


def _mean_sd(values: list[float], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    array = np.asarray(values) * scale
    return f"{array.mean():.2f} ± {array.std(ddof=1) if len(array) > 1 else 0.0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    args = parser.parse_args()
    chosen = settings()
    print(machine_header())
    start = time.perf_counter()
    jobs = [(s, seed) for s in chosen for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run, s, seed, args.epochs) for s, seed in jobs]
        results = [f.result() for f in futures]
    rows = []
    for i, setting in enumerate(chosen):
        mine = results[i * args.seeds : (i + 1) * args.seeds]
        acc, recalibrated, zeros, channels, compact, kept, seconds = (
            list(c) for c in zip(*mine, strict=True)
        )
        rows.append(
            [
                setting.table,
                setting.name,
                setting.params,
                _mean_sd(acc),
                _mean_sd(recalibrated),
                _mean_sd(zeros),
                _mean_sd(channels),
                _mean_sd(compact),
                _mean_sd(kept),
                f"{np.mean(seconds):.1f} s",
            ]
        )
    print()
    print(
        f"digits, SmallCNN(32, 64), {args.epochs} epochs, seeds 0..{args.seeds - 1}: "
        "mean ± sd over seeds (percent)"
    )
    header = [
        "002",
        "method",
        "settings",
        "accuracy",
        "acc., BN re-estimated",
        "sparsity",
        "channel sparsity",
        "acc., compact",
        "weights kept, compact",
        "time",
    ]
    print(markdown_table(header, rows))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s with {args.workers} workers")


if __name__ == "__main__":
    main()
