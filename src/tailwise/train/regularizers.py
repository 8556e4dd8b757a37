"""Hessian-aware regularizers of source 004 (Table 4.1) that plug into any optimizer step.

With theta the parameter vector, H the Hessian of the data loss on the current batch, alpha
the learning rate and lambda the regularization rate, 004 Table 4.1 writes every rule as

    theta_(t+1) = theta_(t) - alpha grad L(X, theta_(t)) - lambda * term(theta_(t))

with ``term`` = 0 (SGD), theta (L2), theta^T H (Metric), theta masked where
|theta^T H| < omega max |theta^T H| (Selective L2), theta for t < tau (L2 Stopped), and theta
for t < tau then Selective L2 (L2 Stopped Selective). theta^T H = (H theta)^T costs one
Hessian-vector product with v = theta held constant (004 §3.8, §4.3), computed by
:func:`tailwise.hessian.hvp` on the data loss only (no regularizer in it).

004 §4.3 replaces the Fisher information by "the absolute value of the Expected Hessian", and
§4.4 counts tau in epochs ("standard L2 regularization for the first tau epochs of training").

How an update plugs in (see :meth:`Regularizer.apply`): after ``loss.backward()`` and before
``optimizer.step()``. By default the term is *decoupled* as in Table 4.1: theta is moved by
``-lambda * term`` directly, so lambda is not scaled by the learning rate and 004's Table 4.2
rates apply as printed. With ``decoupled=False`` the term is added to ``p.grad`` instead
(lambda then acts through the optimizer, like ``weight_decay``). For plain SGD the decoupled
form gives exactly Table 4.1's update.

Three ways to train with a regularizer:

- :func:`fit_regularized`: :func:`tailwise.train.fit` with the regularizer applied at every
  step (through an optimizer step pre-hook and a loader that records the current batch);
- :func:`regularized_step`: one step of a hand-written loop;
- :meth:`Regularizer.apply` directly, between ``backward`` and ``step``.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._modules import as_args, model_device
from tailwise._threads import torch_work
from tailwise.hessian.hvp import HVPFallback, HVPMethod, hvp
from tailwise.train.loop import Batches, Callback, History, LossTerm, fit

__all__ = [
    "L2",
    "TABLE_4_2",
    "Hyperparameters",
    "L2Stopped",
    "L2StoppedSelective",
    "Metric",
    "Regularizer",
    "RegularizerStats",
    "SelectiveL2",
    "TimeUnit",
    "fit_regularized",
    "regularized_step",
    "selection_mask",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
Inputs = Tensor | tuple[Any, ...]


class TimeUnit(str, enum.Enum):
    """What the time t of Table 4.1 counts in :func:`fit_regularized` (004: epochs)."""

    EPOCH = "epoch"
    STEP = "step"


@dataclass(frozen=True)
class RegularizerStats:
    """Counters of a regularizer since construction (or the last ``load_state_dict``).

    ``steps``: calls of :meth:`Regularizer.apply`. ``hvp_count``: Hessian-vector products
    computed (one per step for the Hessian-based rules, none for the L2 phases).
    ``selected_fraction``: fraction of parameter entries whose update term was nonzero at the
    last step (1 for L2 and Metric, the selected share for Selective L2, 0 for plain SGD).
    ``mean_selected_fraction``: the same averaged over all steps (nan before the first).
    """

    steps: int
    hvp_count: int
    selected_fraction: float
    mean_selected_fraction: float


def _check_rate(where: str, name: str, value: float) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_tau(where: str, tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
        raise ValueError(f"{where}: tau must be an int >= 0, got {tau!r}")
    return tau


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def selection_mask(theta_h: Tensor, omega: float) -> Tensor:
    """Entries that Selective L2 regularizes: |theta^T H| < omega * max |theta^T H| (004 T. 4.1).

    ``theta_h``: theta^T H restricted to one parameter tensor, any shape; the max is over that
    tensor (004 §4.3: "evaluated individually for each parameter but the max is taken per
    layer"; here per parameter tensor, so a layer's weight and bias each have their own max).
    Returns a bool tensor of the same shape. The comparison is strict, so an all-zero
    ``theta_h`` selects nothing.

    >>> selection_mask(torch.tensor([0.5, -4.0, 1.0, 0.0]), 0.25).tolist()
    [True, False, False, True]
    """
    magnitude = theta_h.abs()
    return magnitude < omega * magnitude.max()


class Regularizer(abc.ABC):
    """Base of the learning rules of 004 Table 4.1: one per-parameter term per step.

    Subclasses override :meth:`terms`, which returns ``lambda * term`` (004 Table 4.1) for the
    parameters that get one; :meth:`apply` turns it into an update and keeps statistics.
    ``decoupled``: move the parameters by ``-terms`` (Table 4.1, default) or add ``terms`` to
    their ``.grad``. ``hvp_method``: how theta^T H is computed
    (:class:`tailwise.hessian.HVPMethod`); where forward-over-reverse fails (e.g. for
    ``mse_loss``), each regularizer warns once and computes its later products by double
    backward (its own :class:`tailwise.hessian.HVPFallback`). The products leave the model's
    buffers (BatchNorm statistics) as they were (:func:`tailwise.hessian.restored_buffers`).

    Like ``torch.optim`` objects, a regularizer has ``state_dict`` / ``load_state_dict`` (its
    counters; hyper-parameters are constructor arguments).
    """

    def __init__(
        self,
        *,
        decoupled: bool = True,
        hvp_method: HVPMethod | str = HVPMethod.FORWARD_OVER_REVERSE,
    ) -> None:
        self.decoupled = bool(decoupled)
        try:
            self.hvp_method = HVPMethod(hvp_method)
        except ValueError:
            allowed = [m.value for m in HVPMethod]
            raise UsageError(
                f"{type(self).__name__}: hvp_method must be one of {allowed}, got {hvp_method!r}"
            ) from None
        self._fallback = HVPFallback()
        self._steps = 0
        self._hvp_count = 0
        self._last_fraction = math.nan
        self._fraction_sum = 0.0

    @abc.abstractmethod
    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """``lambda * term`` of 004 Table 4.1 at time ``t``, per parameter name.

        Evaluated at the current parameters on the batch ``(inputs, targets)``; each value has
        its parameter's shape, is detached, and is zero where the rule leaves the entry
        alone. Parameters without a term may be absent. Nothing is modified.
        """

    def apply(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """Apply this step's update; call after ``loss.backward()``, before ``optimizer.step()``.

        ``t``: the time of Table 4.1 (epoch or step, as the caller counts; 004 counts epochs).
        Decoupled: ``p -= terms[name]`` on the entries where the term is nonzero (other
        entries keep their bits). Coupled: ``p.grad += terms[name]`` likewise (a missing
        ``.grad`` becomes the term). Returns the terms.
        """
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{type(self).__name__}.apply: t must be an int >= 0, got {t!r}")
        with torch_work():  # HVPs in torch; BLAS gets one thread (tailwise._threads)
            terms = self.terms(model, loss_fn, inputs, targets, t)
        parameters = _trainable(model)
        unknown = [name for name in terms if name not in parameters]
        if unknown:
            raise ValueError(f"{type(self).__name__}: terms for unknown parameters {unknown}")
        with torch.no_grad():
            for name, term in terms.items():
                parameter = parameters[name]
                touched = term != 0
                if self.decoupled:
                    parameter.copy_(torch.where(touched, parameter - term, parameter))
                elif parameter.grad is None:
                    parameter.grad = term.clone()
                else:
                    parameter.grad.copy_(
                        torch.where(touched, parameter.grad + term, parameter.grad)
                    )
        self._record(terms, parameters)
        return terms

    def _record(self, terms: Mapping[str, Tensor], parameters: Mapping[str, Tensor]) -> None:
        total = sum(p.numel() for p in parameters.values())
        counts = [torch.count_nonzero(term) for term in terms.values()]
        selected = int(torch.stack(counts).sum()) if counts else 0  # one device sync
        fraction = selected / total if total else 0.0
        self._steps += 1
        self._last_fraction = fraction
        self._fraction_sum += fraction

    def theta_hessian(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor
    ) -> dict[str, Tensor]:
        """theta^T H per parameter (= H theta, H symmetric): one HVP with theta detached."""
        theta = {name: p.detach() for name, p in _trainable(model).items()}
        self._hvp_count += 1
        return hvp(
            model,
            loss_fn,
            inputs,
            targets,
            theta,
            hvp_method=self.hvp_method,
            fallback=self._fallback,
        )

    @property
    def stats(self) -> RegularizerStats:
        """The counters as a :class:`RegularizerStats`."""
        mean = self._fraction_sum / self._steps if self._steps else math.nan
        return RegularizerStats(self._steps, self._hvp_count, self._last_fraction, mean)

    def state_dict(self) -> dict[str, float | int]:
        """The counters, to resume statistics with :meth:`load_state_dict`."""
        return {
            "steps": self._steps,
            "hvp_count": self._hvp_count,
            "selected_fraction": self._last_fraction,
            "selected_fraction_sum": self._fraction_sum,
        }

    def load_state_dict(self, state: Mapping[str, float | int]) -> None:
        """Restore counters saved by :meth:`state_dict`."""
        self._steps = int(state["steps"])
        self._hvp_count = int(state["hvp_count"])
        self._last_fraction = float(state["selected_fraction"])
        self._fraction_sum = float(state["selected_fraction_sum"])

    def _options(self) -> str:
        return ""

    def __repr__(self) -> str:
        coupling = "" if self.decoupled else ", decoupled=False"
        return f"{type(self).__name__}({self._options()}{coupling})"


def _l2_terms(model: nn.Module, lam: float) -> dict[str, Tensor]:
    return {name: lam * p.detach() for name, p in _trainable(model).items()}


class L2(Regularizer):
    """L2 of 004 Table 4.1: term = lambda theta at every step (004 Table 4.2 "L2 Reg Rate").

    >>> model = nn.Linear(2, 1)
    >>> x, y = torch.zeros(1, 2), torch.zeros(1, 1)
    >>> terms = L2(0.1).terms(model, nn.functional.mse_loss, x, y, t=0)
    >>> bool(torch.equal(terms["weight"], 0.1 * model.weight.detach()))
    True
    """

    def __init__(self, lam: float, *, decoupled: bool = True) -> None:
        super().__init__(decoupled=decoupled)
        self.lam = _check_rate("L2", "lam", lam)

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """lambda * theta for every trainable parameter (the batch is not used)."""
        return _l2_terms(model, self.lam)

    def _options(self) -> str:
        return f"lam={self.lam}"


class Metric(Regularizer):
    """Metric regularization of 004 Table 4.1: term = lambda theta^T |H| (one HVP per step).

    004 writes the rule with theta^T I(theta) (Fisher information), replaced in practice by the
    Expected Hessian on the batch, "and we use the absolute value of the Expected Hessian in our
    regularizers" (004 §4.3), computed through a Hessian-vector product in all cases. The
    matrix absolute value |H| (Dauphin et al. 2014) is not reachable with one HVP, so the
    absolute value is taken of the product: with ``absolute=True`` (default),

        term_i = lambda * sign(theta_i) * |(H theta)_i|,

    a shrinkage whose size per entry is |theta^T H|, the quantity Selective L2 thresholds: the
    entries that matter most to the loss are pulled hardest towards 0. ``absolute=False`` gives
    the literal Table 4.1 term lambda (H theta)_i, which can push away from 0 where H is not
    positive definite. This reading of "absolute value" is ours; 004 does not spell it out.
    """

    def __init__(
        self,
        lam: float,
        *,
        absolute: bool = True,
        decoupled: bool = True,
        hvp_method: HVPMethod | str = HVPMethod.FORWARD_OVER_REVERSE,
    ) -> None:
        super().__init__(decoupled=decoupled, hvp_method=hvp_method)
        self.lam = _check_rate("Metric", "lam", lam)
        self.absolute = bool(absolute)

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """lambda sign(theta) |H theta| (or lambda H theta), per parameter."""
        theta_h = self.theta_hessian(model, loss_fn, inputs, targets)
        if not self.absolute:
            return {name: self.lam * value for name, value in theta_h.items()}
        parameters = _trainable(model)
        return {
            name: self.lam * torch.sign(parameters[name].detach()) * value.abs()
            for name, value in theta_h.items()
        }

    def _options(self) -> str:
        return f"lam={self.lam}" + ("" if self.absolute else ", absolute=False")


def _selective_terms(
    model: nn.Module, theta_h: Mapping[str, Tensor], lam: float, omega: float
) -> dict[str, Tensor]:
    parameters = _trainable(model)
    return {
        name: torch.where(selection_mask(value, omega), lam * parameters[name].detach(), 0.0)
        for name, value in theta_h.items()
    }


def _check_omega(where: str, omega: float) -> float:
    return _check_rate(where, "omega", omega)


class SelectiveL2(Regularizer):
    """Selective L2 of 004 Table 4.1: L2 only where |theta^T H| < omega max |theta^T H|.

    term_i = lambda theta_i where :func:`selection_mask` holds (the max per parameter tensor),
    0 elsewhere; one HVP per step. Only the parameters that matter little to the training
    loss are shrunk (004 §4.3: "only the parameters that are not useful for fitting the
    training data are regularized"). 004 Table 4.2 "Selective L2 Reg Rate" and omega, e.g.
    lambda = 0.1, omega = 0.1 for XOR with Tanh.
    """

    def __init__(
        self,
        lam: float,
        omega: float,
        *,
        decoupled: bool = True,
        hvp_method: HVPMethod | str = HVPMethod.FORWARD_OVER_REVERSE,
    ) -> None:
        super().__init__(decoupled=decoupled, hvp_method=hvp_method)
        self.lam = _check_rate("SelectiveL2", "lam", lam)
        self.omega = _check_omega("SelectiveL2", omega)

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """lambda theta on the selected entries, 0 on the others."""
        theta_h = self.theta_hessian(model, loss_fn, inputs, targets)
        return _selective_terms(model, theta_h, self.lam, self.omega)

    def _options(self) -> str:
        return f"lam={self.lam}, omega={self.omega}"


class L2Stopped(Regularizer):
    """L2 Stopped of 004 Table 4.1: term = lambda theta for t < tau, nothing for t >= tau.

    004 §4.3 counts t in epochs ("standard L2 regularization for the first tau epochs of
    training and then switch to using SGD"); :func:`fit_regularized` passes the epoch by
    default. 004 Table 4.2: tau = 280 epochs for XOR, 500 for XORD, 600 for the synthetic data.
    No HVP is ever computed.
    """

    def __init__(self, lam: float, tau: int, *, decoupled: bool = True) -> None:
        super().__init__(decoupled=decoupled)
        self.lam = _check_rate("L2Stopped", "lam", lam)
        self.tau = _check_tau("L2Stopped", tau)

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """lambda theta while t < tau, else no term."""
        return _l2_terms(model, self.lam) if t < self.tau else {}

    def _options(self) -> str:
        return f"lam={self.lam}, tau={self.tau}"


class L2StoppedSelective(Regularizer):
    """L2 Stopped Selective of 004 Table 4.1: L2 for t < tau, then Selective L2.

    For t < tau: term = lambda theta (no HVP). For t >= tau: :class:`SelectiveL2` with rate
    ``selective_lam`` (default ``lam``) and threshold ``omega``. Table 4.1 writes one lambda
    for both phases while Table 4.2 lists separate "L2 Reg Rate" and "Selective L2 Reg Rate",
    hence the optional second rate. Table 4.1 leaves t = tau open (t < tau, t > tau); here the
    selective phase starts at t = tau, where L2 Stopped also stops. t counts epochs in 004.
    """

    def __init__(
        self,
        lam: float,
        tau: int,
        omega: float,
        *,
        selective_lam: float | None = None,
        decoupled: bool = True,
        hvp_method: HVPMethod | str = HVPMethod.FORWARD_OVER_REVERSE,
    ) -> None:
        super().__init__(decoupled=decoupled, hvp_method=hvp_method)
        where = "L2StoppedSelective"
        self.lam = _check_rate(where, "lam", lam)
        self.tau = _check_tau(where, tau)
        self.omega = _check_omega(where, omega)
        self.selective_lam = (
            self.lam
            if selective_lam is None
            else _check_rate(where, "selective_lam", selective_lam)
        )

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        """lambda theta while t < tau; then selective_lam theta on the selected entries."""
        if t < self.tau:
            return _l2_terms(model, self.lam)
        theta_h = self.theta_hessian(model, loss_fn, inputs, targets)
        return _selective_terms(model, theta_h, self.selective_lam, self.omega)

    def _options(self) -> str:
        extra = "" if self.selective_lam == self.lam else f", selective_lam={self.selective_lam}"
        return f"lam={self.lam}, tau={self.tau}, omega={self.omega}{extra}"


def regularized_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    regularizer: Regularizer,
    t: int,
) -> Tensor:
    """One training step of 004 Table 4.1 for a hand-written loop; returns the detached loss.

    ``zero_grad``, ``loss = loss_fn(model(*inputs), targets)``, ``backward``,
    ``regularizer.apply(..., t)``, ``optimizer.step()``. ``t``: the rule's time (004: the
    epoch index).

    >>> model = nn.Linear(2, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    >>> loss = regularized_step(model, optimizer, nn.functional.cross_entropy, x, y, L2(0.01), 0)
    >>> loss.ndim
    0
    """
    args = as_args(inputs)
    with torch_work():  # torch does the work; BLAS gets one thread (tailwise._threads)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(*args), targets)
        loss.backward()
        regularizer.apply(model, loss_fn, inputs, targets, t)
        optimizer.step()
    return loss.detach()


class _RecordingLoader:
    """Yields the batches of ``loader`` unchanged and remembers the one last yielded."""

    def __init__(self, loader: Batches) -> None:
        self.loader = loader
        self.current: Sequence[Tensor] | None = None

    def __iter__(self) -> Iterator[Sequence[Tensor]]:
        for batch in self.loader:
            self.current = batch
            yield batch

    def __len__(self) -> int:
        if not isinstance(self.loader, Sized):
            raise TypeError("the wrapped loader has no length")
        return len(self.loader)


class _Clock(Callback):
    """Knows the epoch of the running :func:`fit` (its ``on_epoch_start`` hook)."""

    def __init__(self) -> None:
        self.epoch = 0

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self.epoch = epoch


def fit_regularized(
    model: nn.Module,
    train_loader: Batches,
    regularizer: Regularizer,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 0.1,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_fn: LossFn | None = None,
    time_unit: TimeUnit | str = TimeUnit.EPOCH,
    val_loader: Batches | None = None,
    callbacks: Sequence[Callback] = (),
    loss_terms: Sequence[LossTerm] = (),
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int | None = None,
    initial_epoch: int = 0,
) -> History:
    """:func:`tailwise.train.fit` with ``regularizer`` applied between backward and step.

    Every optimizer step first calls ``regularizer.apply(model, loss_fn, inputs, targets, t)``
    on the batch being trained on, with t the 0-based epoch (``time_unit="epoch"``, 004's
    unit for tau) or the 0-based global step (``"step"``). It works through an optimizer step
    pre-hook (removed on return) and a wrapper of ``train_loader`` that records the current
    batch, so :func:`fit` itself is unchanged; the batch is moved to the model's device.
    The step count continues from ``regularizer.stats.steps``, so a regularizer restored with
    ``load_state_dict`` and ``initial_epoch`` resume a run where it stopped.

    Arguments are :func:`fit`'s, except that the default optimizer is plain SGD
    (``momentum=0``, as in 004) over the model's parameters, and ``loss_fn`` (default
    cross-entropy) is also the loss whose Hessian the regularizer uses. Returns the History.

    >>> from tailwise.data.synthetic import xor_dataset
    >>> X, y = xor_dataset()
    >>> model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> reg = SelectiveL2(lam=0.01, omega=0.1)
    >>> history = fit_regularized(model, [(X, y)], reg, epochs=3, lr=0.1, progress=False)
    >>> reg.stats.steps, reg.stats.hvp_count
    (3, 3)
    """
    unit = TimeUnit(time_unit)
    loss = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    if device is not None:
        model.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    recorder = _RecordingLoader(train_loader)
    clock = _Clock()
    steps = regularizer.stats.steps

    def before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        nonlocal steps
        if recorder.current is None:
            raise RuntimeError("fit_regularized: optimizer.step() before any batch was loaded")
        inputs, targets = recorder.current
        target_device = model_device(model)
        t = clock.epoch if unit is TimeUnit.EPOCH else steps
        regularizer.apply(model, loss, inputs.to(target_device), targets.to(target_device), t)
        steps += 1

    handle = optimizer.register_step_pre_hook(before_step)
    try:
        return fit(
            model,
            recorder,
            epochs=epochs,
            optimizer=optimizer,
            lr=lr,
            loss_fn=loss,
            val_loader=val_loader,
            callbacks=(clock, *callbacks),
            loss_terms=loss_terms,
            device=device,
            progress=progress,
            seed=seed,
            initial_epoch=initial_epoch,
        )
    finally:
        handle.remove()


@dataclass(frozen=True)
class Hyperparameters:
    """One column of 004 Table 4.2 (learning rates, regularization rates, tau, omega).

    ``lr_small`` / ``lr_large``: SGD learning rates for the small / large initialisation
    regimes (:data:`tailwise.models.init.REGIMES` holds the init values). ``metric_lam``,
    ``l2_lam``, ``selective_lam``: the rates lambda of Metric, L2 (also L2 Stopped and the
    first phase of L2 Stopped Selective) and Selective L2. ``tau`` in epochs; ``omega`` the
    Selective L2 threshold.
    """

    lr_small: float
    lr_large: float
    metric_lam: float
    l2_lam: float
    selective_lam: float
    tau: int
    omega: float


TABLE_4_2: Mapping[tuple[str, str], Hyperparameters] = MappingProxyType(
    {
        ("xor", "tanh"): Hyperparameters(0.12, 0.0015, 0.008, 0.001, 0.1, 280, 0.1),
        ("xor", "relu"): Hyperparameters(0.12, 0.002, 1e-4, 0.001, 0.1, 280, 0.05),
        ("xord", "tanh"): Hyperparameters(0.02, 0.02, 1e-4, 1e-5, 0.001, 500, 0.01),
        ("xord", "relu"): Hyperparameters(0.05, 0.002, 0.001, 1e-4, 0.001, 500, 0.1),
        ("mnist", "tanh"): Hyperparameters(0.001, 0.001, 1e-4, 1e-5, 0.001, 280, 0.001),
        ("mnist", "relu"): Hyperparameters(0.001, 0.001, 1e-4, 1e-5, 1e-5, 280, 0.01),
        ("synthetic", "tanh"): Hyperparameters(0.0002, 1e-4, 5e-4, 1e-4, 0.1, 600, 0.0005),
        ("synthetic", "relu"): Hyperparameters(0.0002, 6e-5, 2e-6, 1e-5, 0.001, 600, 0.005),
        ("cifar10", "tanh"): Hyperparameters(0.005, 0.005, 1e-5, 1e-5, 5e-5, 490, 0.02),
        ("cifar10", "relu"): Hyperparameters(0.005, 0.005, 1e-5, 1e-5, 5e-5, 490, 0.02),
    }
)
"""004 Table 4.2 by (experiment, activation), e.g. ``TABLE_4_2["xor", "tanh"].omega == 0.1``."""
