"""Acceptance test: ``analyze`` streams a sharded safetensors checkpoint, one tensor at a time.

A Hugging Face folder (config.json, model.safetensors.index.json, 4 shards) holds 24 float32
tensors of 2048 x 1024 (8 MiB each, 192 MiB in all: 24 times the largest tensor). Each
measurement runs in a fresh interpreter, because the resident high-water mark (VmHWM) only
ever grows: the
child imports torch and tailwise, warms up on a tiny model (loading LAPACK, pandas, ...),
reads VmHWM as its baseline, does the work, and reads VmHWM again.

What one layer needs (``esd._gram``): the tensor as read (8 MiB), its float64 rows in 8 MiB
blocks, the block's product and the float64 Gram matrix of 1024 x 1024 (8 MiB each) and
LAPACK's copy of the Gram matrix (8 MiB): a few times the tensor at the worst moment
(log_frobenius_norm comes from the eigenvalues, no extra pass); nothing outlives the layer.

Measured on the 2-core CI machine (MiB above the baseline; total 192):

* streaming, glibc with a fixed mmap threshold: peak +43.5 (5.4x the largest tensor), the
  same after 1, 2 or 24 layers; resident memory back to +3.6 after the analysis;
* streaming, glibc defaults: peak +92 to +125 (0.48x to 0.65x the total). The extra is freed
  memory glibc keeps: after a freed chunk was mmapped, glibc raises its mmap threshold (up to
  32 MiB), so later 8-16 MiB buffers come from the heap, fragment it and are not returned;
  ``malloc_trim(0)`` after the analysis brings the resident set back to +3;
* loading every shard with ``safetensors.torch.load_file`` and copying it: peak +241 (the
  copies, 1.0x, plus one mapped shard), +193 at the end.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc/self/status and /proc/self/statm (Linux)"
)

MIB = 2**20
ROWS, COLS = 2048, 1024
NUM_TENSORS, NUM_SHARDS = 24, 4
TENSOR_BYTES = ROWS * COLS * 4
TOTAL_BYTES = NUM_TENSORS * TENSOR_BYTES
# Headroom over the per-layer working set for LAPACK workspace, Python objects, page rounding.
SLACK_BYTES = 16 * MIB

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file
    from tailwise.spectral.analyze import analyze

    def peak():  # high-water mark of this process's resident set, bytes
        # VmHWM belongs to this address space. ru_maxrss does not: at exec Linux folds the
        # parent's high-water mark into it (vfork shares the parent's memory), so a child of
        # a large pytest process would start with the parent's peak as its "baseline".
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    def resident():
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

    folder, mode = Path(sys.argv[1]), sys.argv[2]
    analyze(torch.nn.Linear(64, 32), progress=False)  # warm up every code path, tiny buffers
    baseline = peak()
    if mode == "analyze":
        df = analyze(folder, progress=False)
        result = {"rows": len(df), "ok": int((df["status"] == "ok").sum())}
    else:  # the whole checkpoint in memory, as load_state_dict(load_file(...)) leaves it
        # load_file maps the file; the copies are anonymous memory, which (unlike mapped file
        # pages) the kernel cannot drop under memory pressure from other processes.
        shards = [
            {name: t.clone() for name, t in load_file(path).items()}
            for path in sorted(folder.glob("*.safetensors"))
        ]
        result = {"rows": sum(len(shard) for shard in shards)}
    result.update(increase=peak() - baseline, resident_after=resident() - baseline)
    print(json.dumps(result))
    """
)


def write_safetensors(path: Path, names: list[str], generator: torch.Generator) -> None:
    """A float32 safetensors file, written one tensor at a time (never the whole shard)."""
    header: dict[str, object] = {}
    for index, name in enumerate(names):
        start = index * TENSOR_BYTES
        header[name] = {
            "dtype": "F32",
            "shape": [ROWS, COLS],
            "data_offsets": [start, start + TENSOR_BYTES],
        }
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for _ in names:
            handle.write(torch.randn(ROWS, COLS, generator=generator).numpy().tobytes())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    generator = torch.Generator().manual_seed(0)
    per_shard = NUM_TENSORS // NUM_SHARDS
    weight_map = {}
    for shard in range(NUM_SHARDS):
        file_name = f"model-{shard + 1:05d}-of-{NUM_SHARDS:05d}.safetensors"
        names = [f"model.layers.{shard * per_shard + i}.mlp.weight" for i in range(per_shard)]
        write_safetensors(folder / file_name, names, generator)
        weight_map.update(dict.fromkeys(names, file_name))
    index = {"metadata": {"total_size": TOTAL_BYTES}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))
    return folder


