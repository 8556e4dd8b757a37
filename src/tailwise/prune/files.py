"""Prune a weights file that records no architecture: no model, no factory, tensor by tensor.

:func:`prune_file` prunes a ``.safetensors`` file, a Hugging Face folder (``model.safetensors``,
a sharded ``model.safetensors.index.json``, ``pytorch_model.bin`` or its sharded index) or a
weights-only torch checkpoint (``.pt``/``.pth``/``.bin``/``.ckpt``) by magnitude (layer-wise
or one global threshold) or by input nodes, the methods that need no graph: they only zero
entries. It writes the same tensors under the same names, dtypes and shapes (zeros where
pruned, or the layer's median with ``center``), every other tensor (biases, norms, embeddings,
buffers such as ``embeddings.position_ids``) and the metadata unchanged; a folder is written
back as a folder with the same shard layout, its index and the other small files
(``config.json``, tokenizer files) copied. The written files load into the original model
(``load_state_dict(strict=True)``) as they did before.

Which tensors are pruned: the ``weight`` of a layer that :func:`tailwise.weights.iter_layers`
reports as ``linear``, ``fused_qkv``, ``hf_conv1d`` or ``conv1d/2d/3d`` in a floating dtype
(2-D Linear weights, GPT-2 ``Conv1D`` weights, convolution kernels). Embeddings, attention
``in_proj_weight``, RNN weights, norms and biases are never pruned. GPT-2 ``Conv1D`` weights
are stored ``(in, out)``: masks are computed on the canonical ``(out, in)`` orientation, so
node pruning removes input nodes (rows of the stored matrix) as it does for a Linear.

Safetensors sources are streamed: only headers are read up front, and each tensor is read,
pruned and written on its own (global magnitude and LAMP read the file more than once to
find their threshold, keeping a histogram, not the scores). Torch checkpoints cannot be
streamed; they are loaded whole (memory-mapped when possible) and saved whole.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from tailwise._errors import UsageError
from tailwise._io import atomic_path, check_output_path
from tailwise._progress import progress_bar
from tailwise.prune.allocate import (
    ALPHA_PRUNING_EPSILON,
    METRIC_COLUMNS,
    Allocation,
    AllocationKind,
    _count,
    _lamp_layer_scores,
    _layer_metric,
    erk_densities,
    metric_columns_of,
)
from tailwise.prune.layers import check_ratio
from tailwise.prune.report import LayerReport, make_report, report_totals
from tailwise.prune.runner import _masked_error, nonfinite_reason
from tailwise.prune.structured import _unit_keep_mask
from tailwise.prune.unstructured import _importance, _median, _smallest_mask
from tailwise.weights import (
    LayerKind,
    LayerWeights,
    WeightsError,
    compile_pattern,
    iter_layers,
    load_checkpoint,
    read_safetensors_metadata,
    unwrap_state_dict,
)
from tailwise.weights.checkpoints import TORCH_SUFFIXES
from tailwise.weights.safetensors import read_safetensors_entries

__all__ = ["FILE_METHODS", "HEAD_NAMES", "FilePruneResult", "file_output_layers", "prune_file"]

#: Layer names (last component, any case) taken as output layers of a file: the heads of
#: Hugging Face and torchvision-style models.
HEAD_NAMES = frozenset(
    {"lm_head", "classifier", "head", "heads", "score", "qa_outputs", "output_layer", "fc"}
)

_PRUNABLE_KINDS = frozenset(
    {
        LayerKind.LINEAR,
        LayerKind.FUSED_QKV,
        LayerKind.HF_CONV1D,
        LayerKind.CONV1D,
        LayerKind.CONV2D,
        LayerKind.CONV3D,
    }
)
_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
# Files of a folder that hold weights in some format: never copied beside pruned weights.
_WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf"}
)
_SAFETENSORS_CODES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.complex64: "C64",
}
for _name, _code in (
    ("float8_e5m2", "F8_E5M2"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
):
    if isinstance(getattr(torch, _name, None), torch.dtype):
        _SAFETENSORS_CODES[getattr(torch, _name)] = _code


class FileMethod(str, enum.Enum):
    """The methods :func:`prune_file` offers: those that only zero entries."""

    MAGNITUDE = "magnitude"
    GLOBAL_MAGNITUDE = "global-magnitude"
    NODE = "node"


FILE_METHODS: tuple[str, ...] = tuple(m.value for m in FileMethod)


@dataclass
class FilePruneResult:
    """What :func:`prune_file` did: the per-layer report and the files it wrote.

    ``report``: one row per selected prunable layer, columns
    :data:`tailwise.prune.report.REPORT_COLUMNS` (``layer`` the module name;
    ``flops_*`` for one input vector of a 2-D layer, NaN for convolutions). ``written``: the
    files written (empty without ``out``); ``not_copied``: files of a source folder left out
    because they hold weights in another format (they would not be pruned).
    """

    report: pd.DataFrame
    method: str
    source: Path
    out: Path | None
    outputs: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    not_copied: list[Path] = field(default_factory=list)

    def totals(self) -> dict[str, float]:
        """Params and FLOPs before/after and their ratios, as :meth:`PruneResult.totals`."""
        return report_totals(self.report)


# ---------------------------------------------------------------------------------------------
# Layout: which files hold the weights, what is copied, where it goes


@dataclass(frozen=True)
class _Unit:
    """One weight file of the source and the name it gets in the output."""

    path: Path
    name: str
    torch_format: bool


def _safe_shards(index: Path) -> list[Path]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WeightsError(f"invalid JSON in {index}: {str(exc)[:200]}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f"{index}: no 'weight_map' object of tensor name -> shard file")
    folder = index.parent.resolve()
    shards = []
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if path.resolve().parent != folder:
            raise WeightsError(f"{index}: shard {shard!r} lies outside the folder {index.parent}")
        shards.append(path)
    return shards


def _layout(source: Path) -> tuple[list[_Unit], list[Path], list[Path], bool]:
    """(weight files, files to copy, files not copied, is a folder) of a source path."""
    if source.is_file():
        name = source.name.lower()
        if name.endswith(".safetensors"):
            return [_Unit(source, source.name, False)], [], [], False
        if name.endswith(".index.json"):
            return _folder_layout(source.parent, source)
        if source.suffix.lower() in TORCH_SUFFIXES:
            return [_Unit(source, source.name, True)], [], [], False
        raise WeightsError(
            f"unsupported file type {source.suffix or '(none)'!r} for {source}; supported: "
            ".safetensors, .pt, .pth, .bin, .ckpt or a Hugging Face model folder"
        )
    if source.is_dir():
        return _folder_layout(source, None)
    raise WeightsError(f"no such file or folder: {source}")


def _folder_layout(
    folder: Path, index: Path | None
) -> tuple[list[_Unit], list[Path], list[Path], bool]:
    # The order in which tailwise.weights looks for weights in a folder.
    candidates = (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    )
    found = index
    if found is None:
        found = next((folder / n for n in candidates if (folder / n).is_file()), None)
    if found is None:
        singles = sorted(folder.glob("*.safetensors"))
        if len(singles) != 1:
            raise WeightsError(
                f"no weights found in folder {folder}: looked for {', '.join(candidates)} "
                "or a single *.safetensors file"
            )
        found = singles[0]
    if found.name.endswith(".index.json"):
        torch_format = ".bin" in found.name or ".pt" in found.name
        units = [_Unit(p, p.name, torch_format) for p in _safe_shards(found)]
    else:
        units = [_Unit(found, found.name, found.suffix.lower() in TORCH_SUFFIXES)]
    used = {u.path.name for u in units} | {found.name}
    copy, skipped = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path == found and found.name.endswith(".index.json"):
            copy.append(path)
        elif path.name in used:
            continue
        elif path.suffix.lower() in _WEIGHT_SUFFIXES or path.name.endswith(".index.json"):
            skipped.append(path)
        else:
            copy.append(path)
    return units, copy, skipped, True


# ---------------------------------------------------------------------------------------------
# Output layers of a file


def _natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def file_output_layers(layers: list[str], *, stored_order: bool) -> list[str]:
    """The output layers of a weights file, which has no graph to trace.

    The layers whose last name component is one of :data:`HEAD_NAMES` (``lm_head``,
    ``classifier``, ``head``, ``score``, ``qa_outputs``, ``fc``, ...); when none is, the
    last layer: in stored order for a torch checkpoint (a state dict keeps the modules'
    definition order), else in natural name order (``layers.10`` after ``layers.9``), since
    a safetensors file sorts its tensors by dtype and name, not by definition.

    >>> file_output_layers(["bert.encoder.layer.0.dense", "classifier"], stored_order=False)
    ['classifier']
    >>> file_output_layers(["layers.10", "layers.9"], stored_order=False)
    ['layers.10']
    """
    heads = [name for name in layers if name.rpartition(".")[2].lower() in HEAD_NAMES]
    if heads or not layers:
        return heads
    return [layers[-1] if stored_order else max(layers, key=_natural_key)]


# ---------------------------------------------------------------------------------------------
# The k-th smallest of scores streamed layer by layer

_BIN_SHIFT = 44  # bins of the top 20 bits of a non-negative float64 (ordered like its value)
_BINS = 1 << 19


def _bins(values: Tensor) -> Tensor:
    # + 0.0 turns -0.0 into +0.0: non-negative doubles order like their int64 bit patterns.
    return (values + 0.0).view(torch.int64) >> _BIN_SHIFT


def _kth_smallest(scores: Callable[[], Iterator[Tensor]], k: int) -> tuple[float, int]:
    """``(t, below)``: the ``k``-th smallest (1-based) of all values ``scores()`` yields
    (1-D float64, non-negative, +inf allowed) and how many values are ``< t``.

    Two passes: a histogram over the values' top bits, then the values of the one bin
    holding the k-th; memory is the histogram plus that bin, not all values.
    """
    hist = torch.zeros(_BINS, dtype=torch.int64)
    for values in scores():
        hist += torch.bincount(_bins(values), minlength=_BINS)
    cumulative = hist.cumsum(0)
    target = int(torch.searchsorted(cumulative, torch.tensor([k])))
    lower = int(cumulative[target - 1]) if target > 0 else 0
    inside = torch.cat([values[_bins(values) == target] for values in scores()])
    threshold = float(torch.kthvalue(inside, k - lower).values)
    return threshold, lower + int((inside < threshold).sum())


class _Threshold:
    """Removes, layer after layer in a fixed order, every score ``< t`` and the first
    ``left`` scores equal to ``t`` (position order): the ``k`` smallest overall."""

    def __init__(self, threshold: float, left: int) -> None:
        self.threshold = threshold
        self.left = left

    def removed(self, scores: Tensor) -> Tensor:
        flat = scores.reshape(-1)
        gone = flat < self.threshold
        if self.left > 0:
            ties = torch.nonzero(flat == self.threshold).flatten()[: self.left]
            gone[ties] = True
            self.left -= int(ties.numel())
        return gone.view_as(scores)


# ---------------------------------------------------------------------------------------------
# The layers of a source


@dataclass(frozen=True)
class _Layer:
    record: LayerWeights
    bias: int

    @property
    def name(self) -> str:
        return self.record.layer

    def canonical(self, stored: Tensor) -> Tensor:
        return stored.transpose(0, 1) if self.record.transposed else stored


def _prunable(record: LayerWeights) -> bool:
    return (
        record.kind in _PRUNABLE_KINDS
        and record.status == "ok"
        and record.dtype in _FLOAT_DTYPES
        and record.name.rpartition(".")[2] == "weight"
        and "[" not in record.name
    )


def _weight_order(units: list[_Unit], trust_pickle: bool) -> Iterator[str]:
    """Tensor names in the order the write pass meets them."""
    for unit in units:
        if unit.torch_format:
            yield from _state_dict(unit.path, trust_pickle)[1]
        else:
            yield from (entry.name for entry in read_safetensors_entries(unit.path))


def _state_dict(path: Path, trust_pickle: bool) -> tuple[Any, MutableMapping[str, Any]]:
    loaded = load_checkpoint(path, trust_pickle=trust_pickle)
    state = unwrap_state_dict(loaded)
    if not isinstance(state, MutableMapping):
        raise WeightsError(
            f"{path} holds a {type(state).__name__}, not a state dict; prune it in memory "
            "(tailwise.prune.prune on the loaded model)"
        )
    return loaded, state


# ---------------------------------------------------------------------------------------------
# Per-layer ratios


def _ratios(
    budgeted: list[_Layer],
    ratio: float,
    parsed: Allocation,
    analysis: pd.DataFrame | None,
    source: Path,
    trust_pickle: bool,
    progress: bool,
    epsilon: float,
) -> dict[str, float]:
    names = [layer.name for layer in budgeted]
    if parsed.kind is AllocationKind.UNIFORM:
        return dict.fromkeys(names, ratio)
    if parsed.kind is AllocationKind.ERK:
        densities = erk_densities([layer.record.shape for layer in budgeted], 1.0 - ratio)
        return {n: max(0.0, 1.0 - d) for n, d in zip(names, densities, strict=True)}
    if parsed.kind is AllocationKind.LAMP:
        return _lamp_ratios(budgeted, ratio)
    column = parsed.column
    assert column is not None
    if analysis is None:
        from tailwise.spectral.analyze import analyze

        pattern = "^(?:" + "|".join(re.escape(layer.record.name) for layer in budgeted) + ")$"
        analysis = analyze(source, include=pattern, trust_pickle=trust_pickle, progress=progress)
    values = _layer_metric(analysis, column, names)
    sizes = [math.prod(layer.record.shape) for layer in budgeted]
    found = parsed.ratios(values, sizes, ratio, epsilon=epsilon)
    return dict(zip(names, found, strict=True))


def _lamp_ratios(budgeted: list[_Layer], ratio: float) -> dict[str, float]:
    """:func:`tailwise.prune.allocate`'s LAMP ratios, with the scores streamed."""

    def scores() -> Iterator[Tensor]:
        for layer in budgeted:
            yield _lamp_layer_scores([layer.record.tensor()])[0]

    total = sum(math.prod(layer.record.shape) for layer in budgeted)
    finite = sum(int(torch.isfinite(s).sum()) for s in scores())
    to_prune = min(_count(ratio, total), finite)
    if to_prune <= 0:
        return {layer.name: 0.0 for layer in budgeted}
    threshold, below = _kth_smallest(scores, to_prune)
    cut = _Threshold(threshold, to_prune - below)
    return {
        layer.name: int(cut.removed(s).sum()) / s.numel()
        for layer, s in zip(budgeted, scores(), strict=True)
    }


