"""Tests for tailwise.weights.records: kinds, records and the name-and-shape rule."""

from __future__ import annotations

import pytest
import torch
from _weights_zoo import Conv1D, zoo
from torch import nn

from tailwise.weights import (
    LayerKind,
    LayerWeights,
    WeightsError,
    infer_kind,
    iter_layers,
    layer_name,
    module_kind,
)

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


# ---------------------------------------------------------------------------------------------
# layer: the module that owns a weight


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query"),
        ("attn.in_proj_weight[q]", "attn"),
        ("rnn.weight_ih_l0", "rnn"),
        ("rnn.weight_hh_l1_reverse", "rnn"),
        ("weight", ""),
        ("features.0.weight[0,1]", "features.0"),
        ("model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.q_proj"),
    ],
)
def test_layer_name(name: str, layer: str) -> None:
    assert layer_name(name) == layer
    record = LayerWeights(
        name, LayerKind.LINEAR, (2, 2), "float32", loader=lambda: torch.ones(2, 2)
    )
    assert record.layer == layer


def test_record_layer_given_explicitly_is_kept() -> None:
    record = LayerWeights(
        "w", LayerKind.LINEAR, (2, 2), "float32", loader=lambda: torch.ones(2, 2), layer="block"
    )
    assert record.layer == "block"


# ---------------------------------------------------------------------------------------------
# The module-type rule


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.Linear(2, 3), "linear"),
        (nn.Conv1d(1, 1, 3), "conv1d"),
        (nn.Conv2d(1, 1, 3), "conv2d"),
        (nn.Conv3d(1, 1, 3), "conv3d"),
        (nn.ConvTranspose2d(1, 1, 3), "conv_transpose2d"),
        (nn.Embedding(4, 2), "embedding"),
        (nn.MultiheadAttention(4, 1), "attention"),
        (nn.LSTM(2, 3), "rnn"),
        (nn.GRUCell(2, 3), "rnn"),
        (nn.LayerNorm(3), "norm"),
        (nn.BatchNorm2d(3), "norm"),
        (nn.Bilinear(2, 2, 2), "other"),
        (nn.ReLU(), "other"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else value,
)
def test_module_kind(module: nn.Module, kind: str) -> None:
    assert module_kind(module) == kind


def test_module_kind_agrees_with_iter_layers() -> None:
    for model in zoo().values():
        for record in iter_layers(model):
            if record.name.endswith(".weight") and record.kind.analysed:
                module = model.get_submodule(record.layer)
                assert module_kind(module, record.layer) == record.kind.value, record.name
    assert module_kind(nn.Linear(4, 12), "blocks.0.attn.qkv") == "fused_qkv"
    assert module_kind(Conv1D(6, 2)) == "hf_conv1d"
