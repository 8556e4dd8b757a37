"""Hessian-vector products of a model's loss on one batch, without forming the Hessian.

H v = d/d eps grad L(theta + eps v) at eps = 0 (REFERENCES §6). Two ways to compute it:

- ``"forward-over-reverse"`` (default): ``torch.func.jvp`` of ``torch.func.grad`` of the loss
  as a function of the parameters; one forward-mode pass over the backward graph.
- ``"double-backward"``: ``autograd.grad(grad(L) . v)``, building the gradient with
  ``create_graph=True``; the classic Pearlmutter trick, and what PyHessian does.

Both cost a small constant times one gradient and O(number of parameters) memory.
"""

from __future__ import annotations

import enum
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

__all__ = ["HVPMethod", "hvp", "named_parameters"]

LossFn = Callable[[Tensor, Tensor], Tensor]


class HVPMethod(str, enum.Enum):
    """How a Hessian-vector product is computed."""

    FORWARD_OVER_REVERSE = "forward-over-reverse"
    DOUBLE_BACKWARD = "double-backward"


def named_parameters(model: nn.Module, params: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The parameters the Hessian is taken over, by name, in ``model.named_parameters`` order.

    ``params``: names to keep (a layer's Hessian block, e.g. ``["layers.0.weight"]``);
    default every parameter with ``requires_grad``. Unknown names raise ``ValueError``.

    >>> list(named_parameters(nn.Linear(3, 2)))
    ['weight', 'bias']
    """
    found = dict(model.named_parameters())
    if params is None:
        return {name: p for name, p in found.items() if p.requires_grad}
    if isinstance(params, str):
        raise TypeError(f"params must be a sequence of names, got the string {params!r}")
    unknown = [name for name in params if name not in found]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown}; the model has {list(found)}")
    wanted = set(params)
    return {name: p for name, p in found.items() if name in wanted}


def _as_args(inputs: Tensor | tuple[Any, ...]) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    *,
    params: Sequence[str] | None = None,
    method: HVPMethod | str = HVPMethod.FORWARD_OVER_REVERSE,
) -> dict[str, Tensor]:
    """H v for the loss ``loss_fn(model(*inputs), targets)`` on one batch.

    ``vectors``: one tensor per parameter of :func:`named_parameters` ``(model, params)``, of
    the same shapes; parameters outside ``params`` are held fixed (so the result is the
    ``params`` block of the Hessian times v). Returns H v with the same keys and shapes,
    detached. Buffers (BatchNorm statistics) are used as they are and left unchanged (a
    train-mode BatchNorm's running statistics are restored); the model's train/eval mode is
    the caller's choice.

    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 1, bias=False)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> v = {"weight": torch.ones(1, 3)}
    >>> hv = hvp(model, nn.functional.mse_loss, x, y, v)["weight"]
    >>> bool(torch.allclose(hv, (2 / 8) * (x.T @ x).sum(1)[None], atol=1e-5))  # H = 2 X^T X / n
    True
    """
    method = HVPMethod(method)
    # A product must not change the model: train-mode BatchNorm would update its running
    # statistics in the forward pass, so they are restored afterwards.
    buffers = [b for b in model.buffers() if b.is_floating_point() or b.dtype == torch.long]
    saved = [b.detach().clone() for b in buffers]
    try:
        return _product(model, loss_fn, inputs, targets, vectors, params, method)
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


def _product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    params: Sequence[str] | None,
    method: HVPMethod,
) -> dict[str, Tensor]:
    failed = _NO_FORWARD_AD.setdefault(model, set())
    try:
        attempt: tuple[bool, object] = (model.training, loss_fn)
        hash(attempt)
    except TypeError:  # an unhashable loss callable: remember it by identity
        attempt = (model.training, id(loss_fn))
    if method is HVPMethod.FORWARD_OVER_REVERSE and attempt not in failed:
        try:
            return _forward_over_reverse(model, loss_fn, inputs, targets, vectors, params)
        except (RuntimeError, NotImplementedError) as exc:
            # Remembered per model, mode and loss, so later products skip the failing attempt.
            failed.add(attempt)
            # Forward-mode AD lacks formulas for some ops, and torch 2.13 fails on mse_loss
            # ("ZeroTensors are immutable"): the double-backward product is the same number.
            key = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(
                    f"forward-over-reverse HVP failed ({key}); using double backward",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _double_backward(model, loss_fn, inputs, targets, vectors, params)


_WARNED: set[str] = set()
_NO_FORWARD_AD: weakref.WeakKeyDictionary[nn.Module, set[tuple[bool, object]]] = (
    weakref.WeakKeyDictionary()
)


def _checked(
    model: nn.Module, vectors: Mapping[str, Tensor], params: Sequence[str] | None
) -> dict[str, Tensor]:
    theta = named_parameters(model, params)
    missing = [name for name in theta if name not in vectors]
    if missing:
        raise ValueError(f"vectors lack entries for parameters {missing}")
    return theta


def _double_backward(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    params: Sequence[str] | None,
) -> dict[str, Tensor]:
    theta = _checked(model, vectors, params)
    args = _as_args(inputs)
    names = list(theta)
    with torch.enable_grad():
        loss = loss_fn(model(*args), targets)
        first = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=True)
        dot = torch.stack(
            [(g * vectors[n].to(g)).sum() for g, n in zip(first, names, strict=True)]
        ).sum()
        second = torch.autograd.grad(dot, [theta[n] for n in names], allow_unused=True)
    return {
        n: (torch.zeros_like(theta[n]) if s is None else s.detach())
        for n, s in zip(names, second, strict=True)
    }


def _forward_over_reverse(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    params: Sequence[str] | None,
) -> dict[str, Tensor]:
    theta = _checked(model, vectors, params)
    args = _as_args(inputs)
    fixed = {
        **{name: b for name, b in model.named_buffers()},
        **{name: p.detach() for name, p in model.named_parameters() if name not in theta},
    }

    def loss_of(current: dict[str, Tensor]) -> Tensor:
        out = functional_call(model, {**fixed, **current}, args)
        return loss_fn(out, targets)

    primals = {name: p.detach() for name, p in theta.items()}
    tangents = {name: vectors[name].to(primals[name]) for name in theta}
    product = jvp(grad(loss_of), (primals,), (tangents,))[1]
    return {name: t.detach() for name, t in product.items()}
