"""Pruning weights files without an architecture (issue 9 §2): tailwise.prune.prune_file.

Real files only: safetensors written here, weights-only torch checkpoints, and generated
Hugging Face folders (sharded BERT-shaped, GPT-2-shaped with transposed Conv1D weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tailwise import UsageError
from tailwise.models import MLP
from tailwise.prune import prune, prune_file
from tailwise.prune.report import REPORT_COLUMNS
from tailwise.weights import WeightsError

# --- tiny Hugging Face-shaped models --------------------------------------------------------

HIDDEN, INTER, VOCAB, POSITIONS = 16, 32, 50, 12


class BertSelf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)


class DenseNorm(nn.Module):
    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN)


class Dense(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, outputs)


class BertAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = BertSelf()
        self.output = DenseNorm(HIDDEN)


class BertLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = BertAttention()
        self.intermediate = Dense(INTER)
        self.output = DenseNorm(INTER)

    def forward(self, x: Tensor) -> Tensor:
        s = self.attention.self
        scores = torch.softmax(s.query(x) @ s.key(x).transpose(1, 2) / 4.0, dim=-1)
        out = self.attention.output
        x = out.LayerNorm(x + out.dense(scores @ s.value(x)))
        hidden = torch.relu(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(hidden))


class BertEmbeddings(nn.Module):
    position_ids: Tensor

    def __init__(self, persistent_ids: bool) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.position_embeddings = nn.Embedding(POSITIONS, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN)
        self.register_buffer(
            "position_ids", torch.arange(POSITIONS)[None], persistent=persistent_ids
        )

    def forward(self, ids: Tensor) -> Tensor:
        positions = self.position_ids[:, : ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions))


class BertEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(), BertLayer()])


class TinyBert(nn.Module):
    """Names as Hugging Face BertForSequenceClassification, with a position_ids buffer."""

    def __init__(self, persistent_ids: bool = True) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(persistent_ids)
        self.encoder = BertEncoder()
        self.pooler = Dense(HIDDEN)
        self.classifier = nn.Linear(HIDDEN, 3)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler.dense(x[:, 0])))


class Conv1D(nn.Module):
    """transformers' Conv1D: weight stored (in, out), y = x W + b."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class GPT2Attention(nn.Module):
    bias: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.c_attn = Conv1D(3 * HIDDEN, HIDDEN)
        self.c_proj = Conv1D(HIDDEN, HIDDEN)
        self.register_buffer("bias", torch.ones(1, 1, POSITIONS, POSITIONS).tril())

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.c_attn(x).split(HIDDEN, dim=-1)
        n = x.shape[1]
        mask = self.bias[0, 0, :n, :n]
        scores = (q @ k.transpose(1, 2) / 4.0).masked_fill(mask == 0, -1e9).softmax(-1)
        return self.c_proj(scores @ v)


