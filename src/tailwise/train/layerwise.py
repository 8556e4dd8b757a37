"""Layer-wise learning rates from the power-law exponent alpha of each layer's ESD.

Source 000 ch. 2 (after TempBalance, Zhou et al.): a layer whose empirical spectral density
(ESD) is less heavy-tailed (larger alpha) is taken to be less trained and is given a larger
share of the learning rate; alpha is re-measured on the current weights as training goes.
Three pieces, usable apart:

- :func:`layer_param_groups`: optimizer param groups, one per analysed weight matrix (its
  bias and the normalization layers it feeds in the same group), the rest in one group.
- :func:`allocate_lr`: the pure map from n alphas and the base rate lr_t to n learning rates
  (source 000 eqs. 2.13-2.31 and TempBalance's linear map).
- :class:`LayerwiseLR`: a learning-rate scheduler (and :class:`~tailwise.train.loop.Callback`)
  that re-measures alpha every ``every`` epochs or steps and sets each group's rate.

Alphas are measured with the spectral code of :func:`tailwise.analyze` (same ESD, same fit):
``esd.eigenvalues`` (``eigenvalues_batch`` for equal shapes off the CPU) and
``powerlaw.fit_power_law``. What differs from TempBalance's code, on purpose:

- a normalization layer follows the layer whose output it normalizes, found by tracing a
  forward pass, not by name (``bnK`` <- ``convK``) or module order: projection-shortcut
  BatchNorms move with their shortcut conv instead of staying at the global rate;
- a layer whose alpha cannot be measured (too few eigenvalues, a failed or infinite fit,
  non-finite weights) keeps the base rate and is reported in :attr:`LayerwiseLR.degenerate`
  with a warning, instead of an infinite alpha that wrecks the linear map;
- param groups carry their layer's name (key ``"layer"``), so learning rates are set by
  name, never by the position of a group in the optimizer.
"""

from __future__ import annotations

import contextlib
import enum
import math
import numbers
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._modules import as_args
from tailwise._threads import blas_work
from tailwise.models import example_input_shape
from tailwise.spectral.analyze import MIN_EVALS, MIN_SLICE_M
from tailwise.spectral.esd import ConvMode, eigenvalues, eigenvalues_batch, layer_matrices
from tailwise.spectral.powerlaw import XminMethod, fit_power_law
from tailwise.train.loop import Callback
from tailwise.weights import LayerKind, compile_pattern, module_kind

__all__ = ["LR_MAPPINGS", "LRMapping", "LayerwiseLR", "allocate_lr", "layer_param_groups"]

FloatArray = NDArray[np.float64]

#: Group name of the parameters that follow the base schedule (``layer_param_groups``).
REST = "rest"
#: Module types whose weight matrices are analysed (TempBalance: Conv2d and Linear).
ANALYSED_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# Rounds of redrawing non-positive samples before a stochastic mapping gives up.
_MAX_REDRAWS = 10_000
# Equal-shape matrices decomposed as one batch off the CPU, up to this many float64 bytes.
_BATCH_BYTES = 256 * 2**20


class LRMapping(str, enum.Enum):
    """How n alphas become n learning rates (see :func:`allocate_lr` for the equations)."""

    IDENTITY = "identity"  # source 000 eq. 2.13
    SQUARE = "square"  # eq. 2.16
    CUBE = "cube"  # eq. 2.17
    SQRT = "sqrt"  # eq. 2.18
    CBRT = "cbrt"  # eq. 2.18
    ROOT4 = "root4"  # eq. 2.18
    LOG = "log"  # eq. 2.18
    SOFTMAX = "softmax"  # eq. 2.19
    NEGPOW2 = "negpow2"  # eqs. 2.20-2.22
    NORMAL = "normal"  # eqs. 2.26-2.27
    PERMUTED_NORMAL = "permuted_normal"  # eqs. 2.28-2.29
    EMG = "emg"  # eqs. 2.30-2.31
    TB = "tb"  # TempBalance's linear map


#: Names accepted by ``allocate_lr(mapping=...)`` and ``LayerwiseLR(mapping=...)``.
LR_MAPPINGS: tuple[str, ...] = tuple(m.value for m in LRMapping)

# g(alpha) of the normalized mappings lr_i = lr_t * n * g(alpha_i) / sum_j g(alpha_j).
_POWERS: dict[LRMapping, Callable[[FloatArray], FloatArray]] = {
    LRMapping.IDENTITY: lambda a: a,
    LRMapping.SQUARE: np.square,
    LRMapping.CUBE: lambda a: a**3,
    LRMapping.SQRT: np.sqrt,
    LRMapping.CBRT: np.cbrt,
    LRMapping.ROOT4: lambda a: np.sqrt(np.sqrt(a)),
    LRMapping.LOG: np.log,
}
_STOCHASTIC = frozenset({LRMapping.NORMAL, LRMapping.PERMUTED_NORMAL, LRMapping.EMG})


# ---------------------------------------------------------------------------------------------
# Argument parsing (once, at the public boundary)


def _parse_mapping(mapping: LRMapping | str, where: str) -> LRMapping:
    try:
        return LRMapping(mapping)
    except ValueError:
        raise UsageError(
            f"{where}: mapping must be one of {', '.join(LR_MAPPINGS)}; got {mapping!r}"
        ) from None


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_s(s: Sequence[float], where: str) -> tuple[float, float]:
    if isinstance(s, (str, bytes)) or not isinstance(s, Sequence) or len(s) != 2:
        raise UsageError(f"{where}: s must be a pair (s1, s2) of numbers, got {s!r}")
    s1, s2 = s
    if not (_is_real(s1) and _is_real(s2) and math.isfinite(s1) and math.isfinite(s2)):
        raise UsageError(f"{where}: s must be two finite numbers, got {s!r}")
    if not 0 <= s1 <= s2:
        raise UsageError(f"{where}: s = (s1, s2) needs 0 <= s1 <= s2, got {s!r}")
    return float(s1), float(s2)


