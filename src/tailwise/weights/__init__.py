"""Where weight matrices come from.

:func:`iter_layers` turns a weight source into a stream of :class:`LayerWeights` records, one
per stored tensor (three for a fused ``nn.MultiheadAttention`` input projection, split into its
q, k and v blocks). A record knows its name, kind, shape and dtype without loading anything;
``record.tensor()`` loads the values on demand.

Sources
-------
* ``nn.Module`` -- every parameter, named as in ``model.named_parameters()`` (tied parameters
  once). Kinds come from the owning module's type: ``Linear``, ``Conv{1,2,3}d``,
  ``ConvTranspose{1,2,3}d``, ``Embedding``/``EmbeddingBag``, ``MultiheadAttention``,
  ``LSTM``/``GRU``/``RNN`` (and their cells), Hugging Face ``Conv1D`` (class named ``Conv1D``
  with an ``nf`` attribute) and normalization layers (any class whose name ends in ``Norm``
  or ``Norm<k>d``: BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm, LlamaRMSNorm, ...).
  Parameters of other modules fall back to :func:`infer_kind`. Buffers are not weights and
  are not listed.
* A state dict, i.e. any ``Mapping[str, Tensor]`` -- kinds from :func:`infer_kind`. A checkpoint
  dict that keeps its weights under ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or
  ``"module"`` (first found, in that order, repeatedly) is unwrapped. Values that are not
  tensors become skipped ``OTHER`` records.
* A ``.safetensors`` file -- streamed (see below), records in the file's data order.
* A Hugging Face folder -- ``model.safetensors``, the sharded ``model.safetensors.index.json``,
  ``pytorch_model.bin`` or ``pytorch_model.bin.index.json`` (looked for in that order; else a
  folder holding exactly one ``*.safetensors`` file). ``config.json`` is optional; its
  ``model_type`` says whether the model stores GPT-2 style ``Conv1D`` weights.
* A torch checkpoint (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) -- ``torch.load(...,
  weights_only=True)``, memory-mapped when the file is in the zip format. Pickled Python
  objects are refused unless ``trust_pickle=True``. A checkpoint holding a whole ``nn.Module``
  is walked like a module. Not streamed: the torch format is loaded as a whole (with ``mmap``
  the operating system pages it in lazily).

Kinds
-----
Analysed kinds are the matrices HT-SR looks at (``LINEAR``, the convolutions, ``EMBEDDING``,
``HF_CONV1D``, ``ATTENTION``, ``FUSED_QKV``, ``RNN``); ``BIAS``, ``NORM``, ``VECTOR`` and
``OTHER`` records are yielded with ``status="skipped"`` and a ``reason`` so that tables can
show them. Name-and-shape sources (state dicts and files) use the single rule
:func:`infer_kind`; see its docstring. Only floating-point tensors and ``int8``/``uint8``
(quantized weights) are analysed: other dtypes (bool, complex, wider integers) give skipped
records whatever their kind. Safetensors files that look like GPT-2 (``config.json``
``model_type`` in :data:`HF_CONV1D_MODEL_TYPES`, or without a config a ``*.c_attn.weight`` of
shape ``(E, 3E)``) have their 2-D ``c_attn``/``q_attn`` (``FUSED_QKV``) and ``c_fc``/``c_proj``
(``HF_CONV1D``) weights read as ``(in, out)``.

Canonical orientation
---------------------
``LayerWeights.shape`` and ``LayerWeights.tensor()`` are always ``(out, in, *kernel)``:
Hugging Face ``Conv1D`` weights, stored ``(in, out)``, are transposed; ``ConvTranspose``
weights, stored ``(in, out/groups, *kernel)``, have their first two dimensions swapped
(``transposed=True`` on the record says so). Only module sources can recognise a
``ConvTranspose``; in a state dict its weight is read as a convolution in stored order.
Embeddings keep their stored ``(num_embeddings, embedding_dim)``.

Layers
------
Every record has a ``layer``: the module that owns the tensor, the parameter name minus its
last component (:func:`layer_name`: ``encoder.layer.0.attention.self.query.weight`` ->
``encoder.layer.0.attention.self.query``; the split ``attn.in_proj_weight[q]`` -> ``attn``; a
top-level ``weight`` -> ``""``). Every table of the package has this ``layer`` column.

Modules
-------
:mod:`~tailwise.weights.records` (records, kinds, the kind rules),
:mod:`~tailwise.weights.modules` (modules and state dicts),
:mod:`~tailwise.weights.safetensors` (the one safetensors reader),
:mod:`~tailwise.weights.checkpoints` (torch checkpoints),
:mod:`~tailwise.weights.sources` (:func:`iter_layers`, files and folders).

Streaming guarantee
-------------------
For safetensors sources only the JSON headers are read up front. Each ``tensor()`` call opens
the file, seeks to the tensor's bytes and reads exactly them into one fresh buffer that the
returned tensor owns (``torch.frombuffer``; no memory map is kept open). Records never cache
their tensor, so a loop that analyses one layer and drops it holds one tensor in memory at a
time however large the file. (Little-endian hosts, like the safetensors format itself.)
"""

from __future__ import annotations

from tailwise.weights.checkpoints import load_checkpoint, unwrap_state_dict
from tailwise.weights.records import (
    HF_CONV1D_MODEL_TYPES,
    LayerKind,
    LayerWeights,
    WeightsError,
    WeightSource,
    infer_kind,
    layer_name,
    module_kind,
)
from tailwise.weights.safetensors import load_safetensors, read_safetensors_metadata
from tailwise.weights.sources import compile_pattern, describe_source, iter_layers, list_layers

__all__ = [
    "HF_CONV1D_MODEL_TYPES",
    "LayerKind",
    "LayerWeights",
    "WeightSource",
    "WeightsError",
    "compile_pattern",
    "describe_source",
    "infer_kind",
    "iter_layers",
    "layer_name",
    "list_layers",
    "load_checkpoint",
    "load_safetensors",
    "module_kind",
    "read_safetensors_metadata",
    "unwrap_state_dict",
]