class GPT2MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = Conv1D(INTER, HIDDEN)
        self.c_proj = Conv1D(HIDDEN, INTER)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(torch.relu(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(HIDDEN)
        self.attn = GPT2Attention()
        self.ln_2 = nn.LayerNorm(HIDDEN)
        self.mlp = GPT2MLP()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT2(nn.Module):
    """Names as Hugging Face GPT2Model."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, HIDDEN)
        self.wpe = nn.Embedding(POSITIONS, HIDDEN)
        self.h = nn.ModuleList([GPT2Block(), GPT2Block()])
        self.ln_f = nn.LayerNorm(HIDDEN)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


def weight(model: nn.Module, layer: str) -> Tensor:
    found = model.get_submodule(layer).weight
    assert isinstance(found, Tensor)
    return found.detach()


def write_hf_folder(model: nn.Module, folder: Path, model_type: str, shards: int = 2) -> Path:
    """A Hugging Face folder: sharded safetensors, index, config.json and a tokenizer file."""
    folder.mkdir(parents=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    names = list(state)
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "flax_model.msgpack").write_bytes(b"\x00" * 16)  # another format: not copied
    return folder


def load_folder(folder: Path) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


def seeded(factory: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return factory().eval()


# --- BERT-shaped sharded folder ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["magnitude", "global-magnitude", "node"])
def test_bert_folder_pruned_as_in_memory(tmp_path: Path, method: str) -> None:
    model = seeded(TinyBert)
    source = write_hf_folder(model, tmp_path / "bert", "bert")
    out = tmp_path / "pruned"
    result = prune_file(source, out, 0.5, method=method, progress=False)

    # Same layout: shards with the same names, index, config and tokenizer copied.
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in source.iterdir() if p.suffix != ".msgpack")
    assert [p.name for p in result.not_copied] == ["flax_model.msgpack"]
    assert (out / "config.json").read_text() == (source / "config.json").read_text()
    for shard in source.glob("*.safetensors"):
        before, after = load_file(shard), load_file(out / shard.name)
        assert list(before) == list(after)
        assert all(before[k].dtype == after[k].dtype for k in before)
    # The same keys; non-weight tensors and the position_ids buffer untouched.
    state = load_folder(out)
    original = model.state_dict()
    assert set(state) == set(original)
    for name in original:
        if not name.endswith(".weight") or original[name].ndim != 2 or "embeddings" in name:
            assert torch.equal(state[name], original[name]), name

    # Loads strictly into the original module and equals the in-memory pruned model.
    reloaded = TinyBert()
    reloaded.load_state_dict(state, strict=True)
    expected = prune(model, 0.5, method=method, progress=False)
    ids = torch.randint(0, VOCAB, (4, POSITIONS))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids), expected.model(ids), atol=1e-6)
    for layer in expected.report["layer"]:
        want = weight(expected.model, layer)
        assert torch.equal(weight(reloaded, layer), want), layer

    # The report: the usual columns, layer = module name, the classifier kept.
    report = result.report
    assert tuple(report.columns) == REPORT_COLUMNS
    assert sorted(report["layer"]) == sorted(expected.report["layer"])
    row = report.set_index("layer").loc["classifier"]
    assert row["achieved"] == 0 and row["note"] == "output layer: kept"
    columns = ["achieved", "params_before", "params_after", "note"]
    mine = report.set_index("layer")[columns].sort_index()
    assert mine.equals(expected.report.set_index("layer")[columns].sort_index())
    assert result.outputs == ["classifier"]


# --- GPT-2-shaped folder: Conv1D stored (in, out) ---------------------------------------------


def test_gpt2_node_pruning_removes_input_nodes_of_transposed_weights(tmp_path: Path) -> None:
    model = seeded(TinyGPT2)
    source = write_hf_folder(model, tmp_path / "gpt2", "gpt2", shards=3)
    out = tmp_path / "pruned"
    result = prune_file(source, out, 0.5, method="node", progress=False)
    state = load_folder(out)
    original = model.state_dict()
    assert set(state) == set(original)
    layers = [
        f"h.{i}.{name}"
        for i in range(2)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert sorted(result.report["layer"]) == sorted(layers)
    # No name is a head: the last layer in natural order is the output layer.
    assert result.outputs == ["h.1.mlp.c_proj"]
    masked = seeded(TinyGPT2)
    for layer in layers:
        stored = original[f"{layer}.weight"]  # (in, out)
        pruned = state[f"{layer}.weight"]
        assert pruned.shape == stored.shape
        if layer == "h.1.mlp.c_proj":
            assert torch.equal(pruned, stored)
            continue
        # Whole input nodes (rows of the stored matrix) are gone: the weakest by l2 norm.
        gone = (pruned == 0).all(dim=1)
        assert int(gone.sum()) == stored.shape[0] // 2
        assert not (pruned == 0).all(dim=0).any()  # no output column removed
        norms = stored.norm(dim=1)
        assert norms[gone].max() <= norms[~gone].min()
        assert torch.equal(pruned[~gone], stored[~gone])
        with torch.no_grad():
            weight(masked, layer)[gone] = 0  # detach() shares the storage
        row = result.report.set_index("layer").loc[layer]
        assert row["kind"] in ("hf_conv1d", "fused_qkv")
        assert row["achieved"] == pytest.approx(0.5)
    # The untouched buffer (attn.bias, a (1, 1, P, P) mask) and biases are kept.
    assert torch.equal(state["h.0.attn.bias"], original["h.0.attn.bias"])
    reloaded = TinyGPT2()
    reloaded.load_state_dict(state, strict=True)
    ids = torch.randint(0, VOCAB, (2, POSITIONS))
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(ids), masked(ids), atol=1e-6)


def test_gpt2_magnitude_keeps_stored_orientation(tmp_path: Path) -> None:
    model = seeded(TinyGPT2)
    source = write_hf_folder(model, tmp_path / "gpt2", "gpt2")
    out = tmp_path / "pruned"
    prune_file(source, out, 0.75, protect_outputs=False, progress=False)
    state, original = load_folder(out), model.state_dict()
    weight = original["h.0.attn.c_attn.weight"]
    pruned = state["h.0.attn.c_attn.weight"]
    assert int((pruned == 0).sum()) == math.floor(0.75 * weight.numel())
    kept = pruned != 0
    assert torch.equal(pruned[kept], weight[kept])
    assert weight[~kept].abs().max() <= weight[kept].abs().min()


# --- single files ------------------------------------------------------------------------------


def mlp() -> MLP:
    torch.manual_seed(1)
    return MLP(24, [32, 16], 4)


@pytest.mark.parametrize("allocation", ["uniform", "erk", "lamp", "alpha_pruning"])
def test_safetensors_file_matches_in_memory_allocations(tmp_path: Path, allocation: str) -> None:
    model = mlp()
    source = tmp_path / "plain.safetensors"
    state = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_file(state, str(source), metadata={"note": "mine", "format": "pt"})
    out = tmp_path / "out.safetensors"
    result = prune_file(source, out, 0.6, allocation=allocation, progress=False)
    reference = mlp().to(torch.bfloat16)
    want = prune(reference, 0.6, allocation=allocation, progress=False)
    cols = ["ratio", "achieved", "params_after", "note"]
    mine = result.report.set_index("layer")[cols].sort_index()
    assert mine.equals(want.report.set_index("layer")[cols].sort_index())
    from tailwise.weights import read_safetensors_metadata

    assert read_safetensors_metadata(out) == {"note": "mine", "format": "pt"}
    pruned = load_file(out)
    assert all(t.dtype == torch.bfloat16 for t in pruned.values())
    for layer in want.report["layer"]:
        assert torch.equal(pruned[f"{layer}.weight"], weight(want.model, layer))
    assert result.written == [out]


def test_center_sets_pruned_weights_to_the_median(tmp_path: Path) -> None:
    model = mlp()
    source = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(source))
    out = tmp_path / "o.safetensors"
    prune_file(source, out, 0.5, center=True, progress=False)
    want = prune(mlp(), 0.5, center=True, progress=False)
    pruned = load_file(out)
    for layer in ("layers.0", "layers.1"):
        assert torch.equal(pruned[f"{layer}.weight"], weight(want.model, layer))
        median = float(weight(model, layer).flatten().median())
        assert (
            int((pruned[f"{layer}.weight"] == median).sum())
            >= 0.5 * pruned[f"{layer}.weight"].numel()
        )


def test_weights_only_torch_checkpoint_keeps_its_structure(tmp_path: Path) -> None:
    model = mlp()
    source = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, source)
    out = tmp_path / "pruned.pt"
    result = prune_file(source, out, 0.5, method="node", progress=False)
    loaded = torch.load(out, weights_only=True)
    assert loaded["epoch"] == 3 and list(loaded["state_dict"]) == list(model.state_dict())
    want = prune(mlp(), 0.5, method="node", progress=False)
    fresh = MLP(24, [32, 16], 4)
    fresh.load_state_dict(loaded["state_dict"], strict=True)
    for layer in want.report["layer"]:
        assert torch.equal(weight(fresh, layer), weight(want.model, layer))
    # The stored order of a torch checkpoint: the last layer is the output layer.
    assert result.outputs == ["layers.2"]


def test_report_only_without_out(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in mlp().state_dict().items()}, str(source))
    result = prune_file(source, None, 0.5, progress=False)
    assert result.written == [] and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert result.report["achieved"].iloc[0] == 0.5


def test_nonfinite_layer_in_a_file_is_skipped(tmp_path: Path) -> None:
    model = mlp()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["layers.1.weight"][0, 0] = float("nan")
    source = tmp_path / "m.safetensors"
    save_file(state, str(source))
    for method in ("magnitude", "global-magnitude", "node"):
        out = tmp_path / f"{method}.safetensors"
        result = prune_file(source, out, 0.5, method=method, progress=False)
        row = result.report.set_index("layer").loc["layers.1"]
        assert row["note"].startswith("skipped: weight holds 1 NaN/Inf entries")
        assert row["achieved"] == 0
        written = load_file(out)["layers.1.weight"]
        assert torch.equal(written.isnan(), state["layers.1.weight"].isnan())
        assert result.report.set_index("layer").loc["layers.0", "achieved"] > 0.4


def test_refusals(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in mlp().state_dict().items()}, str(source))
    with pytest.raises(UsageError, match="changes the architecture"):
        prune_file(source, tmp_path / "o.safetensors", 0.5, method="lowrank")
    with pytest.raises(UsageError, match="overwrite the source"):
        prune_file(source, source, 0.5)
    with pytest.raises(UsageError, match="suffix"):
        prune_file(source, tmp_path / "o.pt", 0.5)
    with pytest.raises(UsageError, match="no Linear/Conv weight"):
        prune_file(source, None, 0.5, include="nothing-matches")
    with pytest.raises(WeightsError, match="no such file"):
        prune_file(tmp_path / "missing.safetensors", None, 0.5)
    folder = tmp_path / "hf"
    write_hf_folder(mlp(), folder, "mlp")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["layers.0.weight"] = "../m.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="outside the folder"):
        prune_file(folder, tmp_path / "out", 0.5)
    assert not (tmp_path / "out").exists()


def test_global_threshold_over_many_ties_matches_in_memory(tmp_path: Path) -> None:
    # A file pruned before: half of each layer is exactly 0, so the threshold sits in ties.
    first = prune(mlp(), 0.5, progress=False)
    state = {k: v.detach().clone().contiguous() for k, v in first.model.state_dict().items()}
    state = {k.replace("_orig", ""): v for k, v in state.items() if not k.endswith("_mask")}
    for name in list(state):
        if name.endswith(".weight"):
            state[name] = weight(first.model, name[: -len(".weight")]).clone().contiguous()
    source = tmp_path / "sparse.safetensors"
    save_file(state, str(source))
    out = tmp_path / "again.safetensors"
    result = prune_file(source, out, 0.7, method="global-magnitude", progress=False)
    reference = MLP(24, [32, 16], 4)
    reference.load_state_dict(state, strict=True)
    want = prune(reference, 0.7, method="global-magnitude", progress=False)
    pruned = load_file(out)
    budgeted = ["layers.0", "layers.1"]
    total = sum(pruned[f"{n}.weight"].numel() for n in budgeted)
    assert sum(int((pruned[f"{n}.weight"] == 0).sum()) for n in budgeted) == math.floor(0.7 * total)
    for layer in budgeted:
        assert torch.equal(pruned[f"{layer}.weight"], weight(want.model, layer)), layer
    assert result.report.set_index("layer").loc["layers.2", "note"] == "output layer: kept"


def test_folder_with_pytorch_model_bin(tmp_path: Path) -> None:
    model = seeded(TinyBert)
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"model_type": "bert"}')
    out = tmp_path / "out"
    prune_file(folder, out, 0.5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    reloaded = TinyBert()
    reloaded.load_state_dict(torch.load(out / "pytorch_model.bin", weights_only=True))
    want = prune(model, 0.5, progress=False)
    for layer in want.report["layer"]:
        assert torch.equal(weight(reloaded, layer), weight(want.model, layer)), layer
