"""Where weight matrices come from.

:func:`iter_layers` turns a weight source into a stream of :class:`LayerWeights` records, one
per stored tensor (three for a fused ``nn.MultiheadAttention`` input projection, split into its
q, k and v blocks). A record knows its name, kind, shape and dtype without loading anything;
``record.tensor()`` loads the values on demand.

Sources
-------
* ``nn.Module`` -- every parameter, named as in ``model.named_parameters()`` (tied parameters
  once). Kinds come from the owning module's type: ``Linear``, ``Conv{1,2,3}d``,
  ``ConvTranspose{1,2,3}d``, ``Embedding``/``EmbeddingBag``, ``MultiheadAttention``,
  ``LSTM``/``GRU``/``RNN`` (and their cells), Hugging Face ``Conv1D`` (class named ``Conv1D``
  with an ``nf`` attribute) and normalization layers (any class whose name ends in ``Norm``
  or ``Norm<k>d``: BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm, LlamaRMSNorm, ...).
  Parameters of other modules fall back to :func:`infer_kind`. Buffers are not weights and
  are not listed.
* A state dict, i.e. any ``Mapping[str, Tensor]`` -- kinds from :func:`infer_kind`. A checkpoint
  dict that keeps its weights under ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or
  ``"module"`` (first found, in that order, repeatedly) is unwrapped. Values that are not
  tensors become skipped ``OTHER`` records.
* A ``.safetensors`` file -- streamed (see below), records in the file's data order.
* A Hugging Face folder -- ``model.safetensors``, the sharded ``model.safetensors.index.json``,
  ``pytorch_model.bin`` or ``pytorch_model.bin.index.json`` (looked for in that order; else a
  folder holding exactly one ``*.safetensors`` file). ``config.json`` is optional; its
  ``model_type`` says whether the model stores GPT-2 style ``Conv1D`` weights.
* A torch checkpoint (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) -- ``torch.load(...,
  weights_only=True)``, memory-mapped when the file is in the zip format. Pickled Python
  objects are refused unless ``trust_pickle=True``. A checkpoint holding a whole ``nn.Module``
  is walked like a module. Not streamed: the torch format is loaded as a whole (with ``mmap``
  the operating system pages it in lazily).

Kinds
-----
Analysed kinds are the matrices HT-SR looks at (``LINEAR``, the convolutions, ``EMBEDDING``,
``HF_CONV1D``, ``ATTENTION``, ``FUSED_QKV``, ``RNN``); ``BIAS``, ``NORM``, ``VECTOR`` and
``OTHER`` records are yielded with ``status="skipped"`` and a ``reason`` so that tables can
show them. Name-and-shape sources (state dicts and files) use the single rule
:func:`infer_kind`; see its docstring. Only floating-point tensors and ``int8``/``uint8``
(quantized weights) are analysed: other dtypes (bool, complex, wider integers) give skipped
records whatever their kind. Safetensors files that look like GPT-2 (``config.json``
``model_type`` in :data:`HF_CONV1D_MODEL_TYPES`, or without a config a ``*.c_attn.weight`` of
shape ``(E, 3E)``) have their 2-D ``c_attn``/``q_attn`` (``FUSED_QKV``) and ``c_fc``/``c_proj``
(``HF_CONV1D``) weights read as ``(in, out)``.

Canonical orientation
---------------------
``LayerWeights.shape`` and ``LayerWeights.tensor()`` are always ``(out, in, *kernel)``:
Hugging Face ``Conv1D`` weights, stored ``(in, out)``, are transposed; ``ConvTranspose``
weights, stored ``(in, out/groups, *kernel)``, have their first two dimensions swapped
(``transposed=True`` on the record says so). Only module sources can recognise a
``ConvTranspose``; in a state dict its weight is read as a convolution in stored order.
Embeddings keep their stored ``(num_embeddings, embedding_dim)``.

Streaming guarantee
-------------------
For safetensors sources only the JSON headers are read up front. Each ``tensor()`` call opens
the file, seeks to the tensor's bytes and reads exactly them into one fresh buffer that the
returned tensor owns (``torch.frombuffer``; no memory map is kept open). Records never cache
their tensor, so a loop that analyses one layer and drops it holds one tensor in memory at a
time however large the file. (Little-endian hosts, like the safetensors format itself.)
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn

__all__ = [
    "HF_CONV1D_MODEL_TYPES",
    "LayerKind",
    "LayerWeights",
    "WeightSource",
    "WeightsError",
    "infer_kind",
    "iter_layers",
    "list_layers",
]


class WeightsError(ValueError):
    """A weight source cannot be read; the message names what and where (path, tensor)."""


class LayerKind(str, enum.Enum):
    """What a stored tensor is, as far as spectral analysis is concerned."""

    LINEAR = "linear"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    CONV3D = "conv3d"
    CONV_TRANSPOSE1D = "conv_transpose1d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    CONV_TRANSPOSE3D = "conv_transpose3d"
    EMBEDDING = "embedding"
    HF_CONV1D = "hf_conv1d"  # Hugging Face transformers Conv1D, stored (in, out)
    ATTENTION = "attention"  # nn.MultiheadAttention q/k/v projection
    FUSED_QKV = "fused_qkv"  # one matrix holding q, k and v (GPT-2 c_attn, query_key_value, ...)
    RNN = "rnn"  # LSTM/GRU/RNN weight_ih_l*/weight_hh_l*
    BIAS = "bias"
    NORM = "norm"
    VECTOR = "vector"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value

    @property
    def is_conv(self) -> bool:
        """True for convolution and transposed-convolution kinds (not ``HF_CONV1D``)."""
        return self in _CONV_KINDS

    @property
    def analysed(self) -> bool:
        """False for the kinds that are never analysed (bias, norm, vector, other)."""
        return self not in _NOT_ANALYSED_KINDS


_CONV_KINDS = frozenset(
    {
        LayerKind.CONV1D,
        LayerKind.CONV2D,
        LayerKind.CONV3D,
        LayerKind.CONV_TRANSPOSE1D,
        LayerKind.CONV_TRANSPOSE2D,
        LayerKind.CONV_TRANSPOSE3D,
    }
)
_NOT_ANALYSED_KINDS = frozenset({LayerKind.BIAS, LayerKind.NORM, LayerKind.VECTOR, LayerKind.OTHER})
_CONV_BY_NDIM = {3: LayerKind.CONV1D, 4: LayerKind.CONV2D, 5: LayerKind.CONV3D}
_CONV_TRANSPOSE_BY_NDIM = {
    3: LayerKind.CONV_TRANSPOSE1D,
    4: LayerKind.CONV_TRANSPOSE2D,
    5: LayerKind.CONV_TRANSPOSE3D,
}


@dataclass(frozen=True)
class LayerWeights:
    """One stored weight tensor, described without loading it.

    ``shape`` is in canonical ``(out, in, *kernel)`` orientation; ``transposed`` is True when
    the stored tensor has its first two dimensions swapped relative to it (HF ``Conv1D``,
    ``ConvTranspose``). ``dtype`` is the stored dtype's name (``"float32"``, ``"bfloat16"``,
    ``"int8"``, ...). ``status`` is ``"ok"`` or ``"skipped"`` (then ``reason`` says why).
    ``loader`` returns the tensor as stored; use :meth:`tensor` instead.
    """

    name: str
    kind: LayerKind
    shape: tuple[int, ...]
    dtype: str
    status: str = "ok"
    reason: str = ""
    transposed: bool = False
    loader: Callable[[], torch.Tensor] = field(repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "skipped"):
            raise ValueError(f"LayerWeights {self.name!r}: status must be 'ok' or 'skipped'")

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Load the tensor now, in canonical orientation and stored dtype, on ``device``.

        Nothing is cached: every call loads again. For module and in-memory state-dict sources
        the result is a view sharing memory with the source (do not modify it in place); a
        transposed record returns a non-contiguous view.
        """
        stored = self.loader()
        canonical = stored.transpose(0, 1) if self.transposed else stored
        if tuple(canonical.shape) != self.shape:
            raise WeightsError(
                f"tensor {self.name!r} loaded with shape {tuple(canonical.shape)}, "
                f"expected {self.shape} (did the source change?)"
            )
        return canonical if device is None else canonical.to(device)


