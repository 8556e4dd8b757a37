"""The records that describe stored weights, and the one rule that says what a tensor is.

:class:`LayerWeights` describes one stored tensor without loading it; :class:`LayerKind` says
what it is as far as spectral analysis is concerned. :func:`infer_kind` decides the kind from a
name and a shape (state dicts and files); :func:`module_kind` from a module's type. Both are
the package's only layer-kind rules. :func:`layer_name` gives the module that owns a
parameter: ``encoder.layer.0.attention.self.query.weight`` ->
``encoder.layer.0.attention.self.query`` (the ``layer`` of every table).
"""

from __future__ import annotations

import enum
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torch import nn

__all__ = [
    "HF_CONV1D_MODEL_TYPES",
    "LayerKind",
    "LayerWeights",
    "WeightSource",
    "WeightsError",
    "infer_kind",
    "layer_name",
    "module_kind",
]


class WeightsError(ValueError):
    """A weight source cannot be read; the message names what and where (path, tensor)."""


class LayerKind(str, enum.Enum):
    """What a stored tensor is, as far as spectral analysis is concerned."""

    LINEAR = "linear"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    CONV3D = "conv3d"
    CONV_TRANSPOSE1D = "conv_transpose1d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    CONV_TRANSPOSE3D = "conv_transpose3d"
    EMBEDDING = "embedding"
    HF_CONV1D = "hf_conv1d"  # Hugging Face transformers Conv1D, stored (in, out)
    ATTENTION = "attention"  # nn.MultiheadAttention q/k/v projection
    FUSED_QKV = "fused_qkv"  # one matrix holding q, k and v (GPT-2 c_attn, query_key_value, ...)
    RNN = "rnn"  # LSTM/GRU/RNN weight_ih_l*/weight_hh_l*
    BIAS = "bias"
    NORM = "norm"
    VECTOR = "vector"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value

    @property
    def is_conv(self) -> bool:
        """True for convolution and transposed-convolution kinds (not ``HF_CONV1D``)."""
        return self in _CONV_KINDS

    @property
    def analysed(self) -> bool:
        """False for the kinds that are never analysed (bias, norm, vector, other)."""
        return self not in _NOT_ANALYSED_KINDS


_CONV_KINDS = frozenset(
    {
        LayerKind.CONV1D,
        LayerKind.CONV2D,
        LayerKind.CONV3D,
        LayerKind.CONV_TRANSPOSE1D,
        LayerKind.CONV_TRANSPOSE2D,
        LayerKind.CONV_TRANSPOSE3D,
    }
)
_NOT_ANALYSED_KINDS = frozenset({LayerKind.BIAS, LayerKind.NORM, LayerKind.VECTOR, LayerKind.OTHER})
_CONV_BY_NDIM = {3: LayerKind.CONV1D, 4: LayerKind.CONV2D, 5: LayerKind.CONV3D}
_CONV_TRANSPOSE_BY_NDIM = {
    3: LayerKind.CONV_TRANSPOSE1D,
    4: LayerKind.CONV_TRANSPOSE2D,
    5: LayerKind.CONV_TRANSPOSE3D,
}


_SPLIT_SUFFIX = re.compile(r"\[[^\[\]]*\]$")


def layer_name(name: str) -> str:
    """The layer (owning module) of a parameter name: the name minus its last component.

    A split or slice suffix (``[q]``, ``[0,1]``) is dropped first; a top-level parameter
    belongs to the root module, ``""``.

    >>> layer_name("encoder.layer.0.attention.self.query.weight")
    'encoder.layer.0.attention.self.query'
    >>> layer_name("attn.in_proj_weight[q]"), layer_name("rnn.weight_ih_l0"), layer_name("weight")
    ('attn', 'rnn', '')
    """
    return _SPLIT_SUFFIX.sub("", name).rpartition(".")[0]


