"""Torch checkpoints, loaded without executing code unless the caller trusts the file.

:func:`load_checkpoint` is ``torch.load(..., weights_only=True)`` (memory-mapped when the file
is in the zip format); a file that holds pickled Python objects is refused with a
:class:`~tailwise.weights.WeightsError` that says how to opt in (``trust_pickle=True``).
:func:`unwrap_state_dict` follows ``{"state_dict": ...}``-style nesting down to the weights.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailwise.weights.records import WeightsError

__all__ = ["TORCH_SUFFIXES", "UNWRAP_KEYS", "load_checkpoint", "unwrap_state_dict"]

#: File suffixes read as torch checkpoints.
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
#: Keys under which checkpoints keep their weights, looked for in this order.
UNWRAP_KEYS = ("state_dict", "model_state_dict", "model", "module")

# torch names the refused global as "Unsupported global: GLOBAL builtins.exec" or "Trying to
# load unsupported GLOBAL posix.system whose module posix is blocked" (versions differ).
_PICKLED_GLOBAL = re.compile(
    r"unsupported (?:global|class)[:\s]+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of torch's weights-only message that say nothing about this file.
_BOILERPLATE = re.compile(
    r"^(?:Weights only load failed|Check the documentation of torch\.load|Please file an issue"
    r"|In PyTorch \d|Re-running `torch\.load`)"
)
# Longest part of a message quoted in an error line; longer text is cut at a sentence end.
_QUOTE_CHARS = 300


def _shorten(text: str) -> str:
    """``text`` cut at the last sentence end within :data:`_QUOTE_CHARS`, never mid-word.

    Without a sentence end in reach the text stays whole: a cut URL or path misleads more
    than a long line.

    >>> _shorten("See https://pytorch.org/docs/stable/x.html for more.")
    'See https://pytorch.org/docs/stable/x.html for more.'
    """
    text = text.strip()
    if len(text) <= _QUOTE_CHARS:
        return text
    ends = [m.end() for m in re.finditer(r"[.;!?](?=\s)", text[: _QUOTE_CHARS + 1])]
    return text[: ends[-1]] if ends else text


def _line(exc: BaseException) -> str:
    # torch colours some of its messages; an error line must stay plain text.
    text = _ANSI.sub("", str(exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return _shorten(lines[0]) if lines else type(exc).__name__


def _detail(message: str) -> str:
    """The informative line of a weights-only failure, without torch's boilerplate."""
    lines = [line.strip() for line in _ANSI.sub("", message).splitlines() if line.strip()]
    useful = [line for line in lines if not _BOILERPLATE.match(line)]
    return _shorten(useful[0] if useful else (lines[-1] if lines else ""))


# Globals a weights-only checkpoint may name; any other one is what torch refused.
_ALLOWED_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.")
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
     "SHORT_BINSTRING"}
)  # fmt: skip
_MAX_PICKLES = 8  # a legacy torch file is a few pickles in a row


def _pickled_globals(path: Path) -> list[str]:
    """``module.name`` of every global the file's pickles refer to, read without unpickling.

    torch names the refused global in its message only for the ``GLOBAL`` opcode (pickle
    protocol <= 3); protocol 4 and later push module and name as strings before
    ``STACK_GLOBAL``, and torch then says only "Unsupported operand 140". Walking the opcodes
    with :mod:`pickletools` (which executes nothing) recovers the name. Best effort: an
    unreadable file gives what was found before the problem.
    """
    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith("data.pkl")]
                streams = [io.BytesIO(archive.read(members[0]))] if members else []
                _scan_pickles(streams, found)
        else:
            with path.open("rb") as handle:
                _scan_pickles([handle], found)
    except Exception:  # best effort: a corrupt file is reported by torch's own message
        pass
    return found


def _scan_pickles(streams: list[Any], found: list[str]) -> None:
    for stream in streams:
        for _ in range(_MAX_PICKLES):
            strings: list[str] = []  # strings pushed, as far as globals need them
            memo: dict[int, str] = {}
            memoized = ops = 0
            previous: str | None = None  # the string the previous opcode pushed
            for opcode, arg, _ in pickletools.genops(stream):
                ops += 1
                name, pushed = opcode.name, None
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif name in _STRING_OPS:
                    pushed = str(arg)
                elif name == "MEMOIZE":
                    if previous is not None:
                        memo[memoized] = previous
                    memoized += 1
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and previous is not None:
                    memo[int(str(arg))] = previous
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(str(arg)) in memo:
                    pushed = memo[int(str(arg))]
                if pushed is not None:
                    strings.append(pushed)
                if name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                    previous = pushed
            if not ops:
                break


def _refused_globals(path: Path, message: str) -> str:
    """The globals torch refused (from its message) and the other ones the file's opcodes
    name, comma-separated (at most 3); "" when none is known."""
    found = _PICKLED_GLOBAL.search(message)
    names = [found.group(1)] if found else []
    for name in _pickled_globals(path):
        if not name.startswith(_ALLOWED_PREFIXES) and name not in names:
            names.append(name)
    return ", ".join(names[:3])


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
        with warnings.catch_warnings():
            # torch warns about any protocol but 2; a refusal below says what matters.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise WeightsError(f"cannot read torch checkpoint {path}: {_line(exc)}") from exc
        if not trust_pickle:
            refused = _refused_globals(path, message)
            if refused:
                raise WeightsError(
                    f"{path} contains pickled Python objects ({refused}); refusing to "
                    "unpickle. Re-run with trust_pickle=True (--trust-pickle) only if you "
                    "trust this file"
                ) from None
            raise WeightsError(
                f"cannot read torch checkpoint {path}: not a weights-only checkpoint, maybe "
                f"corrupt ({_detail(message)}); if it holds pickled Python objects you "
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
