"""Relaxed variable splitting as optimizer wrappers: RVSM, RVSCGD, RGSM (source 002 ch. 3-4).

RVSM minimizes the relaxed Lagrangian of source 002 eq. 3.9 (REFERENCES §5)

    L_beta(w, u) = f(w) + lambda P(u) + beta/2 ||w - u||^2

by alternating, on every batch (source 002 Algorithm 1),

    w <- w - eta (grad f(w) + beta (w - u)),        u <- prox_{(lambda/beta) P}(w).

``w`` (the model's parameters) is trained; ``u`` is its sparse shadow, deployed at the end
(:meth:`SplittingOptimizer.deploy`). The wrappers add ``beta (w - u)`` to ``w.grad`` and then
call the wrapped optimizer's ``step``, so any torch optimizer works and momentum or Adam's
moments see the coupling term; with plain SGD of learning rate eta the update is exactly
Algorithm 1's. Then ``u`` is recomputed, so after every step ``u == prox(w)``; since
``u^0 = prox(w^0)`` (Algorithm 1's initialization) the order "w then u" gives the same
iterates as Algorithm 1's "u then w".

- :class:`RVSM`: entry-wise penalties l0 (hard threshold), l1 (soft), Tl1 (transformed l1).
- :class:`RVSCGD` (source 002 Algorithm 2): RVSM plus the normalization ``w <- w / ||w||``
  after every step, for coarse-gradient training of the binarized one-layer network (the
  coarse gradient is whatever ``backward`` put in ``w.grad``, e.g. a straight-through
  estimator).
- :class:`RGSM` (source 002 Algorithm 3, §4.1.1): group penalties over channels (group lasso
  or group l0) plus an optional ``lambda2 sum_g ||w_g||`` term added to the loss.

What is kept where: the wrapped optimizer's state (momentum) and ``u`` are both in
:meth:`~SplittingOptimizer.state_dict`, so training resumes exactly across epochs and
checkpoints (source 002's public code re-creates its optimizer every epoch, resetting
momentum). ``param_groups`` *are* the wrapped optimizer's groups: learning-rate schedulers and
:class:`~tailwise.train.LayerwiseLR` work on top of a wrapper as on the optimizer itself.

Which parameters are split: ``params`` is a module (the weights of its Linear and Conv layers,
:func:`splittable_weights`; biases and norms are not split), a dict name -> parameter, an
iterable of ``(name, parameter)`` pairs (``model.named_parameters()``), or of parameters (named
``"0"``, ``"1"``, ...). Every split parameter must be optimized by the wrapped optimizer;
the others are trained by it as usual.
"""

from __future__ import annotations

import enum
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, overload

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.prune.layers import prepare, prunable_layers, refresh_pruned
from tailwise.train.splitting.prox import (
    check_dim,
    check_nonnegative,
    check_positive,
    group_norms,
    prox_group_l0,
    prox_group_l1,
    prox_l0,
    prox_l1,
    prox_tl1,
)

__all__ = [
    "RGSM",
    "RVSCGD",
    "RVSM",
    "GroupPenalty",
    "Penalty",
    "SplittingOptimizer",
    "splittable_weights",
]

ParamsArg = nn.Module | Mapping[str, Tensor] | Iterable[Tensor] | Iterable[tuple[str, Tensor]]


class Penalty(str, enum.Enum):
    """Entry-wise penalty P of :class:`RVSM` / :class:`RVSCGD` (source 002 Table 3.1)."""

    L0 = "l0"
    L1 = "l1"
    TL1 = "tl1"


class GroupPenalty(str, enum.Enum):
    """Group penalty P of :class:`RGSM` (source 002 eqs. 4.2-4.6)."""

    GROUP_L1 = "group_l1"
    GROUP_L0 = "group_l0"