@dataclass(frozen=True)
class LayerWeights:
    """One stored weight tensor, described without loading it.

    ``shape`` is in canonical ``(out, in, *kernel)`` orientation; ``transposed`` is True when
    the stored tensor has its first two dimensions swapped relative to it (HF ``Conv1D``,
    ``ConvTranspose``). ``dtype`` is the stored dtype's name (``"float32"``, ``"bfloat16"``,
    ``"int8"``, ...). ``status`` is ``"ok"`` or ``"skipped"`` (then ``reason`` says why).
    ``loader`` returns the tensor as stored; use :meth:`tensor` instead. ``layer`` is the
    module that owns the tensor (:func:`layer_name` of ``name`` when not given: ``"attn"``
    for ``"attn.in_proj_weight[q]"``, ``""`` for a top-level ``"weight"``).
    """

    name: str
    kind: LayerKind
    shape: tuple[int, ...]
    dtype: str
    status: str = "ok"
    reason: str = ""
    transposed: bool = False
    loader: Callable[[], torch.Tensor] = field(repr=False, compare=False, kw_only=True)
    layer: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "skipped"):
            raise ValueError(f"LayerWeights {self.name!r}: status must be 'ok' or 'skipped'")
        if not self.layer:
            # "" means "derive it": a top-level parameter derives "" again.
            object.__setattr__(self, "layer", layer_name(self.name))

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Load the tensor now, in canonical orientation and stored dtype, on ``device``.

        Nothing is cached: every call loads again. For module and in-memory state-dict sources
        the result is a view sharing memory with the source (do not modify it in place); a
        transposed record returns a non-contiguous view.
        """
        stored = self.loader()
        canonical = stored.transpose(0, 1) if self.transposed else stored
        if tuple(canonical.shape) != self.shape:
            raise WeightsError(
                f"tensor {self.name!r} loaded with shape {tuple(canonical.shape)}, "
                f"expected {self.shape} (did the source change?)"
            )
        return canonical if device is None else canonical.to(device)


WeightSource: TypeAlias = nn.Module | Mapping[str, Any] | str | os.PathLike[str]

# Model types whose Hugging Face implementation stores projections as transformers.Conv1D.
HF_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})


# ---------------------------------------------------------------------------------------------
# The name-and-shape rule

_NORM_COMPONENT = re.compile(r"norm|^(?:ln|bn)(?:\d+|_\w*)?$", re.IGNORECASE)
_IN_PROJ_NAME = re.compile(r"in_proj_weight$")
_RNN_NAME = re.compile(r"(?:^|\.)weight_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?$")
_EMBEDDING_NAME = re.compile(r"embed|(?:^|\.)(?:wte|wpe)(?:\.|$)", re.IGNORECASE)
_FUSED_QKV_NAME = re.compile(
    r"(?:^|\.)(?:c_attn|query_key_value|qkv|qkv_proj|wqkv)(?:\.|$)", re.IGNORECASE
)
_HF_CONV1D_NAME = re.compile(r"(?:^|\.)(c_attn|q_attn|c_fc|c_proj)\.weight$")


def infer_kind(name: str, shape: tuple[int, ...]) -> tuple[LayerKind, str]:
    """Kind of a stored tensor from its name and shape alone; returns ``(kind, skip_reason)``.

    ``skip_reason`` is ``""`` for analysed kinds. The rule, first match wins:

    1. ndim 0 or 1 -> skipped (reason ``"0-D tensor"`` / ``"1-D tensor"``): a name with a
       norm-like component (containing ``norm``, or ``ln``/``bn`` optionally followed by digits
       or ``_...``: ``ln_1``, ``bn1``, ``LayerNorm``, ``input_layernorm``) -> ``NORM``;
       else a last component containing ``bias`` -> ``BIAS``; else ``VECTOR``.
    2. ndim > 5 -> ``OTHER``, skipped.
    3. name ending in ``in_proj_weight`` with shape ``(3E, E)`` -> ``ATTENTION`` (split into
       q, k, v records by :func:`iter_layers`).
    4. ``weight_ih_l<k>``, ``weight_hh_l<k>``, ``weight_hr_l<k>`` (optionally ``_reverse``),
       or a cell's ``weight_ih``/``weight_hh``, 2-D -> ``RNN``.
    5. 2-D and the name contains ``embed`` (``embed_tokens``, ``word_embeddings``,
       ``tok_embeddings``, ``position_embeddings``, ...) or a ``wte``/``wpe`` component
       -> ``EMBEDDING``.
    6. 2-D with a fused q/k/v component (``c_attn``, ``query_key_value``, ``qkv``,
       ``qkv_proj``, ``Wqkv``) -> ``FUSED_QKV``.
    7. any other 2-D -> ``LINEAR``.
    8. 3-D/4-D/5-D -> ``CONV1D``/``CONV2D``/``CONV3D``, except a tensor with leading dimension
       1 whose last name component does not contain ``weight`` (a position embedding, class
       token or attention-mask buffer such as ViT ``pos_embed`` or GPT-2 ``attn.bias``) ->
       ``OTHER``, skipped.

    Dtypes are not part of this rule; :func:`iter_layers` skips analysed kinds whose dtype is
    neither floating point nor ``int8``/``uint8``.
    """
    ndim = len(shape)
    components = name.split(".")
    if ndim <= 1:
        reason = f"{ndim}-D tensor"
        if any(_NORM_COMPONENT.search(part) for part in components):
            return LayerKind.NORM, reason
        if "bias" in components[-1].lower():
            return LayerKind.BIAS, reason
        return LayerKind.VECTOR, reason
    if ndim > 5:
        return LayerKind.OTHER, f"{ndim}-D tensor"
    if _is_in_proj(name, shape):
        return LayerKind.ATTENTION, ""
    if ndim == 2:
        if _RNN_NAME.search(name):
            return LayerKind.RNN, ""
        if _EMBEDDING_NAME.search(name):
            return LayerKind.EMBEDDING, ""
        if _FUSED_QKV_NAME.search(name):
            return LayerKind.FUSED_QKV, ""
        return LayerKind.LINEAR, ""
    if shape[0] == 1 and "weight" not in components[-1].lower():
        return LayerKind.OTHER, f"{ndim}-D tensor with leading dimension 1, not a kernel"
    return _CONV_BY_NDIM[ndim], ""


def _is_in_proj(name: str, shape: tuple[int, ...]) -> bool:
    return (
        bool(_IN_PROJ_NAME.search(name))
        and len(shape) == 2
        and shape[1] > 0
        and shape[0] == 3 * shape[1]
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_skip_reason(dtype: torch.dtype | None, dtype_name: str) -> str:
    """Why a tensor of this dtype is not analysed, or "" when it is."""
    if dtype is None:
        return f"dtype {dtype_name} is not supported by this torch"
    if dtype == torch.bool:
        return "non-numeric dtype bool"
    if dtype.is_complex:
        return f"complex dtype {dtype_name}"
    if dtype.is_floating_point or dtype in (torch.int8, torch.uint8):
        return ""
    return f"integer dtype {dtype_name} (indices or counts, not weights)"


# ---------------------------------------------------------------------------------------------
# Stored tensors -> records

Rows = tuple[int, int] | None  # a [start, stop) range of dim 0, or None for the whole tensor


@dataclass(frozen=True)
class _Stored:
    """A named tensor in a source, as stored, not loaded yet."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: a dtype this torch cannot represent
    dtype_name: str
    load: Callable[[Rows], torch.Tensor]


