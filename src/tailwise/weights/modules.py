"""Records from in-memory sources: an ``nn.Module`` or a state dict (checkpoint dict).

A module's parameters are named as in ``model.named_parameters()`` (tied parameters once) and
get their kinds from the owning module's type (:func:`~tailwise.weights.records.module_kind`'s
rule); a state dict's from names and shapes (:func:`~tailwise.weights.records.infer_kind`).
Records of in-memory sources load views of the source's tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from tailwise.weights.checkpoints import unwrap_state_dict
from tailwise.weights.records import (
    LayerKind,
    LayerWeights,
    Rows,
    WeightsError,
    _dtype_name,
    _in_memory,
    _is_in_proj,
    _is_norm_module,
    _looks_like_hf_conv1d,
    _make_records,
    _module_weight_kind,
    _records_from_stored,
    _Stored,
    infer_kind,
)

__all__ = ["records_from_module", "records_from_object"]


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
    found = _module_weight_kind(module, stored.name) if param_name == "weight" else None
    if found is not None and not (isinstance(module, nn.Linear) and ndim != 2):
        kind, transposed = found
        if kind is LayerKind.OTHER:
            return _make_records(stored, kind, "bilinear weight (3-D, not a matrix)")
        return _make_records(stored, kind, "", transposed=transposed)
    if isinstance(module, nn.MultiheadAttention):
        if param_name == "in_proj_weight" and _is_in_proj(param_name, stored.shape):
            return _make_records(stored, LayerKind.ATTENTION, "", split_qkv=True)
        if param_name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return _make_records(stored, LayerKind.ATTENTION, "")
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)) and param_name.startswith("weight_"):
        return _make_records(stored, LayerKind.RNN, "")
    kind, reason = infer_kind(stored.name, stored.shape)
    return _make_records(stored, kind, reason, split_qkv=kind is LayerKind.ATTENTION)


def records_from_module(model: nn.Module) -> Iterator[LayerWeights]:
    """One record per parameter of ``model`` (see :func:`~tailwise.weights.iter_layers`)."""
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
                    layer=module_name,
                )
                continue
            yield from _module_param_records(module, param_name, _in_memory(name, param))


def _raise_uninitialized(name: str) -> torch.Tensor:
    raise WeightsError(f"parameter {name!r} is an uninitialized lazy parameter")


# ---------------------------------------------------------------------------------------------
# Mappings (state dicts, checkpoints)


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


def records_from_object(obj: Any, origin: str, hf_conv1d: bool | None) -> Iterator[LayerWeights]:
    """Records of a loaded checkpoint object: a (possibly nested) state dict or a module.

    ``origin`` names the object in error messages; ``hf_conv1d``: whether GPT-2 style
    ``Conv1D`` weights are stored, None to guess from the ``c_attn`` shape.
    """
    obj = unwrap_state_dict(obj)
    if isinstance(obj, nn.Module):
        return records_from_module(obj)
    if isinstance(obj, Mapping):
        return _records_from_mapping(obj, origin, hf_conv1d)
    raise WeightsError(
        f"{origin} holds a {type(obj).__name__}; expected a state dict (mapping of names to "
        "tensors) or an nn.Module"
    )