WeightSource: TypeAlias = nn.Module | Mapping[str, Any] | str | os.PathLike[str]

# Model types whose Hugging Face implementation stores projections as transformers.Conv1D.
HF_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})

_SUPPORTED_FILES = ".safetensors, .pt, .pth, .bin, .ckpt (or a Hugging Face model folder)"
_TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
_UNWRAP_KEYS = ("state_dict", "model_state_dict", "model", "module")

# ---------------------------------------------------------------------------------------------
# The name-and-shape rule

_NORM_COMPONENT = re.compile(r"norm|^(?:ln|bn)(?:\d+|_\w*)?$", re.IGNORECASE)
_IN_PROJ_NAME = re.compile(r"in_proj_weight$")
_RNN_NAME = re.compile(r"(?:^|\.)weight_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?$")
_EMBEDDING_NAME = re.compile(r"embed|(?:^|\.)(?:wte|wpe)(?:\.|$)", re.IGNORECASE)
_FUSED_QKV_NAME = re.compile(
    r"(?:^|\.)(?:c_attn|query_key_value|qkv|qkv_proj|wqkv)(?:\.|$)", re.IGNORECASE
)
_HF_CONV1D_NAME = re.compile(r"(?:^|\.)(c_attn|q_attn|c_fc|c_proj)\.weight$")


