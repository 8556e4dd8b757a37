"""Peak memory and time of ``analyze_tails`` / ``mmo_alpha`` on one large embedding, against a
plain NumPy MMO estimator on the same data.

A heavy-tailed float32 tensor of ``--rows`` x ``--cols`` (default 50257 x 768: GPT-2's token
embedding ``wte``, 147 MiB) is written to a temporary ``.safetensors`` file: i.i.d. symmetric
alpha-stable entries (``--alpha``, 1.6 by default) times 0.02. Each measurement runs in a fresh
Python process that imports everything, warms the code up on small data, records its resident
set (the baseline), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``; Linux) and
then reads the tensor from the file and runs one of

* ``analyze_tails``: ``tailwise.tails.analyze_tails(file)`` at its defaults (what ``tailwise
  tails FILE`` runs): the four columns ``alpha_mmo`` (5 permutations), ``alpha_mmo_rows``,
  ``alpha_rownorm`` and ``alpha_hill``;
* ``tailwise mmo_alpha``: ``mmo_alpha(tensor, permutations=p, seed=0)``, the univariate
  estimate alone;
* ``plain NumPy``: the same estimator written out straightforwardly from REFERENCES §4
  (:func:`plain_mmo`): a float64 copy, centred by its median, ln|X|, and for each
  permutation a permuted float64 copy (``x[rng.permutation(N)]``) whose block sums
  (``reshape(n, m).sum(axis=1)``) give 1/alpha = [mean ln|Y| - mean ln|X|] / ln m for each
  block size m; the median over m, then over permutations. Exact zeros are floored at 2.2e-16
  times the median |X| as tailwise does, and the permutations are drawn from the same
  generator, so both compute the same number (the table shows the difference).

Peak = the process's peak RSS (``VmHWM``) minus the baseline; it includes the tensor read from
the file (1x). glibc's mmap threshold is fixed at 1 MiB in the children
(``MALLOC_MMAP_THRESHOLD_``) so that freed buffers leave the resident set, as in
tests/tails/test_tails_memory.py. The ratio rows compare tailwise's ``mmo_alpha`` with the
plain version at the same number of permutations.

Run: ``python benchmarks/tails_memory.py [--quick] [--rows 50257] [--cols 768] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import fmt_ratio, fmt_seconds, machine_header, markdown_table

MIB = 2**20
NAME = "wte.weight"
MODES = ("analyze_tails", "tailwise mmo_alpha", "plain NumPy")


# ---------------------------------------------------------------------------------------------
# The plain NumPy estimator (the baseline)


def plain_mmo(weights: np.ndarray, permutations: int, seed: int) -> float:
    """MMO tail index of all entries, REFERENCES §4 mean form, in straightforward NumPy.

    1/alpha = [(1/n) sum_i ln|Y_i| - (1/N) sum_j ln|X_j|] / ln m with X the median-centred
    entries, Y_i the sums of n = N // m consecutive blocks of m entries; the median over the
    block sizes {2, 5, 10, 20, 50, 100, 500, 1000} (m <= N / 2) and the largest divisor of N
    <= sqrt(N); with ``permutations`` p > 0 the median over p random orders of the entries.
    """
    x = weights.astype(np.float64).reshape(-1)
    x -= np.median(x)
    total = x.size
    divisor = next(d for d in range(math.isqrt(total), 0, -1) if total % d == 0)
    sizes = sorted({m for m in (2, 5, 10, 20, 50, 100, 500, 1000) if m <= total / 2} | {divisor})
    sizes = [m for m in sizes if m > 1]
    magnitudes = np.abs(x)
    floor = np.finfo(np.float64).eps * np.median(magnitudes)
    mean_log_x = np.log(np.maximum(magnitudes, floor)).mean()
    del magnitudes
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(max(1, permutations)):
        shuffled = x[rng.permutation(total)] if permutations else x
        alphas = []
        for m in sizes:
            n = total // m
            sums = np.abs(shuffled[: n * m].reshape(n, m).sum(axis=1))
            inverse = (np.log(np.maximum(sums, floor)).mean() - mean_log_x) / np.log(m)
            alphas.append(1.0 / inverse if inverse > 0 else np.inf)
        estimates.append(np.median(alphas))
        del shuffled
    return float(np.median(estimates))


# ---------------------------------------------------------------------------------------------
# Child process: one measurement


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(mode: str, path: Path, permutations: int) -> None:
    import gc

    import torch
    from safetensors.numpy import load_file

    from tailwise.tails import analyze_tails, mmo_alpha

    small = np.random.default_rng(1).standard_cauchy((256, 64)).astype(np.float32)
    analyze_tails(torch.nn.Linear(64, 32), progress=False)  # warm-up: lazy imports
    mmo_alpha(small, permutations=1)
    plain_mmo(small, 1, 0)
    gc.collect()
    baseline = _status_kib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    estimates: dict[str, float]
    if mode == "analyze_tails":
        df = analyze_tails(path, progress=False)
        row = df.iloc[0]
        estimates = {c: float(row[c]) for c in df.columns if c.startswith("alpha_")}
    else:
        weights = load_file(str(path))[NAME]
        if mode == "plain NumPy":
            estimates = {"alpha_mmo": plain_mmo(weights, permutations, 0)}
        else:
            estimates = {"alpha_mmo": mmo_alpha(weights, permutations=permutations, seed=0)}
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    print(
        json.dumps({"peak_kib": peak - baseline, "reset": reset, "seconds": seconds, **estimates})
    )


# ---------------------------------------------------------------------------------------------
# Parent process


def write_tensor(path: Path, rows: int, cols: int, alpha: float, seed: int) -> int:
    """Write the heavy-tailed float32 tensor; returns its size in bytes."""
    from safetensors.numpy import save_file

    from tailwise.tails import sample_sas

    weights = (0.02 * sample_sas(alpha, rows * cols, seed=seed)).astype(np.float32)
    save_file({NAME: weights.reshape(rows, cols)}, str(path))
    return int(weights.nbytes)


def measure(mode: str, path: Path, permutations: int) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MIB))
    command = [sys.executable, __file__, "--child", mode, "--path", str(path)]
    proc = subprocess.run(
        [*command, "--permutations", str(permutations)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 8192 x 768 tensor (24 MiB)")
    parser.add_argument("--rows", type=int, default=50257)
    parser.add_argument("--cols", type=int, default=768)
    parser.add_argument("--alpha", type=float, default=1.6, help="stable index of the entries")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case: the fastest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--permutations", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.permutations)
        return

    rows = 8192 if args.quick else args.rows
    start = time.perf_counter()
    print(machine_header())
    cases = [("analyze_tails", 5)] + [
        (mode, p) for p in (5, 0) for mode in ("tailwise mmo_alpha", "plain NumPy")
    ]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tailwise-bench-") as tmp:
        path = Path(tmp) / "embedding.safetensors"
        size = write_tensor(path, rows, args.cols, args.alpha, args.seed)
        print(
            f"tensor: float32 {rows} x {args.cols} ({size / MIB:.0f} MiB), i.i.d. SaS "
            f"alpha={args.alpha} x 0.02; best of {args.repeat}; mmap threshold 1 MiB\n"
        )
        for case in cases:
            runs = [measure(case[0], path, case[1]) for _ in range(max(1, args.repeat))]
            results[case] = min(runs, key=lambda r: float(r["seconds"]))
    if not all(r["reset"] for r in results.values()):
        print("note: the peak RSS counter could not be reset: peaks include imports\n")

    table = []
    for (mode, p), r in results.items():
        estimates = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("alpha_"))
        peak = r["peak_kib"] * 1024
        table.append(
            [
                mode,
                p,
                estimates,
                fmt_seconds(float(r["seconds"])),
                f"{peak / MIB:.0f} MiB",
                f"{peak / size:.1f}x",
            ]
        )
    header = ["run", "permutations", "estimates", "time", "peak RSS (incl. tensor)", "/ tensor"]
    print(markdown_table(header, table))

    ratios = []
    for p in (5, 0):
        ours, plain = results[("tailwise mmo_alpha", p)], results[("plain NumPy", p)]
        ratios.append(
            [
                p,
                fmt_ratio(float(ours["seconds"]), float(plain["seconds"])),
                fmt_ratio(float(ours["peak_kib"]), float(plain["peak_kib"])),
                f"{abs(ours['alpha_mmo'] - plain['alpha_mmo']) / plain['alpha_mmo']:.1e}",
            ]
        )
    full, plain5 = results[("analyze_tails", 5)], results[("plain NumPy", 5)]
    ratios.append(
        [
            "5 (analyze_tails, 4 columns)",
            fmt_ratio(float(full["seconds"]), float(plain5["seconds"])),
            fmt_ratio(float(full["peak_kib"]), float(plain5["peak_kib"])),
            f"{abs(full['alpha_mmo'] - plain5['alpha_mmo']) / plain5['alpha_mmo']:.1e}"
            " (other seed)",
        ]
    )
    print("\ntailwise / plain NumPy (below 1: tailwise is faster / smaller)\n")
    header = ["permutations", "time ratio", "peak ratio", "|alpha_mmo difference| (relative)"]
    print(markdown_table(header, ratios))
    print(f"\n{machine_header()} (after the run; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
