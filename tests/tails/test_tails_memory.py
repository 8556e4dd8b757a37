"""``analyze_tails`` holds about twice the largest tensor (issues 9 and 13).

Before issue 9, a 147 MiB embedding took the process to 2.1 GB (14x): the float64 copy, a
centred copy, |x|, the median's scratch copy, ln|x|, a permuted copy of the samples and its
int64 permutation, each a whole-layer array, lived at once; after it, 5x (a float64 copy, a
centred work buffer, an int32 permutation, the block sums' logs). Now the estimators read the
tensor as stored (float32) and convert a chunk of 2^20 values at a time: besides the tensor,
one layer holds at most one more tensor-sized array at a time (a median's partitioned copy in
float32, a float32 buffer for the median magnitude, or the int32 permutation) and fixed-size
chunk buffers (a few MiB).

As in tests/spectral/test_streaming_memory.py, the measurement runs in a fresh interpreter
(VmHWM only grows) with glibc's mmap threshold fixed at 1 MiB, so that the resident set shows
the memory held, not freed memory the allocator keeps. Measured here on one 16 MiB float32
(4096 x 1024) tensor, including the tensor read from the file: peak +50 MiB (3.1x; the chunk
buffers weigh at this size) now, +81 MiB (5.0x) after issue 9, +193 MiB (12.0x) before; on a
147 MiB one (50257 x 768, benchmarks/tails_memory.py): 2.1x now.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="reads /proc/self/status; MALLOC_MMAP_THRESHOLD_ is a glibc setting",
)

MIB = 2**20
ROWS, COLS = 4096, 1024
TENSOR_BYTES = ROWS * COLS * 4
SLACK_BYTES = 16 * MIB  # Python objects, page rounding, small estimator arrays

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    from tailwise.tails import analyze_tails

    def peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    analyze_tails(torch.nn.Linear(64, 32), progress=False)  # warm up every code path
    baseline = peak()
    df = analyze_tails(sys.argv[1], progress=False)
    print(json.dumps({"ok": int((df["status"] == "ok").sum()), "increase": peak() - baseline}))
    """
)


def test_tails_peak_is_a_few_times_the_largest_tensor(tmp_path: Path) -> None:
    path = tmp_path / "embedding.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file(
        {
            "embeddings.word_embeddings.weight": torch.randn(ROWS, COLS, generator=generator),
            "encoder.dense.weight": torch.randn(256, 256, generator=generator),
        },
        str(path),
    )
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MALLOC_MMAP_THRESHOLD_=str(MIB),
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak +{result['increase'] / MIB:.1f} MiB ({result['increase'] / TENSOR_BYTES:.1f}x)")
    assert result["ok"] == 2
    assert result["increase"] < 3 * TENSOR_BYTES + SLACK_BYTES, result
