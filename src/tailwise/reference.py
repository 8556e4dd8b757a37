"""The package's reference network: what ``tailwise analyze`` looks at when given no model.

A :class:`~tailwise.models.MLP` trained on scikit-learn's bundled digits on first use (a few
seconds on a laptop CPU), then cached as a ``.safetensors`` file under
:func:`tailwise.cache.cache_dir`. It trains, so it lives above ``train/`` (the Layering
section of DESIGN.md), not in ``models/``. Its weight matrices are large enough for meaningful ESDs:
64 x 512, 512 x 256 and 256 x 128 (64, 256 and 128 eigenvalues) plus the 10-class head.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from tailwise._io import atomic_path
from tailwise._threads import single_threaded
from tailwise.cache import cache_dir
from tailwise.data.digits import NUM_CLASSES, NUM_FEATURES, digits_loaders
from tailwise.models import MLP
from tailwise.train.loop import evaluate, fit
from tailwise.weights import load_safetensors, read_safetensors_metadata

# Bump the version whenever the recipe below changes: the cached file is found by name only.
REFERENCE_NAME = "mlp-digits-v1"


@dataclass(frozen=True)
class ReferenceRecipe:
    """Architecture and training recipe of the reference network (deterministic by ``seed``)."""

    hidden: tuple[int, ...] = (512, 256, 128)
    activation: str = "relu"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


RECIPE = ReferenceRecipe()


def _build(recipe: ReferenceRecipe) -> MLP:
    return MLP(NUM_FEATURES, recipe.hidden, NUM_CLASSES, activation=recipe.activation)


def _reference_path() -> Path:
    return cache_dir() / f"reference-{REFERENCE_NAME}.safetensors"


def _train(recipe: ReferenceRecipe, *, progress: bool) -> tuple[MLP, dict[str, str]]:
    """Train the reference MLP from scratch; return it and the metadata to store with it."""
    # One intra-op thread: faster for matrices this small on a busy 2-core machine, and the
    # fixed order of float sums gives the same weights whatever the core count.
    with single_threaded():
        return _train_on_cpu(recipe, progress=progress)


def _train_on_cpu(recipe: ReferenceRecipe, *, progress: bool) -> tuple[MLP, dict[str, str]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = _build(recipe)
    train_loader, test_loader = digits_loaders(recipe.batch_size, seed=recipe.seed, flatten=True)
    fit(
        model,
        train_loader,
        epochs=recipe.epochs,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        device="cpu",
        progress=progress,
        seed=recipe.seed,
    )
    train_loss, train_acc = evaluate(model, train_loader)
    test_loss, test_acc = evaluate(model, test_loader)
    metadata = {
        "tailwise_reference": REFERENCE_NAME,
        "architecture": json.dumps(
            {"class": "MLP", "in_features": NUM_FEATURES, "num_classes": NUM_CLASSES}
            | {"hidden": list(recipe.hidden), "activation": recipe.activation}
        ),
        "recipe": json.dumps(asdict(recipe)),
        "dataset": "sklearn digits, stratified 80/20 split, seed 0, pixels / 16",
        "train_loss": f"{train_loss:.6f}",
        "train_accuracy": f"{train_acc:.6f}",
        "test_loss": f"{test_loss:.6f}",
        "test_accuracy": f"{test_acc:.6f}",
        "torch_version": torch.__version__,
    }
    return model, metadata


def reference_checkpoint(*, progress: bool = True, retrain: bool = False) -> Path:
    """Path of the cached reference checkpoint, training and saving it first if needed.

    The file is ``<cache_dir()>/reference-mlp-digits-v1.safetensors`` with state_dict keys
    ``layers.{0..3}.weight`` / ``.bias`` and string metadata (``test_accuracy``, ``recipe``,
    ``architecture``, ...). It is written atomically, so an interrupted first run leaves no
    partial file. ``retrain=True`` trains again and replaces it; ``progress`` shows the
    training progress bar.

    >>> path = reference_checkpoint(progress=False)
    >>> path.name
    'reference-mlp-digits-v1.safetensors'
    """
    path = _reference_path()
    if path.is_file() and not retrain:
        return path
    model, metadata = _train(RECIPE, progress=progress)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    with atomic_path(path) as tmp:
        save_file(state, os.fspath(tmp), metadata=metadata)
    return path


def reference_metadata(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """String metadata of a reference checkpoint (default: the cached one, trained if needed).

    Read with :func:`tailwise.weights.read_safetensors_metadata`: a corrupt or truncated file
    raises :class:`~tailwise.weights.WeightsError` naming it.

    >>> float(reference_metadata()["test_accuracy"]) >= 0.95
    True
    """
    file = reference_checkpoint(progress=False) if path is None else Path(path)
    return read_safetensors_metadata(file)


def reference_model(
    *,
    progress: bool = True,
    retrain: bool = False,
    device: str | torch.device | None = None,
) -> MLP:
    """The reference MLP (64 -> 512 -> 256 -> 128 -> 10, ReLU) with its trained weights.

    Input (N, 64) or (N, 1, 8, 8) digits scaled to [0, 1]; output logits (N, 10). Returned in
    eval mode on ``device`` (default CPU). Trains and caches it on first use, see
    :func:`reference_checkpoint`.

    >>> model = reference_model(progress=False)
    >>> tuple(model(torch.zeros(2, 64)).shape)
    (2, 10)
    """
    path = reference_checkpoint(progress=progress, retrain=retrain)
    found = reference_metadata(path).get("tailwise_reference")
    if found != REFERENCE_NAME:
        raise ValueError(
            f"reference_model: {path} holds reference {found!r}, expected {REFERENCE_NAME!r}; "
            "delete it or call with retrain=True"
        )
    model = _build(RECIPE)
    model.load_state_dict(load_safetensors(path))
    return model.to("cpu" if device is None else device).eval()


def reference_accuracy(model: torch.nn.Module) -> float:
    """Test accuracy of a model of the reference network's shape (e.g. a pruned copy) on the
    digits test split (360 images, flattened to 64 features), as measured at training.

    >>> reference_accuracy(reference_model(progress=False)) >= 0.95
    True
    """
    _, test_loader = digits_loaders(RECIPE.batch_size, seed=RECIPE.seed, flatten=True)
    return evaluate(model, test_loader)[1]