def _parse(enum_type: type[enum.Enum], value: object, where: str, what: str) -> Any:
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        for member in enum_type:
            if member.value == value.lower():
                return member
    allowed = ", ".join(repr(m.value) for m in enum_type)
    raise UsageError(f"{where}: {what} must be one of {allowed}, got {value!r}")


def splittable_weights(
    model: nn.Module,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
) -> dict[str, nn.Parameter]:
    r"""The weights of the Linear and Conv layers of ``model``, by parameter name.

    The default selection of the splitting wrappers (biases and normalization layers are not
    split). ``include`` / ``exclude``: regular expressions searched in each weight's name
    (``"features.0.conv.weight"``), as everywhere in tailwise. A layer pruned with
    ``torch.nn.utils.prune`` gives its trained tensor ``weight_orig``.

    >>> from tailwise.models import MLP
    >>> list(splittable_weights(MLP(8, [16], 4)))
    ['layers.0.weight', 'layers.1.weight']
    >>> list(splittable_weights(MLP(8, [16], 4), exclude=r"layers\.1\."))
    ['layers.0.weight']
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"splittable_weights: expected an nn.Module, got {type(model).__name__}")
    out: dict[str, nn.Parameter] = {}
    for layer, module in prunable_layers(model, include=include, exclude=exclude).items():
        own = dict(module.named_parameters(recurse=False))
        for attr in ("weight_orig", "weight"):
            if attr in own:
                out[f"{layer}.{attr}"] = own[attr]
                break
    return out


def _named_params(params: object, where: str) -> dict[str, Tensor]:
    if isinstance(params, nn.Module):
        named: dict[str, Tensor] = dict(splittable_weights(params))
        if not named:
            raise UsageError(
                f"{where}: the {type(params).__name__} has no Linear or Conv weight to split; "
                "pass the parameters explicitly"
            )
        return named
    if isinstance(params, Tensor):
        raise UsageError(
            f"{where}: params must be a module, a dict name -> parameter or an iterable of "
            "parameters, got a single tensor (wrap it in a list)"
        )
    if isinstance(params, Mapping):
        named = {}
        for key, value in params.items():
            if not isinstance(key, str):
                raise UsageError(f"{where}: params keys must be names (str), got {key!r}")
            named[key] = value
        return named
    if not isinstance(params, Iterable):
        raise UsageError(
            f"{where}: params must be a module, a dict or an iterable of parameters, "
            f"got {type(params).__name__}"
        )
    items = list(params)
    if items and all(
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in items
    ):
        return dict(items)
    return {str(i): item for i, item in enumerate(items)}


def _check_params(
    named: Mapping[str, object], optimizer: torch.optim.Optimizer, where: str
) -> dict[str, Tensor]:
    if not named:
        raise UsageError(f"{where}: params is empty; name at least one parameter to split")
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    seen: dict[int, str] = {}
    for name, p in named.items():
        if not isinstance(p, Tensor):
            raise UsageError(f"{where}: parameter {name!r} is a {type(p).__name__}, not a tensor")
        if not p.is_floating_point():
            raise UsageError(f"{where}: parameter {name!r} must be floating point, got {p.dtype}")
        if not (p.is_leaf and p.requires_grad):
            raise UsageError(f"{where}: parameter {name!r} must be a leaf tensor requiring grad")
        if id(p) in seen:
            raise UsageError(
                f"{where}: parameters {seen[id(p)]!r} and {name!r} are the same tensor"
            )
        seen[id(p)] = name
        if id(p) not in optimized:
            raise UsageError(
                f"{where}: parameter {name!r} is not optimized by the wrapped optimizer; build "
                "the optimizer over every parameter to split"
            )
    return dict(named)  # type: ignore[arg-type]


class SplittingOptimizer(torch.optim.Optimizer):
    """What RVSM, RVSCGD, RGSM and ADMM share: a torch optimizer wrapped around another.

    ``param_groups`` and ``defaults`` are the wrapped optimizer's own; ``state`` holds the
    splitting variables of each split parameter (``u`` for RVSM; ``z``, ``dual``, ``mask``
    for ADMM). A subclass implements :meth:`_before_step` (add the coupling gradient) and
    :meth:`_after_step` (update the splitting variables), and names its hyper-parameters
    in :meth:`_config`.

    Closures: :meth:`step` evaluates a closure once, before the coupling term is added;
    optimizers that evaluate it several times per step (LBFGS) are refused.
    """

    method: ClassVar[str] = ""

    def __init__(self, optimizer: torch.optim.Optimizer, params: ParamsArg, where: str) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(
                f"{where}: optimizer must be a torch.optim.Optimizer, got "
                f"{type(optimizer).__name__}"
            )
        if isinstance(optimizer, SplittingOptimizer):
            raise UsageError(f"{where}: wrap a plain torch optimizer, not a {optimizer.method}")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise UsageError(f"{where}: LBFGS evaluates its closure several times per step")
        named = _check_params(_named_params(params, where), optimizer, where)
        # Optimizer.__init__ sets up the hook registries; the groups are then the wrapped ones.
        super().__init__([{"params": []}], {})
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.names: list[str] = list(named)
        self.split_params: list[Tensor] = list(named.values())
        self.state: defaultdict[Tensor, Any] = defaultdict(dict)

    # -- what a method defines -----------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        """The hyper-parameters, as plain values (checked again by :meth:`load_state_dict`)."""
        raise NotImplementedError

    def _before_step(self) -> None:
        """Add the coupling gradient to each split parameter's ``.grad``."""
        raise NotImplementedError

    def _after_step(self) -> None:
        """Update the splitting variables from the new parameters."""
        raise NotImplementedError

    def _sparse(self, index: int) -> Tensor:
        """The sparse variable of split parameter ``index`` (what :meth:`deploy` writes)."""
        raise NotImplementedError

    def _grads(self) -> Iterator[tuple[Tensor, Tensor]]:
        """``(parameter, its .grad)`` of every split parameter that has a dense gradient."""
        for p in self.split_params:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise UsageError(f"{self.method}: sparse gradients are not supported")
            yield p, p.grad

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        return None

    # -- torch.optim.Optimizer -----------------------------------------------------------------

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step: the coupling term into ``.grad``, the wrapped step, the splitting update.

        Parameters without a gradient (``.grad is None``) are skipped by the wrapped
        optimizer, as torch does; their splitting variables stay as they are. After the step
        ``.grad`` holds the data gradient plus the coupling term.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._before_step()
        self.optimizer.step()
        self._after_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (its parameters are not split)."""
        if "optimizer" not in self.__dict__:  # Optimizer.__init__'s placeholder group
            super().add_param_group(param_group)
            return
        self.optimizer.add_param_group(param_group)

    def _index(self) -> dict[int, int]:
        """id(parameter) -> its index in the wrapped optimizer's state dict (group order)."""
        flat = (p for group in self.optimizer.param_groups for p in group["params"])
        return {id(p): i for i, p in enumerate(flat)}

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict plus the splitting variables and settings.

        ``{"method", "config", "optimizer", "split", "extra"}``; ``split`` maps the index of
        each split parameter (torch's numbering over the wrapped optimizer's groups) to its
        variables. Plain values and tensors only: ``torch.load(weights_only=True)`` reads it.
        As in torch, tensors are references to the live state (copy before training on).
        """
        index = self._index()
        return {
            "method": self.method,
            "config": self._config(),
            "optimizer": self.optimizer.state_dict(),
            "split": {index[id(p)]: dict(self.state[p]) for p in self.split_params},
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a wrapper built the same way (same method,
        hyper-parameters and split parameters); a difference is a UsageError naming it."""
        where = f"{self.method}.load_state_dict"
        missing = {"method", "config", "optimizer", "split"} - set(state_dict)
        if missing:
            raise UsageError(f"{where}: not a {self.method} state dict (missing {sorted(missing)})")
        if state_dict["method"] != self.method:
            raise UsageError(f"{where}: the state dict is of {state_dict['method']!r}")
        saved, current = dict(state_dict["config"]), self._config()
        differ = [key for key in current if saved.get(key) != current[key]]
        if differ:
            shown = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in differ)
            raise UsageError(f"{where}: built with other settings ({shown})")
        index = self._index()
        mine = {index[id(p)]: p for p in self.split_params}
        split = {int(k): v for k, v in state_dict["split"].items()}
        if set(split) != set(mine):
            raise UsageError(
                f"{where}: saved split parameters {sorted(split)} (indices in the optimizer), "
                f"now {sorted(mine)}"
            )
        for i, values in split.items():
            p = mine[i]
            for key, value in values.items():
                if not isinstance(value, Tensor) or value.shape != p.shape:
                    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value)
                    raise UsageError(
                        f"{where}: saved {key!r} of parameter {i} has shape {shape}, the "
                        f"parameter {tuple(p.shape)}"
                    )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        # Optimizer.load_state_dict replaces the wrapped optimizer's group list: follow it.
        self.param_groups = self.optimizer.param_groups
        for i, values in split.items():
            p = mine[i]
            self.state[p] = {
                key: value.to(device=p.device, dtype=value.dtype if key == "mask" else p.dtype)
                for key, value in values.items()
            }
        self._load_extra_state(state_dict.get("extra", {}))

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return (
            f"{self.method}({type(self.optimizer).__name__}, {len(self.split_params)} split "
            f"parameters, {config})"
        )

    # -- results -------------------------------------------------------------------------------

    def sparse_weights(self) -> dict[str, Tensor]:
        """``{name: sparse variable}`` of every split parameter (``u`` for RVSM / RGSM, ``Z``
        for ADMM), detached tensors of the parameters' shapes."""
        return {name: self._sparse(i) for i, name in enumerate(self.names)}

    def deploy(self, model: nn.Module, *, inplace: bool = False) -> nn.Module:
        """``model`` with every split parameter replaced by its sparse variable.

        Returns a deep copy (the default; the training weights ``w`` stay in ``model``, and
        training goes on) or, with ``inplace=True``, ``model`` itself with its parameters
        overwritten (then training would restart from ``u``). Parameters are matched by
        identity: each split parameter must be a parameter of ``model``.
        """
        where = f"{self.method}.deploy"
        if not isinstance(model, nn.Module):
            raise UsageError(f"{where}: expected an nn.Module, got {type(model).__name__}")
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        unknown = [
            n for n, p in zip(self.names, self.split_params, strict=True) if id(p) not in names
        ]
        if unknown:
            raise UsageError(f"{where}: split parameters {unknown} are not parameters of the model")
        target = prepare(model, inplace)
        with torch.no_grad():
            for i, p in enumerate(self.split_params):
                target.get_parameter(names[id(p)]).copy_(self._sparse(i))
        refresh_pruned(target)
        return target


