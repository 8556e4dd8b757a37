"""Attack throughput of tailwise.attacks vs torchattacks 3.5.1 on the same model and batch.

Model and data (built here, no downloads): ``preact_resnet20`` (CIFAR-sized, 0.27M
parameters, BatchNorm) at its seeded initialization, in eval mode, float32; one batch of
``--batch`` images of 3 x 32 x 32 drawn uniformly from [0, 1], labelled with the model's own
predictions (so every example starts correctly classified and every attack has work to do).

Attacks, each with the same parameters in both libraries:

- FGSM, eps 8/255;
- PGD-10 without random start (IFGSM), eps 8/255, alpha 2/255;
- C&W L2, c 1, kappa 0, lr 0.01, ``--cw-steps`` Adam steps (default 50).

For each: images per second of both (best of ``--repeat`` runs), their ratio, the number of
forward passes each made (counted by a forward hook), the time per forward-and-backward step
(the fair comparison when the step counts differ), the largest |x_ours - x_theirs| over the
batch, and the share of examples each leaves misclassified. FGSM and PGD are expected to
agree to float rounding. C&W differs by design: torchattacks masks the true logit to 0 in its
margin (wrong for negative logits, its issue #184), starts at atanh(2x - 1) (infinite at
pixels 0 and 1) and stops the whole batch early when its summed loss rose since the check a
tenth of the steps before; tailwise masks to -inf, starts at atanh(0.999999 (2x - 1)) and
stops each example on its own (``abort_early``: two checks in a row without progress; the row
"without abort_early" runs every step). The forward count is of calls: tailwise's later calls
carry only the examples still running. The last column is the mean L2 distance of the
misclassified examples (smaller is a stronger attack at equal success).
torchattacks' C&W calls ``backward()`` with the model's parameters requiring gradients, so
each of its steps also computes (and accumulates in ``.grad``) every weight gradient.

Run: ``python benchmarks/attacks_vs_torchattacks.py [--batch 64] [--repeat 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from _common import (
    best_of,
    fmt_ratio,
    fmt_seconds,
    limit_threads,
    machine_header,
    markdown_table,
    quiet,
    thread_report,
)
from tailwise.attacks import cw_l2, fgsm, ifgsm
from tailwise.models import preact_resnet20

EPS, ALPHA, PGD_STEPS = 8 / 255, 2 / 255, 10

Attack = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Result:
    seconds: float
    forwards: int
    images: Tensor


class ForwardCounter:
    """Counts the calls of a model's forward (one per attack step)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: object, output: object) -> None:
        self.calls += 1


def measure(attack: Attack, x: Tensor, y: Tensor, counter: ForwardCounter, repeat: int) -> Result:
    attack(x, y)  # warm-up
    counter.calls = 0
    seconds, images = best_of(lambda: attack(x, y), repeat)
    return Result(seconds, counter.calls // max(1, repeat), images)


def per_forward(result: Result) -> str:
    """Time per attack step (forward and backward)."""
    return fmt_seconds(result.seconds / max(1, result.forwards))


def error_rate(model: nn.Module, images: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(dim=1) != y).float().mean())


def mean_l2(model: nn.Module, x: Tensor, images: Tensor, y: Tensor) -> float:
    """Mean L2 distance ||x' - x|| over the examples that ``images`` misclassify (nan: none)."""
    with torch.no_grad():
        fooled = model(images).argmax(dim=1) != y
    if not bool(fooled.any()):
        return float("nan")
    return float((images - x)[fooled].flatten(1).norm(dim=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cw-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        limit_threads(args.threads)
    import torchattacks

    torch.manual_seed(args.seed)
    model = preact_resnet20().eval()
    counter = ForwardCounter(model)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, 32, 32, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(dim=1)

    pairs: dict[str, tuple[Attack, Attack]] = {
        "FGSM": (
            functools.partial(fgsm, model, eps=EPS),
            torchattacks.FGSM(model, eps=EPS),
        ),
        f"PGD-{PGD_STEPS} (no random start)": (
            functools.partial(ifgsm, model, eps=EPS, alpha=ALPHA, steps=PGD_STEPS),
            torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=PGD_STEPS, random_start=False),
        ),
        f"C&W L2, {args.cw_steps} steps": (
            functools.partial(cw_l2, model, c=1.0, kappa=0.0, steps=args.cw_steps, lr=0.01),
            torchattacks.CW(model, c=1.0, kappa=0.0, steps=args.cw_steps, lr=0.01),
        ),
        f"C&W L2, {args.cw_steps} steps, tailwise without abort_early": (
            functools.partial(
                cw_l2, model, c=1.0, kappa=0.0, steps=args.cw_steps, lr=0.01, abort_early=False
            ),
            torchattacks.CW(model, c=1.0, kappa=0.0, steps=args.cw_steps, lr=0.01),
        ),
    }
    header = [
        "attack",
        "tailwise",
        "torchattacks",
        "tailwise img/s",
        "torchattacks img/s",
        "speed-up",
        "forwards (ours / theirs)",
        "per forward (ours / theirs)",
        "max |x_ours - x_theirs|",
        "misclassified (ours / theirs)",
        "mean L2 of those (ours / theirs)",
    ]
    rows = []
    for name, (ours, theirs) in pairs.items():
        with quiet():
            mine = measure(ours, x, y, counter, args.repeat)
            other = measure(theirs, x, y, counter, args.repeat)
        rows.append(
            [
                name,
                fmt_seconds(mine.seconds),
                fmt_seconds(other.seconds),
                f"{args.batch / mine.seconds:.0f}",
                f"{args.batch / other.seconds:.0f}",
                fmt_ratio(other.seconds, mine.seconds),
                f"{mine.forwards} / {other.forwards}",
                f"{per_forward(mine)} / {per_forward(other)}",
                f"{float((mine.images - other.images).abs().max()):.2g}",
                f"{error_rate(model, mine.images, y):.0%} / "
                f"{error_rate(model, other.images, y):.0%}",
                f"{mean_l2(model, x, mine.images, y):.3f} / "
                f"{mean_l2(model, x, other.images, y):.3f}",
            ]
        )
    print(machine_header())
    print(thread_report())
    print(
        f"preact_resnet20 (eval, float32), batch {args.batch} of 3x32x32 in [0, 1], "
        f"best of {args.repeat}; speed-up = torchattacks time / tailwise time\n"
    )
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
