"""ADMM pruning, the baseline source 002 compares RVSM / RGSM with (§3.1.4, Tables 3.2, 4.7).

The "empirical" ADMM of DNN pruning (source 002 §3.5, after Zhang et al. 2018; REFERENCES §5)
trains W on the squared augmented Lagrangian

    f(W) + rho/2 ||W - Z + U||^2,        Z in S (at most k nonzeros, or k whole channels),

with W updated by the wrapped optimizer (the penalty's gradient ``rho (W - Z + U)`` is added
to ``W.grad``, outside the autograd graph), and once per round of ``update_every`` steps

    Z <- Pi_S(W + U),        U <- U + W - Z,

where Pi_S keeps the ``numel - floor(sparsity numel)`` entries of largest magnitude |W + U|
(or, ``structured=True``, the ``C - floor(sparsity C)`` output channels of largest l2 norm).
Finally :meth:`ADMM.hard_prune` masks W to the support of Z with ``torch.nn.utils.prune``
masks (``weight_orig`` / ``weight_mask``, as :mod:`tailwise.prune` does) and the wrapper
turns into the plain wrapped optimizer for masked retraining: the masks hold through any
further :func:`~tailwise.train.fit`.

Known defects of public ports this avoids (REFERENCES §9): the unsquared norm
``rho/2 ||W - Z + U||``, percentiles of *signed* weights instead of magnitudes, the dual
update applied several times per round, and a Parameter added into U (an autograd graph).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.prune.layers import prunable_layers
from tailwise.prune.report import make_report
from tailwise.prune.runner import apply_masks
from tailwise.train.splitting.prox import check_positive, group_norms
from tailwise.train.splitting.rvsm import ParamsArg, SplittingOptimizer

__all__ = ["ADMM", "keep_mask"]


def _removed(sparsity: float, total: int) -> int:
    """floor(sparsity * total), forgiving rounding (0.7 * 10 -> 7, not 6)."""
    return min(total, math.floor(sparsity * total * (1 + 1e-12)))


def keep_mask(v: Tensor, sparsity: float, *, structured: bool = False) -> Tensor:
    """Boolean mask (``v``'s shape) of the projection onto the sparse set: what Pi_S keeps.

    Unstructured: the ``numel - floor(sparsity numel)`` entries of largest |v| (ties broken by
    position, so exactly that many). Structured: the ``C - floor(sparsity C)`` slices
    ``v[c]`` (output channels, dim 0) of largest l2 norm. ``Z = v * keep_mask(v, s)``.

    >>> keep_mask(torch.tensor([0.5, -3.0, 1.0, -0.1]), 0.5)
    tensor([False,  True,  True, False])
    """
    where = "keep_mask"
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise UsageError(f"{where}: v must be a floating-point tensor")
    sparsity = _check_sparsity(sparsity, where)
    if structured:
        if v.ndim == 0:
            raise UsageError(f"{where}: structured projection needs a tensor with channels")
        scores = group_norms(v.detach(), 0, where=where).flatten()
    else:
        scores = v.detach().abs().flatten()
    drop = _removed(sparsity, scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=v.device)
    if drop > 0:
        order = torch.sort(scores.to(torch.float64), stable=True).indices
        keep[order[:drop]] = False
    if structured:
        return keep.reshape(-1, *([1] * (v.ndim - 1))).expand_as(v).clone()
    return keep.reshape(v.shape)


def _check_sparsity(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{where}: sparsity must be a number in [0, 1), got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number < 1.0):
        raise UsageError(f"{where}: sparsity must be in [0, 1), got {value!r}")
    return number


class ADMM(SplittingOptimizer):
    """ADMM pruning around any torch optimizer (source 002 §3.1.4, eq. 3.11; REFERENCES §5).

    Per step, until :meth:`hard_prune`: ``W.grad += rho (W - Z + U)``, the wrapped step; after
    every ``update_every`` steps (one round, source 002 trains W ~1 epoch per round)
    ``Z = W + U`` projected on ``sparsity`` (:func:`keep_mask`) and ``U += W - Z``.
    Initially ``Z = Pi_S(W)``, ``U = 0``. ``sparsity``: the share of each split parameter's
    entries (``structured=True``: of its output channels) that Z zeroes, in [0, 1); source
    002 Table 3.2 uses 0.6 with rho = 1e-2.

    :meth:`hard_prune` then masks the model in place and later steps are the wrapped
    optimizer's alone (masked retraining). :meth:`sparse_weights` / :meth:`deploy` give Z.

    >>> from tailwise.models import MLP
    >>> model = MLP(8, [16], 4)
    >>> sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> admm = ADMM(sgd, model, sparsity=0.75, rho=1e-2, update_every=10)
    >>> report = admm.hard_prune(model)
    >>> float((model.layers[0].weight == 0).float().mean())
    0.75
    >>> list(report["achieved"])
    [0.75, 0.75]
    """

    method = "ADMM"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: ParamsArg,
        *,
        sparsity: float,
        rho: float,
        update_every: int,
        structured: bool = False,
    ) -> None:
        where = type(self).method
        self.sparsity = _check_sparsity(sparsity, where)
        self.rho = check_positive(rho, where, "rho")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise UsageError(f"{where}: update_every must be an int >= 1, got {update_every!r}")
        self.update_every = update_every
        if not isinstance(structured, bool):
            raise UsageError(f"{where}: structured must be True or False, got {structured!r}")
        self.structured = structured
        super().__init__(optimizer, params, where)
        if structured:
            for name, p in zip(self.names, self.split_params, strict=True):
                if p.ndim < 1:
                    raise UsageError(f"{where}: parameter {name!r} has no channels (a scalar)")
        self.steps = 0
        self.pruned = False
        with torch.no_grad():
            for p in self.split_params:
                mask = keep_mask(p, self.sparsity, structured=structured)
                self.state[p].update(z=p.detach() * mask, dual=torch.zeros_like(p), mask=mask)

    def _config(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,
            "rho": self.rho,
            "update_every": self.update_every,
            "structured": self.structured,
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "pruned": self.pruned}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self.steps = int(extra.get("steps", 0))
        self.pruned = bool(extra.get("pruned", False))

    def _before_step(self) -> None:
        if self.pruned:
            return
        for p, grad in self._grads():
            state = self.state[p]
            grad.add_(p - state["z"] + state["dual"], alpha=self.rho)

    def _after_step(self) -> None:
        if self.pruned:
            return
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.update_round()

    @torch.no_grad()
    def update_round(self) -> None:
        """The once-per-round update: ``Z = Pi_S(W + U)``, then ``U += W - Z``.

        :meth:`step` calls it after every ``update_every`` steps; call it directly to end a
        round early.
        """
        for p in self.split_params:
            state = self.state[p]
            target = p.detach() + state["dual"]
            mask = keep_mask(target, self.sparsity, structured=self.structured)
            state["mask"] = mask
            state["z"] = target * mask
            state["dual"] = state["dual"] + p.detach() - state["z"]

    def _sparse(self, index: int) -> Tensor:
        z: Tensor = self.state[self.split_params[index]]["z"]
        return z

    def hard_prune(self, model: nn.Module) -> pd.DataFrame:
        """Mask ``model``'s split weights to the support of Z, in place; return the report.

        In place (unlike ``tailwise.prune``'s functions) because this optimizer goes on
        training the same tensors: each split parameter must be the weight of a Linear or
        Conv layer of ``model``; it becomes ``weight_orig`` with a ``weight_mask`` (the kept
        entries of the last projection, exactly ``floor(sparsity numel)`` zeros per weight)
        through :func:`tailwise.prune.runner.apply_masks`. From now on :meth:`step` is the
        wrapped optimizer's alone; the masks hold through further training (make them
        permanent with ``torch.nn.utils.prune.remove``). Returns the pruning report
        (:data:`tailwise.prune.report.REPORT_COLUMNS`, one row per pruned layer).
        """
        where = f"{self.method}.hard_prune"
        if not isinstance(model, nn.Module):
            raise UsageError(f"{where}: expected an nn.Module, got {type(model).__name__}")
        if self.pruned:
            raise UsageError(f"{where}: already pruned; the masks are on the model")
        layers = prunable_layers(model)
        owner = {
            id(weight): name
            for name, module in layers.items()
            for attr, weight in module.named_parameters(recurse=False)
            if attr == "weight"
        }
        chosen: dict[str, nn.Module] = {}
        masks: dict[str, Tensor] = {}
        for name, p in zip(self.names, self.split_params, strict=True):
            layer = owner.get(id(p))
            if layer is None:
                raise UsageError(
                    f"{where}: split parameter {name!r} is not the weight of a Linear or Conv "
                    "layer of the model (or that layer is already pruned)"
                )
            chosen[layer] = layers[layer]
            masks[layer] = self.state[p]["mask"]
        rows = apply_masks(
            model,
            chosen,
            masks,
            method="admm",
            ratios=dict.fromkeys(chosen, self.sparsity),
            notes=dict.fromkeys(chosen, "whole output channels" if self.structured else ""),
        )
        self.pruned = True
        return make_report(rows)
