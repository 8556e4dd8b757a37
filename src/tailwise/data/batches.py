"""The first examples of an offline data set as ``(inputs, targets)`` batches for a loss.

What a curvature computation (``tailwise hessian``, :func:`tailwise.hessian.summarize`) needs
from a named data set: a fixed, re-iterable list of batches, shaped for the model, and an
early, clear error when the model cannot take them.

>>> batches = dataset_batches("digits", samples=100, batch_size=64, input_shape=(64,))
>>> [tuple(x.shape) for x, _ in batches]
[(64, 64), (36, 64)]
>>> check_accepts(torch.nn.Linear(64, 10), batches, "digits")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError, first_line
from tailwise._modules import model_device
from tailwise.data.digits import load_digits_dataset
from tailwise.data.mnist1d import load_mnist1d
from tailwise.data.resolve import resolve_dataset

__all__ = ["DATASETS", "check_accepts", "dataset_batches"]

DatasetName = Literal["digits", "mnist1d"]
#: The names :func:`dataset_batches` knows, with each data set's natural per-example shape.
DATASETS: Mapping[str, tuple[int, ...]] = MappingProxyType({"digits": (1, 8, 8), "mnist1d": (40,)})
_SPLITS = ("train", "test")


def _is_path(name: object) -> bool:
    """Whether ``name`` is an existing path (a folder or archive of data files)."""
    return isinstance(name, (str, os.PathLike)) and Path(name).exists()


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"dataset_batches: {name} must be an int, got {value!r}")
    return value


def dataset_batches(
    name: DatasetName | str | os.PathLike[str],
    *,
    samples: int,
    batch_size: int,
    input_shape: Sequence[int] | None = None,
    split: Literal["train", "test"] | str = "train",
) -> list[tuple[Tensor, Tensor]]:
    """The first ``samples`` examples of a data set's ``split``, in batches of ``batch_size``.

    Args:
        name: ``"digits"`` (8 x 8 images, natural shape (1, 8, 8); 1437 train, 360 test),
            ``"mnist1d"`` (signals of shape (40,); 3200 train, 800 test), or a path to a
            folder of MNIST (natural shape (1, 28, 28)) or CIFAR-10 / CIFAR-100 files
            ((3, 32, 32)) in a layout :func:`tailwise.data.resolve_dataset` accepts.
        samples: how many examples, 1 <= samples <= the split's size.
        batch_size: examples per batch (>= 1); the last batch holds the rest.
        input_shape: the per-example shape the inputs are reshaped to, e.g. ``(64,)`` for an
            MLP on digits; default the data set's natural shape. Its size must be the
            example's (64 for digits, 40 for mnist1d, 784 for MNIST, 3072 for CIFAR).
        split: ``"train"`` (default) or ``"test"``.

    Returns:
        A list of ``(inputs (b, *input_shape) float32, targets (b,) int64)`` on the CPU, in
        the data set's order (the same on every call).

    Bad values (an unknown name or split, ``samples`` out of range, a shape of the wrong
    size, a folder without data files) raise :class:`tailwise.UsageError` naming the
    numbers; a damaged data file raises :class:`tailwise.data.DataFileError` (a UsageError).
    """
    named = isinstance(name, str) and name in DATASETS
    if not (named or _is_path(name)):
        raise UsageError(
            f"dataset_batches: unknown data set {name!r}; choose one of {', '.join(DATASETS)}, "
            "or give a folder of MNIST / CIFAR files"
        )
    if split not in _SPLITS:
        raise UsageError(
            f"dataset_batches: split must be one of {', '.join(_SPLITS)}, got {split!r}"
        )
    samples = _check_int("samples", samples)
    batch_size = _check_int("batch_size", batch_size)
    if batch_size < 1:
        raise UsageError(f"dataset_batches: batch_size must be >= 1, got {batch_size}")
    if named:
        natural = DATASETS[str(name)]
    else:
        dataset = resolve_dataset(name, split)
        natural = tuple(dataset.tensors[0].shape[1:])
    shape = natural if input_shape is None else tuple(int(d) for d in input_shape)
    if math.prod(shape) != math.prod(natural) or any(d < 1 for d in shape):
        raise UsageError(
            f"dataset_batches: input_shape {shape} does not fit {name} examples of shape "
            f"{natural} ({math.prod(natural)} values)"
        )
    if name == "digits":
        dataset = load_digits_dataset(split="train" if split == "train" else "test")
    elif name == "mnist1d":
        dataset = load_mnist1d(split="train" if split == "train" else "test")
    x, y = dataset.tensors
    if not 1 <= samples <= len(y):
        raise UsageError(
            f"dataset_batches: samples must be in [1, {len(y)}] ({name} has {len(y)} "
            f"{split} examples), got {samples}"
        )
    x, y = x[:samples].reshape(samples, *shape), y[:samples]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, samples, batch_size)]


def check_accepts(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], name: str) -> None:
    """Raise :class:`tailwise.UsageError` unless ``model`` runs on the inputs of ``batches``.

    Runs the model once, without gradients and in eval mode (every module's train/eval flag
    is restored, so no BatchNorm statistic moves), on the first two examples, moved to the
    model's device. ``name`` is the data set's name, for the message: "the model does not
    accept digits inputs of shape (1, 8, 8): ...".
    """
    if not batches:
        raise UsageError(f"no {name} batches to check the model on")
    inputs = batches[0][0]
    shape = tuple(inputs.shape[1:])
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(inputs[:2].to(model_device(model)))
    except Exception as exc:  # any failure of the forward pass means "wrong inputs" here
        raise UsageError(
            f"the model does not accept {name} inputs of shape {shape}: {first_line(exc, 160)}"
        ) from None
    finally:
        for module, training in flags:
            module.training = training
