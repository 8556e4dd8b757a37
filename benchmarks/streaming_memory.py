"""Peak memory of ``analyze`` on a sharded safetensors folder: streamed vs loaded whole.

A folder of ``--shards`` safetensors files with ``--tensors`` float32 matrices of
``--size`` x ``--size`` and a ``model.safetensors.index.json`` (a Hugging Face sharded
checkpoint) is written to a temporary directory. Each measurement runs in a fresh Python
process that imports everything and warms ``analyze`` up on a small model, then records its
resident set size (the baseline), resets the kernel's peak-RSS counter (``/proc/self/
clear_refs``; Linux) and runs one of

* ``streamed``: ``analyze(folder, progress=False)`` (tailwise reads one tensor at a time);
* ``full load``: ``safetensors.torch.load_file`` of every shard into one state dict, then
  ``analyze(state_dict, progress=False)``.

The table reports the peak RSS (``VmHWM``) minus the baseline.

Run: ``python benchmarks/streaming_memory.py [--quick] [--tensors 32] [--size 2048]``
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_header, markdown_table

MIB = 2**20


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


def _peak_kib(reset_worked: bool) -> int:
    if reset_worked:
        return _status_kib("VmHWM")
    import resource  # fallback: the peak since process start (may include import transients)

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child(mode: str, folder: Path) -> None:
    import gc

    import torch
    from safetensors.torch import load_file

    from tailwise.spectral.analyze import analyze

    analyze(torch.nn.Linear(256, 128), progress=False)  # warm-up: lazy imports, workspaces
    gc.collect()
    baseline = _status_kib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    if mode == "streamed":
        df = analyze(folder, progress=False)
    else:
        state_dict: dict[str, torch.Tensor] = {}
        for shard in sorted(folder.glob("*.safetensors")):
            state_dict.update(load_file(shard))
        df = analyze(state_dict, progress=False)
    elapsed = time.perf_counter() - start
    peak = _peak_kib(reset)
    result = {
        "mode": mode,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "peak_reset": reset,
        "seconds": elapsed,
        "ok": int((df["status"] == "ok").sum()),
    }
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Parent process: write the checkpoint, run the children, print the table


def write_checkpoint(folder: Path, tensors: int, size: int, shards: int, seed: int) -> int:
    """Write the sharded checkpoint; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    per_shard = math.ceil(tensors / shards)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        names = [
            f"layers.{i}.weight" for i in range(s * per_shard, min(tensors, (s + 1) * per_shard))
        ]
        if not names:
            break
        shard_name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        shard = {name: torch.randn(size, size, generator=gen) for name in names}
        save_file(shard, str(folder / shard_name))
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map.update(dict.fromkeys(names, shard_name))
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return total


def measure(mode: str, folder: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 tensors of 512 x 512")
    parser.add_argument("--tensors", type=int, default=32)
    parser.add_argument("--size", type=int, default=2048, help="each tensor is size x size")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; the lowest peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["streamed", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder)
        return

    tensors, size, shards = (8, 512, 2) if args.quick else (args.tensors, args.size, args.shards)
    print(machine_header())
    with tempfile.TemporaryDirectory(prefix="tailwise-bench-") as tmp:
        folder = Path(tmp)
        total = write_checkpoint(folder, tensors, size, shards, args.seed)
        largest = size * size * 4
        print(f"checkpoint: {tensors} float32 tensors of {size}x{size} in {shards} shards\n")
        results = {}
        for mode in ("streamed", "full"):
            runs = [measure(mode, folder) for _ in range(max(1, args.repeat))]
            results[mode] = min(runs, key=lambda r: r["peak_kib"] - r["baseline_kib"])
            if not results[mode]["peak_reset"]:
                print(
                    f"note: could not reset the peak RSS counter ({mode}); peaks are upper bounds"
                )

    def increase_mib(mode: str) -> float:
        return (results[mode]["peak_kib"] - results[mode]["baseline_kib"]) / 1024

    streamed, full = increase_mib("streamed"), increase_mib("full")
    header = [
        "checkpoint",
        "largest tensor",
        "peak increase, streamed",
        "peak increase, full load",
        "full / streamed",
        "time streamed",
        "time full load",
        "layers ok",
    ]
    row = [
        f"{total / MIB:.0f} MiB ({tensors} x {size}x{size} f32, {shards} shards)",
        f"{largest / MIB:.0f} MiB",
        f"{streamed:.0f} MiB",
        f"{full:.0f} MiB",
        f"{full / streamed:.1f}x" if streamed > 0 else "-",
        f"{results['streamed']['seconds']:.2f} s",
        f"{results['full']['seconds']:.2f} s",
        f"{results['streamed']['ok']} / {results['full']['ok']}",
    ]
    print(markdown_table(header, [row]))
    baseline = results["streamed"]["baseline_kib"] / 1024
    print(f"\npost-import baseline RSS: {baseline:.0f} MiB (streamed child)")
    print(f"{machine_header()} (after the run)")


if __name__ == "__main__":
    main()
