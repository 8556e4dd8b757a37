"""JSON from weight files, parsed only after its size and nesting are bounded.

``json.loads`` recurses once per level of ``[`` / ``{``: a file holding 100 000 nested
brackets raises ``RecursionError`` (or worse, exhausts the C stack) instead of a clear error.
Every JSON text that comes from a file (safetensors headers, Hugging Face ``*.index.json``
and ``config.json``) goes through :func:`loads_bounded`, which measures the nesting without
recursion first and raises :class:`~tailwise.weights.WeightsError` naming the file.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from tailwise.weights.records import WeightsError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "json_depth", "loads_bounded"]

#: Deepest nesting of ``[`` / ``{`` accepted (a safetensors header nests 3 levels, a
#: Hugging Face config rarely more than 5).
MAX_JSON_DEPTH = 64
#: Largest JSON text accepted, in bytes (the limit the safetensors library sets its header).
MAX_JSON_BYTES = 100_000_000

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, strings left out; computed without recursion.

    >>> json_depth('{"a": [1, [2]], "b": "[[["}')
    3
    """
    codes = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8"), dtype=np.uint8)
    steps = np.isin(codes, (91, 123)).astype(np.int64) - np.isin(codes, (93, 125))
    return int(steps.cumsum().max()) if steps.size else 0


def loads_bounded(text: str, where: str) -> Any:
    """``json.loads(text)`` once its size and nesting are known to be bounded.

    A text over :data:`MAX_JSON_BYTES` bytes, nested deeper than :data:`MAX_JSON_DEPTH`, or
    not valid JSON raises :class:`~tailwise.weights.WeightsError` naming ``where`` (the file,
    or what in it).
    """
    size = len(text.encode("utf-8"))
    if size > MAX_JSON_BYTES:
        raise WeightsError(f"{where} is {size} bytes of JSON, over the {MAX_JSON_BYTES}-byte limit")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise WeightsError(
            f"{where} is JSON nested {depth} levels deep, more than the {MAX_JSON_DEPTH} accepted"
        )
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise WeightsError(f"{where} is not valid UTF-8 JSON ({exc})") from None