def _in_memory(name: str, tensor: torch.Tensor) -> _Stored:
    def load(rows: Rows) -> torch.Tensor:
        detached = tensor.detach()
        return detached if rows is None else detached[rows[0] : rows[1]]

    return _Stored(name, tuple(tensor.shape), tensor.dtype, _dtype_name(tensor.dtype), load)


def _make_records(
    stored: _Stored,
    kind: LayerKind,
    reason: str,
    *,
    transposed: bool = False,
    split_qkv: bool = False,
) -> Iterator[LayerWeights]:
    if kind.analysed and not reason:
        reason = _dtype_skip_reason(stored.dtype, stored.dtype_name)
    status = "skipped" if reason else "ok"
    shape = stored.shape
    if transposed:
        shape = (shape[1], shape[0], *shape[2:])
    if not split_qkv:
        loader = functools.partial(stored.load, None)
        yield LayerWeights(
            stored.name, kind, shape, stored.dtype_name, status, reason, transposed, loader=loader
        )
        return
    width = shape[1]
    for index, part in enumerate("qkv"):
        rows = (index * width, (index + 1) * width)
        yield LayerWeights(
            f"{stored.name}[{part}]",
            kind,
            (width, width),
            stored.dtype_name,
            status,
            reason,
            loader=functools.partial(stored.load, rows),
        )


