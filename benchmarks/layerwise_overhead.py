"""Cost of re-measuring every layer's alpha (LayerwiseLR) relative to one training epoch.

Model: CIFAR ResNet18 (``tailwise.models.resnet18()``, 11.2M parameters) with the groups of
``layer_param_groups`` (TempBalance's selection: 19 convs with their BatchNorms; stem, head
and nothing else at the base rate). Data: random 3x32x32 images, batches of 128, SGD with
momentum 0.9 and weight decay 5e-4 through ``tailwise.train.fit``.

* recompute: one ``LayerwiseLR.step()`` -- the ESD of every layer group from the current
  weights (``esd.eigenvalues``; ``eigenvalues_batch`` off the CPU), the power-law fit
  (``alpha="median"``, TempBalance's; and ``"ks"``, analyze's default), the allocation;
  best of ``--repeat``.
* epoch: a full CIFAR epoch is 50 000 images = 391 batches of 128. On a small CPU that takes
  far too long, so ``--batches`` batches are timed (after 2 warm-up batches) and the epoch
  is extrapolated: epoch = 391 x the mean batch time. The output says so.

Budget: recomputing once per epoch (TempBalance) should cost under 5% of an epoch on the CPU
and under 1% on a GPU. The last column is TempBalance-style recomputation after every
optimizer step (unit="step"): the ratio of a recompute to one training batch.

Run: ``python benchmarks/layerwise_overhead.py [--batches 20] [--repeat 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from torch import nn

from _common import best_of, fmt_seconds, machine_header, markdown_table, thread_report
from tailwise.models import resnet18
from tailwise.train import LayerwiseLR, fit, layer_param_groups

CIFAR_TRAIN = 50_000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    groups = layer_param_groups(model, 0.1)
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4)


def time_recompute(model: nn.Module, alpha: str, repeat: int, device: torch.device) -> float:
    optimizer = make_optimizer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = LayerwiseLR(optimizer, model, total_steps=10_000, alpha=alpha)

    def step() -> None:
        scheduler.step()
        sync(device)

    seconds, _ = best_of(step, repeat)
    return seconds


def time_batches(
    model: nn.Module, batches: int, batch_size: int, device: torch.device
) -> tuple[float, int]:
    """Mean seconds per training batch (after 2 warm-up batches), and the groups' count."""
    generator = torch.Generator().manual_seed(0)
    data = [
        (
            torch.randn(batch_size, 3, 32, 32, generator=generator).to(device),
            torch.randint(0, 10, (batch_size,), generator=generator).to(device),
        )
        for _ in range(batches)
    ]
    optimizer = make_optimizer(model)
    fit(model, data[:2], epochs=1, optimizer=optimizer, progress=False)  # warm-up
    sync(device)
    start = time.perf_counter()
    fit(model, data, epochs=1, optimizer=optimizer, progress=False)
    sync(device)
    return (time.perf_counter() - start) / batches, len(optimizer.param_groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="training batches timed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="recomputes timed (best of)")
    parser.add_argument(
        "--device", action="append", help="cpu / cuda (default: cpu, and cuda if available)"
    )
    args = parser.parse_args()
    devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

    print(machine_header())
    print(thread_report())
    per_epoch = math.ceil(CIFAR_TRAIN / args.batch_size)
    rows = []
    for name in devices:
        device = torch.device(name)
        budget = 0.05 if device.type == "cpu" else 0.01
        torch.manual_seed(0)
        model = resnet18().to(device)
        batch, groups = time_batches(model, args.batches, args.batch_size, device)
        epoch = batch * per_epoch
        for alpha in ("median", "ks"):
            recompute = time_recompute(model, alpha, args.repeat, device)
            ratio = recompute / epoch
            rows.append(
                [
                    name,
                    f'alpha="{alpha}"',
                    groups,
                    fmt_seconds(recompute),
                    fmt_seconds(batch),
                    fmt_seconds(epoch),
                    f"{100 * ratio:.2f}%",
                    f"{100 * budget:.0f}%",
                    "yes" if ratio <= budget else "NO",
                    f"{recompute / batch:.2f}x",
                ]
            )
    print()
    print(
        f"Epoch = {per_epoch} batches of {args.batch_size} ({CIFAR_TRAIN} CIFAR-sized images), "
        f"EXTRAPOLATED from {args.batches} timed batches of random 3x32x32 images."
    )
    header = [
        "device",
        "fit",
        "param groups",
        "recompute",
        "train batch",
        "epoch (est.)",
        "recompute / epoch",
        "budget",
        "within",
        "recompute / batch (per step)",
    ]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
