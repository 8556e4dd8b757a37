"""A small, honest training loop: ``fit`` and ``evaluate`` with callbacks and a progress bar.

Extension points, so that training-time algorithms never need their own loop:

- ``callbacks``: objects with ``on_epoch_start`` / ``on_batch_end`` / ``on_epoch_end`` hooks
  (subclass :class:`Callback` and override any subset). Layer-wise learning-rate schedules
  such as TempBalance hold the optimizer themselves, like ``torch.optim.lr_scheduler``.
- ``loss_terms``: callables ``model -> scalar Tensor`` added to every batch's loss
  (regularizers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._modules import model_device
from tailwise._progress import progress_task
from tailwise._seeds import seeded
from tailwise._threads import torch_work

LossFn = Callable[[Tensor, Tensor], Tensor]
LossTerm = Callable[[nn.Module], Tensor]
Batches = Iterable[Sequence[Tensor]]


class Callback:
    """Hooks called by :func:`fit`; every hook does nothing unless overridden.

    Order within an epoch: ``on_epoch_start`` once, ``on_batch_end`` after each optimizer
    step, ``on_epoch_end`` once after validation. With several callbacks, each hook is
    called on them in the order they were given.
    """

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Before the first batch of ``epoch`` (0-based); ``model`` is in train mode."""

    def on_batch_end(self, step: int, model: nn.Module, loss: Tensor) -> None:
        """After the optimizer step of global batch ``step`` (0-based, counted across epochs).

        ``loss`` is the detached scalar that was minimized: the data loss plus every
        ``loss_terms`` value, on the training device.
        """

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        """After ``epoch`` (0-based) and its validation.

        ``metrics`` holds ``train_loss`` and ``train_acc``, and ``val_loss`` and ``val_acc``
        when :func:`fit` has a ``val_loader``: the values appended to :class:`History`.
        """


@dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run, one entry per epoch.

    ``train_loss`` / ``train_acc``: mean data loss (without ``loss_terms``) and accuracy over
    the epoch's training batches, measured on the fly in train mode while the weights
    change. ``val_loss`` / ``val_acc``: :func:`evaluate` on ``val_loader`` after the epoch;
    empty without one. ``dataclasses.asdict(history)`` gives a dict for a DataFrame.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (moving the model there), else the model's own device."""
    if device is None:
        return model_device(model)
    target = torch.device(device)
    model.to(target)
    return target


def _unpack(batch: Sequence[Tensor], device: torch.device, where: str) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, Sequence) or len(batch) != 2:
        kind = type(batch).__name__
        size = f" of length {len(batch)}" if isinstance(batch, Sequence) else ""
        raise TypeError(f"{where}: each batch must be a pair (inputs, targets), got a {kind}{size}")
    inputs, targets = batch
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _count_correct(outputs: Tensor, targets: Tensor) -> Tensor:
    """Number of rows of ``outputs`` (N, C) whose argmax is the target class.

    Targets are class indices (N,) or class probabilities (N, C) (their argmax counts).
    """
    if targets.ndim == outputs.ndim:
        targets = targets.argmax(dim=1)
    return (outputs.argmax(dim=1) == targets).sum()


class _EpochMeter:
    """Sample-weighted mean loss and accuracy over batches, with one device sync per epoch."""

    def __init__(self) -> None:
        self._losses: list[Tensor] = []
        self._correct: list[Tensor] = []
        self._sizes: list[int] = []

    def update(self, loss: Tensor, outputs: Tensor, targets: Tensor) -> None:
        self._losses.append(loss.detach())
        self._correct.append(_count_correct(outputs.detach(), targets))
        self._sizes.append(int(targets.shape[0]))

    def compute(self, where: str) -> tuple[float, float]:
        """(mean loss weighted by batch size, accuracy); sums in float64 on the CPU."""
        if not self._sizes:
            raise ValueError(f"{where}: the loader yielded no batches")
        sizes = torch.tensor(self._sizes, dtype=torch.float64)
        # Stacked on the device, then moved as one tensor: float64 is not available everywhere.
        losses = torch.stack(self._losses).cpu().to(torch.float64)
        correct = torch.stack(self._correct).cpu().to(torch.float64)
        total = sizes.sum()
        return float((losses * sizes).sum() / total), float(correct.sum() / total)