def _parse_rng(rng: np.random.Generator | int | None, where: str) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise UsageError(
        f"{where}: rng must be a numpy.random.Generator, an int >= 0 or None; got {rng!r}"
    )


def _parse_alphas(alphas: ArrayLike, where: str) -> FloatArray:
    try:
        a = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: alphas must be a sequence of numbers, got {alphas!r}") from None
    if a.ndim != 1:
        raise UsageError(f"{where}: alphas must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise UsageError(f"{where}: alphas is empty; there is no layer to allocate to")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        shown = ", ".join(f"alphas[{i}] = {a[i]}" for i in bad[:5])
        raise UsageError(f"{where}: alphas must be finite; {shown}")
    return a


def _check_domain(a: FloatArray, mapping: LRMapping, where: str) -> None:
    """Alphas the mapping is defined on: g(alpha) > 0 for the normalized power maps."""
    if mapping in _POWERS:
        floor = 1.0 if mapping is LRMapping.LOG else 0.0
        bad = np.flatnonzero(a <= floor)
        if bad.size:
            i = int(bad[0])
            need = "log(alpha) > 0, i.e. alpha > 1" if floor else "alpha > 0"
            raise UsageError(
                f"{where}: mapping {mapping.value!r} needs {need} for every layer "
                f"(a power-law fit always gives alpha > 1); got alphas[{i}] = {a[i]}"
            )


# ---------------------------------------------------------------------------------------------
# allocate_lr


def _ranked(values: FloatArray, a: FloatArray) -> FloatArray:
    """Assign the ascending ``values`` by the rank of ``a``: the layer with the j-th smallest
    alpha gets ``sorted(values)[j]``; layers with equal alphas share the mean of their
    entries (so the sum is kept and tied layers get one rate)."""
    out = np.empty_like(values)
    out[np.argsort(a, kind="stable")] = np.sort(values)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=out) / counts
    return np.asarray(means[inverse], dtype=np.float64)


def _positive_draws(
    draw: Callable[[NDArray[np.intp]], FloatArray], n: int, mapping: LRMapping, where: str
) -> FloatArray:
    """n samples, each redrawn until positive: the distribution truncated to (0, inf)."""
    index = np.arange(n)
    out = draw(index)
    for _ in range(_MAX_REDRAWS):
        bad = np.flatnonzero(out <= 0)
        if bad.size == 0:
            return out
        out[bad] = draw(bad)
    i = int(np.flatnonzero(out <= 0)[0])
    raise UsageError(
        f"{where}: mapping {mapping.value!r} drew no positive weight for layer {i} in "
        f"{_MAX_REDRAWS} tries; its mean is far below 0"
    )


