"""The Hessian of a model's full-data loss as a linear operator, never formed (source 004 §3.8).

For batches b = 1..B of sizes n_b (N = sum_b n_b) and a loss function that averages over its
batch, the full-data loss and its Hessian are

    L(theta) = sum_b (n_b / N) L_b(theta),        H = sum_b (n_b / N) grad^2 L_b(theta),

so H v is a size-weighted sum of per-batch Hessian-vector products
(:func:`tailwise.hessian.hvp`), exact for an unequal last batch. By the Leibniz rule the
derivative is taken after the product with v (004 §3.8: E[H] v = grad(v^T grad E[L])), so no
N x N matrix is ever held: a product costs one pass over the data and O(n) memory, a block of
k products O(n k).

Retained graphs (``retain_graph``): for data that fits in memory, the operator builds each
batch's gradient once with ``create_graph=True`` and keeps the graphs
(:class:`~tailwise.hessian.hvp.RetainedGradient`); a product is then one backward pass
through each, with no forward pass and no pass over the data (measured on CIFAR-shaped CNNs:
1.2-1.7 gradients per product, against 2.5-3 for a fresh forward-over-reverse product). The
graphs are rebuilt, at the next product, whenever a parameter, buffer or train/eval flag of
the model has changed since they were built (an optimizer step, ``load_state_dict``, an edit
through ``.data``, ``model.train()``).

>>> import torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Linear(3, 1, bias=False).double()
>>> x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
>>> batches = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # sizes 4, 4, 2
>>> op = HessianOperator(model, nn.functional.mse_loss, batches, hvp_method="double-backward")
>>> op.shape
(3, 3)
>>> bool(torch.allclose(op.matmat(torch.eye(3, dtype=torch.float64)), 2 * x.T @ x / 10))
True
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import Dataset

from tailwise._errors import UsageError, first_line
from tailwise._modules import as_args, model_device
from tailwise._threads import torch_work
from tailwise.hessian import _budget
from tailwise.hessian.hvp import (
    HVPFallback,
    HVPMethod,
    RetainedGradient,
    _resolve_hvp_method,
    hvp,
    named_parameters,
    restored_buffers,
)

__all__ = ["RETAINED_GRAPH_SHARE", "HessianOperator"]

#: With ``retain_graph=None`` the gradient graphs are kept while they (and a copy of the
#: parameters and buffers) take at most this share of the device's memory
#: (:func:`tailwise.hessian._budget.memory_limit`: physical memory for the CPU).
RETAINED_GRAPH_SHARE = 1 / 8

LossFn = Callable[[Tensor, Tensor], Tensor]
#: A batch: ``(inputs, targets)``, ``inputs`` a tensor or a tuple of the model's arguments.
Batch = Sequence[Any]
#: What :class:`HessianOperator` accepts as ``data``: a re-iterable of batches, or one batch.
Data = Iterable[Batch] | tuple[Any, Tensor]

# Modules whose train-mode forward is random (dropout) or normalizes each batch by its own
# statistics (batch norm): the loss is then not a fixed function of theta and the data.
_STOCHASTIC_IN_TRAIN_MODE: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
)


def _as_batches(data: Data) -> Iterable[Batch]:
    """``data`` as a re-iterable of batches; one ``(inputs, targets)`` pair becomes a list."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor):
        return [data]
    if isinstance(data, Iterator):
        raise TypeError(
            f"HessianOperator: data is a one-shot iterator ({type(data).__name__}), but every "
            "Hessian-vector product needs a fresh pass over the data; pass a list of "
            "(inputs, targets) batches or a DataLoader instead"
        )
    if isinstance(data, Dataset):
        raise TypeError(
            f"HessianOperator: data is a Dataset ({type(data).__name__}) of single samples; "
            "wrap it in a torch.utils.data.DataLoader to give batches"
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            "HessianOperator: data must be an iterable of (inputs, targets) batches or one "
            f"such pair, got {type(data).__name__}"
        )
    return data


def _stochastic_modules(model: nn.Module) -> list[str]:
    """Names of Dropout / BatchNorm submodules that are in training mode."""
    return [
        name or type(module).__name__
        for name, module in model.named_modules()
        if module.training and isinstance(module, _STOCHASTIC_IN_TRAIN_MODE)
    ]


