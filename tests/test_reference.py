"""tailwise.reference and tailwise.cache: the cached reference network."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import tailwise.models
import tailwise.reference as reference
from tailwise.cache import cache_dir
from tailwise.data import digits_loaders
from tailwise.models import MLP
from tailwise.reference import reference_checkpoint, reference_metadata, reference_model
from tailwise.train import evaluate
from tailwise.weights import WeightsError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache directory in which the reference network was trained once (a few seconds)."""
    directory = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILWISE_CACHE_DIR", str(directory))
        assert not any(directory.iterdir())
        reference_checkpoint(progress=False)
        yield directory


@pytest.fixture
def cache(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(trained))
    return trained


def _no_training(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the reference network was trained again")


def test_first_call_writes_a_versioned_safetensors_file(cache: Path) -> None:
    files = sorted(p.name for p in cache.iterdir())
    assert files == ["reference-mlp-digits-v1.safetensors"]  # no temporary file left behind


def test_second_call_reuses_the_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cache / "reference-mlp-digits-v1.safetensors"
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(reference, "_train", _no_training)
    assert reference_checkpoint(progress=False) == path
    assert path.stat().st_mtime_ns == mtime


def test_metadata_records_accuracy_and_recipe(cache: Path) -> None:
    metadata = reference_metadata()
    assert metadata["tailwise_reference"] == "mlp-digits-v1"
    assert float(metadata["test_accuracy"]) >= 0.95
    assert json.loads(metadata["architecture"])["hidden"] == [512, 256, 128]
    assert json.loads(metadata["recipe"])["seed"] == 0


def test_loaded_model_reproduces_the_trained_one(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reference, "_train", _no_training)
    model = reference_model(progress=False)
    assert isinstance(model, MLP)
    assert not model.training
    # The metadata was measured on the in-memory network before saving.
    metadata = reference_metadata()
    _, test = digits_loaders(flatten=True)
    loss, accuracy = evaluate(model, test)
    assert accuracy == pytest.approx(float(metadata["test_accuracy"]), abs=1e-6)
    assert loss == pytest.approx(float(metadata["test_loss"]), abs=1e-6)
    images = test.dataset.tensors[0]  # type: ignore[attr-defined]
    again = reference_model(progress=False)
    with torch.no_grad():
        assert torch.equal(model(images), again(images))


def test_weight_matrices_have_enough_eigenvalues(cache: Path) -> None:
    state = reference_model(progress=False).state_dict()
    assert [min(state[f"layers.{i}.weight"].shape) for i in range(4)] == [64, 256, 128, 10]


def test_retrain_replaces_the_file_atomically(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path))
    (tmp_path / "reference-mlp-digits-v1.safetensors").write_bytes(b"stale")
    trained_model = MLP(64, [512, 256, 128], 10)

    def fake_train(recipe: reference.ReferenceRecipe, *, progress: bool) -> Any:
        return trained_model, {"tailwise_reference": "mlp-digits-v1", "test_accuracy": "0.5"}

    monkeypatch.setattr(reference, "_train", fake_train)
    reference_checkpoint(progress=False, retrain=True)
    assert reference_metadata(tmp_path / "reference-mlp-digits-v1.safetensors") == {
        "tailwise_reference": "mlp-digits-v1",
        "test_accuracy": "0.5",
    }


def test_interrupted_save_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(
        reference, "_train", lambda recipe, progress: (MLP(64, [4], 10), {"x": "y"})
    )

    def half_write(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(reference, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        reference_checkpoint(progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_reference_in_cache_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(
        reference, "_train", lambda recipe, progress: (MLP(64, [4], 10), {"x": "y"})
    )
    reference_checkpoint(progress=False)
    with pytest.raises(ValueError, match="retrain=True"):
        reference_model(progress=False)


def test_corrupt_cached_file_is_reported_with_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path))
    path = tmp_path / "reference-mlp-digits-v1.safetensors"
    path.write_bytes(b"stale")
    monkeypatch.setattr(reference, "_train", _no_training)
    with pytest.raises(WeightsError, match="reference-mlp-digits-v1"):
        reference_model(progress=False)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.setenv("TAILWISE_CACHE_DIR", "")
    assert cache_dir() == tmp_path / "xdg" / "tailwise"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "tailwise"
    assert cache_dir().is_dir()


def test_cache_dir_that_is_a_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match="TAILWISE_CACHE_DIR"):
        cache_dir()


def test_models_keeps_the_old_names_as_lazy_aliases() -> None:
    # tailwise.models must not import the training loop just to be imported ...
    code = (
        "import sys, tailwise.models; "
        "assert 'tailwise.train.loop' not in sys.modules, 'models imported train'; "
        "assert 'tailwise.reference' not in sys.modules, 'models imported reference'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # ... yet the names that used to live there still resolve to the moved functions.
    assert tailwise.models.reference_checkpoint is reference_checkpoint
    assert tailwise.models.reference_metadata is reference_metadata
    assert tailwise.models.reference_model is reference_model
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tailwise.models.no_such_name  # type: ignore[attr-defined]
