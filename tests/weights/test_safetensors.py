"""Tests for tailwise.weights.safetensors: the streamed reader, real files in tmp_path."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from _weights_zoo import (
    by_name,
    write_safetensors_raw,
)
from safetensors.torch import load_file, save_file

from tailwise.weights import (
    WeightsError,
    iter_layers,
    list_layers,
    load_safetensors,
    read_safetensors_metadata,
)

# ---------------------------------------------------------------------------------------------
# safetensors files


ROUND_TRIP_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
]
ROUND_TRIP_DTYPES += [
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)
]


def sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, 100, shape, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", ROUND_TRIP_DTYPES, ids=str)
def test_safetensors_round_trip_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    tensors = {"layer.weight": sample(dtype, (5, 3)), "vec": sample(dtype, (4,))}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    records = by_name(list_layers(path))
    for name, original in tensors.items():
        loaded = records[name].tensor()
        assert loaded.dtype == original.dtype
        assert records[name].dtype == str(dtype).removeprefix("torch.")
        assert torch.equal(loaded.view(torch.uint8), original.contiguous().view(torch.uint8))


def test_safetensors_records_follow_file_order_and_metadata(tmp_path: Path) -> None:
    tensors = {
        "z.weight": torch.randn(4, 3),
        "a.weight": torch.randn(2, 2).to(torch.float64),
        "m.bias": torch.randn(4),
        "empty.weight": torch.empty(0, 3),
        "attn.in_proj_weight": torch.randn(12, 4),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    header.pop("__metadata__")
    in_file_order = sorted(header, key=lambda n: header[n]["data_offsets"])
    names = [r.name.split("[")[0] for r in list_layers(path)]
    assert list(dict.fromkeys(names)) == in_file_order
    records = by_name(list_layers(str(path)))
    assert records["empty.weight"].tensor().shape == (0, 3)
    for index, part in enumerate("qkv"):
        # Only the block's rows are read from the file.
        block = records[f"attn.in_proj_weight[{part}]"].tensor()
        assert torch.equal(block, tensors["attn.in_proj_weight"][4 * index : 4 * (index + 1)])


def test_safetensors_tensor_is_loaded_on_demand_not_cached(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(3, 3)}, str(path))
    (record,) = list_layers(path)
    first = record.tensor()
    data = bytearray(path.read_bytes())
    data[-4:] = struct.pack("<f", 2.5)  # last float of the only tensor
    path.write_bytes(bytes(data))
    assert first[2, 2] == 0
    assert record.tensor()[2, 2] == 2.5


def test_safetensors_tensor_owns_its_memory(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(8, 8)}, str(path))
    (record,) = list_layers(path)
    loaded = record.tensor()
    loaded += 1  # writable, private buffer: nothing mapped, the file is unchanged
    assert not torch.equal(record.tensor(), loaded)


def test_safetensors_unsupported_but_valid_dtype_is_skipped(tmp_path: Path) -> None:
    header = {
        "packed": {"dtype": "F4", "shape": [4, 2], "data_offsets": [0, 4]},
        "w": {"dtype": "F32", "shape": [1, 1], "data_offsets": [4, 8]},
    }
    path = write_safetensors_raw(tmp_path / "m.safetensors", header, bytes(8))
    records = by_name(list_layers(path))
    assert records["packed"].status == "skipped"
    assert "F4" in records["packed"].reason
    assert records["w"].status == "ok"


@pytest.mark.parametrize("bracket", [b"[", b"{", b'{"a":['])
def test_deeply_nested_header_is_a_weights_error_not_a_recursion_error(
    tmp_path: Path, bracket: bytes
) -> None:
    """Issue 9: a header of 100 000 nested ``[`` raised RecursionError out of json.loads."""
    path = write_safetensors_raw(tmp_path / "deep.safetensors", bracket * 100_000, bytes(16))
    for read in (list_layers, read_safetensors_metadata, load_safetensors):
        with pytest.raises(WeightsError, match=r"nested \d+ levels deep") as info:
            read(path)
        assert str(path) in str(info.value)
    # Brackets inside strings are text, not nesting.
    header = {**_valid_header(), "__metadata__": {"note": "[" * 1000}}
    assert read_safetensors_metadata(write_safetensors_raw(path, header, bytes(16))) == {
        "note": "[" * 1000
    }


def _valid_header() -> dict[str, object]:
    return {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x01\x02"), "too short"),
        (lambda p: write_safetensors_raw(p, b"{not json", bytes(16)), "not valid UTF-8 JSON"),
        (lambda p: write_safetensors_raw(p, b"\xff\xfe\x00", bytes(16)), "not valid UTF-8 JSON"),
        (lambda p: write_safetensors_raw(p, [1, 2], bytes(16)), "not an object"),
        (
            lambda p: write_safetensors_raw(p, _valid_header(), bytes(16), header_len=10**9),
            "header length",
        ),
        (
            lambda p: write_safetensors_raw(
                p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 64]}}, bytes(16)
            ),
            "outside",
        ),
        (
            lambda p: write_safetensors_raw(
                p, {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, bytes(16)
            ),
            "need 24",
        ),
        (
            lambda p: write_safetensors_raw(
                p, {"w": {"dtype": "Q7", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16)
            ),
            "unknown dtype 'Q7'",
        ),
        (
            lambda p: write_safetensors_raw(
                p, {"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}, bytes(16)
            ),
            "invalid shape",
        ),
        (
            lambda p: write_safetensors_raw(
                p,
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                bytes(16),
            ),
            "overlaps",
        ),
        (
            lambda p: write_safetensors_raw(p, {"w": "nope"}, bytes(16)),
            "not a JSON object",
        ),
    ],
    ids=[
        "tiny",
        "garbage",
        "not-utf8",
        "list",
        "header-length",
        "offsets",
        "byte-count",
        "dtype",
        "shape",
        "overlap",
        "entry",
    ],
)
def test_corrupt_safetensors(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(WeightsError, match=re.escape(f"corrupt safetensors file {path}")) as info:
        iter_layers(path)  # headers are validated before iteration starts
    assert message in str(info.value)


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(16, 16), "b": torch.randn(16, 16)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        list_layers(path)
    # Truncated after the header was read: the read itself reports it.
    path.write_bytes(data)
    records = list_layers(path)
    path.write_bytes(data[:-100])
    with pytest.raises(WeightsError, match="truncated"):
        for record in records:
            record.tensor()


# ---------------------------------------------------------------------------------------------
# layer, and the public readers


def test_safetensors_records_know_their_layer(tmp_path: Path) -> None:
    path = tmp_path / "hf.safetensors"
    save_file(
        {
            "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4),
            "attn.in_proj_weight": torch.randn(12, 4),
            "rnn.weight_ih_l0": torch.randn(8, 4),
            "weight": torch.randn(2, 2),
        },
        path,
    )
    layers = {record.name: record.layer for record in iter_layers(path)}
    assert layers == {
        "model.layers.0.self_attn.q_proj.weight": "model.layers.0.self_attn.q_proj",
        "attn.in_proj_weight[q]": "attn",
        "attn.in_proj_weight[k]": "attn",
        "attn.in_proj_weight[v]": "attn",
        "rnn.weight_ih_l0": "rnn",
        "weight": "",
    }


def test_read_safetensors_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2, 2)}, path, metadata={"format": "pt", "note": "x"})
    assert read_safetensors_metadata(path) == {"format": "pt", "note": "x"}
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, bare)
    assert read_safetensors_metadata(str(bare)) == {}


def test_load_safetensors_matches_the_library(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    state = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2).half()}
    save_file(state, path)
    loaded = load_safetensors(path)
    reference = load_file(path)
    assert set(loaded) == set(reference)
    for name, tensor in reference.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)


@pytest.mark.parametrize("reader", [read_safetensors_metadata, load_safetensors])
def test_public_readers_name_the_bad_file(tmp_path: Path, reader) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        reader(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(WeightsError, match=rf"corrupt safetensors file {re.escape(str(garbage))}"):
        reader(garbage)
    pickle_file = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, pickle_file)
    with pytest.raises(WeightsError, match=re.escape(str(pickle_file))):
        reader(pickle_file)
    with pytest.raises(WeightsError, match=re.escape(str(tmp_path))):
        reader(tmp_path)
    bad_metadata = write_safetensors_raw(
        tmp_path / "meta.safetensors", {"__metadata__": {"n": 3}}, b""
    )
    if reader is read_safetensors_metadata:
        with pytest.raises(WeightsError, match="not a string"):
            reader(bad_metadata)


def test_load_safetensors_truncated(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        load_safetensors(path)
