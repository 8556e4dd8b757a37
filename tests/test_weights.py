"""Tests for tailwise.weights: every source type, every kind, real files in tmp_path."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tailwise.weights import (
    LayerKind,
    LayerWeights,
    WeightsError,
    infer_kind,
    iter_layers,
    list_layers,
)

# ---------------------------------------------------------------------------------------------
# Helpers and small models


class Conv1D(nn.Module):
    """Mimics transformers.pytorch_utils.Conv1D: weight stored (in, out), y = x @ W + b."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class TinyGPT2Block(nn.Module):
    def __init__(self, embed: int = 4) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed)
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(3 * embed, embed)
        self.attn.c_proj = Conv1D(embed, embed)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(4 * embed, embed)
        self.mlp.c_proj = Conv1D(embed, 4 * embed)


class Payload:
    """A custom class: pickling it makes a checkpoint that weights_only refuses."""

    def __init__(self) -> None:
        self.note = "hello"


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.head = nn.Linear(4, 11, bias=False)
        self.head.weight = self.embed.weight


class ScaledLinear(nn.Module):
    """An unknown module type: its parameters fall back to the name-and-shape rule."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 5))
        self.scale = nn.Parameter(torch.ones(3))
        self.kernel = nn.Parameter(torch.randn(2, 3, 3))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2, bias=False))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.Conv2d(3, 4, (3, 2)),
        nn.BatchNorm2d(4),
        nn.Conv3d(4, 5, 2),
        nn.GroupNorm(1, 5),
        nn.Linear(5, 2),
    )


def transposed_convs() -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose1d(2, 3, 3),
        nn.ConvTranspose2d(4, 6, (3, 2), groups=2),
        nn.ConvTranspose3d(3, 5, 2, bias=False),
    )


def recurrent() -> nn.Module:
    model = nn.Module()
    model.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    model.gru = nn.GRU(3, 5)
    model.rnn = nn.RNN(3, 2, bias=False)
    model.proj = nn.LSTM(3, 6, proj_size=2)
    model.cell = nn.GRUCell(3, 4)
    return model


def attention() -> nn.Module:
    model = nn.Module()
    model.attn = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    model.cross = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    return model


def zoo() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    norms = nn.Sequential(nn.LayerNorm(4), nn.InstanceNorm2d(3, affine=True), nn.RMSNorm(4))
    return {
        "mlp": mlp(),
        "cnn": cnn(),
        "transposed": transposed_convs(),
        "recurrent": recurrent(),
        "attention": attention(),
        "gpt2": TinyGPT2Block(),
        "tied": TiedLM(),
        "unknown": ScaledLinear(),
        "norms": norms,
        "embeddings": nn.Sequential(nn.Embedding(7, 3), nn.EmbeddingBag(5, 3)),
    }


def by_name(records: list[LayerWeights]) -> dict[str, LayerWeights]:
    return {record.name: record for record in records}


def expected_names(model: nn.Module) -> list[str]:
    """named_parameters() with each (3E, E) in_proj_weight expanded into q, k, v."""
    names: list[str] = []
    for name, param in model.named_parameters():
        if name.endswith("in_proj_weight"):
            names += [f"{name}[{part}]" for part in "qkv"]
        else:
            assert param.ndim >= 0
            names.append(name)
    return names


def write_safetensors_raw(path: Path, header: object, data: bytes, header_len: int | None = None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    length = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


# ---------------------------------------------------------------------------------------------
# LayerKind and LayerWeights


def test_kind_properties() -> None:
    conv = {k for k in LayerKind if k.is_conv}
    assert conv == {
        LayerKind.CONV1D,
        LayerKind.CONV2D,
        LayerKind.CONV3D,
        LayerKind.CONV_TRANSPOSE1D,
        LayerKind.CONV_TRANSPOSE2D,
        LayerKind.CONV_TRANSPOSE3D,
    }
    skipped = {k for k in LayerKind if not k.analysed}
    assert skipped == {LayerKind.BIAS, LayerKind.NORM, LayerKind.VECTOR, LayerKind.OTHER}
    assert LayerKind("hf_conv1d") is LayerKind.HF_CONV1D
    assert str(LayerKind.FUSED_QKV) == "fused_qkv"


def test_record_tensor_checks_shape_and_moves_device() -> None:
    weight = torch.randn(3, 2)
    record = LayerWeights("w", LayerKind.LINEAR, (3, 2), "float32", loader=lambda: weight)
    assert record.tensor(device="cpu") is weight
    assert record.tensor(torch.device("cpu")).dtype == torch.float32
    wrong = LayerWeights("w", LayerKind.LINEAR, (2, 3), "float32", loader=lambda: weight)
    with pytest.raises(WeightsError, match=r"'w'.*\(3, 2\).*\(2, 3\)"):
        wrong.tensor()
    with pytest.raises(ValueError, match="status"):
        LayerWeights("w", LayerKind.LINEAR, (3, 2), "float32", "failed", loader=lambda: weight)


# ---------------------------------------------------------------------------------------------
# nn.Module sources


@pytest.mark.parametrize("model_name", sorted(zoo()))
def test_module_exactly_one_record_per_parameter(model_name: str) -> None:
    model = zoo()[model_name]
    records = list_layers(model)
    assert [r.name for r in records] == expected_names(model)
    for record in records:
        assert (record.status == "ok") == (record.reason == "")
        if not record.kind.analysed:
            assert record.status == "skipped"
        assert tuple(record.tensor().shape) == record.shape


def test_module_mlp_kinds_and_views() -> None:
    model = mlp()
    records = by_name(list_layers(model))
    assert records["0.weight"].kind is LayerKind.LINEAR
    assert records["0.weight"].shape == (5, 6)
    assert records["0.weight"].dtype == "float32"
    assert records["0.bias"].kind is LayerKind.BIAS
    assert records["0.bias"].status == "skipped"
    assert records["0.bias"].reason == "bias vector"
    loaded = records["2.weight"].tensor()
    # A view of the parameter, detached, not a copy.
    assert loaded.data_ptr() == model[2].weight.data_ptr()
    assert not loaded.requires_grad


def test_module_cnn_kinds_and_norms() -> None:
    records = by_name(list_layers(cnn()))
    assert records["0.weight"].kind is LayerKind.CONV1D
    assert records["1.weight"].kind is LayerKind.CONV2D
    assert records["1.weight"].shape == (4, 3, 3, 2)
    assert records["3.weight"].kind is LayerKind.CONV3D
    for name in ("2.weight", "2.bias", "4.weight", "4.bias"):
        assert records[name].kind is LayerKind.NORM
        assert records[name].reason == "normalization layer"
    assert records["5.weight"].kind is LayerKind.LINEAR


def test_module_norm_class_names_are_recognised() -> None:
    class LlamaRMSNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

    model = nn.Sequential(LlamaRMSNorm(), nn.RMSNorm(4), nn.InstanceNorm1d(2, affine=True))
    assert {r.kind for r in list_layers(model)} == {LayerKind.NORM}


def test_module_conv_transpose_is_swapped_to_canonical() -> None:
    model = transposed_convs()
    records = by_name(list_layers(model))
    expected = {
        "0.weight": (LayerKind.CONV_TRANSPOSE1D, (3, 2, 3)),
        "1.weight": (LayerKind.CONV_TRANSPOSE2D, (3, 4, 3, 2)),  # stored (4, 6/2, 3, 2)
        "2.weight": (LayerKind.CONV_TRANSPOSE3D, (5, 3, 2, 2, 2)),
    }
    for index, (name, (kind, shape)) in enumerate(expected.items()):
        record = records[name]
        assert (record.kind, record.shape, record.transposed) == (kind, shape, True)
        stored = model[index].weight
        assert torch.equal(record.tensor(), stored.detach().transpose(0, 1))


def test_module_recurrent_kinds() -> None:
    records = by_name(list_layers(recurrent()))
    for name in (
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l1",
        "lstm.weight_ih_l1_reverse",
        "gru.weight_hh_l0",
        "rnn.weight_ih_l0",
        "proj.weight_hr_l0",
        "cell.weight_ih",
        "cell.weight_hh",
    ):
        assert records[name].kind is LayerKind.RNN, name
    assert records["lstm.weight_ih_l1_reverse"].shape == (16, 8)
    assert records["lstm.bias_hh_l0_reverse"].kind is LayerKind.BIAS
    assert records["cell.bias_ih"].kind is LayerKind.BIAS


def test_module_multihead_attention_split() -> None:
    model = attention()
    records = by_name(list_layers(model))
    in_proj = model.attn.in_proj_weight.detach()
    for index, part in enumerate("qkv"):
        record = records[f"attn.in_proj_weight[{part}]"]
        assert record.kind is LayerKind.ATTENTION
        assert record.shape == (8, 8)
        assert torch.equal(record.tensor(), in_proj[8 * index : 8 * (index + 1)])
    assert records["attn.out_proj.weight"].kind is LayerKind.LINEAR
    assert records["attn.in_proj_bias"].kind is LayerKind.BIAS
    assert records["attn.bias_k"].kind is LayerKind.BIAS  # (1, 1, E), not a conv kernel
    assert records["attn.bias_v"].status == "skipped"
    assert records["cross.q_proj_weight"].shape == (8, 8)
    assert records["cross.k_proj_weight"].shape == (8, 3)
    assert records["cross.v_proj_weight"].kind is LayerKind.ATTENTION
    assert "cross.in_proj_weight[q]" not in records


def test_module_hf_conv1d_is_transposed() -> None:
    block = TinyGPT2Block(embed=4)
    records = by_name(list_layers(block))
    c_attn = records["attn.c_attn.weight"]
    assert (c_attn.kind, c_attn.shape, c_attn.transposed) == (LayerKind.FUSED_QKV, (12, 4), True)
    assert torch.equal(c_attn.tensor(), block.attn.c_attn.weight.detach().T)
    c_fc = records["mlp.c_fc.weight"]
    assert (c_fc.kind, c_fc.shape) == (LayerKind.HF_CONV1D, (16, 4))
    assert records["mlp.c_proj.weight"].shape == (4, 16)
    assert records["ln_1.weight"].kind is LayerKind.NORM
    # The canonical matrix acts like nn.Linear: y = x @ W.T
    x = torch.randn(2, 4)
    assert torch.allclose(block.mlp.c_fc(x), x @ c_fc.tensor().T + block.mlp.c_fc.bias)


def test_module_tied_weights_listed_once() -> None:
    records = list_layers(TiedLM())
    assert [(r.name, r.kind) for r in records] == [("embed.weight", LayerKind.EMBEDDING)]


def test_module_unknown_parameters_use_the_rule() -> None:
    records = by_name(list_layers(ScaledLinear()))
    assert records["weight"].kind is LayerKind.LINEAR
    assert (records["scale"].kind, records["scale"].reason) == (LayerKind.VECTOR, "1-D tensor")
    assert records["kernel"].kind is LayerKind.CONV1D


def test_module_fused_qkv_linear_and_uninitialized_lazy() -> None:
    model = nn.Module()
    model.qkv = nn.Linear(4, 12)
    model.lazy = nn.LazyLinear(3)
    records = by_name(list_layers(model))
    assert records["qkv.weight"].kind is LayerKind.FUSED_QKV
    assert records["lazy.weight"].status == "skipped"
    assert records["lazy.weight"].reason == "uninitialized lazy parameter"
    with pytest.raises(WeightsError, match="lazy"):
        records["lazy.weight"].tensor()


# ---------------------------------------------------------------------------------------------
# The name-and-shape rule


@pytest.mark.parametrize(
    ("name", "shape", "kind", "reason"),
    [
        ("scale", (), LayerKind.VECTOR, "0-D tensor"),
        ("fc.bias", (5,), LayerKind.BIAS, "1-D tensor"),
        ("lstm.bias_ih_l0", (8,), LayerKind.BIAS, "1-D tensor"),
        ("h.0.ln_1.weight", (4,), LayerKind.NORM, "1-D tensor"),
        ("h.0.ln_f.bias", (4,), LayerKind.NORM, "1-D tensor"),
        ("bn1.running_mean", (4,), LayerKind.NORM, "1-D tensor"),
        ("bn1.num_batches_tracked", (), LayerKind.NORM, "0-D tensor"),
        ("encoder.LayerNorm.weight", (4,), LayerKind.NORM, "1-D tensor"),
        ("layers.0.input_layernorm.weight", (4,), LayerKind.NORM, "1-D tensor"),
        ("features.1.batchnorm.bias", (4,), LayerKind.NORM, "1-D tensor"),
        ("alpha", (7,), LayerKind.VECTOR, "1-D tensor"),
        ("attn.in_proj_weight", (12, 4), LayerKind.ATTENTION, ""),
        ("attn.in_proj_weight", (12, 5), LayerKind.LINEAR, ""),
        ("lstm.weight_ih_l0", (16, 3), LayerKind.RNN, ""),
        ("lstm.weight_hh_l2_reverse", (16, 4), LayerKind.RNN, ""),
        ("cell.weight_hh", (16, 4), LayerKind.RNN, ""),
        ("model.embed_tokens.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("bert.embeddings.word_embeddings.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("bert.embeddings.position_embeddings.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("tok_embeddings.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("transformer.wte.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("transformer.wpe.weight", (10, 4), LayerKind.EMBEDDING, ""),
        ("transformer.h.0.attn.c_attn.weight", (4, 12), LayerKind.FUSED_QKV, ""),
        ("gpt_neox.layers.0.attention.query_key_value.weight", (12, 4), LayerKind.FUSED_QKV, ""),
        ("blocks.0.attn.qkv.weight", (12, 4), LayerKind.FUSED_QKV, ""),
        ("blocks.0.attn.Wqkv.weight", (12, 4), LayerKind.FUSED_QKV, ""),
        ("fc1.weight", (5, 6), LayerKind.LINEAR, ""),
        ("w", (5, 6), LayerKind.LINEAR, ""),
        ("conv.weight", (4, 3, 3), LayerKind.CONV1D, ""),
        ("conv.weight", (4, 3, 3, 3), LayerKind.CONV2D, ""),
        ("conv.weight", (4, 3, 3, 3, 3), LayerKind.CONV3D, ""),
        (
            "conv",
            (1, 3, 3, 3),
            LayerKind.OTHER,
            "4-D tensor with leading dimension 1, not a kernel",
        ),
        ("conv.weight", (1, 3, 3, 3), LayerKind.CONV2D, ""),
        (
            "pos_embed",
            (1, 197, 8),
            LayerKind.OTHER,
            "3-D tensor with leading dimension 1, not a kernel",
        ),
        (
            "h.0.attn.bias",
            (1, 1, 8, 8),
            LayerKind.OTHER,
            "4-D tensor with leading dimension 1, not a kernel",
        ),
        ("odd", (2, 2, 2, 2, 2, 2), LayerKind.OTHER, "6-D tensor"),
    ],
)
def test_infer_kind_rule(name: str, shape: tuple[int, ...], kind: LayerKind, reason: str) -> None:
    assert infer_kind(name, shape) == (kind, reason)
    assert kind.analysed == (reason == "")


def test_state_dict_kinds_agree_with_module_walk() -> None:
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3))
    model.add_module("bn1", nn.BatchNorm2d(4))
    model.add_module("embed", nn.Embedding(9, 4))
    model.add_module("attn", nn.MultiheadAttention(4, 2))
    model.add_module("lstm", nn.LSTM(4, 3))
    model.add_module("fc", nn.Linear(3, 2))
    from_module = {r.name: r.kind for r in list_layers(model)}
    from_dict = {r.name: r.kind for r in list_layers(model.state_dict())}
    for name, kind in from_module.items():
        assert from_dict[name] is kind, name
    # The state dict also has buffers (running stats), skipped as norms.
    assert from_dict["bn1.running_var"] is LayerKind.NORM
    assert from_dict["bn1.num_batches_tracked"] is LayerKind.NORM


def test_state_dict_dtypes() -> None:
    state = {
        "q.weight": torch.randint(-128, 127, (4, 3), dtype=torch.int8),
        "u.weight": torch.randint(0, 255, (4, 3), dtype=torch.uint8),
        "half.weight": torch.randn(4, 3, dtype=torch.float16),
        "mask": torch.ones(4, 3, dtype=torch.bool),
        "spectrum": torch.randn(4, 3, dtype=torch.complex64),
        "embeddings.position_ids": torch.arange(6).reshape(1, 6),
        "flags": torch.ones(3, dtype=torch.bool),
    }
    records = by_name(list_layers(state))
    assert (records["q.weight"].status, records["q.weight"].dtype) == ("ok", "int8")
    assert records["u.weight"].status == "ok"
    assert records["half.weight"].dtype == "float16"
    assert (records["mask"].status, records["mask"].reason) == ("skipped", "non-numeric dtype bool")
    assert records["spectrum"].reason == "complex dtype complex64"
    assert records["embeddings.position_ids"].kind is LayerKind.EMBEDDING
    assert records["embeddings.position_ids"].reason.startswith("integer dtype int64")
    assert records["flags"].reason == "1-D tensor"  # the shape reason comes first


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        lambda sd: {"model_state_dict": sd},
        lambda sd: {"model": {"module": sd}},
        lambda sd: {"module": sd, "global_steps": 10},
    ],
)
def test_state_dict_unwrapping(wrap) -> None:
    state = mlp().state_dict()
    names = [r.name for r in list_layers(wrap(state))]
    assert names == list(state)


def test_state_dict_non_tensor_values_are_skipped_not_dropped() -> None:
    records = by_name(list_layers({"w": torch.randn(3, 2), "step": 7}))
    assert records["w"].kind is LayerKind.LINEAR
    assert (records["step"].kind, records["step"].reason) == (LayerKind.OTHER, "not a tensor (int)")
    with pytest.raises(WeightsError, match="'step' is a int"):
        records["step"].tensor()
    with pytest.raises(WeightsError, match="key 0 is not a string"):
        list_layers({0: torch.randn(2, 2)})


def test_state_dict_gpt2_layout_is_detected_from_shapes() -> None:
    block = TinyGPT2Block(embed=4)
    records = by_name(list_layers(block.state_dict()))
    assert records["attn.c_attn.weight"].shape == (12, 4)
    assert records["attn.c_attn.weight"].transposed
    assert records["mlp.c_fc.weight"].kind is LayerKind.HF_CONV1D
    assert records["mlp.c_fc.weight"].shape == (16, 4)
    # Linear-style (out, in) c_attn (e.g. GPT-BigCode) is left alone.
    linear_style = {"attn.c_attn.weight": torch.randn(12, 4), "mlp.c_fc.weight": torch.randn(16, 4)}
    records = by_name(list_layers(linear_style))
    assert not records["mlp.c_fc.weight"].transposed
    assert records["mlp.c_fc.weight"].kind is LayerKind.LINEAR


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
# Hugging Face folders


def gpt2_state(embed: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    state: dict[str, torch.Tensor] = {
        "wte.weight": torch.randn(10, embed),
        "wpe.weight": torch.randn(6, embed),
        "ln_f.weight": torch.ones(embed),
    }
    for layer in range(2):
        prefix = f"h.{layer}."
        state[prefix + "attn.c_attn.weight"] = torch.randn(embed, 3 * embed)
        state[prefix + "attn.c_attn.bias"] = torch.zeros(3 * embed)
        state[prefix + "attn.c_proj.weight"] = torch.randn(embed, embed)
        state[prefix + "mlp.c_fc.weight"] = torch.randn(embed, 4 * embed)
        state[prefix + "mlp.c_proj.weight"] = torch.randn(4 * embed, embed)
        state[prefix + "ln_1.weight"] = torch.ones(embed)
    return state


def write_sharded(folder: Path, state: dict[str, torch.Tensor], config: dict | None) -> None:
    folder.mkdir()
    names = list(state)
    halves = {"model-00001-of-00002.safetensors": names[::2]}
    halves["model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for shard, shard_names in halves.items():
        save_file({n: state[n] for n in shard_names}, str(folder / shard))
        weight_map.update(dict.fromkeys(shard_names, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))


def test_hf_sharded_folder_gpt2(tmp_path: Path) -> None:
    state = gpt2_state()
    folder = tmp_path / "gpt2"
    write_sharded(folder, state, {"model_type": "gpt2", "n_embd": 4})
    records = by_name(list_layers(folder))
    assert sorted(records) == sorted(state)
    c_attn = records["h.1.attn.c_attn.weight"]
    assert (c_attn.kind, c_attn.shape, c_attn.transposed) == (LayerKind.FUSED_QKV, (12, 4), True)
    assert torch.equal(c_attn.tensor(), state["h.1.attn.c_attn.weight"].T)
    c_fc = records["h.0.mlp.c_fc.weight"]
    assert (c_fc.kind, c_fc.shape) == (LayerKind.HF_CONV1D, (16, 4))
    assert records["h.0.mlp.c_proj.weight"].shape == (4, 16)
    assert records["h.0.attn.c_proj.weight"].kind is LayerKind.HF_CONV1D
    assert records["wte.weight"].kind is LayerKind.EMBEDDING
    assert records["ln_f.weight"].kind is LayerKind.NORM
    assert records["h.0.attn.c_attn.bias"].kind is LayerKind.BIAS


def test_hf_folder_config_of_another_model_type_is_not_transposed(tmp_path: Path) -> None:
    folder = tmp_path / "bigcode"
    state = {
        "h.0.attn.c_attn.weight": torch.randn(4, 12),
        "h.0.mlp.c_fc.weight": torch.randn(4, 16),
    }
    write_sharded(folder, state, {"model_type": "gpt_bigcode"})
    records = by_name(list_layers(folder))
    assert records["h.0.attn.c_attn.weight"].shape == (4, 12)
    assert not records["h.0.mlp.c_fc.weight"].transposed


def test_hf_folder_single_file_and_index_path(tmp_path: Path) -> None:
    folder = tmp_path / "single"
    folder.mkdir()
    save_file(gpt2_state(), str(folder / "model.safetensors"))
    records = by_name(list_layers(folder))  # no config: layout guessed from c_attn's shape
    assert records["h.0.mlp.c_fc.weight"].shape == (16, 4)
    sharded = tmp_path / "sharded"
    write_sharded(sharded, gpt2_state(), None)
    names = [r.name for r in list_layers(sharded / "model.safetensors.index.json")]
    assert sorted(names) == sorted(gpt2_state())


def test_hf_folder_index_problems(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    write_sharded(folder, gpt2_state(), {"model_type": "gpt2"})
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["h.9.attn.c_attn.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=r"'h\.9\.attn\.c_attn\.weight'.*not in shard"):
        list_layers(folder)
    (folder / "model-00002-of-00002.safetensors").unlink()
    del index["weight_map"]["h.9.attn.c_attn.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        WeightsError,
        match=r"shard model-00002-of-00002\.safetensors listed in weight_map not found",
    ):
        list_layers(folder)
    index_path.write_text("{}")
    with pytest.raises(WeightsError, match="weight_map"):
        list_layers(folder)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(WeightsError, match=r"config\.json"):
        list_layers(folder)


def test_hf_folder_pytorch_model_bin(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    state = gpt2_state()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    records = by_name(list_layers(folder))
    assert records["h.0.mlp.c_fc.weight"].shape == (16, 4)
    assert torch.equal(records["wte.weight"].tensor(), state["wte.weight"])


def test_hf_folder_sharded_pytorch_model_bin(tmp_path: Path) -> None:
    folder = tmp_path / "bins"
    folder.mkdir()
    state = mlp().state_dict()
    names = list(state)
    weight_map = {}
    for index, shard_names in enumerate((names[:2], names[2:])):
        shard = f"pytorch_model-0000{index + 1}-of-00002.bin"
        torch.save({n: state[n] for n in shard_names}, folder / shard)
        weight_map.update(dict.fromkeys(shard_names, shard))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    records = list_layers(folder)
    assert [r.name for r in records] == names
    assert torch.equal(records[0].tensor(), state[names[0]])


def test_hf_folder_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(WeightsError, match=rf"{re.escape(str(folder))}.*model\.safetensors"):
        iter_layers(folder)


# ---------------------------------------------------------------------------------------------
# Torch checkpoints


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_torch_checkpoint_weights_only(tmp_path: Path, suffix: str) -> None:
    state = cnn().state_dict()
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": state, "epoch": 4}, path)
    records = by_name(list_layers(path))
    assert list(records) == list(state)
    assert torch.equal(records["1.weight"].tensor(), state["1.weight"])


def test_torch_checkpoint_legacy_format(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(mlp().state_dict(), path, _use_new_zipfile_serialization=False)
    assert list_layers(path)[0].kind is LayerKind.LINEAR


def test_torch_checkpoint_with_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"model": mlp().state_dict(), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="trust_pickle") as info:
        iter_layers(path)
    assert str(path) in str(info.value)
    assert "refusing to unpickle" in str(info.value)
    assert "Payload" in str(info.value)
    records = list_layers(path, trust_pickle=True)
    assert [r.name for r in records] == list(mlp().state_dict())


def test_torch_checkpoint_whole_module(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(transposed_convs(), path)
    with pytest.raises(WeightsError, match="trust_pickle"):
        iter_layers(path)
    records = by_name(list_layers(path, trust_pickle=True))
    assert records["1.weight"].kind is LayerKind.CONV_TRANSPOSE2D
    assert records["1.weight"].shape == (3, 4, 3, 2)


def test_torch_checkpoint_garbage_and_wrong_content(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 4)
    with pytest.raises(WeightsError, match=re.escape(f"cannot read torch checkpoint {garbage}")):
        iter_layers(garbage)
    with pytest.raises(WeightsError, match=re.escape(str(garbage))):
        iter_layers(garbage, trust_pickle=True)
    listed = tmp_path / "list.pt"
    torch.save([torch.randn(2, 2)], listed)
    with pytest.raises(WeightsError, match="holds a list"):
        iter_layers(listed)


# ---------------------------------------------------------------------------------------------
# Bad sources and filtering


def test_missing_path_unknown_extension_and_wrong_type(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=re.escape(f"no such file or folder: {missing}")):
        iter_layers(missing)
    with pytest.raises(WeightsError, match="no such file"):
        iter_layers(str(missing))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"'\.onnx'.*\.safetensors, \.pt"):
        iter_layers(onnx)
    with pytest.raises(TypeError, match=r"int.*nn\.Module"):
        iter_layers(42)  # type: ignore[arg-type]


def test_include_exclude(tmp_path: Path) -> None:
    model = attention()
    names = [r.name for r in iter_layers(model, include=r"in_proj_weight\[[qk]\]")]
    assert names == ["attn.in_proj_weight[q]", "attn.in_proj_weight[k]"]
    names = [r.name for r in iter_layers(model, include="^attn", exclude=re.compile("bias"))]
    assert names == [
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
        "attn.out_proj.weight",
    ]
    path = tmp_path / "m.safetensors"
    save_file(mlp().state_dict(), str(path))
    assert [r.name for r in list_layers(path, exclude=r"\.bias$")] == ["0.weight", "2.weight"]
    # Skipped records are kept unless filtered out.
    records = list_layers(path, include="^0")
    assert sorted((r.name, r.status) for r in records) == [
        ("0.bias", "skipped"),
        ("0.weight", "ok"),
    ]
    with pytest.raises(ValueError, match="include: invalid regular expression"):
        iter_layers(model, include="(")
