"""Tests for tailwise.weights.sources: Hugging Face folders, bad sources, filtering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from _weights_zoo import (
    attention,
    by_name,
    mlp,
)
from safetensors.torch import save_file

from tailwise import UsageError
from tailwise.weights import (
    LayerKind,
    WeightsError,
    compile_pattern,
    describe_source,
    iter_layers,
    list_layers,
)

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


@pytest.mark.parametrize(
    "shard", ["../outside.safetensors", "sub/../../outside.safetensors", "/abs/x.safetensors"]
)
def test_index_pointing_outside_its_folder_is_refused(tmp_path: Path, shard: str) -> None:
    """Issue 9: an index whose weight_map names ``../good.safetensors`` was followed."""
    save_file(mlp().state_dict(), str(tmp_path / "outside.safetensors"))
    torch.save(mlp().state_dict(), tmp_path / "outside.bin")
    folder = tmp_path / "model"
    folder.mkdir()
    for index_name, target in (
        ("model.safetensors.index.json", shard),
        ("pytorch_model.bin.index.json", shard.replace(".safetensors", ".bin")),
    ):
        index = {"weight_map": dict.fromkeys(mlp().state_dict(), target)}
        (folder / index_name).write_text(json.dumps(index))
        for source in (folder, folder / index_name):
            with pytest.raises(WeightsError, match=r"not a file inside .*refusing it") as info:
                list_layers(source)
            assert repr(target) in str(info.value)
        (folder / index_name).unlink()


def test_deeply_nested_index_or_config_is_a_weights_error(tmp_path: Path) -> None:
    """Issue 9: JSON from files is bounded in nesting before it is parsed."""
    folder = tmp_path / "deep"
    write_sharded(folder, gpt2_state(), {"model_type": "gpt2"})
    (folder / "config.json").write_text("[" * 100_000)
    with pytest.raises(WeightsError, match=r"config\.json is JSON nested 100000 levels deep"):
        list_layers(folder)
    (folder / "config.json").unlink()
    (folder / "model.safetensors.index.json").write_text('{"weight_map":' + "[" * 100_000)
    with pytest.raises(WeightsError, match=r"index\.json is JSON nested"):
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


def test_patterns_that_select_nothing_raise_a_usage_error(tmp_path: Path) -> None:
    """Issue 9: an include that matched nothing gave an empty table and exit status 0."""
    path = tmp_path / "m.safetensors"
    save_file(mlp().state_dict(), str(path))
    with pytest.raises(UsageError) as info:
        list_layers(path, include="^encoder")
    message = str(info.value)
    assert message.startswith("include '^encoder' selects no tensor; the source holds ")
    assert all(repr(name) in message for name in ("0.weight", "0.bias", "2.weight"))
    with pytest.raises(UsageError, match=r"exclude '\.' selects no tensor"):
        list_layers(path, exclude=".")
    with pytest.raises(UsageError, match=r"include '0' and exclude 'weight\|bias' select no"):
        list_layers(path, include="0", exclude="weight|bias")
    with pytest.raises(UsageError, match="the source holds none"):
        list_layers({}, include="x")
    # Only the first few names are shown.
    many = {f"layers.{i}.weight": torch.zeros(2, 2) for i in range(40)}
    with pytest.raises(UsageError, match=r"'layers\.4\.weight', \.\.\. \(40 in all\)") as info:
        list_layers(many, include="nothing")
    assert "layers.5.weight" not in str(info.value)
    # No pattern, no error: an empty source stays an empty list.
    assert list_layers({}) == []


# ---------------------------------------------------------------------------------------------
# compile_pattern and describe_source


def test_compile_pattern() -> None:
    assert compile_pattern(None, "include") is None
    compiled = re.compile(r"\.weight$")
    assert compile_pattern(compiled, "include") is compiled
    assert compile_pattern(r"layers\.0", "exclude").search("layers.0.weight")
    with pytest.raises(UsageError, match=r"^include: invalid regular expression '\('"):
        compile_pattern("(", "include")
    with pytest.raises(TypeError, match="exclude must be a regex string"):
        compile_pattern(3, "exclude")  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_invalid_pattern_is_a_usage_error(option: str) -> None:
    with pytest.raises(UsageError, match=f"^{option}: invalid regular expression"):
        iter_layers(mlp(), **{option: "[unclosed"})
    assert issubclass(UsageError, ValueError)  # callers catching ValueError keep working


def test_describe_source(tmp_path: Path) -> None:
    assert describe_source(mlp()) == "Sequential (in memory)"
    assert describe_source(mlp().state_dict()) == "state dict (in memory)"
    assert describe_source(tmp_path / "m.safetensors") == str(tmp_path / "m.safetensors")
