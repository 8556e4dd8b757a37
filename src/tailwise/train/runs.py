"""Training runs that survive a kill: a run directory, a metrics log, checkpoints, ``resume``.

:func:`train_run` is what ``tailwise train`` calls: it builds a named model
(:func:`tailwise.models.create_model`) for a named or local data set
(:func:`tailwise.data.resolve_dataset`), trains it with the recipe of source 000 and
TempBalance (SGD, momentum 0.9, weight decay 5e-4, cosine schedule, lr 0.1) through
:func:`tailwise.train.fit`, optionally with layer-wise learning rates
(:class:`tailwise.train.LayerwiseLR`, any mapping of :data:`tailwise.train.LR_MAPPINGS`) and a
Hessian-aware regularizer of source 004 (:data:`REGULARIZER_NAMES`).

A run directory holds

- ``config.json``: the :class:`TrainConfig`;
- ``metrics.jsonl``: one JSON object per completed epoch: ``epoch`` (1-based), ``train_loss``,
  ``train_acc``, ``test_loss``, ``test_acc``, ``lr`` (the base schedule's), ``seconds``, and the
  per-layer ``lrs`` and ``alphas`` (``{layer: value}``; the alphas the learning rates of the
  *next* epoch were allocated from, computed by the same code as :func:`tailwise.analyze`);
  :func:`read_metrics` flattens it into a DataFrame;
- ``last.safetensors`` / ``best.safetensors``: the model after the last epoch and after the
  epoch with the best test accuracy, loadable by :func:`tailwise.load_model`;
- ``state.pt``: everything a resume needs (model, optimizer, schedule and regularizer states,
  the metrics so far), written atomically after every epoch: the commit point of an epoch.

Reproducibility: every epoch reseeds torch's generator and the shuffling (and augmentation)
generator from ``seed`` and the epoch index, so a run killed at any moment and resumed with
``resume=True`` continues from its last completed epoch and ends with the same weights as an
uninterrupted run (on the CPU; CUDA kernels are not bitwise deterministic).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tailwise._errors import UsageError
from tailwise._io import atomic_open, atomic_path
from tailwise._seeds import derive_seed
from tailwise.attacks import parse_attack
from tailwise.data import check_accepts, dataset_info, dataset_loaders
from tailwise.models import MLP, MODEL_NAMES, create_model
from tailwise.prune import save_pruned
from tailwise.train.adversarial import adversarial_batches
from tailwise.train.layerwise import LR_MAPPINGS, LayerwiseLR, layer_param_groups
from tailwise.train.loop import Batches, Callback, evaluate, fit, recalibrate_batch_norm
from tailwise.train.regularizers import (
    L2Stopped,
    L2StoppedSelective,
    Metric,
    Regularizer,
    SelectiveL2,
    fit_regularized,
)
from tailwise.train.splitting import (
    ADMM,
    RGSM,
    RVSM,
    SplittingOptimizer,
    channel_sparsity,
    sparsity,
)

__all__ = [
    "REGULARIZER_NAMES",
    "SCHEDULES",
    "SPARSE_METHODS",
    "FinetuneResult",
    "TrainConfig",
    "TrainRun",
    "accuracy_on",
    "finetune",
    "read_metrics",
    "train_run",
]

#: Base learning-rate schedules: source 000 eq. 2.12 cosine, or steps of 0.1 at 50% and 75%.
SCHEDULES = ("cosine", "step")
#: Regularizers of source 004 Table 4.1 that ``--regularizer`` names.
REGULARIZER_NAMES = ("metric", "selective-l2", "l2-stopped", "l2-stopped-selective")
#: Sparse training of source 002 that ``--sparse`` names: RVSM with a penalty (Algorithm 1),
#: RGSM with a group penalty over output channels (§4.1.1), ADMM (unstructured, or whole
#: channels) with hard pruning at the middle of the run and masked retraining after it.
SPARSE_METHODS = (
    "rvsm-l0",
    "rvsm-l1",
    "rvsm-tl1",
    "rgsm-group_l1",
    "rgsm-group_l0",
    "admm",
    "admm-channel",
)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.pt"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
#: A run's config.json is a few hundred bytes; anything much larger is not one.
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored as the run's ``config.json``.

    ``model``: a name of :data:`tailwise.models.MODEL_NAMES`, built with ``width`` (where the
    architecture has a width multiplier), the data's input channels and classes.
    ``data``: ``"digits"``, ``"mnist1d"`` or a local MNIST / CIFAR folder
    (:func:`tailwise.data.resolve_dataset`). ``augment``: None, ``"standard"`` (random crop
    with 4-pixel padding and horizontal flip) or ``"augmix"``, applied to training images.
    ``layerwise``: a mapping of :data:`tailwise.train.LR_MAPPINGS` or None (every layer gets
    the base schedule's rate; alphas are still recorded). ``regularizer``: a name of
    :data:`REGULARIZER_NAMES` or None, with rate ``reg_lambda``, threshold ``reg_omega`` and
    ``reg_tau`` epochs (004 Table 4.1). ``adversarial``: an attack name
    (:func:`tailwise.attacks.parse_attack`, e.g. ``"pgd10"``, 002's PGD-10 training) with
    radius ``adv_eps`` (step eps / 4): every training batch is replaced by its adversarial
    version (:func:`tailwise.train.adversarial.adversarial_batches`). ``sparse``: a name of
    :data:`SPARSE_METHODS`: ``rvsm-*`` (``sparse_lam``, ``sparse_beta``), ``rgsm-*``
    (``sparse_lam`` = lambda_1, ``sparse_beta``, ``sparse_lam2``), ``admm`` / ``admm-channel``
    (``sparse_ratio``, ``sparse_rho``; one round per epoch, hard pruning after epoch
    ``epochs // 2``); it composes with ``adversarial`` (002 §4.2) and ``layerwise``.
    ``sparse_bn``: re-estimate the deployed sparse model's BatchNorm statistics (one pass over
    the training data, :func:`tailwise.train.recalibrate_batch_norm`) before it is evaluated
    and saved; not part of 002's protocol, off by default.
    """

    model: str = "resnet20"
    data: str = "digits"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    layerwise: str | None = None
    regularizer: str | None = None
    reg_lambda: float = 1e-4
    reg_omega: float = 0.01
    reg_tau: int = 10
    width: float = 1.0
    augment: str | None = None
    seed: int = 0
    adversarial: str | None = None
    adv_eps: float = 8 / 255
    sparse: str | None = None
    sparse_lam: float = 1e-5
    sparse_beta: float = 1e-2
    sparse_lam2: float = 0.0
    sparse_ratio: float = 0.6
    sparse_rho: float = 1e-2
    sparse_bn: bool = False

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("reg_tau", self.reg_tau, 0)
        _check_int("seed", self.seed, 0)
        for name in ("lr", "width"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise UsageError(f"train: {name} must be a number > 0, got {value!r}")
        for name in (
            "momentum",
            "weight_decay",
            "reg_lambda",
            "reg_omega",
            "adv_eps",
            "sparse_lam",
            "sparse_lam2",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"train: {name} must be a number >= 0, got {value!r}")
        if self.momentum >= 1:
            raise UsageError(f"train: momentum must be < 1, got {self.momentum!r}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        if self.layerwise is not None:
            _check_choice("layerwise", self.layerwise, LR_MAPPINGS)
        if self.regularizer is not None:
            _check_choice("regularizer", self.regularizer, REGULARIZER_NAMES)
        if self.augment is not None:
            _check_choice("augment", self.augment, ("standard", "augmix"))
        if self.adversarial is not None:
            parse_attack(self.adversarial, eps=self.adv_eps)  # names the known attacks
        if self.sparse is not None:
            _check_choice("sparse", self.sparse, SPARSE_METHODS)
            if self.regularizer is not None:
                raise UsageError("train: sparse and regularizer both change the step; pick one")
        for name in ("sparse_beta", "sparse_rho"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise UsageError(f"train: {name} must be a number > 0, got {value!r}")
        if not isinstance(self.sparse_bn, bool):
            raise UsageError(f"train: sparse_bn must be true or false, got {self.sparse_bn!r}")
        if self.sparse_bn and self.sparse is None:
            raise UsageError("train: sparse_bn re-estimates a sparse model's BatchNorm: set sparse")
        if not (isinstance(self.sparse_ratio, int | float) and 0 <= self.sparse_ratio < 1):
            raise UsageError(f"train: sparse_ratio must be in [0, 1), got {self.sparse_ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from a dict such as ``config.json``; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"train config: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"train: {name} must be an int >= {low}, got {value!r}")


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"train: {name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class TrainRun:
    """What :func:`train_run` returns.

    ``model``: the trained model (last epoch), on the training device. ``metrics``: one row
    per epoch of the whole run (resumed epochs included), as :func:`read_metrics` gives it.
    ``best_acc`` / ``best_epoch``: the best test accuracy and its 1-based epoch. ``run_dir``:
    where the run lives (None when none was asked for). ``resumed_from``: the number of
    epochs already completed when this call started (0 for a fresh run).
    """

    model: nn.Module
    metrics: pd.DataFrame
    best_acc: float
    best_epoch: int
    run_dir: Path | None
    resumed_from: int = 0


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the model (fine-tuned in place), the per-epoch
    metrics, and the test accuracy before and after fine-tuning."""

    model: nn.Module
    metrics: pd.DataFrame
    accuracy_before: float
    accuracy_after: float


@dataclass
class _State:
    """The resumable part of a run: saved as ``state.pt`` after every epoch."""

    epoch: int = 0
    best_acc: float = -math.inf
    best_epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _regularizer(config: TrainConfig) -> Regularizer | None:
    name, lam, omega, tau = (
        config.regularizer,
        config.reg_lambda,
        config.reg_omega,
        config.reg_tau,
    )
    if name is None:
        return None
    if name == "metric":
        return Metric(lam)
    if name == "selective-l2":
        return SelectiveL2(lam, omega)
    if name == "l2-stopped":
        return L2Stopped(lam, tau)
    return L2StoppedSelective(lam, tau, omega)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"train: device {device!r} is not a torch device ({exc})") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"train: device {device!r}: this torch build or machine has no CUDA")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"train: device {device!r}: train on cpu or cuda")
    return chosen


class _EpochLog(Callback):
    """Reseeds each epoch, times it, and commits its row, state and checkpoints at its end."""

    def __init__(
        self,
        *,
        seed: int,
        loader: DataLoader[Any],
        schedule: _Schedule,
        optimizer: torch.optim.Optimizer,
        regularizer: Regularizer | None,
        state: _State,
        run_dir: Path | None,
        architecture: Mapping[str, Any] | None,
        test_loader: Batches | None = None,
        prune_after: int = 0,
        recalibrate: bool = False,
    ) -> None:
        self.seed = seed
        self.recalibrate = recalibrate
        self.test_loader = test_loader
        self.prune_after = prune_after
        self.loader = loader
        self.schedule = schedule
        self.optimizer = optimizer
        self.regularizer = regularizer
        self.state = state
        self.run_dir = run_dir
        self.architecture = architecture
        self._started = 0.0

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        torch.manual_seed(derive_seed(self.seed, f"epoch {epoch}"))
        set_epoch = getattr(self.loader, "set_epoch", None)
        if set_epoch is not None:  # shuffling and augmentation are functions of (seed, epoch)
            set_epoch(epoch)
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        seconds = time.perf_counter() - self._started
        lr, lrs = self.schedule.base_lr, self.schedule.layer_lrs  # the rates of this epoch
        self.schedule.step()  # alphas of the weights now: the next epoch's rates
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": metrics["train_loss"],
            "train_acc": metrics["train_acc"],
            "test_loss": metrics.get("val_loss", math.nan),
            "test_acc": metrics.get("val_acc", math.nan),
            "lr": lr,
            "seconds": seconds,
            "lrs": lrs,
            "alphas": dict(self.schedule.alphas),
        }
        deployed = self._sparse_model(epoch, model, row)
        state = self.state
        state.epoch = epoch + 1
        state.rows.append(row)
        improved = row["test_acc"] > state.best_acc
        if improved:
            state.best_acc, state.best_epoch = float(row["test_acc"]), epoch + 1
        if self.run_dir is not None:
            self._commit(model, improved, deployed)

    def _sparse_model(self, epoch: int, model: nn.Module, row: dict[str, Any]) -> nn.Module:
        """For sparse training: the model to deploy (RVSM / RGSM: a copy holding u; ADMM: the
        model itself, hard-pruned after epoch ``prune_after``), its test loss and accuracy
        in the row (the training weights' in ``dense_test_*``) and its ``sparsity``."""
        optimizer = self.optimizer
        if not isinstance(optimizer, SplittingOptimizer):
            return model
        if isinstance(optimizer, ADMM):
            if not optimizer.pruned and epoch + 1 >= self.prune_after:
                optimizer.hard_prune(model)
            deployed = model if optimizer.pruned else optimizer.deploy(model)
        else:
            deployed = optimizer.deploy(model)
        if self.recalibrate:
            recalibrate_batch_norm(deployed, self.loader)
        row["dense_test_loss"], row["dense_test_acc"] = row["test_loss"], row["test_acc"]
        if self.test_loader is not None:
            row["test_loss"], row["test_acc"] = evaluate(deployed, self.test_loader)
        row["sparsity"] = float(sparsity(deployed)["sparsity"].iloc[-1])
        row["channel_sparsity"] = float(channel_sparsity(deployed)["channel_sparsity"].iloc[-1])
        return deployed

    def _commit(self, model: nn.Module, improved: bool, deployed: nn.Module) -> None:
        assert self.run_dir is not None
        state = self.state
        payload = {
            "epoch": state.epoch,
            "best_acc": state.best_acc,
            "best_epoch": state.best_epoch,
            "rows_json": json.dumps(state.rows),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "regularizer": None if self.regularizer is None else self.regularizer.state_dict(),
        }
        metadata = {"epoch": str(state.epoch), "test_acc": repr(state.rows[-1]["test_acc"])}
        for name in (LAST_FILE, BEST_FILE) if improved else (LAST_FILE,):
            save_pruned(
                deployed, self.run_dir / name, architecture=self.architecture, metadata=metadata
            )
        with atomic_path(self.run_dir / STATE_FILE) as tmp:  # the epoch's commit point
            torch.save(payload, tmp)
        _write_metrics(self.run_dir, state.rows)


def _write_metrics(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with atomic_open(run_dir / METRICS_FILE) as handle:
        for row in rows:
            handle.write(json.dumps(row, allow_nan=True) + "\n")


def read_metrics(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A run's metrics log as a DataFrame: one row per epoch.

    ``source``: a run directory, its ``metrics.jsonl``, or the rows themselves. The nested
    per-layer values become columns ``lr[<layer>]`` and ``alpha[<layer>]``.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            path = path / METRICS_FILE
        if not path.is_file():
            raise UsageError(f"read_metrics: no metrics log at {path}")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = [dict(row) for row in source]
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in ("lrs", "alphas")}
        out.update({f"lr[{k}]": v for k, v in (row.get("lrs") or {}).items()})
        out.update({f"alpha[{k}]": v for k, v in (row.get("alphas") or {}).items()})
        flat.append(out)
    return pd.DataFrame(flat)


def _loaders(config: TrainConfig) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Train loader (shuffled and augmented as a function of (seed, epoch)) and test loader."""
    return dataset_loaders(
        config.data,
        config.batch_size,
        seed=config.seed,
        augment=config.augment,
        test_batch_size=max(config.batch_size, 256),
    )


def _build_model(config: TrainConfig) -> nn.Module:
    """``config.model`` for the inputs and classes of ``config.data``, checked on one batch."""
    info = dataset_info(config.data)
    shape = tuple(info.input_shape)
    name = config.model.strip().lower()
    if name not in MODEL_NAMES:
        raise UsageError(f"train: unknown model {config.model!r}; known: {list(MODEL_NAMES)}")
    if len(shape) == 1:  # signals (MNIST-1D): only a fully connected network takes them
        if name != "mlp":
            raise UsageError(
                f"train: {info.name} gives vectors of {shape[0]} values; only 'mlp' takes "
                f"them, not {config.model!r}"
            )
        if config.width != 1:
            raise UsageError("train: mlp has no width multiplier")
        model: nn.Module = MLP(shape[0], (512, 256, 128), info.num_classes)
    else:
        options: dict[str, Any] = {}
        if name in ("mlp", "smallcnn", "fcn4", "fcn6"):
            options["image_size"] = shape[-1]
        model = create_model(
            name,
            num_classes=info.num_classes,
            in_channels=info.in_channels,
            width=config.width,
            **options,
        )
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(2, *shape))
            model.train(was_training)
    except (RuntimeError, ValueError) as error:
        raise UsageError(
            f"train: model {config.model!r} cannot take the {info.name} inputs of shape "
            f"{shape}: {error}"
        ) from error
    return model


class _BaseOnly:
    """The base schedule alone, for a model with no layer to allocate to (no layer-wise lr
    asked for): the interface of :class:`LayerwiseLR` that the run log uses."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler
        self.alphas: dict[str, float] = {}
        self.layer_lrs: dict[str, float] = {}

    @property
    def base_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def step(self) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"base_only": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "base_only" not in state:
            raise UsageError("train: the saved schedule is layer-wise; this run's is not")
        self.scheduler.load_state_dict(state["base_only"])


_Schedule = LayerwiseLR | _BaseOnly


def _sparse_optimizer(
    sgd: torch.optim.Optimizer, model: nn.Module, config: TrainConfig, batches_per_epoch: int
) -> torch.optim.Optimizer:
    """``sgd`` wrapped by the splitting method ``config.sparse`` names (or ``sgd`` itself).

    The split parameters are the weights of the model's Linear / Conv layers (the wrappers'
    default); the wrapper shares ``sgd``'s param groups, so the schedules act on it alike.
    """
    method = config.sparse
    if method is None:
        return sgd
    kind, _, penalty = method.partition("-")
    if kind == "rvsm":
        return RVSM(sgd, model, penalty=penalty, lam=config.sparse_lam, beta=config.sparse_beta)
    if kind == "rgsm":
        return RGSM(
            sgd,
            model,
            penalty=penalty,
            lam1=config.sparse_lam,
            beta=config.sparse_beta,
            lam2=config.sparse_lam2,
        )
    return ADMM(
        sgd,
        model,
        sparsity=config.sparse_ratio,
        rho=config.sparse_rho,
        update_every=max(1, batches_per_epoch),
        structured=penalty == "channel",
    )


def _optimizer_and_schedule(
    model: nn.Module, config: TrainConfig, steps: int, example: Tensor, batches_per_epoch: int
) -> tuple[torch.optim.Optimizer, _Schedule]:
    """SGD over :func:`layer_param_groups` and the :class:`LayerwiseLR` that drives it.

    Without ``config.layerwise`` every layer keeps the base rate (mapping ``"tb"`` with
    s = (1, 1)), so the alphas are still measured and logged. The base schedule is source
    000's cosine over ``steps`` epochs or ``"step"``: x0.1 at 50% and 75% of them.
    ``example``: a batch of inputs, to trace which norm follows which layer.
    """
    groups = layer_param_groups(model, config.lr, example_input=example)
    has_layers = any(group["layer"] != "rest" for group in groups)
    if not has_layers and config.layerwise:
        raise UsageError(
            f"layer-wise lr ({config.layerwise}): the model has no layer besides its first "
            "and last whose ESD has 50 eigenvalues or more; there is nothing to allocate"
        )
    sgd = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    optimizer = _sparse_optimizer(sgd, model, config, batches_per_epoch)
    base: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.schedule == "step":
        milestones = sorted({max(1, steps // 2), max(1, (3 * steps) // 4)})
        base = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    if not has_layers:
        if base is None:
            base = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return optimizer, _BaseOnly(base)
    mapping, s = (config.layerwise, (0.5, 1.5)) if config.layerwise else ("tb", (1.0, 1.0))
    schedule = LayerwiseLR(
        optimizer,
        model,
        mapping=mapping,
        total_steps=steps,
        base="cosine" if base is None else base,
        s=s,
        seed=config.seed,
    )
    return optimizer, schedule


def _example(loader: DataLoader[Any], model: nn.Module) -> Tensor:
    """Two inputs of ``loader``'s first batch, on the model's device."""
    inputs = next(iter(loader))[0][:2]
    parameter = next(model.parameters(), None)
    return inputs if parameter is None else inputs.to(parameter.device)


def _load_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a state file tailwise did not write, or a damaged one
        raise UsageError(f"{path}: not a readable tailwise run state ({exc})") from exc
    return state


def _stored_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise UsageError(f"{path}: {path.stat().st_size} bytes is not a run config")
        values = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: not a readable run config ({type(exc).__name__})") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a run config is a JSON object")
    return values


def _run_config(
    run_dir: Path | None, config: TrainConfig | Mapping[str, Any] | None, resume: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's config and the saved state to resume from (None for a fresh run)."""
    given = dict(config.to_dict() if isinstance(config, TrainConfig) else (config or {}))
    if run_dir is None:
        if resume:
            raise UsageError("train: resume needs the run directory (out=..., --out)")
        return TrainConfig.from_dict(given), None
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"train: {run_dir} is a file; a run is written to a folder")
    blocked = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UsageError(f"train: cannot create the run folder {run_dir}: {blocked} is a file")
    stored = _stored_config(run_dir)
    state = _load_state(run_dir)
    if not resume:
        if state is not None or stored is not None:
            raise UsageError(
                f"train: {run_dir} already holds a run; resume it (resume=True, --resume) or "
                "choose another folder"
            )
        return TrainConfig.from_dict(given), None
    if stored is None:
        return TrainConfig.from_dict(given), None  # nothing was started there yet
    merged = TrainConfig.from_dict({**stored, **given})
    differing = sorted(k for k, v in given.items() if stored.get(k) != v)
    if differing:
        shown = ", ".join(f"{k}: {stored.get(k)!r} -> {given[k]!r}" for k in differing)
        raise UsageError(
            f"train: cannot resume {run_dir} with different settings ({shown}); "
            "leave them out to continue the stored run"
        )
    return merged, state


def train_run(
    config: TrainConfig | Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainRun:
    """Train a named model on a named or local data set; write a run directory to ``out``.

    Args:
        config: a :class:`TrainConfig`, or a dict of its fields (the others take their
            defaults; when resuming, the fields given must agree with the stored run).
        out: the run directory (created; see the module doc for what it holds). None trains
            without writing anything.
        resume: continue the run in ``out`` from its last completed epoch. A folder without
            a completed epoch starts afresh; a run that already finished returns at once.
            Without ``resume``, a folder that holds a run is an error (nothing is overwritten).
        device: where to train; default CUDA when available, else the CPU.
        progress: show the training progress bar (stderr, terminal only).

    Returns:
        A :class:`TrainRun` with the trained model and the whole run's metrics.

    >>> run = train_run({"model": "mlp", "data": "digits", "epochs": 2, "batch_size": 64,
    ...                  "layerwise": "tb"}, progress=False)
    >>> list(run.metrics["epoch"]), run.best_epoch in (1, 2)
    ([1, 2], True)
    """
    run_dir = None if out is None else Path(out)
    cfg, saved = _run_config(run_dir, config, resume)
    target = _device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = _build_model(cfg).to(target)
    describe = getattr(model, "architecture", None)
    architecture = describe() if callable(describe) else None
    train_loader, test_loader = _loaders(cfg)
    regularizer = _regularizer(cfg)
    optimizer, schedule = _optimizer_and_schedule(
        model, cfg, cfg.epochs, _example(test_loader, model), len(train_loader)
    )
    state = _State()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        if isinstance(optimizer, ADMM) and optimizer.pruned:  # the masks the run had put on
            optimizer.pruned = False
            optimizer.hard_prune(model)
        model.load_state_dict(saved["model"])
        schedule.load_state_dict(saved["schedule"])
        if regularizer is not None and saved.get("regularizer") is not None:
            regularizer.load_state_dict(saved["regularizer"])
        state = _State(
            int(saved["epoch"]),
            float(saved["best_acc"]),
            int(saved["best_epoch"]),
            json.loads(saved["rows_json"]),
        )
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"train: cannot create the run folder {run_dir}: {exc.strerror}"
            ) from None
        with atomic_open(run_dir / CONFIG_FILE) as handle:
            json.dump(cfg.to_dict(), handle, indent=2)
    resumed_from = state.epoch
    log = _EpochLog(
        seed=cfg.seed,
        loader=train_loader,
        schedule=schedule,
        optimizer=optimizer,
        regularizer=regularizer,
        state=state,
        run_dir=run_dir,
        architecture=architecture,
        test_loader=test_loader,
        prune_after=max(1, cfg.epochs // 2),
        recalibrate=cfg.sparse_bn,
    )
    batches: Batches = train_loader
    if cfg.adversarial is not None:  # random starts from torch's RNG, reseeded every epoch
        attack = parse_attack(cfg.adversarial, eps=cfg.adv_eps)
        batches = adversarial_batches(train_loader, model, attack)
    _fit(model, batches, test_loader, cfg, optimizer, regularizer, log, state.epoch, progress)
    return TrainRun(
        model,
        read_metrics(state.rows),
        state.best_acc,
        state.best_epoch,
        run_dir,
        resumed_from,
    )


def _fit(
    model: nn.Module,
    train_loader: Batches,
    test_loader: Batches,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    regularizer: Regularizer | None,
    log: _EpochLog,
    initial_epoch: int,
    progress: bool,
) -> None:
    """The one loop (:func:`fit`, or :func:`fit_regularized` with a regularizer)."""
    if initial_epoch >= config.epochs:
        return
    options: dict[str, Any] = {
        "epochs": config.epochs,
        "optimizer": optimizer,
        "val_loader": test_loader,
        "callbacks": [log],
        "progress": progress,
        "initial_epoch": initial_epoch,
    }
    with torch.random.fork_rng(devices=[]):  # the caller's global torch RNG is left alone
        if regularizer is None:
            fit(model, train_loader, **options)
        else:
            fit_regularized(model, train_loader, regularizer, **options)


def finetune(
    model: nn.Module,
    data: str,
    *,
    epochs: int,
    lr: float = 0.01,
    layerwise: str | None = None,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``data`` (source 000 §3.3-3.4: after pruning).

    SGD with ``momentum`` and ``weight_decay`` on a cosine schedule from ``lr`` over
    ``epochs``; with ``layerwise`` (a mapping of :data:`tailwise.train.LR_MAPPINGS`) the
    learning rates are allocated per layer from the alphas of the current weights, recomputed
    every epoch (000 §3.3: uniform pruning + layer-wise LR; §3.4 with alpha-allocated ratios).
    Prune masks (``torch.nn.utils.prune``) stay in force: pruned weights stay zero.
    ``data``: as :attr:`TrainConfig.data`; the model must take its examples (vectors for an
    MLP). Returns the metrics (columns as :func:`read_metrics`) and the test accuracy before
    and after.

    >>> from tailwise.models import MLP
    >>> result = finetune(MLP(64, [32], 10), "digits", epochs=1, progress=False)
    >>> result.accuracy_after > result.accuracy_before
    True
    """
    config = TrainConfig(
        model="finetune",
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        layerwise=layerwise,
        seed=seed,
    )
    if device is not None:
        model.to(device)
    train_loader, test_loader = _loaders(config)
    check_accepts(model, [next(iter(test_loader))], str(data))
    _, before = evaluate(model, test_loader)
    optimizer, schedule = _optimizer_and_schedule(
        model, config, epochs, _example(test_loader, model), len(train_loader)
    )
    state = _State()
    log = _EpochLog(
        seed=seed,
        loader=train_loader,
        schedule=schedule,
        optimizer=optimizer,
        regularizer=None,
        state=state,
        run_dir=None,
        architecture=None,
    )
    _fit(model, train_loader, test_loader, config, optimizer, None, log, 0, progress)
    after = float(state.rows[-1]["test_acc"]) if state.rows else before
    return FinetuneResult(model, read_metrics(state.rows), before, after)


def accuracy_on(
    model: nn.Module,
    data: str | os.PathLike[str],
    *,
    split: str = "test",
    batch_size: int = 256,
) -> float:
    """Accuracy of ``model`` on the ``split`` of ``data`` (as :attr:`TrainConfig.data`).

    The model runs in eval mode on its own device (its modes are restored); every example
    counts once. A model that does not take the data's inputs raises
    :class:`~tailwise.UsageError` naming the shapes.

    >>> from tailwise.reference import reference_model
    >>> accuracy_on(reference_model(progress=False), "digits") > 0.9
    True
    """
    train, test = dataset_loaders(data, batch_size)
    loader = {"train": train, "test": test}.get(split)
    if loader is None:
        raise UsageError(f"accuracy_on: split must be 'train' or 'test', got {split!r}")
    check_accepts(model, [next(iter(test))], str(data))
    return evaluate(model, loader)[1]
