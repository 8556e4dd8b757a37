"""Torch checkpoints, loaded without executing code unless the caller trusts the file.

:func:`load_checkpoint` is ``torch.load(..., weights_only=True)`` (memory-mapped when the file
is in the zip format); a file that holds pickled Python objects is refused with a
:class:`~tailwise.weights.WeightsError` that says how to opt in (``trust_pickle=True``).
:func:`unwrap_state_dict` follows ``{"state_dict": ...}``-style nesting down to the weights.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailwise._errors import first_line
from tailwise.weights.records import WeightsError

__all__ = ["TORCH_SUFFIXES", "UNWRAP_KEYS", "load_checkpoint", "unwrap_state_dict"]

#: File suffixes read as torch checkpoints.
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
#: Keys under which checkpoints keep their weights, looked for in this order.
UNWRAP_KEYS = ("state_dict", "model_state_dict", "model", "module")

_PICKLED_GLOBAL = re.compile(r"Unsupported (?:global|class)[:\s]+(?:GLOBAL\s+)?([\w.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _line(exc: BaseException) -> str:
    # torch colours some of its messages; an error line must stay plain text.
    return _ANSI.sub("", first_line(exc))


def load_checkpoint(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> Any:
    """The object stored in a torch checkpoint, on the CPU.

    Loaded with ``weights_only=True`` (tensors, containers and primitive values only), and
    memory-mapped when the file is in the zip format. Pickled Python objects (a whole
    ``nn.Module``, custom classes) raise :class:`WeightsError` unless ``trust_pickle=True``
    -- only for files you trust, as unpickling can run arbitrary code. Any file that cannot be
    read raises :class:`WeightsError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"no such file: {path}")
    mmap = zipfile.is_zipfile(path)  # torch can memory-map only the zip format
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise WeightsError(f"cannot read torch checkpoint {path}: {_line(exc)}") from exc
        if not trust_pickle:
            found = _PICKLED_GLOBAL.search(message)
            if found:
                raise WeightsError(
                    f"{path} contains pickled Python objects ({found.group(1)}); refusing to "
                    "unpickle. Re-run with trust_pickle=True (--trust-pickle) only if you "
                    "trust this file"
                ) from None
            detail = message.strip().splitlines()[-1] if message.strip() else ""
            raise WeightsError(
                f"cannot read torch checkpoint {path}: not a weights-only checkpoint, maybe "
                f"corrupt ({detail.strip()[:120]}); if it holds pickled Python objects you "
                "trust, re-run with trust_pickle=True (--trust-pickle)"
            ) from None
    except Exception as exc:
        raise WeightsError(f"cannot read torch checkpoint {path}: {_line(exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:
        raise WeightsError(f"cannot read torch checkpoint {path}: {_line(exc)}") from exc


def unwrap_state_dict(obj: Any) -> Any:
    """Follow ``{"state_dict": ...}``-style nesting down to the weights.

    While ``obj`` is a mapping holding a mapping or module under one of :data:`UNWRAP_KEYS`
    (first found, in that order), descend into it; return what is left (a state dict, a
    module, or ``obj`` itself).

    >>> unwrap_state_dict({"epoch": 3, "model": {"state_dict": {"w": 1}}})
    {'w': 1}
    """
    while isinstance(obj, Mapping):
        for key in UNWRAP_KEYS:
            inner = obj.get(key)
            if isinstance(inner, (Mapping, nn.Module)):
                obj = inner
                break
        else:
            return obj
    return obj
