"""Small models and file writers shared by the tests of tailwise.weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from torch import nn

from tailwise.weights import LayerWeights

# ---------------------------------------------------------------------------------------------
# Helpers and small models

__all__ = [
    "Conv1D",
    "Payload",
    "ScaledLinear",
    "TiedLM",
    "TinyGPT2Block",
    "attention",
    "by_name",
    "cnn",
    "expected_names",
    "mlp",
    "recurrent",
    "transposed_convs",
    "write_safetensors_raw",
    "zoo",
]


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
