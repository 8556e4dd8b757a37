"""Save a pruned model and rebuild it: weights in safetensors, architecture edits in its header.

Channel and low-rank pruning change module shapes, so a pruned state dict no longer loads into
the original architecture. :func:`save_pruned` writes the weights plus, in the safetensors
string metadata, ``tailwise_edits``: a JSON map module name -> module spec for every module
whose structure changed (``{"type": "Conv2d", "in_channels": 3, ...}``, or a ``Sequential``
of specs for a factorized layer), and, when known, ``architecture``: the constructor arguments
of a tailwise model (:func:`tailwise.models.build_model`). :func:`load_pruned` builds the
original architecture (or takes a fresh instance from the caller), applies the edits, and
loads the weights strictly. Nothing in the file is executable.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune as torch_prune

from tailwise._errors import UsageError
from tailwise._io import atomic_path
from tailwise.prune.layers import REBUILD_ATTR, RebuildInfo, set_module
from tailwise.prune.report import PruneResult
from tailwise.weights import (
    WeightsError,
    load_checkpoint,
    load_safetensors,
    read_safetensors_metadata,
    unwrap_state_dict,
)
from tailwise.weights.safetensors import read_safetensors_entries

__all__ = [
    "MAX_JSON_DEPTH",
    "apply_edits",
    "build_module",
    "changed_modules",
    "load_pruned",
    "module_spec",
    "parse_metadata_json",
    "read_metadata",
    "save_pruned",
    "stored_architecture",
    "structure_specs",
]

EDITS_KEY = "tailwise_edits"
ARCHITECTURE_KEY = "architecture"
PRUNE_KEY = "tailwise_prune"

_CONV_FIELDS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
)
_FIELDS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: _CONV_FIELDS,
    nn.Conv2d: _CONV_FIELDS,
    nn.Conv3d: _CONV_FIELDS,
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm3d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine"),
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
    nn.PReLU: ("num_parameters",),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
}
_BY_NAME: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in _FIELDS}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def module_spec(module: nn.Module) -> dict[str, Any]:
    """JSON-serialisable constructor arguments of a supported module (or a Sequential of them).

    Supported: Linear, Conv1d/2d/3d, BatchNorm1d/2d/3d, LayerNorm, GroupNorm, PReLU, Embedding
    and ``nn.Sequential`` containers of these.

    >>> module_spec(nn.Linear(3, 2, bias=False))
    {'type': 'Linear', 'in_features': 3, 'out_features': 2, 'bias': False}
    """
    if type(module) is nn.Sequential:
        return {
            "type": "Sequential",
            "children": [[name, module_spec(child)] for name, child in module.named_children()],
        }
    fields = _FIELDS.get(type(module))
    if fields is None:
        raise TypeError(
            f"cannot record the structure of a {type(module).__name__}; supported: "
            f"Sequential, {', '.join(_BY_NAME)}"
        )
    spec: dict[str, Any] = {"type": type(module).__name__}
    spec.update({field: _jsonable(getattr(module, field)) for field in fields})
    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.LayerNorm):
        spec["bias"] = getattr(module, "bias", None) is not None
    return spec


def build_module(spec: Mapping[str, Any]) -> nn.Module:
    """The module a :func:`module_spec` dict describes (fresh parameters).

    >>> build_module({"type": "Linear", "in_features": 3, "out_features": 2, "bias": False})
    Linear(in_features=3, out_features=2, bias=False)
    """
    kind = spec.get("type")
    if kind == "Sequential":
        return _sequential(spec.get("children", []))
    cls = _BY_NAME.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown module type {kind!r} in edit spec; known: {sorted(_BY_NAME)}")
    kwargs = {key: value for key, value in spec.items() if key != "type"}
    for key in ("kernel_size", "stride", "padding", "dilation", "normalized_shape"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {kind} in edit spec: {exc}") from None


def _sequential(children: list[list[Any]]) -> nn.Sequential:
    seq = nn.Sequential()
    for name, child in children:
        seq.add_module(str(name), build_module(child))
    return seq


def structure_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Spec of every module of ``model`` whose type :func:`module_spec` supports, by name."""
    return {
        name: module_spec(module)
        for name, module in model.named_modules()
        if name and type(module) in _FIELDS
    }


def changed_modules(
    before: Mapping[str, Mapping[str, Any]], model: nn.Module
) -> dict[str, dict[str, Any]]:
    """Specs of the modules of ``model`` whose structure differs from ``before``.

    ``before``: :func:`structure_specs` of the model taken before it was pruned.
    """
    now = structure_specs(model)
    return {name: spec for name, spec in now.items() if before.get(name) != spec}