def _check_fit_args(
    epochs: int, lr: float, momentum: float, weight_decay: float, seed: int | None
) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be an int >= 0, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"fit: lr must be > 0, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"fit: momentum must be in [0, 1), got {momentum!r}")
    if not weight_decay >= 0:
        raise ValueError(f"fit: weight_decay must be >= 0, got {weight_decay!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"fit: seed must be an int or None, got {seed!r}")


def evaluate(
    model: nn.Module,
    loader: Batches,
    *,
    loss_fn: LossFn | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over every batch of ``loader``, without gradients.

    The loss is ``loss_fn`` (default cross-entropy, which must average over its batch) weighted
    by batch size, so unequal batches give exactly the full-data mean. Accuracy is the fraction
    of samples whose argmax logit is the target class. Batches are ``(inputs, targets)`` with
    ``targets`` class indices (B,) or class probabilities (B, C).

    Threads: :func:`evaluate` and :func:`fit` run under the torch-work policy of
    ``tailwise._threads`` (torch keeps its threads, NumPy/SciPy BLAS gets one;
    ``TAILWISE_THREADS`` overrides).

    Runs in eval mode and restores the model's previous mode. ``device``: where to run (the
    model is moved there); default the device of the model's parameters.

    >>> from tailwise.data import digits_loaders
    >>> from tailwise.models import MLP
    >>> _, test = digits_loaders(flatten=True)
    >>> loss, acc = evaluate(MLP(64, [32], 10), test)
    >>> 0.0 <= acc <= 1.0
    True
    """
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    target_device = _resolve_device(model, device)
    was_training = model.training
    model.eval()
    meter = _EpochMeter()
    try:
        with torch_work(), torch.no_grad():
            for batch in loader:
                inputs, targets = _unpack(batch, target_device, "evaluate")
                outputs = model(inputs)
                meter.update(loss_fn(outputs, targets), outputs, targets)
    finally:
        model.train(was_training)
    return meter.compute("evaluate")


def recalibrate_batch_norm(
    model: nn.Module,
    loader: Batches,
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> int:
    """Recompute every BatchNorm's running statistics for the weights ``model`` has now.

    What a sparse model deployed from RVSM / RGSM needs (source 002 keeps the statistics
    gathered on the training weights w, whose activations differ from the deployed u's): the
    statistics are reset and re-estimated as a plain average (momentum None) over the inputs
    of ``loader`` (up to ``max_batches`` batches), in one pass without gradients. Only the
    BatchNorm layers run in training mode during the pass (dropout and the noise of stochastic
    layers stay as in eval mode); every module's mode and each BatchNorm's momentum are
    restored. Returns the number of BatchNorm layers recalibrated (0: nothing to do).

    >>> from tailwise.models import SmallCNN
    >>> net = SmallCNN(channels=(4,))
    >>> recalibrate_batch_norm(net, [(torch.randn(16, 1, 8, 8), torch.zeros(16))])
    1
    >>> float(net.features[0].bn.num_batches_tracked)
    1.0
    """
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(
            f"recalibrate_batch_norm: max_batches must be an int >= 1, got {max_batches!r}"
        )
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m for m in norms if m.track_running_stats]
    if not tracked:
        return 0
    target_device = _resolve_device(model, device)
    modes = {module: module.training for module in model.modules()}
    momenta = {module: module.momentum for module in tracked}
    try:
        model.eval()
        for module in tracked:
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the pass
            module.train()
        with torch_work(), torch.no_grad():
            for index, batch in enumerate(loader):
                if max_batches is not None and index >= max_batches:
                    break
                inputs, _ = _unpack(batch, target_device, "recalibrate_batch_norm")
                model(inputs)
    finally:
        for any_module, training in modes.items():
            any_module.training = training
        for norm, momentum in momenta.items():
            norm.momentum = momentum
    return len(tracked)


def fit(
    model: nn.Module,
    train_loader: Batches,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    loss_fn: LossFn | None = None,
    val_loader: Batches | None = None,
    callbacks: Sequence[Callback] = (),
    loss_terms: Sequence[LossTerm] = (),
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int | None = None,
    initial_epoch: int = 0,
) -> History:
    """Train ``model`` in place for ``epochs`` passes over ``train_loader``; return its History.

    Each batch ``(inputs, targets)`` is moved to ``device`` and minimizes
    ``loss_fn(model(inputs), targets) + sum(term(model) for term in loss_terms)``.

    Args:
        model: trained in place; moved to ``device`` if one is given.
        train_loader: re-iterable of ``(inputs, targets)`` batches (e.g. a DataLoader).
        epochs: number of passes over ``train_loader`` (0 trains nothing).
        optimizer: any torch optimizer over the model's parameters. Default: SGD with
            ``lr``, ``momentum`` and ``weight_decay``, which are ignored when one is given.
        loss_fn: ``(outputs, targets) -> scalar`` averaging over its batch; default
            cross-entropy on logits (N, C) and class indices (N,).
        val_loader: if given, :func:`evaluate` runs on it after every epoch.
        callbacks: :class:`Callback` objects, called in order (see there for when).
        loss_terms: callables ``model -> scalar Tensor`` added to every batch's loss
            (regularizers); they are part of ``loss`` in ``on_batch_end`` but not of
            ``History.train_loss``.
        device: where to train; default the device of the model's parameters.
        progress: show a transient rich progress bar on stderr (never when stderr is not
            a terminal).
        seed: if given, the run (default optimizer, shuffling by loaders without their own
            generator, dropout) uses torch RNG streams seeded with it, and the global RNG
            state is restored afterwards. The model's initialization is not affected: seed
            before building the model. A loader with its own generator (``digits_loaders``)
            is reproducible when rebuilt with the same seed.
        initial_epoch: the 0-based index of the first epoch to run, for resuming: epochs
            ``initial_epoch .. epochs - 1`` run, callbacks and the progress bar see those
            indices, and the History holds only them. ``epochs`` is the run's total.

    >>> from tailwise.data import digits_loaders
    >>> from tailwise.models import MLP
    >>> train, test = digits_loaders(flatten=True)
    >>> history = fit(MLP(64, [64], 10), train, epochs=2, val_loader=test, progress=False)
    >>> history.epochs, len(history.val_acc)
    (2, 2)
    """
    _check_fit_args(epochs, lr, momentum, weight_decay, seed)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int):
        raise ValueError(f"fit: initial_epoch must be an int, got {initial_epoch!r}")
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(f"fit: initial_epoch must be in [0, epochs={epochs}], got {initial_epoch}")
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    callbacks = tuple(callbacks)
    loss_terms = tuple(loss_terms)
    target_device = _resolve_device(model, device)
    if optimizer is None:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    batches_per_epoch = _length(train_loader)
    remaining = epochs - initial_epoch
    total = None if batches_per_epoch is None else remaining * batches_per_epoch
    history = History()
    step = 0 if batches_per_epoch is None else initial_epoch * batches_per_epoch
    with (
        torch_work(),
        seeded(seed, target_device),
        progress_task("training", total, progress) as advance,
    ):
        for epoch in range(initial_epoch, epochs):
            model.train()
            advance(0, description=f"epoch {epoch + 1}/{epochs}")
            for callback in callbacks:
                callback.on_epoch_start(epoch, model)
            meter = _EpochMeter()
            for batch in train_loader:
                inputs, targets = _unpack(batch, target_device, "fit")
                optimizer.zero_grad(set_to_none=True)
                outputs = model(inputs)
                data_loss = loss_fn(outputs, targets)
                loss = data_loss
                for term in loss_terms:
                    loss = loss + term(model)
                loss.backward()
                optimizer.step()
                meter.update(data_loss, outputs, targets)
                detached = loss.detach()
                for callback in callbacks:
                    callback.on_batch_end(step, model, detached)
                step += 1
                advance()
            metrics = _epoch_metrics(meter, model, val_loader, loss_fn, target_device)
            _record(history, metrics)
            advance(0, description=_describe(epoch, epochs, metrics))
            for callback in callbacks:
                callback.on_epoch_end(epoch, model, dict(metrics))
    return history


def _length(loader: Batches) -> int | None:
    """Batches per epoch if the loader knows it (a DataLoader over an iterable may not)."""
    if not isinstance(loader, Sized):
        return None
    try:
        return len(loader)
    except TypeError:
        return None


def _epoch_metrics(
    meter: _EpochMeter,
    model: nn.Module,
    val_loader: Batches | None,
    loss_fn: LossFn,
    device: torch.device,
) -> dict[str, float]:
    train_loss, train_acc = meter.compute("fit")
    metrics = {"train_loss": train_loss, "train_acc": train_acc}
    if val_loader is not None:
        val_loss, val_acc = evaluate(model, val_loader, loss_fn=loss_fn, device=device)
        metrics.update(val_loss=val_loss, val_acc=val_acc)
    return metrics


def _record(history: History, metrics: Mapping[str, float]) -> None:
    for name, value in metrics.items():
        values: list[float] = getattr(history, name)
        values.append(value)


def _describe(epoch: int, epochs: int, metrics: Mapping[str, Any]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {metrics['train_loss']:.4f}"]
    if "val_acc" in metrics:
        parts.append(f"val acc {metrics['val_acc']:.3f}")
    return "  ".join(parts)
