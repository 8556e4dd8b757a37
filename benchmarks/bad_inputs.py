"""Issue 9's bad-input corpus, rebuilt: every input the tester threw at ``tailwise``, run
through the real command line, each outcome classified.

The script writes a corpus of inputs into a temporary folder (hostile tensor names,
unwritable outputs, deep-nested safetensors headers and metadata, absurd sizes in metadata
and options, bogus devices, pickle payloads, NaN/Inf layers, Hugging Face indexes pointing
outside their folder, damaged files, patterns that select nothing, unknown options and values
of every command, bad data folders, ``train --resume`` on folders that are not runs) and the
checkpoints tailwise did not write that it must accept (a sharded BERT-shaped Hugging Face
folder, a GPT-2-shaped one, weights-only files). The inputs are built with torch, NumPy and
raw bytes only, never with tailwise, so that old and new code see the same files.

Each case runs ``python -m tailwise <command> ...`` (``python -m tailwise.cli`` for code that
has no ``__main__``) in a fresh process: ``PYTHONPATH`` is ``--src``, ``TAILWISE_CACHE_DIR``
a cache shared by the run (the reference network trains once, before the cases),
``COLUMNS=200``, the case's own folder as working directory (its outputs go there), a
timeout, 6 GiB of address space and 1 GiB files at most (an input that makes tailwise
allocate tens of GiB fails fast instead of taking the machine down: the allocation error is
then a traceback, a crash). Outcomes:

- ``clean error``: exit status 2 and no ``Traceback``, and stderr's last line starts with
  ``error:`` (or it is the command-line parser's own usage error: unknown option, bad value);
- ``ok``: exit status 0 where the case accepts the input (``ok`` and ``either`` cases), no
  traceback, and the case's check of what was written holds;
- ``crash``: a traceback, another exit status, a timeout, exit 0 for an input that must be
  refused, a check that fails (wrong labels, a pickle payload that ran, ESC sequences from a
  file reaching the terminal, an old file changed, new or temporary files left behind by a
  refused command, temporary files left by a successful one);
- ``refused``: a clean error for an input that must be accepted;
- ``n/a``: the command or option does not exist in that version of the code (the parser's
  "No such command" / "No such option" for an option the case does not pass on purpose);
- ``skipped``: not reproducible here (read-only folders when running as root, disk full).

Run: ``python benchmarks/bad_inputs.py [--src PATH_TO_SRC] [--only CATEGORY] [--jobs 2]
[--timeout 120] [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import pickle
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from _common import machine_header, markdown_table

ERROR, OK, EITHER = "error", "ok", "either"
OUTCOMES = ("clean error", "ok", "crash", "refused", "n/a", "skipped")
CATEGORIES = {
    "first-minutes": "§1 first ten minutes (input-driven)",
    "foreign": "§2 checkpoints tailwise did not write",
    "markup": "§4 hostile tensor names",
    "outputs": "§4 unwritable outputs",
    "nesting": "§4 deep-nested headers and metadata",
    "sizes": "§4 absurd sizes in files and options",
    "devices": "§4 devices and cut-offs",
    "pickle": "§4 pickle payloads",
    "nonfinite": "§4 NaN/Inf layers",
    "hf-index": "§4 Hugging Face indexes and folders",
    "damaged": "§4 damaged and odd files",
    "options": "§4 unknown options and values",
    "data": "§4 bad --data",
    "train-resume": "§4 train --resume and run folders",
}
MEMORY_LIMIT = 6 * 2**30
FILE_LIMIT = 2**30
DEEP = 100_000
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Run:
    """What one command did."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


Check = Callable[[Path, Path, Run], "str | None"]  # (case folder, inputs, run) -> problem
Setup = Callable[[Path], "str | None"]  # case folder -> reason to skip, or None


@dataclass(frozen=True)
class Case:
    """One bad (or odd but valid) input: ``args`` after ``tailwise``; ``{in}`` is the corpus
    folder, the working directory is the case's own folder. ``expect``: ``error`` (must be
    refused), ``ok`` (must be accepted) or ``either``. ``probe``: ``"option"`` or
    ``"command"`` when the case passes an unknown one on purpose (the parser's refusal is then
    the clean error, not "n/a"). ``check`` runs when the command succeeded (``always``: after
    every run that is not n/a). ``clean_terminal``: no ESC/BEL may reach stdout or stderr."""

    category: str
    name: str
    args: tuple[str, ...]
    expect: str = ERROR
    check: Check | None = None
    always: bool = False
    probe: str = ""
    setup: Setup | None = None
    teardown: Callable[[Path], None] | None = None
    clean_terminal: bool = False


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Writing the corpus (no tailwise import: the same bytes for every version of the code).

_ST_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.bool_): "BOOL",
}


def raw_safetensors(
    path: Path, header: bytes, data: bytes = b"", length: int | None = None
) -> Path:
    """A safetensors file from its parts: 8-byte little-endian header length (``length``
    overrides the true one), the header, the data."""
    header = header + b" " * (-len(header) % 8)
    size = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + header + data)
    return path


def safetensors_parts(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, object] | None = None
) -> tuple[dict[str, object], bytes]:
    header: dict[str, object] = {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": _ST_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    return header, b"".join(blobs)


def write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, object] | None = None
) -> Path:
    header, data = safetensors_parts(tensors, metadata)
    return raw_safetensors(path, json.dumps(header).encode(), data)


