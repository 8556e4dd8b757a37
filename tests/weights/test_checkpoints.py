"""Tests for tailwise.weights.checkpoints: torch checkpoints, weights_only."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from _weights_zoo import (
    Payload,
    by_name,
    cnn,
    mlp,
    transposed_convs,
)

from tailwise.weights import (
    LayerKind,
    WeightsError,
    iter_layers,
    list_layers,
    load_checkpoint,
    unwrap_state_dict,
)
from tailwise.weights.checkpoints import _shorten

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


class SystemCall:
    """Pickles as a call of ``os.system``: the payload is built, never executed."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


SYSTEM = f"{os.system.__module__}.system"  # posix.system, nt.system on Windows


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_os_system_payload_is_refused_by_its_name(tmp_path: Path, protocol: int) -> None:
    """Issue 9: an os.system payload got the vaguest message, "not a weights-only checkpoint,
    maybe corrupt (... https://pytorch.or)" (protocol >= 4: torch names no global)."""
    files = {"raw.pt": pickle.dumps({"x": SystemCall()}, protocol=protocol)}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert f"contains pickled Python objects ({SYSTEM})" in message
        assert "refusing to unpickle" in message and "maybe corrupt" not in message
    zipped = tmp_path / "zip.pt"
    torch.save({"w": torch.ones(2), "x": SystemCall()}, zipped, pickle_protocol=protocol)
    with pytest.raises(WeightsError, match=re.escape(f"({SYSTEM})")):
        iter_layers(zipped)


def test_unknown_weights_only_failure_never_cuts_a_url(tmp_path: Path) -> None:
    """Issue 9: the fallback message was cut at 120 characters, in the middle of a URL."""
    path = tmp_path / "extension.pt"
    path.write_bytes(b"\x80\x02\x82\x01.")  # EXT1: an opcode the weights-only unpickler lacks
    with pytest.raises(WeightsError, match="maybe corrupt") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "Unsupported operand 130" in message
    for url in re.findall(r"https?://\S*", message):
        assert url.rstrip(").;,").endswith(".html"), message
    long = "word " * 100 + "see https://pytorch.org/docs/stable/generated/torch.load.html now"
    assert "https://pytorch.org/docs/stable/generated/torch.load.html" in _shorten(long)
    assert _shorten("First sentence. " + "x" * 400) == "First sentence."


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
# load_checkpoint and unwrap_state_dict


def test_load_checkpoint_and_unwrap(tmp_path: Path) -> None:
    state = mlp().state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 2, "model": {"state_dict": state}}, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2
    unwrapped = unwrap_state_dict(loaded)
    assert list(unwrapped) == list(state)
    assert all(torch.equal(unwrapped[k], state[k]) for k in state)
    assert unwrap_state_dict([1, 2]) == [1, 2]


def test_load_checkpoint_refuses_pickles_unless_trusted(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"payload": Payload(), "w": torch.ones(2)}, path)
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        load_checkpoint(path)
    assert load_checkpoint(str(path), trust_pickle=True)["payload"].note == "hello"
    with pytest.raises(WeightsError, match=re.escape(str(tmp_path / "missing.pt"))):
        load_checkpoint(tmp_path / "missing.pt")
