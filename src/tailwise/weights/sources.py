"""Weight sources -> records: :func:`iter_layers`, :func:`list_layers` and their helpers.

``iter_layers`` dispatches on the source: an ``nn.Module`` or a state dict
(:mod:`~tailwise.weights.modules`), a ``.safetensors`` file
(:mod:`~tailwise.weights.safetensors`, streamed), a torch checkpoint
(:mod:`~tailwise.weights.checkpoints`), a sharded ``*.index.json`` or a Hugging Face folder.
``include`` / ``exclude`` are regular expressions searched in parameter names
(:func:`compile_pattern`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from torch import nn

from tailwise._errors import UsageError
from tailwise.weights._json import MAX_JSON_BYTES, loads_bounded
from tailwise.weights.checkpoints import TORCH_SUFFIXES, load_checkpoint
from tailwise.weights.modules import records_from_module, records_from_object
from tailwise.weights.records import (
    HF_CONV1D_MODEL_TYPES,
    LayerWeights,
    WeightsError,
    WeightSource,
    _records_from_stored_list,
    _Stored,
)
from tailwise.weights.safetensors import read_safetensors_entries, records_from_safetensors

__all__ = ["compile_pattern", "describe_source", "iter_layers", "list_layers"]

_SUPPORTED_FILES = ".safetensors, .pt, .pth, .bin, .ckpt (or a Hugging Face model folder)"

# ---------------------------------------------------------------------------------------------
# Torch checkpoints


def _records_from_torch_file(
    path: Path, trust_pickle: bool, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    return records_from_object(
        load_checkpoint(path, trust_pickle=trust_pickle), str(path), hf_conv1d
    )


def _records_from_torch_shards(
    paths: list[Path], trust_pickle: bool, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    # One shard loaded at a time, when the iteration reaches it.
    for path in paths:
        yield from _records_from_torch_file(path, trust_pickle, hf_conv1d)


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise WeightsError(f"{path} is {size} bytes, over the {MAX_JSON_BYTES}-byte limit")
        return loads_bounded(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path} is not valid UTF-8 JSON ({exc})") from None
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_index(index_path: Path) -> dict[Path, set[str]]:
    """Shard file -> tensor names, from a Hugging Face ``*.index.json``; shards must exist."""
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f"{index_path}: no 'weight_map' object of tensor name -> shard file")
    shards: dict[Path, set[str]] = {}
    for tensor_name, shard_name in sorted(weight_map.items(), key=lambda item: item[1]):
        _check_shard_name(index_path, shard_name)
        shards.setdefault(index_path.parent / shard_name, set()).add(tensor_name)
    for shard in shards:
        if not shard.is_file():
            raise WeightsError(f"{index_path}: shard {shard.name} listed in weight_map not found")
    return shards


def _check_shard_name(index_path: Path, shard_name: str) -> None:
    """Refuse a shard that is not a relative path inside the index's folder.

    An index is data from the file's author: ``../other.safetensors`` or ``/etc/x`` would make
    tailwise read (and with pruning, copy) files outside the model folder. The check is on the
    text of the name, not on resolved links, so a Hugging Face cache folder (whose shards are
    symbolic links into ``../../blobs``) still loads.
    """
    posix, windows = PurePosixPath(shard_name), PureWindowsPath(shard_name)
    if (
        not shard_name
        or "\x00" in shard_name
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise WeightsError(
            f"{index_path}: weight_map names shard {shard_name!r}, which is not a file inside "
            f"{index_path.parent}; refusing it"
        )


def _records_from_safetensors_index(
    index_path: Path, hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    stored: list[_Stored] = []
    for shard, names in _read_index(index_path).items():
        entries = read_safetensors_entries(shard)
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
        return records_from_safetensors([single_st], hf_conv1d)
    if index_st.is_file():
        return _records_from_safetensors_index(index_st, hf_conv1d)
    if single_bin.is_file():
        return _records_from_torch_file(single_bin, trust_pickle, hf_conv1d)
    if index_bin.is_file():
        return _records_from_torch_shards(list(_read_index(index_bin)), trust_pickle, hf_conv1d)
    others = sorted(folder.glob("*.safetensors"))
    if len(others) == 1:
        return records_from_safetensors(others, hf_conv1d)
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
        return records_from_safetensors([path], None)
    if name.endswith(".safetensors.index.json"):
        return _records_from_safetensors_index(path, None)
    if name.endswith(".bin.index.json"):
        return _records_from_torch_shards(list(_read_index(path)), trust_pickle, None)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _records_from_torch_file(path, trust_pickle, None)
    raise WeightsError(
        f"unsupported file type {path.suffix or '(none)'!r} for {path}; "
        f"supported: {_SUPPORTED_FILES}"
    )


# ---------------------------------------------------------------------------------------------
# Public entry points


def compile_pattern(pattern: str | re.Pattern[str] | None, what: str) -> re.Pattern[str] | None:
    """``pattern`` compiled (None and compiled patterns as they are) for the option ``what``.

    An invalid regular expression raises :class:`~tailwise.UsageError` naming the option
    (``what``, e.g. ``"include"``); a value that is neither a string nor a pattern raises
    ``TypeError``.

    >>> compile_pattern("layers.0", "include").search("layers.0.weight") is not None
    True
    >>> compile_pattern("(", "exclude")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tailwise._errors.UsageError: exclude: invalid regular expression '(' (missing ), ...)
    """
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(f"{what} must be a regex string or re.Pattern, got {type(pattern)!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{what}: invalid regular expression {pattern!r} ({exc})") from None


def _select(
    records: Iterator[LayerWeights],
    include: re.Pattern[str] | None,
    exclude: re.Pattern[str] | None,
) -> Iterator[LayerWeights]:
    if include is None and exclude is None:
        yield from records
        return
    seen: list[str] = []
    selected = total = 0
    for record in records:
        total += 1
        if len(seen) < _NAMES_SHOWN:
            seen.append(record.name)
        if include is not None and not include.search(record.name):
            continue
        if exclude is not None and exclude.search(record.name):
            continue
        selected += 1
        yield record
    if not selected:
        raise UsageError(_nothing_selected(include, exclude, seen, total))


# How many of the source's tensor names an include/exclude error shows.
_NAMES_SHOWN = 5


def _nothing_selected(
    include: re.Pattern[str] | None,
    exclude: re.Pattern[str] | None,
    seen: list[str],
    total: int,
) -> str:
    patterns = [
        f"{what} {pattern.pattern!r}"
        for what, pattern in (("include", include), ("exclude", exclude))
        if pattern is not None
    ]
    names = ", ".join(repr(name) for name in seen)
    subject = f"{' and '.join(patterns)} {'select' if len(patterns) > 1 else 'selects'}"
    if not seen:
        return f"{subject} no tensor: the source holds none"
    more = f", ... ({total} in all)" if total > len(seen) else ""
    return (
        f"{subject} no tensor; the source holds {names}{more} "
        "(patterns are regular expressions searched in parameter names)"
    )


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
    given) and not ``exclude``; patterns that select no record at all raise
    :class:`~tailwise.UsageError` (naming them and the first few names of the source) when
    the iteration ends. Skipped records (biases, norms, ...) are yielded too, with
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
    include_pattern = compile_pattern(include, "include")
    exclude_pattern = compile_pattern(exclude, "exclude")
    records: Iterator[LayerWeights]
    if isinstance(source, nn.Module):
        records = records_from_module(source)
    elif isinstance(source, Mapping):
        records = records_from_object(source, "state dict", None)
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


def describe_source(source: object) -> str:
    """A short description of a weight source for table metadata (``df.attrs["source"]``).

    >>> describe_source(nn.Linear(2, 2)), describe_source({}), describe_source("m.pt")
    ('Linear (in memory)', 'state dict (in memory)', 'm.pt')
    """
    if isinstance(source, nn.Module):
        return f"{type(source).__name__} (in memory)"
    if isinstance(source, Mapping):
        return "state dict (in memory)"
    return str(source)