class _RelaxedSplitting(SplittingOptimizer):
    """RVSM and RGSM: a sparse shadow ``u = prox(w)`` coupled to w by ``beta/2 ||w - u||^2``.

    A subclass sets ``beta`` and defines :meth:`prox`, then calls :meth:`_init_u`.
    """

    beta: float

    def prox(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def _init_u(self) -> None:
        with torch.no_grad():
            for p in self.split_params:
                self.state[p]["u"] = self.prox(p.detach())

    def _before_step(self) -> None:
        for p, grad in self._grads():
            grad.add_(p - self.state[p]["u"], alpha=self.beta)

    def _after_step(self) -> None:
        for p in self.split_params:
            self.state[p]["u"] = self.prox(p.detach())

    def _sparse(self, index: int) -> Tensor:
        u: Tensor = self.state[self.split_params[index]]["u"]
        return u


class RVSM(_RelaxedSplitting):
    """Relaxed variable splitting method (source 002 Algorithm 1) around any torch optimizer.

    Per step: ``w.grad += beta (w - u)``, the wrapped optimizer's step, then
    ``u = prox_{(lam/beta) P}(w)`` with P the ``penalty`` (``"l0"``: hard threshold at
    ``sqrt(2 lam / beta)``; ``"l1"``: soft threshold at ``lam / beta``; ``"tl1"``: transformed
    l1 with shape ``a``, :func:`~tailwise.train.splitting.prox_tl1`). Shapes: ``u`` has each
    split parameter's shape. Deploy ``u`` (:meth:`deploy`, :meth:`sparse_weights`).

    Source 002 uses lam = 1e-5 and beta = 1e-2 (Table 3.1, VGG-16) or lam = 1e-6 and
    beta in {0.01, 0.1, 0.5} (Table 4.4); REFERENCES §5 and §7.

    >>> from tailwise.data import digits_loaders
    >>> from tailwise.models import MLP
    >>> from tailwise.train import fit
    >>> model = MLP(64, [32], 10)
    >>> sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> rvsm = RVSM(sgd, model, penalty="l0", lam=1e-4, beta=1e-1)
    >>> train, _ = digits_loaders(flatten=True)
    >>> _ = fit(model, train, epochs=1, optimizer=rvsm, progress=False)
    >>> sparse = rvsm.deploy(model)  # a copy holding u; model keeps w
    >>> bool((sparse.layers[0].weight == 0).any()), bool((model.layers[0].weight == 0).any())
    (True, False)
    """

    method = "RVSM"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: ParamsArg,
        *,
        penalty: Penalty | str = "l0",
        lam: float,
        beta: float,
        a: float = 1.0,
    ) -> None:
        where = type(self).method
        self.penalty: Penalty = _parse(Penalty, penalty, where, "penalty")
        self.lam = check_nonnegative(lam, where, "lam")
        self.beta = check_positive(beta, where, "beta")
        self.a = check_positive(a, where, "a")
        super().__init__(optimizer, params, where)
        self._init_u()

    def prox(self, w: Tensor) -> Tensor:
        """``prox_{(lam/beta) P}(w)``: the u that minimizes L_beta(w, u) for this w."""
        t = self.lam / self.beta
        if self.penalty is Penalty.L0:
            return prox_l0(w, t)
        if self.penalty is Penalty.L1:
            return prox_l1(w, t)
        return prox_tl1(w, t, self.a)

    def _config(self) -> dict[str, Any]:
        return {"penalty": self.penalty.value, "lam": self.lam, "beta": self.beta, "a": self.a}


