"""Load a whole model (not only its weights) from a file: what ``prune`` and ``hessian`` act on.

:func:`load_model` reads a ``.safetensors`` file written by tailwise (it records its original
architecture and every pruning edit) or any weights file plus a factory building the
architecture; :func:`import_factory` resolves a ``package.module:callable`` string;
:func:`example_inputs` makes the zero input tensor a model is traced with.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailwise._errors import UsageError
from tailwise.models.registry import build_model, example_input_shape
from tailwise.prune.layers import rebuild_info
from tailwise.prune.rebuild import load_pruned, read_metadata, stored_architecture
from tailwise.weights import WeightsError

__all__ = [
    "MAX_INPUT_ELEMENTS",
    "example_inputs",
    "has_architecture",
    "import_factory",
    "load_model",
    "parse_shape",
]

#: The largest example input :func:`parse_shape` accepts (elements; 512 MiB of float32): a
#: tracing input is one sample, and a mistyped shape must not allocate gigabytes.
MAX_INPUT_ELEMENTS = 2**27


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:callable"`` -> the callable (a model class or zero-argument factory).

    The module is imported by name; the current directory is searched first (a local
    ``mymodels.py`` works as ``mymodels:Net``), then ``sys.path``.

    >>> import_factory("tailwise.models:SmallCNN").__name__
    'SmallCNN'
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"model factory {spec!r}: expected 'package.module:callable'")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"model factory {spec!r}: cannot import {module_name} ({exc})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    found = getattr(module, attribute, None)
    if not callable(found):
        raise UsageError(f"model factory {spec!r}: {module_name} has no callable {attribute!r}")
    return found


def load_model(
    path: str | os.PathLike[str],
    *,
    factory: Callable[[], nn.Module] | str | None = None,
    trust_pickle: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The model stored in ``path``, in eval mode, carrying its architecture.

    ``path``: a ``.safetensors`` file written by tailwise (``tailwise prune --out``,
    :func:`tailwise.prune.save_pruned`, the reference network), which records the original
    architecture and the pruning edits; or any weights file (``.safetensors``, ``.pt``,
    ``.pth``, ``.bin``, ``.ckpt``) with ``factory`` building the original architecture (a
    callable or a ``"package.module:callable"`` string). Torch checkpoints are read with
    ``weights_only=True`` unless ``trust_pickle``. The architecture is then
    ``tailwise.prune.rebuild_info(model).architecture`` (None when only a factory knew it).

    Errors: a missing or unreadable file raises :class:`tailwise.WeightsError`; a file that
    does not say what it holds, without a factory, raises :class:`tailwise.UsageError`.

    >>> import tempfile, torch
    >>> from tailwise.models import MLP
    >>> from tailwise.prune import save_pruned
    >>> folder = tempfile.mkdtemp()
    >>> net = MLP(8, [4], 2)
    >>> path = save_pruned(net, f"{folder}/mlp.safetensors", architecture=net.architecture())
    >>> loaded = load_model(path)
    >>> torch.equal(loaded(torch.ones(1, 8)), net(torch.ones(1, 8)))
    True
    """
    file = Path(path)
    if not file.exists():
        raise WeightsError(f"no such file: {file}")
    if file.is_dir():
        raise WeightsError(f"{file}: a model is loaded from one weights file, not a folder")
    made = import_factory(factory) if isinstance(factory, str) else factory
    if made is None:
        if file.suffix != ".safetensors":
            raise UsageError(
                f"{file}: a torch checkpoint does not say which architecture it holds; pass "
                "factory= (command line: --model package.module:callable)"
            )
        if stored_architecture(read_metadata(file)) is None:
            raise UsageError(
                f"{file} records no tailwise architecture; pass factory= (command line: "
                "--model package.module:callable) building the original architecture"
            )
    return load_pruned(file, made, build=build_model, device=device, trust_pickle=trust_pickle)


def has_architecture(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``.safetensors`` file that records a tailwise architecture (so
    :func:`load_model` needs no factory). A corrupt file raises :class:`tailwise.WeightsError`.

    >>> from tailwise.reference import reference_checkpoint
    >>> has_architecture(reference_checkpoint(progress=False))
    True
    """
    file = Path(path)
    if not file.is_file() or file.suffix != ".safetensors":
        return False
    return stored_architecture(read_metadata(file)) is not None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` (or ``"1x3x32x32"``) -> ``(1, 3, 32, 32)``.

    >>> parse_shape("1x64")
    (1, 64)
    """
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"input shape {text!r}: expected integers like 1,3,32,32") from None
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"input shape {text!r}: every dimension must be >= 1")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise UsageError(
            f"input shape {text!r}: {math.prod(shape):,} elements, more than the "
            f"{MAX_INPUT_ELEMENTS:,} an example input may have (one sample is enough)"
        )
    return shape


def example_inputs(
    model: nn.Module, shape: tuple[int, ...] | str | None = None
) -> torch.Tensor | None:
    """A zero input for tracing ``model``: of ``shape`` when given, else of the shape its
    recorded architecture takes (``tailwise.models.example_input_shape``), else None.

    >>> from tailwise.models import SmallCNN
    >>> tuple(example_inputs(SmallCNN()).shape)
    (1, 1, 8, 8)
    """
    if isinstance(shape, str):
        shape = parse_shape(shape)
    if shape is None:
        architecture: Any = rebuild_info(model).architecture
        if architecture is None:
            return None
        shape = example_input_shape(architecture)
    return torch.zeros(shape)