# ---------------------------------------------------------------------------------------------
# Pruning one tensor


@dataclass
class _Plan:
    method: FileMethod
    ratios: dict[str, float]
    center: bool
    cut: _Threshold | None = None
    rows: dict[str, LayerReport] = field(default_factory=dict)

    def prune(self, layer: _Layer, stored: Tensor) -> Tensor:
        """The stored tensor of ``layer`` after pruning (``stored`` itself when unchanged),
        and its report row recorded."""
        weight = self.canonical_checked(layer, stored)
        n = weight.numel()
        shape = layer.record.shape
        flops = float(2 * shape[0] * shape[1]) if len(shape) == 2 else float("nan")
        params = n + layer.bias
        requested = self.ratios[layer.name]
        row = LayerReport(
            layer=layer.name,
            kind=layer.record.kind.value,
            method=self.method.value,
            ratio=requested,
            params_before=params,
            params_after=params,
            flops_before=flops,
            flops_after=flops,
        )
        self.rows[layer.name] = row
        skip = nonfinite_reason(weight)
        if skip:
            row.note = skip
            return stored
        in_threshold = self.cut is not None and requested > 0
        if requested <= 0 and not in_threshold:
            return stored
        center = _median(weight) if self.center else 0.0
        if self.method is FileMethod.NODE:
            units = weight.shape[1] if weight.ndim == 2 else weight.shape[0] * weight.shape[1]
            keep = _unit_keep_mask(weight, math.floor(requested * units))
        elif self.cut is not None:
            keep = ~self.cut.removed(_importance(weight, self.center).to(torch.float64))
            if not bool(keep.any()):
                flat = keep.view(-1)
                flat[int(_importance(weight, self.center).flatten().argmax())] = True
                row.note = "kept its largest weight (global threshold would empty the layer)"
        else:
            keep = _smallest_mask(_importance(weight, self.center), math.floor(requested * n))
        removed = int((~keep).sum())
        row.achieved = removed / n
        row.params_after = params - removed
        row.flops_after = flops * (n - removed) / n
        row.rel_error = _masked_error(weight, keep, center)
        pruned = torch.where(keep, weight, torch.tensor(center, dtype=weight.dtype))
        return (pruned.transpose(0, 1) if layer.record.transposed else pruned).contiguous()

    @staticmethod
    def canonical_checked(layer: _Layer, stored: Tensor) -> Tensor:
        weight = layer.canonical(stored)
        if tuple(weight.shape) != layer.record.shape:
            raise WeightsError(
                f"tensor {layer.record.name!r} has shape {tuple(stored.shape)}, expected "
                f"{layer.record.shape} (did the source change?)"
            )
        return weight