def _records_from_stored(stored: _Stored, hf_conv1d: bool) -> Iterator[LayerWeights]:
    """Records for a name-and-shape source (state dict, file)."""
    kind, reason = infer_kind(stored.name, stored.shape)
    match = _HF_CONV1D_NAME.search(stored.name) if hf_conv1d else None
    if match and len(stored.shape) == 2:
        kind = LayerKind.FUSED_QKV if match.group(1) == "c_attn" else LayerKind.HF_CONV1D
        return _make_records(stored, kind, "", transposed=True)
    return _make_records(stored, kind, reason, split_qkv=kind is LayerKind.ATTENTION)


def _looks_like_hf_conv1d(named_shapes: Iterable[tuple[str, tuple[int, ...]]]) -> bool:
    """GPT-2 layout guess without a config: a ``c_attn.weight`` stored ``(E, 3E)``."""
    return any(
        name.endswith("c_attn.weight") and len(shape) == 2 and shape[1] == 3 * shape[0] > 0
        for name, shape in named_shapes
    )


def _records_from_stored_list(
    stored: list[_Stored], hf_conv1d: bool | None
) -> Iterator[LayerWeights]:
    if hf_conv1d is None:
        hf_conv1d = _looks_like_hf_conv1d((s.name, s.shape) for s in stored)
    for item in stored:
        yield from _records_from_stored(item, hf_conv1d)


# ---------------------------------------------------------------------------------------------
# The module-type rule


def _is_norm_module(module: nn.Module) -> bool:
    return any(re.search(r"Norm(?:\d+d)?$", cls.__name__) for cls in type(module).__mro__)


def _is_hf_conv1d_module(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and hasattr(module, "nf")
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
    )


_CONV_TYPES: tuple[tuple[type[nn.Module], LayerKind, bool], ...] = (
    # ConvTranspose weights are stored (in, out/groups, *kernel): transposed to canonical.
    (nn.ConvTranspose1d, LayerKind.CONV_TRANSPOSE1D, True),
    (nn.ConvTranspose2d, LayerKind.CONV_TRANSPOSE2D, True),
    (nn.ConvTranspose3d, LayerKind.CONV_TRANSPOSE3D, True),
    (nn.Conv1d, LayerKind.CONV1D, False),
    (nn.Conv2d, LayerKind.CONV2D, False),
    (nn.Conv3d, LayerKind.CONV3D, False),
)


def _module_weight_kind(module: nn.Module, name: str) -> tuple[LayerKind, bool] | None:
    """``(kind, transposed)`` of the ``weight`` of ``module`` from its type; None: unknown.

    ``name`` (the module's or the parameter's) only tells a fused q/k/v projection apart.
    """
    fused = bool(_FUSED_QKV_NAME.search(name))
    if isinstance(module, nn.Linear):
        return (LayerKind.FUSED_QKV if fused else LayerKind.LINEAR), False
    if isinstance(module, nn.Bilinear):
        return LayerKind.OTHER, False
    for module_type, kind, transposed in _CONV_TYPES:
        if isinstance(module, module_type):
            return kind, transposed
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return LayerKind.EMBEDDING, False
    if _is_hf_conv1d_module(module):
        return (LayerKind.FUSED_QKV if fused else LayerKind.HF_CONV1D), True
    return None


def module_kind(module: nn.Module, name: str = "") -> str:
    """The kind label of a module's weight, as :func:`iter_layers` and ``analyze`` give it.

    ``"linear"``, ``"conv1d"``/``"conv2d"``/``"conv3d"``, ``"conv_transpose2d"``, ...,
    ``"embedding"``, ``"hf_conv1d"``, ``"attention"`` (``nn.MultiheadAttention``), ``"rnn"``,
    ``"norm"`` (any class whose name ends in ``Norm`` or ``Norm<k>d``), else ``"other"``.
    ``name``, the module's name, only matters for fused q/k/v projections (``"fused_qkv"``).

    >>> module_kind(nn.Linear(2, 3)), module_kind(nn.Conv2d(1, 1, 3)), module_kind(nn.ReLU())
    ('linear', 'conv2d', 'other')
    >>> module_kind(nn.Linear(4, 12), "blocks.0.attn.qkv")
    'fused_qkv'
    """
    if _is_norm_module(module):
        return LayerKind.NORM.value
    found = _module_weight_kind(module, name)
    if found is not None:
        return found[0].value
    if isinstance(module, nn.MultiheadAttention):
        return LayerKind.ATTENTION.value
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return LayerKind.RNN.value
    return LayerKind.OTHER.value