def allocate_lr(
    alphas: ArrayLike,
    lr_t: float,
    mapping: LRMapping | str,
    *,
    s: Sequence[float] = (0.5, 1.5),
    rng: np.random.Generator | int | None = None,
    nu: float = 1.0,
) -> FloatArray:
    """Learning rates (n,), float64, of n layers with exponents ``alphas`` (n,) at base rate lr_t.

    Normalized mappings, lr_i = lr_t * n * g(alpha_i) / sum_j g(alpha_j) (mean lr = lr_t):

    ============== =========================== ==============================================
    mapping        g(alpha)                    source 000
    ============== =========================== ==============================================
    identity       alpha                       eq. 2.13
    square, cube   alpha^2, alpha^3            eqs. 2.16, 2.17
    sqrt, cbrt,    alpha^(1/2), alpha^(1/3),   eq. 2.18 (powers need alpha > 0)
    root4          alpha^(1/4)
    log            ln(alpha)                   eq. 2.18; needs alpha > 1 (else ln <= 0 would
                                               give a zero or negative rate): an error
    softmax        exp(alpha)                  eq. 2.19, computed as exp(alpha - max alpha)
    ============== =========================== ==============================================

    By rank (``negpow2``, eqs. 2.20-2.22): probabilities [2^-n, 2^-(n-1), ..., 2^-1], the
    residue 1 - sum (= 2^-n) added to the largest; the layer with the j-th smallest alpha
    gets the j-th entry, lr = lr_t * n * p (sums to n lr_t).

    Stochastic (drawn from ``rng``; every draw is redrawn until positive, i.e. the
    distributions are truncated to (0, inf), because a negative weight would be a negative
    learning rate -- gradient ascent):

    - ``normal`` (eqs. 2.26-2.27): y_i ~ N(alpha_i, 1), lr_i = lr_t * n * y_i / sum y
      (2.27 as printed omits the division; it is normalized "following 2.3", like 2.13).
    - ``permuted_normal`` (eqs. 2.28-2.29): n draws x ~ N(lr_t, 1), normalized to
      probabilities x / sum x; the layer with the j-th largest alpha gets the j-th largest
      probability; lr = lr_t * n * probability.
    - ``emg`` (eqs. 2.30-2.31): alpha observed with exponentially modified Gaussian noise,
      y_i = alpha_i + (Z_i - 1/nu) + eps_i with Z_i ~ Exp(rate nu) (eq. 2.30) and
      eps_i ~ N(0, 1): A = Z + eps is the EMG of eq. 2.31, centred so that E[y_i] = alpha_i
      as in eq. 2.26 (``normal`` is the limit nu -> inf); normalized as eq. 2.13.

    ``tb`` (TempBalance): lr_i = np.interp(alpha_i, [min alpha, max alpha],
    [s1 lr_t, s2 lr_t]), s = (s1, s2) with 0 <= s1 <= s2: linear in alpha from s1 lr_t at
    the smallest alpha to s2 lr_t at the largest (mean lr_t only when alphas are symmetric).

    Rules for every mapping: equal alphas (all n equal) give every layer lr_t, also for the
    stochastic mappings, which then draw nothing (there is no spectral signal to allocate
    by); ties within ``negpow2`` and ``permuted_normal`` share the mean of their entries.
    ``alphas`` must be non-empty and finite (an error names the first bad index); lr_t a
    finite number >= 0. ``rng``: a ``numpy.random.Generator`` (advanced), an int seed, or
    None for a fresh generator seeded with 0, so a call without ``rng`` is reproducible.
    ``nu``: rate of the exponential part of ``emg`` (> 0).

    >>> allocate_lr([2.0, 3.0, 5.0], 0.1, "identity").round(3).tolist()
    [0.06, 0.09, 0.15]
    >>> allocate_lr([2.0, 3.0, 5.0], 0.1, "tb").round(3).tolist()
    [0.05, 0.083, 0.15]
    >>> allocate_lr([5.0, 2.0, 3.0], 1.0, "negpow2").tolist()  # p = [1/8, 1/4, 1/2 + 1/8]
    [1.875, 0.375, 0.75]
    """
    where = "allocate_lr"
    how = _parse_mapping(mapping, where)
    a = _parse_alphas(alphas, where)
    if not (_is_real(lr_t) and math.isfinite(lr_t) and lr_t >= 0):
        raise UsageError(f"{where}: lr_t must be a finite number >= 0, got {lr_t!r}")
    s1, s2 = _parse_s(s, where)
    generator = _parse_rng(rng, where)
    if not (_is_real(nu) and math.isfinite(nu) and nu > 0):
        raise UsageError(f"{where}: nu must be a finite number > 0, got {nu!r}")
    _check_domain(a, how, where)
    n = a.size
    lr = float(lr_t)
    if np.all(a == a[0]):
        return np.full(n, lr, dtype=np.float64)
    if how in _POWERS:
        weights = _POWERS[how](a)
        return np.asarray(lr * n * weights / weights.sum(), dtype=np.float64)
    if how is LRMapping.SOFTMAX:
        weights = np.exp(a - a.max())
        return np.asarray(lr * n * weights / weights.sum(), dtype=np.float64)
    if how is LRMapping.TB:
        return np.asarray(np.interp(a, [a.min(), a.max()], [s1 * lr, s2 * lr]), dtype=np.float64)
    if how is LRMapping.NEGPOW2:
        p = 2.0 ** -np.arange(n, 0, -1, dtype=np.float64)
        p[-1] += 1.0 - p.sum()
        return _ranked(lr * n * p, a)
    if how is LRMapping.PERMUTED_NORMAL:
        x = _positive_draws(lambda idx: generator.normal(lr, 1.0, size=idx.size), n, how, where)
        return _ranked(lr * n * x / x.sum(), a)
    if how is LRMapping.NORMAL:
        y = _positive_draws(lambda idx: generator.normal(a[idx], 1.0), n, how, where)
    else:  # EMG
        y = _positive_draws(
            lambda idx: (
                a[idx]
                + generator.exponential(1.0 / nu, size=idx.size)
                - 1.0 / nu
                + generator.normal(0.0, 1.0, size=idx.size)
            ),
            n,
            how,
            where,
        )
    return np.asarray(lr * n * y / y.sum(), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Which matrices, and how many eigenvalues each ESD has (the rules of tailwise.analyze)


def _kind(module: nn.Module) -> LayerKind:
    return LayerKind(module_kind(module))


def _conv_mode(shape: Sequence[int], kind: LayerKind) -> ConvMode:
    """``analyze``'s default ESD of a weight: pooled conv slices, or the flattened kernel when
    the slices are too thin to have a spectrum (fewer than ``MIN_SLICE_M`` columns)."""
    thin = min(shape[0], shape[1]) < MIN_SLICE_M
    if kind.is_conv and len(shape) >= 3 and math.prod(shape[2:]) > 1 and thin:
        return ConvMode.FLATTEN
    return ConvMode.POOLED


def _trainable_weight(module: nn.Module) -> nn.Parameter | None:
    """The parameter that trains ``module``'s weight: ``weight``, or ``weight_orig`` when
    ``torch.nn.utils.prune`` (or :mod:`tailwise.prune`'s masks) made ``weight`` a computed
    tensor; None if there is none."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter):
        return weight
    original = getattr(module, "weight_orig", None)
    return original if isinstance(original, nn.Parameter) else None


def _weight(module: nn.Module) -> Tensor:
    """The module's effective weight, detached: the live values, or for a pruned module
    ``weight_orig * weight_mask`` as of now (``module.weight`` is only refreshed by a forward
    pass, so it can lag the last optimizer step)."""
    original = getattr(module, "weight_orig", None)
    mask = getattr(module, "weight_mask", None)
    if isinstance(original, Tensor) and isinstance(mask, Tensor):
        return (original.detach() * mask.to(original.dtype)).detach()
    weight = module.weight
    assert isinstance(weight, Tensor)
    return weight.detach()


def _num_evals(weight: Tensor, kind: LayerKind) -> int:
    """Eigenvalues in the ESD of ``weight`` as analyze builds it: rf * min(out, in) for pooled
    convolutions, min(out, in * rf) when flattened, min(N, M) for a matrix."""
    return sum(
        stack.shape[0] * min(stack.shape[1], stack.shape[2])
        for _, stack, _ in layer_matrices(weight, kind, _conv_mode(weight.shape, kind))
    )


def _analysed_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv1d/2d/3d and Linear modules with a trainable weight (``weight``, or ``weight_orig``
    of a pruned module), in registration order."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, ANALYSED_MODULES):
            weight = _trainable_weight(module)
            if weight is not None and weight.requires_grad:
                out.append((name, module))
    return out


def _norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Normalization modules (BatchNorm*, LayerNorm, GroupNorm, InstanceNorm*, RMSNorm, ...)
    with a trainable parameter of their own."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if module_kind(module) == LayerKind.NORM.value
        and any(p.requires_grad for p in module.parameters(recurse=False))
    ]


# ---------------------------------------------------------------------------------------------
# Tracing a forward pass: execution order, and which layer feeds each normalization


def _version(tensor: Tensor) -> int:
    try:
        return int(tensor._version)
    except RuntimeError:  # inference tensors have no version counter
        return 0


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no BatchNorm statistics updated, batches of one allowed); each module's own
    mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _trace(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    layers: Mapping[nn.Module, str],
    norms: Mapping[nn.Module, str],
) -> tuple[list[str], dict[str, str | None]]:
    """(analysed layers in order of first execution, {norm: the layer feeding it or None}).

    A normalization is fed by layer X when its input is the very tensor X returned,
    unmodified (no in-place op since: same object, same version counter). A norm called on
    inputs from different producers, or on a tensor no analysed layer returned (a sum, a
    concatenation, a pooled map), has no feeder.
    """
    order: list[str] = []
    seen: set[str] = set()
    produced: dict[int, tuple[Tensor, int, str]] = {}
    sources: dict[str, set[str | None]] = {}

    def after_layer(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        name = layers[module]
        if name not in seen:
            seen.add(name)
            order.append(name)
        if isinstance(output, Tensor):
            produced[id(output)] = (output, _version(output), name)

    def before_norm(module: nn.Module, args: tuple[Any, ...]) -> None:
        source = None
        if args and isinstance(args[0], Tensor):
            hit = produced.get(id(args[0]))
            if hit is not None and hit[0] is args[0] and hit[1] == _version(args[0]):
                source = hit[2]
        sources.setdefault(norms[module], set()).add(source)

    handles = [module.register_forward_hook(after_layer) for module in layers]
    handles += [module.register_forward_pre_hook(before_norm) for module in norms]
    try:
        with _eval_mode(model), torch.no_grad():
            model(*as_args(inputs))
    finally:
        for handle in handles:
            handle.remove()
    feeders = {
        norm: next(iter(found)) if len(found) == 1 else None for norm, found in sources.items()
    }
    return order, feeders


def _example_input(model: nn.Module, where: str) -> Tensor:
    """Zeros of the shape ``example_input_shape(model.architecture())`` (tailwise models)."""
    architecture = getattr(model, "architecture", None)
    hint = (
        "pass example_input= (one batch of inputs), used for one forward pass that finds the "
        "order of the layers and the layer feeding each normalization"
    )
    if not callable(architecture):
        raise UsageError(f"{where}: {type(model).__name__} has no architecture(); {hint}")
    try:
        shape = example_input_shape(architecture())
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        raise UsageError(
            f"{where}: cannot infer an input shape for {type(model).__name__} ({exc}); {hint}"
        ) from None
    floating = [p for p in model.parameters() if p.is_floating_point()]
    dtype = floating[0].dtype if floating else torch.get_default_dtype()
    device = floating[0].device if floating else torch.device("cpu")
    return torch.zeros(shape, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# layer_param_groups


def layer_param_groups(
    model: nn.Module,
    lr: float,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    skip_first_last: bool = True,
    min_evals: int = 50,
    norm_follows: bool = True,
    example_input: Tensor | tuple[Any, ...] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer param groups: one per analysed weight matrix, the rest in one group.

    Analysed layers are the ``Conv1d`` / ``Conv2d`` / ``Conv3d`` / ``Linear`` modules with a
    trainable weight. Each becomes ``{"layer": <module name>, "params": [weight, bias, ...],
    "lr": lr}`` (its own direct parameters), except, sent to the rest group:

    - layers whose weight's parameter name (``stages.0.0.conv1.weight``) is not selected by
      ``include`` / ``exclude`` (regular expressions, ``re.search``; the bias follows its
      weight);
    - with ``skip_first_last``, the first and the last analysed layer in forward execution
      order, over all analysed layers before selection (TempBalance: the stem and the
      classifier);
    - layers whose ESD has fewer than ``min_evals`` eigenvalues (TempBalance: 50), counted
      as :func:`tailwise.analyze` builds the ESD: rf * min(out, in) for a pooled k x k conv
      (rf = k * k), min(out, in * rf) for a conv with slices thinner than 3 (depthwise),
      min(N, M) for a Linear.

    With ``norm_follows``, every normalization layer (BatchNorm, LayerNorm, GroupNorm,
    InstanceNorm, RMSNorm, ...) joins the group of the layer that feeds it: the conv or
    Linear whose output tensor is the norm's input, found on one forward pass (forward hooks;
    eval mode, no gradients, module modes restored; nothing is changed). So ``bn1`` goes with
    ``conv1`` and a projection shortcut's BatchNorm with the shortcut conv, whatever their
    names. A norm fed by something else (a sum, a concatenation, pooling: pre-activation
    blocks, DenseNet) or by a layer sent to the rest group goes to the rest group.

    The forward pass needs ``example_input`` (a tensor or a tuple of positional arguments,
    on the model's device); if None, tailwise models' ``architecture()`` gives the shape
    (:func:`tailwise.models.example_input_shape`), else a :class:`~tailwise.UsageError` asks
    for one. No forward pass is run when neither ``skip_first_last`` nor a trainable
    normalization with ``norm_follows`` needs one.

    Returns the layer groups in forward order (layers never executed after them, in
    registration order), then ``{"layer": "rest", "params": [...], "lr": lr}``. Every
    trainable parameter (``requires_grad``) is in exactly one group; frozen ones in none;
    empty groups are left out. Pass the list to any torch optimizer; :class:`LayerwiseLR`
    reads the ``"layer"`` keys.

    >>> from tailwise.models import resnet20
    >>> groups = layer_param_groups(resnet20(), lr=0.1)
    >>> [g["layer"] for g in groups][:3]
    ['stages.0.0.conv1', 'stages.0.0.conv2', 'stages.0.1.conv1']
    >>> len(groups[0]["params"])  # conv1.weight and bn1's weight and bias
    3
    """
    where = "layer_param_groups"
    if not isinstance(model, nn.Module):
        raise UsageError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not (_is_real(lr) and math.isfinite(lr) and lr >= 0):
        raise UsageError(f"{where}: lr must be a finite number >= 0, got {lr!r}")
    if isinstance(min_evals, bool) or not isinstance(min_evals, int) or min_evals < 0:
        raise UsageError(f"{where}: min_evals must be an int >= 0, got {min_evals!r}")
    for flag, value in (("skip_first_last", skip_first_last), ("norm_follows", norm_follows)):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {flag} must be a bool, got {value!r}")
    include_re = compile_pattern(include, "include")
    exclude_re = compile_pattern(exclude, "exclude")

    param_names = {id(p): name for name, p in model.named_parameters()}
    layers = _analysed_modules(model)
    norms = _norm_modules(model) if norm_follows else []
    order: list[str] = [name for name, _ in layers]
    feeders: dict[str, str | None] = {}
    if layers and (skip_first_last or norms):
        inputs = example_input if example_input is not None else _example_input(model, where)
        executed, feeders = _trace(
            model, inputs, {m: n for n, m in layers}, {m: n for n, m in norms}
        )
        order = executed + [name for name in order if name not in executed]
        skipped = {executed[0], executed[-1]} if skip_first_last and executed else set()
    else:
        skipped = set()

    by_name = dict(layers)
    chosen: list[str] = []
    for name in order:
        module = by_name[name]
        weight_name = param_names.get(id(_trainable_weight(module)), "").removesuffix("_orig")
        if include_re is not None and not include_re.search(weight_name):
            continue
        if exclude_re is not None and exclude_re.search(weight_name):
            continue
        if name in skipped or _num_evals(_weight(module), _kind(module)) < min_evals:
            continue
        chosen.append(name)

    followers: dict[str, list[nn.Module]] = {}
    for norm_name, norm in norms:
        feeder = feeders.get(norm_name)
        if feeder is not None:
            followers.setdefault(feeder, []).append(norm)

    assigned: set[int] = set()
    groups: list[dict[str, Any]] = []

    def take(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
        taken = []
        for module in modules:
            for param in module.parameters(recurse=False):
                if param.requires_grad and id(param) not in assigned:
                    assigned.add(id(param))
                    taken.append(param)
        return taken

    for name in chosen:
        params = take([by_name[name], *followers.get(name, [])])
        if params:
            groups.append({"layer": name, "params": params, "lr": float(lr)})
    rest = []
    for param in model.parameters():
        if param.requires_grad and id(param) not in assigned:
            assigned.add(id(param))
            rest.append(param)
    if rest:
        groups.append({"layer": REST, "params": rest, "lr": float(lr)})
    return groups


# ---------------------------------------------------------------------------------------------
# Measuring alpha on the current weights


def _measure_alphas(
    layers: Sequence[tuple[str, nn.Module]], xmin: XminMethod, *, batch: bool | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """({layer: alpha}, {layer: reason}) from the current weights, without gradients.

    Same ESD and fit as :func:`tailwise.analyze` with ``fit=xmin``. On the CPU each layer
    goes through ``esd.eigenvalues`` (SciPy loops over matrices anyway); on other devices
    equal-shape matrices (conv slices included) go through ``esd.eigenvalues_batch`` and
    pooled conv spectra are assembled from their slices, scaled as ``layer_matrices`` says.
    ``batch`` forces either path (tests).
    """
    alphas: dict[str, float] = {}
    reasons: dict[str, str] = {}
    spectra: dict[str, FloatArray] = {}
    plans: list[tuple[str, Tensor, float]] = []  # (layer, (S, a, b) stack, weight scale)
    on_cpu = any(_weight(module).device.type == "cpu" for _, module in layers)
    # On the CPU the spectra are SciPy's (dsyrk + eigh): BLAS keeps its threads, torch gets
    # one, as in analyze (inside fit's torch_work block the two pools would spin-wait).
    with torch.no_grad(), blas_work() if on_cpu else contextlib.nullcontext():
        for name, module in layers:
            weight = _weight(module)
            kind = _kind(module)
            if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
                reasons[name] = "weights are NaN or infinite"
                continue
            mode = _conv_mode(weight.shape, kind)
            count = _num_evals(weight, kind)
            if count < MIN_EVALS:
                reasons[name] = f"too few eigenvalues ({count} < {MIN_EVALS}) for a power-law fit"
                continue
            use_batch = weight.device.type != "cpu" if batch is None else batch
            if not use_batch:
                [(_, esd)] = eigenvalues(weight, kind=kind, conv=mode)
                spectra[name] = esd.evals
            else:
                [(_, stack, scale)] = layer_matrices(weight, kind, mode)
                plans.append((name, stack, scale))
        spectra.update(_batched_spectra(plans))
        for name, _ in layers:
            if name in reasons:
                continue
            fit = fit_power_law(spectra[name], xmin=xmin)
            if not fit.ok:
                reasons[name] = f"power-law fit failed: {fit.reason}"
            elif not math.isfinite(fit.alpha):
                reasons[name] = f"power-law fit gave alpha = {fit.alpha}"
            else:
                alphas[name] = float(fit.alpha)
    return alphas, reasons


def _batched_spectra(plans: Sequence[tuple[str, Tensor, float]]) -> dict[str, FloatArray]:
    """Pooled ESDs of several layers, equal-shape matrices decomposed in batches."""
    by_shape: dict[tuple[Any, ...], list[tuple[str, Tensor]]] = {}
    for name, stack, _ in plans:
        key = (tuple(stack.shape[1:]), stack.dtype, stack.device)
        by_shape.setdefault(key, []).extend((name, matrix) for matrix in stack.unbind(0))
    pieces: dict[str, list[FloatArray]] = {}
    for (shape, _, _), items in by_shape.items():
        per_batch = max(1, _BATCH_BYTES // (8 * math.prod(shape)))
        for start in range(0, len(items), per_batch):
            chunk = items[start : start + per_batch]
            esds = eigenvalues_batch([matrix for _, matrix in chunk])
            for (name, _), esd in zip(chunk, esds, strict=True):
                pieces.setdefault(name, []).append(esd.evals)
    return {name: np.sort(np.concatenate(pieces[name]) * scale**2) for name, _, scale in plans}


# ---------------------------------------------------------------------------------------------
# LayerwiseLR


class _Unit(str, enum.Enum):
    EPOCH = "epoch"
    STEP = "step"


_LRScheduler = torch.optim.lr_scheduler.LRScheduler


class LayerwiseLR(Callback):
    """Layer-wise learning rates from alpha, re-measured during training (source 000 ch. 2).

    ``optimizer``'s param groups come from :func:`layer_param_groups`: a group with a
    ``"layer"`` key (other than ``"rest"``) is the weight matrix of that module of
    ``model``; every other group follows the base schedule. At construction (step 0) and then
    at every :meth:`step` the base rate lr_t is advanced, alpha of every layer group is
    re-measured from the current weights when ``last_epoch`` is a multiple of ``every``, and
    the layer groups get ``allocate_lr(alphas, lr_t, mapping, s=s)`` (with this scheduler's
    random generator for the stochastic mappings, drawn anew at every step).

    Args:
        optimizer: any torch optimizer whose groups carry ``"layer"`` keys.
        model: the module the layer names refer to (its weights are read, never changed).
        mapping: one of :data:`LR_MAPPINGS` (default ``"tb"``, TempBalance's linear map).
        total_steps: T, the number of :meth:`step` calls planned (epochs or batches).
        lr0: initial base rate for ``base="cosine"``; default: the groups' current lr (all
            groups must then have one lr, as :func:`layer_param_groups` gives them).
        base: ``"cosine"``, lr_t = lr0 / 2 * (1 + cos(pi * t / T)) with t = ``last_epoch``
            (source 000 eq. 2.12 writes t + 1: the same curve one unit earlier, already below
            lr0 in the first unit and zero in the last; t gives lr0 in the first unit, like
            ``torch.optim.lr_scheduler.CosineAnnealingLR``), held at 0 for t >= T. Or a
            torch ``LRScheduler`` built on the same optimizer, which this scheduler steps
            (do not step it yourself): before each of its steps every group gets back the
            rate that scheduler last set, so chainable schedulers (StepLR, MultiStepLR, ...)
            stay correct; lr_t is then the rate it sets for the ``"rest"`` group (or, without
            one, for the first group without a layer, else the first group); groups without
            a layer keep the rates it sets for them.
        every: alphas are re-measured every ``every`` units (>= 1); between measurements the
            latest alphas are reused with the current lr_t.
        unit: ``"epoch"`` or ``"step"``: what one :meth:`step` call is. As a callback of
            :func:`~tailwise.train.loop.fit`, ``on_epoch_end`` steps when ``unit="epoch"``
            and ``on_batch_end`` when ``unit="step"``.
        alpha: the power-law fit: ``"median"`` (Hill estimator, xmin = the median eigenvalue,
            TempBalance's default) or ``"ks"`` (KS-optimal xmin, :func:`tailwise.analyze`'s
            default).
        s: (s1, s2) of the ``"tb"`` mapping.
        seed: seeds the generator of the stochastic mappings (an int, or a torch.Generator
            from which one 63-bit seed is drawn).

    Degenerate layers -- ESD with fewer than ``tailwise.spectral.analyze.MIN_EVALS``
    eigenvalues, a failed or non-finite fit, NaN/Inf weights -- keep lr_t, are left out of
    the allocation (n counts the others), are listed in :attr:`degenerate`
    (``{layer: reason}``, as of the latest measurement) and are warned about once each.

    Attributes: ``last_epoch`` (number of :meth:`step` calls), ``alphas`` (``{layer:
    alpha}`` of the latest measurement), ``degenerate``, :attr:`history` (one row per group
    per step: ``step``, ``group``, ``layer``, ``alpha``, ``lr``, ``base_lr``) and
    :attr:`trajectory` (the same as a DataFrame). :meth:`state_dict` /
    :meth:`load_state_dict` save and restore everything that changes (counters, alphas,
    history, the random generator, a wrapped scheduler), so a resumed run continues exactly.

    >>> from tailwise.models import SmallCNN
    >>> model = SmallCNN(channels=(16, 32, 32))
    >>> groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=10)
    >>> optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    >>> scheduler = LayerwiseLR(optimizer, model, mapping="sqrt", total_steps=10)
    >>> len(scheduler.get_last_lr()) == len(groups)
    True
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        *,
        mapping: LRMapping | str = "tb",
        total_steps: int,
        lr0: float | None = None,
        base: str | torch.optim.lr_scheduler.LRScheduler = "cosine",
        every: int = 1,
        unit: str = "epoch",
        alpha: str = "median",
        s: Sequence[float] = (0.5, 1.5),
        seed: int | torch.Generator = 0,
    ) -> None:
        where = "LayerwiseLR"
        if not isinstance(optimizer, torch.optim.Optimizer):
            kind = type(optimizer).__name__
            raise UsageError(f"{where}: optimizer must be a torch.optim.Optimizer, got {kind}")
        if not isinstance(model, nn.Module):
            raise UsageError(
                f"{where}: model must be a torch.nn.Module, got {type(model).__name__}"
            )
        self.mapping = _parse_mapping(mapping, where)
        for what, value in (("total_steps", total_steps), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{where}: {what} must be an int >= 1, got {value!r}")
        try:
            self.unit = _Unit(unit)
        except ValueError:
            raise UsageError(f"{where}: unit must be 'epoch' or 'step', got {unit!r}") from None
        if alpha not in (XminMethod.MEDIAN.value, XminMethod.KS.value):
            raise UsageError(f"{where}: alpha must be 'median' or 'ks', got {alpha!r}")
        self.alpha_fit = XminMethod(alpha)
        self.s = _parse_s(s, where)
        self.total_steps = total_steps
        self.every = every
        self.optimizer = optimizer
        self.model = model
        self._layers = self._layer_groups(where)
        self._reference = self._reference_group()
        self._base: _LRScheduler | None = None
        if isinstance(base, str):
            if base != "cosine":
                raise UsageError(
                    f"{where}: base must be 'cosine' or a torch LRScheduler, got {base!r}"
                )
            self.lr0 = self._initial_lr(lr0, where)
        else:
            self._base = self._wrapped(base, lr0, where)
            self.lr0 = float(self._base.get_last_lr()[self._reference])
        self._rng = np.random.default_rng(self._seed(seed, where))
        self.last_epoch = 0
        self.alphas: dict[str, float] = {}
        self.degenerate: dict[str, str] = {}
        self._warned: set[str] = set()
        self._records: list[list[Any]] = []  # [step, base lr, [alpha per group], [lr per group]]
        self._last_lr: list[float] = []
        self._measure()
        self._apply(self._base_lr_now())

    # -- construction helpers ------------------------------------------------------------------

    def _layer_groups(self, where: str) -> dict[int, tuple[str, nn.Module]]:
        """{group index: (layer name, module)} for the groups with a layer."""
        out: dict[int, tuple[str, nn.Module]] = {}
        seen: dict[str, int] = {}
        for index, group in enumerate(self.optimizer.param_groups):
            name = group.get("layer")
            if name is None or name == REST:
                continue
            if not isinstance(name, str):
                raise UsageError(f"{where}: group {index} has a non-string layer {name!r}")
            if name in seen:
                raise UsageError(
                    f"{where}: groups {seen[name]} and {index} both name layer {name!r}"
                )
            seen[name] = index
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                raise UsageError(
                    f"{where}: group {index} names layer {name!r}, which is not a module of "
                    f"the model"
                ) from None
            weight = _trainable_weight(module)
            if weight is None or weight.ndim < 2:
                raise UsageError(
                    f"{where}: layer {name!r} (group {index}) has no weight matrix to analyse"
                )
            if not any(p is weight for p in group["params"]):
                raise UsageError(
                    f"{where}: group {index} names layer {name!r} but does not hold its weight; "
                    "build the groups with layer_param_groups"
                )
            out[index] = (name, module)
        if not out:
            raise UsageError(
                f"{where}: no param group of the optimizer names a layer (key 'layer'); build "
                "the groups with layer_param_groups(model, lr)"
            )
        return out

    def _reference_group(self) -> int:
        groups = self.optimizer.param_groups
        for index, group in enumerate(groups):
            if group.get("layer") == REST:
                return index
        for index in range(len(groups)):
            if index not in self._layers:
                return index
        return 0

    def _initial_lr(self, lr0: float | None, where: str) -> float:
        if lr0 is not None:
            if not (_is_real(lr0) and math.isfinite(lr0) and lr0 >= 0):
                raise UsageError(f"{where}: lr0 must be a finite number >= 0, got {lr0!r}")
            return float(lr0)
        rates = {float(group["lr"]) for group in self.optimizer.param_groups}
        if len(rates) != 1:
            raise UsageError(
                f"{where}: the optimizer's groups have different lrs {sorted(rates)}; pass lr0"
            )
        return rates.pop()

    def _wrapped(self, base: Any, lr0: float | None, where: str) -> _LRScheduler:
        if not isinstance(base, _LRScheduler) or isinstance(
            base, torch.optim.lr_scheduler.ReduceLROnPlateau
        ):
            raise UsageError(
                f"{where}: base must be 'cosine' or a torch LRScheduler stepped without "
                f"arguments (not ReduceLROnPlateau), got {type(base).__name__}"
            )
        if base.optimizer is not self.optimizer:
            raise UsageError(f"{where}: the base scheduler must be built on the same optimizer")
        if lr0 is not None:
            raise UsageError(f"{where}: lr0 is for base='cosine'; the wrapped scheduler sets lr_t")
        return base

    @staticmethod
    def _seed(seed: int | torch.Generator, where: str) -> int:
        if isinstance(seed, torch.Generator):
            return int(torch.randint(0, 2**63 - 1, (), generator=seed))
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(
                f"{where}: seed must be an int >= 0 or a torch.Generator, got {seed!r}"
            )
        return seed

    # -- the schedule --------------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Names of the layer groups, in group order."""
        return [name for name, _ in self._layers.values()]

    @property
    def base_lr(self) -> float:
        """lr_t as last applied (the base schedule's rate, before the layer allocation)."""
        return float(self._records[-1][1])

    @property
    def layer_lrs(self) -> dict[str, float]:
        """``{layer: lr}`` of the layer groups as last set."""
        return {name: self._last_lr[index] for index, (name, _) in self._layers.items()}

    def _base_lr_now(self) -> float:
        """lr_t at ``last_epoch`` (cosine), or the wrapped scheduler's current reference lr."""
        if self._base is not None:
            return float(self._base.get_last_lr()[self._reference])
        t = min(self.last_epoch, self.total_steps)
        return self.lr0 / 2.0 * (1.0 + math.cos(math.pi * t / self.total_steps))

    def _advance_base(self) -> float:
        if self._base is None:
            return self._base_lr_now()
        for group, rate in zip(self.optimizer.param_groups, self._base.get_last_lr(), strict=True):
            group["lr"] = rate
        self._base.step()
        return self._base_lr_now()

    def _measure(self) -> None:
        alphas, reasons = _measure_alphas(list(self._layers.values()), self.alpha_fit)
        self.alphas = alphas
        self.degenerate = reasons
        new = [name for name in reasons if name not in self._warned]
        if new:
            self._warned.update(new)
            listed = "; ".join(f"{name}: {reasons[name]}" for name in new)
            warnings.warn(
                f"LayerwiseLR: {len(new)} layer(s) keep the base learning rate: {listed}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _apply(self, lr_t: float) -> None:
        groups = self.optimizer.param_groups
        healthy = [i for i, (name, _) in self._layers.items() if name in self.alphas]
        rates = {}
        if healthy:
            values = [self.alphas[self._layers[i][0]] for i in healthy]
            allocated = allocate_lr(values, lr_t, self.mapping, s=self.s, rng=self._rng)
            rates = dict(zip(healthy, allocated.tolist(), strict=True))
        if self._base is not None:
            base_rates = [float(rate) for rate in self._base.get_last_lr()]
        else:
            base_rates = [lr_t] * len(groups)
        lrs = []
        alphas = []
        for index, group in enumerate(groups):
            rate = rates.get(index, lr_t if index in self._layers else base_rates[index])
            group["lr"] = float(rate)
            lrs.append(float(rate))
            layer = self._layers.get(index)
            alphas.append(self.alphas.get(layer[0], math.nan) if layer else math.nan)
        self._last_lr = lrs
        self._records.append([self.last_epoch, float(lr_t), alphas, lrs])

    def step(self) -> None:
        """Advance one unit: the base rate, alpha (every ``every`` units) and every group's lr."""
        self.last_epoch += 1
        lr_t = self._advance_base()
        if self.last_epoch % self.every == 0:
            self._measure()
        self._apply(lr_t)

    def get_last_lr(self) -> list[float]:
        """The learning rate of every param group (in group order) as last set."""
        return list(self._last_lr)

    # -- callback hooks ------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        """:meth:`step` after every epoch of :func:`~tailwise.train.loop.fit` (unit "epoch")."""
        if self.unit is _Unit.EPOCH:
            self.step()

    def on_batch_end(self, step: int, model: nn.Module, loss: Tensor) -> None:
        """:meth:`step` after every optimizer step of ``fit`` (unit "step")."""
        if self.unit is _Unit.STEP:
            self.step()

    # -- records -------------------------------------------------------------------------------

    def _group_label(self, index: int) -> str:
        layer = self.optimizer.param_groups[index].get("layer")
        return layer if isinstance(layer, str) else REST

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per param group per step: ``{"step", "group", "layer", "alpha", "lr",
        "base_lr"}``; ``alpha`` is NaN for groups without a layer and degenerate layers,
        ``layer`` is ``"rest"`` for groups without one. Steps: 0 (construction) .. last_epoch.
        """
        labels = [self._group_label(i) for i in range(len(self.optimizer.param_groups))]
        return [
            {
                "step": step,
                "group": index,
                "layer": labels[index],
                "alpha": alphas[index],
                "lr": lrs[index],
                "base_lr": base_lr,
            }
            for step, base_lr, alphas, lrs in self._records
            for index in range(len(lrs))
        ]

    @property
    def trajectory(self) -> pd.DataFrame:
        """:attr:`history` as a DataFrame (columns step, group, layer, alpha, lr, base_lr)."""
        columns = ["step", "group", "layer", "alpha", "lr", "base_lr"]
        return pd.DataFrame(self.history, columns=columns)

    # -- state ---------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping.value,
            "layers": self.layers,
            "total_steps": self.total_steps,
            "every": self.every,
            "unit": self.unit.value,
            "alpha": self.alpha_fit.value,
            "s": list(self.s),
            "lr0": self.lr0,
            "base": "cosine" if self._base is None else type(self._base).__name__,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: plain Python values (``torch.load(weights_only=True)``
        reads them back), plus the wrapped scheduler's own state dict."""
        return {
            "config": self._config(),
            "last_epoch": self.last_epoch,
            "alphas": dict(self.alphas),
            "degenerate": dict(self.degenerate),
            "warned": sorted(self._warned),
            "rng": self._rng.bit_generator.state,
            "records": [[step, lr, list(a), list(r)] for step, lr, a, r in self._records],
            "last_lr": list(self._last_lr),
            "base": None if self._base is None else self._base.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set every group's lr to the saved rates.

        The scheduler must be built with the same options on groups naming the same layers;
        a difference raises :class:`~tailwise.UsageError` naming it.
        """
        where = "LayerwiseLR.load_state_dict"
        missing = {"config", "last_epoch", "alphas", "degenerate", "rng", "records", "last_lr"}
        missing -= set(state_dict)
        if missing:
            raise UsageError(f"{where}: not a LayerwiseLR state dict (missing {sorted(missing)})")
        saved, current = state_dict["config"], self._config()
        differ = [key for key in current if saved.get(key) != current[key]]
        if differ:
            shown = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in differ)
            raise UsageError(f"{where}: the scheduler was built differently ({shown})")
        if len(state_dict["last_lr"]) != len(self.optimizer.param_groups):
            raise UsageError(
                f"{where}: saved {len(state_dict['last_lr'])} group lrs, the optimizer has "
                f"{len(self.optimizer.param_groups)} groups"
            )
        if (state_dict.get("base") is None) != (self._base is None):
            raise UsageError(f"{where}: saved and current base schedules differ")
        self.last_epoch = int(state_dict["last_epoch"])
        self.alphas = {str(k): float(v) for k, v in state_dict["alphas"].items()}
        self.degenerate = {str(k): str(v) for k, v in state_dict["degenerate"].items()}
        self._warned = set(state_dict.get("warned", self.degenerate))
        self._rng.bit_generator.state = state_dict["rng"]
        self._records = [
            [int(step), float(lr), list(a), list(r)] for step, lr, a, r in state_dict["records"]
        ]
        self._last_lr = [float(rate) for rate in state_dict["last_lr"]]
        if self._base is not None:
            self._base.load_state_dict(state_dict["base"])
        for group, rate in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = rate
