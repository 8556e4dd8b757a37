"""The thread policy (tailwise._threads) before and after, on the three cases of issue 9 §3.

Before = ``TAILWISE_THREADS=off`` (torch's OpenMP pool and SciPy's OpenBLAS pool both at
their defaults, side by side); after = the default policy. Every measurement runs in a fresh
process, before and after alternating, in the same run of this script:

1. ``top_eigenvalues`` top-5 (Lanczos) on a CIFAR-shaped CNN (``SmallCNN(3, 10,
   channels=(32, 64, 128), image_size=32)``, 114k parameters), one batch of 64 random images,
   float32, eval mode. The issue measured 6.4 s vs 1.8 s (137k parameters).
2. ``tailwise hessian --density x.png`` on the reference network (``--samples``, default
   512 as the CLI; the issue: 147 s vs 16.5 s with ``OMP_NUM_THREADS=1``).
3. 4 concurrent ``tailwise analyze`` processes on one BERT-base-shaped ``.safetensors`` file
   written into a temporary folder (``--layers`` encoder layers of hidden size 768, feed-forward
   3072, plus the 30522 x 768 word embeddings; 12 layers is BERT-base, 110M parameters). The
   issue: 124 s vs 28 s with one thread each.

Run: ``python benchmarks/threads.py [--samples 512] [--layers 12] [--skip 2,3]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt_ratio, fmt_seconds, machine_header, markdown_table

ROOT = Path(__file__).resolve().parents[1]
TAILWISE = [sys.executable, "-m", "tailwise"]

EIGEN = """
import time, torch
from torch.nn.functional import cross_entropy
from tailwise.hessian import top_eigenvalues
from tailwise.models import SmallCNN
torch.manual_seed(0)
model = SmallCNN(3, 10, channels=(32, 64, 128), image_size=32).eval()
x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
start = time.perf_counter()
found = top_eigenvalues(model, cross_entropy, (x, y), k=5, progress=False)
print(time.perf_counter() - start, found.num_matvecs, sum(p.numel() for p in model.parameters()))
"""


def env(policy: str) -> dict[str, str]:
    result = dict(os.environ)
    result.pop("TAILWISE_THREADS", None)
    if policy == "before":
        result["TAILWISE_THREADS"] = "off"
    return result


def eigen_case(policy: str) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", EIGEN], env=env(policy), check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), f"{out[1]} HVPs, n={int(out[2]):,}"


def timed(commands: list[list[str]], policy: str) -> float:
    """Wall time of the commands run side by side (stdout/stderr discarded)."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            command, env=env(policy), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for command in commands
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{commands[0]} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def write_bert(path: Path, layers: int) -> int:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    h, f = 768, 3072

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) / shape[-1] ** 0.5

    tensors = {
        "embeddings.word_embeddings.weight": w(30522, h),
        "embeddings.position_embeddings.weight": w(512, h),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors[p + f"attention.self.{name}.weight"] = w(h, h)
        tensors[p + "attention.output.dense.weight"] = w(h, h)
        tensors[p + "intermediate.dense.weight"] = w(f, h)
        tensors[p + "output.dense.weight"] = w(h, f)
    save_file(tensors, str(path))
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512, help="case 2: --samples")
    parser.add_argument("--layers", type=int, default=12, help="case 3: encoder layers")
    parser.add_argument("--skip", default="", help="comma-separated case numbers to skip")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "1" not in skip:
            before, note = eigen_case("before")
            after, _ = eigen_case("after")
            rows.append(["top_eigenvalues top-5, CNN batch 64", note, before, after])
        if "2" not in skip:
            command = [
                *TAILWISE, "hessian", "--samples", str(args.samples), "--density",
                str(folder / "density.png"), "--quiet",
            ]  # fmt: skip
            timed([[*TAILWISE, "--version"]], "after")  # warm the reference network cache
            before = timed([command], "before")
            after = timed([command], "after")
            rows.append([f"tailwise hessian --density, {args.samples} samples", "", before, after])
        if "3" not in skip:
            path = folder / "bert.safetensors"
            count = write_bert(path, args.layers)
            commands = [
                [*TAILWISE, "analyze", str(path), "--out", str(folder / f"a{i}.csv"), "--quiet"]
                for i in range(4)
            ]
            before = timed(commands, "before")
            after = timed(commands, "after")
            note = f"{args.layers} layers, {count / 1e6:.0f}M parameters"
            rows.append(["4 concurrent tailwise analyze", note, before, after])
    print(machine_header())
    print(f"{os.cpu_count()} CPUs; before = TAILWISE_THREADS=off, after = default policy\n")
    table = [
        [case, note, fmt_seconds(b), fmt_seconds(a), fmt_ratio(b, a)] for case, note, b, a in rows
    ]
    print(markdown_table(["case", "size", "before", "after", "before / after"], table))


if __name__ == "__main__":
    main()
