"""CKA between the layers of one model, or of two models, over a stream of data batches.

:func:`layer_cka` runs the models on every batch with a forward hook on each watched module.
The hook turns the module's output (n examples, flattened per example) into the batch's
centred n x n Gram matrix at once (float64, on the model's device), so only n x n matrices
per watched layer live between hooks, never the activations of all layers or all batches.
After each batch the unbiased HSIC_1 of every pair of layers is added to running sums
(minibatch CKA, Nguyen et al. 2021; :class:`tailwise.similarity.MinibatchCKA` for two
representations), and at the end

    CKA(a_i, b_j) = sum_batches HSIC(K_ai, L_bj) / sqrt(sum HSIC(K_ai, K_ai) sum HSIC(L_bj, L_bj)).

A layer is the output of one named module (a name of ``model.named_modules()``). Hooks are
explicit handles on those modules, so the rows are keyed by module names, never by call
order: a module whose forward runs twice in one pass (a shared block, a reused activation
module) or not at all is an error naming it, not a silent misalignment.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tailwise._errors import UsageError
from tailwise._modules import as_args, model_device
from tailwise._progress import progress_bar
from tailwise._threads import torch_work
from tailwise.similarity._hsic import (
    Kernel,
    as_matrix,
    centred_gram,
    compute_device,
    hsic_matrix,
    hsic_pairs,
    min_examples,
    parse_fraction,
    parse_kernel,
    parse_sigma,
)

__all__ = ["CKA_COLUMNS", "Data", "cka_matrix", "default_layers", "layer_cka"]

#: Columns of :func:`layer_cka`'s table, in order.
CKA_COLUMNS: tuple[str, ...] = ("layer_a", "layer_b", "cka")

#: What ``data`` may be: a tensor (one batch of inputs), a tuple ``(inputs, targets)`` (one
#: batch), or an iterable of batches, each a tensor of inputs or a sequence whose first item
#: is the inputs (a tensor, or a tuple of the model's positional arguments).
Data = Tensor | Iterable[Any]

# Names of the modules listed by default: the weight layers (those `analyze` has rows for).
_DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def default_layers(model: nn.Module) -> list[str]:
    """The modules :func:`layer_cka` watches by default: every ``nn.Linear`` and convolution
    (``Conv1d/2d/3d``, ``ConvTranspose*``), in ``named_modules()`` order.

    >>> default_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)))
    ['0', '3']
    """
    return [name for name, module in model.named_modules() if isinstance(module, _DEFAULT_TYPES)]


def _select_layers(
    model: nn.Module, layers: Sequence[str] | None, where: str, what: str
) -> list[str]:
    if layers is None:
        names = default_layers(model)
        if not names:
            raise UsageError(
                f"{where}: {what} has no Linear or convolution module to watch; pass "
                "layers=[module names] (any names of model.named_modules())"
            )
        return names
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise UsageError(
            f"{where}: layers must be a list of module names; got {type(layers).__name__} "
            f"{layers!r}"
        )
    names = list(layers)
    known = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in known:
            shown = ", ".join(repr(k) for k in list(known)[1:6])
            raise UsageError(
                f"{where}: {what} has no module {name!r}; its modules are {shown}, ... "
                "(names as in model.named_modules())"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"{where}: layers lists {duplicates} more than once")
    if not names:
        raise UsageError(f"{where}: layers is empty")
    return names


def _batches(data: Data, where: str) -> Iterable[Any]:
    """``data`` as an iterable of batches (see :data:`Data`)."""
    if isinstance(data, Tensor):
        return [data]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], Tensor):
        return [data]
    if isinstance(data, Dataset) and not isinstance(data, Iterable):
        raise UsageError(
            f"{where}: data is a Dataset ({type(data).__name__}) of single examples; wrap it "
            "in a torch.utils.data.DataLoader to give batches"
        )
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise UsageError(
            f"{where}: data must be a tensor of inputs, an (inputs, targets) pair or an "
            f"iterable of batches; got {type(data).__name__}"
        )
    return data


def _inputs(batch: Any, index: int, where: str) -> tuple[Any, ...]:
    """The model's positional arguments from one batch."""
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch:
        return as_args(batch[0])
    raise UsageError(
        f"{where}: batch {index} is a {type(batch).__name__}; expected a tensor of inputs or "
        "an (inputs, targets) sequence"
    )


def _batch_size(args: tuple[Any, ...], index: int, where: str) -> int:
    for arg in args:
        if isinstance(arg, Tensor) and arg.ndim >= 1:
            return int(arg.shape[0])
    raise UsageError(f"{where}: batch {index} holds no input tensor with a batch dimension")


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(item, device) for item in value)
    if isinstance(value, list):
        return [_to_device(item, device) for item in value]
    return value