@dataclass
class Measurement:
    increase: int  # peak resident set above the warmed-up baseline, bytes
    resident_after: int  # resident set at the end above the baseline, bytes
    result: dict[str, float]


def start(folder: Path, mode: str, fixed_mmap_threshold: bool) -> subprocess.Popen[str]:
    env = dict(os.environ)
    # One BLAS/OpenMP thread: the numbers do not depend on threads, and on a shared 2-core
    # machine spinning BLAS threads make the analysis several times slower.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if fixed_mmap_threshold:
        # glibc: serve every allocation of 1 MiB or more by mmap and give it back on free, so
        # the resident set shows the memory tailwise holds, not freed memory glibc keeps.
        env["MALLOC_MMAP_THRESHOLD_"] = str(MIB)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Measurement:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    return Measurement(result.pop("increase"), result.pop("resident_after"), result)


@pytest.fixture(scope="module")
def measurements(checkpoint: Path) -> dict[str, Measurement]:
    # The three children are independent processes: run them side by side.
    runs = {
        "streaming_working_set": ("analyze", True),
        "streaming_default_malloc": ("analyze", False),
        "full_load": ("load", False),
    }
    glibc = platform.libc_ver()[0] == "glibc"
    if not glibc:
        del runs["streaming_working_set"]
    processes = {key: start(checkpoint, mode, fixed) for key, (mode, fixed) in runs.items()}
    found = {key: finish(process) for key, process in processes.items()}
    for key, m in found.items():  # shown with pytest -s
        print(f"{key}: peak +{m.increase / MIB:.1f} MiB, after +{m.resident_after / MIB:.1f} MiB")
    return found


def test_checkpoint_is_sharded_and_large(checkpoint: Path) -> None:
    shards = sorted(checkpoint.glob("*.safetensors"))
    assert len(shards) == NUM_SHARDS
    assert sum(path.stat().st_size for path in shards) > TOTAL_BYTES
    assert TOTAL_BYTES >= 16 * TENSOR_BYTES
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    assert len(index["weight_map"]) == NUM_TENSORS


def test_streaming_working_set_is_a_few_tensors(measurements: dict[str, Measurement]) -> None:
    if "streaming_working_set" not in measurements:
        pytest.skip("MALLOC_MMAP_THRESHOLD_ is a glibc setting")
    streaming = measurements["streaming_working_set"]
    assert streaming.result == {"rows": NUM_TENSORS, "ok": NUM_TENSORS}
    # ~5.5 tensors at the worst moment of one layer (module docstring), never more: the peak
    # does not grow with the number of layers.
    assert streaming.increase < 6 * TENSOR_BYTES + SLACK_BYTES, streaming
    assert streaming.increase < 0.5 * TOTAL_BYTES, streaming
    # Nothing outlives its layer (records never cache their tensor).
    assert streaming.resident_after < SLACK_BYTES, streaming


def test_streaming_uses_far_less_than_loading_the_checkpoint(
    measurements: dict[str, Measurement],
) -> None:
    streaming = measurements["streaming_default_malloc"]
    full = measurements["full_load"]
    assert streaming.result == {"rows": NUM_TENSORS, "ok": NUM_TENSORS}
    assert full.result["rows"] == NUM_TENSORS
    # Loading the checkpoint costs its size ...
    assert full.increase > 0.9 * TOTAL_BYTES, full
    # ... streaming with the default allocator costs the working set plus what glibc keeps of
    # freed 8-16 MiB buffers: measured 0.48x to 0.65x of the total, below a bound that
    # keeping every tensor (>= 1x, plus the working set) could not meet.
    assert streaming.increase < 0.85 * TOTAL_BYTES, streaming
    assert streaming.increase < 0.7 * full.increase, (streaming, full)