class RVSCGD(RVSM):
    """RVSM with coarse gradients and normalization (source 002 Algorithm 2).

    Per step: ``w.grad += beta (w - u)``, the wrapped step (plain SGD of rate eta gives
    Algorithm 2's ``w - eta (g + beta (w - u))`` with g the coarse gradient in ``w.grad``),
    then ``w <- w / ||w||`` (each split parameter to unit l2 norm over all its entries) and
    ``u = prox_{(lam/beta) P}(w)``. Made for source 002's binarized one-layer non-overlap
    network (§3.1.2), where the loss is invariant to the scale of w; the default penalty is
    l1 (soft thresholding, Theorem 3.2; l0 and Tl1: Corollary 4). A parameter that reaches
    0 cannot be normalized and raises a UsageError (lower the step size).

    >>> w = nn.Parameter(torch.tensor([3.0, 4.0, 0.01]))
    >>> opt = RVSCGD(torch.optim.SGD([w], lr=0.1), [w], lam=0.01, beta=1.0)
    >>> w.grad = torch.zeros(3)
    >>> opt.step()
    >>> round(float(w.detach().norm()), 6), opt.sparse_weights()["0"][2].item()
    (1.0, 0.0)
    """

    method = "RVSCGD"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: ParamsArg,
        *,
        penalty: Penalty | str = "l1",
        lam: float,
        beta: float,
        a: float = 1.0,
    ) -> None:
        super().__init__(optimizer, params, penalty=penalty, lam=lam, beta=beta, a=a)

    def _after_step(self) -> None:
        for name, p in zip(self.names, self.split_params, strict=True):
            norm = torch.linalg.vector_norm(p)
            if not bool(norm > 0) or not bool(torch.isfinite(norm)):
                raise UsageError(
                    f"{self.method}: parameter {name!r} has norm {float(norm)} after the step and "
                    "cannot be normalized; lower the step size"
                )
            p.div_(norm)
        super()._after_step()


