"""compare: two weight sources layer by layer (real safetensors files), against direct
computation, analyze(), Mirsky's inequality and WeightWatcher's distances()."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from tailwise import UsageError, analyze
from tailwise._threads import single_threaded
from tailwise.models import SmallCNN
from tailwise.similarity import COMPARE_COLUMNS, COMPARE_METRICS, compare
from tailwise.weights import LayerWeights


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_threaded():
        yield


def _model(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(channels=(8, 16))  # 2 convs (8x1x3x3: flattened, 16x8x3x3), BN, head 10x64


def _perturbed(model: nn.Module, scale: float = 0.05, seed: int = 1) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def _save(state: dict[str, Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _batches() -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(5)
    return [(torch.randn(16, 1, 8, 8, generator=gen), torch.zeros(16)) for _ in range(2)]


def test_two_safetensors_files(tmp_path: Path) -> None:
    model = _model(0)
    state_b = _perturbed(model)
    path_a = _save(model.state_dict(), tmp_path / "a.safetensors")
    path_b = _save(state_b, tmp_path / "b.safetensors")
    df = compare(path_a, path_b, progress=False)
    assert list(df.columns) == list(COMPARE_COLUMNS)
    weights = ["features.0.conv.weight", "features.1.conv.weight", "head.weight"]
    ok = df[df.status == "ok"].set_index("name")
    assert list(ok.index) == weights
    for name in weights:
        w_a = model.state_dict()[name].double()
        w_b = state_b[name].double()
        delta = float(torch.linalg.vector_norm(w_b - w_a))
        assert ok.loc[name, "delta_W"] == pytest.approx(delta, rel=1e-12)
        assert ok.loc[name, "rel_frobenius"] == pytest.approx(
            delta / float(torch.linalg.vector_norm(w_a)), rel=1e-12
        )
        # Mirsky: the singular values move no more than the matrix (relative to W_a)
        assert 0 < ok.loc[name, "sv_distance"] <= ok.loc[name, "rel_frobenius"] + 1e-12
        assert 0 <= ok.loc[name, "esd_distance"] <= 1
    # the *_a / *_b columns are analyze()'s, the deltas their differences
    by_a = analyze(path_a, progress=False).set_index("name")
    by_b = analyze(path_b, progress=False).set_index("name")
    for metric in COMPARE_METRICS:
        np.testing.assert_allclose(ok[f"{metric}_a"], by_a.loc[weights, metric], rtol=1e-12)
        np.testing.assert_allclose(ok[f"{metric}_b"], by_b.loc[weights, metric], rtol=1e-12)
        np.testing.assert_allclose(
            ok[f"delta_{metric}"], by_b.loc[weights, metric] - by_a.loc[weights, metric],
            rtol=1e-12, atol=1e-12,
        )  # fmt: skip
    assert ok["cka"].isna().all()  # no data
    # biases and BatchNorm tensors: skipped rows, with their weight distances
    skipped = df[df.status == "skipped"].set_index("name")
    assert "features.0.bn.weight" in skipped.index and "head.bias" in skipped.index
    assert skipped.loc["head.bias", "rel_frobenius"] > 0
    assert skipped["alpha_a"].isna().all()
    assert df.attrs["source_a"] == str(path_a)


def test_identical_models_give_zero_distances_and_cka_one(tmp_path: Path) -> None:
    model = _model(0)
    path_a = _save(model.state_dict(), tmp_path / "a.safetensors")
    path_b = _save(model.state_dict(), tmp_path / "b.safetensors")
    df = compare(path_a, path_b, progress=False)
    ok = df[df.status == "ok"]
    assert len(ok) == 3
    for column in ("delta_W", "rel_frobenius", "sv_distance", "esd_distance"):
        assert (ok[column] == 0).all(), column
    deltas = ok[[f"delta_{m}" for m in COMPARE_METRICS]].to_numpy()
    assert np.all((deltas == 0) | np.isnan(deltas))
    assert not np.isnan(ok["delta_log_norm"]).any()
    # modules + data: CKA between corresponding layers is 1
    twin = _model(0)
    with_data = compare(model, twin, data=_batches(), progress=False)
    ok = with_data[with_data.status == "ok"]
    np.testing.assert_allclose(ok["cka"], 1.0, atol=1e-12)
    assert with_data.attrs["examples"] == 32
    assert (ok["rel_frobenius"] == 0).all()


def test_cka_column_against_layer_cka() -> None:
    from tailwise.similarity import layer_cka

    model_a, model_b = _model(0), _model(1)
    df = compare(model_a, model_b, data=_batches(), progress=False)
    ok = df[df.status == "ok"].set_index("layer")
    pairs = layer_cka(model_a, model_b, _batches(), progress=False)
    for layer in ("features.0.conv", "features.1.conv", "head"):
        expected = pairs[(pairs.layer_a == layer) & (pairs.layer_b == layer)]["cka"].item()
        assert ok.loc[layer, "cka"] == pytest.approx(expected, abs=1e-12)
        assert 0 < ok.loc[layer, "cka"] < 1


def test_a_shape_mismatch_or_missing_tensor_is_a_failed_row(tmp_path: Path) -> None:
    model = _model(0)
    state_b = _perturbed(model)
    state_b["head.weight"] = torch.randn(12, 64)  # another head
    del state_b["features.1.conv.weight"]
    state_b["extra.weight"] = torch.randn(4, 4)
    df = compare(model, _save(state_b, tmp_path / "b.safetensors"), progress=False)
    rows = df.set_index("name")
    assert rows.loc["head.weight", "status"] == "failed"
    assert rows.loc["head.weight", "reason"] == "shapes differ: a (10, 64) vs b (12, 64)"
    assert rows.loc["features.1.conv.weight", "reason"] == "not in b"
    assert rows.loc["extra.weight", "reason"] == "not in a"
    names = list(df["name"])
    assert names[: len(list(model.parameters()))] == [n for n, _ in model.named_parameters()]
    assert "extra.weight" in names[len(list(model.parameters())) :]  # b's extras come after
    # buffers only the file lists (a module lists parameters) are not failures
    assert rows.loc["features.1.bn.running_var", "status"] == "skipped"
    assert rows.loc["features.1.bn.running_var", "reason"] == "not in a"
    assert set(df.loc[df.status == "failed", "name"]) == {
        "head.weight", "features.1.conv.weight", "extra.weight"
    }  # fmt: skip
    # one bad layer never sinks the run: the others are compared
    assert rows.loc["features.0.conv.weight", "status"] == "ok"
    assert rows.loc["features.0.conv.weight", "rel_frobenius"] > 0


def test_a_bad_tensor_is_a_failed_row() -> None:
    model = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12))
    state_b = {k: v.clone() for k, v in model.state_dict().items()}
    state_b["0.weight"][0, 0] = math.nan
    df = compare(model, state_b, progress=False).set_index("name")
    assert df.loc["0.weight", "status"] == "failed"
    assert "NaN" in df.loc["0.weight", "reason"]
    assert df.loc["1.weight", "status"] == "ok"


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 6)
        self.shared = nn.Linear(6, 6)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.shared(torch.relu(self.shared(self.first(x))))
        return out


def test_a_module_run_twice_gets_no_cka_but_the_rest_does() -> None:
    torch.manual_seed(0)
    a, b = _Twice(), _Twice()
    df = compare(a, b, data=torch.randn(20, 6), progress=False).set_index("name")
    assert df.loc["first.weight", "status"] == "ok" and math.isfinite(df.loc["first.weight", "cka"])
    assert math.isnan(df.loc["shared.weight", "cka"])
    assert "cka (a): module 'shared' ran 2 times" in df.loc["shared.weight", "reason"]
    assert df.loc["shared.weight", "status"] == "ok"  # the weights were still compared


def test_options_and_errors(tmp_path: Path) -> None:
    model = _model(0)
    path = _save(model.state_dict(), tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match=r"needs two nn\.Modules"):
        compare(path, model, data=_batches(), progress=False)
    with pytest.raises(UsageError, match="conv must be one of"):
        compare(model, model, conv="tiles", progress=False)
    with pytest.raises(UsageError, match="kernel must be one of"):
        compare(model, model, kernel="poly", progress=False)
    with pytest.raises(UsageError, match="include 'nothing' selects no tensor"):
        compare(model, path, include="nothing", progress=False)
    only_head = compare(model, path, include=r"^head\.", progress=False)
    assert list(only_head["name"]) == ["head.weight", "head.bias"]
    slices = compare(model, path, conv="slices", progress=False)
    assert (slices["name"] == "features.1.conv.weight[0,0]").any()
    assert (slices.loc[slices.status == "ok", "sv_distance"] == 0).all()


def _weightwatcher_distances(a: nn.Module, b: nn.Module) -> pd.DataFrame:
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        _, _, table = ww.WeightWatcher().distances(a, b, method="raw")
    return table


def test_delta_w_matches_weightwatcher_distances() -> None:
    torch.manual_seed(3)
    a = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    b = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    table = _weightwatcher_distances(a, b)
    ours = compare(a, b, progress=False)
    ours = ours[ours.status == "ok"]
    # WeightWatcher pairs layers by position and names them by module ("0", "2")
    assert list(table["longname"]) == list(ours["layer"])
    np.testing.assert_allclose(ours["delta_W"], table["delta_W"].astype(float), rtol=1e-5)


def test_files_are_streamed_one_tensor_per_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each tensor of each file is read once, and when one is read no other tensor read from
    the same side is still alive: two files are never loaded whole."""
    import dataclasses
    import importlib
    import weakref

    # the package exports the function compare, which hides the module of the same name
    module = importlib.import_module("tailwise.similarity.compare")

    model = _model(0)
    path_a = _save(model.state_dict(), tmp_path / "a.safetensors")
    path_b = _save(_perturbed(model), tmp_path / "b.safetensors")
    loads: dict[str, list[str]] = {"a": [], "b": []}
    alive: dict[str, list[weakref.ref[Tensor]]] = {"a": [], "b": []}
    most_alive = {"a": 0, "b": 0}
    real_iter_layers: Callable[..., Iterator[LayerWeights]] = module.iter_layers

    def counting(source: object, **kwargs: object) -> Iterator[LayerWeights]:
        side = "a" if source == path_a else "b"
        for record in real_iter_layers(source, **kwargs):

            def loader(record: LayerWeights = record, side: str = side) -> Tensor:
                live = sum(ref() is not None for ref in alive[side])
                most_alive[side] = max(most_alive[side], live)
                tensor = record.loader()
                loads[side].append(record.name)
                alive[side].append(weakref.ref(tensor))
                return tensor

            yield dataclasses.replace(record, loader=loader)

    monkeypatch.setattr(module, "iter_layers", counting)
    df = compare(path_a, path_b, progress=False)
    assert (df["status"] != "failed").all()
    for side in ("a", "b"):
        assert sorted(loads[side]) == sorted(model.state_dict())  # every tensor once
        assert most_alive[side] == 0  # the previous tensor was freed before the next read