def mlp_tensors(widths: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """``layers.{i}.weight`` (out, in) / ``.bias``: tailwise's MLP state dict, random."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        scale = 1 / np.sqrt(n_in)
        tensors[f"layers.{i}.weight"] = (rng.standard_normal((n_out, n_in)) * scale).astype(
            np.float32
        )
        tensors[f"layers.{i}.bias"] = np.zeros(n_out, np.float32)
    return tensors


def mlp_architecture(widths: tuple[int, ...]) -> str:
    return json.dumps(
        {
            "class": "MLP",
            "in_features": widths[0],
            "num_classes": widths[-1],
            "hidden": list(widths[1:-1]),
            "activation": "relu",
        }
    )


MLP_WIDTHS = (64, 48, 32, 10)


def plain_tensors(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_normal((128, 64)).astype(np.float32),
        "fc1.bias": np.zeros(128, np.float32),
        "fc2.weight": rng.standard_normal((64, 128)).astype(np.float32),
        "fc2.bias": np.zeros(64, np.float32),
        "head.weight": rng.standard_normal((10, 64)).astype(np.float32),
    }


def torch_save(path: Path, obj: object, **kwargs: object) -> Path:
    torch.save(obj, path, **kwargs)  # type: ignore[arg-type]
    return path


def as_torch(tensors: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array.copy()) for name, array in tensors.items()}


def deep_json(depth: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


class Payload:
    """A pickled object whose unpickling calls ``function(*arguments)``: what a hostile
    checkpoint holds (the canary file shows whether it ever ran)."""

    def __init__(self, function: Callable[..., object], *arguments: object) -> None:
        self.function = function
        self.arguments = arguments

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return self.function, self.arguments


def bert_tensors(hidden: int = 32, layers: int = 2, vocab: int = 100) -> dict[str, np.ndarray]:
    """A small BERT-shaped state dict (HF names), with the int64 ``position_ids`` buffer."""
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    out = {
        "bert.embeddings.word_embeddings.weight": w(vocab, hidden),
        "bert.embeddings.position_embeddings.weight": w(64, hidden),
        "bert.embeddings.token_type_embeddings.weight": w(2, hidden),
        "bert.embeddings.LayerNorm.weight": np.ones(hidden, np.float32),
        "bert.embeddings.LayerNorm.bias": np.zeros(hidden, np.float32),
        "bert.embeddings.position_ids": np.arange(64, dtype=np.int64)[None],
    }
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for part in ("query", "key", "value"):
            out[p + f"attention.self.{part}.weight"] = w(hidden, hidden)
            out[p + f"attention.self.{part}.bias"] = np.zeros(hidden, np.float32)
        out[p + "attention.output.dense.weight"] = w(hidden, hidden)
        out[p + "attention.output.dense.bias"] = np.zeros(hidden, np.float32)
        out[p + "attention.output.LayerNorm.weight"] = np.ones(hidden, np.float32)
        out[p + "attention.output.LayerNorm.bias"] = np.zeros(hidden, np.float32)
        out[p + "intermediate.dense.weight"] = w(4 * hidden, hidden)
        out[p + "intermediate.dense.bias"] = np.zeros(4 * hidden, np.float32)
        out[p + "output.dense.weight"] = w(hidden, 4 * hidden)
        out[p + "output.dense.bias"] = np.zeros(hidden, np.float32)
        out[p + "output.LayerNorm.weight"] = np.ones(hidden, np.float32)
        out[p + "output.LayerNorm.bias"] = np.zeros(hidden, np.float32)
    out["bert.pooler.dense.weight"] = w(hidden, hidden)
    out["bert.pooler.dense.bias"] = np.zeros(hidden, np.float32)
    return out


def gpt2_tensors(hidden: int = 32, layers: int = 2, vocab: int = 100) -> dict[str, np.ndarray]:
    """A small GPT-2-shaped state dict: Conv1D weights stored (in, out)."""
    rng = np.random.default_rng(8)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    out = {"transformer.wte.weight": w(vocab, hidden), "transformer.wpe.weight": w(64, hidden)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[p + f"{norm}.weight"] = np.ones(hidden, np.float32)
            out[p + f"{norm}.bias"] = np.zeros(hidden, np.float32)
        for name, shape in (
            ("attn.c_attn", (hidden, 3 * hidden)),
            ("attn.c_proj", (hidden, hidden)),
            ("mlp.c_fc", (hidden, 4 * hidden)),
            ("mlp.c_proj", (4 * hidden, hidden)),
        ):
            out[p + f"{name}.weight"] = w(*shape)
            out[p + f"{name}.bias"] = np.zeros(shape[1], np.float32)
    out["transformer.ln_f.weight"] = np.ones(hidden, np.float32)
    out["transformer.ln_f.bias"] = np.zeros(hidden, np.float32)
    return out


def write_hf_sharded(folder: Path, tensors: Mapping[str, np.ndarray], config: dict[str, object]):
    folder.mkdir()
    names = list(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        write_safetensors(folder / shard, {n: tensors[n] for n in part}, {"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(config))


def hf_index_folder(folder: Path, weight_map: object, text: str | None = None) -> None:
    folder.mkdir()
    body = text if text is not None else json.dumps({"weight_map": weight_map})
    (folder / "model.safetensors.index.json").write_text(body)


def build_corpus(root: Path, canary: Path) -> None:
    """Every input file and folder of the cases, under ``root``."""
    rng = np.random.default_rng(0)
    mlp, arch = mlp_tensors(MLP_WIDTHS, 0), mlp_architecture(MLP_WIDTHS)
    write_safetensors(root / "mlp.safetensors", mlp, {"architecture": arch})
    write_safetensors(
        root / "mlp_b.safetensors", mlp_tensors(MLP_WIDTHS, 1), {"architecture": arch}
    )
    plain = plain_tensors()
    write_safetensors(root / "plain.safetensors", plain)
    torch_save(root / "plain.pt", as_torch(plain))
    torch_save(root / "no_tensors.pt", {"epoch": 1, "name": "x"})

    # §1: ESDs too small to fit (a 2-output head, token types, a 2-filter conv) and a conv
    # that slices into 1-column matrices.
    write_safetensors(
        root / "small_esd.safetensors",
        {
            "classifier.weight": rng.standard_normal((2, 64)).astype(np.float32),
            "embeddings.token_type_embeddings.weight": rng.standard_normal((2, 96)).astype(
                np.float32
            ),
            "conv4_2.weight": rng.standard_normal((2, 16, 3, 3)).astype(np.float32),
            "conv.weight": rng.standard_normal((1024, 1, 512, 1)).astype(np.float32) / 20,
            "fc.weight": rng.standard_normal((96, 128)).astype(np.float32) / 10,
        },
    )

    # §2: checkpoints from elsewhere.
    bert = bert_tensors()
    write_hf_sharded(root / "bert", bert, {"model_type": "bert", "architectures": ["BertModel"]})
    (root / "gpt2").mkdir()
    write_safetensors(root / "gpt2" / "model.safetensors", gpt2_tensors(), {"format": "pt"})
    (root / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    write_safetensors(root / "bert.safetensors", bert)
    torch_save(root / "bert.bin", as_torch(bert))

    # §4 markup and control characters in names.
    def named(names: list[str]) -> dict[str, np.ndarray]:
        return {n: rng.standard_normal((32, 64)).astype(np.float32) for n in names}

    markup = ["[/bold]x.weight", "[link=http://x]y.weight", "[red]z[/red].weight", "[/]w.weight"]
    write_safetensors(root / "names_markup.safetensors", named(markup))
    escapes = ["\x1b[31mred.weight", "\x1b]8;;http://evil\x1b\\link.weight", "bell\x07.weight",
               "cr\rname.weight", "nl\nname.weight", "\u202eevil.weight"]  # fmt: skip
    write_safetensors(root / "names_escape.safetensors", named(escapes))

    # §4 nesting.
    raw_safetensors(root / "deep_header.safetensors", deep_json(DEEP).encode())
    raw_safetensors(root / "deep_header_dict.safetensors", deep_json(DEEP, "dict").encode())
    for name, metadata in {
        "deep_arch": {"architecture": deep_json(DEEP)},
        "deep_arch_dict": {"architecture": deep_json(DEEP, "dict")},
        "deep_edits": {"architecture": arch, "tailwise_edits": deep_json(DEEP)},
    }.items():
        write_safetensors(root / f"{name}.safetensors", mlp, metadata)

    # §4 sizes: a 160 GB MLP, a Linear with 10^12 outputs, a 4 TB tensor in 16 bytes.
    huge = {"class": "MLP", "in_features": 64, "num_classes": 10, "hidden": [200_000, 200_000]}
    write_safetensors(root / "huge_arch.safetensors", mlp, {"architecture": json.dumps(huge)})
    edit = {"type": "Linear", "in_features": 64, "out_features": 10**12, "bias": True}
    edits = {"architecture": arch, "tailwise_edits": json.dumps({"layers.0": edit})}
    write_safetensors(root / "huge_edit.safetensors", mlp, edits)
    header = {"w.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}
    raw_safetensors(root / "huge_shape.safetensors", json.dumps(header).encode(), bytes(16))
    unknown = {"architecture": json.dumps({"class": "NoSuchNet"})}
    write_safetensors(root / "arch_unknown_class.safetensors", mlp, unknown)
    mismatch = {"architecture": mlp_architecture((64, 99, 10))}
    write_safetensors(root / "arch_mismatch.safetensors", mlp, mismatch)

    # §4 damaged files.
    (root / "empty.safetensors").write_bytes(b"")
    for name in ("random.safetensors", "random.pt"):
        (root / name).write_bytes(rng.bytes(4096))
    whole = (root / "mlp.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    pt = (root / "plain.pt").read_bytes()
    (root / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    for name, entry in (
        ("bad_dtype", {"dtype": "X99", "shape": [4, 4], "data_offsets": [0, 64]}),
        ("offsets_out_of_range", {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}),
    ):
        header_bytes = json.dumps({"w.weight": entry}).encode()
        raw_safetensors(root / f"{name}.safetensors", header_bytes, bytes(64))

    # §4 NaN / Inf: one entry of the first layer, or a whole layer.
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = {k: v.copy() for k, v in mlp.items()}
        bad["layers.0.weight"][3, 5] = value
        write_safetensors(root / f"{name}_mlp.safetensors", bad, {"architecture": arch})
    bad_plain = {k: v.copy() for k, v in plain.items()}
    bad_plain["fc1.weight"][3, 5] = np.nan
    write_safetensors(root / "nan_plain.safetensors", bad_plain)
    all_nan = {k: v.copy() for k, v in mlp.items()}
    all_nan["layers.1.weight"][:] = np.nan
    write_safetensors(root / "allnan_mlp.safetensors", all_nan, {"architecture": arch})

    # §4 pickle payloads (must never run: the canary file shows it).
    system = Payload(os.system, f"touch {canary}")
    torch_save(root / "evil_system.pt", {"w.weight": torch.ones(4, 4), "x": system})
    torch_save(root / "evil_system_p4.pt", {"x": system}, pickle_protocol=4)
    torch_save(root / "evil_legacy.pt", {"x": system}, _use_new_zipfile_serialization=False)
    torch_save(root / "evil_exec.pt", {"x": Payload(exec, f"open({str(canary)!r}, 'w')")})
    (root / "evil_raw.pt").write_bytes(pickle.dumps(system, protocol=5))
    (root / "evil_unknown_global.pt").write_bytes(b"\x80\x02cnosuch_module\nfn\nq\x00)R.")
    torch_save(root / "evil_mlp.pt", {**as_torch(mlp), "x": system})
    cifar = root / "data_cifar_evil" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(system, protocol=2))

    # §4 Hugging Face indexes.
    write_safetensors(root / "good.safetensors", plain)
    hf_index_folder(root / "hf_outside", dict.fromkeys(plain, "../good.safetensors"))
    hf_index_folder(root / "hf_absolute", dict.fromkeys(plain, str(root / "good.safetensors")))
    hf_index_folder(root / "hf_missing_shard", dict.fromkeys(plain, "model-1.safetensors"))
    hf_index_folder(root / "hf_index_deep", None, deep_json(DEEP))
    hf_index_folder(root / "hf_bin_outside", dict.fromkeys(plain, "../plain.pt"))
    (root / "hf_bin_outside" / "model.safetensors.index.json").rename(
        root / "hf_bin_outside" / "pytorch_model.bin.index.json"
    )
    (root / "hf_symlinked").mkdir()  # the Hugging Face cache layout: files link to blobs
    (root / "blobs").mkdir()
    write_safetensors(root / "blobs" / "abc123", plain)
    (root / "hf_symlinked" / "model.safetensors").symlink_to(root / "blobs" / "abc123")

    # §4 data folders.
    (root / "data_garbage").mkdir()
    (root / "data_garbage" / "notes.txt").write_text("not a data set")
    (root / "data_garbage" / "x.bin").write_bytes(rng.bytes(1000))
    pairs = (
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    )
    for folder, images, labels in (
        ("data_mnist_random", rng.bytes(5000), rng.bytes(500)),
        (  # headers claiming 10^9 images of 100000 x 100000 pixels
            "data_mnist_huge",
            struct.pack(">IIII", 0x803, 10**9, 100_000, 100_000) + bytes(64),
            struct.pack(">II", 0x801, 10**9) + bytes(64),
        ),
    ):
        (root / folder).mkdir()
        for image_name, label_name in pairs:
            (root / folder / image_name).write_bytes(images)
            (root / folder / label_name).write_bytes(labels)
    short = root / "data_cifar_short" / "cifar-10-batches-bin"
    short.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (short / name).write_bytes(rng.bytes(3073 * 3 + 17))


# ---------------------------------------------------------------------------------------
# Per-case folder set-ups and checks.


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


OLD_TABLE = "old table, must stay intact\n"


def out_is_dir(folder: Path) -> str | None:
    for name in ("out.csv", "out.safetensors", "out.json", "report.html", "density.png", "out.pt"):
        (folder / name).mkdir()
    return None


def parent_is_file(folder: Path) -> str | None:
    (folder / "afile").write_text("I am a file\n")
    return None


def read_only_folder(folder: Path) -> str | None:
    if ROOT_USER:
        return "running as root: permissions are ignored, a read-only folder is writable"
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)
    return None


def restore_read_only(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / "ro").chmod(0o755)


def immutable_folder(folder: Path) -> str | None:
    (folder / "ro").mkdir()
    if not _chattr("+i", folder / "ro"):
        return "chattr +i is not supported on this file system"
    return None


def immutable_target(folder: Path) -> str | None:
    for name in ("out.csv", "out.safetensors", "out.json"):
        (folder / name).write_text(OLD_TABLE)
        if not _chattr("+i", folder / name):
            return "chattr +i is not supported on this file system"
    return None


def remove_immutable(folder: Path) -> None:
    for path in folder.iterdir():
        _chattr("-i", path)


def not_a_run(folder: Path) -> str | None:
    (folder / "run").mkdir()
    (folder / "run" / "config.json").write_text("{garbage")
    (folder / "run" / "metrics.jsonl").write_text("nope\n")
    return None


def deep_config(folder: Path) -> str | None:
    (folder / "run").mkdir()
    (folder / "run" / "config.json").write_text(deep_json(DEEP, "dict"))
    return None


def disk_full(folder: Path) -> str | None:
    return "disk full is not reproducible here (no small file system to fill)"


def old_intact(name: str) -> Check:
    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        if (folder / name).read_text() != OLD_TABLE:
            return f"the old {name} was changed"
        return None

    return check


def wrote(*names: str) -> Check:
    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        missing = [n for n in names if not (folder / n).exists()]
        return f"exit 0 but {', '.join(missing)} not written" if missing else None

    return check


def all_of(*checks: Check) -> Check:
    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        for one in checks:
            problem = one(folder, inputs, run)
            if problem:
                return problem
        return None

    return check


def printed(*texts: str) -> Check:
    """Names printed as they are (markup shown literally, not interpreted)."""

    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        missing = [t for t in texts if t not in run.stdout]
        return f"not printed literally: {', '.join(map(repr, missing))}" if missing else None

    return check


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def no_unfounded_labels(table: str) -> Check:
    """Issue 9 §1: no alpha below 10 eigenvalues, no label from < 5 tail eigenvalues or on a
    conv sliced into < 3 columns."""

    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        import csv

        with open(folder / table, newline="") as handle:
            rows = list(csv.DictReader(handle))
        problems = []
        for row in rows:
            n, m = _float(row.get("N", "")), _float(row.get("M", ""))
            evals = _float(row.get("num_evals", "")) if row.get("num_evals") else min(n, m)
            alpha = _float(row.get("alpha", ""))
            label = (row.get("warning") or "").strip()
            spikes = _float(row.get("num_pl_spikes", ""))
            if evals < 10 and np.isfinite(alpha):
                problems.append(f"{row['name']}: alpha {alpha:.3g} from {evals:.0f} eigenvalues")
            elif label and (spikes < 5 or m < 3):
                problems.append(f"{row['name']}: {label!r} from {spikes:.0f} tail evals, M={m:.0f}")
        return "; ".join(problems) or None

    return check


def _weights(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        found: dict[str, torch.Tensor] = {}
        for shard in sorted(path.glob("*.safetensors")):
            found.update(load_file(shard))
        return found
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, weights_only=True)


def same_layout(source: str, written: str, extra: tuple[str, ...] = ()) -> Check:
    """Issue 9 §2: the same keys and shapes, non-weight tensors unchanged, zeros added to the
    pruned weights; a folder written back as a folder with its index and ``extra`` files."""

    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        src, out = inputs / source, folder / written
        if not out.exists():
            return f"exit 0 but {written} not written"
        if src.is_dir() != out.is_dir():
            return f"{written}: {'a folder' if out.is_dir() else 'a file'}, unlike the source"
        missing = [n for n in extra if not (out / n).exists()]
        if missing:
            return f"{written}: missing {', '.join(missing)}"
        before, after = _weights(src), _weights(out)
        if set(before) != set(after):
            return f"keys differ: {sorted(set(before) ^ set(after))[:4]}"
        zeros = 0
        for name, tensor in before.items():
            if tensor.shape != after[name].shape or tensor.dtype != after[name].dtype:
                return f"{name}: {tuple(tensor.shape)} -> {tuple(after[name].shape)}"
            if tensor.is_floating_point() and tensor.dim() >= 2:
                zeros += int((after[name] == 0).sum() - (tensor == 0).sum())
            elif not torch.equal(tensor, after[name]):
                return f"{name} (not a pruned weight) changed"
        return None if zeros > 0 else "no weight was pruned"

    return check


def no_new_nonfinite(source: str, written: str) -> Check:
    """Issue 9 §4: pruning a layer holding NaN/Inf must not spread it (low-rank)."""

    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        out = folder / written
        if not out.exists():
            return f"exit 0 but {written} not written"
        before = sum(int((~t.isfinite()).sum()) for t in _weights(inputs / source).values())
        after = sum(int((~t.isfinite()).sum()) for t in _weights(out).values())
        return (
            f"{after} non-finite values written, {before} in the source" if after > before else None
        )

    return check


def nonfinite_not_hidden(report: str, layer: str) -> Check:
    """Issue 9 §4: a layer holding NaN/Inf is refused or skipped with a reason, never reported
    as pruned (with rel_error 0 or NaN) as if nothing were wrong."""

    def check(folder: Path, inputs: Path, run: Run) -> str | None:
        import csv

        path = folder / report
        if not path.exists():
            return f"exit 0 but {report} not written"
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("layer", row.get("name", "")).startswith(layer):
                    achieved = _float(row.get("achieved", ""))
                    note = (row.get("note") or row.get("reason") or "").strip()
                    if achieved > 0 and not note:
                        error = row.get("rel_error") or "NaN"
                        return (
                            f"non-finite {layer} pruned {achieved:.2f}, rel_error {error}, no note"
                        )
        return None

    return check


# ---------------------------------------------------------------------------------------
# The cases.


def cases() -> list[Case]:
    """The corpus. ``command`` strings are split like a shell; ``{in}`` is the corpus folder,
    ``{mlp}`` a tailwise MLP file, ``{plain}`` a weights-only safetensors file."""
    c: list[Case] = []
    # fmt: off

    def add(category: str, name: str, command: str, **kw: Any) -> None:
        c.append(Case(category, name, tuple(shlex.split(command)), **kw))

    cuda = EITHER if torch.cuda.is_available() else ERROR
    h = "--samples 32"  # hessian cases: a few examples are enough

    f = "first-minutes"
    add(f, "analyze-reference-net", "analyze -q --out t.csv", expect=OK, check=wrote("t.csv"))
    labels = all_of(wrote("t.csv"), no_unfounded_labels("t.csv"))
    add(f, "analyze-small-esd", "analyze {in}/small_esd.safetensors -o t.csv", expect=OK,
        check=labels)
    add(f, "analyze-small-esd-slices", "analyze {in}/small_esd.safetensors --conv slices -o t.csv",
        expect=OK, check=labels)
    add(f, "analyze-include-nothing", "analyze {mlp} --include nomatch")
    add(f, "tails-include-nothing", "tails {mlp} --include nomatch")
    add(f, "prune-file-include-nothing", "prune {plain} --include nomatch")
    add(f, "hessian-params-nothing", f"hessian {{mlp}} --params nomatch {h}")
    add(f, "compare-include-nothing", "compare {mlp} {in}/mlp_b.safetensors --include zz")

    f = "foreign"
    add(f, "analyze-bert-sharded", "analyze {in}/bert -o t.csv", expect=OK, check=wrote("t.csv"))
    add(f, "tails-gpt2", "tails {in}/gpt2 -o t.csv", expect=OK, check=wrote("t.csv"))
    add(f, "prune-magnitude-bert-folder", "prune {in}/bert --out pruned", expect=OK,
        check=same_layout("bert", "pruned", ("model.safetensors.index.json", "config.json")))
    add(f, "prune-node-gpt2-folder", "prune {in}/gpt2 --method node --out pruned", expect=OK,
        check=same_layout("gpt2", "pruned", ("config.json",)))
    add(f, "prune-weights-only-pt", "prune {in}/plain.pt -o p.pt", expect=OK,
        check=same_layout("plain.pt", "p.pt"))
    add(f, "prune-global-bin", "prune {in}/bert.bin --method global-magnitude -o p.bin",
        expect=OK, check=same_layout("bert.bin", "p.bin"))
    add(f, "prune-lowrank-no-architecture", "prune {plain} --method lowrank")
    add(f, "compare-folder-vs-file", "compare {in}/bert {in}/bert.safetensors", expect=OK)

    f = "markup"
    literal = printed("[/bold]x.weight", "[link=http://x]y.weight", "[red]z[/red].weight")
    for command in ("analyze", "tails"):
        add(f, f"{command}-markup-names", f"{command} {{in}}/names_markup.safetensors -o t.csv",
            expect=OK, check=all_of(wrote("t.csv"), literal))
        add(f, f"{command}-escape-names", f"{command} {{in}}/names_escape.safetensors -o t.csv",
            expect=OK, check=wrote("t.csv"), clean_terminal=True)
    add(f, "prune-markup-names", "prune {in}/names_markup.safetensors -o p.safetensors",
        expect=OK, check=all_of(wrote("p.safetensors"), literal))
    add(f, "compare-markup-names",
        "compare {in}/names_markup.safetensors {in}/names_markup.safetensors", expect=OK,
        check=literal)
    add(f, "include-nothing-escape-names", "analyze {in}/names_escape.safetensors --include zz",
        clean_terminal=True)

    f = "outputs"
    writers = {
        "analyze": ("analyze {mlp}", "out.csv"),
        "tails": ("tails {mlp}", "out.csv"),
        "prune": ("prune {mlp}", "out.safetensors"),
        "hessian": (f"hessian {{mlp}} {h} --top-k 1", "out.json"),
        "compare": ("compare {mlp} {in}/mlp_b.safetensors", "out.csv"),
    }
    for command, (line, out) in writers.items():
        add(f, f"{command}-out-is-directory", f"{line} --out {out}", setup=out_is_dir)
    for command in ("analyze", "prune", "hessian"):
        line, out = writers[command]
        add(f, f"{command}-out-parent-is-file", f"{line} --out afile/{out}",
            setup=parent_is_file)
    for command in ("analyze", "prune"):
        line, out = writers[command]
        add(f, f"{command}-out-read-only-folder", f"{line} --out ro/sub/{out}",
            setup=read_only_folder, teardown=restore_read_only)
    add(f, "analyze-out-immutable-target", "analyze {mlp} --out out.csv", setup=immutable_target,
        teardown=remove_immutable, check=old_intact("out.csv"), always=True)
    add(f, "prune-out-immutable-folder", "prune {mlp} --out ro/sub/out.safetensors",
        setup=immutable_folder, teardown=remove_immutable)
    add(f, "analyze-report-is-directory", "analyze {mlp} --report report.html", setup=out_is_dir)
    add(f, "train-out-parent-is-file", "train --model mlp --epochs 1 --out afile/run",
        setup=parent_is_file)
    add(f, "analyze-out-disk-full", "analyze {mlp} --out out.csv", setup=disk_full)

    f = "nesting"
    add(f, "analyze-deep-header", "analyze {in}/deep_header.safetensors")
    add(f, "analyze-deep-header-dict", "analyze {in}/deep_header_dict.safetensors")
    add(f, "tails-deep-header", "tails {in}/deep_header.safetensors")
    add(f, "prune-deep-architecture", "prune {in}/deep_arch.safetensors")
    add(f, "prune-deep-architecture-dict", "prune {in}/deep_arch_dict.safetensors")
    add(f, "prune-deep-edits", "prune {in}/deep_edits.safetensors")
    add(f, "hessian-deep-edits", f"hessian {{in}}/deep_edits.safetensors {h}")

    f = "sizes"
    add(f, "prune-huge-architecture", "prune {in}/huge_arch.safetensors")
    add(f, "hessian-huge-architecture", f"hessian {{in}}/huge_arch.safetensors {h}")
    add(f, "prune-huge-linear-edit", "prune {in}/huge_edit.safetensors")
    add(f, "analyze-huge-shape", "analyze {in}/huge_shape.safetensors")
    add(f, "hessian-top-k-1e9", f"hessian {{mlp}} --top-k 1000000000 {h}")
    add(f, "hessian-top-k-over-params", f"hessian {{mlp}} --top-k 100000 {h}")
    add(f, "hessian-samples-1e9", "hessian {mlp} --samples 1000000000")
    add(f, "prune-input-shape-huge", "prune {mlp} --input-shape 100000,100000")
    add(f, "train-width-1e6", "train --model mlp --width 1000000 --epochs 1")
    add(f, "tails-seed-huge", "tails {mlp} --seed " + "9" * 30, expect=EITHER)

    f = "devices"
    add(f, "analyze-device-bogus", "analyze {mlp} --device bogus")
    add(f, "analyze-device-cuda", "analyze {mlp} --device cuda", expect=cuda)
    add(f, "analyze-device-meta", "analyze {mlp} --device meta")
    add(f, "train-device-bogus", "train --model mlp --epochs 1 --device bogus")
    for value in ("inf", "nan", "-1"):
        add(f, f"analyze-xmax-{value}", f"analyze {{mlp}} --xmax {value}")

    f = "pickle"
    for name in ("evil_system.pt", "evil_system_p4.pt", "evil_legacy.pt", "evil_exec.pt",
                 "evil_raw.pt", "evil_unknown_global.pt"):
        add(f, f"analyze-{name}", f"analyze {{in}}/{name}")
    add(f, "prune-evil_system.pt", "prune {in}/evil_system.pt --out p.pt")
    add(f, "hessian-evil_mlp.pt", "hessian {in}/evil_mlp.pt --model tailwise.models:SmallCNN")
    add(f, "compare-evil_system.pt", "compare {mlp} {in}/evil_system.pt")
    add(f, "train-data-evil-cifar", "train --model mlp --epochs 1 --data {in}/data_cifar_evil")

    f = "nonfinite"
    for kind, method in (("nan", "magnitude"), ("nan", "lowrank"), ("inf", "lowrank"),
                         ("nan", "node")):
        src = f"{kind}_mlp.safetensors"
        add(f, f"prune-{method}-{kind}",
            f"prune {{in}}/{src} --method {method} -o p.safetensors --report r.csv",
            expect=EITHER, check=all_of(no_new_nonfinite(src, "p.safetensors"),
                                        nonfinite_not_hidden("r.csv", "layers.0")))
    add(f, "prune-file-magnitude-nan",
        "prune {in}/nan_plain.safetensors -o p.safetensors --report r.csv", expect=EITHER,
        check=all_of(no_new_nonfinite("nan_plain.safetensors", "p.safetensors"),
                     nonfinite_not_hidden("r.csv", "fc1")))
    add(f, "prune-lowrank-all-nan",
        "prune {in}/allnan_mlp.safetensors --method lowrank -o p.safetensors", expect=EITHER,
        check=no_new_nonfinite("allnan_mlp.safetensors", "p.safetensors"))
    add(f, "analyze-nan", "analyze {in}/nan_mlp.safetensors", expect=EITHER)
    add(f, "tails-nan", "tails {in}/nan_mlp.safetensors", expect=EITHER)

    f = "hf-index"
    for name in ("hf_outside", "hf_absolute", "hf_missing_shard", "hf_index_deep",
                 "hf_bin_outside"):
        add(f, f"analyze-{name}", f"analyze {{in}}/{name}")
    add(f, "prune-hf_outside", "prune {in}/hf_outside --out pruned")
    add(f, "analyze-hf-symlinked-shard", "analyze {in}/hf_symlinked", expect=OK)

    f = "damaged"
    for name in ("empty.safetensors", "random.safetensors", "random.pt", "truncated.safetensors",
                 "truncated.pt", "bad_dtype.safetensors", "offsets_out_of_range.safetensors"):
        add(f, f"analyze-{name}", f"analyze {{in}}/{name}")
    # A checkpoint without tensors: an empty table saying why, or a refusal.
    add(f, "analyze-no_tensors.pt", "analyze {in}/no_tensors.pt", expect=EITHER)
    add(f, "prune-arch-unknown-class", "prune {in}/arch_unknown_class.safetensors")
    add(f, "prune-arch-mismatch", "prune {in}/arch_mismatch.safetensors --out p.safetensors")

    f = "options"
    add(f, "unknown-command", "bogus", probe="command")
    for line in ("analyze {mlp}", "tails {mlp}", "prune {mlp}", "hessian {mlp}", "train",
                 "compare {mlp} {mlp}"):
        add(f, f"{line.split()[0]}-unknown-option", f"{line} --bogus", probe="option")
    for name, line in (
        ("analyze-fit-bogus", "analyze {mlp} --fit bogus"),
        ("prune-method-bogus", "prune {mlp} --method bogus"),
        ("prune-ratio-1.5", "prune {mlp} --ratio 1.5"),
        ("prune-model-needs-arguments", "prune {mlp} --model tailwise.models:MLP"),
        ("prune-model-not-a-module", "prune {mlp} --model os:getcwd"),
        ("prune-lr-nan", "prune {mlp} --finetune 1 --lr nan --data digits -o p.safetensors"),
        ("hessian-method-bogus", f"hessian {{mlp}} --method bogus {h}"),
        ("train-model-bogus", "train --model bogus --epochs 1"),
        ("train-epochs-negative", "train --model mlp --epochs -1"),
        ("train-lr-nan", "train --model mlp --epochs 1 --lr nan"),
    ):
        add(f, name, line + " -q")
    add(f, "train-one-epoch", "train --model mlp --epochs 1 --out run -q", expect=OK,
        check=wrote("run/config.json"))

    f = "data"
    for name in ("missing", "data_garbage", "data_mnist_random", "data_mnist_huge",
                 "data_cifar_short"):
        add(f, f"hessian-{name}", f"hessian {{mlp}} --data {{in}}/{name} {h}")
    add(f, "train-data_garbage", "train --model mlp --epochs 1 --data {in}/data_garbage")
    add(f, "compare-data_mnist_huge", "compare {mlp} {in}/mlp_b.safetensors --data "
        "{in}/data_mnist_huge")

    f = "train-resume"
    add(f, "resume-not-a-run", "train --resume --out run --epochs 1 -q", setup=not_a_run)
    add(f, "resume-deep-config", "train --resume --out run --epochs 1 -q", setup=deep_config)
    # A folder without a completed epoch starts afresh (train_run's documented behaviour).
    add(f, "resume-missing-folder", "train --resume --out run --epochs 1 -q", expect=EITHER)
    # fmt: on
    return c


# ---------------------------------------------------------------------------------------
# Running and classifying.


def launcher(src: Path) -> list[str]:
    """``python -m tailwise`` where the code has a ``__main__``, else ``-m tailwise.cli``;
    inside a shim that caps address space and file size before exec'ing Python."""
    module = "tailwise" if (src / "tailwise" / "__main__.py").exists() else "tailwise.cli"
    shim = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_LIMIT}, {FILE_LIMIT})); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [sys.executable, "-c", shim, "-m", module]