def infer_kind(name: str, shape: tuple[int, ...]) -> tuple[LayerKind, str]:
    """Kind of a stored tensor from its name and shape alone; returns ``(kind, skip_reason)``.

    ``skip_reason`` is ``""`` for analysed kinds. The rule, first match wins:

    1. ndim 0 or 1 -> skipped (reason ``"0-D tensor"`` / ``"1-D tensor"``): a name with a
       norm-like component (containing ``norm``, or ``ln``/``bn`` optionally followed by digits
       or ``_...``: ``ln_1``, ``bn1``, ``LayerNorm``, ``input_layernorm``) -> ``NORM``;
       else a last component containing ``bias`` -> ``BIAS``; else ``VECTOR``.
    2. ndim > 5 -> ``OTHER``, skipped.
    3. name ending in ``in_proj_weight`` with shape ``(3E, E)`` -> ``ATTENTION`` (split into
       q, k, v records by :func:`iter_layers`).
    4. ``weight_ih_l<k>``, ``weight_hh_l<k>``, ``weight_hr_l<k>`` (optionally ``_reverse``),
       or a cell's ``weight_ih``/``weight_hh``, 2-D -> ``RNN``.
    5. 2-D and the name contains ``embed`` (``embed_tokens``, ``word_embeddings``,
       ``tok_embeddings``, ``position_embeddings``, ...) or a ``wte``/``wpe`` component
       -> ``EMBEDDING``.
    6. 2-D with a fused q/k/v component (``c_attn``, ``query_key_value``, ``qkv``,
       ``qkv_proj``, ``Wqkv``) -> ``FUSED_QKV``.
    7. any other 2-D -> ``LINEAR``.
    8. 3-D/4-D/5-D -> ``CONV1D``/``CONV2D``/``CONV3D``, except a tensor with leading dimension
       1 whose last name component does not contain ``weight`` (a position embedding, class
       token or attention-mask buffer such as ViT ``pos_embed`` or GPT-2 ``attn.bias``) ->
       ``OTHER``, skipped.

    Dtypes are not part of this rule; :func:`iter_layers` skips analysed kinds whose dtype is
    neither floating point nor ``int8``/``uint8``.
    """
    ndim = len(shape)
    components = name.split(".")
    if ndim <= 1:
        reason = f"{ndim}-D tensor"
        if any(_NORM_COMPONENT.search(part) for part in components):
            return LayerKind.NORM, reason
        if "bias" in components[-1].lower():
            return LayerKind.BIAS, reason
        return LayerKind.VECTOR, reason
    if ndim > 5:
        return LayerKind.OTHER, f"{ndim}-D tensor"
    if _is_in_proj(name, shape):
        return LayerKind.ATTENTION, ""
    if ndim == 2:
        if _RNN_NAME.search(name):
            return LayerKind.RNN, ""
        if _EMBEDDING_NAME.search(name):
            return LayerKind.EMBEDDING, ""
        if _FUSED_QKV_NAME.search(name):
            return LayerKind.FUSED_QKV, ""
        return LayerKind.LINEAR, ""
    if shape[0] == 1 and "weight" not in components[-1].lower():
        return LayerKind.OTHER, f"{ndim}-D tensor with leading dimension 1, not a kernel"
    return _CONV_BY_NDIM[ndim], ""


