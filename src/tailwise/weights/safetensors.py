"""safetensors files, parsed and streamed by hand: one reader for the whole package.

Only the JSON header is read up front (:func:`read_safetensors_metadata` reads nothing else).
Each tensor is read on demand: the file is opened, the reader seeks to the tensor's bytes and
reads exactly them into one fresh buffer that the returned tensor owns (``torch.frombuffer``;
no memory map is kept open), so a loop that handles one tensor at a time holds one tensor in
memory however large the file. (Little-endian hosts, like the safetensors format itself.)
Every problem -- a missing file, a truncated or corrupt header, overlapping tensors -- raises
:class:`~tailwise.weights.WeightsError` naming the file.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tailwise.weights._json import loads_bounded
from tailwise.weights.records import (
    LayerWeights,
    Rows,
    WeightsError,
    _dtype_name,
    _records_from_stored_list,
    _Stored,
)

__all__ = ["load_safetensors", "read_safetensors_metadata"]

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


def _read_header(path: Path) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Return (offset of the data section, header without __metadata__, metadata)."""
    try:
        return _read_header_unchecked(path)
    except OSError as exc:
        if not path.exists():
            raise WeightsError(f"no such file: {path}") from None
        raise WeightsError(f"cannot read safetensors file {path}: {exc.strerror or exc}") from None


def _read_header_unchecked(path: Path) -> tuple[int, dict[str, Any], dict[str, Any]]:
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
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"header is not valid UTF-8 JSON ({exc})") from None
    try:
        header = loads_bounded(text, "header")
    except WeightsError as exc:  # nested too deep or not JSON: named as a corrupt file
        raise _corrupt(path, str(exc)) from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise _corrupt(path, "__metadata__ is not a JSON object")
    return 8 + header_len, header, dict(metadata or {})


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


def read_safetensors_entries(path: Path) -> list[_Stored]:
    """Parse and validate a safetensors header; entries in data order. Reads no tensor data."""
    return _read_safetensors(path)[0]


def _read_safetensors(path: Path) -> tuple[list[_Stored], dict[str, Any]]:
    """Entries in data order and the metadata, validated. Reads no tensor data."""
    data_start, header, metadata = _read_header(path)
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
    return [stored for _, _, stored in entries], metadata


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


def records_from_safetensors(paths: list[Path], hf_conv1d: bool | None) -> Iterator[LayerWeights]:
    """Records of the tensors of ``paths``, in data order; all headers are validated now."""
    # All headers are read (and validated) now, so a bad shard fails before any analysis.
    stored = [entry for path in paths for entry in read_safetensors_entries(path)]
    return _records_from_stored_list(stored, hf_conv1d)


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata (``__metadata__``) of a ``.safetensors`` file; ``{}`` if none.

    Reads and validates the header only, no tensor data. A missing, unreadable or corrupt
    file, or one that is not safetensors, raises :class:`~tailwise.weights.WeightsError`
    naming it.
    """
    file = Path(path)
    _, metadata = _read_safetensors(file)  # the whole header is validated, not only metadata
    bad = sorted(key for key, value in metadata.items() if not isinstance(value, str))
    if bad:
        raise _corrupt(file, f"__metadata__ value of {bad[0]!r} is not a string")
    return {str(key): value for key, value in metadata.items()}


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, by name, on the CPU (in file data order).

    The same reader as the streamed records (each tensor owns its memory). Errors as
    :func:`read_safetensors_metadata`; a tensor whose dtype this torch cannot hold, or whose
    bytes are truncated, raises :class:`~tailwise.weights.WeightsError` too.
    """
    return {stored.name: stored.load(None) for stored in read_safetensors_entries(Path(path))}
