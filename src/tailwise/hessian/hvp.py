"""Hessian-vector products of a model's loss on one batch, without forming the Hessian.

H v = d/d eps grad L(theta + eps v) at eps = 0 (REFERENCES §6). Two ways to compute it
(:class:`HVPMethod`, the ``hvp_method`` of every curvature function):

- ``"forward-over-reverse"`` (default): ``torch.func.jvp`` of ``torch.func.grad`` of the loss
  as a function of the parameters; one forward-mode pass over the backward graph.
- ``"double-backward"``: ``autograd.grad(grad(L) . v)``, building the gradient with
  ``create_graph=True``; the classic Pearlmutter trick, and what PyHessian does.

Both cost a small constant times one gradient and O(number of parameters) memory.

A third way serves many products on the same batch: build the gradient once with
``create_graph=True`` and keep its graph; each product is then one backward pass through it,
``autograd.grad(grad L, theta, grad_outputs=v, retain_graph=True)`` (what PyHessian does).
:class:`RetainedGradient` holds one batch's graph (package-internal: the
:class:`~tailwise.hessian.HessianOperator` keeps one per batch and decides when).
"""

from __future__ import annotations

import contextlib
import enum
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from tailwise._errors import UsageError
from tailwise._modules import as_args

__all__ = [
    "HVPFallback",
    "HVPMethod",
    "RetainedGradient",
    "hvp",
    "named_parameters",
    "restored_buffers",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


class HVPMethod(str, enum.Enum):
    """How a Hessian-vector product is computed (the ``hvp_method`` argument)."""

    FORWARD_OVER_REVERSE = "forward-over-reverse"
    DOUBLE_BACKWARD = "double-backward"


def _resolve_hvp_method(
    where: str, hvp_method: HVPMethod | str | None, method: HVPMethod | str | None = None
) -> HVPMethod:
    """``hvp_method`` (or the deprecated ``method``) as an :class:`HVPMethod`; None -> default.

    Package-internal: :func:`hvp` and :class:`~tailwise.hessian.HessianOperator` share it.
    A bad value raises :class:`tailwise.UsageError` naming the allowed ones.
    """
    if method is not None:
        if hvp_method is not None:
            raise TypeError(f"{where}: pass hvp_method only (method is its deprecated name)")
        warnings.warn(
            f"{where}: the keyword 'method' is deprecated, use hvp_method={str(method)!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        hvp_method = method
    if hvp_method is None:
        return HVPMethod.FORWARD_OVER_REVERSE
    try:
        return HVPMethod(hvp_method)
    except ValueError:
        allowed = [m.value for m in HVPMethod]
        raise UsageError(
            f"{where}: hvp_method must be one of {allowed}, got {hvp_method!r}"
        ) from None


@contextlib.contextmanager
def restored_buffers(model: nn.Module) -> Iterator[None]:
    """Run the block, then put back the values of every buffer of ``model``.

    A forward pass of a train-mode BatchNorm updates its running statistics (and its
    ``num_batches_tracked``); Hessian-vector products, losses and gradients taken for
    analysis must leave the model as they found it. Values are restored in place (the
    buffer tensors keep their identity), also when the block raises. A buffer whose value did
    not change is not written: its version counter stays, so a graph that saved it (an
    eval-mode BatchNorm's statistics) can still be differentiated after the block.

    >>> bn = nn.BatchNorm1d(2).train()
    >>> with restored_buffers(bn):
    ...     _ = bn(torch.randn(4, 2) + 5)
    >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
    ([0.0, 0.0], 0)
    """
    buffers = [b for b in model.buffers() if b is not None]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                if not torch.equal(buffer, value):
                    buffer.copy_(value)


class HVPFallback:
    """Remembers where forward-over-reverse failed, so later products skip the attempt.

    Forward-mode AD lacks formulas for some operations (and torch 2.13 fails on ``mse_loss``);
    :func:`hvp` then computes the same product by double backward. Pass one instance to
    every :func:`hvp` call of a sequence of products (a :class:`HessianOperator` and each
    regularizer keep their own): the failure is warned about once and not retried for the same
    model, train/eval mode and loss. Without one, each call tries (and warns) afresh.
    Nothing is shared between instances: there is no process-wide state.
    """

    def __init__(self) -> None:
        self._failed: weakref.WeakKeyDictionary[nn.Module, set[tuple[bool, object]]] = (
            weakref.WeakKeyDictionary()
        )
        self._warned: set[str] = set()

    @staticmethod
    def _attempt(model: nn.Module, loss_fn: LossFn) -> tuple[bool, object]:
        try:
            attempt: tuple[bool, object] = (model.training, loss_fn)
            hash(attempt)
        except TypeError:  # an unhashable loss callable: remember it by identity
            attempt = (model.training, id(loss_fn))
        return attempt

    def failed(self, model: nn.Module, loss_fn: LossFn) -> bool:
        """Whether forward-over-reverse already failed for this model, mode and loss."""
        return self._attempt(model, loss_fn) in self._failed.get(model, set())

    def record(self, model: nn.Module, loss_fn: LossFn, exc: BaseException) -> None:
        """Remember a failure and warn about it (once per kind of error)."""
        self._failed.setdefault(model, set()).add(self._attempt(model, loss_fn))
        key = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"forward-over-reverse HVP failed ({key}); using double backward",
                RuntimeWarning,
                stacklevel=4,
            )


def named_parameters(model: nn.Module, params: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The parameters the Hessian is taken over, by name, in ``model.named_parameters`` order.

    ``params``: names to keep (a layer's Hessian block, e.g. ``["layers.0.weight"]``);
    default every parameter with ``requires_grad``. Unknown names raise
    :class:`tailwise.UsageError`.

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
        raise UsageError(f"unknown parameter names {unknown}; the model has {list(found)}")
    wanted = set(params)
    return {name: p for name, p in found.items() if name in wanted}


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    *,
    params: Sequence[str] | None = None,
    hvp_method: HVPMethod | str | None = None,
    fallback: HVPFallback | None = None,
    method: HVPMethod | str | None = None,
) -> dict[str, Tensor]:
    """H v for the loss ``loss_fn(model(*inputs), targets)`` on one batch.

    ``vectors``: one tensor per parameter of :func:`named_parameters` ``(model, params)``, of
    the same shapes; parameters outside ``params`` are held fixed (so the result is the
    ``params`` block of the Hessian times v). Returns H v with the same keys and shapes,
    detached. Buffers (BatchNorm statistics) are used as they are and left unchanged
    (:func:`restored_buffers`); the model's train/eval mode is the caller's choice.

    ``hvp_method``: ``"forward-over-reverse"`` (default) or ``"double-backward"``
    (:class:`HVPMethod`); where forward mode fails, the product is computed by double
    backward with a ``RuntimeWarning``. ``fallback``: an :class:`HVPFallback` that remembers
    such failures across calls (default: none, each call tries afresh). ``method``:
    deprecated name of ``hvp_method``.

    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 1, bias=False)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> v = {"weight": torch.ones(1, 3)}
    >>> hv = hvp(model, nn.functional.mse_loss, x, y, v, hvp_method="double-backward")["weight"]
    >>> bool(torch.allclose(hv, (2 / 8) * (x.T @ x).sum(1)[None], atol=1e-5))  # H = 2 X^T X / n
    True
    """
    how = _resolve_hvp_method("hvp", hvp_method, method)
    with restored_buffers(model):
        return _product(model, loss_fn, inputs, targets, vectors, params, how, fallback)


def _product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | tuple[Any, ...],
    targets: Tensor,
    vectors: Mapping[str, Tensor],
    params: Sequence[str] | None,
    method: HVPMethod,
    fallback: HVPFallback | None,
) -> dict[str, Tensor]:
    memory = HVPFallback() if fallback is None else fallback
    if method is HVPMethod.FORWARD_OVER_REVERSE and not memory.failed(model, loss_fn):
        try:
            return _forward_over_reverse(model, loss_fn, inputs, targets, vectors, params)
        except (RuntimeError, NotImplementedError) as exc:
            # Forward-mode AD lacks formulas for some ops, and torch 2.13 fails on mse_loss
            # ("ZeroTensors are immutable"): the double-backward product is the same number.
            memory.record(model, loss_fn, exc)
    return _double_backward(model, loss_fn, inputs, targets, vectors, params)


def _checked(
    model: nn.Module, vectors: Mapping[str, Tensor], params: Sequence[str] | None
) -> dict[str, Tensor]:
    theta = named_parameters(model, params)
    missing = [name for name in theta if name not in vectors]
    if missing:
        raise UsageError(f"vectors lack entries for parameters {missing}")
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
    args = as_args(inputs)
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
    args = as_args(inputs)
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


class RetainedGradient:
    """One batch's gradient built with ``create_graph=True``, kept for many products.

    grad L_b(theta) is computed once with its graph; then H_b v = d(grad L_b . v)/d theta is one
    backward pass through that graph per vector (double backward, REFERENCES §6), without the
    forward pass and first backward pass a fresh product repeats. The graph holds the
    activations of the forward and backward pass (:attr:`nbytes`), so it suits data that fits
    in memory. It is only valid while the parameters, buffers and train/eval flags it was
    built from are unchanged; the owner checks that (:class:`HessianOperator` does).

    The forward pass runs on copies of the model's buffers (``functional_call``): a train-mode
    BatchNorm updates the copies, which its backward saved, so the model's own statistics are
    never written and the graph stays valid.

    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 1, bias=False).double()
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> kept = RetainedGradient(model, nn.functional.mse_loss, x, y, ["weight"])
    >>> rows = [torch.eye(3, dtype=torch.float64).reshape(3, 1, 3)]  # (k, *shape) per parameter
    >>> bool(torch.allclose(kept.products(rows)[0].reshape(3, 3), 2 * x.T @ x / 8))
    True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: Tensor | tuple[Any, ...],
        targets: Tensor,
        names: Sequence[str],
    ) -> None:
        theta = named_parameters(model, names)
        self._theta = [theta[name] for name in names]
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        with torch.enable_grad():
            loss = loss_fn(functional_call(model, buffers, as_args(inputs)), targets)
            grads = torch.autograd.grad(loss, self._theta, create_graph=True, allow_unused=True)
        #: the batch's loss L_b, as a Python float.
        self.loss = float(loss.detach())
        # A gradient without a graph does not depend on theta (the loss is linear in that
        # parameter, or does not use it): its rows of H_b are zero.
        self._outputs = [
            (index, grad)
            for index, grad in enumerate(grads)
            if grad is not None and grad.requires_grad
        ]
        kept = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        #: bytes the graph keeps alive: its saved tensors (not the parameters and buffers, which
        #: live anyway) and the gradient itself.
        self.nbytes = _graph_bytes([grad for _, grad in self._outputs], kept)

    def products(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """H_b v for k vectors: ``vectors[i]`` of shape (k, *shape of parameter i); same out.

        One backward pass through the kept graph per column. The vectors must have the
        parameters' dtype and device.
        """
        result = [torch.zeros_like(v) for v in vectors]
        if not self._outputs:
            return result
        for column in range(vectors[0].shape[0]):
            second = torch.autograd.grad(
                [grad for _, grad in self._outputs],
                self._theta,
                grad_outputs=[vectors[index][column] for index, _ in self._outputs],
                retain_graph=True,
                allow_unused=True,
            )
            for out, piece in zip(result, second, strict=True):
                if piece is not None:
                    out[column] = piece
        return result


def _saved_tensors(node: Any) -> Iterator[Tensor]:
    """The tensors an autograd node saved for its backward (its ``_saved_*`` attributes)."""
    for attribute in dir(node):
        if not attribute.startswith("_saved_"):
            continue
        try:
            value = getattr(node, attribute)
        except RuntimeError:  # already freed
            continue
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, Tensor):
                yield item
            elif isinstance(item, (tuple, list)):
                stack.extend(item)


def _graph_bytes(outputs: Sequence[Tensor], excluded: set[int]) -> int:
    """Bytes of the distinct storages the graph behind ``outputs`` holds, plus the outputs.

    Walks the graph from the outputs' ``grad_fn`` through ``next_functions`` and adds up the
    storages of every saved tensor once (views share one), leaving out the storages whose
    ``data_ptr`` is in ``excluded`` (the parameters, which live anyway).
    """
    storages: dict[int, int] = {}
    for tensor in outputs:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    seen: set[Any] = set()
    stack: list[Any] = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for saved in _saved_tensors(node):
            storage = saved.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        stack.extend(following for following, _ in node.next_functions)
    return sum(size for pointer, size in storages.items() if pointer not in excluded)