# What a forward pass raises when the data does not fit the model (wrong shape, dtype, number
# of classes, batch sizes of inputs and targets that differ). Out-of-memory is not among them.
_DATA_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


def _tensors(inputs: Any) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, (tuple, list)):
        return [t for item in inputs for t in _tensors(item)]
    return []


def _shapes(inputs: Any) -> str:
    shapes = [tuple(t.shape) for t in _tensors(inputs)]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)


def _check_batch(index: int, inputs: Any, targets: Tensor) -> None:
    """Raise :class:`UsageError` if a batch holds NaN/Inf or its sizes disagree."""
    for what, tensors in (("inputs", _tensors(inputs)), ("targets", [targets])):
        for tensor in tensors:
            if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
                torch.isfinite(tensor).all()
            ):
                bad = int((~torch.isfinite(tensor)).sum())
                raise UsageError(
                    f"HessianOperator: batch {index}: the {what} hold {bad} NaN/Inf value(s) "
                    f"(shape {tuple(tensor.shape)}); the loss and its Hessian are then not "
                    "finite: clean the data first"
                )
    first = _tensors(inputs)[:1]
    if first and first[0].ndim >= 1 and first[0].shape[0] != targets.shape[0]:
        raise UsageError(
            f"HessianOperator: batch {index}: inputs of shape {tuple(first[0].shape)} and "
            f"targets of shape {tuple(targets.shape)} disagree on the batch size "
            f"({first[0].shape[0]} vs {targets.shape[0]})"
        )


def _rng_states(device: torch.device) -> list[Tensor]:
    """The states of the default generators a forward pass on ``device`` may draw from."""
    states = [torch.get_rng_state()]
    if device.type == "cuda" and torch.cuda.is_available():
        states.append(torch.cuda.get_rng_state(device))
    return states