@dataclass
class _Options:
    kernel: Kernel
    unbiased: bool
    sigma: float | None
    median_fraction: float
    where: str
    strict: bool


@dataclass
class _Watch:
    """Forward hooks on the named modules of one model; one Gram matrix per module per pass."""

    model: nn.Module
    names: list[str]
    options: _Options
    device: torch.device  # where the Gram matrices are accumulated
    failed: dict[str, str] = field(default_factory=dict)
    grams: dict[str, Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    batch: int = 0
    batch_size: int = 0
    handles: list[Any] = field(default_factory=list)

    def attach(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.names:
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._record(name, output)

        return hook

    def _fail(self, name: str, reason: str) -> None:
        if self.options.strict:
            raise UsageError(f"{self.options.where}: {reason}")
        self.failed.setdefault(name, reason)
        self.grams.pop(name, None)

    def _record(self, name: str, output: Any) -> None:
        if name in self.failed:
            return
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] > 1:
            self._fail(
                name,
                f"module {name!r} ran {self.calls[name]} times in one forward pass (batch "
                f"{self.batch}); its outputs are not one representation per example: watch "
                "modules that run once per pass (layers=[...])",
            )
            return
        tensor = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            self._fail(
                name,
                f"module {name!r} returned {type(tensor).__name__}"
                + (f" of dtype {tensor.dtype}" if isinstance(tensor, Tensor) else "")
                + ", not a floating-point tensor",
            )
            return
        if tensor.ndim == 0 or tensor.shape[0] != self.batch_size:
            self._fail(
                name,
                f"module {name!r} returned shape {tuple(tensor.shape)} for a batch of "
                f"{self.batch_size} examples: its first dimension is not the batch",
            )
            return
        where = f"batch {self.batch}"  # _fail puts the function's name in front
        try:
            matrix = as_matrix(tensor, f"the output of module {name!r}", where)
            gram = centred_gram(
                matrix,
                self.options.kernel,
                sigma=self.options.sigma,
                median_fraction=self.options.median_fraction,
                where=f"{where}: module {name!r}",
            )
        except UsageError as exc:
            self._fail(name, str(exc))
            return
        self.grams[name] = gram.to(self.device)

    def run(self, args: tuple[Any, ...], batch: int, batch_size: int) -> None:
        """One forward pass; afterwards every watched module has a Gram matrix or failed."""
        self.batch, self.batch_size = batch, batch_size
        self.calls, self.grams = {}, {}
        self.model(*_to_device(args, model_device(self.model)))
        for name in self.names:
            if name not in self.failed and self.calls.get(name, 0) == 0:
                self._fail(
                    name,
                    f"module {name!r} did not run in the forward pass of batch {batch}; "
                    "watch modules that run once per pass (layers=[...])",
                )

    def stacked(self, names: Sequence[str]) -> Tensor:
        """Gram matrices of ``names`` (L, n, n); zeros for failed modules (they add nothing)."""
        n = self.batch_size
        zeros = torch.zeros((n, n), dtype=torch.float64, device=self.device)
        return torch.stack([self.grams.get(name, zeros) for name in names])


@dataclass
class LayerHSIC:
    """Summed HSICs over the batches: ``cross`` (La, Lb), or (L,) for paired layers;
    ``self_a`` (La,), ``self_b`` (Lb,); failures by side and module name."""

    cross: Tensor
    self_a: Tensor
    self_b: Tensor
    failed_a: dict[str, str]
    failed_b: dict[str, str]
    examples: int
    batches: int
    skipped_batches: int

    def cka(self, paired: bool) -> Tensor:
        """CKA from the sums; NaN where a self-HSIC is not positive."""
        denominator = self.self_a * self.self_b if paired else torch.outer(self.self_a, self.self_b)
        root = torch.sqrt(denominator.clamp_min(0.0))
        return torch.where(denominator > 0, self.cross / root, torch.nan)


def layer_hsics(
    model_a: nn.Module,
    model_b: nn.Module,
    names_a: list[str],
    names_b: list[str],
    data: Data,
    options: _Options,
    *,
    paired: bool,
    progress: bool,
) -> LayerHSIC:
    """Run both models over ``data`` and sum the HSICs of their watched layers.

    ``paired``: only the pairs (names_a[i], names_b[i]) (same length), else all La x Lb.
    Models are put in eval mode under ``torch.no_grad()``; every module's train/eval flag
    is restored and every hook removed afterwards, also on error.
    """
    where = options.where
    device = compute_device(model_device(model_a))
    same = model_b is model_a
    watched_a = _ordered(names_a + names_b) if same else names_a
    watch_a = _Watch(model_a, watched_a, options, device)
    watch_b = watch_a if same else _Watch(model_b, names_b, options, device)
    watches = [watch_a] if same else [watch_a, watch_b]
    flags = [(m, m.training) for model in (model_a, model_b) for m in model.modules()]
    la, lb = len(names_a), len(names_b)
    cross = torch.zeros((la,) if paired else (la, lb), dtype=torch.float64, device=device)
    self_a = torch.zeros(la, dtype=torch.float64, device=device)
    self_b = torch.zeros(lb, dtype=torch.float64, device=device)
    examples = batches = skipped = 0
    need = min_examples(options.unbiased)
    items = _batches(data, where)
    total = len(items) if isinstance(items, Sized) else None
    try:
        for watch in watches:
            watch.attach()
        model_a.eval()
        model_b.eval()
        with torch.no_grad():
            for index, batch in progress_bar(enumerate(items), total, progress, where):
                args = _inputs(batch, index, where)
                n = _batch_size(args, index, where)
                if n < need:
                    skipped += 1
                    continue
                for watch in watches:
                    watch.run(args, index, n)
                grams_a = watch_a.stacked(names_a)
                grams_b = watch_b.stacked(names_b)
                if paired:
                    cross += hsic_pairs(grams_a, grams_b, options.unbiased)
                    self_a += hsic_pairs(grams_a, grams_a, options.unbiased)
                    self_b += hsic_pairs(grams_b, grams_b, options.unbiased)
                elif same and names_a == names_b:
                    matrix = hsic_matrix(grams_a, grams_a, options.unbiased)
                    cross += matrix
                    self_a += torch.diagonal(matrix)
                    self_b += torch.diagonal(matrix)
                else:
                    cross += hsic_matrix(grams_a, grams_b, options.unbiased)
                    self_a += hsic_pairs(grams_a, grams_a, options.unbiased)
                    self_b += hsic_pairs(grams_b, grams_b, options.unbiased)
                examples += n
                batches += 1
    finally:
        for watch in watches:
            watch.detach()
        for module, flag in flags:
            module.training = flag
    if batches == 0:
        raise UsageError(
            f"{where}: no batch with at least {need} examples in data ({skipped} smaller "
            f"batch(es) skipped); the {'unbiased ' if options.unbiased else ''}HSIC needs {need}"
        )
    if skipped:
        warnings.warn(
            f"{where}: {skipped} batch(es) with fewer than {need} examples left out "
            f"({examples} examples in {batches} batches used)",
            stacklevel=3,
        )
    return LayerHSIC(
        cross=cross,
        self_a=self_a,
        self_b=self_b,
        failed_a={n: r for n, r in watch_a.failed.items() if n in names_a},
        failed_b={n: r for n, r in watch_b.failed.items() if n in names_b},
        examples=examples,
        batches=batches,
        skipped_batches=skipped,
    )


def layer_cka(
    model_a: nn.Module,
    model_b: nn.Module | Data | None = None,
    data: Data | None = None,
    *,
    layers: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    kernel: Kernel | str = "linear",
    unbiased: bool = True,
    sigma: float | None = None,
    median_fraction: float = 1.0,
    progress: bool = True,
) -> pd.DataFrame:
    """CKA between every layer of ``model_a`` and every layer of ``model_b`` (or of
    ``model_a`` itself: source 000 fig. 2.2), accumulated over batches.

    Call as ``layer_cka(model, data=batches)``, ``layer_cka(model, batches)`` (a second
    positional argument that is not a module is the data) or ``layer_cka(a, b, batches)``.

    Args:
        model_a: the first model; runs on its own device, in eval mode, without gradients
            (every module's train/eval flag is restored afterwards, hooks removed).
        model_b: the second model (inputs are moved to its device); None compares
            ``model_a``'s layers with each other.
        data: a tensor of inputs (one batch), an ``(inputs, targets)`` tuple (one batch), or
            an iterable of batches (a list, a DataLoader, a generator: one pass), each a
            tensor of inputs or a sequence whose first item is the inputs (a tensor, or a
            tuple of positional arguments). Targets are ignored. Batches with fewer than 4
            examples (2 with ``unbiased=False``) are left out, with a warning.
        layers: module names of ``model_a`` to watch (any of ``named_modules()``: blocks,
            BatchNorms, activations, ``""`` for the whole model), in the order of the
            result; default every ``nn.Linear`` and convolution (:func:`default_layers`).
        layers_b: module names of ``model_b``; default ``layers`` when given, else
            ``default_layers(model_b)``.
        kernel, sigma, median_fraction: as in :func:`tailwise.similarity.cka`; with
            ``"rbf"`` and no sigma each batch and layer takes its own median bandwidth.
        unbiased: sum HSIC_1 per batch (default; minibatch CKA of Nguyen et al. 2021) or the
            biased HSIC_0 (its bias does not shrink with more batches).
        progress: a progress bar over the batches on a terminal.

    Returns:
        A long table, one row per pair of layers, columns :data:`CKA_COLUMNS`:
        ``layer_a`` (module of model_a), ``layer_b`` (module of model_b, or of model_a when
        model_b is None), ``cka`` (float; NaN for a layer whose output is constant over every
        batch). Rows in the order of ``layers`` x ``layers_b``. ``df.attrs`` holds
        ``layers_a``, ``layers_b`` (the orders), ``kernel``, ``unbiased``, ``examples``,
        ``batches`` and ``skipped_batches``. :func:`cka_matrix` pivots it to a matrix,
        :func:`tailwise.similarity.plot_cka` draws it.

    Raises:
        tailwise.UsageError: an unknown module name; a watched module that runs more than
            once or not at all in a forward pass, or whose output is not a floating-point
            tensor with the batch as first dimension, or holds NaN/Inf (the message names
            it); data that is not batches; no batch large enough.

    Memory: one n x n float64 matrix per watched layer and batch (n the batch size) besides
    the forward pass itself; the output of a layer is reduced as soon as it is computed.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    >>> df = layer_cka(model, data=[torch.randn(32, 10) for _ in range(3)], progress=False)
    >>> df.shape, list(df.columns), df.attrs["examples"]
    ((4, 3), ['layer_a', 'layer_b', 'cka'], 96)
    >>> [round(v, 8) for v in df[df.layer_a == df.layer_b]["cka"]]
    [1.0, 1.0]
    """
    where = "layer_cka"
    if model_b is not None and not isinstance(model_b, nn.Module):
        if data is not None:
            raise UsageError(
                f"{where}: model_b must be an nn.Module or None; got {type(model_b).__name__}"
            )
        model_b, data = None, model_b
    if not isinstance(model_a, nn.Module):
        raise UsageError(f"{where}: model_a must be an nn.Module; got {type(model_a).__name__}")
    if data is None:
        raise UsageError(f"{where}: data is required (batches of inputs to run the models on)")
    kind = parse_kernel(kernel, where)
    if isinstance(sigma, tuple):
        raise UsageError(f"{where}: sigma must be one number (every layer's bandwidth) or None")
    sigma_a, _ = parse_sigma(sigma, kind, where)
    options = _Options(
        kernel=kind,
        unbiased=bool(unbiased),
        sigma=sigma_a,
        median_fraction=parse_fraction(median_fraction, where),
        where=where,
        strict=True,
    )
    other = model_a if model_b is None else model_b
    names_a = _select_layers(model_a, layers, where, "model_a")
    if model_b is None:
        names_b = list(names_a)
    else:
        chosen_b = layers_b if layers_b is not None else layers
        names_b = _select_layers(other, chosen_b, where, "model_b")
    with torch_work():
        sums = layer_hsics(
            model_a, other, names_a, names_b, data, options, paired=False, progress=progress
        )
        values = sums.cka(paired=False).cpu().numpy()
    frame = pd.DataFrame(
        {
            "layer_a": np.repeat(np.array(names_a, dtype=object), len(names_b)),
            "layer_b": np.tile(np.array(names_b, dtype=object), len(names_a)),
            "cka": values.reshape(-1).astype(np.float64),
        },
        columns=list(CKA_COLUMNS),
    )
    frame.attrs.update(
        layers_a=list(names_a),
        layers_b=list(names_b),
        kernel=kind.value,
        unbiased=bool(unbiased),
        examples=sums.examples,
        batches=sums.batches,
        skipped_batches=sums.skipped_batches,
    )
    return frame


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def cka_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """A :func:`layer_cka` table as a matrix: index ``layer_a``, columns ``layer_b``.

    Rows and columns keep the order of the layers (``df.attrs["layers_a"]`` / ``"layers_b"``
    when present, else the order of first appearance), not alphabetical order.

    >>> df = pd.DataFrame({"layer_a": ["x", "x", "y", "y"], "layer_b": ["x", "y", "x", "y"],
    ...                    "cka": [1.0, 0.5, 0.5, 1.0]})
    >>> cka_matrix(df).to_numpy().tolist()
    [[1.0, 0.5], [0.5, 1.0]]
    """
    missing = [c for c in CKA_COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"cka_matrix: not a layer_cka table, missing columns {missing}")
    rows = df.attrs.get("layers_a") or _ordered(df["layer_a"])
    cols = df.attrs.get("layers_b") or _ordered(df["layer_b"])
    if df.duplicated(["layer_a", "layer_b"]).any():
        raise UsageError("cka_matrix: the table has more than one row for a pair of layers")
    matrix = df.pivot(index="layer_a", columns="layer_b", values="cka")
    matrix = matrix.reindex(index=rows, columns=cols).astype("float64")
    matrix.index.name, matrix.columns.name = "layer_a", "layer_b"
    return matrix