def apply_edits(model: nn.Module, edits: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Replace each named module of ``model`` by a fresh module built from its spec (in place).

    New modules take the dtype and device of the module they replace.
    """
    for name, spec in edits.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"edit names module {name!r}, which the model does not have") from None
        new = build_module(spec)
        ref = next(old.parameters(), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        set_module(model, name, new)
    return model


def _baked_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ``torch.nn.utils.prune`` masks made permanent (keys as unpruned).

    For every pruned tensor ``X`` the pair ``X_orig`` / ``X_mask`` becomes ``X`` as the
    pruning method computes it; the model itself is not modified.
    """
    baked: dict[str, torch.Tensor] = {}
    dropped: set[str] = set()
    with torch.no_grad():
        for prefix, module in model.named_modules(remove_duplicate=False):
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, torch_prune.BasePruningMethod):
                    key = f"{prefix}.{hook._tensor_name}" if prefix else hook._tensor_name
                    baked[key] = hook.apply_mask(module)
                    dropped.update({key + "_orig", key + "_mask"})
    state = {k: v for k, v in model.state_dict().items() if k not in dropped}
    state.update(baked)
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}


def save_pruned(
    model: nn.Module | PruneResult,
    path: str | os.PathLike[str],
    *,
    edits: Mapping[str, Mapping[str, Any]] | None = None,
    architecture: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a pruned model's weights and its rebuild information to a ``.safetensors`` file.

    ``model``: a :class:`~tailwise.prune.PruneResult` (its edits, original architecture and
    per-layer report totals are stored) or a module with explicit ``edits`` (module name ->
    spec) and ``architecture`` (the *original* model's constructor arguments, for
    :func:`tailwise.models.build_model`). Prune masks are made permanent in the saved copy
    (the model itself is untouched). Written atomically: an interrupted write leaves no file.
    """
    target = Path(path)
    if target.suffix != ".safetensors":
        raise UsageError(f"pruned models are written as .safetensors, got {target.name!r}")
    header: dict[str, str] = dict(metadata or {})
    if isinstance(model, PruneResult):
        edits = model.edits if edits is None else edits
        architecture = model.architecture if architecture is None else architecture
        header[PRUNE_KEY] = json.dumps({"method": model.method, **model.totals()})
        model = model.model
    elif edits is None and architecture is None:
        carried = getattr(model, REBUILD_ATTR, None)
        if isinstance(carried, RebuildInfo):
            edits, architecture = carried.edits, carried.architecture
    header[EDITS_KEY] = json.dumps(dict(edits or {}))
    if architecture is not None:
        header[ARCHITECTURE_KEY] = json.dumps(dict(architecture))
    state = _baked_state(model)
    with atomic_path(target) as tmp:
        save_file(state, os.fspath(tmp), metadata=header)
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty dict if it has none); the one
    reader of :func:`tailwise.weights.read_safetensors_metadata` (``WeightsError`` naming a
    missing or corrupt file)."""
    return read_safetensors_metadata(path)


#: Deepest nesting of ``[`` / ``{`` accepted in tailwise's JSON metadata (a Sequential of
#: specs nests 4 levels per level of modules).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _json_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, strings left out; without recursion."""
    codes = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8"), dtype=np.uint8)
    steps = np.isin(codes, (91, 123)).astype(np.int64) - np.isin(codes, (93, 125))
    return int(steps.cumsum().max()) if steps.size else 0


def parse_metadata_json(meta: Mapping[str, str], key: str, where: str = "") -> Any:
    """The JSON value of string metadata ``key`` (None when absent); a corrupt value, or
    one nested deeper than :data:`MAX_JSON_DEPTH`, raises :class:`WeightsError` naming
    ``where`` (the file) and the key."""
    if key not in meta:
        return None
    text = meta[key]
    prefix = f"{where}: " if where else ""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise WeightsError(
            f"{prefix}corrupt {key!r} metadata: nested deeper than {MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise WeightsError(f"{prefix}corrupt {key!r} metadata: {str(exc)[:200]}") from None


def stored_architecture(meta: Mapping[str, str], where: str = "") -> dict[str, Any] | None:
    """The original architecture recorded in a saved model's metadata, or None.

    ``where`` (the file) is named in the :class:`WeightsError` of corrupt metadata."""
    found = parse_metadata_json(meta, ARCHITECTURE_KEY, where)
    if found is None:
        return None
    if not isinstance(found, dict):
        prefix = f"{where}: " if where else ""
        raise WeightsError(f"{prefix}corrupt {ARCHITECTURE_KEY!r} metadata: not a JSON object")
    return found


def _held_elements(file: Path) -> int:
    """Elements of all tensors of a safetensors file, from its header (no data read)."""
    return sum(math.prod(entry.shape) for entry in read_safetensors_entries(file))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_sizes(
    file: Path,
    held: int,
    edits: Mapping[str, Mapping[str, Any]],
    build: Callable[[], nn.Module] | None,
) -> None:
    """Refuse metadata that describes more parameters than ``file`` holds, before anything
    is allocated: the modules are built on the ``meta`` device, which stores no values."""
    try:
        with torch.device("meta"):
            for name, spec in edits.items():
                count = _count(build_module(spec))
                if count > held:
                    raise WeightsError(
                        f"{file}: {EDITS_KEY!r} metadata gives module {name!r} {count} "
                        f"parameters, but the file holds {held} values in all"
                    )
            if build is None:
                return
            net = build()
            apply_edits(net, edits)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{file}: {exc}") from None
    count = _count(net)
    if count > held:
        raise WeightsError(
            f"{file}: the {ARCHITECTURE_KEY!r} metadata describes a model of {count} "
            f"parameters, but the file holds {held} values in all"
        )


def _loadable(net: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` fitted to ``net``'s state dict where only buffers differ: strict on
    parameters, lenient on buffers.

    Dropped from ``state``: names that are buffers of ``net`` outside its state dict
    (non-persistent, e.g. ``embeddings.position_ids`` of a newer transformers version) and
    integer tensors ``net`` does not have (index buffers of an older version); added: the
    ``net``'s own values of persistent buffers the file lacks. Anything else that differs
    (a parameter missing or unknown, a shape) is left for ``load_state_dict`` to refuse.
    """
    expected = net.state_dict()
    buffers = {name for name, _ in net.named_buffers()}
    loadable: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in expected and (
            name in buffers or (isinstance(tensor, torch.Tensor) and not tensor.is_floating_point())
        ):
            continue
        loadable[name] = tensor
    for name in buffers:
        if name in expected and name not in loadable:
            loadable[name] = expected[name]
    return loadable


def load_pruned(
    path: str | os.PathLike[str],
    model: nn.Module | Callable[[], nn.Module] | None = None,
    *,
    build: Callable[[Mapping[str, Any]], nn.Module] | None = None,
    device: str | torch.device | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """Rebuild a model written by :func:`save_pruned` (or ``tailwise prune --out``).

    ``model``: a fresh instance of the *original* architecture (or a zero-argument factory).
    When omitted, the architecture stored in the file is built by ``build`` (constructor
    arguments -> module; default :func:`tailwise.models.build_model`, the tailwise models).
    The stored edits are applied, the weights loaded with ``strict=True``, and the model
    returned in eval mode on ``device`` (default CPU). A torch checkpoint
    (``.pt``/``.pth``/``.bin``: a state dict, possibly nested under ``"state_dict"`` /
    ``"model"``) can be loaded into ``model`` too; it is read with ``weights_only=True``
    unless ``trust_pickle``. Buffers never block a load: one in the file that the model
    keeps out of its state dict (``embeddings.position_ids``), or one the model has that the
    file lacks, is skipped (parameters must match exactly). Metadata describing more
    parameters than the file holds, or nested deeper than :data:`MAX_JSON_DEPTH`, is refused
    before anything is built. File problems raise :class:`tailwise.WeightsError`; a file
    without an architecture and no ``model`` a :class:`tailwise.UsageError`.
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"no such file: {file}")
    is_safetensors = file.suffix == ".safetensors"
    meta = read_metadata(file) if is_safetensors else {}
    architecture = stored_architecture(meta, str(file))
    edits = parse_metadata_json(meta, EDITS_KEY, str(file))
    edits = {} if edits is None else edits
    if not isinstance(edits, dict) or not all(isinstance(v, dict) for v in edits.values()):
        raise WeightsError(f"{file}: corrupt {EDITS_KEY!r} metadata: not a map name -> spec")
    if model is None:
        if architecture is None:
            raise UsageError(
                f"{file} does not record a tailwise architecture; pass model= (a fresh "
                "instance of the original architecture, or a factory)"
            )
        if build is None:
            from tailwise.models.registry import build_model

            build = build_model
        stored = architecture
        builder = build
        _check_sizes(file, _held_elements(file), edits, lambda: builder(stored))
        net = build(architecture)
    elif isinstance(model, nn.Module):
        net = model
    else:
        try:
            net = model()
        except TypeError as exc:  # a factory that needs arguments: the user's option
            name = getattr(model, "__qualname__", repr(model))
            raise UsageError(
                f"model factory {name} cannot be called without arguments ({exc}); give a "
                "function that builds the model, e.g. package.module:make_model"
            ) from None
        if not isinstance(net, nn.Module):
            raise UsageError(f"model factory returned {type(net).__name__}, not an nn.Module")
    if model is not None and edits:
        _check_sizes(file, _held_elements(file), edits, None)
    try:
        apply_edits(net, edits)
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{file}: {exc}") from None
    if is_safetensors:
        state: Mapping[str, torch.Tensor] = load_safetensors(file)
    else:
        loaded = unwrap_state_dict(load_checkpoint(file, trust_pickle=trust_pickle))
        if isinstance(loaded, nn.Module):
            loaded = loaded.state_dict()
        if not isinstance(loaded, Mapping):
            raise WeightsError(f"{file} holds a {type(loaded).__name__}, not a state dict")
        state = loaded
    try:
        net.load_state_dict(_loadable(net, state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise WeightsError(f"{file}: weights do not fit the model: {detail[:400]}") from None
    # Pruning the loaded model again keeps the history: save_pruned writes all edits.
    setattr(net, REBUILD_ATTR, RebuildInfo(architecture, edits))
    return net.to("cpu" if device is None else device).eval()