class _Snapshot:
    """What retained gradient graphs depend on: every parameter and buffer of the model (the
    tensor object, its storage and its values) and every module's train/eval flag."""

    def __init__(self, model: nn.Module) -> None:
        self._tensors = _state_tensors(model)
        self._pointers = [t.data_ptr() for t in self._tensors]
        self._values = [t.detach().clone() for t in self._tensors]
        self._flags = [module.training for module in model.modules()]
        self.nbytes = sum(v.numel() * v.element_size() for v in self._values)

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` is in the state the snapshot was taken in.

        Values are compared, not version counters: an in-place edit through ``.data`` does
        not move the version counter, and restoring an unchanged buffer would.
        """
        tensors = _state_tensors(model)
        return (
            len(tensors) == len(self._tensors)
            and all(a is b for a, b in zip(tensors, self._tensors, strict=True))
            and [t.data_ptr() for t in tensors] == self._pointers
            and [module.training for module in model.modules()] == self._flags
            and all(torch.equal(t, v) for t, v in zip(tensors, self._values, strict=True))
        )


def _state_tensors(model: nn.Module) -> list[Tensor]:
    return [*model.parameters(), *(b for b in model.buffers() if b is not None)]


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, tuple):
        return tuple(_to_device(item, device) for item in inputs)
    return inputs


class HessianOperator:
    """H, the Hessian of the full-data loss with respect to (some of) a model's parameters.

    H = sum_b (n_b / N) grad^2_theta L_b(theta) over the batches of ``data`` (source 004 §3.8,
    REFERENCES §6), applied to vectors through Hessian-vector products, one pass over the data
    per product or per block of products. The Hessian is taken at the model's *current*
    parameters, read at every product.

    Args:
        model: the network; its train / eval mode is used as it is (see ``check_deterministic``).
        loss_fn: ``loss_fn(model(inputs), targets)``, a scalar averaged over the batch (e.g.
            ``nn.functional.cross_entropy``); a summed loss would be weighted wrongly.
        data: a re-iterable of ``(inputs, targets)`` batches (a DataLoader, a list of pairs) or a
            single ``(inputs, targets)`` pair. ``inputs`` is a tensor or a tuple of the model's
            arguments; the batch size n_b is ``targets.shape[0]``. A one-shot iterator (a
            generator) raises ``TypeError``. A shuffling DataLoader gives the same H up to the
            rounding of the sum.
        params: names of the parameters H is taken over (default every parameter with
            ``requires_grad``), e.g. one layer's ``["layers.0.weight", "layers.0.bias"]`` for its
            diagonal block of the full Hessian; the others are held fixed.
        hvp_method: how each batch's product is computed, passed to
            :func:`tailwise.hessian.hvp`: ``"forward-over-reverse"`` (default) or
            ``"double-backward"``. ``method`` is its deprecated name (``DeprecationWarning``).
        device: where the products are computed: the device of the model's parameters, which
            is the default. The model is never moved (move it first, ``model.to(device)``):
            a different device raises :class:`tailwise.UsageError`. Batches are moved to it
            as they are read.
        check_deterministic: at construction, (1) raise :class:`tailwise.UsageError` if a Dropout or
            BatchNorm module is in training mode (dropout is random; train-mode batch norm
            normalizes each batch by its own statistics, so H would depend on how the data
            is batched), (2) compute the full-data loss and raise ``UsageError`` if the model
            or the loss drew random numbers from torch's default generators while doing so
            (functional dropout ``F.dropout(x, p, training=True)``, noise layers: this
            refuses every time, not only when two random draws happen to differ), or if the
            loss is not finite, and (3) compute it a second time and raise ``UsageError`` if
            the two differ (random data augmentation in the data pipeline, randomness from a
            generator of the model's own). The messages suggest ``model.eval()``. ``False``
            skips these checks (and their two forward passes over the data), e.g. to study
            the train-mode batch-norm Hessian on purpose.
        vectorize: compute a block of k products per batch with ``torch.func.vmap`` over the
            tangents of one forward-over-reverse product, which shares the forward and backward
            pass of the parameters between the k columns (measured on one CPU thread, k = 5:
            1.6x faster per product than a loop on a digits CNN and an MLP, no gain or loss on
            CIFAR-sized convolutions; memory: k copies of the tangent activations). Falls back
            to a loop over columns, with a warning, where vmap fails for the model (e.g.
            train-mode BatchNorm); ignored for ``"double-backward"`` and for retained graphs.
        retain_graph: keep each batch's gradient graph and compute every product by a
            backward pass through it (:class:`~tailwise.hessian.hvp.RetainedGradient`; the
            module docstring). ``None`` (default): keep the graphs while they take at most
            :data:`RETAINED_GRAPH_SHARE` of the device's memory, measured batch by batch as
            they are built (with the determinism check's first pass, or the first product);
            beyond, they are dropped and every product makes a fresh pass over the data, as
            with ``False``. ``True``: keep them whatever they take, and raise
            :class:`tailwise.UsageError` if they outgrow the device's memory. ``hvp_method``
            and ``vectorize`` then only apply to products computed without a graph. Products
            agree with the fresh ones to rounding. With randomness in the forward pass
            (allowed by ``check_deterministic=False``), the graphs fix one draw, so H is that
            draw's Hessian.

    Attributes:
        names, shapes: the parameters of H in ``model.named_parameters`` order, and their
            shapes: the layout of flat vectors (see :meth:`flatten` / :meth:`unflatten`).
        num_params: n, the length of a flat vector. ``shape`` is (n, n).
        dtype, device: of the parameters; products are computed in this dtype there.
        num_matvecs: Hessian-vector products over the full data computed so far (a block of k
            counts k).
        hvp_method: the :class:`~tailwise.hessian.hvp.HVPMethod` of the per-batch products
            (``method`` is a deprecated read-only alias).
        retain_graph: the setting (None, True or False); :attr:`retains_graph` and
            :attr:`graph_bytes` say what it gave.

    Vectors passed to :meth:`matvec` / :meth:`matmat` may have any floating dtype and device:
    they are cast to ``dtype`` on ``device`` for the per-batch products, and the weighted sum
    over batches is accumulated and returned in ``promote_types(v.dtype, dtype)`` on v's device.
    So float64 vectors give float64 results from a float32 model: the per-batch products then
    carry float32 rounding (eigenvalues within about 1e-7 relative of float64 ones on a digits
    MLP), the sum adds none.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Data,
        *,
        params: Sequence[str] | None = None,
        hvp_method: HVPMethod | str | None = None,
        device: str | torch.device | None = None,
        check_deterministic: bool = True,
        vectorize: bool = True,
        retain_graph: bool | None = None,
        method: HVPMethod | str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"HessianOperator: model must be an nn.Module, got {type(model)}")
        if not callable(loss_fn):
            raise TypeError(f"HessianOperator: loss_fn must be callable, got {loss_fn!r}")
        self.hvp_method = _resolve_hvp_method("HessianOperator", hvp_method, method)
        if retain_graph is not None and not isinstance(retain_graph, bool):
            raise UsageError(
                "HessianOperator: retain_graph must be True, False or None (automatic), got "
                f"{retain_graph!r}"
            )
        self.retain_graph = retain_graph
        self._data = _as_batches(data)
        if device is not None:
            _check_device(model, device)
        self._model = model
        self._loss_fn = loss_fn
        theta = named_parameters(model, params)
        if not theta:
            raise UsageError(
                "HessianOperator: no parameters to differentiate (none requires grad"
                + (f" among {list(params)})" if params is not None else ")")
            )
        dtypes = {p.dtype for p in theta.values()}
        devices = {p.device for p in theta.values()}
        if len(dtypes) > 1 or len(devices) > 1:
            raise UsageError(
                "HessianOperator: the parameters must share one dtype and device, got dtypes "
                f"{sorted(map(str, dtypes))} on devices {sorted(map(str, devices))}"
            )
        self.names: tuple[str, ...] = tuple(theta)
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for p in theta.values())
        self._numels = [math.prod(shape) for shape in self.shapes]
        self._num_params = sum(self._numels)
        self._dtype = next(iter(dtypes))
        self._device = next(iter(devices))
        self._vectorize = vectorize and self.hvp_method is HVPMethod.FORWARD_OVER_REVERSE
        self._vmap_works: bool | None = None  # unknown until the first block product
        # Where forward-over-reverse failed for this operator: one warning, no retry.
        self._fallback = HVPFallback()
        self._on_products: Callable[[int], None] | None = None  # progress of eigen / trace
        self.num_matvecs = 0
        # Until one pass over the data has completed, every batch is checked (finite values,
        # matching batch sizes) and a forward pass that fails is the data not fitting the
        # model: UsageError. Afterwards the data is known to fit, and errors are raised as is.
        self._validated = False
        # Retained gradient graphs, one per batch with its size, valid while the model matches
        # the snapshot; None when there are none (not built yet, stale, or not wanted).
        self._graphs: list[tuple[RetainedGradient, int]] | None = None
        self._snapshot: _Snapshot | None = None
        self._graphs_refused = False  # retain_graph=None and they outgrew their share once
        if check_deterministic:
            with torch_work():
                self._check_deterministic()

    # ----------------------------------------------------------------- layout

    @property
    def num_params(self) -> int:
        """n, the number of parameters H is taken over."""
        return self._num_params

    @property
    def method(self) -> HVPMethod:
        """Deprecated alias of :attr:`hvp_method`."""
        warnings.warn(
            "HessianOperator.method is deprecated, use hvp_method",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.hvp_method

    @contextlib.contextmanager
    def _reporting(self, advance: Callable[[int], None]) -> Iterator[None]:
        """Call ``advance(k)`` after every block of k products (package-internal: progress)."""
        previous, self._on_products = self._on_products, advance
        try:
            yield
        finally:
            self._on_products = previous

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n)."""
        return (self._num_params, self._num_params)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the parameters, in which the per-batch products are computed."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """device of the parameters, where the products are computed."""
        return self._device

    @property
    def retains_graph(self) -> bool:
        """Whether products go through retained gradient graphs: graphs are kept, or the
        next pass over the data builds them (``retain_graph`` is not False and, if None,
        they have not outgrown their share of memory)."""
        return self._graphs is not None or self._wants_graphs()

    @property
    def graph_bytes(self) -> int:
        """Bytes held by the retained gradient graphs (saved activations and gradients) and
        the copy of the parameters and buffers they are checked against; 0 when none."""
        if self._graphs is None or self._snapshot is None:
            return 0
        return self._snapshot.nbytes + sum(graph.nbytes for graph, _ in self._graphs)

    def _wants_graphs(self) -> bool:
        return self.retain_graph is True or (self.retain_graph is None and not self._graphs_refused)

    def _current_graphs(self) -> list[tuple[RetainedGradient, int]] | None:
        """The retained graphs if the model is as they were built from; stale ones are freed."""
        if self._graphs is None or self._snapshot is None:
            return None
        if self._snapshot.matches(self._model):
            return self._graphs
        self._graphs = self._snapshot = None
        return None

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """One flat vector (n,) from a dict ``name -> tensor`` over :attr:`names` (in order)."""
        missing = [name for name in self.names if name not in tensors]
        if missing:
            raise UsageError(f"HessianOperator.flatten: no entries for parameters {missing}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            if tuple(tensors[name].shape) != tuple(shape):
                raise UsageError(
                    f"HessianOperator.flatten: {name} has shape {tuple(tensors[name].shape)}, "
                    f"expected {tuple(shape)}"
                )
            parts.append(tensors[name].reshape(-1))
        return torch.cat(parts)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """The dict ``name -> tensor`` (views, parameter shapes) of a flat vector (n,)."""
        if vector.ndim != 1 or vector.shape[0] != self._num_params:
            raise UsageError(
                f"HessianOperator.unflatten: expected a vector of shape ({self._num_params},), "
                f"got {tuple(vector.shape)}"
            )
        pieces = torch.split(vector, self._numels)
        return {
            name: piece.view(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def _unflatten_rows(self, rows: Tensor) -> dict[str, Tensor]:
        """(k, n) -> dict ``name -> (k, *shape)``."""
        pieces = torch.split(rows, self._numels, dim=1)
        return {
            name: piece.reshape(rows.shape[0], *shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def _flatten_rows(self, tensors: Mapping[str, Tensor], k: int) -> Tensor:
        """dict ``name -> (k, *shape)`` -> (k, n)."""
        return torch.cat([tensors[name].reshape(k, -1) for name in self.names], dim=1)

    # ---------------------------------------------------------------- data

    def _batches(self) -> Iterator[tuple[Any, Tensor, int]]:
        """``(inputs, targets, n_b)`` on :attr:`device`, one per batch of the data.

        During the first complete pass each batch is checked (:func:`_check_batch`).
        """
        empty = True
        checking = not self._validated
        for index, batch in enumerate(self._data):
            if not isinstance(batch, Sequence) or len(batch) != 2:
                raise TypeError(
                    f"HessianOperator: batch {index} must be a pair (inputs, targets), got "
                    f"{type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, Sequence) else "")
                )
            inputs, targets = batch
            if not isinstance(targets, Tensor) or targets.ndim == 0:
                raise TypeError(
                    f"HessianOperator: batch {index}: targets must be a tensor with a batch "
                    f"dimension, got {type(targets).__name__}"
                )
            empty = False
            if checking:
                _check_batch(index, inputs, targets)
            yield _to_device(inputs, self._device), targets.to(self._device), targets.shape[0]
        if empty:
            raise UsageError("HessianOperator: data yielded no batches")
        self._validated = True

    @contextlib.contextmanager
    def _fitting(self, inputs: Any, targets: Tensor) -> Iterator[None]:
        """Until the data is validated, a failing forward pass becomes a UsageError."""
        try:
            yield
        except torch.OutOfMemoryError:
            raise
        except _DATA_ERRORS as exc:
            if self._validated:
                raise
            raise UsageError(
                "HessianOperator: the model and loss_fn failed on a batch of inputs of shape "
                f"{_shapes(inputs)} and targets of shape {tuple(targets.shape)} (dtype "
                f"{targets.dtype}): {first_line(exc, 200)}; does the data fit the model?"
            ) from exc

    def _batch_losses(
        self, *, watch_rng: bool = False, build: bool = False
    ) -> list[tuple[float, int]]:
        """``(L_b, n_b)`` per batch; with ``watch_rng``, UsageError if a forward drew random
        numbers from torch's default generators. With ``build`` (and graphs wanted), the
        forward passes are those of the retained gradient graphs, built on the way."""
        losses = []
        builder = _GraphBuilder(self) if build and self._wants_graphs() else None
        with restored_buffers(self._model):
            for inputs, targets, size in self._batches():
                before = _rng_states(self._device) if watch_rng else []
                with self._fitting(inputs, targets):
                    if builder is not None and builder.keeping:
                        value = builder.build(inputs, targets, size).loss
                    else:
                        with torch.no_grad():
                            output = self._model(*as_args(inputs))
                            value = float(self._loss_fn(output, targets))
                if watch_rng and any(
                    not torch.equal(a, b)
                    for a, b in zip(before, _rng_states(self._device), strict=True)
                ):
                    raise UsageError(
                        "HessianOperator: the model or loss_fn draws random numbers in its "
                        "forward pass (functional dropout such as F.dropout(x, p, "
                        "training=True), random noise), so the loss is random and its Hessian "
                        "is not well defined; call model.eval() and make the forward pass "
                        "deterministic, or pass check_deterministic=False to use it anyway"
                    )
                losses.append((value, size))
        if builder is not None:
            builder.finish()
        return losses

    def _check_deterministic(self) -> None:
        stochastic = _stochastic_modules(self._model)
        if stochastic:
            raise UsageError(
                "HessianOperator: the model is in training mode with Dropout/BatchNorm modules "
                f"{stochastic[:5]}{' ...' if len(stochastic) > 5 else ''}, so its loss is "
                "random or depends on how the data is batched; call model.eval() first, or pass "
                "check_deterministic=False to use the train-mode loss on purpose"
            )
        first = _mean(self._batch_losses(watch_rng=True, build=True))
        if not math.isfinite(first):
            self._graphs = self._snapshot = None
            raise UsageError(
                f"HessianOperator: the loss over the data is {first!r}, not finite, so its "
                "Hessian is not either: are the parameters finite, and does loss_fn fit the "
                "targets?"
            )
        second = _mean(self._batch_losses())
        scale = max(abs(first), abs(second), torch.finfo(self._dtype).tiny)
        # Loose enough for reduction-order noise (shuffled loaders, GPU kernels), far below
        # what dropout or data augmentation change.
        if abs(first - second) > 1000 * torch.finfo(self._dtype).eps * scale:
            raise UsageError(
                "HessianOperator: two passes over the data gave different losses "
                f"({first!r} and {second!r}), so the Hessian is not well defined: is there "
                "random data augmentation, dropout or other randomness in the model or the "
                "data? Call model.eval() and use a deterministic data pipeline"
            )

    # --------------------------------------------------------- loss, gradient

    def loss(self) -> float:
        """The full-data loss L = sum_b (n_b / N) L_b at the current parameters (float64 sum).

        Like the products, it leaves the model unchanged: running statistics of a train-mode
        BatchNorm are restored.
        """
        with torch_work():
            return _mean(self._batch_losses())

    def gradient(self) -> Tensor:
        """The full-data gradient sum_b (n_b / N) grad L_b, flat (n,), in :attr:`dtype`.

        Computed with ``torch.autograd.grad``: the parameters' ``.grad`` are left alone, and
        so are BatchNorm running statistics.
        """
        theta = named_parameters(self._model, list(self.names))
        tensors = [theta[name] for name in self.names]
        total = torch.zeros(self._num_params, dtype=self._dtype, device=self._device)
        count = 0
        with torch_work(), torch.enable_grad(), restored_buffers(self._model):
            for inputs, targets, size in self._batches():
                with self._fitting(inputs, targets):
                    loss = self._loss_fn(self._model(*as_args(inputs)), targets)
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                flat = torch.cat(
                    [
                        (torch.zeros_like(t) if g is None else g).reshape(-1)
                        for g, t in zip(grads, tensors, strict=True)
                    ]
                )
                total.add_(flat, alpha=size)
                count += size
        return total / count

    # --------------------------------------------------------------- products

    def matvec(self, vector: Tensor) -> Tensor:
        """H v for a flat vector v (n,); one pass over the data.

        Returns shape (n,), dtype ``promote_types(v.dtype, dtype)``, on v's device.
        """
        if not isinstance(vector, Tensor) or vector.ndim != 1:
            raise UsageError(
                f"HessianOperator.matvec: expected a tensor of shape ({self._num_params},), "
                f"got {_describe(vector)}"
            )
        return self.matmat(vector[:, None])[:, 0]

    def matmat(self, matrix: Tensor) -> Tensor:
        """H V for a block V (n, k); one pass over the data for the whole block.

        Memory O(n k) (plus k copies of the activations with ``vectorize``). Returns shape
        (n, k), dtype ``promote_types(V.dtype, dtype)``, on V's device.
        """
        if (
            not isinstance(matrix, Tensor)
            or matrix.ndim != 2
            or matrix.shape[0] != self._num_params
        ):
            raise UsageError(
                f"HessianOperator.matmat: expected a tensor of shape ({self._num_params}, k), "
                f"got {_describe(matrix)}"
            )
        if not matrix.dtype.is_floating_point:
            raise UsageError(
                f"HessianOperator.matmat: expected a floating dtype, got {matrix.dtype}"
            )
        k = matrix.shape[1]
        out_dtype = torch.promote_types(matrix.dtype, self._dtype)
        if k == 0:
            return torch.zeros_like(matrix, dtype=out_dtype)
        # Rows are the k vectors: each row's slices per parameter are contiguous.
        rows = matrix.T.to(device=self._device, dtype=self._dtype).contiguous()
        total = torch.zeros((k, self._num_params), dtype=out_dtype, device=self._device)
        count = 0
        with torch_work():
            graphs = self._current_graphs()
            if graphs is not None:  # no pass over the data: one backward pass per graph
                for graph, size in graphs:
                    total.add_(self._graph_products(graph, rows).to(out_dtype), alpha=size)
                    count += size
            else:
                builder = _GraphBuilder(self) if self._wants_graphs() else None
                for inputs, targets, size in self._batches():
                    if builder is not None and builder.keeping:
                        with self._fitting(inputs, targets):
                            graph = builder.build(inputs, targets, size)
                        products = self._graph_products(graph, rows)
                    else:
                        with self._fitting(inputs, targets):
                            products = self._batch_products(inputs, targets, rows)
                    total.add_(products.to(out_dtype), alpha=size)
                    count += size
                if builder is not None:
                    builder.finish()
        self.num_matvecs += k
        if self._on_products is not None:
            self._on_products(k)
        return (total / count).T.to(matrix.device)

    def __matmul__(self, other: Tensor) -> Tensor:
        """``op @ v`` (n,) or ``op @ V`` (n, k)."""
        if isinstance(other, Tensor) and other.ndim == 1:
            return self.matvec(other)
        return self.matmat(other)

    def _graph_products(self, graph: RetainedGradient, rows: Tensor) -> Tensor:
        """grad^2 L_b times each row of ``rows`` (k, n) through a retained graph, (k, n)."""
        pieces = self._unflatten_rows(rows)
        products = graph.products([pieces[name] for name in self.names])
        return self._flatten_rows(dict(zip(self.names, products, strict=True)), rows.shape[0])

    def _batch_products(self, inputs: Any, targets: Tensor, rows: Tensor) -> Tensor:
        """grad^2 L_b times each row of ``rows`` (k, n), as (k, n) in :attr:`dtype`."""
        k = rows.shape[0]
        if k > 1 and self._vectorize and self._vmap_works is not False:
            try:
                products = self._vmapped_products(inputs, targets, rows)
            except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
                if self._vmap_works:
                    raise  # vmap worked before: this is a real error
                self._vmap_works = False
                warnings.warn(
                    "HessianOperator: vmap over the tangents failed for this model "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); computing the "
                    "products of a block one column at a time",
                    RuntimeWarning,
                    stacklevel=3,
                )
            else:
                self._vmap_works = True
                return products
        return torch.stack(
            [
                self.flatten(
                    hvp(
                        self._model,
                        self._loss_fn,
                        inputs,
                        targets,
                        self.unflatten(row),
                        params=self.names,
                        hvp_method=self.hvp_method,
                        fallback=self._fallback,
                    )
                )
                for row in rows
            ]
        )

    def _vmapped_products(self, inputs: Any, targets: Tensor, rows: Tensor) -> Tensor:
        def product(vectors: dict[str, Tensor]) -> dict[str, Tensor]:
            return hvp(
                self._model,
                self._loss_fn,
                inputs,
                targets,
                vectors,
                params=self.names,
                hvp_method=HVPMethod.FORWARD_OVER_REVERSE,
            )

        with warnings.catch_warnings():
            # hvp's own fallback (double backward) cannot run under vmap; its warning would
            # be misleading here, and the failure is reported by _batch_products.
            warnings.simplefilter("ignore", RuntimeWarning)
            products = vmap(product)(self._unflatten_rows(rows))
        return self._flatten_rows(products, rows.shape[0])

    # ------------------------------------------------------------------ SciPy

    def to_scipy(self) -> LinearOperator:
        """H as a ``scipy.sparse.linalg.LinearOperator`` of shape (n, n), dtype float64.

        ``matvec`` / ``matmat`` take and return float64 numpy arrays; the products are computed
        as by :meth:`matmat` (per-batch products in :attr:`dtype`, float64 sum). H is
        symmetric, so ``rmatvec`` / ``rmatmat`` are the same products. For
        ``scipy.sparse.linalg.eigsh``, ``cg``, ``lobpcg``.
        """

        def matmat(block: NDArray[np.float64]) -> NDArray[np.float64]:
            array = np.asarray(block, dtype=np.float64)
            if array.ndim == 1:
                array = array[:, None]
            result = self.matmat(torch.from_numpy(np.ascontiguousarray(array)))
            out: NDArray[np.float64] = result.cpu().numpy()
            return out

        def matvec(vector: NDArray[np.float64]) -> NDArray[np.float64]:
            out: NDArray[np.float64] = matmat(np.asarray(vector).reshape(-1, 1))[:, 0]
            return out

        return LinearOperator(
            self.shape,
            matvec=matvec,
            rmatvec=matvec,
            matmat=matmat,
            rmatmat=matmat,
            dtype=np.float64,
        )

    def __repr__(self) -> str:
        return (
            f"HessianOperator(num_params={self._num_params}, dtype={self._dtype}, "
            f"device={self._device}, hvp_method={self.hvp_method.value!r}, "
            f"retains_graph={self.retains_graph}, num_matvecs={self.num_matvecs})"
        )


class _GraphBuilder:
    """Builds the retained gradient graphs of one pass over the data, within their budget.

    The budget is the device's memory with ``retain_graph=True`` (beyond: UsageError) and
    :data:`RETAINED_GRAPH_SHARE` of it with None (beyond: the graphs are dropped, the operator
    remembers not to build them again, and the pass goes on without). :meth:`finish` hands the
    graphs of a completed pass to the operator.
    """

    def __init__(self, operator: HessianOperator) -> None:
        self._operator = operator
        self._snapshot = _Snapshot(operator._model)
        self._graphs: list[tuple[RetainedGradient, int]] = []
        self.nbytes = self._snapshot.nbytes
        limit = _budget.memory_limit(operator.device)
        self._strict = operator.retain_graph is True
        self._budget = limit if self._strict else int(limit * RETAINED_GRAPH_SHARE)
        self.keeping = True

    def build(self, inputs: Any, targets: Tensor, size: int) -> RetainedGradient:
        """The graph of one batch (usable for this batch's products even when not kept)."""
        op = self._operator
        graph = RetainedGradient(op._model, op._loss_fn, inputs, targets, op.names)
        self.nbytes += graph.nbytes
        if self.nbytes <= self._budget:
            self._graphs.append((graph, size))
            return graph
        if self._strict:
            raise UsageError(
                f"HessianOperator: retain_graph=True, but the gradient graphs of the first "
                f"{len(self._graphs) + 1} batch(es) already hold {_budget._gib(self.nbytes)}, "
                f"more than the memory of {op.device} ({_budget._gib(self._budget)}); pass "
                "retain_graph=None (automatic) or False, or fewer data"
            )
        self.keeping = False
        self._graphs = []
        op._graphs_refused = True
        return graph

    def finish(self) -> None:
        """Hand the graphs to the operator if every batch's graph was kept."""
        if self.keeping:
            self._operator._graphs = self._graphs
            self._operator._snapshot = self._snapshot


def _mean(losses: list[tuple[float, int]]) -> float:
    """sum_b (n_b / N) L_b from ``(L_b, n_b)`` pairs (float64)."""
    return sum(value * size for value, size in losses) / sum(size for _, size in losses)


def _check_device(model: nn.Module, device: str | torch.device) -> None:
    """Raise :class:`UsageError` unless ``device`` is where the model's parameters live."""
    wanted, actual = torch.device(device), model_device(model)
    same = wanted.type == actual.type and (
        wanted.index is None or wanted.index == (actual.index if actual.index is not None else 0)
    )
    if not same:
        raise UsageError(
            f"HessianOperator: device={str(wanted)!r} but the model is on {str(actual)!r}; "
            f"the model is never moved for you: move it first (model.to({str(wanted)!r}))"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
