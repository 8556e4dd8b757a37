"""Does a layer-wise learning rate help? Source 000 ch. 2 / TempBalance at laptop scale.

Trains the same model from the same seeds three ways with ``tailwise.train.train_run`` (what
``tailwise train`` runs): the baseline (SGD, momentum 0.9, weight decay 5e-4, cosine from
``--lr``, every layer at the base rate), TempBalance's linear map (``--layerwise tb``,
s = (0.5, 1.5)) and source 000's square-root allocation (``--layerwise sqrt``, eq. 2.13 on
sqrt(alpha)), alphas re-measured after every epoch. Prints the final and best test accuracy,
mean and spread over the seeds, and the difference to the baseline per seed (paired).

Settings (defaults): ResNet20 at 1/4 width (widths 4/8/16, 17k parameters) on scikit-learn's
8x8 digits (1437 train / 360 test); and an MLP 40-512-256-128-10 on MNIST-1D (3200 train /
800 test, from the ``mnist1d`` generator).

Run: ``python benchmarks/layerwise_accuracy.py [--epochs 30] [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from _common import machine_header, markdown_table, thread_report
from tailwise.train import train_run

SETTINGS = {
    "resnet20/4 digits": {"model": "resnet20", "width": 0.25, "data": "digits", "batch_size": 64},
    "mlp mnist1d": {"model": "mlp", "data": "mnist1d", "batch_size": 128},
}
MAPPINGS = (None, "tb", "sqrt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", choices=sorted(SETTINGS), action="append")
    args = parser.parse_args()
    print(machine_header())
    print(thread_report())
    rows = []
    for setting in args.setting or list(SETTINGS):
        final: dict[str | None, list[float]] = {}
        best: dict[str | None, list[float]] = {}
        for mapping in MAPPINGS:
            for seed in args.seeds:
                config = {
                    **SETTINGS[setting],
                    "epochs": args.epochs,
                    "lr": args.lr,
                    "layerwise": mapping,
                    "seed": seed,
                }
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # degenerate-layer notes
                    run = train_run(config, progress=False)
                final.setdefault(mapping, []).append(float(run.metrics["test_acc"].iloc[-1]))
                best.setdefault(mapping, []).append(run.best_acc)
                print(
                    f"{setting} {mapping or 'baseline'} seed {seed}: final "
                    f"{final[mapping][-1]:.4f} best {run.best_acc:.4f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        for mapping in MAPPINGS:
            diffs = [a - b for a, b in zip(final[mapping], final[None], strict=True)]
            rows.append(
                [
                    setting,
                    mapping or "baseline (cosine)",
                    f"{100 * statistics.mean(final[mapping]):.2f} "
                    f"+- {100 * statistics.stdev(final[mapping]):.2f}",
                    f"{100 * min(final[mapping]):.2f} / {100 * max(final[mapping]):.2f}",
                    f"{100 * statistics.mean(best[mapping]):.2f}",
                    "" if mapping is None else " ".join(f"{100 * d:+.2f}" for d in diffs),
                ]
            )
    print()
    print(f"{len(args.seeds)} seeds {args.seeds}, {args.epochs} epochs, lr {args.lr}")
    header = [
        "setting",
        "lr allocation",
        "final test acc % (mean +- sd)",
        "min / max",
        "best-epoch acc % (mean)",
        "final vs baseline per seed (points)",
    ]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
