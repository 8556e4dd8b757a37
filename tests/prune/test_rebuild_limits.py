"""load_pruned / load_model against files they did not expect (issue 9 §2, §4): sizes and
nesting in metadata are not trusted, and buffers never block a load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from tailwise import load_model
from tailwise.models import MLP
from tailwise.prune import load_pruned
from tailwise.weights import WeightsError

SMALL = {"class": "MLP", "in_features": 4, "hidden": [3], "num_classes": 2}


def tiny_file(path: Path, metadata: dict[str, str]) -> Path:
    state = {k: v.contiguous() for k, v in MLP(4, [3], 2).state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return path


def test_architecture_of_160_gb_is_refused_before_allocating(tmp_path: Path) -> None:
    huge = {"class": "MLP", "in_features": 200_000, "hidden": [200_000], "num_classes": 2}
    path = tiny_file(tmp_path / "huge.safetensors", {"architecture": json.dumps(huge)})
    with pytest.raises(WeightsError, match=r"huge\.safetensors.*describes a model of 4\d{10}"):
        load_pruned(path)
    with pytest.raises(WeightsError, match=r"huge\.safetensors"):
        load_model(path)


def test_edit_with_a_trillion_outputs_is_refused(tmp_path: Path) -> None:
    edit = {"layers.0": {"type": "Linear", "in_features": 4, "out_features": 10**12}}
    meta = {"architecture": json.dumps(SMALL), "tailwise_edits": json.dumps(edit)}
    path = tiny_file(tmp_path / "edit.safetensors", meta)
    with pytest.raises(WeightsError, match=r"edit\.safetensors.*'layers\.0'.*5000000000000"):
        load_pruned(path)
    with pytest.raises(WeightsError, match=r"edit\.safetensors"):
        load_pruned(path, MLP(4, [3], 2))


@pytest.mark.parametrize("key", ["architecture", "tailwise_edits"])
def test_deeply_nested_metadata_is_a_weights_error(tmp_path: Path, key: str) -> None:
    meta = {"architecture": json.dumps(SMALL), key: "[" * 100_000}
    path = tiny_file(tmp_path / "deep.safetensors", meta)
    with pytest.raises(WeightsError, match=rf"deep\.safetensors.*{key}.*nested deeper"):
        load_pruned(path)


def test_honest_files_still_load(tmp_path: Path) -> None:
    path = tiny_file(tmp_path / "ok.safetensors", {"architecture": json.dumps(SMALL)})
    assert isinstance(load_pruned(path), MLP)


class WithIds(nn.Module):
    position_ids: Tensor

    def __init__(self, persistent: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.dense = nn.Linear(4, 2)
        self.register_buffer("position_ids", torch.arange(6)[None], persistent=persistent)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_buffers_never_block_a_load(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = WithIds(persistent=True)
    path = tmp_path / f"with_ids{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    # The file has position_ids; the model keeps it out of its state dict (non-persistent).
    loaded = load_pruned(path, WithIds(persistent=False))
    assert isinstance(loaded, WithIds)
    assert torch.equal(loaded.dense.weight, source.dense.weight)
    # The file lacks a buffer the model has (persistent): the model's own value stays.
    without = {k: v for k, v in state.items() if k != "position_ids"}
    other = tmp_path / f"without{suffix}"
    if suffix == ".pt":
        torch.save(without, other)
    else:
        save_file(without, str(other))
    loaded = load_pruned(other, WithIds(persistent=True))
    assert isinstance(loaded, WithIds)
    assert torch.equal(loaded.position_ids, torch.arange(6)[None])
    assert torch.equal(loaded.embed.weight, source.embed.weight)
    # Parameters stay strict: a missing weight is still an error.
    broken = {k: v for k, v in state.items() if k != "dense.weight"}
    bad = tmp_path / f"broken{suffix}"
    if suffix == ".pt":
        torch.save(broken, bad)
    else:
        save_file(broken, str(bad))
    with pytest.raises(WeightsError, match=r"dense\.weight"):
        load_pruned(bad, WithIds(persistent=True))
