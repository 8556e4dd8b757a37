"""Tests for tailwise.weights.modules: nn.Module and state-dict sources."""

from __future__ import annotations

import pytest
import torch
from _weights_zoo import (
    ScaledLinear,
    TiedLM,
    TinyGPT2Block,
    attention,
    by_name,
    cnn,
    expected_names,
    mlp,
    recurrent,
    transposed_convs,
    zoo,
)
from torch import nn

from tailwise.weights import (
    LayerKind,
    WeightsError,
    iter_layers,
    list_layers,
)

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
# layer: the module that owns each record


class HFStyle(nn.Module):
    """Hugging Face BERT-style nesting: encoder.layer.0.attention.self.query."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        block = nn.Module()
        block.attention = nn.Module()
        block.attention.self = nn.Module()
        block.attention.self.query = nn.Linear(4, 4)
        block.attention.output = nn.Module()
        block.attention.output.LayerNorm = nn.LayerNorm(4)
        self.encoder.layer = nn.ModuleList([block])
        self.weight = nn.Parameter(torch.randn(3, 4))  # a top-level weight: layer ""
        self.attn = nn.MultiheadAttention(4, 1)
        self.rnn = nn.LSTM(4, 3)


EXPECTED_LAYERS = {
    "weight": "",
    "encoder.layer.0.attention.self.query.weight": "encoder.layer.0.attention.self.query",
    "encoder.layer.0.attention.self.query.bias": "encoder.layer.0.attention.self.query",
    "encoder.layer.0.attention.output.LayerNorm.weight": (
        "encoder.layer.0.attention.output.LayerNorm"
    ),
    "attn.in_proj_weight[q]": "attn",
    "attn.in_proj_weight[k]": "attn",
    "attn.in_proj_weight[v]": "attn",
    "attn.out_proj.weight": "attn.out_proj",
    "rnn.weight_ih_l0": "rnn",
    "rnn.weight_hh_l0": "rnn",
}


def test_layer_of_module_records() -> None:
    layers = {record.name: record.layer for record in iter_layers(HFStyle())}
    for name, layer in EXPECTED_LAYERS.items():
        assert layers[name] == layer, name
    model = HFStyle()
    modules = dict(model.named_modules())
    assert all(layer in modules for layer in layers.values())


def test_layer_of_state_dict_records_matches_the_module() -> None:
    model = HFStyle()
    from_module = {record.name: record.layer for record in iter_layers(model)}
    from_state = {record.name: record.layer for record in iter_layers(model.state_dict())}
    assert from_state == from_module
    for name, layer in EXPECTED_LAYERS.items():
        assert from_state[name] == layer, name