# ---------------------------------------------------------------------------------------------
# Writing


def _tensor_bytes(tensor: Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")


def _write_safetensors(
    unit: _Unit,
    target: Path | None,
    layers: Mapping[str, _Layer],
    plan: _Plan,
) -> None:
    """Stream ``unit`` to ``target`` (header first: sizes do not change), pruning ``layers``."""
    entries = read_safetensors_entries(unit.path)
    if target is None:
        for entry in entries:
            if entry.name in layers:
                plan.prune(layers[entry.name], entry.load(None))
        return
    metadata = read_safetensors_metadata(unit.path)
    header: dict[str, Any] = {}
    offset = 0
    for entry in entries:
        code = _SAFETENSORS_CODES.get(entry.dtype) if entry.dtype is not None else None
        if code is None:
            raise WeightsError(
                f"tensor {entry.name!r} in {unit.path} has dtype {entry.dtype_name}, which "
                "tailwise cannot copy"
            )
        size = math.prod(entry.shape) * entry.dtype.itemsize  # type: ignore[union-attr]
        header[entry.name] = {
            "dtype": code,
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for entry in entries:
            stored = entry.load(None)
            if entry.name in layers:
                stored = plan.prune(layers[entry.name], stored)
            handle.write(_tensor_bytes(stored))
            del stored
        handle.flush()
        os.fsync(handle.fileno())


def _write_torch(
    unit: _Unit,
    target: Path | None,
    layers: Mapping[str, _Layer],
    plan: _Plan,
    trust_pickle: bool,
) -> None:
    loaded, state = _state_dict(unit.path, trust_pickle)
    for name in list(state):
        if name in layers and isinstance(state[name], Tensor):
            state[name] = plan.prune(layers[name], state[name])
    if target is not None:
        with atomic_path(target) as tmp:
            torch.save(loaded, tmp)


# ---------------------------------------------------------------------------------------------
# The entry point


def _parse_method(method: FileMethod | str) -> FileMethod:
    try:
        return FileMethod(method)
    except ValueError:
        if method in ("lowrank", "channel"):
            raise UsageError(
                f"method {method!r} changes the architecture, which a weights file without "
                f"a tailwise architecture does not record; choose {', '.join(FILE_METHODS)}, "
                "or pass the model (command line: --model package.module:callable)"
            ) from None
        raise UsageError(f"method {method!r}: choose one of {', '.join(FILE_METHODS)}") from None


def _check_out(source: Path, out: Path | None, folder: bool, units: list[_Unit]) -> None:
    if out is None:
        return
    if out.resolve() == source.resolve() or (
        folder and out.resolve() == units[0].path.parent.resolve()
    ):
        raise UsageError(f"out {out}: would overwrite the source; choose another path")
    if folder:
        if out.exists() and not out.is_dir():
            raise UsageError(f"out {out}: a folder source is written as a folder; {out} is a file")
        return
    suffixes = (".safetensors",) if not units[0].torch_format else tuple(sorted(TORCH_SUFFIXES))
    check_output_path(out, suffixes, "out")


def prune_file(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    ratio: float,
    *,
    method: FileMethod | str = FileMethod.MAGNITUDE,
    allocation: str = "uniform",
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    protect_outputs: bool = True,
    center: bool = False,
    analysis: pd.DataFrame | None = None,
    trust_pickle: bool = False,
    progress: bool = True,
    epsilon: float = ALPHA_PRUNING_EPSILON,
) -> FilePruneResult:
    """Prune the weights stored in ``source`` without building a model; write them to ``out``.

    ``source``: a ``.safetensors`` file, a torch checkpoint (``.pt``/``.pth``/``.bin``/
    ``.ckpt``, read with ``weights_only=True`` unless ``trust_pickle``), a Hugging Face
    folder (or its ``*.index.json``). ``out``: a file of the same format for a file, a
    folder for a folder (created; the same shard file names, the index and every other file
    that holds no weights are written there, each atomically); ``None`` computes the report
    only. ``method``: ``"magnitude"`` (each layer loses its ``floor(r N)`` smallest
    ``|w|``), ``"global-magnitude"`` (one threshold over all selected layers, which keep at
    least their largest weight) or ``"node"`` (each 2-D layer loses its ``floor(r in)``
    weakest input nodes, a convolution its ``floor(r out in)`` weakest kernels, by l2 norm);
    the other methods of :func:`tailwise.prune.prune` change the architecture and need the
    model. ``allocation``, ``center``, ``include`` / ``exclude`` and ``analysis`` as in
    :func:`tailwise.prune.prune` (a metric allocation analyses ``source`` itself).

    ``epsilon``: the spread of ``allocation="alpha_pruning"`` (:func:`alpha_pruning_ratios`).
    ``protect_outputs`` keeps the output layers unpruned (reported with ratio 0); a file has
    no graph, so they are found by name (:func:`file_output_layers`: :data:`HEAD_NAMES`, else
    the last layer). A layer holding NaN/Inf is left as it is, with the reason in its note.
    Bad values raise :class:`tailwise.UsageError`, unreadable files
    :class:`tailwise.weights.WeightsError`.
    """
    chosen = _parse_method(method)
    ratio = check_ratio(ratio)
    path = Path(os.fspath(source)).expanduser()
    target = None if out is None else Path(os.fspath(out)).expanduser()
    parsed = Allocation.parse(
        allocation, METRIC_COLUMNS if analysis is None else metric_columns_of(analysis)
    )
    if chosen is FileMethod.GLOBAL_MAGNITUDE and parsed.kind is not AllocationKind.UNIFORM:
        raise UsageError(
            "method 'global-magnitude' sets layer ratios by one global threshold; "
            "use method 'magnitude' with an allocation"
        )
    if center and chosen is FileMethod.NODE:
        raise UsageError("center applies to magnitude pruning only")
    include_pattern = compile_pattern(include, "include")
    exclude_pattern = compile_pattern(exclude, "exclude")
    units, to_copy, not_copied, folder = _layout(path)
    _check_out(path, target, folder, units)

    records = list(iter_layers(path, trust_pickle=trust_pickle))
    sizes = {record.name: math.prod(record.shape) for record in records}
    candidates = {
        record.name: _Layer(record, sizes.get(f"{record.layer}.bias", 0))
        for record in records
        if _prunable(record)
    }
    order = [name for name in _weight_order(units, trust_pickle) if name in candidates]
    every = [candidates[name] for name in order]
    outputs = (
        file_output_layers(
            [layer.name for layer in every], stored_order=units[0].torch_format and not folder
        )
        if protect_outputs
        else []
    )
    selected = [
        layer
        for layer in every
        if (include_pattern is None or include_pattern.search(layer.record.name))
        and not (exclude_pattern is not None and exclude_pattern.search(layer.record.name))
    ]
    budgeted = [layer for layer in selected if layer.name not in outputs]
    if not budgeted:
        raise UsageError(
            f"no Linear/Conv weight to prune in {path}"
            + (" besides the output layer(s)" if selected else "")
            + (f" matches include={include!r}" if include is not None else "")
            + (f" outside exclude={exclude!r}" if exclude is not None else "")
        )
    if chosen is FileMethod.GLOBAL_MAGNITUDE:
        ratios = {layer.name: ratio for layer in budgeted}
    else:
        ratios = _ratios(budgeted, ratio, parsed, analysis, path, trust_pickle, progress, epsilon)
    plan = _Plan(chosen, {layer.name: ratios.get(layer.name, 0.0) for layer in selected}, center)
    if chosen is FileMethod.GLOBAL_MAGNITUDE:
        plan.cut = _global_cut(budgeted, ratio, center)

    chosen_layers = {layer.record.name: layer for layer in selected}
    written: list[Path] = []
    if target is not None and folder:
        target.mkdir(parents=True, exist_ok=True)
    for unit in progress_bar(units, len(units), progress, f"prune ({chosen.value})", str):
        unit_target = None
        if target is not None:
            unit_target = target / unit.name if folder else target
            written.append(unit_target)
        if unit.torch_format:
            _write_torch(unit, unit_target, chosen_layers, plan, trust_pickle)
        else:
            _write_safetensors(unit, unit_target, chosen_layers, plan)
    if target is not None:
        for extra in to_copy:
            with atomic_path(target / extra.name) as tmp:
                shutil.copyfile(extra, tmp)
            written.append(target / extra.name)
    rows = [plan.rows[layer.name] for layer in selected if layer.name in plan.rows]
    for row in rows:
        if row.layer in outputs and row.achieved == 0:
            row.note = "output layer: kept" if not row.note else f"output layer: kept; {row.note}"
    return FilePruneResult(
        report=make_report(rows),
        method=chosen.value,
        source=path,
        out=target,
        outputs=outputs,
        written=written,
        not_copied=not_copied if target is not None else [],
    )


def _global_cut(budgeted: list[_Layer], ratio: float, center: bool) -> _Threshold:
    """The global magnitude threshold over the finite budgeted layers, in write order."""

    def scores() -> Iterator[Tensor]:
        for layer in budgeted:
            weight = layer.record.tensor()
            if not nonfinite_reason(weight):
                yield _importance(weight, center).to(torch.float64).reshape(-1)

    total = sum(s.numel() for s in scores())
    remove = math.floor(ratio * total)
    if remove <= 0:
        return _Threshold(-math.inf, 0)
    threshold, below = _kth_smallest(scores, remove)
    return _Threshold(threshold, remove - below)