class RGSM(_RelaxedSplitting):
    """Relaxed group-wise splitting method (source 002 Algorithm 3, §4.1.1): channel sparsity.

    Per step: ``w.grad += beta (w - u) + lam2 w_g / ||w_g||`` (the gradient of
    ``beta/2 ||w - u||^2 + lam2 sum_g ||w_g||``; 0 for a zero group), the wrapped step, then
    ``u = prox_{(lam1/beta) P}(w)`` group by group with P the ``penalty``: ``"group_l1"``
    (group lasso, source 002 eq. 4.4) or ``"group_l0"`` (eq. 4.6). Groups are the slices
    ``w.select(dim, g)``; ``dim=0``: output channels of Conv / Linear weights (the norm over
    all other dimensions). Source 002 Tables 4.1-4.5: beta = 1, lam1 in 1e-3 .. 1e-1,
    lam2 = 1e-5 (REFERENCES §7).

    Channels of ``u`` that are exactly zero produce nothing (with no bias and no
    normalization after them); :func:`~tailwise.prune.prune_channels` removes channels
    physically (see the README for the recipe).

    >>> lin = nn.Linear(4, 3, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0.1, 0, 0, 0], [0, 2, 0, 0]]))
    >>> sgd = torch.optim.SGD(lin.parameters(), lr=0.1)
    >>> opt = RGSM(sgd, {"weight": lin.weight}, lam1=0.5, beta=1.0)
    >>> opt.sparse_weights()["weight"]  # group norms 2, 0.1, 2 against t = 0.5
    tensor([[0.7500, 0.7500, 0.7500, 0.7500],
            [0.0000, 0.0000, 0.0000, 0.0000],
            [0.0000, 1.5000, 0.0000, 0.0000]])
    """

    method = "RGSM"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: ParamsArg,
        *,
        penalty: GroupPenalty | str = "group_l1",
        lam1: float,
        beta: float,
        lam2: float = 0.0,
        dim: int = 0,
    ) -> None:
        where = type(self).method
        self.penalty: GroupPenalty = _parse(GroupPenalty, penalty, where, "penalty")
        self.lam1 = check_nonnegative(lam1, where, "lam1")
        self.beta = check_positive(beta, where, "beta")
        self.lam2 = check_nonnegative(lam2, where, "lam2")
        super().__init__(optimizer, params, where)
        for name, p in zip(self.names, self.split_params, strict=True):
            check_dim(p, dim, where, f"parameter {name!r}")
        self.dim = int(dim)
        self._init_u()

    def prox(self, w: Tensor) -> Tensor:
        """``prox_{(lam1/beta) P}(w)`` over the groups along ``dim``."""
        t = self.lam1 / self.beta
        if self.penalty is GroupPenalty.GROUP_L1:
            return prox_group_l1(w, t, self.dim)
        return prox_group_l0(w, t, self.dim)

    def _config(self) -> dict[str, Any]:
        return {
            "penalty": self.penalty.value,
            "lam1": self.lam1,
            "beta": self.beta,
            "lam2": self.lam2,
            "dim": self.dim,
        }

    def _before_step(self) -> None:
        super()._before_step()
        if self.lam2 > 0:
            for p, grad in self._grads():
                norms = group_norms(p, self.dim, where=self.method)
                grad.add_(p / norms.clamp_min(torch.finfo(p.dtype).tiny), alpha=self.lam2)