def environment(src: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(src),
        TAILWISE_CACHE_DIR=str(cache),
        COLUMNS="200",
        PYTHONDONTWRITEBYTECODE="1",
        MPLBACKEND="Agg",
    )
    return env


def run_command(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> Run:
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        timed_out = True
    return Run(
        process.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.perf_counter() - start,
        timed_out,
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            stat = path.lstat()
            found[str(path.relative_to(folder))] = (
                -1 if path.is_dir() else stat.st_size,
                stat.st_mtime_ns,
            )
    return found


def usage_message(stderr: str) -> str | None:
    """The message of the command-line parser's own usage error (click/typer), if any."""
    if "Usage:" not in stderr:
        return None
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("╭─ Error"):
            body = []
            for inner in lines[i + 1 :]:
                if inner.startswith("╰"):
                    break
                body.append(inner.strip("│ ").strip())
            return " ".join(body)
        if line.startswith("Error: "):
            return line[len("Error: ") :]
    return None


def _is_temporary(name: str) -> bool:
    base = Path(name).name
    return base.startswith(".") or base.endswith((".tmp", ".temp", ".part"))


def classify(case: Case, run: Run, changed: list[str], canary_ran: bool) -> tuple[str, str]:
    """(outcome, detail) of one run; ``changed``: files added or modified in the case folder."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if canary_ran:
        return "crash", "PICKLE PAYLOAD RAN (canary file created)"
    if run.timed_out:
        return "crash", f"timeout after {run.seconds:.0f} s"
    if "Traceback (most recent call last)" in run.stderr:
        return "crash", last
    usage = usage_message(run.stderr) if run.returncode == 2 else None
    absent = usage is not None and (
        ("No such command" in usage and case.probe != "command")
        or ("No such option" in usage and case.probe != "option")
    )
    if absent:
        return "n/a", str(usage)
    if case.clean_terminal and any(ch in run.stdout + run.stderr for ch in "\x1b\x07"):
        return "crash", "ESC/BEL from a file name reached the terminal"
    if run.returncode == 2 and (usage is not None or last.startswith("error:")):
        outcome, detail = "clean error", usage if usage is not None else last
        if case.expect == OK:
            outcome = "refused"
        elif changed:
            return "crash", f"refused but left files: {', '.join(changed[:4])}"
        return outcome, detail
    if run.returncode == 0:
        if case.expect == ERROR:
            said = last or next(reversed(run.stdout.strip().splitlines()), "no output")
            return "crash", f"exit 0 for an input that must be refused (last line: {said.strip()})"
        temporary = [name for name in changed if _is_temporary(name)]
        if temporary:
            return "crash", f"temporary files left: {', '.join(temporary[:4])}"
        return "ok", ""
    return "crash", f"exit status {run.returncode}: {last}"


def run_case(
    index: int,
    case: Case,
    cases_dir: Path,
    inputs: Path,
    canary: Path,
    src: Path,
    env: dict[str, str],
    timeout: float,
) -> Result:
    folder = cases_dir / f"{index:03d}-{case.name}"
    folder.mkdir()
    try:
        reason = case.setup(folder) if case.setup else None
        if reason:
            return Result(case, "skipped", reason)
        before = snapshot(folder)
        args = [
            a.replace("{mlp}", "{in}/mlp.safetensors")
            .replace("{plain}", "{in}/plain.safetensors")
            .replace("{in}", str(inputs))
            for a in case.args
        ]
        run = run_command(launcher(src) + args, folder, env, timeout)
        after = snapshot(folder)
        changed = sorted(name for name, stat in after.items() if before.get(name) != stat)
        outcome, detail = classify(case, run, changed, canary.exists())
        if case.check is not None and (outcome == "ok" or (case.always and outcome != "n/a")):
            problem = case.check(folder, inputs, run)
            if problem:
                outcome, detail = "crash", problem
        tail = [line for line in run.stderr.splitlines() if line.strip()][-3:]
        return Result(case, outcome, detail, run.seconds, tail)
    finally:
        if case.teardown:
            case.teardown(folder)


def warm_up(src: Path, env: dict[str, str], folder: Path, timeout: float) -> str:
    """Train the reference network into the run's cache once, before the parallel cases."""
    run = run_command([*launcher(src), "analyze", "-q"], folder, env, max(timeout, 600))
    return "ok" if run.returncode == 0 else f"exit {run.returncode}: {run.stderr[-300:]}"


def summarize(results: list[Result], categories: list[str]) -> str:
    rows = []
    total: Counter[str] = Counter()
    for category in categories:
        counts = Counter(r.outcome for r in results if r.case.category == category)
        if not counts:
            continue
        total.update(counts)
        rows.append([CATEGORIES[category], sum(counts.values()), *(counts[o] for o in OUTCOMES)])
    rows.append(["total", sum(total.values()), *(total[o] for o in OUTCOMES)])
    return markdown_table(["category", "cases", *OUTCOMES], rows)


def describe_code(src: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(src)
    return f"{src} at {head}{' (with uncommitted changes)' if dirty else ''}"


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="tailwise-bad-inputs-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--only", choices=sorted(CATEGORIES), action="append")
    parser.add_argument("--jobs", type=int, default=2, help="parallel subprocesses (1 or 2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and case folders")
    args = parser.parse_args()
    src = args.src.resolve()
    if not (src / "tailwise" / "cli.py").exists():
        parser.error(f"--src {src}: no tailwise/cli.py there")
    jobs = min(max(args.jobs, 1), 2)
    chosen = [c for c in cases() if not args.only or c.category in args.only]
    categories = [k for k in CATEGORIES if not args.only or k in args.only]
    print(machine_header())
    print(f"code under test: {describe_code(src)}")
    print(f"{len(chosen)} cases, {jobs} at a time, {args.timeout:.0f} s timeout each")
    with workspace(args.keep) as root:
        inputs, cases_dir, cache = root / "corpus", root / "cases", root / "cache"
        for folder in (inputs, cases_dir, cache):
            folder.mkdir()
        canary = root / "CANARY-payload-ran"
        build_corpus(inputs, canary)
        env = environment(src, cache)
        start = time.perf_counter()
        print(f"reference network: {warm_up(src, env, root, args.timeout)}", flush=True)
        results: list[Result] = []

        def one(item: tuple[int, Case]) -> Result:
            result = run_case(*item, cases_dir, inputs, canary, src, env, args.timeout)
            mark = f" -- {result.detail}" if result.outcome in ("crash", "skipped") else ""
            print(f"  [{item[0]:3d}] {result.case.name}: {result.outcome}{mark}", flush=True)
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, enumerate(chosen, start=1)))
        elapsed = time.perf_counter() - start
    print()
    print(summarize(results, categories))
    print(f"\n{len(results)} cases in {elapsed:.0f} s")
    for outcome, title in (
        ("crash", "Crashes"),
        ("refused", "Refused (inputs that must be accepted)"),
        ("n/a", "Not applicable (command or option absent from this code)"),
        ("skipped", "Skipped"),
    ):
        chosen_results = [r for r in results if r.outcome == outcome]
        if not chosen_results:
            continue
        print(f"\n{title}:")
        for r in chosen_results:
            print(f"- {r.case.category}/{r.case.name}: {r.detail}")
            if outcome == "crash":
                for line in r.tail:
                    print(f"      {line[:300]}")


if __name__ == "__main__":
    main()