def _is_in_proj(name: str, shape: tuple[int, ...]) -> bool:
    return (
        bool(_IN_PROJ_NAME.search(name))
        and len(shape) == 2
        and shape[1] > 0
        and shape[0] == 3 * shape[1]
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_skip_reason(dtype: torch.dtype | None, dtype_name: str) -> str:
    """Why a tensor of this dtype is not analysed, or "" when it is."""
    if dtype is None:
        return f"dtype {dtype_name} is not supported by this torch"
    if dtype == torch.bool:
        return "non-numeric dtype bool"
    if dtype.is_complex:
        return f"complex dtype {dtype_name}"
    if dtype.is_floating_point or dtype in (torch.int8, torch.uint8):
        return ""
    return f"integer dtype {dtype_name} (indices or counts, not weights)"


# ---------------------------------------------------------------------------------------------
# Stored tensors -> records

Rows = tuple[int, int] | None  # a [start, stop) range of dim 0, or None for the whole tensor


@dataclass(frozen=True)
class _Stored:
    """A named tensor in a source, as stored, not loaded yet."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: a dtype this torch cannot represent
    dtype_name: str
    load: Callable[[Rows], torch.Tensor]


def _in_memory(name: str, tensor: torch.Tensor) -> _Stored:
    def load(rows: Rows) -> torch.Tensor:
        detached = tensor.detach()
        return detached if rows is None else detached[rows[0] : rows[1]]

    return _Stored(name, tuple(tensor.shape), tensor.dtype, _dtype_name(tensor.dtype), load)


def _make_records(
    stored: _Stored,
    kind: LayerKind,
    reason: str,
    *,
    transposed: bool = False,
    split_qkv: bool = False,
) -> Iterator[LayerWeights]:
    if kind.analysed and not reason:
        reason = _dtype_skip_reason(stored.dtype, stored.dtype_name)
    status = "skipped" if reason else "ok"
    shape = stored.shape
    if transposed:
        shape = (shape[1], shape[0], *shape[2:])
    if not split_qkv:
        loader = functools.partial(stored.load, None)
        yield LayerWeights(
            stored.name, kind, shape, stored.dtype_name, status, reason, transposed, loader=loader
        )
        return
    width = shape[1]
    for index, part in enumerate("qkv"):
        rows = (index * width, (index + 1) * width)
        yield LayerWeights(
            f"{stored.name}[{part}]",
            kind,
            (width, width),
            stored.dtype_name,
            status,
            reason,
            loader=functools.partial(stored.load, rows),
        )


def _records_from_stored(stored: _Stored, hf_conv1d: bool) -> Iterator[LayerWeights]:
    """Records for a name-and-shape source (state dict, file)."""
    kind, reason = infer_kind(stored.name, stored.shape)
    match = _HF_CONV1D_NAME.search(stored.name) if hf_conv1d else None
    if match and len(stored.shape) == 2:
        kind = LayerKind.FUSED_QKV if match.group(1) == "c_attn" else LayerKind.HF_CONV1D
        return _make_records(stored, kind, "", transposed=True)
    return _make_records(stored, kind, reason, split_qkv=kind is LayerKind.ATTENTION)


def _looks_like_hf_conv1d(named_shapes: Iterable[tuple[str, tuple[int, ...]]]) -> bool:
    """GPT-2 layout guess without a config: a ``c_attn.weight`` stored ``(E, 3E)``."""
    return any(
        name.endswith("c_attn.weight") and len(shape) == 2 and shape[1] == 3 * shape[0] > 0
        for name, shape in named_shapes
    )


def _records_from_stored_list(
    stored: list[_Stored], hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    if hf_conv1d is None:
        hf_conv1d = _looks_like_hf_conv1d((s.name, s.shape) for s in stored)
    for item in stored:
        yield from _records_from_stored(item, hf_conv1d)


# ---------------------------------------------------------------------------------------------
# nn.Module


def _is_norm_module(module: nn.Module) -> bool:
    return any(re.search(r"Norm(?:\d+d)?$", cls.__name__) for cls in type(module).__mro__)


def _is_hf_conv1d_module(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and hasattr(module, "nf")
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
    )


def _module_param_records(
    module: nn.Module, param_name: str, stored: _Stored
) -> Iterator[LayerWeights]:
    """Records for one parameter, from the type of the module that owns it."""
    ndim = len(stored.shape)
    if _is_norm_module(module):
        return _make_records(stored, LayerKind.NORM, "normalization layer")
    if "bias" in param_name:
        reason = "bias vector" if ndim == 1 else "bias"
        return _make_records(stored, LayerKind.BIAS, reason)
    fused = bool(_FUSED_QKV_NAME.search(stored.name))
    if param_name == "weight":
        if isinstance(module, nn.Linear) and ndim == 2:
            return _make_records(stored, LayerKind.FUSED_QKV if fused else LayerKind.LINEAR, "")
        if isinstance(module, nn.Bilinear):
            return _make_records(stored, LayerKind.OTHER, "bilinear weight (3-D, not a matrix)")
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            kind = _CONV_TRANSPOSE_BY_NDIM[ndim]
            return _make_records(stored, kind, "", transposed=True)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return _make_records(stored, _CONV_BY_NDIM[ndim], "")
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return _make_records(stored, LayerKind.EMBEDDING, "")
        if _is_hf_conv1d_module(module):
            kind = LayerKind.FUSED_QKV if fused else LayerKind.HF_CONV1D
            return _make_records(stored, kind, "", transposed=True)
    if isinstance(module, nn.MultiheadAttention):
        if param_name == "in_proj_weight" and _is_in_proj(param_name, stored.shape):
            return _make_records(stored, LayerKind.ATTENTION, "", split_qkv=True)
        if param_name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return _make_records(stored, LayerKind.ATTENTION, "")
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)) and param_name.startswith("weight_"):
        return _make_records(stored, LayerKind.RNN, "")
    kind, reason = infer_kind(stored.name, stored.shape)
    return _make_records(stored, kind, reason, split_qkv=kind is LayerKind.ATTENTION)


def _records_from_module(model: nn.Module) -> Iterator[LayerWeights]:
    # Same walk and de-duplication of tied parameters as model.named_parameters().
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(param, nn.parameter.UninitializedParameter):
                yield LayerWeights(
                    name,
                    LayerKind.OTHER,
                    (),
                    _dtype_name(param.dtype),
                    "skipped",
                    "uninitialized lazy parameter",
                    loader=functools.partial(_raise_uninitialized, name),
                )
                continue
            yield from _module_param_records(module, param_name, _in_memory(name, param))


def _raise_uninitialized(name: str) -> torch.Tensor:
    raise WeightsError(f"parameter {name!r} is an uninitialized lazy parameter")


# ---------------------------------------------------------------------------------------------
# Mappings (state dicts, checkpoints)


def _unwrap(obj: Any) -> Any:
    """Follow ``{"state_dict": ...}``-style nesting down to the weights."""
    while isinstance(obj, Mapping):
        for key in _UNWRAP_KEYS:
            inner = obj.get(key)
            if isinstance(inner, (Mapping, nn.Module)):
                obj = inner
                break
        else:
            return obj
    return obj


def _stored_from_mapping(mapping: Mapping[Any, Any], origin: str) -> list[_Stored]:
    stored: list[_Stored] = []
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise WeightsError(
                f"{origin}: key {key!r} is not a string; expected a state dict mapping "
                "parameter names to tensors"
            )
        if isinstance(value, torch.Tensor):
            stored.append(_in_memory(key, value))
        else:
            stored.append(_Stored(key, (), None, "", functools.partial(_not_a_tensor, key, value)))
    return stored


def _not_a_tensor(name: str, value: object, rows: Rows) -> torch.Tensor:
    raise WeightsError(f"entry {name!r} is a {type(value).__name__}, not a tensor")


def _records_from_mapping(
    mapping: Mapping[Any, Any], origin: str, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    stored = _stored_from_mapping(mapping, origin)  # now, so that bad keys fail early
    if hf_conv1d is None:
        tensors = (s for s in stored if isinstance(mapping[s.name], torch.Tensor))
        hf_conv1d = _looks_like_hf_conv1d((s.name, s.shape) for s in tensors)
    return _iter_mapping_records(mapping, stored, hf_conv1d)


def _iter_mapping_records(
    mapping: Mapping[Any, Any], stored: list[_Stored], hf_conv1d: bool
) -> Iterator[LayerWeights]:
    for item in stored:
        value = mapping[item.name]
        if isinstance(value, torch.Tensor):
            yield from _records_from_stored(item, hf_conv1d)
        else:
            reason = f"not a tensor ({type(value).__name__})"
            yield from _make_records(item, LayerKind.OTHER, reason)


def _records_from_object(obj: Any, origin: str, hf_conv1d: bool | None) -> Iterator[LayerWeights]:
    obj = _unwrap(obj)
    if isinstance(obj, nn.Module):
        return _records_from_module(obj)
    if isinstance(obj, Mapping):
        return _records_from_mapping(obj, origin, hf_conv1d)
    raise WeightsError(
        f"{origin} holds a {type(obj).__name__}; expected a state dict (mapping of names to "
        "tensors) or an nn.Module"
    )


# ---------------------------------------------------------------------------------------------
# safetensors, parsed and streamed by hand

_MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces

# safetensors dtype -> (bits per element, torch dtype attribute or "" when torch has none)
_SAFETENSORS_DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (8, "bool"),
    "U8": (8, "uint8"),
    "I8": (8, "int8"),
    "F8_E5M2": (8, "float8_e5m2"),
    "F8_E4M3": (8, "float8_e4m3fn"),
    "F8_E8M0": (8, "float8_e8m0fnu"),
    "I16": (16, "int16"),
    "U16": (16, "uint16"),
    "F16": (16, "float16"),
    "BF16": (16, "bfloat16"),
    "I32": (32, "int32"),
    "U32": (32, "uint32"),
    "F32": (32, "float32"),
    "C64": (64, "complex64"),
    "I64": (64, "int64"),
    "U64": (64, "uint64"),
    "F64": (64, "float64"),
    "F4": (4, ""),
    "F6_E2M3": (6, ""),
    "F6_E3M2": (6, ""),
}


def _torch_dtype(attribute: str) -> torch.dtype | None:
    dtype = getattr(torch, attribute, None) if attribute else None
    return dtype if isinstance(dtype, torch.dtype) else None


def _corrupt(path: Path, what: str) -> WeightsError:
    return WeightsError(f"corrupt safetensors file {path}: {what}")


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """Return (offset of the data section, header without __metadata__)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"{size} bytes is too short for the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            raise _corrupt(
                path, f"header length {header_len} exceeds the {size - 8} bytes after it"
            )
        if header_len > _MAX_HEADER_BYTES:
            raise _corrupt(path, f"header length {header_len} exceeds {_MAX_HEADER_BYTES} bytes")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise _corrupt(path, "__metadata__ is not a JSON object")
    return 8 + header_len, header


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_entry(
    path: Path, name: str, info: object, data_start: int, data_size: int
) -> tuple[int, int, _Stored]:
    """Validate one header entry; return (start, end, stored) with offsets in the data section."""
    if not isinstance(info, dict):
        raise _corrupt(path, f"entry for tensor {name!r} is not a JSON object")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(code, str) or code not in _SAFETENSORS_DTYPES:
        raise _corrupt(path, f"tensor {name!r} has unknown dtype {code!r}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise _corrupt(path, f"tensor {name!r} has invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    start, end = offsets
    if not start <= end <= data_size:
        raise _corrupt(
            path,
            f"tensor {name!r} data_offsets [{start}, {end}] fall outside the "
            f"{data_size}-byte data section",
        )
    bits, attribute = _SAFETENSORS_DTYPES[code]
    elements = math.prod(shape)
    if elements * bits != 8 * (end - start):
        raise _corrupt(
            path,
            f"tensor {name!r} holds {end - start} bytes but dtype {code} and shape "
            f"{tuple(shape)} need {elements * bits / 8:g}",
        )
    dtype = _torch_dtype(attribute)
    load = functools.partial(
        _read_tensor, path, name, data_start + start, tuple(shape), code, dtype
    )
    dtype_name = _dtype_name(dtype) if dtype is not None else code
    return start, end, _Stored(name, tuple(shape), dtype, dtype_name, load)


def _read_safetensors_entries(path: Path) -> list[_Stored]:
    """Parse and validate a safetensors header; entries in data order. Reads no tensor data."""
    data_start, header = _read_header(path)
    data_size = path.stat().st_size - data_start
    entries = sorted(
        (_parse_entry(path, name, info, data_start, data_size) for name, info in header.items()),
        key=lambda entry: (entry[0], entry[1]),
    )
    previous_end, previous_name = 0, ""
    for start, end, stored in entries:
        if start < previous_end:
            raise _corrupt(path, f"tensor {stored.name!r} overlaps tensor {previous_name!r}")
        previous_end, previous_name = end, stored.name
    return [stored for _, _, stored in entries]


def _read_tensor(
    path: Path,
    name: str,
    offset: int,
    shape: tuple[int, ...],
    code: str,
    dtype: torch.dtype | None,
    rows: Rows,
) -> torch.Tensor:
    """Read one tensor (or a range of its rows) into a fresh buffer the tensor owns."""
    if dtype is None:
        raise WeightsError(f"tensor {name!r} in {path} has dtype {code}, which torch cannot hold")
    itemsize = _SAFETENSORS_DTYPES[code][0] // 8
    if rows is not None:
        row_bytes = math.prod(shape[1:]) * itemsize
        offset += rows[0] * row_bytes
        shape = (rows[1] - rows[0], *shape[1:])
    nbytes = math.prod(shape) * itemsize
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    filled = 0
    with path.open("rb", buffering=0) as handle:
        handle.seek(offset)
        # A single read may return less than asked (Linux caps one read at ~2 GiB).
        while filled < nbytes:
            count = handle.readinto(view[filled:])
            if not count:
                raise _corrupt(path, f"tensor {name!r} is truncated ({filled} of {nbytes} bytes)")
            filled += count
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


def _records_from_safetensors(paths: list[Path], hf_conv1d: bool | None) -> Iterator[LayerWeights]:
    # All headers are read (and validated) now, so a bad shard fails before any analysis.
    stored = [entry for path in paths for entry in _read_safetensors_entries(path)]
    return _records_from_stored_list(stored, hf_conv1d)


# ---------------------------------------------------------------------------------------------
# Torch checkpoints

_PICKLED_GLOBAL = re.compile(r"Unsupported (?:global|class)[:\s]+(?:GLOBAL\s+)?([\w.]+)")


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _load_torch(path: Path, trust_pickle: bool) -> Any:
    mmap = zipfile.is_zipfile(path)  # torch can memory-map only the zip format
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise WeightsError(f"cannot read torch checkpoint {path}: {_first_line(exc)}") from exc
        if not trust_pickle:
            found = _PICKLED_GLOBAL.search(message)
            if found:
                raise WeightsError(
                    f"{path} contains pickled Python objects ({found.group(1)}); refusing to "
                    "unpickle. Re-run with trust_pickle=True (--trust-pickle) only if you "
                    "trust this file"
                ) from None
            detail = message.strip().splitlines()[-1] if message.strip() else ""
            raise WeightsError(
                f"cannot read torch checkpoint {path}: not a weights-only checkpoint, maybe "
                f"corrupt ({detail.strip()[:120]}); if it holds pickled Python objects you "
                "trust, re-run with trust_pickle=True (--trust-pickle)"
            ) from None
    except Exception as exc:
        raise WeightsError(f"cannot read torch checkpoint {path}: {_first_line(exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:
        raise WeightsError(f"cannot read torch checkpoint {path}: {_first_line(exc)}") from exc


def _records_from_torch_file(
    path: Path, trust_pickle: bool, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    return _records_from_object(_load_torch(path, trust_pickle), str(path), hf_conv1d)


def _records_from_torch_shards(
    paths: list[Path], trust_pickle: bool, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    # One shard loaded at a time, when the iteration reaches it.
    for path in paths:
        yield from _records_from_torch_file(path, trust_pickle, hf_conv1d)


# ---------------------------------------------------------------------------------------------
# Files and folders


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"invalid JSON in {path}: {exc}") from None


def _read_index(index_path: Path) -> dict[Path, set[str]]:
    """Shard file -> tensor names, from a Hugging Face ``*.index.json``; shards must exist."""
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f"{index_path}: no 'weight_map' object of tensor name -> shard file")
    shards: dict[Path, set[str]] = {}
    for tensor_name, shard_name in sorted(weight_map.items(), key=lambda item: item[1]):
        shards.setdefault(index_path.parent / shard_name, set()).add(tensor_name)
    for shard in shards:
        if not shard.is_file():
            raise WeightsError(f"{index_path}: shard {shard.name} listed in weight_map not found")
    return shards


def _records_from_safetensors_index(
    index_path: Path, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    stored: list[_Stored] = []
    for shard, names in _read_index(index_path).items():
        entries = _read_safetensors_entries(shard)
        missing = sorted(names - {entry.name for entry in entries})
        if missing:
            raise WeightsError(
                f"{index_path}: tensor {missing[0]!r} listed in weight_map is not in "
                f"shard {shard.name}"
            )
        stored += entries
    return _records_from_stored_list(stored, hf_conv1d)


def _hf_conv1d_from_config(folder: Path) -> bool | None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    config = _read_json(config_path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        return None
    return model_type in HF_CONV1D_MODEL_TYPES


def _records_from_folder(folder: Path, trust_pickle: bool) -> Iterator[LayerWeights]:
    hf_conv1d = _hf_conv1d_from_config(folder)
    single_st = folder / "model.safetensors"
    index_st = folder / "model.safetensors.index.json"
    single_bin = folder / "pytorch_model.bin"
    index_bin = folder / "pytorch_model.bin.index.json"
    if single_st.is_file():
        return _records_from_safetensors([single_st], hf_conv1d)
    if index_st.is_file():
        return _records_from_safetensors_index(index_st, hf_conv1d)
    if single_bin.is_file():
        return _records_from_torch_file(single_bin, trust_pickle, hf_conv1d)
    if index_bin.is_file():
        return _records_from_torch_shards(list(_read_index(index_bin)), trust_pickle, hf_conv1d)
    others = sorted(folder.glob("*.safetensors"))
    if len(others) == 1:
        return _records_from_safetensors(others, hf_conv1d)
    raise WeightsError(
        f"no weights found in folder {folder}: looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json "
        "or a single *.safetensors file"
    )


def _records_from_path(path: Path, trust_pickle: bool) -> Iterator[LayerWeights]:
    if not path.exists():
        raise WeightsError(f"no such file or folder: {path}")
    if path.is_dir():
        return _records_from_folder(path, trust_pickle)
    name = path.name.lower()
    if name.endswith(".safetensors"):
        return _records_from_safetensors([path], None)
    if name.endswith(".safetensors.index.json"):
        return _records_from_safetensors_index(path, None)
    if name.endswith(".bin.index.json"):
        return _records_from_torch_shards(list(_read_index(path)), trust_pickle, None)
    if path.suffix.lower() in _TORCH_SUFFIXES:
        return _records_from_torch_file(path, trust_pickle, None)
    raise WeightsError(
        f"unsupported file type {path.suffix or '(none)'!r} for {path}; "
        f"supported: {_SUPPORTED_FILES}"
    )


# ---------------------------------------------------------------------------------------------
# Public entry points


def _compile(pattern: str | re.Pattern[str] | None, what: str) -> re.Pattern[str] | None:
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(f"{what} must be a regex string or re.Pattern, got {type(pattern)!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what}: invalid regular expression {pattern!r} ({exc})") from None


def _select(
    records: Iterator[LayerWeights],
    include: re.Pattern[str] | None,
    exclude: re.Pattern[str] | None,
) -> Iterator[LayerWeights]:
    for record in records:
        if include is not None and not include.search(record.name):
            continue
        if exclude is not None and exclude.search(record.name):
            continue
        yield record


def iter_layers(
    source: WeightSource,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    trust_pickle: bool = False,
) -> Iterator[LayerWeights]:
    """Yield one :class:`LayerWeights` per stored tensor of ``source``, loading nothing.

    ``source`` is an ``nn.Module``, a state dict (``Mapping[str, Tensor]``, possibly nested
    under ``"state_dict"``/``"model_state_dict"``/``"model"``/``"module"``), or a path to a
    ``.safetensors`` file, a torch checkpoint (``.pt``/``.pth``/``.bin``/``.ckpt``), a sharded
    ``*.index.json`` or a Hugging Face model folder. ``include``/``exclude`` are regular
    expressions searched (``re.search``) in record names (``"attn.in_proj_weight[q]"`` for
    the split MultiheadAttention blocks); a record is kept if it matches ``include`` (when
    given) and not ``exclude``. Skipped records (biases, norms, ...) are yielded too, with
    ``status="skipped"``. ``trust_pickle=True`` allows unpickling arbitrary Python objects
    from torch checkpoints -- only for files you trust.

    The source is opened and validated before this returns (missing paths, corrupt
    safetensors headers and refused pickles raise :class:`WeightsError` here); tensors are
    loaded only by ``record.tensor()``.

    Example::

        >>> import torch
        >>> from tailwise.weights import iter_layers
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
        >>> [(r.name, r.kind.value, r.shape, r.status) for r in iter_layers(model)]
        ... # doctest: +NORMALIZE_WHITESPACE
        [('0.weight', 'linear', (3, 4), 'ok'), ('0.bias', 'bias', (3,), 'skipped'),
         ('1.weight', 'norm', (3,), 'skipped'), ('1.bias', 'norm', (3,), 'skipped')]
    """
    include_pattern = _compile(include, "include")
    exclude_pattern = _compile(exclude, "exclude")
    records: Iterator[LayerWeights]
    if isinstance(source, nn.Module):
        records = _records_from_module(source)
    elif isinstance(source, Mapping):
        records = _records_from_object(source, "state dict", None)
    elif isinstance(source, (str, os.PathLike)):
        records = _records_from_path(Path(os.fspath(source)).expanduser(), trust_pickle)
    else:
        raise TypeError(
            f"iter_layers: unsupported source type {type(source).__name__}; expected an "
            "nn.Module, a state dict (Mapping[str, Tensor]) or a path (str or os.PathLike) to "
            f"{_SUPPORTED_FILES}"
        )
    return _select(records, include_pattern, exclude_pattern)


def list_layers(
    source: WeightSource,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    trust_pickle: bool = False,
) -> list[LayerWeights]:
    """``list(iter_layers(source, ...))``: every record, still without loading tensors."""
    return list(iter_layers(source, include=include, exclude=exclude, trust_pickle=trust_pickle))
